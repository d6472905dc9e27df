// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TmaMb1TwoBlocks = MakeVariant<CfgTmaMb1TwoBlocks>("tma_mb1_bn128_bk256_s3_2blk");
}  // namespace qf::kernels::w4a16
