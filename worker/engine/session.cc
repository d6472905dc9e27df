#include "worker/engine/session.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include <cstdlib>

#include "worker/engine/awq.h"
#include "worker/engine/gptq_fast.h"
#include "worker/engine/quantize.h"
#include "worker/engine/synthetic.h"
#include "worker/engine/torch_util.h"

namespace qf::worker {
namespace {

// Samples per forward: bounds the attention working set. gptq_fast.cc's
// kBatch must stay equal (its advance matches this file's replay bit for bit).
constexpr int64_t kBatch = 16;

bool NeedsCalibration(const std::string& method) { return method != "rtn"; }

// Forward dtype: float32 on the CPU (the reference); on CUDA the checkpoint's
// half dtype (fp16 unless it is bf16; float32 checkpoints stay float32).
// QF_ENGINE_CUDA_DTYPE=float32|float16|bfloat16 overrides it, for comparisons.
absl::StatusOr<at::ScalarType> ComputeDType(const at::Device& dev, const storage::ModelConfig& cfg) {
  if (!dev.is_cuda()) return at::kFloat;
  std::string want = cfg.dtype;
  if (const char* env = std::getenv("QF_ENGINE_CUDA_DTYPE"); env && *env) want = env;
  if (want == "float32") return at::kFloat;
  if (want == "bfloat16") return at::kBFloat16;
  if (want == "float16") return at::kHalf;
  return absl::InvalidArgumentError(absl::StrCat("compute dtype '", want,
                                                 "' (QF_ENGINE_CUDA_DTYPE or config dtype): expected float32, float16 or bfloat16"));
}

}  // namespace

absl::Status ValidateSessionSpec(const SessionSpec& spec, const storage::ModelConfig& cfg) {
  const QuantParams& p = spec.quant;
  static constexpr const char* kMethods[] = {"gptq", "awq", "rtn"};
  bool known = false;
  for (const char* m : kMethods) known |= p.method == m;
  if (!known) return absl::InvalidArgumentError(absl::StrCat("method '", p.method, "': expected gptq, awq or rtn"));
  if (p.bits != 2 && p.bits != 3 && p.bits != 4 && p.bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits ", p.bits, ": expected 2, 3, 4 or 8"));
  }
  if (p.group_size != -1 && p.group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("group_size ", p.group_size, ": expected -1 or a positive number"));
  }
  if (p.group_size > 0) {
    const int64_t h = cfg.hidden_size, i = cfg.intermediate_size, q = cfg.num_attention_heads * cfg.head_dim;
    const std::pair<const char*, int64_t> inputs[] = {
        {"self_attn.q_proj", h}, {"self_attn.o_proj", q}, {"mlp.gate_proj", h}, {"mlp.down_proj", i}};
    for (const auto& [name, in] : inputs) {
      if (in % p.group_size != 0) {
        return absl::InvalidArgumentError(absl::StrCat("group_size ", p.group_size, ": does not divide the ", in,
                                                       " input features of model.layers.0.", name, ".weight"));
      }
    }
  }
  if (!(p.damp_percent > 0 && p.damp_percent <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("damp_percent ", p.damp_percent, ": expected in (0, 1]"));
  }
  if (p.block_size <= 0) return absl::InvalidArgumentError("block_size: expected a positive number");
  if (p.awq_grid <= 0) return absl::InvalidArgumentError("awq_grid: expected a positive number");
  if (p.awq_search_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("awq_search_tokens ", p.awq_search_tokens, ": expected a positive number"));
  }
  if (NeedsCalibration(p.method)) {
    if (spec.samples <= 0) return absl::InvalidArgumentError(absl::StrCat("samples ", spec.samples, ": expected > 0"));
    if (spec.seqlen <= 1) return absl::InvalidArgumentError(absl::StrCat("seqlen ", spec.seqlen, ": expected > 1"));
    if (static_cast<int64_t>(spec.calib_tokens.size()) != int64_t{spec.samples} * spec.seqlen) {
      return absl::InvalidArgumentError(absl::StrCat("calib_tokens: ", spec.calib_tokens.size(), " ids, expected samples x seqlen = ",
                                                     int64_t{spec.samples} * spec.seqlen));
    }
    for (int32_t id : spec.calib_tokens) {
      if (id < 0 || id >= cfg.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("calib_tokens: id ", id, " outside the vocabulary [0, ", cfg.vocab_size, ")"));
      }
    }
    if (cfg.sliding_window > 0 && spec.seqlen > cfg.sliding_window) {
      return absl::InvalidArgumentError(absl::StrCat("seqlen ", spec.seqlen, ": longer than the model's sliding_window ",
                                                     cfg.sliding_window, " (not supported)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TorchSession>> TorchSession::Open(const SessionSpec& spec) {
  QF_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(spec.device));
  auto s = std::unique_ptr<TorchSession>(new TorchSession(spec, dev));
  QF_ASSIGN_OR_RETURN(s->model_, OpenModelWeights(spec.model_dir, dev));
  const storage::ModelConfig& cfg = s->model_->config();
  if (IsSyntheticModel(spec.model_dir) && NeedsCalibration(spec.quant.method) && spec.calib_tokens.empty() &&
      spec.samples > 0 && spec.seqlen > 0) {
    // A synthetic model has no tokenizer: synthetic calibration tokens.
    s->spec_.calib_tokens = SyntheticCalibrationTokens(cfg.vocab_size, 0, spec.samples, spec.seqlen);
  }
  QF_RETURN_IF_ERROR(ValidateSessionSpec(s->spec_, cfg));
  QF_ASSIGN_OR_RETURN(s->compute_, ComputeDType(dev, cfg));
  if (NeedsCalibration(spec.quant.method)) {
    QF_ASSIGN_OR_RETURN(at::Tensor embed, s->model_->Embedding());
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      at::Tensor ids = at::from_blob(const_cast<int32_t*>(s->spec_.calib_tokens.data()),
                                     {int64_t{spec.samples} * spec.seqlen}, at::kInt).to(at::kLong).to(dev);
      if (s->compute_ != at::kFloat) embed = embed.to(s->compute_);
      s->acts_ = embed.index_select(0, ids).view({spec.samples, spec.seqlen, cfg.hidden_size});
      if (spec.host_activations && dev.is_cuda()) s->acts_ = s->acts_.to(at::kCPU).pin_memory();
      s->rope_ = MakeRope(cfg, spec.seqlen, dev);
      if (s->compute_ != at::kFloat) {
        s->rope_.cos = s->rope_.cos.to(s->compute_);
        s->rope_.sin = s->rope_.sin.to(s->compute_);
      }
      return absl::OkStatus();
    }, "calibration embeddings"));
  }
  // The calibration ids are embedded now; drop them.
  s->spec_.calib_tokens.clear();
  s->spec_.calib_tokens.shrink_to_fit();
  return s;
}

