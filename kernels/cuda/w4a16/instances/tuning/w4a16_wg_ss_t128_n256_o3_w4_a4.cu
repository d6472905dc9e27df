// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgss.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgSsT128N256 = MakeWgssVariant<WgssConfig<128, 256, 3, 4, 4, 1>>("wg_ss_t128_n256_o3_w4_a4");
}  // namespace qf::kernels::w4a16
