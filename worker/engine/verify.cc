#include "worker/engine/verify.h"

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <c10/core/DeviceGuard.h>

#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "common/verify_vocab.h"
#include "storage/artifact.h"
#include "worker/engine/eval.h"
#include "worker/engine/fused_linear.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/weights.h"

#if defined(QF_WITH_W4A16)
#include <cuda_runtime.h>

#include "kernels/cuda/event_timer.h"
#endif

namespace qf::worker {
namespace {

using Clock = std::chrono::steady_clock;
using Artifact = std::shared_ptr<const storage::LoadedArtifact>;

// What the fused path's element type (VerifySpec::dtype) sets.
struct DType {
  const char* name;
  at::ScalarType type;
  const char* largest;        // its largest finite value, for the overflow message
  double max_rel_err_gptq, max_rel_err_awq;
  double max_ppl_rel_diff;
};
const DType kDTypes[] = {
    {"fp16", at::kHalf, "65504", kVerifyMaxRelErrGptq, kVerifyMaxRelErrAwq, kVerifyMaxPplRelDiff},
    {"bf16", at::kBFloat16, "3.4e38", kVerifyMaxRelErrBf16, kVerifyMaxRelErrBf16, kVerifyMaxPplRelDiffBf16},
};

const DType* FindDType(const std::string& name) {
  for (const DType& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

// Deterministic activations: uniform in [-1, 1) from splitmix64, rounded to
// `type`, the same for every run, build and device.
at::Tensor Activations(int64_t m, int64_t k, uint64_t seed, const at::Device& dev, at::ScalarType type) {
  std::vector<float> v(static_cast<size_t>(m * k));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    f = static_cast<float>(static_cast<double>(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return at::from_blob(v.data(), {m, k}, at::kFloat).to(type).to(dev);
}

std::string ShortName(const std::string& linear) {
  const size_t dot = linear.rfind('.');
  return dot == std::string::npos ? linear : linear.substr(dot + 1);
}

std::string DeviceName(const at::Device& dev) {
  if (!dev.is_cuda()) return "cpu";
  std::string name = absl::StrCat("cuda:", dev.index() < 0 ? 0 : dev.index());
#if defined(QF_WITH_W4A16)
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, dev.index() < 0 ? 0 : dev.index()) == cudaSuccess) {
    absl::StrAppend(&name, " (", prop.name, ")");
  }
#endif
  return name;
}

struct ShapeUse {
  std::shared_ptr<FusedLinear> fused;   // the first linear with this shape
  // Its codes, kept for cuBLAS's weight: the layers themselves are unpacked
  // one at a time and dropped.
  std::shared_ptr<const kernels::QuantizedLinear> q;
  std::vector<std::string> names;       // short names with this shape
};
using Shapes = std::map<std::pair<int64_t, int64_t>, ShapeUse>;   // (k, n)

// Check 1 for one linear: fills `out`; errors only for what stops the run.
// `dequant` is the dequantized path's weight of the linear (WeightsFromResult:
// DequantizeToTensor in float32, the bias in float32); *fused_out is the
// fused linear when the kernel takes it (null when "unsupported").
absl::Status CheckLinear(FusedContext& ctx, const Artifact& art, int layer, int index,
                         const kernels::QuantizedLinear& q, const LinearWeights& dequant, const VerifySpec& spec,
                         const DType& dtype, VerifyLinear& out, Shapes& shapes,
                         std::shared_ptr<const FusedLinear>* fused_out) {
  *fused_out = nullptr;
  out.tensor = absl::StrCat("model.layers.", layer, ".", q.name);
  out.k = q.in_features;
  out.n = q.out_features;
  out.threshold = art->spec.format == "awq" ? dtype.max_rel_err_awq : dtype.max_rel_err_gptq;
  absl::StatusOr<std::unique_ptr<FusedLinear>> loaded = FusedLinear::Load(ctx, *art, layer, q);
  if (!loaded.ok() && loaded.status().code() == absl::StatusCode::kUnimplemented) {
    out.status = "unsupported";
    out.detail = std::string(loaded.status().message());
    return absl::OkStatus();
  }
  QF_RETURN_IF_ERROR(loaded.status());
  std::shared_ptr<FusedLinear> fused = std::move(*loaded);
  const at::Device dev = ctx.device;
  const at::Tensor& w = dequant.w;
  const at::Tensor& bias = dequant.b;
  out.status = "ok";
  out.max_rel_err = 0;
  for (int64_t m : spec.check_ms) {
    const uint64_t seed = (static_cast<uint64_t>(layer) * 8 + index) * 4096 + static_cast<uint64_t>(m);
    QF_ASSIGN_OR_RETURN(at::Tensor a, TorchCall([&] { return Activations(m, q.in_features, seed, dev, dtype.type); },
                                                out.tensor));
    absl::StatusOr<at::Tensor> c = fused->Forward(a);
    if (!c.ok() && c.status().code() == absl::StatusCode::kUnimplemented) {
      out.status = "unsupported";
      out.max_rel_err = -1;
      out.detail = std::string(c.status().message());
      return absl::OkStatus();
    }
    QF_RETURN_IF_ERROR(c.status());
    struct Err { double rel; bool finite; double ref_max; };
    QF_ASSIGN_OR_RETURN(Err e, TorchCall([&] {
      at::Tensor ref = at::matmul(a.to(at::kFloat), w.t());
      if (bias.defined()) ref = ref + bias;
      at::Tensor got = c->to(at::kFloat);
      const bool finite = at::isfinite(got).all().item<bool>();
      const double den = ref.to(at::kDouble).norm().item<double>();
      const double num = (got.to(at::kDouble) - ref.to(at::kDouble)).norm().item<double>();
      return Err{finite ? num / std::max(den, 1e-30) : INFINITY, finite, ref.abs().max().item<double>()};
    }, out.tensor));
    if (!(e.rel <= out.max_rel_err)) out.max_rel_err = e.rel;   // NaN propagates
    if (!(e.rel <= out.threshold) && out.status == "ok") {
      out.status = "fail";
      out.detail = e.finite ? absl::StrCat("relative error ", e.rel, " at m=", m, ", expected <= ", out.threshold)
                            : absl::StrCat("fused output not finite at m=", m, " (max |reference| ", e.ref_max, "; ",
                                           dtype.name, " holds ", dtype.largest, "), expected <= ", out.threshold,
                                           " relative error");
    }
  }
  ShapeUse& use = shapes[{q.in_features, q.out_features}];
  if (!use.fused) {
    use.fused = fused;
    use.q = std::make_shared<const kernels::QuantizedLinear>(q);
  }
  const std::string s = ShortName(q.name);
  if (std::find(use.names.begin(), use.names.end(), s) == use.names.end()) use.names.push_back(s);
  *fused_out = fused;   // "ok" or "fail" here: an unsupported m returned above
  return absl::OkStatus();
}

// Cancelled when the caller asks the run to stop (VerifySpec::stop).
absl::Status CheckStop(const VerifySpec& spec, const std::string& where) {
  if (spec.stop && spec.stop()) return absl::CancelledError(absl::StrCat("verify: stopped at ", where));
  return absl::OkStatus();
}

// Check 2: the fused GEMM against cuBLAS in the same dtype on every shape,
// same run.
absl::Status TimeShapes(FusedContext& ctx, const Shapes& shapes, const VerifySpec& spec, VerifyReport& report,
                        const VerifyProgressFn& progress) {
#if defined(QF_WITH_W4A16)
  const at::Device dev = ctx.device;
  c10::DeviceGuard guard(dev);
  const auto stream = static_cast<cudaStream_t>(at::accelerator::getCurrentStream(dev.index()).native_handle());
  int l2 = 0;
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev.index());
  // A streaming read of max(256 MiB, 4 x L2) before each timed call evicts
  // L2 (bench/w4a16_bench.cu does the same with its own read kernel).
  const int64_t flush_ints = std::max<int64_t>(int64_t{256} << 20, int64_t{4} * l2) / 4;
  at::Tensor flush_buf;
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    flush_buf = at::ones({flush_ints}, at::TensorOptions().dtype(at::kInt).device(dev));
    return absl::OkStatus();
  }, "verify: L2 flush buffer"));
  const auto flush = [&]() {
    return TorchCallStatus([&] { (void)flush_buf.sum(); return absl::OkStatus(); }, "L2 flush");
  };
  kernels::EventTimer timer;
  report.timing_measured = true;
  report.iters = spec.iters;
  int done = 0;
  const int total = static_cast<int>(shapes.size() * spec.timing_ms.size());
  for (const auto& [kn, use] : shapes) {
    const auto [k, n] = kn;
    at::Tensor w16;   // the 16-bit weight cuBLAS multiplies: only while this shape is timed
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      w16 = DequantizeToTensor(*use.q, dev).to(ctx.dtype);
      return absl::OkStatus();
    }, "verify: cuBLAS weight"));
    const at::Tensor w16t = w16.t();
    for (int64_t m : spec.timing_ms) {
      VerifyTiming t;
      t.k = k;
      t.n = n;
      t.m = m;
      t.linears = absl::StrJoin(use.names, ",");
      t.variant = use.fused->Variant(m);
      at::Tensor a, c, c16;
      QF_RETURN_IF_ERROR(TorchCallStatus([&] {
        a = Activations(m, k, 7, dev, ctx.dtype);
        c = at::empty({m, n}, a.options());
        c16 = at::empty({m, n}, a.options());
        return absl::OkStatus();
      }, "verify: timing buffers"));
      absl::Status probe = use.fused->ForwardInto(a, c);
      if (probe.code() == absl::StatusCode::kUnimplemented) {
        t.variant = "unsupported";
        t.fused_us = t.cublas_us = -1;
      } else {
        QF_RETURN_IF_ERROR(probe);
        QF_ASSIGN_OR_RETURN(t.fused_us, timer.MedianUs([&] { return use.fused->ForwardInto(a, c); }, flush,
                                                       spec.warmup, spec.iters, stream));
        QF_ASSIGN_OR_RETURN(t.cublas_us, timer.MedianUs([&] {
          return TorchCallStatus([&] { at::mm_out(c16, a, w16t); return absl::OkStatus(); }, "cuBLAS");
        }, flush, spec.warmup, spec.iters, stream));
      }
      report.timings.push_back(std::move(t));
      if (progress) progress("throughput", ++done, total);
      QF_RETURN_IF_ERROR(CheckStop(spec, absl::StrCat("the timing of ", k, " x ", n, " at m=", m)));
    }
  }
  return absl::OkStatus();
