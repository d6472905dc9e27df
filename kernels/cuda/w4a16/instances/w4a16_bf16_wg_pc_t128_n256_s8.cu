// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16WgPcT128N256S8 = WithEvenFill(
    MakeWgmmaVariant<WgConfig<128, 2, 8, 1, 1, 4, true, true, 2, 1, BF16>>("bf16_wg_pc_t128_n256_s8"),
    kT128N256EvenFillPct);
}  // namespace qf::kernels::w4a16
