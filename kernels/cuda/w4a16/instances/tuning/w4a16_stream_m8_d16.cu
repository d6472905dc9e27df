// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16StreamM8D16 = MakeStreamVariant<1, 16, true, false>("stream_m8_d16");
}  // namespace qf::kernels::w4a16
