// The fused GPTQ block kernel for 128-column blocks (gptq_block_kernel.cuh).
#include "kernels/cuda/gptq/gptq_block_kernel.cuh"

namespace qf::kernels::gptq {
template cudaError_t Launch<128>(const BlockArgs& a, cudaStream_t stream);
}  // namespace qf::kernels::gptq
