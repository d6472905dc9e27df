// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgT256N128K128 = MakeWgmmaVariant<WgConfig<256, 1, 3, 1, 1, 8>>("wg_t256_n128_s3_k128");
}  // namespace qf::kernels::w4a16
