// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16AnyBk128 = MakeVariant<CfgAnyBk128>("any_mb1_bn128_bk128_s6");
}  // namespace qf::kernels::w4a16
