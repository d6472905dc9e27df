// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TuneMb2Bn256 = MakeVariant<CfgTuneMb2Bn256>("tune_mb2_bn256_bk64_s5");
}  // namespace qf::kernels::w4a16
