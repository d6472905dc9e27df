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
  if (spec.seqlen <= 1) return absl::InvalidArgumentError(absl::StrCat("seqlen ", spec.seqlen, ": expected > 1"));
  if (spec.tokens.empty() || spec.tokens.size() % spec.seqlen != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: ", spec.tokens.size(), " ids, expected a positive multiple of seqlen ", spec.seqlen));
  }
  QF_ASSIGN_OR_RETURN(auto src, OpenWeightSource(spec.model_dir, dev));
  return RunEvalOn(*src, spec, dev, progress);
}

absl::StatusOr<EvalResult> RunEvalOn(const WeightSource& source, const EvalSpec& spec, const at::Device& dev,
                                     const EvalProgressFn& progress) {
  auto t0 = std::chrono::steady_clock::now();
  if (spec.seqlen <= 1) return absl::InvalidArgumentError(absl::StrCat("seqlen ", spec.seqlen, ": expected > 1"));
  if (spec.tokens.empty() || spec.tokens.size() % spec.seqlen != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: ", spec.tokens.size(), " ids, expected a positive multiple of seqlen ", spec.seqlen));
  }
  const WeightSource* src = &source;
  const storage::ModelConfig& cfg = src->config();
  const int64_t chunks = static_cast<int64_t>(spec.tokens.size()) / spec.seqlen;
  for (int32_t id : spec.tokens) {
    if (id < 0 || id >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("tokens: id ", id, " outside the vocabulary of ", spec.model_dir));
    }
  }
  const int total = static_cast<int>(cfg.num_hidden_layers) + 1;
  at::Tensor ids, x;
  RopeTables rope;
  QF_ASSIGN_OR_RETURN(at::Tensor embed, src->Embedding());
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    ids = at::from_blob(const_cast<int32_t*>(spec.tokens.data()), {chunks, spec.seqlen}, at::kInt).to(at::kLong).to(dev);
    x = embed.index_select(0, ids.reshape({-1})).view({chunks, spec.seqlen, cfg.hidden_size});
    rope = MakeRope(cfg, spec.seqlen, dev);
    return absl::OkStatus();
  }, "eval embeddings"));
  embed = at::Tensor();
  for (int layer = 0; layer < cfg.num_hidden_layers; ++layer) {
    QF_ASSIGN_OR_RETURN(LayerWeights lw, src->Layer(layer));
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      for (int64_t b = 0; b < chunks; b += kBatch) {
        at::Tensor xb = x.narrow(0, b, std::min(kBatch, chunks - b));
        xb.copy_(LayerForward(xb, lw, cfg, rope, nullptr, Tap::kNone));
      }
      return absl::OkStatus();
    }, absl::StrCat("eval layer ", layer)));
    if (progress) progress(layer + 1, total);
    if (spec.stop && spec.stop()) {
      return absl::CancelledError(absl::StrCat("evaluation of ", spec.model_dir, ": stopped after layer ", layer));
    }
  }
  QF_ASSIGN_OR_RETURN(at::Tensor norm, src->FinalNorm());
  QF_ASSIGN_OR_RETURN(at::Tensor head, src->LmHead());
  double nll = 0;
  at::Tensor first_logits;
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    for (int64_t b = 0; b < chunks; b += kBatch) {
      const int64_t n = std::min(kBatch, chunks - b);
      at::Tensor logits = at::matmul(RmsNorm(x.narrow(0, b, n), norm, cfg.rms_norm_eps), head.t());  // [n, s, vocab]
      if (b == 0) first_logits = logits[0].to(at::kCPU).contiguous();
      at::Tensor logp = at::log_softmax(logits.narrow(1, 0, spec.seqlen - 1), -1);
      at::Tensor target = ids.narrow(0, b, n).narrow(1, 1, spec.seqlen - 1).unsqueeze(-1);
      nll -= logp.gather(-1, target).to(at::kDouble).sum().item<double>();
    }
    return absl::OkStatus();
  }, "eval head"));
  if (progress) progress(total, total);

  if (!spec.logits_out.empty()) {
    storage::OwnedTensor tok{"tokens", storage::DType::kI32, {spec.seqlen},
                             std::string(reinterpret_cast<const char*>(spec.tokens.data()), spec.seqlen * sizeof(int32_t))};
    storage::OwnedTensor lg{"logits", storage::DType::kF32, {spec.seqlen, cfg.vocab_size},
                            TensorBytes(first_logits, at::kFloat)};
    QF_RETURN_IF_ERROR(storage::WriteFile(spec.logits_out, {tok, lg}, {{"model", spec.model_dir}}));
  }
  EvalResult r;
  r.chunks = chunks;
  r.predicted_tokens = chunks * (spec.seqlen - 1);
  r.nll_sum = nll;
  r.ppl = std::exp(nll / static_cast<double>(r.predicted_tokens));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qf::worker
