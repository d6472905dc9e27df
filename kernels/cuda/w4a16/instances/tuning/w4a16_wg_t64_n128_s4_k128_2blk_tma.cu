// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT64N128K128TwoBlocksTma =
    MakeWgmmaVariant<WgConfig<64, 1, 4, 2, 1, 8, false, true>>("wg_t64_n128_s4_k128_2blk_tma");
}  // namespace qf::kernels::w4a16
