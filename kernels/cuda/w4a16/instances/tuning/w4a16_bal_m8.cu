// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_balanced.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16BalancedM8 = MakeBalancedVariant<16, 16>("bal_m8");
}  // namespace qf::kernels::w4a16
