#include "storage/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "storage/artifact.h"

namespace qf::storage {
namespace {

struct Preset {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, vocab;
  bool llama3_rope;   // Llama 3: theta 500000 with llama3 scaling; else theta 10000
};

constexpr Preset kPresets[] = {
    {"llama-70b", 8192, 28672, 80, 64, 8, 128256, true},
    {"llama-8b", 4096, 14336, 32, 32, 8, 128256, true},
    {"llama-tiny", 256, 768, 4, 4, 2, 2048, false},
};

const Preset* FindPreset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

// Non-layer tensors: id for SyntheticTensorSeed(seed, -1, id), and how to draw them.
struct NonLayerTensor {
  const char* name;
  int id;
  bool per_vocab_row;   // [vocab, hidden], else [hidden]
  double std;           // N(0, std^2); 0: log-normal around 1 (a norm)
};
constexpr double kEmbedStd = 0.02;
constexpr double kNormSigma = 0.2;
constexpr NonLayerTensor kNonLayer[] = {
    {kSyntheticEmbedding, 0, true, kEmbedStd},
    {kSyntheticFinalNorm, 1, false, 0},
    {kSyntheticLmHead, 2, true, -1},   // std set from the hidden size (see header)
};

// An approximately standard normal value from 64 random bits: the sum of four
// 16-bit uniforms (Irwin-Hall), centred and scaled to unit variance. One
// splitmix64 per value keeps a 1G-value embedding at a few seconds; the tails
// stop at +-3.46, which synthetic weights do not need.
inline float NormalFromBits(uint64_t r) {
  const double s = static_cast<double>(r & 0xffff) + static_cast<double>((r >> 16) & 0xffff) +
                   static_cast<double>((r >> 32) & 0xffff) + static_cast<double>(r >> 48);
  constexpr double kMean = 2.0 * 65535.0, kStd = 65536.0 / 1.7320508075688772;   // sqrt(4/12) * 2^16
  return static_cast<float>((s - kMean) / kStd);
}

// rows x cols fp16 values, row r from counter stream SplitMix64(seed + r);
// std > 0: N(0, std^2); std == 0: exp(kNormSigma * N(0, 1)).
// SplitMix64 (below), inlined into FillRows' loop.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FloatToHalf over an array. On x86 with F16C, VCVTPS2PH with round-to-nearest-
// even gives the same bits as FloatToHalf for every float (checked exhaustively
// over all 2^32 inputs when this was written; storage_test samples them).
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void FloatsToHalfF16c(const float* in, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = FloatToHalf(in[i]);
}
#endif

}  // namespace

void FloatsToHalf(const float* in, int64_t n, uint16_t* out) {
#if defined(__x86_64__)
  // F16C from CPUID leaf 1 (ECX bit 29): clang before 16 has no "f16c" name
  // for __builtin_cpu_supports; "avx" also checks that the OS saves YMM state.
  static const bool f16c = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0 && __builtin_cpu_supports("avx");
  }();
  if (f16c) return FloatsToHalfF16c(in, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

namespace {

void FillRows(uint64_t seed, int64_t rows, int64_t cols, double std, uint16_t* out) {
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      uint64_t state = Mix64(seed + static_cast<uint64_t>(r));
      for (int64_t c = 0; c < cols; ++c) {
        state = Mix64(state);
        const float z = NormalFromBits(state);
        buf[c] = std > 0 ? static_cast<float>(std * z) : std::exp(static_cast<float>(kNormSigma) * z);
      }
      FloatsToHalf(buf.data(), cols, out + r * cols);
    }
  };
  const int64_t threads =
      std::clamp<int64_t>(std::min<int64_t>(std::thread::hardware_concurrency(), 16), 1, std::max<int64_t>(rows, 1));
  if (threads == 1 || rows * cols < (int64_t{1} << 20)) return work(0, rows);
  std::vector<std::thread> pool;
  const int64_t per = (rows + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t r0 = t * per, r1 = std::min(rows, r0 + per);
    if (r0 < r1) pool.emplace_back(work, r0, r1);
  }
  for (std::thread& t : pool) t.join();
}

std::string LinearWeightName(int64_t layer, std::string_view linear) {
  return absl::StrCat("model.layers.", layer, ".", absl::string_view(linear.data(), linear.size()), ".weight");
}

class SyntheticSource final : public TensorSource {
 public:
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& [name, v] : views_) n.push_back(name);
    return n;   // std::map: sorted
  }
  absl::StatusOr<const TensorView*> Get(std::string_view name) const override {
    auto it = views_.find(name);
    if (it == views_.end()) {
      return absl::NotFoundError(absl::StrCat(model_, ": tensor '", absl::string_view(name.data(), name.size()), "' not found in the synthetic model"));
    }
    return &it->second;
  }

  std::string model_;
  std::map<std::string, std::string, std::less<>> bytes_;   // non-layer tensors
  std::map<std::string, TensorView, std::less<>> views_;
};

}  // namespace

bool IsSyntheticModel(const std::string& model) { return model.rfind(kSyntheticPrefix, 0) == 0; }

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t SyntheticTensorSeed(uint64_t seed, int64_t layer, int tensor) {
  return SplitMix64(SplitMix64(seed) ^ SplitMix64(static_cast<uint64_t>(layer + 1) * 131 + tensor)) >> 1;
}

