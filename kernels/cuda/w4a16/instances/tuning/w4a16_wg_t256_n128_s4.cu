// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT256N128 = MakeWgmmaVariant<WgConfig<256, 1, 4>>("wg_t256_n128_s4");
}  // namespace qf::kernels::w4a16
