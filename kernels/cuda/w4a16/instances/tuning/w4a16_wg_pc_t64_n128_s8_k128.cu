// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WgPcT64N128S8K128 =
    MakeWgmmaVariant<WgConfig<64, 1, 8, 1, 1, 8, true, true>>("wg_pc_t64_n128_s8_k128");
}  // namespace qf::kernels::w4a16
