// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgPcT64W1K128TwoBlocks =
    MakeWgmmaVariant<WgConfig<64, 2, 4, 2, 1, 8, true, true, 1>>("wg_pc_t64_n128_w1_s4_k128_2blk");
}  // namespace qf::kernels::w4a16
