// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TuneMb2OneBlock = MakeVariant<CfgTuneMb2OneBlock>("tune_mb2_bn128_bk128_s8_1blk");
}  // namespace qf::kernels::w4a16
