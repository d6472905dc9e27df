#include "kernels/ref/pack.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace qf::kernels {
namespace {

using storage::DType;
using storage::OwnedTensor;
using storage::TensorView;

// The packed formats are little-endian int32 words; we build them with plain
// stores, so the host must be little-endian too.
static_assert(std::endian::native == std::endian::little, "packing assumes a little-endian host");

// Debian's Abseil has its own string_view type; std::string_view is passed through this.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Invalid(absl::string_view linear, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("linear '", linear, "': ", field, ": ", what));
}

bool IsSupportedGptqBits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

// fp16 with an all-ones exponent is Inf or NaN.
bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Writes value `index` of a little-endian bit stream of `bits`-bit values
// whose consecutive 32-bit words lie `stride` words apart. A value may
// straddle two words (3-bit streams do).
void PutStream(uint32_t* base, int64_t stride, int64_t index, int bits, uint32_t value) {
  const int64_t bit = index * bits;
  const int64_t word = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  base[word * stride] |= value << shift;
  if (shift + bits > 32) base[(word + 1) * stride] |= value >> (32 - shift);
}

uint32_t GetStream(const uint32_t* base, int64_t stride, int64_t index, int bits) {
  const uint32_t mask = (1u << bits) - 1u;
  const int64_t bit = index * bits;
  const int64_t word = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  uint32_t v = base[word * stride] >> shift;
  if (shift + bits > 32) v |= base[(word + 1) * stride] << (32 - shift);
  return v & mask;
}

OwnedTensor WordsTensor(std::string name, std::vector<int64_t> shape, const std::vector<uint32_t>& words) {
  OwnedTensor t{std::move(name), DType::kI32, std::move(shape), std::string(words.size() * 4, '\0')};
  if (!words.empty()) std::memcpy(t.data.data(), words.data(), t.data.size());
  return t;
}

