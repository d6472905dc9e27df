// File: worker/engine/eval.h
//
// Perplexity of an HF checkpoint or a qforge artifact, layer-major: the
// embeddings of every chunk are built once, then each decoder layer is loaded
// (an artifact's dequantized through the same code as a replay) and applied to
// all chunks before the next is loaded, so one layer's weights are resident at
// a time. Protocol (worker/calibration.h BuildEvalTokens makes the ids):
// non-overlapping chunks of seqlen; NLL of tokens 1..seqlen-1 of each chunk
// given the ones before; ppl = exp(mean NLL).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "storage/artifact.h"
#include "storage/model_config.h"
#include "worker/engine/decoder.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

// Where the weights of a model come from: a checkpoint, or an artifact.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const storage::ModelConfig& config() const = 0;
  virtual absl::StatusOr<LayerWeights> Layer(int layer) const = 0;
  virtual absl::StatusOr<at::Tensor> Embedding() const = 0;
  virtual absl::StatusOr<at::Tensor> FinalNorm() const = 0;
  virtual absl::StatusOr<at::Tensor> LmHead() const = 0;
};

// A checkpoint directory, or an artifact (config.json with quantization_config).
absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeightSource(const std::string& dir, const at::Device& device);
// Artifact flavour (artifact_source.cc).
absl::StatusOr<std::unique_ptr<WeightSource>> OpenArtifactSource(const std::string& dir, const at::Device& device);

// Over an artifact already read (several sources may share one).
absl::StatusOr<std::unique_ptr<WeightSource>> OpenArtifactSource(std::shared_ptr<const storage::LoadedArtifact> art,
                                                                 const at::Device& device);

// One evaluation, a layer at a time: RunEvalOn is Start, Apply(l) for each
// layer in order, Finish. The verify stage drives two in lockstep (the
// dequantized and the fused weights of the same unpacked layer), so that an
// artifact is read and unpacked once. Holds the activations of every chunk
// ([chunks, seqlen, hidden] float32 on the device) until Finish.
class EvalRun {
 public:
  // Checks spec.seqlen and spec.tokens, embeds every chunk. `spec` and
  // `source` must outlive the run (`source` for its config and Finish).
  static absl::StatusOr<EvalRun> Start(const WeightSource& source, const EvalSpec& spec, const at::Device& device);
  // FailedPrecondition unless `layer` is the next one.
  absl::Status Apply(int layer, const LayerWeights& lw);
  // The final norm, the head and the NLL; FailedPrecondition before every
  // layer was applied. Writes spec.logits_out when set.
  absl::StatusOr<EvalResult> Finish(const WeightSource& source);

 private:
  EvalRun() = default;
  const EvalSpec* spec_ = nullptr;
  const storage::ModelConfig* cfg_ = nullptr;
  std::chrono::steady_clock::time_point t0_;
  int64_t chunks_ = 0;
  int next_layer_ = 0;
  at::Tensor ids_;   // [chunks, seqlen] int64
  at::Tensor x_;     // [chunks, seqlen, hidden] float32: the activations at next_layer_
  RopeTables rope_;
};

absl::StatusOr<EvalResult> RunEval(const EvalSpec& spec, const EvalProgressFn& progress);
// The same protocol and forward over weights already opened on `device`
// (spec.model_dir is only recorded).
absl::StatusOr<EvalResult> RunEvalOn(const WeightSource& src, const EvalSpec& spec, const at::Device& device,
                                     const EvalProgressFn& progress);

}  // namespace qf::worker
