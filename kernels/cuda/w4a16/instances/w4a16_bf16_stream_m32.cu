// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16StreamM32 = MakeStreamVariant<4, 8, false, false, BF16>("bf16_stream_m32");
}  // namespace qf::kernels::w4a16
