#include "storage/gguf.h"

#include <array>
#include <bit>
#include <cmath>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "kernels/ref/ggml_blocks.h"

namespace qf::storage {
namespace {

using kernels::GgmlType;

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kAlignment = 32;  // GGUF's default (general.alignment not written)

// GGUF's metadata value types.
enum class Value : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

// Little-endian serialization of GGUF's scalars and strings.
class Bytes {
 public:
  void U8(uint8_t v) { Raw(&v, 1); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I32(int32_t v) { Raw(&v, 4); }
  void F32(float v) { Raw(&v, 4); }
  void Str(std::string_view s) {
    U64(s.size());
    out_.append(s);
  }
  const std::string& str() const { return out_; }

 private:
  static_assert(std::endian::native == std::endian::little, "GGUF is little-endian; so is every host we build for");
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

// Key-value metadata, counted as it is added (the header states the count).
class Metadata {
 public:
  void U32(std::string_view key, uint32_t v) { Key(key, Value::kU32).U32(v); }
  void F32(std::string_view key, float v) { Key(key, Value::kF32).F32(v); }
  void Bool(std::string_view key, bool v) { Key(key, Value::kBool).U8(v ? 1 : 0); }
  void Str(std::string_view key, std::string_view v) { Key(key, Value::kString).Str(v); }
  void Strings(std::string_view key, const std::vector<std::string>& v) {
    Array(key, Value::kString, v.size());
    for (const std::string& s : v) b.Str(s);
  }
  void F32s(std::string_view key, const std::vector<float>& v) {
    Array(key, Value::kF32, v.size());
    for (float x : v) b.F32(x);
  }
  void I32s(std::string_view key, const std::vector<int32_t>& v) {
    Array(key, Value::kI32, v.size());
    for (int32_t x : v) b.I32(x);
  }
  Bytes b;
  uint64_t count = 0;

 private:
  Bytes& Key(std::string_view key, Value type) {
    b.Str(key);
    b.U32(static_cast<uint32_t>(type));
    ++count;
    return b;
  }
  void Array(std::string_view key, Value elem, size_t n) {
    Key(key, Value::kArray);
    b.U32(static_cast<uint32_t>(elem));
    b.U64(n);
  }
};

// Where a tensor's bytes come from.
struct Source {
  enum Kind { kGlobal, kNorm, kLinear, kBias, kRopeFreqs } kind;
  std::string name;   // kGlobal: checkpoint tensor; kNorm: the layer's dense tensor
  int layer = -1;     // kNorm, kLinear, kBias
  int linear = -1;    // kLinear, kBias: index into kLinearNames
  int64_t heads = 0;  // kLinear: > 0 reorders the rows of `heads` RoPE heads (q, k)
};

struct Tensor {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: innermost (contiguous) first
  GgmlType type;
  uint64_t bytes = 0;
  uint64_t offset = 0;  // from the start of the data section
  Source src;
};

// GGUF's names for the decoder layer's linears (kLinearNames order) and norms.
constexpr const char* kLinearGguf[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
constexpr std::pair<const char*, const char*> kNormGguf[] = {{"input_layernorm.weight", "attn_norm.weight"},
                                                             {"post_attention_layernorm.weight", "ffn_norm.weight"}};

// ggml type of a dense tensor kept in its dtype (embeddings, lm_head).
std::optional<GgmlType> KeptType(DType d) {
  switch (d) {
    case DType::kF32: return GgmlType::kF32;
    case DType::kF16: return GgmlType::kF16;
    case DType::kBF16: return GgmlType::kBF16;
    default: return std::nullopt;
  }
}

// Norm weights as F32, whatever the artifact stored (F16, BF16, F32).
absl::StatusOr<std::string> NormF32(const std::string& where, DType d, const std::vector<int64_t>& shape,
                                    std::string_view data, int64_t hidden) {
  if (shape != std::vector<int64_t>{hidden} || !(d == DType::kF16 || d == DType::kBF16 || d == DType::kF32)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected an F16, BF16 or F32 vector of ", hidden,
                                                   ", got ", std::string(DTypeName(d)), " of ", shape.size(), " dims"));
  }
  Bytes out;
  const size_t es = DTypeSize(d);
  for (int64_t i = 0; i < hidden; ++i) out.F32(FloatElement(d, data.data() + i * es));
  return out.str();
}

// The HF row that GGUF row r of a q or k projection holds: llama.cpp's RoPE
// rotates the pairs (2i, 2i + 1) of each head, HF's the pairs (i, i + d / 2).
int64_t HfRow(int64_t r, int64_t heads, int64_t rows) {
  const int64_t d = rows / heads, h = r / d, i = (r % d) / 2, j = r % 2;
  return h * d + j * (d / 2) + i;
}

// The architectures the export writes, by HF model_type. llama.cpp's `llama`
// rotates RoPE pairs (2i, 2i + 1), so q and k rows are reordered (HfRow);
// its `qwen2` rotates HF's pairs (NEOX), adds q/k/v biases (F32) and has no
// rope_freqs tensor (Llama 3.1's RoPE scaling).
struct Arch {
  const char* model_type;
  const char* gguf;  // general.architecture, and the prefix of its keys
  bool reorder_qk;   // rows of q and k in llama.cpp's RoPE pair order
  bool qkv_bias;     // q/k/v projections carry biases (attention_bias)
  bool llama3_rope;  // takes rope_type llama3 (as rope_freqs.weight)
};
constexpr Arch kArchs[] = {
    {"llama", "llama", true, false, true},
    {"mistral", "llama", true, false, true},
    {"qwen2", "qwen2", false, true, false},
};

const Arch* ArchOf(const ModelConfig& c) {
  for (const Arch& a : kArchs) {
    if (c.model_type == a.model_type) return &a;
  }
  return nullptr;
}

// `r`'s error, prefixed with the artifact and the layer (the linear names itself).
absl::StatusOr<GgmlType> InLayer(const LoadedArtifact& a, int layer, absl::StatusOr<GgmlType> r) {
  if (r.ok()) return r;
  return absl::Status(r.status().code(), absl::StrCat(a.dir, ": layer ", layer, " ", r.status().message()));
}

absl::Status CheckModel(const LoadedArtifact& a) {
  const ModelConfig& c = a.config;
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(a.dir, "/config.json: ", what));
  };
  const Arch* arch = ArchOf(c);
  if (arch == nullptr) {
    return bad(absl::StrCat("model_type '", c.model_type, "': the GGUF export writes llama, mistral and qwen2 models"));
  }
  if (c.attention_bias != arch->qkv_bias || c.o_proj_bias || c.mlp_bias) {
    return bad(absl::StrCat("attention_bias / mlp_bias: the GGUF export writes ", c.model_type, " linears ",
                            arch->qkv_bias ? "with q/k/v biases and no others" : "without biases"));
  }
  if (c.rope.type != "default" && c.rope.type != "linear" && (c.rope.type != "llama3" || !arch->llama3_rope)) {
    return bad(absl::StrCat("rope type '", c.rope.type, "': the GGUF export writes default, linear",
                            arch->llama3_rope ? " and llama3" : "", " RoPE for ", c.model_type));
  }
  return absl::OkStatus();
}

void AddModelMetadata(const LoadedArtifact& a, GgmlType linear_type, Metadata* m) {
  const ModelConfig& c = a.config;
  const QuantSpec& q = a.spec;
  const std::string arch = ArchOf(c)->gguf;  // CheckModel passed
  const auto key = [&](const char* k) { return absl::StrCat(arch, ".", k); };
  m->Str("general.architecture", arch);
  m->Str("general.name", absl::StrCat(c.model_type, "-", q.method, "-w", q.bits, "-g", q.group_size));
  // llama.cpp's file types: mostly Q4_0 = 2, Q4_1 = 3, Q8_0 = 7.
  m->U32("general.file_type", linear_type == GgmlType::kQ4_0 ? 2 : linear_type == GgmlType::kQ4_1 ? 3 : 7);
  m->U32("general.quantization_version", 2);
  m->U32(key("block_count"), static_cast<uint32_t>(c.num_hidden_layers));
  m->U32(key("context_length"), static_cast<uint32_t>(c.max_position_embeddings));
  m->U32(key("embedding_length"), static_cast<uint32_t>(c.hidden_size));
  m->U32(key("feed_forward_length"), static_cast<uint32_t>(c.intermediate_size));
  m->U32(key("attention.head_count"), static_cast<uint32_t>(c.num_attention_heads));
  m->U32(key("attention.head_count_kv"), static_cast<uint32_t>(c.num_key_value_heads));
  m->U32(key("attention.key_length"), static_cast<uint32_t>(c.head_dim));
  m->U32(key("attention.value_length"), static_cast<uint32_t>(c.head_dim));
  m->F32(key("attention.layer_norm_rms_epsilon"), static_cast<float>(c.rms_norm_eps));
  m->U32(key("rope.dimension_count"), static_cast<uint32_t>(c.head_dim));
  m->F32(key("rope.freq_base"), static_cast<float>(c.rope.theta));
  if (c.rope.type == "linear") {
    m->Str(key("rope.scaling.type"), "linear");
    m->F32(key("rope.scaling.factor"), static_cast<float>(c.rope.factor));
  }
  m->U32(key("vocab_size"), static_cast<uint32_t>(c.vocab_size));
}

// Llama 3.1's RoPE scaling as llama.cpp takes it: no metadata, but a tensor
// rope_freqs.weight of head_dim / 2 factors that each frequency is divided by
// (as llama.cpp's converter computes them from rope_scaling): 1 for
// wavelengths below original_max_position_embeddings / high_freq_factor,
// `factor` above original / low_freq_factor, and between them the smooth
// blend 1 / ((1 - s) / factor + s), s = (original / wavelength - low) /
// (high - low): the inverse of what the engine multiplies the frequency by
// (worker/engine/decoder.cc). Not shared with the engine on purpose: the
// engine reproduces transformers' float32 tensor arithmetic bit for bit (its
// logits equal transformers', engine_hf_logits_llama3_rope), these factors are
// a file's constants, computed once in double and rounded to F32.
std::string RopeFreqFactors(const ModelConfig& c) {
  const RopeConfig& r = c.rope;
  const double old_ctx = static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_ctx / r.low_freq_factor, high_wavelen = old_ctx / r.high_freq_factor;
  Bytes out;
  for (int64_t i = 0; i < c.head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(r.theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
    const double wavelen = 2 * M_PI / freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = r.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f = 1.0 / ((1 - smooth) / r.factor + smooth);
    }
    out.F32(static_cast<float>(f));
  }
  return out.str();
}

// "A B": two non-empty tokens and one space, where llama.cpp splits a merge.
bool IsMerge(std::string_view m) {
  const size_t space = m.find(' ');
  return space != 0 && space != std::string_view::npos && space + 1 < m.size() &&
         m.find(' ', space + 1) == std::string_view::npos;
}

// One line naming what `v` lacks for its model kind, or OK.
absl::Status CheckVocab(const LoadedArtifact& a, const GgufVocab& v) {
  const int64_t n = a.config.vocab_size;
  const bool gpt2 = v.model == GgufVocab::Model::kGpt2;
  const size_t want_scores = gpt2 ? 0 : v.tokens.size();
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(a.dir, ": tokenizer: ", what));
  };
  if (v.tokens.empty() || static_cast<int64_t>(v.tokens.size()) > n || v.scores.size() != want_scores ||
      v.types.size() != v.tokens.size()) {
    return bad(absl::StrCat(v.tokens.size(), " pieces (", v.scores.size(), " scores, ", v.types.size(),
                            " types), expected 1 to vocab_size ", n, gpt2 ? ", a type each and no scores (gpt2)"
                                                                          : " of each"));
  }
  if (!gpt2) {
    if (v.merges.empty() && v.pre.empty()) return absl::OkStatus();
    return bad("a sentencepiece (llama) vocabulary with merges or a pre-tokenizer name, expected neither");
  }
  if (v.pre.empty()) return bad("a gpt2 vocabulary without a pre-tokenizer name (tokenizer.ggml.pre)");
  if (v.merges.empty()) return bad("a gpt2 vocabulary without merges (llama.cpp requires tokenizer.ggml.merges)");
  for (size_t i = 0; i < v.merges.size(); ++i) {
    if (!IsMerge(v.merges[i])) return bad(absl::StrCat("merges[", i, "] is '", v.merges[i], "', expected \"A B\""));
  }
  return absl::OkStatus();
}

