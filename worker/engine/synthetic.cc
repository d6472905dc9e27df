#include "worker/engine/synthetic.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "worker/engine/torch_util.h"

#if defined(QF_WITH_CUDA)
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace qf::worker {
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

// Log-normal spreads and the outlier factor of the file comment.
constexpr double kRowSigma = 0.3;
constexpr double kColSigma = 0.2;
constexpr double kNormSigma = 0.2;
constexpr double kOutlierGain = 16.0;
constexpr double kEmbedStd = 0.02;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// One seed per (layer, tensor): layers can be generated in any order.
uint64_t TensorSeed(uint64_t seed, int64_t layer, int tensor) {
  return SplitMix64(SplitMix64(seed) ^ SplitMix64(static_cast<uint64_t>(layer + 1) * 131 + tensor)) >> 1;
}

at::Generator MakeGenerator(const at::Device& d, uint64_t seed) {
#if defined(QF_WITH_CUDA)
  if (d.is_cuda()) {
    at::Generator g = at::cuda::detail::createCUDAGenerator(d.index());
    g.set_current_seed(seed);
    return g;
  }
#endif
  return at::detail::createCPUGenerator(seed);
}

const Preset* FindPreset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

// Tensor ids inside a layer: the norms, then the linears.
constexpr int kInputNorm = 0, kPostNorm = 1, kFirstLinear = 2;
constexpr int64_t kEmbeddingLayer = -1;

}  // namespace

bool IsSyntheticModel(const std::string& model) { return model.rfind(kSyntheticPrefix, 0) == 0; }

absl::StatusOr<SyntheticSpec> ParseSyntheticModel(const std::string& model) {
  if (!IsSyntheticModel(model)) {
    return absl::InvalidArgumentError(absl::StrCat("model '", model, "': expected synthetic:<preset>"));
  }
  std::string rest = model.substr(std::string(kSyntheticPrefix).size());
  std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits('?', 1));
  SyntheticSpec spec;
  spec.preset = parts[0];
  if (!FindPreset(spec.preset)) {
    std::vector<std::string> names;
    for (const Preset& p : kPresets) names.push_back(p.name);
    return absl::InvalidArgumentError(absl::StrCat("model '", model, "': unknown synthetic preset '", spec.preset,
                                                   "', expected one of ", absl::StrJoin(names, ", ")));
  }
  if (parts.size() == 2) {
    for (absl::string_view kv : absl::StrSplit(parts[1], '&')) {
      std::vector<std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      if (p.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat("model '", model, "': '", kv, "' is not key=value"));
      }
      if (p[0] == "layers") {
        if (!absl::SimpleAtoi(p[1], &spec.layers) || spec.layers <= 0 || spec.layers > 100000) {
          return absl::InvalidArgumentError(absl::StrCat("model '", model, "': layers '", p[1],
                                                         "', expected a positive number"));
        }
      } else if (p[0] == "seed") {
        if (!absl::SimpleAtoi(p[1], &spec.seed)) {
          return absl::InvalidArgumentError(absl::StrCat("model '", model, "': seed '", p[1],
                                                         "', expected a non-negative number"));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat("model '", model, "': unknown parameter '", p[0],
                                                       "', expected layers or seed"));
      }
    }
  }
  return spec;
}

storage::ModelConfig SyntheticConfig(const SyntheticSpec& spec) {
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
  return *storage::ParseModelConfig(j, std::string(kSyntheticPrefix) + spec.preset);
}

absl::StatusOr<std::unique_ptr<SyntheticWeights>> SyntheticWeights::Open(const std::string& model,
                                                                          const at::Device& device) {
  QF_ASSIGN_OR_RETURN(SyntheticSpec spec, ParseSyntheticModel(model));
  storage::ModelConfig cfg = SyntheticConfig(spec);
  return std::unique_ptr<SyntheticWeights>(new SyntheticWeights(std::move(spec), std::move(cfg), device));
}

at::Tensor SyntheticWeights::Norm(int layer, int which) const {
  const int64_t h = cfg_.hidden_size;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
  at::Tensor n = at::randn({h}, MakeGenerator(device_, TensorSeed(spec_.seed, layer, which)), opts)
                     .mul_(kNormSigma).exp_();
  // The same hidden channels are large in every layer, as in real models.
  const int64_t outliers = std::max<int64_t>(2, h / 2048);
  std::vector<int64_t> idx;
  for (int64_t k = 0; k < outliers; ++k) {
    idx.push_back(static_cast<int64_t>(SplitMix64(spec_.seed * 7919 + static_cast<uint64_t>(k)) % static_cast<uint64_t>(h)));
  }
  at::Tensor gain = at::ones({h}, opts);
  gain.index_fill_(0, at::tensor(idx, at::kLong).to(device_), kOutlierGain);
  return RoundToHalf(n.mul_(gain));
}

