// Load-time conversion of GPTQ v1 / AWQ GEMM checkpoint tensors into the QF4
// layout (kernels/ref/w4a16_ref.h), and the per-call activation gather for
// act-order weights. One thread per output element: these run once per
// linear (repack) or move m*k halves (gather), so simplicity wins.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/w4a16.h"

namespace qf::kernels {
namespace {

constexpr int kThreads = 256;

// Nibble of AWQ word holding column n%8 (inverse of kAwqOrder {0,2,4,6,1,3,5,7}).
__device__ __forceinline__ int AwqNibble(int col_in_word) { return (col_in_word % 2) * 4 + col_in_word / 2; }

struct GptqV1Source {
  const uint32_t* qweight;  // [k/8][n]
  const uint32_t* qzeros;   // [G][n/8], zero - 1
  int64_t n;
  __device__ uint32_t Code(int64_t ch, int64_t col) const {
    return (qweight[(ch / 8) * n + col] >> (4 * (ch % 8))) & 15u;
  }
  __device__ uint32_t Zero(int64_t g, int64_t col) const {
    return ((qzeros[g * (n / 8) + col / 8] >> (4 * (col % 8))) + 1u) & 15u;
  }
};

struct AwqGemmSource {
  const uint32_t* qweight;  // [k][n/8]
  const uint32_t* qzeros;   // [G][n/8]
  int64_t n;
  __device__ uint32_t Code(int64_t ch, int64_t col) const {
    return (qweight[ch * (n / 8) + col / 8] >> (4 * AwqNibble(static_cast<int>(col % 8)))) & 15u;
  }
  __device__ uint32_t Zero(int64_t g, int64_t col) const {
    return (qzeros[g * (n / 8) + col / 8] >> (4 * AwqNibble(static_cast<int>(col % 8)))) & 15u;
  }
};

// One QF4 word per thread: tile t = idx / 128, lane = (idx % 128) / 4, word w = idx % 4.
template <class Src>
__global__ void RepackCodesKernel(Src src, const int32_t* perm, uint32_t* out, int64_t k, int64_t n) {
  const int64_t words = k * n / 8;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < words;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t tile = idx / 128;
    const int lane = static_cast<int>(idx % 128) / 4, w = static_cast<int>(idx % 4);
    const int64_t t = tile / (n / 64), c = tile % (n / 64);
    uint32_t word = 0;
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const int64_t row = 16 * t + 2 * (lane % 4) + 8 * (p & 1) + (p >> 2);
      const int64_t col = 64 * c + 8 * (2 * w + ((p >> 1) & 1)) + lane / 4;
      const int64_t ch = perm != nullptr ? perm[row] : row;
      word |= src.Code(ch, col) << (4 * p);
    }
    out[idx] = word;
  }
}

// The scale in the GEMM's element type: fp16 as is, bf16 rounded to nearest
// even (the one rounding a bf16 GEMM adds to the checkpoint's scales).
template <class Out>
__device__ __forceinline__ Out ToScale(__half s);
template <>
__device__ __forceinline__ __half ToScale<__half>(__half s) {
  return s;
}
template <>
__device__ __forceinline__ __nv_bfloat16 ToScale<__nv_bfloat16>(__half s) {
  return __float2bfloat16_rn(__half2float(s));
}

// Scales: position 64c + 8r + f <- column 64c + 8f + r. Zeros: word 8c + r
// holds column 64c + 8f + r at bit 8f (f < 4) or 8(f-4) + 4 (f >= 4). One
// thread per QF4 zero word (8 scales).
template <class Src, class Out>
__global__ void RepackGroupsKernel(Src src, const __half* scales, Out* out_scales, uint32_t* out_zeros,
                                   int64_t groups, int64_t n) {
  const int64_t words = groups * n / 8;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < words;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t g = idx / (n / 8);
    const int64_t c = (idx % (n / 8)) / 8;
    const int r = static_cast<int>(idx % 8);
    uint32_t zw = 0;
#pragma unroll
    for (int f = 0; f < 8; ++f) {
      const int64_t col = 64 * c + 8 * f + r;
      out_scales[g * n + 64 * c + 8 * r + f] = ToScale<Out>(scales[g * n + col]);
      if (out_zeros != nullptr) zw |= src.Zero(g, col) << (f < 4 ? 8 * f : 8 * (f - 4) + 4);
    }
    if (out_zeros != nullptr) out_zeros[idx] = zw;
  }
}

