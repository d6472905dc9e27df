#include "coordinator/layer_codec.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/quote.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "coordinator/planner.h"
#include "kernels/ref/pack.h"
#include "storage/artifact.h"

namespace qf::coordinator {
namespace {

int64_t PackedBytes(int64_t count, int bits) { return (count * bits + 7) / 8; }

std::string U16Bytes(const std::vector<uint16_t>& v) {
  std::string out(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    out[2 * i] = static_cast<char>(v[i] & 0xff);
    out[2 * i + 1] = static_cast<char>(v[i] >> 8);
  }
  return out;
}

std::vector<uint16_t> U16FromBytes(const std::string& b) {
  std::vector<uint16_t> out(b.size() / 2);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<uint16_t>(static_cast<uint8_t>(b[2 * i]) | (static_cast<uint8_t>(b[2 * i + 1]) << 8));
  return out;
}

int DtypeBytes(const std::string& dtype) {
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "F32") return 4;
  return 0;
}

// Expected [out, in] of each linear of a decoder layer, from config.json.
std::map<std::string, std::pair<int64_t, int64_t>> ExpectedLinears(const storage::ModelConfig& c) {
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return {{"self_attn.q_proj", {q, c.hidden_size}},
          {"self_attn.k_proj", {kv, c.hidden_size}},
          {"self_attn.v_proj", {kv, c.hidden_size}},
          {"self_attn.o_proj", {c.hidden_size, q}},
          {"mlp.gate_proj", {c.intermediate_size, c.hidden_size}},
          {"mlp.up_proj", {c.intermediate_size, c.hidden_size}},
          {"mlp.down_proj", {c.hidden_size, c.intermediate_size}}};
}

template <typename A, typename B>
absl::Status Expect(const std::string& where, const char* what, const A& expected, const B& got) {
  if (expected == got) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what, ": expected ", expected, ", got ", got));
}

// The values the dequantization contract asks for beyond the sizes
// (kernels::ValidateGroupValues, the check the assembler's packing runs):
// checked here so that a layer the assembler would refuse is refused before it
// is committed, where the task can still run again. The caller has checked
// the sizes; codes below 2^bits hold by construction of the bit stream.
absl::Status ValidateLinearValues(const proto::QuantizedLinearProto& q, const std::string& where, int64_t groups,
                                  int64_t out, int64_t in) {
  const std::vector<uint16_t> scales = U16FromBytes(q.scales());
  QF_ASSIGN_OR_RETURN(const std::vector<uint8_t> zeros, UnpackBits(q.zeros(), q.bits(), groups * out));
  return kernels::ValidateGroupValues({.bits = q.bits(),
                                       .group_size = q.group_size(),
                                       .sym = q.sym(),
                                       .desc_act = q.desc_act(),
                                       .n = out,
                                       .k = in,
                                       .g = groups,
                                       .scales = scales,
                                       .zeros = zeros,
                                       .g_idx = {q.g_idx().data(), static_cast<size_t>(q.g_idx_size())}},
                                      where);
}

absl::Status ValidateLinear(const proto::QuantizedLinearProto& q, const std::string& where, int64_t out,
                            int64_t in, const proto::JobSpec& spec) {
  QF_RETURN_IF_ERROR(Expect(where, "out_features", out, q.out_features()));
  QF_RETURN_IF_ERROR(Expect(where, "in_features", in, q.in_features()));
  QF_RETURN_IF_ERROR(Expect(where, "bits", spec.bits(), q.bits()));
  QF_RETURN_IF_ERROR(Expect(where, "group_size", spec.group_size(), q.group_size()));
  QF_RETURN_IF_ERROR(Expect(where, "sym", spec.sym(), q.sym()));
  QF_RETURN_IF_ERROR(Expect(where, "desc_act", DescAct(spec), q.desc_act()));
  const int64_t groups = q.group_size() == -1 ? 1 : in / q.group_size();
  QF_RETURN_IF_ERROR(Expect(where, "num_groups", groups, q.num_groups()));
  QF_RETURN_IF_ERROR(Expect(where, "codes bytes", PackedBytes(out * in, q.bits()),
                            static_cast<int64_t>(q.codes().size())));
  QF_RETURN_IF_ERROR(Expect(where, "scales bytes", 2 * groups * out, static_cast<int64_t>(q.scales().size())));
  QF_RETURN_IF_ERROR(Expect(where, "zeros bytes", PackedBytes(groups * out, q.bits()),
                            static_cast<int64_t>(q.zeros().size())));
  QF_RETURN_IF_ERROR(Expect(where, "g_idx entries", in, static_cast<int64_t>(q.g_idx_size())));
  if (!q.bias().empty()) QF_RETURN_IF_ERROR(Expect(where, "bias bytes", 2 * out, static_cast<int64_t>(q.bias().size())));
  return ValidateLinearValues(q, where, groups, out, in);
}

