// One W4A16 GEMM variant per file, so the instances compile in parallel.
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
const Variant kW4A16Bf16DecodeM16W16A8 = MakeDecodeVariant<2, 16, true, true, BF16, 8>("bf16_dec_m16_w16a8");
}  // namespace qf::kernels::w4a16
