// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TmaMb4Bn256 = MakeVariant<CfgTmaMb4Bn256>("tma_mb4_bn256_bk128_s3");
}  // namespace qf::kernels::w4a16