absl::Status ValidateDense(const proto::DenseTensorProto& d, const std::string& where,
                           const storage::ModelConfig& cfg) {
  // A module path: dotted identifiers ([A-Za-z0-9_], as torch names modules).
  const bool path_chars = std::all_of(d.name().begin(), d.name().end(),
                                      [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == '.'; });
  if (d.name().empty() || !path_chars || d.name().find("..") != std::string::npos || d.name().front() == '.' ||
      d.name().back() == '.')
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected a module path, got \"", EscapeForError(d.name()), "\""));
  int elem = DtypeBytes(d.dtype());
  if (elem == 0) return absl::InvalidArgumentError(absl::StrCat(where, ": dtype: expected F16, BF16 or F32, got \"", EscapeForError(d.dtype()), "\""));
  int64_t numel = 1;
  for (int64_t s : d.shape()) {
    if (s < 0 || s > (int64_t{1} << 40)) return absl::InvalidArgumentError(absl::StrCat(where, ": negative or huge dimension ", s));
    numel *= s;
  }
  QF_RETURN_IF_ERROR(Expect(where, "data bytes", numel * elem, static_cast<int64_t>(d.data().size())));
  if (d.name() == "input_layernorm.weight" || d.name() == "post_attention_layernorm.weight") {
    if (d.shape_size() != 1 || d.shape(0) != cfg.hidden_size)
      return absl::InvalidArgumentError(absl::StrCat(where, ": shape: expected [", cfg.hidden_size, "], got ",
                                                     d.shape_size() == 1 ? absl::StrCat("[", d.shape(0), "]")
                                                                         : absl::StrCat(d.shape_size(), " dims")));
  }
  return absl::OkStatus();
}

}  // namespace