OwnedTensor HalfTensor(std::string name, std::vector<int64_t> shape, const std::vector<uint16_t>& v) {
  OwnedTensor t{std::move(name), DType::kF16, std::move(shape), std::string(v.size() * 2, '\0')};
  if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Checks dtype and shape of one packed tensor.
absl::Status CheckView(absl::string_view linear, absl::string_view field, const TensorView& v, DType dtype,
                       const std::vector<int64_t>& shape) {
  if (v.dtype != dtype || v.shape != shape) {
    return Invalid(linear, absl::StrCat("tensor '", field, "'"),
                   absl::StrCat("expected ", Sv(storage::DTypeName(dtype)), " ", ShapeString(shape), ", got ",
                                Sv(storage::DTypeName(v.dtype)), " ", ShapeString(v.shape)));
  }
  if (v.data.size() != static_cast<size_t>(v.numel()) * storage::DTypeSize(dtype)) {
    return Invalid(linear, absl::StrCat("tensor '", field, "'"), "data size does not match its shape");
  }
  return absl::OkStatus();
}

// Copies the bytes of a view into aligned words (mapped data need not be aligned).
template <typename T>
std::vector<T> CopyOut(const TensorView& v) {
  std::vector<T> out(v.data.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data.data(), out.size() * sizeof(T));
  return out;
}

// Group geometry shared by both unpackers: checks G against K and group_size.
absl::Status CheckGroups(const PackedLinearInfo& info, int64_t k, int64_t g) {
  if (info.group_size == -1) {
    if (g != 1) return Invalid(info.name, "scales", absl::StrCat("group_size -1 needs 1 group row, got ", g));
    return absl::OkStatus();
  }
  if (info.group_size <= 0 || k % info.group_size != 0) {
    return Invalid(info.name, "group_size",
                   absl::StrCat(info.group_size, " does not divide in_features ", k, " (or is not -1)"));
  }
  if (g != k / info.group_size) {
    return Invalid(info.name, "scales",
                   absl::StrCat("expected ", k / info.group_size, " group rows for in_features ", k,
                                " / group_size ", info.group_size, ", got ", g));
  }
  return absl::OkStatus();
}

QuantizedLinear Skeleton(const PackedLinearInfo& info, int64_t n, int64_t k, int64_t g) {
  QuantizedLinear q;
  q.name = info.name;
  q.bits = info.bits;
  q.group_size = info.group_size;
  q.sym = info.sym;
  q.desc_act = info.desc_act;
  q.out_features = n;
  q.in_features = k;
  q.num_groups = g;
  return q;
}

absl::Status ReadBias(const PackedLinearView& p, const PackedLinearInfo& info, QuantizedLinear& q) {
  if (!p.bias) return absl::OkStatus();
  QF_RETURN_IF_ERROR(CheckView(info.name, "bias", *p.bias, DType::kF16, {q.out_features}));
  q.bias = CopyOut<uint16_t>(*p.bias);
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateQuantizedLinear(const QuantizedLinear& q) {
  const std::string& nm = q.name;
  if (!IsSupportedGptqBits(q.bits)) return Invalid(nm, "bits", absl::StrCat(q.bits, " (expected 2, 3, 4 or 8)"));
  if (q.out_features <= 0 || q.in_features <= 0) {
    return Invalid(nm, "shape", absl::StrCat("out_features ", q.out_features, " x in_features ", q.in_features,
                                             " (expected both positive)"));
  }
  const int64_t n = q.out_features, k = q.in_features;
  if (q.group_size == -1) {
    if (q.num_groups != 1) return Invalid(nm, "num_groups", absl::StrCat(q.num_groups, " (group_size -1 needs 1)"));
  } else if (q.group_size <= 0 || k % q.group_size != 0) {
    return Invalid(nm, "group_size", absl::StrCat(q.group_size, " does not divide in_features ", k,
                                                  " (expected a divisor or -1)"));
  } else if (q.num_groups != k / q.group_size) {
    return Invalid(nm, "num_groups", absl::StrCat(q.num_groups, " (expected in_features / group_size = ",
                                                  k / q.group_size, ")"));
  }
  const int64_t g = q.num_groups;
  auto size_err = [&](absl::string_view field, size_t got, int64_t want) {
    return Invalid(nm, field, absl::StrCat("has ", got, " elements, expected ", want));
  };
  if (q.codes.size() != static_cast<size_t>(n * k)) return size_err("codes", q.codes.size(), n * k);
  if (q.scales.size() != static_cast<size_t>(g * n)) return size_err("scales", q.scales.size(), g * n);
  if (q.zeros.size() != static_cast<size_t>(g * n)) return size_err("zeros", q.zeros.size(), g * n);
  if (q.g_idx.size() != static_cast<size_t>(k)) return size_err("g_idx", q.g_idx.size(), k);
  if (!q.bias.empty() && q.bias.size() != static_cast<size_t>(n)) return size_err("bias", q.bias.size(), n);

  const uint32_t levels = 1u << q.bits;
  // Fast pass: OR of every code (8 per step); the exact scan below only runs
  // when some code has a bit at or above `bits` (it names the first one).
  uint64_t any = 0;
  size_t c8 = 0;
  for (; c8 + 8 <= q.codes.size(); c8 += 8) {
    uint64_t x;
    std::memcpy(&x, q.codes.data() + c8, 8);
    any |= x;
  }
  for (; c8 < q.codes.size(); ++c8) any |= q.codes[c8];
  any |= any >> 32;
  any |= any >> 16;
  any |= any >> 8;
  for (size_t i = 0; (any & 0xff) >= levels && i < q.codes.size(); ++i) {
    if (q.codes[i] >= levels) {
      return Invalid(nm, "codes", absl::StrCat("code ", int{q.codes[i]}, " at [", i / k, ", ", i % k,
                                               "] is not below 2^bits = ", levels));
    }
  }
  return ValidateGroupValues({.bits = q.bits,
                              .group_size = q.group_size,
                              .sym = q.sym,
                              .desc_act = q.desc_act,
                              .n = n,
                              .k = k,
                              .g = g,
                              .scales = q.scales,
                              .zeros = q.zeros,
                              .g_idx = q.g_idx},
                             absl::StrCat("linear '", nm, "'"));
}

absl::Status ValidateGroupValues(const GroupValues& v, std::string_view where_sv) {
  const absl::string_view where = Sv(where_sv);
  if (v.bits < 1 || v.bits > 8 || v.n < 1)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": bits ", v.bits, " and out_features ", v.n, ": expected 1..8 and a positive count"));
  const int64_t n = v.n;
  const auto at = [n](size_t i) { return absl::StrCat("[", i / n, ", ", i % n, "]"); };
  const uint32_t levels = 1u << v.bits, sym_zero = levels / 2;
  for (size_t i = 0; i < v.zeros.size(); ++i) {
    const uint32_t z = v.zeros[i];
    if (z >= levels)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": zeros", at(i), ": expected a value below 2^bits = ", levels, ", got ", z));
    if (v.sym && z != sym_zero)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": zeros", at(i), ": expected ", sym_zero, " (symmetric), got ", z));
  }
  for (size_t i = 0; i < v.scales.size(); ++i) {
    if (!HalfIsFinite(v.scales[i]))
      return absl::InvalidArgumentError(absl::StrCat(where, ": scales", at(i),
                                                     ": expected a finite fp16 value, got 0x",
                                                     absl::Hex(v.scales[i], absl::kZeroPad4)));
  }
  for (size_t i = 0; i < v.g_idx.size(); ++i) {
    const int32_t gi = v.g_idx[i];
    if (gi < 0 || gi >= v.g)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": g_idx[", i, "] = ", gi, ", expected a value in [0, ", v.g, ")"));
    const int64_t natural = v.group_size == -1 ? 0 : static_cast<int64_t>(i) / v.group_size;
    if (!v.desc_act && gi != natural)
      return absl::InvalidArgumentError(absl::StrCat(where, ": g_idx[", i, "] = ", gi, ", expected ", natural,
                                                     " = k / group_size (desc_act is off)"));
  }
  return absl::OkStatus();
}