#else
  report.timing_note = "not measured: this engine was built without CUDA";
  return absl::OkStatus();
#endif
}

// Check 3: perplexity through the fused path against the dequantized path:
// two EvalRuns that RunVerify advances in its pass over the layers, with the
// dequantized and the fused weights of the layer it just unpacked and checked.
class PerplexityPair {
 public:
  PerplexityPair() = default;
  PerplexityPair(const PerplexityPair&) = delete;   // the runs point at es_
  PerplexityPair& operator=(const PerplexityPair&) = delete;

  // Embeds every chunk twice; without tokens nothing is measured.
  absl::Status Start(const Artifact& art, const VerifySpec& spec, const at::Device& dev) {
    if (spec.tokens.empty()) return absl::OkStatus();
    wanted_ = true;
    es_.model_dir = spec.artifact_dir;
    es_.device = spec.device;
    es_.seqlen = spec.seqlen;
    es_.tokens = spec.tokens;
    QF_ASSIGN_OR_RETURN(source_, OpenArtifactSource(art, dev));
    QF_ASSIGN_OR_RETURN(EvalRun d, EvalRun::Start(*source_, es_, dev));
    dequant_.emplace(std::move(d));
    QF_ASSIGN_OR_RETURN(EvalRun f, EvalRun::Start(*source_, es_, dev));
    fused_.emplace(std::move(f));
    return absl::OkStatus();
  }
  bool active() const { return fused_.has_value(); }
  // A linear the kernel does not take: the fused path cannot run.
  void Drop() {
    dequant_.reset();
    fused_.reset();
  }
  absl::Status Apply(int layer, const LayerWeights& dequant, const LayerWeights& fused) {
    QF_RETURN_IF_ERROR(dequant_->Apply(layer, dequant));
    return fused_->Apply(layer, fused);
  }
  // After the last layer: fills `p` (or says why nothing was measured).
  absl::Status Finish(const std::vector<VerifyLinear>& linears, VerifyPerplexity& p) {
    if (!wanted_) {
      p.note = "not measured: no text given";
      return absl::OkStatus();
    }
    if (!active()) {
      int unsupported = 0;
      for (const VerifyLinear& l : linears) unsupported += l.status == "unsupported";
      p.note = absl::StrCat("not measured: ", unsupported, " linears are unsupported by the fused kernel");
      return absl::OkStatus();
    }
    QF_ASSIGN_OR_RETURN(const EvalResult d, dequant_->Finish(*source_));
    dequant_.reset();
    QF_ASSIGN_OR_RETURN(const EvalResult f, fused_->Finish(*source_));
    Drop();
    source_.reset();
    p.measured = true;
    p.chunks = d.chunks;
    p.dequant = d.ppl;
    p.fused = f.ppl;
    p.rel_diff = std::fabs(f.ppl - d.ppl) / d.ppl;
    p.passed = p.rel_diff <= p.tolerance;   // false for NaN too
    return absl::OkStatus();
  }

