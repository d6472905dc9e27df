// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT64 = MakeWgmmaVariant<WgConfig<64, 2, 6>>("wg_t64_n256_s6");
}  // namespace qf::kernels::w4a16