absl::Status AddVocabMetadata(const LoadedArtifact& a, const GgufVocab& v, Metadata* m) {
  QF_RETURN_IF_ERROR(CheckVocab(a, v));
  const bool gpt2 = v.model == GgufVocab::Model::kGpt2;
  std::vector<std::string> tokens = v.tokens;
  std::vector<float> scores = v.scores;
  std::vector<int32_t> types = v.types;
  const int64_t n = a.config.vocab_size;
  for (int64_t id = static_cast<int64_t>(tokens.size()); id < n; ++id) {  // as llama.cpp's converter pads
    tokens.push_back(absl::StrCat("[PAD", id, "]"));
    if (!gpt2) scores.push_back(-1000.f);
    types.push_back(5);
  }
  m->Str("tokenizer.ggml.model", gpt2 ? "gpt2" : "llama");
  if (gpt2) m->Str("tokenizer.ggml.pre", v.pre);
  m->Strings("tokenizer.ggml.tokens", tokens);
  if (!gpt2) m->F32s("tokenizer.ggml.scores", scores);  // llama.cpp's converter writes none for gpt2
  m->I32s("tokenizer.ggml.token_type", types);
  if (gpt2) m->Strings("tokenizer.ggml.merges", v.merges);
  if (v.bos_id >= 0) m->U32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
  if (v.eos_id >= 0) m->U32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
  if (v.unk_id >= 0) m->U32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk_id));
  m->Bool("tokenizer.ggml.add_bos_token", v.bos_id >= 0);
  m->Bool("tokenizer.ggml.add_eos_token", false);
  return absl::OkStatus();
}

