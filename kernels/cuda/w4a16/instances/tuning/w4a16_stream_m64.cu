// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16StreamM64 = MakeStreamVariant<8, 8, false, false>("stream_m64");
}  // namespace qf::kernels::w4a16
