// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgPcT256N128S6 =
    MakeWgmmaVariant<WgConfig<256, 1, 6, 1, 1, 4, true, true>>("wg_pc_t256_n128_s6");
}  // namespace qf::kernels::w4a16