 private:
  bool wanted_ = false;
  EvalSpec es_;
  std::unique_ptr<WeightSource> source_;   // embeddings, final norm, lm_head
  std::optional<EvalRun> dequant_, fused_;
};

absl::Status ValidateSpec(const VerifySpec& spec) {
  if (spec.artifact_dir.empty()) return absl::InvalidArgumentError("artifact: expected a directory");
  if (FindDType(spec.dtype) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("dtype: '", spec.dtype, "', expected ", OneOf(kVerifyDTypes)));
  }
  if (!IsDirectory(spec.artifact_dir)) return absl::NotFoundError(absl::StrCat(spec.artifact_dir, ": no such directory"));
  if (spec.check_ms.empty()) return absl::InvalidArgumentError("check_ms: expected at least one M");
  for (int64_t m : spec.check_ms) {
    if (m < 1 || m > 65536) return absl::InvalidArgumentError(absl::StrCat("check_ms: ", m, ", expected 1..65536"));
  }
  for (int64_t m : spec.timing_ms) {
    if (m < 1 || m > 65536) return absl::InvalidArgumentError(absl::StrCat("timing_ms: ", m, ", expected 1..65536"));
  }
  if (spec.iters < 1 || spec.warmup < 0) {
    return absl::InvalidArgumentError(absl::StrCat("iters: ", spec.iters, ", expected >= 1 (warmup >= 0)"));
  }
  if (!spec.tokens.empty() && (spec.seqlen <= 1 || spec.tokens.size() % spec.seqlen != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: ", spec.tokens.size(), " ids, expected a multiple of seqlen ",
                                                   spec.seqlen, " > 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VerifyReport> RunVerify(const VerifySpec& spec, const VerifyProgressFn& progress) {
  const auto t0 = Clock::now();
  QF_RETURN_IF_ERROR(ValidateSpec(spec));
  QF_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(spec.device));
  if (dev.is_cuda() && !HaveFusedGpuKernel()) {
    return absl::FailedPreconditionError(absl::StrCat("device '", spec.device,
                                                      "': this engine was built without the fused W4A16 kernel"));
  }
  // Layers are unpacked one at a time below (a 70B artifact's codes, all
  // unpacked, would take ~70 GB of host memory).
  QF_ASSIGN_OR_RETURN(storage::LoadedArtifact loaded, storage::OpenArtifact(spec.artifact_dir));
  Artifact art = std::make_shared<const storage::LoadedArtifact>(std::move(loaded));

  VerifyReport r;
  const DType& dtype = *FindDType(spec.dtype);
  r.artifact_dir = spec.artifact_dir;
  r.device = DeviceName(dev);
  r.dtype = dtype.name;
  r.format = art->spec.format;
  r.bits = art->spec.bits;
  r.group_size = art->spec.group_size;
  r.sym = art->spec.sym;
  r.desc_act = art->spec.desc_act;
  r.check_ms = spec.check_ms;

  FusedContext ctx(dev, dtype.type);
  Shapes shapes;
  // One pass over the layers: each is unpacked and dequantized once, its
  // linears checked, and both perplexity forwards advanced through it (a 70B
  // artifact takes minutes per pass on the host).
  r.ppl.text = spec.text;
  r.ppl.seqlen = spec.seqlen;
  r.ppl.tolerance = dtype.max_ppl_rel_diff;
  PerplexityPair ppl;
  QF_RETURN_IF_ERROR(ppl.Start(art, spec, dev));
  const int layers = static_cast<int>(art->layers.size());
  for (int layer = 0; layer < layers; ++layer) {
    QF_ASSIGN_OR_RETURN(const kernels::LayerResult unpacked, art->Layer(layer));
    QF_ASSIGN_OR_RETURN(const LayerWeights lw, WeightsFromResult(unpacked, dev));   // the eval path's weights
    LayerWeights fused_lw = lw;   // norms shared; each linear replaced below
    for (int j = 0; j < static_cast<int>(unpacked.linears.size()); ++j) {
      VerifyLinear l;
      std::shared_ptr<const FusedLinear> fused;
      QF_RETURN_IF_ERROR(CheckLinear(ctx, art, layer, j, unpacked.linears[j], lw.lin[j], spec, dtype, l, shapes, &fused));
      r.linears.push_back(std::move(l));
      QF_RETURN_IF_ERROR(CheckStop(spec, r.linears.back().tensor));
      if (!fused) ppl.Drop();
      else fused_lw.lin[j] = LinearWeights{at::Tensor(), at::Tensor(), FusedLinear::AsApply(std::move(fused))};
    }
    if (ppl.active()) QF_RETURN_IF_ERROR(ppl.Apply(layer, lw, fused_lw));
    if (progress) progress("layers", layer + 1, layers);
    QF_RETURN_IF_ERROR(CheckStop(spec, absl::StrCat("the end of layer ", layer)));
  }
  QF_RETURN_IF_ERROR(ppl.Finish(r.linears, r.ppl));

  if (!dev.is_cuda()) {
    r.timing_note = "not measured: no CUDA device";
  } else if (shapes.empty()) {
    r.timing_note = "not measured: no linear is supported by the fused kernel";
  } else {
    QF_RETURN_IF_ERROR(TimeShapes(ctx, shapes, spec, r, progress));
  }
  shapes.clear();

  int failed = 0, supported = 0;
  for (const VerifyLinear& l : r.linears) {
    supported += l.status != "unsupported";
    if (l.status != "fail") continue;
    if (failed++ == 0) r.failure = absl::StrCat(l.tensor, ": fused W4A16 GEMM against dequantize + matmul: ", l.detail);
  }
  if (failed > 1) absl::StrAppend(&r.failure, " (", failed, " of ", r.linears.size(), " linears failed; see verify.json)");
  if (failed == 0 && r.ppl.measured && !r.ppl.passed) {
    r.failure = absl::StrCat("perplexity: fused path ", r.ppl.fused, " vs dequantized path ", r.ppl.dequant,
                             " (relative difference ", r.ppl.rel_diff, "), expected <= ", r.ppl.tolerance);
  }
  r.verdict = !r.failure.empty() ? kVerdictFailed : supported == 0 ? kVerdictUnsupported : kVerdictPassed;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

}  // namespace qf::worker
