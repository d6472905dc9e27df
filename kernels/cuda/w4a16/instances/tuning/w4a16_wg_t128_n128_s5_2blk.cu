// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT128N128TwoBlocks = MakeWgmmaVariant<WgConfig<128, 1, 5, 2>>("wg_t128_n128_s5_2blk");
}  // namespace qf::kernels::w4a16
