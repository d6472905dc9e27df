// File: kernels/ref/ggml_blocks.h
//
// A quantized linear as llama.cpp's block types hold it (ggml's Q4_0, Q4_1,
// Q8_0): each output row cut into blocks of 32 consecutive input channels,
// each block with its own fp16 scale. Where our groups are contiguous runs of
// a multiple of 32 channels (or one group per row), every block lies inside
// one group and takes that group's scale:
//
//   type  bytes  block layout                      weight        from our codes
//   Q4_0  18     d:f16, qs[16]                     d * (q - 8)   4-bit symmetric: d = scale, q = code
//   Q4_1  20     d:f16, m:f16, qs[16]              d * q + m     4-bit asymmetric: d = scale, q = code,
//                                                                  m = fp16(-scale * zero)
//   Q8_0  34     d:f16, qs[32] (int8)              d * q         8-bit symmetric: d = scale, q = code - 128
//   qs (4-bit): byte j holds weight j in its low nibble and weight j + 16 in its high one.
//
// Q4_0 and Q8_0 give exactly our dequantized weights (scale * (code - zero)
// in float); Q4_1 rounds -scale * zero to fp16 once (an error of at most
// scale / 128). Nothing else maps exactly (2- and 3-bit codes, 8-bit zero
// points, act-order groups): those are refused, never requantized.
//
//   QF_ASSIGN_OR_RETURN(GgmlType t, GgmlTypeFor(q));
//   std::string row_bytes;
//   QF_RETURN_IF_ERROR(AppendGgmlRow(q, t, row, &row_bytes));
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant_types.h"

namespace qf::kernels {

// ggml's type ids (ggml.h's enum ggml_type), as GGUF stores them.
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30 };

inline constexpr int64_t kGgmlBlock = 32;  // weights per block of the quantized types

// Bytes of one block (quantized types) or element (F32, F16, BF16).
size_t GgmlTypeSize(GgmlType t);
// Bytes of a row of `n` weights (n a multiple of kGgmlBlock for block types).
size_t GgmlRowBytes(GgmlType t, int64_t n);
const char* GgmlTypeName(GgmlType t);

// The block type that holds `q` exactly (see above), or InvalidArgument naming
// the linear and what stands in the way: bits, zero points with 8 bits, a
// group size that is not -1 or a multiple of 32, groups that are not
// contiguous runs of input channels (act-order), in_features % 32.
absl::StatusOr<GgmlType> GgmlTypeFor(const QuantizedLinear& q);

// Appends row `row` of `q` as GgmlRowBytes(t, q.in_features) bytes of blocks.
// t must be GgmlTypeFor(q); OutOfRange for a row outside the linear.
absl::Status AppendGgmlRow(const QuantizedLinear& q, GgmlType t, int64_t row, std::string* out);

// The weights `n` consecutive blocks of type t hold, as llama.cpp
// dequantizes them (float). For tests and for checks of an export.
std::vector<float> DequantizeGgmlRow(GgmlType t, std::string_view bytes, int64_t n);

}  // namespace qf::kernels
