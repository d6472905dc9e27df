// File: kernels/cuda/gptq/gptq_block_kernel.cuh
//
// The fused GPTQ block kernel and its launcher, templated on the block width
// B. Included only by the gptq_block_w<B>.cu files, one explicit
// instantiation each: B = 128 unrolls 128 register columns and is most of the
// compile, so the widths compile in parallel (and gptq_block.cu dispatches).
//
// Grid: one thread per row of W, kThreads rows per CTA. Each CTA first stages
// the padded [B][B] block of Hinv and the B column groups in shared memory
// (64 KB + 512 B for B = 128), then each thread loads its row's B columns into
// registers and runs the recurrence. Loads of W are strided across the warp
// (each thread walks its own row); W is read once per block, so this costs
// ~rows * B * 4 bytes per launch, a few microseconds against the lazy-update
// GEMM that follows.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/gptq/gptq_block.h"

namespace qf::kernels::gptq {

// 64 rows per CTA (kThreads): an 8192-row matrix still fills 128 CTAs on 132 SMs.
constexpr int kThreads = 64;

template <int B>
constexpr size_t SharedBytes() {
  return sizeof(float) * B * B + sizeof(int32_t) * B;
}

template <int B>
__global__ void __launch_bounds__(kThreads) GptqBlockKernel(BlockArgs a) {
  extern __shared__ float smem[];
  float* hinv = smem;                                             // [B][B], padded with identity
  int32_t* col_group = reinterpret_cast<int32_t*>(smem + B * B);  // [B], padded with the last group
  for (int idx = threadIdx.x; idx < B * B; idx += blockDim.x) {
    const int i = idx / B, j = idx % B;
    hinv[idx] = (i < a.count && j < a.count) ? a.hinv[i * a.ld_h + j] : (i == j ? 1.0f : 0.0f);
  }
  for (int idx = threadIdx.x; idx < B; idx += blockDim.x) {
    col_group[idx] = a.col_group[idx < a.count ? idx : a.count - 1];
  }
  __syncthreads();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= a.rows) return;
  const float* src = a.w + row * a.ld_w;
  float w[B];
#pragma unroll
  for (int j = 0; j < B; ++j) w[j] = j < a.count ? src[j] : 0.0f;
  RecurRow<B>(w, hinv, col_group, row, a);
}

template <int B>
cudaError_t Launch(const BlockArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = SharedBytes<B>();
  // Above 48 KB a kernel must opt in; once per process and width.
  static const cudaError_t attr =
      cudaFuncSetAttribute(GptqBlockKernel<B>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
  if (attr != cudaSuccess) return attr;
  const int64_t ctas = (a.rows + kThreads - 1) / kThreads;
  GptqBlockKernel<B><<<static_cast<unsigned>(ctas), kThreads, kSmem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace qf::kernels::gptq
