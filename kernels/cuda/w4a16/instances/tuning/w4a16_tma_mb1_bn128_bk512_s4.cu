// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16TmaMb1Bk512 = MakeVariant<CfgTmaMb1Bk512>("tma_mb1_bn128_bk512_s4");
}  // namespace qf::kernels::w4a16
