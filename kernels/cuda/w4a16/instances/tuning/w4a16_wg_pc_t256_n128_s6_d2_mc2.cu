// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgPcT256N128S6D2Mc2 =
    MakeWgmmaVariant<WgConfig<256, 1, 6, 1, 2, 4, true, true, 2, 2>>("wg_pc_t256_n128_s6_d2_mc2");
}  // namespace qf::kernels::w4a16
