// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16StreamM8Reg = MakeStreamVariant<1, 8, true, true>("stream_m8_reg");
}  // namespace qf::kernels::w4a16