// LSB-first bit streams. The 4-bit case (the common one: a 70B layer holds
// ~0.86e9 codes) packs 8 codes per 64-bit word; other widths go through a
// 64-bit accumulator. Both produce exactly the stream the definition gives:
// value i occupies bits [i*bits, (i+1)*bits) of the little-endian output.
std::string PackBits(const std::vector<uint8_t>& values, int bits) {
  const int64_t count = static_cast<int64_t>(values.size());
  std::string out(PackedBytes(count, bits), '\0');
  uint8_t* dst = reinterpret_cast<uint8_t*>(out.data());
  const uint8_t* src = values.data();
  const uint32_t mask = (1u << bits) - 1;
  int64_t i = 0;
  if (bits == 8) {
    if (count > 0) std::memcpy(dst, src, static_cast<size_t>(count));
    return out;
  }
  if (bits == 4) {
    // 8 codes (one per byte of x) -> 4 bytes: byte j = v[2j] | v[2j+1] << 4.
    for (; i + 8 <= count; i += 8) {
      uint64_t x;
      std::memcpy(&x, src + i, 8);
      x &= 0x0f0f0f0f0f0f0f0full;
      x = (x | (x >> 4)) & 0x00ff00ff00ff00ffull;
      x = (x | (x >> 8)) & 0x0000ffff0000ffffull;
      x = (x | (x >> 16)) & 0x00000000ffffffffull;
      const uint32_t w = static_cast<uint32_t>(x);
      std::memcpy(dst + i / 2, &w, 4);
    }
  }
  // Remaining values (all of them for widths other than 4 and 8).
  uint64_t acc = 0;
  int nbits = 0;
  int64_t byte = (i * bits) / 8;   // i is a multiple of 8 here, so the stream is byte-aligned
  for (; i < count; ++i) {
    acc |= static_cast<uint64_t>(src[i] & mask) << nbits;
    nbits += bits;
    while (nbits >= 8) {
      dst[byte++] = static_cast<uint8_t>(acc);
      acc >>= 8;
      nbits -= 8;
    }
  }
  if (nbits > 0) dst[byte] = static_cast<uint8_t>(acc);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> UnpackBits(std::string_view packed, int bits, int64_t count) {
  if (bits < 1 || bits > 8 || count < 0 || static_cast<int64_t>(packed.size()) != PackedBytes(count, bits))
    return absl::InvalidArgumentError(absl::StrCat("packed array: expected ", PackedBytes(count, bits),
                                                   " bytes for ", count, " values of ", bits, " bits, got ",
                                                   packed.size()));
  std::vector<uint8_t> out(count);
  if (bits == 8) {
    std::copy(packed.begin(), packed.end(), out.begin());
    return out;
  }
  const uint8_t* src = reinterpret_cast<const uint8_t*>(packed.data());
  uint8_t* dst = out.data();
  int64_t i = 0;
  if (bits == 4) {
    // 4 bytes -> 8 codes: byte j spreads to lanes 2j (low nibble) and 2j+1 (high nibble).
    for (; i + 8 <= count; i += 8) {
      uint32_t w;
      std::memcpy(&w, src + i / 2, 4);
      uint64_t x = w;
      x = (x | (x << 16)) & 0x0000ffff0000ffffull;
      x = (x | (x << 8)) & 0x00ff00ff00ff00ffull;
      x = (x & 0x000f000f000f000full) | ((x & 0x00f000f000f000f0ull) << 4);
      std::memcpy(dst + i, &x, 8);
    }
  }
  const uint32_t mask = (1u << bits) - 1;
  uint64_t acc = 0;
  int nbits = 0;
  int64_t byte = (i * bits) / 8;
  for (; i < count; ++i) {
    while (nbits < bits) {
      acc |= static_cast<uint64_t>(src[byte++]) << nbits;
      nbits += 8;
    }
    dst[i] = static_cast<uint8_t>(acc & mask);
    acc >>= bits;
    nbits -= bits;
  }
  return out;
}

proto::LayerResultProto LayerToProto(const kernels::LayerResult& r) {
  proto::LayerResultProto p;
  p.set_layer(r.layer);
  for (const kernels::QuantizedLinear& q : r.linears) {
    proto::QuantizedLinearProto* l = p.add_linears();
    l->set_name(q.name);
    l->set_bits(q.bits);
    l->set_group_size(q.group_size);
    l->set_sym(q.sym);
    l->set_desc_act(q.desc_act);
    l->set_out_features(q.out_features);
    l->set_in_features(q.in_features);
    l->set_num_groups(q.num_groups);
    l->set_codes(PackBits(q.codes, q.bits));
    l->set_scales(U16Bytes(q.scales));
    l->set_zeros(PackBits(q.zeros, q.bits));
    l->mutable_g_idx()->Assign(q.g_idx.begin(), q.g_idx.end());
    l->set_bias(U16Bytes(q.bias));
  }
  for (const kernels::DenseTensor& d : r.dense) {
    proto::DenseTensorProto* t = p.add_dense();
    t->set_name(d.name);
    t->set_dtype(d.dtype);
    t->mutable_shape()->Assign(d.shape.begin(), d.shape.end());
    t->set_data(d.data);
  }
  p.mutable_errors()->Assign(r.errors.begin(), r.errors.end());
  return p;
}

absl::StatusOr<kernels::LayerResult> LayerFromProto(const proto::LayerResultProto& p) {
  kernels::LayerResult r;
  r.layer = p.layer();
  for (const proto::QuantizedLinearProto& l : p.linears()) {
    const std::string where = absl::StrCat("layer ", p.layer(), ": ", EscapeForError(l.name()));
    if (l.bits() < 1 || l.bits() > 8 || l.out_features() < 0 || l.in_features() < 0 || l.num_groups() < 0 ||
        l.out_features() * l.in_features() > (int64_t{1} << 36))
      return absl::InvalidArgumentError(absl::StrCat(where, ": bits or shape out of range"));
    kernels::QuantizedLinear q;
    q.name = l.name();
    q.bits = l.bits();
    q.group_size = l.group_size();
    q.sym = l.sym();
    q.desc_act = l.desc_act();
    q.out_features = l.out_features();
    q.in_features = l.in_features();
    q.num_groups = l.num_groups();
    auto codes = UnpackBits(l.codes(), q.bits, q.out_features * q.in_features);
    if (!codes.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": codes: ", codes.status().message()));
    q.codes = *std::move(codes);
    auto zeros = UnpackBits(l.zeros(), q.bits, q.num_groups * q.out_features);
    if (!zeros.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": zeros: ", zeros.status().message()));
    q.zeros = *std::move(zeros);
    if (static_cast<int64_t>(l.scales().size()) != 2 * q.num_groups * q.out_features || l.bias().size() % 2 != 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": scales/bias byte size does not match the shape"));
    q.scales = U16FromBytes(l.scales());
    q.bias = U16FromBytes(l.bias());
    q.g_idx.assign(l.g_idx().begin(), l.g_idx().end());
    r.linears.push_back(std::move(q));
  }
  for (const proto::DenseTensorProto& d : p.dense()) {
    r.dense.push_back(kernels::DenseTensor{d.name(), d.dtype(), {d.shape().begin(), d.shape().end()}, d.data()});
  }
  r.errors.assign(p.errors().begin(), p.errors().end());
  return r;
}

