#include "worker/engine/weights.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/engine/torch_util.h"

namespace qf::worker {

std::string LayerTensorName(int layer, const std::string& short_name) {
  return absl::StrCat("model.layers.", layer, ".", short_name);
}

absl::StatusOr<std::unique_ptr<CheckpointWeights>> CheckpointWeights::Open(const std::string& dir,
                                                                           const at::Device& device) {
  auto w = std::unique_ptr<CheckpointWeights>(new CheckpointWeights());
  QF_ASSIGN_OR_RETURN(w->cfg_, storage::LoadModelConfig(dir));
  QF_ASSIGN_OR_RETURN(w->ckpt_, storage::Checkpoint::Open(dir));
  w->device_ = device;
  return w;
}

bool CheckpointWeights::HasBias(LinearId id) const {
  if (id == kQ || id == kK || id == kV) return cfg_.attention_bias;
  if (id == kO) return cfg_.o_proj_bias;
  return cfg_.mlp_bias;
}

absl::StatusOr<at::Tensor> CheckpointWeights::Tensor(const std::string& name,
                                                     std::vector<int64_t> expected_shape) const {
  QF_ASSIGN_OR_RETURN(const storage::TensorView* v, ckpt_->Get(name));
  if (v->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt_->dir(), ": tensor '", name, "' has shape [",
                                                   absl::StrJoin(v->shape, ", "), "], expected [",
                                                   absl::StrJoin(expected_shape, ", "), "]"));
  }
  using storage::DType;
  if (v->dtype != DType::kF16 && v->dtype != DType::kBF16 && v->dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt_->dir(), ": tensor '", name, "' has dtype ",
                                                   std::string(storage::DTypeName(v->dtype)), ", expected F16, BF16 or F32"));
  }
  // Checked on the source bytes: no temporary the size of the tensor, nothing
  // uploaded that would be refused, and the message can name the element.
  if (const int64_t bad = storage::FirstNonFinite(*v); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt_->dir(), ": tensor '", name, "' element ", bad,
                                                   " (flat index) is NaN or Inf, expected finite weights"));
  }
  return TorchCall([&] { return TensorFromView(*v, device_); }, name);
}

absl::StatusOr<LayerWeights> CheckpointWeights::Layer(int layer) const {
  LayerWeights lw;
  const int64_t h = cfg_.hidden_size;
  QF_ASSIGN_OR_RETURN(lw.input_norm, Tensor(LayerTensorName(layer, "input_layernorm.weight"), {h}));
  QF_ASSIGN_OR_RETURN(lw.post_norm, Tensor(LayerTensorName(layer, "post_attention_layernorm.weight"), {h}));
  const std::array<storage::LinearShape, kNumLinears> shapes = storage::DecoderLinearShapes(cfg_);
  for (int id = 0; id < kNumLinears; ++id) {
    std::string base = LayerTensorName(layer, kLinearNames[id]);
    QF_ASSIGN_OR_RETURN(lw.lin[id].w, Tensor(base + ".weight", {shapes[id].out, shapes[id].in}));
    if (HasBias(static_cast<LinearId>(id))) {
      QF_ASSIGN_OR_RETURN(lw.lin[id].b, Tensor(base + ".bias", {shapes[id].out}));
    }
  }
  return lw;
}

absl::StatusOr<at::Tensor> CheckpointWeights::Embedding() const {
  return Tensor("model.embed_tokens.weight", {cfg_.vocab_size, cfg_.hidden_size});
}
absl::StatusOr<at::Tensor> CheckpointWeights::FinalNorm() const {
  return Tensor("model.norm.weight", {cfg_.hidden_size});
}
absl::StatusOr<at::Tensor> CheckpointWeights::LmHead() const {
  if (cfg_.tie_word_embeddings && !ckpt_->Has("lm_head.weight")) return Embedding();
  return Tensor("lm_head.weight", {cfg_.vocab_size, cfg_.hidden_size});
}

absl::StatusOr<kernels::DenseTensor> CheckpointWeights::Dense(const std::string& name,
                                                              const std::string& short_name) const {
  QF_ASSIGN_OR_RETURN(const storage::TensorView* v, ckpt_->Get(name));
  kernels::DenseTensor d;
  d.name = short_name;
  d.dtype = std::string(storage::DTypeName(v->dtype));
  d.shape = v->shape;
  d.data = std::string(v->data);
  return d;
}

absl::StatusOr<std::string> CheckpointWeights::NormDType(int layer) const {
  QF_ASSIGN_OR_RETURN(const storage::TensorView* norm, ckpt_->Get(LayerTensorName(layer, "input_layernorm.weight")));
  return std::string(storage::DTypeName(norm->dtype));
}

absl::StatusOr<LayerWeights> WeightsFromResult(const kernels::LayerResult& r, const at::Device& device) {
  LayerWeights lw;
  for (const kernels::DenseTensor& d : r.dense) {
    QF_ASSIGN_OR_RETURN(storage::DType dt, storage::ParseDType(d.dtype));
    storage::TensorView view{d.name, dt, d.shape, d.data};
    QF_ASSIGN_OR_RETURN(at::Tensor t, TorchCall([&] { return TensorFromView(view, device); }, d.name));
    if (d.name == "input_layernorm.weight") lw.input_norm = t;
    else if (d.name == "post_attention_layernorm.weight") lw.post_norm = t;
  }
  if (!lw.input_norm.defined() || !lw.post_norm.defined()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, " result: missing norm weights"));
  }
  if (r.linears.size() != kNumLinears) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, " result: ", r.linears.size(),
                                                   " linears, expected ", int(kNumLinears)));
  }
  for (int id = 0; id < kNumLinears; ++id) {
    const kernels::QuantizedLinear& q = r.linears[id];
    if (q.name != kLinearNames[id]) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, " result: linear ", id, " is '", q.name,
                                                     "', expected '", kLinearNames[id], "'"));
    }
    QF_ASSIGN_OR_RETURN(lw.lin[id].w, TorchCall([&] { return DequantizeToTensor(q, device); }, q.name));
    if (!q.bias.empty()) {
      QF_ASSIGN_OR_RETURN(lw.lin[id].b, TorchCall([&] {
        return at::from_blob(const_cast<uint16_t*>(q.bias.data()), {q.out_features}, at::kShort)
            .view(at::kHalf).to(at::kFloat).to(device);
      }, q.name));
    }
  }
  return lw;
}

}  // namespace qf::worker