std::vector<OwnedTensor> PackedLinear::Take(std::string_view prefix) && {
  std::vector<OwnedTensor> out;
  auto add = [&](OwnedTensor& t) {
    t.name = absl::StrCat(Sv(prefix), t.name);
    out.push_back(std::move(t));
  };
  add(qweight);
  add(qzeros);
  add(scales);
  if (g_idx) add(*g_idx);
  if (bias) add(*bias);
  return out;
}

PackedLinearView ViewOf(const PackedLinear& p) {
  auto view = [](const OwnedTensor& t) { return TensorView{t.name, t.dtype, t.shape, t.data}; };
  PackedLinearView v{view(p.qweight), view(p.qzeros), view(p.scales), std::nullopt, std::nullopt};
  if (p.g_idx) v.g_idx = view(*p.g_idx);
  if (p.bias) v.bias = view(*p.bias);
  return v;
}

PackedLinearInfo InfoOf(const QuantizedLinear& q) {
  return PackedLinearInfo{q.name, q.bits, q.group_size, q.sym, q.desc_act};
}

absl::StatusOr<PackedLinear> PackGptqV1(const QuantizedLinear& q) {
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  const int64_t n = q.out_features, k = q.in_features, g = q.num_groups;
  const int b = q.bits;
  if ((k * b) % 32 != 0) {
    return Invalid(q.name, "in_features", absl::StrCat(k, " x ", b, " bits is not a whole number of int32 words (need a multiple of ",
                                                       b == 3 ? 32 : 32 / b, ")"));
  }
  if ((n * b) % 32 != 0) {
    return Invalid(q.name, "out_features", absl::StrCat(n, " x ", b, " bits is not a whole number of int32 words (need a multiple of ",
                                                        b == 3 ? 32 : 32 / b, ")"));
  }
  const int64_t qw_rows = k * b / 32, qz_cols = n * b / 32;
  const uint32_t mask = (1u << b) - 1u;

  // qweight: column n is the bit stream over k; word r of column n at r*N + n.
  std::vector<uint32_t> qweight(static_cast<size_t>(qw_rows * n), 0u);
  if (b == 3) {
    for (int64_t o = 0; o < n; ++o) {
      const uint8_t* row = &q.codes[o * k];
      for (int64_t i = 0; i < k; ++i) PutStream(&qweight[o], n, i, b, row[i]);
    }
  } else {
    // 32/b codes of a row make one word, LSB first (what PutStream builds).
    // Tiles of 16 columns: each word row of the tile is one cache line of
    // qweight, and the tile's 16 code rows are read sequentially.
    const int per = 32 / b;
    constexpr int64_t kTile = 16;
    for (int64_t o0 = 0; o0 < n; o0 += kTile) {
      const int64_t o1 = std::min(n, o0 + kTile);
      for (int64_t r = 0; r < qw_rows; ++r) {
        uint32_t* dst = &qweight[r * n];
        for (int64_t o = o0; o < o1; ++o) {
          const uint8_t* c = &q.codes[o * k + r * per];
          uint32_t w = 0;
          if (b == 4) {
            uint64_t x;
            std::memcpy(&x, c, 8);
            x = (x | (x >> 4)) & 0x00ff00ff00ff00ffull;
            x = (x | (x >> 8)) & 0x0000ffff0000ffffull;
            w = static_cast<uint32_t>(x | (x >> 16));
          } else {
            for (int t = 0; t < per; ++t) w |= uint32_t{c[t]} << (t * b);
          }
          dst[o] = w;
        }
      }
    }
  }
  // qzeros: row g is the bit stream over n of (z - 1) mod 2^b.
  PackedLinear p;
  std::vector<uint32_t> qzeros(static_cast<size_t>(g * qz_cols), 0u);
  for (int64_t gi = 0; gi < g; ++gi) {
    for (int64_t o = 0; o < n; ++o) {
      const uint32_t z = q.zeros[gi * n + o];
      if (z == 0) ++p.wrapped_zeros;
      PutStream(&qzeros[gi * qz_cols], 1, o, b, (z - 1u) & mask);
    }
  }
  p.qweight = WordsTensor("qweight", {qw_rows, n}, qweight);
  p.qzeros = WordsTensor("qzeros", {g, qz_cols}, qzeros);
  p.scales = HalfTensor("scales", {g, n}, q.scales);
  std::vector<uint32_t> g_idx(q.g_idx.begin(), q.g_idx.end());
  p.g_idx = WordsTensor("g_idx", {k}, g_idx);
  if (!q.bias.empty()) p.bias = HalfTensor("bias", {n}, q.bias);
  return p;
}

