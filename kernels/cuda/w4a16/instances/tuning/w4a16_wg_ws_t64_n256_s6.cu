// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WsT64N256 = MakeWgmmaVariant<WgConfig<64, 2, 6, 1, 1, 4, true>>("wg_ws_t64_n256_s6");
}  // namespace qf::kernels::w4a16
