// GPTQ on Llama-70B layer shapes, on one GPU (issue 4). Built as a module
// (libqf_gptq_bench.so) that bench/gptq_layer_bench_main.cc dlopens, so that
// libtorch's symbols stay out of the process's global scope (DESIGN.md).
//
// Mode `layers` (default): the session's sequential GPTQ on the first
// --layers layers of --model (synthetic:llama-70b: hidden 8192, intermediate
// 28672, 64 heads, 8 KV heads) with --samples x --seqlen calibration tokens
// (fp16 activations, 128 x 2048 x 8192 x 2 bytes = 4.3 GB), each phase timed:
//   forward   calibration forwards + the forward through the quantized layer
//   hessian   X^T X on tensor cores (fp16 in, fp32 out) + symmetrization
//   factor    H^-1's Cholesky factor (reversed Cholesky + triangular inverse)
//   gptq      the fused block recurrences + lazy-update GEMMs + group params
//   pack      codes to the host QuantizedLinears, dequantization for the forward
//   total     all of the session's QuantizeLayer but the weights' generation
//   gpu pack  GPTQ v1 qweight of the seven linears on the GPU (apart)
// The first layer also pays one-time costs (library and kernel loading) and is
// reported apart. Then, with --textbook, the same layer's seven linears run
// the textbook GPTQ (the paper's reference code: one column per step, a dozen
// launches per column, cholesky + cholesky_inverse + cholesky) against the
// fast path, and the ratio is printed.
//
// Mode `e2e`: a whole model through the engine session (load, calibrate,
// quantize, forward), GPTQ or (--method awq) AWQ, each layer packed (GPTQ v1 or AWQ GEMM) and written as a safetensors
// shard by a writer thread while the GPU works on the next layer; peak GPU
// memory (allocator) and peak host memory (VmHWM) are reported.
//
//   gptq_layer_bench --model synthetic:llama-70b?layers=3 --layers 3 --textbook
//   gptq_layer_bench --mode e2e --model synthetic:llama-70b --out /tmp/art
#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "kernels/ref/pack.h"
#include "nlohmann/json.hpp"
#include "storage/artifact.h"
#include "storage/safetensors.h"
#include "worker/engine/gptq_fast.h"
#include "worker/engine/quantize.h"
#include "worker/engine/session.h"
#include "worker/engine/synthetic.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/weights.h"

namespace qf::bench {
namespace {

using worker::GptqFastOptions;
using worker::GptqImpl;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Flags {
  std::string mode = "layers";
  std::string model = "synthetic:llama-70b?layers=3";
  std::string device = "cuda";
  int samples = 128;
  int seqlen = 2048;
  int layers = 3;
  int bits = 4;
  int group_size = 128;
  bool act_order = false;
  bool sym = false;
  bool textbook = false;
  std::string method = "gptq";          // e2e: gptq | awq (layers mode is GPTQ's breakdown)
  int awq_search_tokens = 65536;
  std::string out;    // e2e: shard directory (optional)
  std::string json;   // results as JSON (optional)
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(name, ": expected a value"));
      return std::string(argv[++i]);
    };
    auto number = [&](const char* name, int* out) -> absl::Status {
      QF_ASSIGN_OR_RETURN(std::string v, value(name));
      if (!absl::SimpleAtoi(v, out)) return absl::InvalidArgumentError(absl::StrCat(name, " '", v, "': expected a number"));
      return absl::OkStatus();
    };
    if (a == "--mode") { QF_ASSIGN_OR_RETURN(f.mode, value("--mode")); }
    else if (a == "--model") { QF_ASSIGN_OR_RETURN(f.model, value("--model")); }
    else if (a == "--device") { QF_ASSIGN_OR_RETURN(f.device, value("--device")); }
    else if (a == "--out") { QF_ASSIGN_OR_RETURN(f.out, value("--out")); }
    else if (a == "--json") { QF_ASSIGN_OR_RETURN(f.json, value("--json")); }
    else if (a == "--samples") { QF_RETURN_IF_ERROR(number("--samples", &f.samples)); }
    else if (a == "--seqlen") { QF_RETURN_IF_ERROR(number("--seqlen", &f.seqlen)); }
    else if (a == "--layers") { QF_RETURN_IF_ERROR(number("--layers", &f.layers)); }
    else if (a == "--bits") { QF_RETURN_IF_ERROR(number("--bits", &f.bits)); }
    else if (a == "--group-size") { QF_RETURN_IF_ERROR(number("--group-size", &f.group_size)); }
    else if (a == "--act-order") { f.act_order = true; }
    else if (a == "--sym") { f.sym = true; }
    else if (a == "--textbook") { f.textbook = true; }
    else if (a == "--method") { QF_ASSIGN_OR_RETURN(f.method, value("--method")); }
    else if (a == "--awq-search-tokens") { QF_RETURN_IF_ERROR(number("--awq-search-tokens", &f.awq_search_tokens)); }
    else return absl::InvalidArgumentError(absl::StrCat("unknown flag '", a, "' (see the file comment of bench/gptq_layer_bench.cc)"));
  }
  if (f.mode != "layers" && f.mode != "e2e") return absl::InvalidArgumentError(absl::StrCat("--mode '", f.mode, "': expected layers or e2e"));
  if (f.method != "gptq" && (f.method != "awq" || f.mode != "e2e")) {
    return absl::InvalidArgumentError(absl::StrCat("--method '", f.method, "': expected gptq, or awq with --mode e2e"));
  }
  return f;
}

