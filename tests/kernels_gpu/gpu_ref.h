// File: tests/kernels_gpu/gpu_ref.h
//
// Device-side reference for the W4A16 tests on large shapes, where the CPU
// double reference would take minutes: fp32 dequantization straight from the
// neutral QuantizedLinear arrays (codes [n x k], scales/zeros [G x n], g_idx)
// -- no QF4 layout involved -- and a plain tiled fp32 GEMM. Checked against
// GemmW4A16Ref on small shapes by the tests themselves.
//
//   RefLinearDevice w{codes, scales, zeros, g_idx, bias, n, k};
//   ASSERT_EQ(ReferenceGemmF32(a, m, w, c_ref, stream), cudaSuccess);
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::kernels::testing {

struct RefLinearDevice {
  const uint8_t* codes;  // [n x k]
  const __half* scales;  // [G x n]
  const uint8_t* zeros;  // [G x n]
  const int32_t* g_idx;  // [k]
  const __half* bias;    // [n] or nullptr
  int64_t n, k;
};

// c[m x n] = a[m x k] (input-channel order) * W^T (+ bias), W[o][i] =
// float(scale) * (code - zero) as in DequantizeRef, fp32 accumulation.
cudaError_t ReferenceGemmF32(const __half* a, int64_t m, const RefLinearDevice& w, float* c, cudaStream_t stream);

}  // namespace qf::kernels::testing
