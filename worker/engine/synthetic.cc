#include "worker/engine/synthetic.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/torch_util.h"

#if defined(QF_WITH_CUDA)
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace qf::worker {
namespace {

// Log-normal spreads and the outlier factor of the file comment.
constexpr double kRowSigma = 0.3;
constexpr double kColSigma = 0.2;
constexpr double kNormSigma = 0.2;
constexpr double kOutlierGain = 16.0;

using storage::SplitMix64;
using storage::SyntheticTensorSeed;

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

// Tensor ids inside a layer: the norms, then the linears.
constexpr int kInputNorm = 0, kPostNorm = 1, kFirstLinear = 2;

}  // namespace

absl::StatusOr<std::unique_ptr<SyntheticWeights>> SyntheticWeights::Open(const std::string& model,
                                                                          const at::Device& device) {
  QF_ASSIGN_OR_RETURN(SyntheticSpec spec, ParseSyntheticModel(model));
  storage::ModelConfig cfg = SyntheticConfig(spec);
  return std::unique_ptr<SyntheticWeights>(new SyntheticWeights(std::move(spec), std::move(cfg), device));
}

at::Tensor SyntheticWeights::Norm(int layer, int which) const {
  const int64_t h = cfg_.hidden_size;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
  at::Tensor n = at::randn({h}, MakeGenerator(device_, SyntheticTensorSeed(spec_.seed, layer, which)), opts)
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
    const std::array<storage::LinearShape, kNumLinears> shapes = storage::DecoderLinearShapes(cfg_);
    auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
    LayerWeights lw;
    lw.input_norm = Norm(layer, kInputNorm);
    lw.post_norm = Norm(layer, kPostNorm);
    for (int id = 0; id < kNumLinears; ++id) {
      const auto [out, in] = shapes[id];   // storage::LinearShape
      at::Generator gen = MakeGenerator(device_, SyntheticTensorSeed(spec_.seed, layer, kFirstLinear + id));
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
  QF_ASSIGN_OR_RETURN(std::string bytes, storage::SyntheticNonLayerTensor(spec_, cfg_, storage::kSyntheticEmbedding));
  return TorchCall([&] {
    at::Tensor e = at::from_blob(bytes.data(), {cfg_.vocab_size, cfg_.hidden_size}, at::kHalf);
    return e.to(device_).to(at::kFloat);
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

absl::StatusOr<std::unique_ptr<ModelWeights>> OpenModelWeights(const std::string& model, const at::Device& device) {
  if (IsSyntheticModel(model)) {
    QF_ASSIGN_OR_RETURN(auto w, SyntheticWeights::Open(model, device));
    return std::unique_ptr<ModelWeights>(std::move(w));
  }
  QF_ASSIGN_OR_RETURN(auto w, CheckpointWeights::Open(model, device));
  return std::unique_ptr<ModelWeights>(std::move(w));
}

}  // namespace qf::worker
