// File: kernels/ref/pack.h
//
// CPU reference packing of a QuantizedLinear (kernels/quant_types.h) into the
// two checkpoint layouts that HF transformers (through gptqmodel), vLLM,
// AutoGPTQ and AutoAWQ load, the exact inverses, and the reference
// dequantization every other path is checked against.
//
// Notation: N = out_features, K = in_features, G = num_groups, b = bits,
// q(n,k) = codes[n*K + k], z(g,n) = zeros[g*N + n]. Words are int32 stored
// little-endian; "bit i" counts from the least significant bit.
//
// 1. GPTQ v1 (AutoGPTQ, `checkpoint_format: "gptq"`), b in {2, 3, 4, 8}
//
//   qweight  I32 [K*b/32, N]   column n is one little-endian bit stream of
//                              q(n,0), q(n,1), ... q(n,K-1), b bits each:
//                              input channel k sits at stream bit k*b, i.e.
//                              word k*b/32, bit (k*b)%32.
//     b = 4:  word r of column n   (32/b = 8 codes per word, k = 8r + j)
//       bit  31    28 27    24         7     4 3     0
//           [ q(8r+7) ][ q(8r+6) ] ... [ q(8r+1) ][ q(8r) ]
//     b = 3:  32 channels fill 3 words; two codes straddle word boundaries
//       word 3r  : bits 0..29 = k 32r+0..9 (3 bits each), bits 30..31 = k 32r+10 bits 0..1
//       word 3r+1: bit 0 = k 32r+10 bit 2, bits 1..30 = k 32r+11..20, bit 31 = k 32r+21 bit 0
//       word 3r+2: bits 0..1 = k 32r+21 bits 1..2, bits 2..31 = k 32r+22..31
//   qzeros   I32 [G, N*b/32]   row g is the same bit stream over n of
//                              (z(g,n) - 1) & (2^b - 1)   <- the "v1" offset
//   scales   F16 [G, N]
//   g_idx    I32 [K]           group of each input channel (act-order order)
//   bias     F16 [N]           only when the linear has one
//
//   Dequantization (what vLLM / transformers do): W[n][k] =
//     scales[g][n] * (q(n,k) - (stored_zero(g,n) + 1)),  g = g_idx[k].
//
//   The v1 offset cannot hold z = 0: it is stored as 2^b - 1 (the low b bits
//   of -1, as AutoGPTQ's pack leaves them). UnpackGptqV1 adds 1 modulo 2^b and
//   gets 0 back, so the round trip is exact; but readers that add 1 without
//   the modulus (exllama-style kernels, AutoGPTQ's CUDA path) see 2^b, and
//   gptqmodel's v1 -> v2 conversion (adds 0x11111111 to the word) carries the
//   1 into the next field. Quantizers that target GPTQ v1 should keep zeros in
//   [1, 2^b - 1]; PackedLinear::wrapped_zeros counts the ones that are not.
//
// 2. AWQ GEMM (AutoAWQ `version: "gemm"`), b = 4 only, no act-order
//
//   qweight  I32 [K, N/8]      word (k, c) packs the 8 output channels
//                              n = 8c .. 8c+7 of input channel k, interleaved:
//       bit  31 28 27 24 23 20 19 16 15 12 11  8  7  4  3  0
//           [ n+7 ][ n+5 ][ n+3 ][ n+1 ][ n+6 ][ n+4 ][ n+2 ][ n+0 ]   (n = 8c)
//                              i.e. nibble i holds channel 8c + kAwqOrder[i],
//                              kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7}
//   qzeros   I32 [G, N/8]      same interleave over z(g, .), zeros as they are
//   scales   F16 [G, N]
//   bias     F16 [N]           only when the linear has one
//   Group of input channel k is k / group_size (no g_idx tensor).
//
// Group size -1 means one group over all K input channels (G = 1).
//
//   QF_ASSIGN_OR_RETURN(qf::kernels::PackedLinear p, qf::kernels::PackGptqV1(q));
//   QF_ASSIGN_OR_RETURN(qf::kernels::QuantizedLinear back,
//                       qf::kernels::UnpackGptqV1(qf::kernels::ViewOf(p), qf::kernels::InfoOf(q)));
//   // back == q, bit for bit
//   std::vector<qf::storage::OwnedTensor> t =
//       std::move(p).Take("model.layers.0.self_attn.q_proj.");   // qweight, qzeros, ...
//   std::vector<float> w = qf::kernels::DequantizeRef(q);    // [N x K]
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "storage/safetensors.h"

namespace qf::kernels {

// Nibble i of an AWQ word holds output channel 8c + kAwqOrder[i].
inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};