worker::QuantParams Params(const Flags& f) {
  worker::QuantParams p;
  p.method = f.method;
  p.awq_search_tokens = f.awq_search_tokens;
  p.zero_at_least_one = f.method == "awq" ? false : p.zero_at_least_one;
  p.bits = f.bits;
  p.group_size = f.group_size;
  p.act_order = f.act_order;
  p.sym = f.sym;
  return p;
}

double PeakGpuGiB(const at::Device& d) {
  if (!d.is_cuda()) return 0;
  auto stats = at::accelerator::getDeviceStats(d.index());
  return static_cast<double>(stats.reserved_bytes[0].peak) / (1 << 30);
}
double PeakAllocatedGiB(const at::Device& d) {
  if (!d.is_cuda()) return 0;
  auto stats = at::accelerator::getDeviceStats(d.index());
  return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30);
}
void ResetPeak(const at::Device& d) {
  if (d.is_cuda()) at::accelerator::resetPeakStats(d.index());
}
void Sync(const at::Device& d) {
  if (d.is_cuda()) at::accelerator::synchronizeDevice(d.index());
}

// Peak resident host memory of this process (VmHWM), GiB.
double PeakHostGiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / (1 << 20);
  }
  return 0;
}

struct LayerRow {
  int layer = 0;
  double weights_s = 0;  // synthetic generation (stands in for reading the checkpoint)
  worker::GptqLayerTimes t;
  double gpu_pack_s = 0; // GPTQ v1 qweight of all seven linears on the GPU
  double peak_gib = 0;
};

nlohmann::json RowJson(const LayerRow& r) {
  return {{"layer", r.layer},     {"weights_s", r.weights_s}, {"forward_s", r.t.forward_s},
          {"hessian_s", r.t.hessian_s}, {"factor_s", r.t.factor_s}, {"gptq_s", r.t.recurrence_s},
          {"pack_s", r.t.pack_s}, {"total_s", r.t.total_s},   {"gpu_qweight_pack_s", r.gpu_pack_s},
          {"peak_gpu_reserved_gib", r.peak_gib}};
}

void PrintRow(const char* tag, const LayerRow& r) {
  std::printf("%-7s %5d %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %9.3f %8.1f\n", tag, r.layer, r.weights_s,
              r.t.forward_s, r.t.hessian_s, r.t.factor_s, r.t.recurrence_s, r.t.pack_s, r.t.total_s, r.gpu_pack_s,
              r.peak_gib);
}

