#include "kernels/ref/ggml_blocks.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/safetensors.h"  // FloatToHalf, HalfToFloat

namespace qf::kernels {
namespace {

struct TypeInfo {
  GgmlType type;
  const char* name;
  size_t size;        // bytes per block (block types) or per element
  int64_t per_unit;   // weights per block, 1 for plain types
};
constexpr TypeInfo kTypes[] = {
    {GgmlType::kF32, "F32", 4, 1},          {GgmlType::kF16, "F16", 2, 1},
    {GgmlType::kQ4_0, "Q4_0", 18, kGgmlBlock}, {GgmlType::kQ4_1, "Q4_1", 20, kGgmlBlock},
    {GgmlType::kQ8_0, "Q8_0", 34, kGgmlBlock}, {GgmlType::kBF16, "BF16", 2, 1},
};

const TypeInfo& Info(GgmlType t) {
  for (const TypeInfo& i : kTypes) {
    if (i.type == t) return i;
  }
  return kTypes[0];  // unreachable: every enumerator is in the table
}

void AppendHalf(uint16_t h, std::string* out) {
  const char b[2] = {static_cast<char>(h & 0xFF), static_cast<char>(h >> 8)};
  out->append(b, 2);
}

uint16_t ReadHalf(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | (static_cast<uint8_t>(p[1]) << 8));
}

}  // namespace

size_t GgmlTypeSize(GgmlType t) { return Info(t).size; }
size_t GgmlRowBytes(GgmlType t, int64_t n) { return static_cast<size_t>(n / Info(t).per_unit) * Info(t).size; }
const char* GgmlTypeName(GgmlType t) { return Info(t).name; }

absl::StatusOr<GgmlType> GgmlTypeFor(const QuantizedLinear& q) {
  const auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(q.name, ": ", why));
  };
  GgmlType t;
  if (q.bits == 4) {
    t = q.sym ? GgmlType::kQ4_0 : GgmlType::kQ4_1;
  } else if (q.bits == 8 && q.sym) {
    t = GgmlType::kQ8_0;
  } else {
    return refuse(absl::StrCat("bits ", q.bits, q.sym ? " symmetric" : " with zero points",
                               ": llama.cpp's blocks hold 4-bit codes (Q4_0, Q4_1) or symmetric 8-bit ones (Q8_0)"));
  }
  if (q.in_features % kGgmlBlock != 0) {
    return refuse(absl::StrCat("in_features ", q.in_features, ": expected a multiple of ", kGgmlBlock));
  }
  if (q.group_size != -1 && (q.group_size <= 0 || q.group_size % kGgmlBlock != 0)) {
    return refuse(absl::StrCat("group_size ", q.group_size, ": expected -1 or a multiple of ", kGgmlBlock,
                               " (a block of 32 weights has one scale)"));
  }
  const int64_t gs = q.group_size == -1 ? q.in_features : q.group_size;
  for (int64_t i = 0; i < q.in_features; ++i) {
    if (q.g_idx[static_cast<size_t>(i)] != i / gs) {
      return refuse(absl::StrCat("input channel ", i, " is in group ", q.g_idx[static_cast<size_t>(i)], ", expected ",
                                 i / gs, ": act-order groups are not runs of consecutive channels, which "
                                 "llama.cpp's blocks need"));
    }
  }
  if (t == GgmlType::kQ4_0 || t == GgmlType::kQ8_0) {
    const uint8_t mid = static_cast<uint8_t>(1 << (q.bits - 1));
    for (size_t i = 0; i < q.zeros.size(); ++i) {
      if (q.zeros[i] != mid) {
        return refuse(absl::StrCat("symmetric, but zero ", static_cast<int>(q.zeros[i]), " at ", i, ", expected ",
                                   static_cast<int>(mid)));
      }
    }
  }
  return t;
}

absl::Status AppendGgmlRow(const QuantizedLinear& q, GgmlType t, int64_t row, std::string* out) {
  if (row < 0 || row >= q.out_features) {
    return absl::OutOfRangeError(absl::StrCat(q.name, ": row ", row, " of ", q.out_features));
  }
  const int64_t k = q.in_features, gs = q.group_size == -1 ? k : q.group_size;
  const uint8_t* codes = q.codes.data() + row * k;
  out->reserve(out->size() + GgmlRowBytes(t, k));
  for (int64_t b0 = 0; b0 < k; b0 += kGgmlBlock) {
    const size_t gi = static_cast<size_t>(b0 / gs * q.out_features + row);
    const uint16_t d = q.scales[gi];
    AppendHalf(d, out);
    if (t == GgmlType::kQ8_0) {
      for (int64_t j = 0; j < kGgmlBlock; ++j) out->push_back(static_cast<char>(static_cast<int>(codes[b0 + j]) - 128));
      continue;
    }
    if (t == GgmlType::kQ4_1) {
      // scale * zero is exact in float (11 x 4 bits); the fp16 rounding of its
      // negation is the one step that is not.
      const float m = -storage::HalfToFloat(d) * static_cast<float>(q.zeros[gi]);
      AppendHalf(storage::FloatToHalf(m), out);
    }
    for (int64_t j = 0; j < kGgmlBlock / 2; ++j) {
      out->push_back(static_cast<char>(codes[b0 + j] | (codes[b0 + j + kGgmlBlock / 2] << 4)));
    }
  }
  return absl::OkStatus();
}

std::vector<float> DequantizeGgmlRow(GgmlType t, std::string_view bytes, int64_t n) {
  std::vector<float> w(static_cast<size_t>(n));
  const size_t bs = GgmlTypeSize(t);
  for (int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const char* p = bytes.data() + b * bs;
    float* o = w.data() + b * kGgmlBlock;
    const float d = storage::HalfToFloat(ReadHalf(p));
    if (t == GgmlType::kQ8_0) {
      for (int64_t j = 0; j < kGgmlBlock; ++j) o[j] = d * static_cast<float>(static_cast<int8_t>(p[2 + j]));
      continue;
    }
    const float m = t == GgmlType::kQ4_1 ? storage::HalfToFloat(ReadHalf(p + 2)) : 0.f;
    const uint8_t* qs = reinterpret_cast<const uint8_t*>(p + (t == GgmlType::kQ4_1 ? 4 : 2));
    for (int64_t j = 0; j < kGgmlBlock / 2; ++j) {
      const int lo = qs[j] & 0x0F, hi = qs[j] >> 4;
      if (t == GgmlType::kQ4_0) {
        o[j] = d * static_cast<float>(lo - 8);
        o[j + kGgmlBlock / 2] = d * static_cast<float>(hi - 8);
      } else {
        o[j] = d * static_cast<float>(lo) + m;
        o[j + kGgmlBlock / 2] = d * static_cast<float>(hi) + m;
      }
    }
  }
  return w;
}

}  // namespace qf::kernels
