// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16WgT64N128K128 =
    MakeWgmmaVariant<WgConfig<64, 1, 6, 1, 1, 8, false, false, 2, 1, BF16>>("bf16_wg_t64_n128_s6_k128");
}  // namespace qf::kernels::w4a16
