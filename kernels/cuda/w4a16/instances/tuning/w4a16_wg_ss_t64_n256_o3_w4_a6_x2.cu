// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgss.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgSsT64N256 = MakeWgssVariant<WgssConfig<64, 256, 3, 4, 6, 2>>("wg_ss_t64_n256_o3_w4_a6_x2");
}  // namespace qf::kernels::w4a16
