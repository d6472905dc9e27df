// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16Mb4Bk256 = MakeVariant<CfgBf16Mb4Bk256>("bf16_mb4_bn256_bk256_s2");
}  // namespace qf::kernels::w4a16