absl::StatusOr<LayerWeights> SyntheticWeights::Layer(int layer) const {
  if (layer < 0 || layer >= cfg_.num_hidden_layers) {
    return absl::OutOfRangeError(absl::StrCat(kSyntheticPrefix, spec_.preset, ": layer ", layer, " outside [0, ",
                                              cfg_.num_hidden_layers, ")"));
  }
  return TorchCall([&] {
    const int64_t h = cfg_.hidden_size, inter = cfg_.intermediate_size;
    const int64_t q = cfg_.num_attention_heads * cfg_.head_dim, kv = cfg_.num_key_value_heads * cfg_.head_dim;
    const std::pair<int64_t, int64_t> shapes[kNumLinears] = {{q, h}, {kv, h}, {kv, h}, {h, q},
                                                             {inter, h}, {inter, h}, {h, inter}};
    auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
    LayerWeights lw;
    lw.input_norm = Norm(layer, kInputNorm);
    lw.post_norm = Norm(layer, kPostNorm);
    for (int id = 0; id < kNumLinears; ++id) {
      const auto [out, in] = shapes[id];
      at::Generator gen = MakeGenerator(device_, TensorSeed(spec_.seed, layer, kFirstLinear + id));
      at::Tensor w = at::randn({out, in}, gen, opts);
      at::Tensor r = at::randn({out, 1}, gen, opts).mul_(kRowSigma).exp_();
      at::Tensor c = at::randn({1, in}, gen, opts).mul_(kColSigma).exp_();
      const double std = (id == kO || id == kDown ? 0.5 : 1.0) / std::sqrt(static_cast<double>(in));
      w.mul_(r).mul_(c).mul_(std);
      lw.lin[id].w = RoundToHalf(w);
    }
    return lw;
  }, absl::StrCat(kSyntheticPrefix, spec_.preset, ": layer ", layer));
}

absl::StatusOr<at::Tensor> SyntheticWeights::Embedding() const {
  return TorchCall([&] {
    auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
    at::Tensor e = at::randn({cfg_.vocab_size, cfg_.hidden_size},
                             MakeGenerator(device_, TensorSeed(spec_.seed, kEmbeddingLayer, 0)), opts);
    return RoundToHalf(e.mul_(kEmbedStd));
  }, absl::StrCat(kSyntheticPrefix, spec_.preset, ": embedding"));
}

absl::StatusOr<kernels::DenseTensor> SyntheticWeights::Dense(const std::string& name,
                                                             const std::string& short_name) const {
  static constexpr std::pair<const char*, int> kNorms[] = {{"input_layernorm.weight", kInputNorm},
                                                           {"post_attention_layernorm.weight", kPostNorm}};
  for (int layer = 0; layer < cfg_.num_hidden_layers; ++layer) {
    for (const auto& [suffix, which] : kNorms) {
      if (name != LayerTensorName(layer, suffix)) continue;
      return TorchCall([&] {
        kernels::DenseTensor d;
        d.name = short_name;
        d.dtype = "F16";
        d.shape = {cfg_.hidden_size};
        d.data = TensorBytes(Norm(layer, which), at::kHalf);
        return d;
      }, name);
    }
  }
  return absl::NotFoundError(absl::StrCat(kSyntheticPrefix, spec_.preset, ": tensor '", name,
                                          "' not found (synthetic models carry only norm weights as dense tensors)"));
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

absl::StatusOr<std::unique_ptr<ModelWeights>> OpenModelWeights(const std::string& model, const at::Device& device) {
  if (IsSyntheticModel(model)) {
    QF_ASSIGN_OR_RETURN(auto w, SyntheticWeights::Open(model, device));
    return std::unique_ptr<ModelWeights>(std::move(w));
  }
  QF_ASSIGN_OR_RETURN(auto w, CheckpointWeights::Open(model, device));
  return std::unique_ptr<ModelWeights>(std::move(w));
}

}  // namespace qf::worker