absl::Status TorchSession::CheckNext(int layer) const {
  QF_RETURN_IF_ERROR(broken_);
  if (layer != next_) {
    return absl::FailedPreconditionError(absl::StrCat("layer ", layer, ": the session's activations are at layer ", next_));
  }
  if (layer >= num_layers()) return absl::OutOfRangeError(absl::StrCat("layer ", layer, ": the model has ", num_layers()));
  return absl::OkStatus();
}

absl::Status TorchSession::Advance(const LayerWeights& lw) {
  if (!acts_.defined()) return absl::OkStatus();
  return AdvanceTensor(acts_, lw, next_);
}

// The one layer forward of replays, ForwardOriginalLayer and the hand-off's
// copy (session_handoff.cc): the same code, so the same bits.
absl::Status TorchSession::AdvanceTensor(const at::Tensor& acts, const LayerWeights& lw, int layer) {
  return TorchCallStatus([&] {
    const storage::ModelConfig& cfg = model_->config();
    const LayerWeights lwc = CastLayerWeights(lw, compute_);
    for (int64_t b = 0; b < acts.size(0); b += kBatch) {
      const int64_t n = std::min(kBatch, acts.size(0) - b);
      acts.narrow(0, b, n).copy_(LayerForward(RowsOn(acts, b, n, dev_), lwc, cfg, rope_, nullptr, Tap::kNone));
    }
    return absl::OkStatus();
  }, absl::StrCat("layer ", layer, ": forward"));
}

absl::Status TorchSession::AddNorms(int layer, kernels::LayerResult* r) const {
  for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
    QF_ASSIGN_OR_RETURN(kernels::DenseTensor d, model_->Dense(LayerTensorName(layer, n), n));
    r->dense.push_back(std::move(d));
  }
  return absl::OkStatus();
}

absl::StatusOr<kernels::LayerResult> TorchSession::Rtn(int layer, const LayerWeights& lw) {
  kernels::LayerResult r;
  r.layer = layer;
  for (int id = 0; id < kNumLinears; ++id) {
    QF_ASSIGN_OR_RETURN(kernels::QuantizedLinear q, RtnQuantize(kLinearNames[id], lw.lin[id].w, lw.lin[id].b, spec_.quant));
    r.linears.push_back(std::move(q));
  }
  QF_RETURN_IF_ERROR(AddNorms(layer, &r));
  return r;
}