absl::Status ValidateLayer(const proto::LayerResultProto& result, int layer, const storage::ModelConfig& cfg,
                           const proto::JobSpec& spec) {
  const std::string prefix = absl::StrCat("layer ", layer);
  QF_RETURN_IF_ERROR(Expect(prefix, "layer index", layer, result.layer()));
  auto expected = ExpectedLinears(cfg);
  std::map<std::string, int> seen;
  for (const proto::QuantizedLinearProto& q : result.linears()) {
    // Names come from the worker: escaped, so that a refusal stays one line.
    const std::string where = absl::StrCat(prefix, ": ", EscapeForError(q.name()));
    auto it = expected.find(q.name());
    if (it == expected.end()) return absl::InvalidArgumentError(absl::StrCat(where, ": not a linear of a decoder layer"));
    if (seen[q.name()]++ > 0) return absl::InvalidArgumentError(absl::StrCat(where, ": sent twice"));
    QF_RETURN_IF_ERROR(ValidateLinear(q, where, it->second.first, it->second.second, spec));
  }
  for (const auto& [name, shape] : expected) {
    if (seen.count(name) == 0) return absl::InvalidArgumentError(absl::StrCat(prefix, ": ", name, ": missing"));
  }
  if (result.errors_size() != 0 && result.errors_size() != result.linears_size())
    return absl::InvalidArgumentError(absl::StrCat(prefix, ": errors: expected ", result.linears_size(),
                                                   " entries, got ", result.errors_size()));
  for (const proto::DenseTensorProto& d : result.dense())
    QF_RETURN_IF_ERROR(ValidateDense(d, absl::StrCat(prefix, ": ", EscapeForError(d.name())), cfg));
  return absl::OkStatus();
}

std::vector<proto::LayerChunk> SplitLayer(const std::string& bytes, size_t chunk_bytes) {
  chunk_bytes = std::clamp<size_t>(chunk_bytes, 1, kMaxChunkBytes);
  const uint32_t count = static_cast<uint32_t>(std::max<size_t>(1, (bytes.size() + chunk_bytes - 1) / chunk_bytes));
  std::vector<proto::LayerChunk> chunks(count);
  for (uint32_t i = 0; i < count; ++i) {
    proto::LayerChunk& c = chunks[i];
    c.set_index(i);
    c.set_count(count);
    c.set_total_bytes(bytes.size());
    size_t off = static_cast<size_t>(i) * chunk_bytes;
    c.set_data(off < bytes.size() ? bytes.substr(off, chunk_bytes) : std::string());
    c.set_sha256(Sha256Hex(c.data()));
  }
  return chunks;
}

absl::Status ChunkJoiner::Add(const proto::LayerChunk& c) {
  const std::string where = absl::StrCat("chunk ", c.index() + 1, "/", c.count(), " of layer ", c.layer());
  if (next_ == 0) {
    if (c.count() == 0 || c.total_bytes() > kMaxLayerBytes)
      return absl::InvalidArgumentError(absl::StrCat(where, ": count must be >= 1 and total_bytes <= ", kMaxLayerBytes));
    // A stream that can never add up is refused before anything is held for it.
    if (c.total_bytes() > uint64_t{c.count()} * kMaxChunkBytes)
      return absl::InvalidArgumentError(absl::StrCat(where, ": total_bytes ", c.total_bytes(), " does not fit in ",
                                                     c.count(), " chunks of at most ", kMaxChunkBytes, " bytes"));
    header_ = c;
    header_.clear_data();
    header_.clear_sha256();
    data_.reserve(c.total_bytes());
  } else if (c.attempt_id() != header_.attempt_id() || c.job_id() != header_.job_id() ||
             c.layer() != header_.layer() || c.count() != header_.count() ||
             c.total_bytes() != header_.total_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": header differs from chunk 1 (attempt, job, layer, count, total_bytes)"));
  }
  if (c.index() != next_) return absl::InvalidArgumentError(absl::StrCat(where, ": expected chunk ", next_ + 1, " next"));
  if (next_ >= header_.count()) return absl::InvalidArgumentError(absl::StrCat(where, ": more chunks than count"));
  if (c.data().size() > kMaxChunkBytes || data_.size() + c.data().size() > header_.total_bytes())
    return absl::InvalidArgumentError(absl::StrCat(where, ": data exceeds total_bytes ", header_.total_bytes()));
  std::string got = Sha256Hex(c.data());
  if (got != c.sha256())
    return absl::DataLossError(
        absl::StrCat(where, ": sha256 mismatch (computed ", got, ", sent ", EscapeForError(c.sha256()), ")"));
  data_ += c.data();
  ++next_;
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChunkJoiner::Finish() {
  if (next_ == 0) return absl::InvalidArgumentError("layer stream: no chunks received");
  if (next_ != header_.count() || data_.size() != header_.total_bytes())
    return absl::InvalidArgumentError(absl::StrCat("layer ", header_.layer(), ": received ", next_, " of ",
                                                   header_.count(), " chunks (", data_.size(), " of ",
                                                   header_.total_bytes(), " bytes)"));
  return std::move(data_);
}

}  // namespace qf::coordinator
