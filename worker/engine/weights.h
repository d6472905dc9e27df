// File: worker/engine/weights.h
//
// Reads a decoder layer (or the embedding / final norm / lm_head) of an HF
// checkpoint into float32 tensors on a device, one layer at a time: the
// safetensors files stay mapped, nothing else of the model is resident.
// ModelWeights is what a session needs from a model; a checkpoint is one
// implementation, a synthetic model (synthetic.h) the other.
//
//   QF_ASSIGN_OR_RETURN(auto model, CheckpointWeights::Open(dir, device));
//   QF_ASSIGN_OR_RETURN(LayerWeights lw, model->Layer(3));
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"
#include "worker/engine/decoder.h"

namespace qf::worker {

// The weights of a model as a session reads them, layer by layer.
class ModelWeights {
 public:
  virtual ~ModelWeights() = default;
  virtual const storage::ModelConfig& config() const = 0;
  // float32 on the source's device. NotFound naming the tensor; InvalidArgument
  // for a wrong shape or NaN/Inf values.
  virtual absl::StatusOr<LayerWeights> Layer(int layer) const = 0;
  virtual absl::StatusOr<at::Tensor> Embedding() const = 0;   // [vocab, hidden]
  // The raw bytes + dtype of a tensor, to carry it into a result unchanged.
  virtual absl::StatusOr<kernels::DenseTensor> Dense(const std::string& name, const std::string& short_name) const = 0;
  // Safetensors dtype ("F16", "BF16", "F32") of layer `layer`'s norm weights.
  virtual absl::StatusOr<std::string> NormDType(int layer) const = 0;
};

class CheckpointWeights final : public ModelWeights {
 public:
  // Errors: config.json problems (storage::LoadModelConfig), missing or
  // malformed safetensors, named by file.
  static absl::StatusOr<std::unique_ptr<CheckpointWeights>> Open(const std::string& dir, const at::Device& device);

  const storage::ModelConfig& config() const override { return cfg_; }
  const storage::Checkpoint& checkpoint() const { return *ckpt_; }

  // NotFound naming the tensor; InvalidArgument for a wrong shape or NaN/Inf values.
  absl::StatusOr<LayerWeights> Layer(int layer) const override;
  absl::StatusOr<at::Tensor> Tensor(const std::string& name, std::vector<int64_t> expected_shape) const;
  absl::StatusOr<at::Tensor> Embedding() const override;   // [vocab, hidden]
  absl::StatusOr<at::Tensor> FinalNorm() const;   // [hidden]
  absl::StatusOr<at::Tensor> LmHead() const;      // [vocab, hidden]; the embedding when tied

  absl::StatusOr<kernels::DenseTensor> Dense(const std::string& name, const std::string& short_name) const override;
  absl::StatusOr<std::string> NormDType(int layer) const override;

  bool HasBias(LinearId id) const;

 private:
  storage::ModelConfig cfg_;
  std::unique_ptr<storage::Checkpoint> ckpt_;
  at::Device device_ = at::kCPU;
};

// Builds a layer's weights from a result: dequantized linears (the contract of
// kernels/quant_types.h) and the result's dense tensors (norms).
absl::StatusOr<LayerWeights> WeightsFromResult(const kernels::LayerResult& r, const at::Device& device);

// "model.layers.{i}.{short}"
std::string LayerTensorName(int layer, const std::string& short_name);

}  // namespace qf::worker
