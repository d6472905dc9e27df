#include "worker/engine/eval.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "storage/safetensors.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/weights.h"

namespace qf::worker {
namespace {

constexpr int64_t kBatch = 8;  // chunks per forward

// seqlen and the token count: checked by RunEval before it opens the weights
// (an artifact's opening hashes every file) and by EvalRun::Start.
absl::Status CheckEvalShape(const EvalSpec& spec) {
  if (spec.seqlen <= 1) return absl::InvalidArgumentError(absl::StrCat("seqlen ", spec.seqlen, ": expected > 1"));
  if (spec.tokens.empty() || spec.tokens.size() % spec.seqlen != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: ", spec.tokens.size(),
                                                   " ids, expected a positive multiple of seqlen ", spec.seqlen));
  }
  return absl::OkStatus();
}

class CheckpointSource final : public WeightSource {
 public:
  explicit CheckpointSource(std::unique_ptr<CheckpointWeights> w) : w_(std::move(w)) {}
  const storage::ModelConfig& config() const override { return w_->config(); }
  absl::StatusOr<LayerWeights> Layer(int layer) const override { return w_->Layer(layer); }
  absl::StatusOr<at::Tensor> Embedding() const override { return w_->Embedding(); }
  absl::StatusOr<at::Tensor> FinalNorm() const override { return w_->FinalNorm(); }
  absl::StatusOr<at::Tensor> LmHead() const override { return w_->LmHead(); }

 private:
  std::unique_ptr<CheckpointWeights> w_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeightSource(const std::string& dir, const at::Device& device) {
  QF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("quantization_config")) return OpenArtifactSource(dir, device);
  QF_ASSIGN_OR_RETURN(auto w, CheckpointWeights::Open(dir, device));
  return std::unique_ptr<WeightSource>(new CheckpointSource(std::move(w)));
}

absl::StatusOr<EvalResult> RunEval(const EvalSpec& spec, const EvalProgressFn& progress) {
  QF_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(spec.device));
  QF_RETURN_IF_ERROR(CheckEvalShape(spec));
  QF_ASSIGN_OR_RETURN(auto src, OpenWeightSource(spec.model_dir, dev));
  return RunEvalOn(*src, spec, dev, progress);
}

absl::StatusOr<EvalRun> EvalRun::Start(const WeightSource& source, const EvalSpec& spec, const at::Device& dev) {
  QF_RETURN_IF_ERROR(CheckEvalShape(spec));
  const storage::ModelConfig& cfg = source.config();
  for (int32_t id : spec.tokens) {
    if (id < 0 || id >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("tokens: id ", id, " outside the vocabulary of ", spec.model_dir));
    }
  }
  EvalRun run;
  run.t0_ = std::chrono::steady_clock::now();
  run.spec_ = &spec;
  run.cfg_ = &cfg;
  run.chunks_ = static_cast<int64_t>(spec.tokens.size()) / spec.seqlen;
  QF_ASSIGN_OR_RETURN(at::Tensor embed, source.Embedding());
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    run.ids_ = at::from_blob(const_cast<int32_t*>(spec.tokens.data()), {run.chunks_, spec.seqlen}, at::kInt)
                   .to(at::kLong).to(dev);
    run.x_ = embed.index_select(0, run.ids_.reshape({-1})).view({run.chunks_, spec.seqlen, cfg.hidden_size});
    run.rope_ = MakeRope(cfg, spec.seqlen, dev);
    return absl::OkStatus();
  }, "eval embeddings"));
  return run;
}

absl::Status EvalRun::Apply(int layer, const LayerWeights& lw) {
  if (layer != next_layer_) {
    return absl::FailedPreconditionError(absl::StrCat("evaluation at layer ", next_layer_, ", given layer ", layer));
  }
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    for (int64_t b = 0; b < chunks_; b += kBatch) {
      at::Tensor xb = x_.narrow(0, b, std::min(kBatch, chunks_ - b));
      xb.copy_(LayerForward(xb, lw, *cfg_, rope_, nullptr, Tap::kNone));
    }
    return absl::OkStatus();
  }, absl::StrCat("eval layer ", layer)));
  ++next_layer_;
  return absl::OkStatus();
}

absl::StatusOr<EvalResult> EvalRun::Finish(const WeightSource& source) {
  if (next_layer_ != cfg_->num_hidden_layers) {
    return absl::FailedPreconditionError(absl::StrCat("evaluation finished after ", next_layer_, " of ",
                                                      cfg_->num_hidden_layers, " layers"));
  }
  const EvalSpec& spec = *spec_;
  QF_ASSIGN_OR_RETURN(at::Tensor norm, source.FinalNorm());
  QF_ASSIGN_OR_RETURN(at::Tensor head, source.LmHead());
  double nll = 0;
  at::Tensor first_logits;
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    for (int64_t b = 0; b < chunks_; b += kBatch) {
      const int64_t n = std::min(kBatch, chunks_ - b);
      at::Tensor logits = at::matmul(RmsNorm(x_.narrow(0, b, n), norm, cfg_->rms_norm_eps), head.t());  // [n, s, vocab]
      if (b == 0) first_logits = logits[0].to(at::kCPU).contiguous();
      at::Tensor logp = at::log_softmax(logits.narrow(1, 0, spec.seqlen - 1), -1);
      at::Tensor target = ids_.narrow(0, b, n).narrow(1, 1, spec.seqlen - 1).unsqueeze(-1);
      nll -= logp.gather(-1, target).to(at::kDouble).sum().item<double>();
    }
    return absl::OkStatus();
  }, "eval head"));
  x_ = at::Tensor();   // the activations go before anything is written

  if (!spec.logits_out.empty()) {
    storage::OwnedTensor tok{"tokens", storage::DType::kI32, {spec.seqlen},
                             std::string(reinterpret_cast<const char*>(spec.tokens.data()), spec.seqlen * sizeof(int32_t))};
    storage::OwnedTensor lg{"logits", storage::DType::kF32, {spec.seqlen, cfg_->vocab_size},
                            TensorBytes(first_logits, at::kFloat)};
    QF_RETURN_IF_ERROR(storage::WriteFile(spec.logits_out, {tok, lg}, {{"model", spec.model_dir}}));
  }
  EvalResult r;
  r.chunks = chunks_;
  r.predicted_tokens = chunks_ * (spec.seqlen - 1);
  r.nll_sum = nll;
  r.ppl = std::exp(nll / static_cast<double>(r.predicted_tokens));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  return r;
}

absl::StatusOr<EvalResult> RunEvalOn(const WeightSource& source, const EvalSpec& spec, const at::Device& dev,
                                     const EvalProgressFn& progress) {
  QF_ASSIGN_OR_RETURN(EvalRun run, EvalRun::Start(source, spec, dev));
  const int layers = static_cast<int>(source.config().num_hidden_layers);
  for (int layer = 0; layer < layers; ++layer) {
    QF_ASSIGN_OR_RETURN(LayerWeights lw, source.Layer(layer));
    QF_RETURN_IF_ERROR(run.Apply(layer, lw));
    if (progress) progress(layer + 1, layers + 1);
    if (spec.stop && spec.stop()) {
      return absl::CancelledError(absl::StrCat("evaluation of ", spec.model_dir, ": stopped after layer ", layer));
    }
  }
  QF_ASSIGN_OR_RETURN(EvalResult r, run.Finish(source));
  if (progress) progress(layers + 1, layers + 1);
  return r;
}

}  // namespace qf::worker
