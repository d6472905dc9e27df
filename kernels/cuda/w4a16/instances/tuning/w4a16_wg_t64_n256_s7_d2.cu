// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT64D2 = MakeWgmmaVariant<WgConfig<64, 2, 7, 1, 2>>("wg_t64_n256_s7_d2");
}  // namespace qf::kernels::w4a16