// The four layer-input Hessians of one layer's float forward (for the
// textbook comparison: the same H for both implementations).
absl::StatusOr<std::array<at::Tensor, 4>> LayerHessians(const worker::LayerWeights& lw16, const at::Tensor& acts,
                                                        const storage::ModelConfig& cfg,
                                                        const worker::RopeTables& rope) {
  return worker::TorchCall([&]() -> absl::StatusOr<std::array<at::Tensor, 4>> {
    const int64_t ins[4] = {cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size,
                            cfg.intermediate_size};
    std::vector<worker::HessianAccumulator> acc;
    for (int64_t n : ins) acc.emplace_back(n, acts.device());
    for (int64_t b = 0; b < acts.size(0); b += 16) {
      at::Tensor xb = acts.narrow(0, b, std::min<int64_t>(16, acts.size(0) - b));
      worker::LayerForward(xb, lw16, cfg, rope, [&](worker::Tap t, const at::Tensor& v) {
        acc[static_cast<int>(t)].Add(v.reshape({-1, v.size(-1)}));
      }, worker::Tap::kNone);
    }
    std::array<at::Tensor, 4> h;
    for (int t = 0; t < 4; ++t) h[t] = acc[t].Finish(2.0 / static_cast<double>(acc[t].rows()));
    return h;
  }, "textbook comparison: Hessians");
}

absl::Status TextbookComparison(const Flags& f, worker::ModelWeights& model, const at::Tensor& acts,
                                const worker::RopeTables& rope, nlohmann::json* out) {
  const at::Device dev = acts.device();
  const storage::ModelConfig& cfg = model.config();
  worker::QuantParams p = Params(f);
  QF_ASSIGN_OR_RETURN(worker::LayerWeights lw, model.Layer(0));
  QF_ASSIGN_OR_RETURN(worker::LayerWeights lw16, worker::TorchCall([&] { return worker::CastLayerWeights(lw, acts.scalar_type()); }, "cast"));
  QF_ASSIGN_OR_RETURN(auto hess, LayerHessians(lw16, acts, cfg, rope));
  lw16 = worker::LayerWeights();
  std::printf("\ntextbook GPTQ (one column per step, ATen, reference factorization) vs fused, layer 0 of %s\n",
              f.model.c_str());
  std::printf("%-18s %7s %7s | %9s %9s | %9s %9s | %8s %10s\n", "linear", "rows", "cols", "tb factor", "tb gptq",
              "fu factor", "fu gptq", "ratio", "codes diff");
  double tb_f = 0, tb_g = 0, fu_f = 0, fu_g = 0;
  int64_t diff_total = 0, codes_total = 0;
  nlohmann::json rows = nlohmann::json::array();
  for (int id = 0; id < worker::kNumLinears; ++id) {
    const at::Tensor& w = lw.lin[id].w;
    const at::Tensor& h = hess[static_cast<int>(worker::TapOf(static_cast<worker::LinearId>(id)))];
    GptqFastOptions tb;
    tb.impl = GptqImpl::kTextbook;
    tb.reference_factorization = true;
    tb.exact_lazy_update = true;
    worker::GptqPhaseTimes ttb, tfu;
    Sync(dev);
    QF_ASSIGN_OR_RETURN(worker::GptqDeviceResult a, worker::GptqFast(worker::kLinearNames[id], w, h.clone(), p, tb, &ttb));
    QF_ASSIGN_OR_RETURN(worker::GptqDeviceResult b,
                        worker::GptqFast(worker::kLinearNames[id], w, h.clone(), p, GptqFastOptions{}, &tfu));
    QF_ASSIGN_OR_RETURN(int64_t diff, worker::TorchCall([&] { return a.codes.ne(b.codes).sum().item<int64_t>(); }, "diff"));
    diff_total += diff;
    codes_total += w.numel();
    tb_f += ttb.factor_s; tb_g += ttb.recurrence_s; fu_f += tfu.factor_s; fu_g += tfu.recurrence_s;
    std::printf("%-18s %7lld %7lld | %9.3f %9.3f | %9.3f %9.3f | %7.1fx %10.2e\n", worker::kLinearNames[id],
                static_cast<long long>(w.size(0)), static_cast<long long>(w.size(1)), ttb.factor_s, ttb.recurrence_s,
                tfu.factor_s, tfu.recurrence_s, ttb.recurrence_s / tfu.recurrence_s,
                static_cast<double>(diff) / static_cast<double>(w.numel()));
    rows.push_back({{"linear", worker::kLinearNames[id]}, {"textbook_factor_s", ttb.factor_s},
                    {"textbook_gptq_s", ttb.recurrence_s}, {"fused_factor_s", tfu.factor_s},
                    {"fused_gptq_s", tfu.recurrence_s}, {"codes_differing", diff}});
  }
  std::printf("%-18s %15s | %9.3f %9.3f | %9.3f %9.3f | %7.1fx %10.2e\n", "all seven", "", tb_f, tb_g, fu_f, fu_g,
              tb_g / fu_g, static_cast<double>(diff_total) / static_cast<double>(codes_total));
  std::printf("ratio, GPTQ recurrence: %.1fx   factorization + recurrence: %.1fx\n", tb_g / fu_g,
              (tb_f + tb_g) / (fu_f + fu_g));
  (*out)["textbook"] = {{"per_linear", rows},
                        {"textbook_factor_s", tb_f}, {"textbook_gptq_s", tb_g},
                        {"fused_factor_s", fu_f}, {"fused_gptq_s", fu_g},
                        {"ratio_gptq", tb_g / fu_g}, {"ratio_factor_plus_gptq", (tb_f + tb_g) / (fu_f + fu_g)},
                        {"codes_differing_fraction", static_cast<double>(diff_total) / static_cast<double>(codes_total)}};
  return absl::OkStatus();
}