absl::StatusOr<QuantizedLinear> UnpackGptqV1(const PackedLinearView& p, const PackedLinearInfo& info) {
  const int b = info.bits;
  if (!IsSupportedGptqBits(b)) return Invalid(info.name, "bits", absl::StrCat(b, " (expected 2, 3, 4 or 8)"));
  if (p.qweight.shape.size() != 2 || p.scales.shape.size() != 2) {
    return Invalid(info.name, "qweight/scales", absl::StrCat("expected 2-D tensors, got ", ShapeString(p.qweight.shape),
                                                             " and ", ShapeString(p.scales.shape)));
  }
  const int64_t rows = p.qweight.shape[0], n = p.qweight.shape[1], g = p.scales.shape[0];
  const int64_t k = p.g_idx && p.g_idx->shape.size() == 1 ? p.g_idx->shape[0] : rows * 32 / b;
  if (n <= 0 || k <= 0 || k * b != rows * 32 || (n * b) % 32 != 0) {
    return Invalid(info.name, "qweight", absl::StrCat("shape ", ShapeString(p.qweight.shape), " does not fit ",
                                                      b, "-bit GPTQ packing of in_features ", k));
  }
  QF_RETURN_IF_ERROR(CheckView(info.name, "qweight", p.qweight, DType::kI32, {rows, n}));
  QF_RETURN_IF_ERROR(CheckView(info.name, "scales", p.scales, DType::kF16, {g, n}));
  QF_RETURN_IF_ERROR(CheckView(info.name, "qzeros", p.qzeros, DType::kI32, {g, n * b / 32}));
  QF_RETURN_IF_ERROR(CheckGroups(info, k, g));
  if (p.g_idx) {
    QF_RETURN_IF_ERROR(CheckView(info.name, "g_idx", *p.g_idx, DType::kI32, {k}));
  } else if (info.desc_act) {
    return Invalid(info.name, "g_idx", "missing, but desc_act is set");
  }

  QuantizedLinear q = Skeleton(info, n, k, g);
  const std::vector<uint32_t> qweight = CopyOut<uint32_t>(p.qweight);
  const std::vector<uint32_t> qzeros = CopyOut<uint32_t>(p.qzeros);
  q.codes.resize(static_cast<size_t>(n * k));
  for (int64_t o = 0; o < n; ++o) {
    for (int64_t i = 0; i < k; ++i) q.codes[o * k + i] = static_cast<uint8_t>(GetStream(&qweight[o], n, i, b));
  }
  const uint32_t mask = (1u << b) - 1u;
  const int64_t qz_cols = n * b / 32;
  q.zeros.resize(static_cast<size_t>(g * n));
  for (int64_t gi = 0; gi < g; ++gi) {
    for (int64_t o = 0; o < n; ++o) {
      q.zeros[gi * n + o] = static_cast<uint8_t>((GetStream(&qzeros[gi * qz_cols], 1, o, b) + 1u) & mask);
    }
  }
  q.scales = CopyOut<uint16_t>(p.scales);
  if (p.g_idx) {
    q.g_idx = CopyOut<int32_t>(*p.g_idx);
  } else {
    q.g_idx.resize(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) q.g_idx[i] = info.group_size == -1 ? 0 : static_cast<int32_t>(i / info.group_size);
  }
  QF_RETURN_IF_ERROR(ReadBias(p, info, q));
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  return q;
}

