// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TuneMb2TwoBlocks = MakeVariant<CfgTuneMb2TwoBlocks>("tune_mb2_bn128_bk128_s4_2blk");
}  // namespace qf::kernels::w4a16