absl::Status RunLayers(const Flags& f) {
  QF_ASSIGN_OR_RETURN(at::Device dev, worker::ParseDevice(f.device));
  QF_ASSIGN_OR_RETURN(auto model, worker::OpenModelWeights(f.model, dev));
  const storage::ModelConfig& cfg = model->config();
  const worker::QuantParams p = Params(f);
  const at::ScalarType dt = dev.is_cuda() ? at::kHalf : at::kFloat;
  const int layers = std::min<int>(f.layers, static_cast<int>(cfg.num_hidden_layers));
  std::printf("model %s: hidden %lld, intermediate %lld, heads %lld/%lld; calibration %d x %d tokens; GPTQ %d-bit "
              "group %d%s; device %s\n",
              f.model.c_str(), static_cast<long long>(cfg.hidden_size), static_cast<long long>(cfg.intermediate_size),
              static_cast<long long>(cfg.num_attention_heads), static_cast<long long>(cfg.num_key_value_heads),
              f.samples, f.seqlen, f.bits, f.group_size, f.act_order ? " act-order" : "", f.device.c_str());
  Clock::time_point t0 = Clock::now();
  at::Tensor acts;
  worker::RopeTables rope;
  {
    QF_ASSIGN_OR_RETURN(at::Tensor embed, model->Embedding());
    std::vector<int32_t> ids = worker::SyntheticCalibrationTokens(cfg.vocab_size, 0, f.samples, f.seqlen);
    QF_RETURN_IF_ERROR(worker::TorchCallStatus([&] {
      at::Tensor idx = at::from_blob(ids.data(), {static_cast<int64_t>(ids.size())}, at::kInt).to(at::kLong).to(dev);
      acts = embed.to(dt).index_select(0, idx).view({f.samples, f.seqlen, cfg.hidden_size});
      rope = worker::MakeRope(cfg, f.seqlen, dev);
      rope.cos = rope.cos.to(dt);
      rope.sin = rope.sin.to(dt);
      return absl::OkStatus();
    }, "calibration activations"));
  }
  Sync(dev);
  std::printf("calibration activations: %.2f GB %s, built in %.2f s\n\n",
              static_cast<double>(acts.numel() * acts.element_size()) / 1e9, c10::toString(dt), Since(t0));
  std::printf("%-7s %5s %8s %8s %8s %8s %8s %8s %8s %9s %8s\n", "", "layer", "weights", "forward", "hessian", "factor",
              "gptq", "pack", "total", "gpu pack", "peak GiB");
  nlohmann::json js = {{"model", f.model}, {"samples", f.samples}, {"seqlen", f.seqlen}, {"bits", f.bits},
                       {"group_size", f.group_size}, {"act_order", f.act_order}};
  nlohmann::json jrows = nlohmann::json::array();
  std::vector<LayerRow> rows;
  for (int layer = 0; layer < layers; ++layer) {
    LayerRow row;
    row.layer = layer;
    ResetPeak(dev);
    Clock::time_point tw = Clock::now();
    QF_ASSIGN_OR_RETURN(worker::LayerWeights lw, model->Layer(layer));
    Sync(dev);
    row.weights_s = Since(tw);
    // What the session's QuantizeLayer does on a GPU: GPTQ of the seven
    // linears, the activations moved through the quantized layer, the norms.
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, worker::GptqLayerFast(layer, std::move(lw), acts, cfg, rope, p,
                                                                      GptqFastOptions{}, /*advance=*/true, nullptr,
                                                                      &row.t));
    Clock::time_point ta = Clock::now();
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      QF_ASSIGN_OR_RETURN(kernels::DenseTensor d, model->Dense(worker::LayerTensorName(layer, n), n));
      r.dense.push_back(std::move(d));
    }
    const double norms_s = Since(ta);
    row.t.pack_s += norms_s;
    row.t.total_s += norms_s;
    row.peak_gib = PeakGpuGiB(dev);
    // GPTQ v1 qweight packing on the GPU (codes uploaded first, not timed).
    std::vector<at::Tensor> dev_codes;
    for (const kernels::QuantizedLinear& q : r.linears) {
      dev_codes.push_back(at::from_blob(const_cast<uint8_t*>(q.codes.data()), {q.out_features, q.in_features}, at::kByte).to(dev));
    }
    Sync(dev);
    Clock::time_point tp = Clock::now();
    for (const at::Tensor& c : dev_codes) {
      QF_ASSIGN_OR_RETURN(at::Tensor packed, worker::PackGptqQweightDevice(c, f.bits));
      (void)packed;
    }
    Sync(dev);
    row.gpu_pack_s = Since(tp);
    PrintRow(layer == 0 ? "first" : "timed", row);
    std::fflush(stdout);
    jrows.push_back(RowJson(row));
    rows.push_back(row);
  }
  if (rows.size() > 1) {
    LayerRow mean;
    mean.layer = static_cast<int>(rows.size()) - 1;
    for (size_t i = 1; i < rows.size(); ++i) {
      const double k = 1.0 / static_cast<double>(rows.size() - 1);
      mean.weights_s += rows[i].weights_s * k;
      mean.t.forward_s += rows[i].t.forward_s * k;
      mean.t.hessian_s += rows[i].t.hessian_s * k;
      mean.t.factor_s += rows[i].t.factor_s * k;
      mean.t.recurrence_s += rows[i].t.recurrence_s * k;
      mean.t.pack_s += rows[i].t.pack_s * k;
      mean.t.total_s += rows[i].t.total_s * k;
      mean.gpu_pack_s += rows[i].gpu_pack_s * k;
      mean.peak_gib = std::max(mean.peak_gib, rows[i].peak_gib);
    }
    PrintRow("mean", mean);
    std::printf("(mean over layers 1..%d; 'layer' column = how many; total excludes weight generation)\n", mean.layer);
    js["mean_after_first"] = RowJson(mean);
  }
  js["layers"] = jrows;
  std::printf("peak GPU memory: %.1f GiB reserved, %.1f GiB allocated; peak host memory %.1f GiB\n", PeakGpuGiB(dev),
              PeakAllocatedGiB(dev), PeakHostGiB());
  if (f.textbook) QF_RETURN_IF_ERROR(TextbookComparison(f, *model, acts, rope, &js));
  if (!f.json.empty()) QF_RETURN_IF_ERROR(WriteFileAtomic(f.json, js.dump(2)));
  return absl::OkStatus();
}