absl::StatusOr<SyntheticSpec> ParseSyntheticModel(const std::string& model) {
  const std::string shown = EscapeForError(model);
  if (!IsSyntheticModel(model)) {
    return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': expected synthetic:<preset>"));
  }
  std::string rest = model.substr(std::string(kSyntheticPrefix).size());
  std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits('?', 1));
  SyntheticSpec spec;
  spec.preset = parts[0];
  if (!FindPreset(spec.preset)) {
    std::vector<std::string> names;
    for (const Preset& p : kPresets) names.push_back(p.name);
    return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': unknown synthetic preset '", EscapeForError(spec.preset),
                                                   "', expected one of ", absl::StrJoin(names, ", ")));
  }
  if (parts.size() == 2) {
    for (absl::string_view kv : absl::StrSplit(parts[1], '&')) {
      std::vector<std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      if (p.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': '", EscapeForError(std::string_view(kv.data(), kv.size())), "' is not key=value"));
      }
      if (p[0] == "layers") {
        if (!absl::SimpleAtoi(p[1], &spec.layers) || spec.layers <= 0 || spec.layers > 100000) {
          return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': layers '", EscapeForError(p[1]),
                                                         "', expected a number in [1, 100000]"));
        }
      } else if (p[0] == "seed") {
        if (!absl::SimpleAtoi(p[1], &spec.seed)) {
          return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': seed '", EscapeForError(p[1]),
                                                         "', expected a non-negative number"));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat("model '", shown, "': unknown parameter '", EscapeForError(p[0]),
                                                       "', expected layers or seed"));
      }
    }
  }
  return spec;
}

ModelConfig SyntheticConfig(const SyntheticSpec& spec) {
  const Preset& p = *FindPreset(spec.preset);
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", p.hidden},
      {"intermediate_size", p.intermediate},
      {"num_hidden_layers", spec.layers > 0 ? spec.layers : p.layers},
      {"num_attention_heads", p.heads},
      {"num_key_value_heads", p.kv_heads},
      {"vocab_size", p.vocab},
      {"rms_norm_eps", 1e-5},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"torch_dtype", "float16"},
      {"attention_bias", false},
      {"mlp_bias", false},
  };
  if (p.llama3_rope) {
    j["max_position_embeddings"] = 131072;
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    j["bos_token_id"] = 128000;
    j["eos_token_id"] = 128001;
  } else {
    j["max_position_embeddings"] = 2048;
    j["rope_theta"] = 10000.0;
    j["bos_token_id"] = 1;
    j["eos_token_id"] = 2;
  }
  // The presets are valid configs by construction.
  return *ParseModelConfig(j, std::string(kSyntheticPrefix) + spec.preset);
}

absl::StatusOr<ModelConfig> LoadModelConfigOrSynthetic(const std::string& model) {
  if (!IsSyntheticModel(model)) return LoadModelConfig(model);
  QF_ASSIGN_OR_RETURN(SyntheticSpec spec, ParseSyntheticModel(model));
  return SyntheticConfig(spec);
}

std::vector<int32_t> SyntheticCalibrationTokens(int64_t vocab, uint64_t seed, int samples, int seqlen) {
  std::vector<int32_t> ids(static_cast<size_t>(samples) * seqlen);
  uint64_t state = SplitMix64(seed ^ 0x63616c6962ULL);
  for (int32_t& id : ids) {
    state = SplitMix64(state);
    id = static_cast<int32_t>((state >> 16) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

absl::StatusOr<std::string> SyntheticNonLayerTensor(const SyntheticSpec& spec, const ModelConfig& cfg,
                                                    const std::string& name) {
  for (const NonLayerTensor& t : kNonLayer) {
    if (name != t.name) continue;
    const int64_t rows = t.per_vocab_row ? cfg.vocab_size : 1;
    const int64_t cols = cfg.hidden_size;
    const double std = t.std >= 0 ? t.std : 1.0 / std::sqrt(static_cast<double>(cols));
    std::string out(static_cast<size_t>(rows * cols) * 2, '\0');
    FillRows(SyntheticTensorSeed(spec.seed, -1, t.id), rows, cols, std, reinterpret_cast<uint16_t*>(out.data()));
    return out;
  }
  return absl::NotFoundError(absl::StrCat(kSyntheticPrefix, spec.preset, ": tensor '", name,
                                          "' is not a non-layer tensor of a synthetic model"));
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSyntheticSource(const std::string& model) {
  QF_ASSIGN_OR_RETURN(SyntheticSpec spec, ParseSyntheticModel(model));
  const ModelConfig cfg = SyntheticConfig(spec);
  auto src = std::make_unique<SyntheticSource>();
  src->model_ = model;
  for (const NonLayerTensor& t : kNonLayer) {
    QF_ASSIGN_OR_RETURN(std::string b, SyntheticNonLayerTensor(spec, cfg, t.name));
    std::string& held = src->bytes_[t.name] = std::move(b);
    std::vector<int64_t> shape = t.per_vocab_row ? std::vector<int64_t>{cfg.vocab_size, cfg.hidden_size}
                                                 : std::vector<int64_t>{cfg.hidden_size};
    src->views_[t.name] = TensorView{t.name, DType::kF16, std::move(shape), std::string_view(held)};
  }
  const std::array<LinearShape, 7> shapes = DecoderLinearShapes(cfg);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    for (size_t id = 0; id < shapes.size(); ++id) {
      const std::string n = LinearWeightName(l, kLinearNames[id]);
      // Shape only: WriteArtifact replaces every linear weight by its quantized tensors.
      src->views_[n] = TensorView{n, DType::kF16, {shapes[id].out, shapes[id].in}, std::string_view()};
    }
  }
  return std::unique_ptr<TensorSource>(std::move(src));
}

}  // namespace qf::storage
