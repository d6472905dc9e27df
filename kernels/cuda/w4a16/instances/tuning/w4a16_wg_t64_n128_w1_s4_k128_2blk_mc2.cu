// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT64W1K128TwoBlocksMc2 =
    MakeWgmmaVariant<WgConfig<64, 2, 4, 2, 1, 8, false, true, 1, 2>>("wg_t64_n128_w1_s4_k128_2blk_mc2");
}  // namespace qf::kernels::w4a16