absl::StatusOr<PackedLinear> PackAwqGemm(const QuantizedLinear& q) {
  if (q.bits != 4) return Invalid(q.name, "bits", absl::StrCat(q.bits, " (AWQ GEMM packs 4 bits only)"));
  if (q.desc_act) return Invalid(q.name, "desc_act", "AWQ GEMM has no g_idx, so act-order cannot be stored");
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  const int64_t n = q.out_features, k = q.in_features, g = q.num_groups;
  if (n % 8 != 0) return Invalid(q.name, "out_features", absl::StrCat(n, " is not a multiple of 8 (AWQ packs 8 per int32)"));
  const int64_t cols = n / 8;

  std::vector<uint32_t> qweight(static_cast<size_t>(k * cols), 0u);
  // Blocks of 16 words x 64 input channels: the 128 code rows x 64 bytes read
  // stay in L1 and every word row of the block is one cache line of qweight.
  constexpr int64_t kColTile = 16, kRowTile = 64;
  for (int64_t c0 = 0; c0 < cols; c0 += kColTile) {
    const int64_t c1 = std::min(cols, c0 + kColTile);
    for (int64_t i0 = 0; i0 < k; i0 += kRowTile) {
      const int64_t i1 = std::min(k, i0 + kRowTile);
      for (int64_t i = i0; i < i1; ++i) {
        uint32_t* dst = &qweight[i * cols];
        for (int64_t c = c0; c < c1; ++c) {
          const uint8_t* col = &q.codes[c * 8 * k + i];
          uint32_t w = 0;
          for (int nib = 0; nib < 8; ++nib) w |= uint32_t{col[kAwqOrder[nib] * k]} << (4 * nib);
          dst[c] = w;
        }
      }
    }
  }
  std::vector<uint32_t> qzeros(static_cast<size_t>(g * cols), 0u);
  for (int64_t gi = 0; gi < g; ++gi) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int nib = 0; nib < 8; ++nib) {
        qzeros[gi * cols + c] |= uint32_t{q.zeros[gi * n + c * 8 + kAwqOrder[nib]]} << (4 * nib);
      }
    }
  }
  PackedLinear p;
  p.qweight = WordsTensor("qweight", {k, cols}, qweight);
  p.qzeros = WordsTensor("qzeros", {g, cols}, qzeros);
  p.scales = HalfTensor("scales", {g, n}, q.scales);
  if (!q.bias.empty()) p.bias = HalfTensor("bias", {n}, q.bias);
  return p;
}

