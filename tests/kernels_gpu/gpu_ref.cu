#include "tests/kernels_gpu/gpu_ref.h"

namespace qf::kernels::testing {
namespace {

constexpr int kTile = 64;   // outputs per block edge
constexpr int kDepth = 16;  // k per shared-memory step

// 16 x 16 threads, each 4 x 4 outputs of a 64 x 64 tile of c.
__global__ void RefGemmKernel(const __half* a, RefLinearDevice w, float* c, int64_t m) {
  __shared__ float a_sh[kDepth][kTile + 1];
  __shared__ float w_sh[kDepth][kTile + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t{blockIdx.y} * kTile, n0 = int64_t{blockIdx.x} * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < w.k; k0 += kDepth) {
    for (int i = tid; i < kTile * kDepth; i += blockDim.x) {
      const int r = i / kDepth, kk = i % kDepth;
      const int64_t row = m0 + r, ch = k0 + kk;
      a_sh[kk][r] = (row < m && ch < w.k) ? __half2float(a[row * w.k + ch]) : 0.f;
      const int64_t col = n0 + r;
      float v = 0.f;
      if (col < w.n && ch < w.k) {
        const int64_t g = w.g_idx[ch];
        v = __half2float(w.scales[g * w.n + col]) *
            static_cast<float>(int{w.codes[col * w.k + ch]} - int{w.zeros[g * w.n + col]});
      }
      w_sh[kk][r] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kDepth; ++kk) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a_sh[kk][ty * 4 + i] * w_sh[kk][tx * 4 + j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t row = m0 + ty * 4 + i;
    if (row >= m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (col >= w.n) continue;
      c[row * w.n + col] = acc[i][j] + (w.bias != nullptr ? __half2float(w.bias[col]) : 0.f);
    }
  }
}

}  // namespace

cudaError_t ReferenceGemmF32(const __half* a, int64_t m, const RefLinearDevice& w, float* c, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((w.n + kTile - 1) / kTile), static_cast<unsigned>((m + kTile - 1) / kTile));
  RefGemmKernel<<<grid, 256, 0, stream>>>(a, w, c, m);
  return cudaGetLastError();
}

}  // namespace qf::kernels::testing
