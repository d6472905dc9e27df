// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT256N128D2Mc2 =
    MakeWgmmaVariant<WgConfig<256, 1, 5, 1, 2, 4, false, true, 2, 2>>("wg_t256_n128_s5_d2_mc2");
}  // namespace qf::kernels::w4a16
