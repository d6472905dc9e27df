// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16AnyBk64 = MakeVariant<CfgBf16AnyBk64>("bf16_any_mb4_bn256_bk64_s4");
}  // namespace qf::kernels::w4a16