// ---------------------------------------------------------------- e2e

// Packs and writes layer results on its own thread, at most `depth` queued:
// host memory stays bounded by a few layers.
class ShardWriter {
 public:
  // awq: AWQ GEMM packing (else GPTQ v1).
  ShardWriter(std::string dir, size_t depth, bool awq) : dir_(std::move(dir)), depth_(depth), awq_(awq) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~ShardWriter() { Close().IgnoreError(); }
  void Push(kernels::LayerResult r) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return queue_.size() < depth_; });
    queue_.push_back(std::move(r));
    cv_.notify_all();
  }
  absl::Status Close() {
    {
      std::unique_lock<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  double busy_s() const { return busy_s_; }
  int64_t bytes() const { return bytes_; }

 private:
  void Loop() {
    for (;;) {
      kernels::LayerResult r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;
        r = std::move(queue_.front());
        queue_.pop_front();
        cv_.notify_all();
      }
      Clock::time_point t = Clock::now();
      absl::Status s = Write(r);
      busy_s_ += Since(t);
      if (!s.ok() && status_.ok()) status_ = s;
    }
  }
  absl::Status Write(const kernels::LayerResult& r) {
    // The seven linears pack in parallel (the reference packer, CPU).
    std::vector<std::future<absl::StatusOr<kernels::PackedLinear>>> packs;
    for (const kernels::QuantizedLinear& q : r.linears) {
      packs.push_back(std::async(std::launch::async, [&q, awq = awq_] {
        return awq ? kernels::PackAwqGemm(q) : kernels::PackGptqV1(q);
      }));
    }
    std::vector<storage::OwnedTensor> tensors;
    for (size_t i = 0; i < packs.size(); ++i) {
      QF_ASSIGN_OR_RETURN(kernels::PackedLinear p, packs[i].get());
      for (storage::OwnedTensor& t : std::move(p).Take(absl::StrCat("model.layers.", r.layer, ".", r.linears[i].name, "."))) {
        tensors.push_back(std::move(t));
      }
    }
    for (const kernels::DenseTensor& d : r.dense) {
      QF_ASSIGN_OR_RETURN(storage::DType dt, storage::ParseDType(d.dtype));
      tensors.push_back({absl::StrCat("model.layers.", r.layer, ".", d.name), dt, d.shape, d.data});
    }
    for (const auto& t : tensors) bytes_ += static_cast<int64_t>(t.data.size());
    if (dir_.empty()) return absl::OkStatus();
    return storage::WriteFile(absl::StrFormat("%s/model-layer-%05d.safetensors", dir_, r.layer), tensors, {});
  }

  std::string dir_;
  size_t depth_;
  bool awq_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<kernels::LayerResult> queue_;
  bool closed_ = false;
  absl::Status status_;
  double busy_s_ = 0;
  int64_t bytes_ = 0;
  std::thread thread_;
};

