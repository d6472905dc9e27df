// File: kernels/ref/w4a16_ref.h
//
// CPU reference of the fused W4A16 GEMM (kernels/cuda/w4a16.h): the repack of
// a QuantizedLinear (kernels/quant_types.h) into the kernel's own layout "QF4",
// the read-back of that layout, and C = A * dequant(B) accumulated in double.
// The GPU repack and GEMM are tested bit-exact / within named thresholds
// against these functions. Torch-free.
//
// Layout QF4 (also drawn in kernels/README.md). K = in_features, N =
// out_features, G = num_groups, gs = group size (K when -1). The kernel works
// on "kernel rows" j = 0..K-1; without act-order kernel row j is input channel
// j, with act-order it is input channel perm[j] (see ActOrderPerm).
//
//   qweight  u32 [K/16][N/64][32 lanes][4 words]   one 512-byte tile per
//            16 kernel rows x 64 columns; lane l's 16 bytes are exactly the
//            four 32-bit words it feeds to mma.m16n8k16 for 8 n8-fragments.
//            Nibble p (bits 4p..4p+3) of word w of lane l in tile (t, c) holds
//            the code of
//              kernel row  k = 16t + 2*(l%4) + 8*(p&1) + (p>>2)
//              column      n = 64c + 8*(2w + ((p>>1)&1)) + l/4
//              bit  31..28 27..24 23..20 19..16 15..12 11..8  7..4   3..0
//                  [f1 b1 ][f1 b0 ][f0 b1 ][f0 b0 ][f1 b1 ][f1 b0 ][f0 b1 ][f0 b0 ]
//                  [k+9   ][k+1   ][k+9   ][k+1   ][k+8   ][k     ][k+8   ][k     ]
//            (f0/f1 = fragments 2w/2w+1, b0/b1 = the two B registers,
//             k = 16t + 2*(l%4)): masking 0x000F000F and 0x00F000F0 and
//             shifting by 8 yields the four fp16 pairs of both fragments.
//   scales   f16 [G][N]   column order permuted inside each 64-column chunk:
//            position 64c + 8r + f holds column 64c + 8f + r, so lane l reads
//            the 8 scales of its fragments (r = l/4) with one 16-byte load.
//   zeros    u32 [G][N/8] word 8c + r holds the zeros of columns 64c + 8f + r,
//            f = 0..7 ("fragment f"): f < 4 in the low nibble of byte f,
//            f >= 4 in the high nibble of byte f - 4 (bits 8f, resp.
//            8(f-4) + 4), so masking 0x0F0F0F0F gives one zero per byte;
//            absent (empty) for symmetric weights, whose zero is 8.
//   perm     i32 [K]      act-order only: kernel row j is input channel
//            perm[j]; empty = identity. Activations are permuted to match.
//
//   QF_ASSIGN_OR_RETURN(W4A16Weights w, RepackW4A16Ref(q));
//   std::vector<float> wt = DequantizeW4A16Ref(w);        // == DequantizeRef(q)
//   QF_ASSIGN_OR_RETURN(std::vector<float> c, GemmW4A16Ref(a_fp16, m, w));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"

namespace qf::kernels {

inline constexpr int kW4A16TileK = 16;       // kernel rows per qweight tile
inline constexpr int kW4A16TileN = 64;       // columns per qweight tile
inline constexpr int kW4A16TileWords = 128;  // 32 lanes x 4 words = 512 bytes
inline constexpr uint8_t kW4A16SymZero = 8;  // zero point of symmetric weights

// One linear in QF4 layout, on the host.
struct W4A16Weights {
  std::string name;
  int64_t k = 0;         // in_features
  int64_t n = 0;         // out_features
  int group_size = 128;  // as in QuantizedLinear: -1 = one group of K
  int64_t num_groups = 0;
  std::vector<uint32_t> qweight;  // K*N/8 words
  std::vector<uint16_t> scales;   // G*N fp16 bits, permuted
  std::vector<uint32_t> zeros;    // G*N/8 words, empty when symmetric
  std::vector<int32_t> perm;      // K, empty when no act-order
  std::vector<uint16_t> bias;     // N fp16 bits (natural order), may be empty

  int effective_group_size() const { return group_size == -1 ? static_cast<int>(k) : group_size; }
};

// Word index and bit shift of one 4-bit field.
struct W4A16Pos {
  int64_t word;
  int shift;
};

// Where the code of (kernel row k, column n) lives in qweight (n_total = N).
W4A16Pos W4A16CodePos(int64_t k, int64_t n, int64_t n_total);
// Index of scale (g, n) in the permuted scales.
int64_t W4A16ScaleIndex(int64_t g, int64_t n, int64_t n_total);
// Where zero (g, n) lives in zeros.
W4A16Pos W4A16ZeroPos(int64_t g, int64_t n, int64_t n_total);
// Bit shift of fragment f's zero inside a zeros word (see the layout above).
int W4A16ZeroShift(int fragment);

// The kernel-row order for act-order weights: channels stably sorted by
// g_idx. Empty when the identity will do (no desc_act, or one group).
// InvalidArgument naming the linear when, after sorting, group g does not
// occupy exactly kernel rows [g*gs, (g+1)*gs) (the kernel needs whole groups).
absl::StatusOr<std::vector<int32_t>> ActOrderPerm(const QuantizedLinear& q);

// Repacks q into QF4. InvalidArgument naming the linear from
// ValidateQuantizedLinear (kernels/ref/pack.h), for bits != 4, for
// in_features not a multiple of 16 or out_features not a multiple of 64, for
// a group size that is not a multiple of 16, and from ActOrderPerm.
absl::StatusOr<W4A16Weights> RepackW4A16Ref(const QuantizedLinear& q);

// W[n][i] (fp32, [N x K] row-major, INPUT channel order i, so that it equals
// DequantizeRef(q) exactly), read back from the QF4 layout alone.
std::vector<float> DequantizeW4A16Ref(const W4A16Weights& w);
// The same as the bf16 paths of the tiled and wgmma kernels dequantize:
// each scale rounded to bf16 (what W4A16Repack's out_dtype bf16 stores),
// and scale * (code - zero) rounded to bf16 (code - zero is exact). The
// decode kernel rounds no weight (code - zero into the mma, the bf16 scale
// applied in fp32), so it lies between this and DequantizeW4A16Ref.
std::vector<float> DequantizeW4A16RefBf16(const W4A16Weights& w);

// C[m x N] = A[m x K] * W^T (+ bias), A fp16 bits row-major in input channel
// order, products and sums in double, the result rounded to float.
// InvalidArgument when a.size() != m*K.
absl::StatusOr<std::vector<float>> GemmW4A16Ref(const std::vector<uint16_t>& a, int64_t m, const W4A16Weights& w);

}  // namespace qf::kernels
