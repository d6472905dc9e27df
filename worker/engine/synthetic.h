// File: worker/engine/synthetic.h
//
// Synthetic models: `--model synthetic:<preset>[?layers=N&seed=S]`. Weights
// are generated on the session's device, one layer at a time, so that a 70B
// run needs neither 140 GB of files nor host memory for them; after loading
// they follow the same code path as a checkpoint (ModelWeights, weights.h).
//
//   preset       hidden  intermediate  layers  heads  kv heads  vocab
//   llama-70b      8192         28672      80     64         8  128256
//   llama-8b       4096         14336      32     32         8  128256
//   llama-tiny      256           768       4      4         2    2048   (tests)
//
// Statistics (deterministic for a given preset, seed and device type):
//   - linear weights: N(0, 1) * std * r[out] * c[in] with log-normal row and
//     column spreads (sigma 0.3 and 0.2), std = 1/sqrt(in) (o_proj, down_proj:
//     half that, so the residual stream grows slowly over 80 layers), rounded
//     to fp16;
//   - norm weights: log-normal around 1 (sigma 0.2), and the same few hidden
//     channels (max(2, hidden / 2048)) 16x larger in every layer: the few
//     large-magnitude input channels of real checkpoints' activations, which
//     dominate diag(H);
//   - embeddings: N(0, 0.02^2) in fp16, generated on the host
//     (storage::SyntheticNonLayerTensor) so that the artifact writer copies
//     exactly the table the calibration ids were looked up in;
//   - calibration tokens: uniform over the vocabulary (SyntheticCalibrationTokens).
// The layers' generator is the device's (Philox on CUDA, mt19937 on the CPU),
// seeded per tensor, so a layer is the same whichever order layers are read in.
//
//   QF_ASSIGN_OR_RETURN(auto model, OpenModelWeights("synthetic:llama-70b?layers=4", dev));
//   QF_ASSIGN_OR_RETURN(LayerWeights lw, model->Layer(0));
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/model_config.h"
#include "storage/synthetic_model.h"
#include "worker/engine/weights.h"

namespace qf::worker {

// The host side (presets, config, calibration ids, non-layer tensors) is
// storage/synthetic_model.h; these names are used here unqualified.
using storage::IsSyntheticModel;
using storage::kSyntheticPrefix;
using storage::ParseSyntheticModel;
using storage::SyntheticCalibrationTokens;
using storage::SyntheticConfig;
using storage::SyntheticSpec;

class SyntheticWeights final : public ModelWeights {
 public:
  static absl::StatusOr<std::unique_ptr<SyntheticWeights>> Open(const std::string& model, const at::Device& device);

  const storage::ModelConfig& config() const override { return cfg_; }
  // OutOfRange for a layer outside the model.
  absl::StatusOr<LayerWeights> Layer(int layer) const override;
  absl::StatusOr<at::Tensor> Embedding() const override;
  // "model.layers.{i}.input_layernorm.weight" / "...post_attention_layernorm.weight"
  // as F16 bytes; NotFound for any other name.
  absl::StatusOr<kernels::DenseTensor> Dense(const std::string& name, const std::string& short_name) const override;
  absl::StatusOr<std::string> NormDType(int layer) const override { return std::string("F16"); }

  const SyntheticSpec& spec() const { return spec_; }

 private:
  SyntheticWeights(SyntheticSpec spec, storage::ModelConfig cfg, at::Device device)
      : spec_(std::move(spec)), cfg_(std::move(cfg)), device_(device) {}
  at::Tensor Norm(int layer, int which) const;   // [hidden] float32, fp16 values

  SyntheticSpec spec_;
  storage::ModelConfig cfg_;
  at::Device device_;
};

// A checkpoint directory or a synthetic model, by name.
absl::StatusOr<std::unique_ptr<ModelWeights>> OpenModelWeights(const std::string& model, const at::Device& device);

}  // namespace qf::worker