// Checks every invariant of the dequantization contract in quant_types.h:
// bits in {2,3,4,8}; positive sizes; group_size -1 (then num_groups == 1) or
// positive, dividing in_features, num_groups == in_features / group_size;
// vector sizes; codes and zeros below 2^bits; g_idx in [0, num_groups) and,
// without desc_act, equal to k / group_size; sym => every zero is 2^(bits-1);
// finite scales; bias empty or out_features long. InvalidArgument naming the
// linear and the field.
absl::Status ValidateQuantizedLinear(const QuantizedLinear& q);

// The per-value half of that contract, on views, so that a reader holding the
// values in another form (the coordinator's check of a worker's layer,
// coordinator/layer_codec.cc) refuses exactly what the packing would:
// zeros below 2^bits and, when sym, equal to 2^(bits-1); finite fp16 scales;
// g_idx in [0, G) and, without desc_act, k / group_size. The caller has
// checked the sizes (scales and zeros G x N, g_idx K; G is 1 for group_size
// -1). InvalidArgument "<where>: <field>[...]: expected ..., got ..." for the
// first value that is not.
struct GroupValues {
  int bits = 4;
  int64_t group_size = 128;
  bool sym = false;
  bool desc_act = false;
  int64_t n = 0, k = 0, g = 0;           // out_features, in_features, num_groups
  std::span<const uint16_t> scales;      // fp16 bits, [G x N]
  std::span<const uint8_t> zeros;        // [G x N]
  std::span<const int32_t> g_idx;        // [K]
};
absl::Status ValidateGroupValues(const GroupValues& v, std::string_view where);

// The packed tensors of one linear. Names are the bare suffixes ("qweight",
// "qzeros", "scales", "g_idx", "bias"); Take() prefixes them.
struct PackedLinear {
  storage::OwnedTensor qweight;
  storage::OwnedTensor qzeros;
  storage::OwnedTensor scales;
  std::optional<storage::OwnedTensor> g_idx;   // GPTQ only
  std::optional<storage::OwnedTensor> bias;    // when the linear has one
  int64_t wrapped_zeros = 0;                   // GPTQ v1: zeros equal to 0 (see above)

  // All tensors, names set to prefix + suffix, in the order qweight, qzeros,
  // scales, g_idx, bias.
  std::vector<storage::OwnedTensor> Take(std::string_view prefix) &&;
};

// Non-owning view of the same tensors, e.g. straight out of a Checkpoint.
// The TensorViews' bytes must outlive the Unpack call.
struct PackedLinearView {
  storage::TensorView qweight;
  storage::TensorView qzeros;
  storage::TensorView scales;
  std::optional<storage::TensorView> g_idx;
  std::optional<storage::TensorView> bias;
};
PackedLinearView ViewOf(const PackedLinear& p);

// What the tensors alone do not say: it comes from quantization_config.
struct PackedLinearInfo {
  std::string name;       // becomes QuantizedLinear::name; used in messages
  int bits = 4;
  int group_size = 128;   // -1: one group
  bool sym = false;
  bool desc_act = false;
};
PackedLinearInfo InfoOf(const QuantizedLinear& q);

// GPTQ v1 packing. InvalidArgument from ValidateQuantizedLinear, or when
// in_features * bits or out_features * bits is not a multiple of 32 (the
// packed dims must be whole words).
absl::StatusOr<PackedLinear> PackGptqV1(const QuantizedLinear& q);

// Inverse of PackGptqV1: PackGptqV1 then UnpackGptqV1 gives back the input
// bit for bit. A missing g_idx is allowed only without desc_act (it is then
// k / group_size). InvalidArgument naming the linear and tensor for a wrong
// dtype or shape, or when the result breaks the contract (e.g. sym with
// zeros other than 2^(bits-1)).
absl::StatusOr<QuantizedLinear> UnpackGptqV1(const PackedLinearView& p, const PackedLinearInfo& info);

// AWQ GEMM packing. InvalidArgument when bits != 4, desc_act is set (AWQ has
// no g_idx), out_features is not a multiple of 8, or ValidateQuantizedLinear
// fails.
absl::StatusOr<PackedLinear> PackAwqGemm(const QuantizedLinear& q);

// Inverse of PackAwqGemm (g_idx in the view is ignored). InvalidArgument as
// for UnpackGptqV1, and for info.bits != 4 or info.desc_act.
absl::StatusOr<QuantizedLinear> UnpackAwqGemm(const PackedLinearView& p, const PackedLinearInfo& info);

// W = scales * (codes - zeros) as fp32 [out_features x in_features]
// row-major; the scale is the fp16 value widened to fp32, the product is one
// fp32 multiply. Precondition: ValidateQuantizedLinear(q) is OK; on invalid
// input returns an empty vector (use DequantizeChecked to get the reason).
std::vector<float> DequantizeRef(const QuantizedLinear& q);
absl::StatusOr<std::vector<float>> DequantizeChecked(const QuantizedLinear& q);

}  // namespace qf::kernels
