// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT64N64W1K128ThreeBlocks =
    MakeWgmmaVariant<WgConfig<64, 1, 3, 3, 1, 8, false, false, 1>>("wg_t64_n64_w1_s3_k128_3blk");
}  // namespace qf::kernels::w4a16
