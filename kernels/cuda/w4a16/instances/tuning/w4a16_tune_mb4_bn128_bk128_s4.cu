// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TuneMb4Bk128 = MakeVariant<CfgTuneMb4Bk128>("tune_mb4_bn128_bk128_s4");
}  // namespace qf::kernels::w4a16
