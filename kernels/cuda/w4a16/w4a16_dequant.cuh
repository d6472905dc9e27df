// File: kernels/cuda/w4a16/w4a16_dequant.cuh
//
// In-register dequantization of QF4 words (layout: kernels/ref/w4a16_ref.h,
// bit diagram: kernels/README.md) into mma / wgmma operand registers, for fp16
// and bf16, and the element-type traits (F16, BF16) a kernel Config takes.
// The CPU reference of the same arithmetic is kernels/ref/w4a16_ref.cc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_ptx.cuh"  // AndOr

namespace qf::kernels::w4a16 {

__device__ __forceinline__ half2 AsHalf2(uint32_t u) { return *reinterpret_cast<half2*>(&u); }
__device__ __forceinline__ uint32_t AsU32(half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// ---------------------------------------------------------------- dequantization

// Per-lane constants of the 8 fragments' columns for the current group.
struct GroupConsts {
  static constexpr bool kBf16 = false;  // which arithmetic the loops that take these run
  half2 scale[8];  // (s, s)
  half2 zlo[8];    // (1024 + z, 1024 + z): subtrahend of the low-nibble path
  half2 zhi[8];    // (-(64 + z), ...):     addend of the high-nibble path
};

// scales: 8 fp16 (one per fragment). zero_word: the zero of fragment f sits
// in byte f%4, low nibble for f < 4, high nibble for f >= 4, so two masks
// give bytes that one byte-permute each turns into (1024 + z, 1024 + z).
__device__ __forceinline__ void LoadGroupConsts(GroupConsts& g, int4 scales, uint32_t zero_word) {
  const __half* s = reinterpret_cast<const __half*>(&scales);
  const uint32_t z_lo = zero_word & 0x0F0F0F0Fu;         // fragments 0..3, one per byte
  const uint32_t z_hi = (zero_word >> 4) & 0x0F0F0F0Fu;  // fragments 4..7
#pragma unroll
  for (int f = 0; f < 8; ++f) {
    g.scale[f] = __half2half2(s[f]);
    // Bytes (z, 0x64, z, 0x64): fp16 0x64zz = 1024 + z in both halves.
    const uint32_t b = f % 4;
    g.zlo[f] = AsHalf2(__byte_perm(f < 4 ? z_lo : z_hi, 0x64646464u, b | 0x4040u | (b << 8)));
    g.zhi[f] = __hsub2(AsHalf2(0x63806380u), g.zlo[f]);  // 960 - (1024 + z) = -(64 + z)
  }
}

// One QF4 word of fragments fa = 2w and fb = 2w+1 (any lane) -> four fp16
// pairs: rows (k, k+1) and (k+8, k+9) of each. OR-ing a nibble into the
// mantissa of 1024.0 (0x6400) gives 1024 + q exactly; the nibble one position
// up gives 1024 + 16q. Subtracting 1024 + z (resp. fma by 1/16 with
// -(64 + z)) is exact in fp16, so the only rounding is the final multiply by
// the scale. See kernels/README.md for the bit diagram. The tiled kernel feeds
// the pairs to mma as B registers, the wgmma kernel as A registers.
struct FragPairs {
  uint32_t lo_a, hi_a, lo_b, hi_b;
};
__device__ __forceinline__ FragPairs DequantFragPair(uint32_t w, half2 s_a, half2 zlo_a, half2 zhi_a, half2 s_b,
                                                     half2 zlo_b, half2 zhi_b) {
  constexpr uint32_t kLo = 0x000F000Fu, kHi = 0x00F000F0u, kMagic = 0x64006400u;
  const half2 kSixteenth = AsHalf2(0x2C002C00u);  // 1/16
  const uint32_t w8 = w >> 8;
  const half2 lo0 = AsHalf2(AndOr(w, kLo, kMagic));
  const half2 hi0 = AsHalf2(AndOr(w, kHi, kMagic));
  const half2 lo1 = AsHalf2(AndOr(w8, kLo, kMagic));
  const half2 hi1 = AsHalf2(AndOr(w8, kHi, kMagic));
  return FragPairs{AsU32(__hmul2(__hsub2(lo0, zlo_a), s_a)), AsU32(__hmul2(__hfma2(hi0, kSixteenth, zhi_a), s_a)),
                   AsU32(__hmul2(__hsub2(lo1, zlo_b), s_b)), AsU32(__hmul2(__hfma2(hi1, kSixteenth, zhi_b), s_b))};
}

// One QF4 word -> the two B registers of fragments 2w and 2w+1.
template <int kW>
__device__ __forceinline__ void DequantWord(uint32_t w, const GroupConsts& g, uint32_t (&out)[4]) {
  constexpr int f0 = 2 * kW, f1 = 2 * kW + 1;
  const FragPairs q = DequantFragPair(w, g.scale[f0], g.zlo[f0], g.zhi[f0], g.scale[f1], g.zlo[f1], g.zhi[f1]);
  out[0] = q.lo_a;
  out[1] = q.hi_a;
  out[2] = q.lo_b;
  out[3] = q.hi_b;
}

// ---- bf16. Its 7 mantissa bits hold a nibble under the exponent of 128.0
// (0x4300) only at bits 0..3 of each half, so every nibble is shifted down
// first: 3 shifts and 4 lop3 give 128 + q; subtracting 128 + z leaves the
// integer q - z exactly (bf16 holds every integer up to 256), and the scale
// multiply is again the only rounding. The scales are bf16 already (converted
// once at load, W4A16RepackArgs::out_dtype), so the constants are built the
// same way as fp16's, with 0x43 for the exponent byte.
struct GroupConstsBf16 {
  static constexpr bool kBf16 = true;
  __nv_bfloat162 scale[8];  // (s, s)
  __nv_bfloat162 zero[8];   // (128 + z, 128 + z)
};

__device__ __forceinline__ __nv_bfloat162 AsBf162(uint32_t u) { return *reinterpret_cast<__nv_bfloat162*>(&u); }
__device__ __forceinline__ uint32_t AsU32(__nv_bfloat162 h) { return *reinterpret_cast<uint32_t*>(&h); }

// scales: 8 bf16 (one per fragment); zero_word as LoadGroupConsts above.
__device__ __forceinline__ void LoadGroupConsts(GroupConstsBf16& g, int4 scales, uint32_t zero_word) {
  const __nv_bfloat16* s = reinterpret_cast<const __nv_bfloat16*>(&scales);
  const uint32_t z_lo = zero_word & 0x0F0F0F0Fu;
  const uint32_t z_hi = (zero_word >> 4) & 0x0F0F0F0Fu;
#pragma unroll
  for (int f = 0; f < 8; ++f) {
    g.scale[f] = __bfloat162bfloat162(s[f]);
    // Bytes (z, 0x43, z, 0x43): bf16 0x43zz = 128 + z in both halves.
    const uint32_t b = f % 4;
    g.zero[f] = AsBf162(__byte_perm(f < 4 ? z_lo : z_hi, 0x43434343u, b | 0x4040u | (b << 8)));
  }
}

// One QF4 word of fragments fa = 2w and fb = 2w+1 -> the same four pairs as
// the fp16 DequantFragPair (nibbles 0/4: lo_a, 1/5: hi_a, 2/6: lo_b, 3/7:
// hi_b), with s the scale and z = (128 + zero, 128 + zero) of each fragment.
__device__ __forceinline__ FragPairs DequantFragPair(uint32_t w, __nv_bfloat162 s_a, __nv_bfloat162 z_a,
                                                     __nv_bfloat162 s_b, __nv_bfloat162 z_b) {
  constexpr uint32_t kLo = 0x000F000Fu, kMagic = 0x43004300u;
  const auto pair = [](uint32_t x, __nv_bfloat162 s, __nv_bfloat162 z) {
    return AsU32(__hmul2(__hsub2(AsBf162(AndOr(x, kLo, kMagic)), z), s));
  };
  return FragPairs{pair(w, s_a, z_a), pair(w >> 4, s_a, z_a), pair(w >> 8, s_b, z_b), pair(w >> 12, s_b, z_b)};
}

// One QF4 word -> the two B registers of fragments 2w and 2w+1 (bf16).
template <int kW>
__device__ __forceinline__ void DequantWord(uint32_t w, const GroupConstsBf16& g, uint32_t (&out)[4]) {
  constexpr int f0 = 2 * kW, f1 = 2 * kW + 1;
  const FragPairs q = DequantFragPair(w, g.scale[f0], g.zero[f0], g.scale[f1], g.zero[f1]);
  out[0] = q.lo_a;
  out[1] = q.hi_a;
  out[2] = q.lo_b;
  out[3] = q.hi_b;
}

// ---------------------------------------------------------------- element types

// What a variant's element type changes: the mma input type, the group
// constants and how the epilogue converts (a, scales, bias and c are all of
// this type; the accumulators and split-K partials are fp32 either way).
struct F16 {
  static constexpr bool kBf16 = false;
  using Consts = GroupConsts;
  // Two elements (one word, or at p: 4-byte aligned) as floats; two floats
  // rounded to one word.
  __device__ __forceinline__ static float2 ToFloat2(uint32_t u) { return __half22float2(AsHalf2(u)); }
  __device__ __forceinline__ static float2 Load2(const __half* p) {
    return __half22float2(*reinterpret_cast<const half2*>(p));
  }
  __device__ __forceinline__ static uint32_t Pack2(float x, float y) { return AsU32(__floats2half2_rn(x, y)); }
  // One element as a float; one float rounded into *p.
  __device__ __forceinline__ static float Load1(const __half* p) { return __half2float(*p); }
  __device__ __forceinline__ static void Store1(__half* p, float x) { *p = __float2half_rn(x); }
};
struct BF16 {
  static constexpr bool kBf16 = true;
  using Consts = GroupConstsBf16;
  __device__ __forceinline__ static float2 ToFloat2(uint32_t u) { return __bfloat1622float2(AsBf162(u)); }
  __device__ __forceinline__ static float2 Load2(const __half* p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
  }
  __device__ __forceinline__ static uint32_t Pack2(float x, float y) { return AsU32(__floats2bfloat162_rn(x, y)); }
  __device__ __forceinline__ static float Load1(const __half* p) {
    return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
  }
  __device__ __forceinline__ static void Store1(__half* p, float x) {
    *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(x);
  }
};

}  // namespace qf::kernels::w4a16
