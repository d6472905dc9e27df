// File: kernels/cuda/gptq/gptq_block.cuh
//
// The GPTQ column recurrence of one lazy block (Frantar et al. 2022, Alg. 1,
// inner loop) for ONE row of W, written once for the CUDA kernel
// (gptq_block.cu) and for its CPU twin (worker/engine/gptq_fast.cc).
//
// Rows of W are independent given Hinv, so the kernel gives each thread a row
// and keeps that row's `B` block columns in registers; the block of Hinv (the
// upper Cholesky factor of H^-1) sits in shared memory and every thread reads
// the same element at the same time (a broadcast, no bank conflicts):
//
//   for i in 0..B-1:                                   w[B]  : registers
//     g    = col_group[i]                               hinv  : [B][B] shared
//     q    = clamp(rint(w[i] / scale[g]) + zero[g], 0, maxq)
//     e    = (w[i] - scale[g] * (q - zero[g])) / hinv[i][i]
//     loss += e * e / 2
//     w[j] -= e * hinv[i][j]          for j > i
//
// Every operation is rounded on its own, exactly as the ATen reference
// (quantize.cc GptqQuantize) computes it: no fused multiply-add, IEEE division,
// round-half-to-even. Given the same W, Hinv and group parameters, the kernel,
// its CPU twin and the ATen path produce the same codes bit for bit.
//
// A block narrower than B (the last one of a matrix whose width is not a
// multiple of B) is padded: w = 0, Hinv = identity outside the block, so the
// padded columns see e = 0 and change nothing; only real columns are stored.
//
//   float w[128]; ...load row...;  RecurRow<128>(w, hinv_smem, col_group_smem, row, args);
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define QF_GPTQ_HD __host__ __device__ __forceinline__
#else
#define QF_GPTQ_HD inline
#endif

namespace qf::kernels::gptq {

// Arguments of one block launch. Pointers are device pointers for the kernel
// and host pointers for the CPU twin.
struct BlockArgs {
  const float* w = nullptr;        // [rows, ld_w] row-major, pointing at column i1 of the block
  int64_t ld_w = 0;
  const float* hinv = nullptr;     // [count, count] = Hinv[i1:i2, i1:i2], row stride ld_h
  int64_t ld_h = 0;
  const float* scales = nullptr;   // [groups, rows]: scale of group g, row r at g * rows + r
  const float* zeros = nullptr;    // [groups, rows]: integer-valued zero points
  const int32_t* col_group = nullptr;  // [count]: group of each block column
  float* err = nullptr;            // [rows, ld_err] out: (w - q) / d of each block column
  int64_t ld_err = 0;
  uint8_t* codes = nullptr;        // [rows, ld_codes] out, pointing at column i1
  int64_t ld_codes = 0;
  double* loss = nullptr;          // [rows] in/out: += e * e / 2, accumulated in double
  int64_t rows = 0;
  int count = 0;                   // real columns in this block, 1..B
  float maxq = 15;                 // 2^bits - 1
};

// Separately rounded arithmetic (see the file comment).
QF_GPTQ_HD float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QF_GPTQ_HD float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
QF_GPTQ_HD float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QF_GPTQ_HD float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// at::round: half to even, as nearbyint in the default rounding mode.
QF_GPTQ_HD float RoundEven(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}
// at::clamp(x, lo, hi) on finite values: min(max(x, lo), hi).
QF_GPTQ_HD float Clamp(float x, float lo, float hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

// The recurrence over the B (padded) columns of one row. `w` holds the row's
// block columns (zero past args.count) and is consumed. `hinv` is the padded
// [B][B] block (row stride B), `col_group` the padded [B] groups (any valid
// group past args.count). Writes codes, err and loss of the real columns.
template <int B>
QF_GPTQ_HD void RecurRow(float (&w)[B], const float* hinv, const int32_t* col_group, int64_t row,
                         const BlockArgs& a) {
  double loss = a.loss[row];
  int32_t cur_group = -1;
  float scale = 1, zero = 0;
  uint8_t* codes = a.codes + row * a.ld_codes;
  float* err = a.err + row * a.ld_err;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < B; ++i) {
    const int32_t g = col_group[i];
    if (g != cur_group) {   // uniform across rows: no divergence
      scale = a.scales[static_cast<int64_t>(g) * a.rows + row];
      zero = a.zeros[static_cast<int64_t>(g) * a.rows + row];
      cur_group = g;
    }
    const float q = Clamp(AddRn(RoundEven(DivRn(w[i], scale)), zero), 0.0f, a.maxq);
    const float e = DivRn(SubRn(w[i], MulRn(scale, SubRn(q, zero))), hinv[i * B + i]);
    loss += static_cast<double>(MulRn(e, e)) / 2;
    if (i < a.count) {
      codes[i] = static_cast<uint8_t>(q);
      err[i] = e;
    }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = i + 1; j < B; ++j) w[j] = SubRn(w[j], MulRn(e, hinv[i * B + j]));
  }
  a.loss[row] = loss;
}

}  // namespace qf::kernels::gptq
