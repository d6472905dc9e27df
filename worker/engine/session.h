// File: worker/engine/session.h
//
// TorchSession: the engine's Session (engine_host.h). Holds the calibration
// activations [samples, seqlen, hidden] at the input of next_layer() on the
// session's device and moves them one layer per call.
//
// On a CUDA device the activations and forwards are in the checkpoint's
// half-precision dtype, GPTQ takes the fast path (gptq_fast.h) and AWQ's
// block forwards run in that dtype; on the CPU everything stays float32 and
// quantize.cc's reference path.
//
// Which activations the next layer sees is the method's:
//   gptq: the output of the quantized layer (the GPTQ paper's sequential mode);
//   awq:  the output of the float layer (AWQ computes every layer's statistics
//         from the float model, as the paper's and AutoAWQ's code do); the
//         statistics forward is that advance;
//   rtn:  none (no calibration).
// A replay (ApplyLayer) follows the same rule, so a resumed run reproduces the
// uninterrupted one bit for bit.
#pragma once

#include <ATen/ATen.h>

#include <memory>

#include "absl/status/statusor.h"
#include "worker/engine/decoder.h"
#include "worker/engine/engine_host.h"
#include "worker/engine/weights.h"

namespace qf::worker {

// Validates the spec against the model config before any work: InvalidArgument
// naming the field or tensor (bits, group size dividing each linear's input
// features, method, damp, sample counts, token ids in range).
absl::Status ValidateSessionSpec(const SessionSpec& spec, const storage::ModelConfig& cfg);

class TorchSession final : public Session {
 public:
  static absl::StatusOr<std::unique_ptr<TorchSession>> Open(const SessionSpec& spec);

  int num_layers() const override { return static_cast<int>(model_->config().num_hidden_layers); }
  int next_layer() const override { return next_; }
  absl::StatusOr<kernels::LayerResult> QuantizeLayer(int layer, const LayerProgressFn& progress) override;
  absl::Status ApplyLayer(const kernels::LayerResult& result) override;
  absl::Status ForwardOriginalLayer(int layer) override;
  // session_handoff.cc
  absl::StatusOr<std::unique_ptr<BoundaryActivations>> ForwardOriginalCopy(int end_layer) override;
  absl::Status ReceiveActivations(int layer, ActivationLink* link) override;

 private:
  TorchSession(SessionSpec spec, at::Device dev) : spec_(std::move(spec)), dev_(dev) {}
  absl::Status CheckNext(int layer) const;
  absl::StatusOr<kernels::LayerResult> Gptq(int layer, LayerWeights lw, const LayerProgressFn& progress);
  absl::StatusOr<kernels::LayerResult> Rtn(int layer, const LayerWeights& lw);
  absl::Status Advance(const LayerWeights& lw);  // acts_ <- layer(acts_)
  absl::Status AdvanceTensor(const at::Tensor& acts, const LayerWeights& lw, int layer);  // in place
  absl::Status AddNorms(int layer, kernels::LayerResult* r) const;

  SessionSpec spec_;
  at::Device dev_;
  // float32 on the CPU; on CUDA the checkpoint's fp16/bf16 (ComputeDType).
  at::ScalarType compute_ = at::kFloat;
  std::unique_ptr<ModelWeights> model_;   // a checkpoint or a synthetic model (synthetic.h)
  RopeTables rope_;   // in compute_
  at::Tensor acts_;   // [samples, seqlen, hidden] in compute_; undefined for rtn
  int next_ = 0;
  // Set when a step that moves acts_ in place failed half-way.
  absl::Status broken_;
};

}  // namespace qf::worker