// 2-byte elements, moved as bits (fp16 or bf16 alike).
__global__ void PermuteColumnsKernel(const uint16_t* a, const int32_t* perm, uint16_t* out, int64_t m, int64_t k) {
  const int64_t total = m * k;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / k, j = idx % k;
    out[idx] = a[r * k + perm[j]];
  }
}

int Blocks(int64_t items) {
  return static_cast<int>(std::min<int64_t>((items + kThreads - 1) / kThreads, int64_t{1} << 16));
}

template <class Src>
void LaunchRepackGroups(const Src& src, const W4A16RepackArgs& a, int64_t zero_words) {
  if (a.out_dtype == W4A16DType::kBF16) {
    RepackGroupsKernel<<<Blocks(zero_words), kThreads, 0, a.stream>>>(
        src, a.scales, static_cast<__nv_bfloat16*>(a.out_scales), a.out_zeros, a.num_groups, a.n);
  } else {
    RepackGroupsKernel<<<Blocks(zero_words), kThreads, 0, a.stream>>>(src, a.scales, static_cast<__half*>(a.out_scales),
                                                                      a.out_zeros, a.num_groups, a.n);
  }
}

absl::Status LaunchStatus(absl::string_view what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

}  // namespace

absl::Status W4A16Repack(const W4A16RepackArgs& a) {
  const auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("W4A16Repack(k=", a.k, ", n=", a.n, ", num_groups=", a.num_groups, "): ", what));
  };
  if (a.k <= 0 || a.n <= 0 || a.k % 16 != 0 || a.n % 64 != 0) {
    return bad("k must be a positive multiple of 16 and n of 64");
  }
  if (a.num_groups <= 0 || a.k % a.num_groups != 0) return bad("num_groups must divide k");
  if (a.qweight == nullptr || a.scales == nullptr || a.out_qweight == nullptr || a.out_scales == nullptr) {
    return bad("qweight, scales, out_qweight and out_scales must be non-null");
  }
  if ((a.qzeros == nullptr) != (a.out_zeros == nullptr)) {
    return bad("qzeros and out_zeros must be both set (asymmetric) or both null (symmetric)");
  }
  if (a.source == W4A16Source::kAwqGemm && a.perm != nullptr) return bad("AWQ GEMM weights have no act-order perm");
  const char* what = a.source == W4A16Source::kGptqV1 ? "W4A16Repack(GPTQ v1)" : "W4A16Repack(AWQ GEMM)";
  const int64_t code_words = a.k * a.n / 8, zero_words = a.num_groups * a.n / 8;
  if (a.source == W4A16Source::kGptqV1) {
    const GptqV1Source src{a.qweight, a.qzeros, a.n};
    RepackCodesKernel<<<Blocks(code_words), kThreads, 0, a.stream>>>(src, a.perm, a.out_qweight, a.k, a.n);
    if (absl::Status s = LaunchStatus(what); !s.ok()) return s;
    LaunchRepackGroups(src, a, zero_words);
  } else {
    const AwqGemmSource src{a.qweight, a.qzeros, a.n};
    RepackCodesKernel<<<Blocks(code_words), kThreads, 0, a.stream>>>(src, nullptr, a.out_qweight, a.k, a.n);
    if (absl::Status s = LaunchStatus(what); !s.ok()) return s;
    LaunchRepackGroups(src, a, zero_words);
  }
  return LaunchStatus(what);
}

absl::Status W4A16PermuteColumns(const void* a, const int32_t* perm, void* out, int64_t m, int64_t k,
                                 cudaStream_t stream) {
  if (m < 0 || k <= 0 || a == nullptr || perm == nullptr || out == nullptr || a == out) {
    return absl::InvalidArgumentError(absl::StrCat("W4A16PermuteColumns(m=", m, ", k=", k,
                                                   "): need m >= 0, k > 0 and distinct non-null a, perm, out"));
  }
  if (m == 0) return absl::OkStatus();
  PermuteColumnsKernel<<<Blocks(m * k), kThreads, 0, stream>>>(static_cast<const uint16_t*>(a), perm,
                                                                static_cast<uint16_t*>(out), m, k);
  return LaunchStatus("W4A16PermuteColumns");
}

}  // namespace qf::kernels