// A checkpoint tensor kept in its dtype: the embeddings or the lm_head.
absl::StatusOr<Tensor> KeptTensor(const LoadedArtifact& a, const std::string& hf, const char* gguf) {
  QF_ASSIGN_OR_RETURN(const TensorView* v, a.Get(hf));
  const std::optional<GgmlType> t = KeptType(v->dtype);
  const std::vector<int64_t> want = {a.config.vocab_size, a.config.hidden_size};
  if (!t || v->shape != want) {
    return absl::InvalidArgumentError(absl::StrCat(a.dir, ": tensor '", hf, "': expected F16, BF16 or F32 [",
                                                   want[0], ", ", want[1], "], got ", std::string(DTypeName(v->dtype))));
  }
  return Tensor{gguf, {static_cast<uint64_t>(want[1]), static_cast<uint64_t>(want[0])}, *t, v->nbytes(), 0,
                Source{Source::kGlobal, hf}};
}

// Every tensor, in file order, with its size and offset.
absl::StatusOr<std::vector<Tensor>> PlanTensors(const LoadedArtifact& a, GgmlType linear_type) {
  const ModelConfig& c = a.config;
  const auto norm = [&](std::string gguf, Source src) {
    return Tensor{std::move(gguf), {static_cast<uint64_t>(c.hidden_size)}, GgmlType::kF32,
                  static_cast<uint64_t>(c.hidden_size) * 4, 0, std::move(src)};
  };
  const Arch& arch = *ArchOf(c);  // CheckModel passed
  std::vector<Tensor> t;
  QF_ASSIGN_OR_RETURN(Tensor embed, KeptTensor(a, "model.embed_tokens.weight", "token_embd.weight"));
  t.push_back(std::move(embed));
  if (c.rope.type == "llama3") {
    const uint64_t half = static_cast<uint64_t>(c.head_dim / 2);
    t.push_back(Tensor{"rope_freqs.weight", {half}, GgmlType::kF32, half * 4, 0, Source{Source::kRopeFreqs, ""}});
  }
  const std::array<LinearShape, 7> shapes = DecoderLinearShapes(c);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string blk = absl::StrCat("blk.", l, ".");
    t.push_back(norm(blk + kNormGguf[0].second, Source{Source::kNorm, kNormGguf[0].first, l}));
    for (int i = 0; i < static_cast<int>(kLinearNames.size()); ++i) {
      if (i == 4) t.push_back(norm(blk + kNormGguf[1].second, Source{Source::kNorm, kNormGguf[1].first, l}));
      const int64_t heads =
          !arch.reorder_qk ? 0 : i == 0 ? c.num_attention_heads : i == 1 ? c.num_key_value_heads : 0;
      t.push_back(Tensor{absl::StrCat(blk, kLinearGguf[i], ".weight"),
                         {static_cast<uint64_t>(shapes[i].in), static_cast<uint64_t>(shapes[i].out)},
                         linear_type,
                         kernels::GgmlRowBytes(linear_type, shapes[i].in) * static_cast<uint64_t>(shapes[i].out),
                         0,
                         Source{Source::kLinear, "", l, i, heads}});
      if (arch.qkv_bias && i < 3) {
        t.push_back(Tensor{absl::StrCat(blk, kLinearGguf[i], ".bias"), {static_cast<uint64_t>(shapes[i].out)},
                           GgmlType::kF32, static_cast<uint64_t>(shapes[i].out) * 4, 0,
                           Source{Source::kBias, "", l, i}});
      }
    }
  }
  t.push_back(norm("output_norm.weight", Source{Source::kGlobal, "model.norm.weight"}));
  if (!c.tie_word_embeddings) {
    QF_ASSIGN_OR_RETURN(Tensor head, KeptTensor(a, "lm_head.weight", "output.weight"));
    t.push_back(std::move(head));
  }
  uint64_t off = 0;
  for (Tensor& x : t) {
    x.offset = off;
    off += (x.bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  return t;
}

// The bytes of one tensor; `layer` holds the current decoder layer's result.
absl::StatusOr<std::string> TensorBytes(const LoadedArtifact& a, const Tensor& t, GgmlType linear_type,
                                        const kernels::LayerResult& layer) {
  const Source& s = t.src;
  const bool of_linear = s.kind == Source::kLinear || s.kind == Source::kBias;
  const std::string where = absl::StrCat(a.dir, ": ", s.layer >= 0 ? absl::StrCat("layer ", s.layer, " ") : "",
                                         of_linear ? std::string(kLinearNames[s.linear]) : s.name);
  switch (s.kind) {
    case Source::kGlobal: {
      QF_ASSIGN_OR_RETURN(const TensorView* v, a.Get(s.name));
      if (t.type != GgmlType::kF32 || v->dtype == DType::kF32) {
        if (v->nbytes() != t.bytes) return absl::InvalidArgumentError(absl::StrCat(where, ": size changed"));
        return std::string(v->data);
      }
      return NormF32(where, v->dtype, v->shape, v->data, a.config.hidden_size);
    }
    case Source::kNorm:
      for (const kernels::DenseTensor& d : layer.dense) {
        if (d.name != s.name) continue;
        QF_ASSIGN_OR_RETURN(DType dt, ParseDType(d.dtype));
        return NormF32(where, dt, d.shape, d.data, a.config.hidden_size);
      }
      return absl::InvalidArgumentError(absl::StrCat(where, ": missing from the artifact"));
    case Source::kLinear: {
      const kernels::QuantizedLinear& q = layer.linears[static_cast<size_t>(s.linear)];
      QF_ASSIGN_OR_RETURN(GgmlType type, InLayer(a, s.layer, kernels::GgmlTypeFor(q)));
      if (type != linear_type) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", kernels::GgmlTypeName(type), ", the file's linears are ",
                                                       kernels::GgmlTypeName(linear_type)));
      }
      std::string out;
      out.reserve(t.bytes);
      for (int64_t r = 0; r < q.out_features; ++r) {
        const int64_t src = s.heads > 0 ? HfRow(r, s.heads, q.out_features) : r;
        QF_RETURN_IF_ERROR(kernels::AppendGgmlRow(q, type, src, &out));
      }
      return out;
    }
    case Source::kRopeFreqs:
      return RopeFreqFactors(a.config);
    case Source::kBias: {
      const kernels::QuantizedLinear& q = layer.linears[static_cast<size_t>(s.linear)];
      if (static_cast<int64_t>(q.bias.size()) != q.out_features) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": bias of ", q.bias.size(), " values, expected ",
                                                       q.out_features, " (attention_bias)"));
      }
      Bytes out;
      for (uint16_t h : q.bias) out.F32(HalfToFloat(h));
      return out.str();
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace

absl::Status WriteGguf(const LoadedArtifact& a, const GgufVocab& vocab, const std::string& path) {
  QF_RETURN_IF_ERROR(CheckModel(a));
  if (a.layers.empty()) return absl::InvalidArgumentError(absl::StrCat(a.dir, ": no decoder layers"));
  // Every linear of an artifact shares bits and symmetry; layer 0 decides the
  // block type and each linear is checked against it as it is written.
  // `layer` holds the decoder layer being written (one at a time), layer 0 first.
  QF_ASSIGN_OR_RETURN(kernels::LayerResult layer, a.Layer(0));
  QF_ASSIGN_OR_RETURN(const GgmlType linear_type, InLayer(a, 0, kernels::GgmlTypeFor(layer.linears.at(0))));

  Metadata meta;
  AddModelMetadata(a, linear_type, &meta);
  QF_RETURN_IF_ERROR(AddVocabMetadata(a, vocab, &meta));
  QF_ASSIGN_OR_RETURN(const std::vector<Tensor> tensors, PlanTensors(a, linear_type));

  Bytes head;
  head.U32(0x46554747);  // "GGUF"
  head.U32(kGgufVersion);
  head.U64(tensors.size());
  head.U64(meta.count);
  Bytes infos;
  for (const Tensor& t : tensors) {
    infos.Str(t.name);
    infos.U32(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) infos.U64(d);
    infos.U32(static_cast<uint32_t>(t.type));
    infos.U64(t.offset);
  }
  QF_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Create(path));
  QF_RETURN_IF_ERROR(file.Append(head.str()));
  QF_RETURN_IF_ERROR(file.Append(meta.b.str()));
  QF_RETURN_IF_ERROR(file.Append(infos.str()));
  const std::string pad(kAlignment, '\0');
  QF_RETURN_IF_ERROR(file.Append(std::string_view(pad).substr(0, (kAlignment - file.bytes() % kAlignment) % kAlignment)));
  const uint64_t data_start = file.bytes();

  for (const Tensor& t : tensors) {
    if (t.src.layer >= 0 && t.src.layer != layer.layer) {
      QF_ASSIGN_OR_RETURN(layer, a.Layer(t.src.layer));
    }
    QF_ASSIGN_OR_RETURN(const std::string bytes, TensorBytes(a, t, linear_type, layer));
    if (bytes.size() != t.bytes || file.bytes() - data_start != t.offset) {
      return absl::InternalError(absl::StrCat(path, ": tensor '", t.name, "' is ", bytes.size(), " bytes at ",
                                              file.bytes() - data_start, ", planned ", t.bytes, " at ", t.offset));
    }
    QF_RETURN_IF_ERROR(file.Append(bytes));
    QF_RETURN_IF_ERROR(file.Append(std::string_view(pad).substr(0, (kAlignment - t.bytes % kAlignment) % kAlignment)));
  }
  return file.Commit();
}

}  // namespace qf::storage