absl::Status RunE2e(const Flags& f) {
  Clock::time_point t0 = Clock::now();
  worker::SessionSpec spec;
  spec.model_dir = f.model;
  spec.device = f.device;
  spec.quant = Params(f);
  spec.samples = f.samples;
  spec.seqlen = f.seqlen;
  if (!f.out.empty() && ::mkdir(f.out.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("--out ", f.out, ": cannot create: ", std::strerror(errno)));
  }
  QF_ASSIGN_OR_RETURN(auto session, worker::TorchSession::Open(spec));
  QF_ASSIGN_OR_RETURN(at::Device dev, worker::ParseDevice(f.device));
  Sync(dev);
  const double open_s = Since(t0);
  const int n = session->num_layers();
  std::printf("e2e %s: %d layers, calibration %d x %d, opened in %.1f s\n", f.model.c_str(), n, f.samples, f.seqlen, open_s);
  ShardWriter writer(f.out, 2, f.method == "awq");
  Clock::time_point tq = Clock::now();
  for (int i = 0; i < n; ++i) {
    Clock::time_point tl = Clock::now();
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, session->QuantizeLayer(i, nullptr));
    const double layer_s = Since(tl);
    writer.Push(std::move(r));
    if (i < 3 || i % 10 == 9 || i == n - 1) {
      std::printf("layer %3d: %.2f s (elapsed %.1f s, peak GPU %.1f GiB, peak host %.1f GiB)\n", i, layer_s, Since(t0),
                  PeakGpuGiB(dev), PeakHostGiB());
      std::fflush(stdout);
    }
  }
  const double quant_s = Since(tq);
  QF_RETURN_IF_ERROR(writer.Close());
  const double total_s = Since(t0);
  nlohmann::json js = {{"model", f.model},          {"layers", n},
                       {"samples", f.samples},      {"seqlen", f.seqlen},
                       {"open_s", open_s},          {"quantize_s", quant_s},
                       {"total_s", total_s},        {"writer_busy_s", writer.busy_s()},
                       {"packed_gb", static_cast<double>(writer.bytes()) / 1e9},
                       {"peak_gpu_reserved_gib", PeakGpuGiB(dev)}, {"peak_gpu_allocated_gib", PeakAllocatedGiB(dev)},
                       {"peak_host_gib", PeakHostGiB()}};
  std::printf("e2e total %.1f s (open %.1f, layers %.1f = %.2f s/layer, writer busy %.1f s, %.1f GB packed); peak GPU "
              "%.1f GiB reserved / %.1f allocated; peak host %.1f GiB\n",
              total_s, open_s, quant_s, quant_s / n, writer.busy_s(), static_cast<double>(writer.bytes()) / 1e9,
              PeakGpuGiB(dev), PeakAllocatedGiB(dev), PeakHostGiB());
  if (!f.out.empty()) {
    // The config beside the shards: the model's, with the quantization entry.
    nlohmann::json cfg;
    if (worker::IsSyntheticModel(f.model)) {
      QF_ASSIGN_OR_RETURN(worker::SyntheticSpec ss, worker::ParseSyntheticModel(f.model));
      cfg = worker::SyntheticConfig(ss).raw;
    } else {
      QF_ASSIGN_OR_RETURN(storage::ModelConfig c, storage::LoadModelConfig(f.model));
      cfg = c.raw;
    }
    storage::QuantSpec qs;
    qs.method = f.method;
    qs.format = f.method == "awq" ? "awq" : "gptq";
    qs.bits = f.bits;
    qs.group_size = f.group_size;
    qs.sym = f.sym;
    qs.desc_act = f.act_order && f.group_size != -1;
    cfg["quantization_config"] = storage::QuantizationConfigJson(qs);
    QF_RETURN_IF_ERROR(WriteFileAtomic(f.out + "/config.json", cfg.dump(2)));
  }
  if (!f.json.empty()) QF_RETURN_IF_ERROR(WriteFileAtomic(f.json, js.dump(2)));
  return absl::OkStatus();
}

}  // namespace
}  // namespace qf::bench

extern "C" __attribute__((visibility("default"))) int qf_gptq_bench_main(int argc, char** argv) {
  absl::StatusOr<qf::bench::Flags> f = qf::bench::ParseFlags(argc, argv);
  absl::Status s = f.ok() ? (f->mode == "e2e" ? qf::bench::RunE2e(*f) : qf::bench::RunLayers(*f)) : f.status();
  if (!s.ok()) {
    std::fprintf(stderr, "gptq_layer_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
