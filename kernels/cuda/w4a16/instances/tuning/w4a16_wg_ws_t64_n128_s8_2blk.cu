// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_wgmma.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16WsT64N128TwoBlocks = MakeWgmmaVariant<WgConfig<64, 1, 8, 2, 1, 4, true>>("wg_ws_t64_n128_s8_2blk");
}  // namespace qf::kernels::w4a16