absl::StatusOr<QuantizedLinear> UnpackAwqGemm(const PackedLinearView& p, const PackedLinearInfo& info) {
  if (info.bits != 4) return Invalid(info.name, "bits", absl::StrCat(info.bits, " (AWQ GEMM packs 4 bits only)"));
  if (info.desc_act) return Invalid(info.name, "desc_act", "AWQ GEMM has no g_idx, so act-order cannot be stored");
  if (p.qweight.shape.size() != 2 || p.scales.shape.size() != 2) {
    return Invalid(info.name, "qweight/scales", absl::StrCat("expected 2-D tensors, got ", ShapeString(p.qweight.shape),
                                                             " and ", ShapeString(p.scales.shape)));
  }
  const int64_t k = p.qweight.shape[0], cols = p.qweight.shape[1], g = p.scales.shape[0], n = cols * 8;
  if (k <= 0 || cols <= 0) return Invalid(info.name, "qweight", absl::StrCat("empty shape ", ShapeString(p.qweight.shape)));
  QF_RETURN_IF_ERROR(CheckView(info.name, "qweight", p.qweight, DType::kI32, {k, cols}));
  QF_RETURN_IF_ERROR(CheckView(info.name, "scales", p.scales, DType::kF16, {g, n}));
  QF_RETURN_IF_ERROR(CheckView(info.name, "qzeros", p.qzeros, DType::kI32, {g, cols}));
  QF_RETURN_IF_ERROR(CheckGroups(info, k, g));

  QuantizedLinear q = Skeleton(info, n, k, g);
  const std::vector<uint32_t> qweight = CopyOut<uint32_t>(p.qweight);
  const std::vector<uint32_t> qzeros = CopyOut<uint32_t>(p.qzeros);
  q.codes.resize(static_cast<size_t>(n * k));
  q.zeros.resize(static_cast<size_t>(g * n));
  for (int64_t c = 0; c < cols; ++c) {
    for (int nib = 0; nib < 8; ++nib) {
      const int64_t o = c * 8 + kAwqOrder[nib];
      for (int64_t i = 0; i < k; ++i) q.codes[o * k + i] = static_cast<uint8_t>((qweight[i * cols + c] >> (4 * nib)) & 0xFu);
      for (int64_t gi = 0; gi < g; ++gi) {
        q.zeros[gi * n + o] = static_cast<uint8_t>((qzeros[gi * cols + c] >> (4 * nib)) & 0xFu);
      }
    }
  }
  q.scales = CopyOut<uint16_t>(p.scales);
  q.g_idx.resize(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) q.g_idx[i] = info.group_size == -1 ? 0 : static_cast<int32_t>(i / info.group_size);
  QF_RETURN_IF_ERROR(ReadBias(p, info, q));
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  return q;
}

absl::StatusOr<std::vector<float>> DequantizeChecked(const QuantizedLinear& q) {
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  const int64_t n = q.out_features, k = q.in_features;
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t o = 0; o < n; ++o) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t gi = q.g_idx[i];
      const float scale = storage::HalfToFloat(q.scales[gi * n + o]);
      const int diff = int{q.codes[o * k + i]} - int{q.zeros[gi * n + o]};
      w[o * k + i] = scale * static_cast<float>(diff);
    }
  }
  return w;
}

std::vector<float> DequantizeRef(const QuantizedLinear& q) {
  absl::StatusOr<std::vector<float>> w = DequantizeChecked(q);
  return w.ok() ? *std::move(w) : std::vector<float>{};
}

}  // namespace qf::kernels