absl::StatusOr<kernels::LayerResult> TorchSession::Gptq(int layer, LayerWeights lw, const LayerProgressFn& progress) {
  const QuantParams& p = spec_.quant;
  const storage::ModelConfig& cfg = model_->config();
  if (dev_.is_cuda()) {
    // The fast path also moves the activations through the quantized layer
    // (the same bits as ApplyLayer's replay): QuantizeLayer skips ApplyLayer.
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, GptqLayerFast(layer, std::move(lw), acts_, cfg, rope_, p,
                                                              GptqFastOptions{}, /*advance=*/true, progress, nullptr));
    QF_RETURN_IF_ERROR(AddNorms(layer, &r));
    return r;
  }
  // True-sequential: each group's Hessian comes from a forward in which the
  // groups before it are already quantized.
  const std::vector<std::vector<LinearId>> kSequential = {{kQ, kK, kV}, {kO}, {kGate, kUp}, {kDown}};
  const std::vector<std::vector<LinearId>> kAllAtOnce = {{kQ, kK, kV, kO, kGate, kUp, kDown}};
  const auto& groups = p.true_sequential ? kSequential : kAllAtOnce;
  LayerWeights cur = lw;
  std::array<kernels::QuantizedLinear, kNumLinears> out;
  std::vector<double> errors(kNumLinears, 0);
  int done = 0;
  for (const auto& group : groups) {
    at::Tensor hess[4];
    int64_t rows[4] = {0, 0, 0, 0};
    Tap last = Tap::kAttnIn;
    for (LinearId id : group) last = std::max(last, TapOf(id));
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      for (int64_t b = 0; b < acts_.size(0); b += kBatch) {
        at::Tensor xb = acts_.narrow(0, b, std::min(kBatch, acts_.size(0) - b));
        LayerForward(xb, cur, cfg, rope_, [&](Tap t, const at::Tensor& v) {
          int ti = static_cast<int>(t);
          at::Tensor x2 = v.reshape({-1, v.size(-1)});
          at::Tensor xtx = at::matmul(x2.t(), x2);
          hess[ti] = hess[ti].defined() ? hess[ti] + xtx : xtx;
          rows[ti] += x2.size(0);
        }, last);
      }
      return absl::OkStatus();
    }, absl::StrCat("layer ", layer, ": GPTQ calibration forward")));
    for (LinearId id : group) {
      int ti = static_cast<int>(TapOf(id));
      at::Tensor h = hess[ti] * (2.0 / static_cast<double>(rows[ti]));
      std::string name = LayerTensorName(layer, kLinearNames[id]);
      double loss = 0;
      QF_ASSIGN_OR_RETURN(kernels::QuantizedLinear q, GptqQuantize(name, cur.lin[id].w, cur.lin[id].b, h, p, &loss));
      q.name = kLinearNames[id];
      QF_ASSIGN_OR_RETURN(cur.lin[id].w, TorchCall([&] { return DequantizeToTensor(q, dev_); }, name));
      errors[id] = loss;
      out[id] = std::move(q);
      if (progress) progress(kLinearNames[id], ++done, kNumLinears);
    }
  }
  kernels::LayerResult r;
  r.layer = layer;
  for (auto& q : out) r.linears.push_back(std::move(q));
  r.errors = std::move(errors);
  QF_RETURN_IF_ERROR(AddNorms(layer, &r));
  return r;
}

absl::StatusOr<kernels::LayerResult> TorchSession::QuantizeLayer(int layer, const LayerProgressFn& progress) {
  QF_RETURN_IF_ERROR(CheckNext(layer));
  QF_ASSIGN_OR_RETURN(LayerWeights lw, model_->Layer(layer));
  const std::string& method = spec_.quant.method;
  // GPTQ on a GPU and AWQ move the activations in place while they quantize
  // (the same bits as ApplyLayer's replay), so QuantizeLayer skips ApplyLayer;
  // an error half-way leaves them unusable: the session refuses further work.
  const bool advances_in_place = (method == "gptq" && dev_.is_cuda()) || method == "awq";
  absl::StatusOr<kernels::LayerResult> r;
  if (method == "rtn") {
    r = Rtn(layer, lw);
  } else if (method == "gptq") {
    r = Gptq(layer, std::move(lw), progress);
  } else {
    absl::StatusOr<std::string> norm_dtype = model_->NormDType(layer);
    if (!norm_dtype.ok()) return norm_dtype.status();
    r = AwqQuantizeLayer(layer, std::move(lw), acts_, model_->config(), rope_, spec_.quant, *norm_dtype, progress);
  }
  if (!r.ok()) {
    if (advances_in_place) {
      broken_ = absl::FailedPreconditionError(absl::StrCat("layer ", layer, ": the session's activations were lost to an earlier error (",
                                                           r.status().message(), "); open a new session"));
    }
    return r.status();
  }
  if (advances_in_place) {
    ++next_;
  } else {
    QF_RETURN_IF_ERROR(ApplyLayer(*r));
  }
  return r;
}

absl::Status TorchSession::ApplyLayer(const kernels::LayerResult& result) {
  QF_RETURN_IF_ERROR(CheckNext(result.layer));
  if (spec_.quant.method == "gptq") {
    QF_ASSIGN_OR_RETURN(LayerWeights lw, WeightsFromResult(result, dev_));
    QF_RETURN_IF_ERROR(Advance(lw));
  } else if (spec_.quant.method == "awq") {
    QF_ASSIGN_OR_RETURN(LayerWeights lw, model_->Layer(result.layer));
    QF_RETURN_IF_ERROR(Advance(lw));
  }
  ++next_;
  return absl::OkStatus();
}

absl::Status TorchSession::ForwardOriginalLayer(int layer) {
  QF_RETURN_IF_ERROR(CheckNext(layer));
  QF_ASSIGN_OR_RETURN(LayerWeights lw, model_->Layer(layer));
  QF_RETURN_IF_ERROR(Advance(lw));
  ++next_;
  return absl::OkStatus();
}

}  // namespace qf::worker
