// File: worker/engine/engine_host.h
//
// Host-side handle to the numeric engine. The engine (libtorch, CUDA, our
// kernels) lives in libqf_engine.so behind dlopen(RTLD_NOW | RTLD_LOCAL): the
// PyPI libtorch exports its own std::filesystem and protobuf symbols, which
// must stay out of the global scope of a process that holds gRPC (DESIGN.md).
// This header is plain C++ and absl only; it never includes torch.
//
// A Session holds the calibration activations at the input of one decoder
// layer (`next_layer()`); each call moves them one layer forward:
//
//   QF_ASSIGN_OR_RETURN(auto engine, qf::worker::Engine::Load());
//   QF_ASSIGN_OR_RETURN(auto session, engine->OpenSession(spec));   // embeddings of the calibration batch
//   for (int i = 0; i < session->num_layers(); ++i) {
//     QF_ASSIGN_OR_RETURN(qf::kernels::LayerResult r, session->QuantizeLayer(i, on_progress));
//     // r is final: a replay with ApplyLayer(r) reproduces the same activations bit for bit.
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/verify_vocab.h"
#include "kernels/quant_types.h"
#include "worker/engine/activation_link.h"

namespace qf::worker {

// What libqf_engine.so's qf_engine_abi_version() must return: bumped whenever
// this header changes shape (2: Engine::Verify; 3: activation hand-off;
// 4: VerifySpec::dtype; 5: EvalSpec::stop, VerifySpec::stop; 6: SetCpuThreads).
inline constexpr int kEngineAbiVersion = 6;

// Polled between units of work (a layer of an evaluation, a linear, a timed
// shape): true makes the call return Cancelled promptly (a worker that is
// stopping, or lost its lease). Empty: never.
using StopFn = std::function<bool()>;

// What to quantize and how. Mirrors the job spec (proto/) field for field.
struct QuantParams {
  std::string method = "gptq";     // "gptq" | "awq" | "rtn"
  int bits = 4;                    // 2, 3, 4, 8
  int group_size = 128;            // -1 = per row
  bool sym = false;
  bool act_order = false;          // GPTQ desc_act
  bool static_groups = false;      // GPTQ: groups fixed before act-order permutation
  bool true_sequential = true;     // GPTQ: qkv -> o -> gate/up -> down inside a layer
  double damp_percent = 0.01;      // GPTQ: fraction of mean(diag(H)) added to the diagonal
  int block_size = 128;            // GPTQ lazy-update block
  int awq_grid = 20;               // AWQ: points of the scale-exponent grid
  // AWQ: candidate scales s = mean|x|^a / mean|w_normalised|^(1-a) (AutoAWQ's
  // "duo scaling") instead of the paper's s = mean|x|^a. Same grid, same loss.
  bool awq_duo_scaling = true;
  // AWQ: calibration tokens (whole samples, evenly spaced) on which the scale
  // grid and the clip search are judged; mean |x| uses every token. The grid
  // costs awq_grid block forwards over these tokens, which dominates a 70B
  // layer's time.
  int64_t awq_search_tokens = 65536;
  // Asymmetric zero points kept >= 1: GPTQ v1 stores zero - 1 in an unsigned
  // field, so 0 does not survive (readers that convert v1 -> v2 carry it into
  // the neighbouring field). Set for the gptq format.
  bool zero_at_least_one = false;
};

struct SessionSpec {
  std::string model_dir;           // HF checkpoint directory
  std::string device = "cpu";      // "cpu" | "cuda" | "cuda:N"
  QuantParams quant;
  int samples = 0;                 // calibration windows
  int seqlen = 0;                  // tokens per window
  std::vector<int32_t> calib_tokens;  // samples * seqlen ids, row-major
  // CUDA: keep the calibration activations (samples x seqlen x hidden in the
  // compute dtype: 4.3 GB for 128 x 2048 at 70B) in pinned host memory and
  // stream them through the GPU batch by batch, for GPUs too small to hold
  // them next to a layer. Same bits as device-resident activations.
  bool host_activations = false;
};

// Progress inside one layer: which linear is being worked on, 0..total.
using LayerProgressFn = std::function<void(const std::string& stage, int done, int total)>;

class Session {
 public:
  virtual ~Session() = default;
  virtual int num_layers() const = 0;
  // The layer whose input the activations currently are.
  virtual int next_layer() const = 0;

  // Quantizes layer next_layer() from the current activations, then moves the
  // activations through the quantized (dequantized-weight) layer. Errors:
  // FailedPrecondition if `layer != next_layer()`; InvalidArgument for NaN/Inf
  // weights or a group size that does not divide the input features (naming the
  // tensor); ResourceExhausted on out-of-memory (naming the layer and size).
  virtual absl::StatusOr<kernels::LayerResult> QuantizeLayer(int layer, const LayerProgressFn& progress) = 0;

  // Replay: moves the activations through a committed result of layer
  // next_layer(). Same bits as QuantizeLayer's own forward.
  virtual absl::Status ApplyLayer(const kernels::LayerResult& result) = 0;

  // Moves the activations through the original (unquantized) layer: parallel mode.
  virtual absl::Status ForwardOriginalLayer(int layer) = 0;

  // Parallel-mode hand-off (activation_link.h). A copy of the activations
  // moved through the original layers next_layer()..end_layer-1, with
  // ForwardOriginalLayer's bits; the session itself does not move.
  // Unimplemented where the engine has no hand-off.
  virtual absl::StatusOr<std::unique_ptr<BoundaryActivations>> ForwardOriginalCopy(int end_layer) {
    return absl::UnimplementedError("activation hand-off: not implemented by this engine");
  }
  // Takes activations at the input of `layer` from `link` (BoundaryActivations::Send
  // of the peer) as the session's own; next_layer() is then `layer`. On an
  // error the session is unchanged (DataLoss when the header disagrees).
  virtual absl::Status ReceiveActivations(int layer, ActivationLink* link) {
    return absl::UnimplementedError("activation hand-off: not implemented by this engine");
  }
};

struct EvalSpec {
  std::string model_dir;           // an HF checkpoint or a qforge artifact
  std::string device = "cpu";
  int seqlen = 512;
  std::vector<int32_t> tokens;     // chunks * seqlen ids (worker/calibration.h BuildEvalTokens)
  std::string logits_out;          // optional: safetensors with "tokens" I32 [seqlen] and "logits" F32 [seqlen, vocab] of chunk 0
  StopFn stop;                     // polled after each layer
};

struct EvalResult {
  double ppl = 0;
  double nll_sum = 0;
  int64_t predicted_tokens = 0;    // chunks * (seqlen - 1)
  int64_t chunks = 0;
  double seconds = 0;
};

using EvalProgressFn = std::function<void(int done, int total)>;

// `qctl verify` / a job's verify stage (worker/engine/verify.h): the fused
// W4A16 GEMM (kernels/cuda/w4a16.h; its CPU twin kernels/ref/w4a16_ref.h on
// the CPU) against dequantize + matmul for every linear of an artifact, its
// throughput against FP16 cuBLAS on the model's own shapes (GPU only), and
// perplexity through the fused path against the dequantized path.
struct VerifySpec {
  std::string artifact_dir;
  std::string device = "cpu";              // "cpu" | "cuda" | "cuda:N"
  std::vector<int64_t> check_ms = {1, 16, 64};         // rows of A per linear check
  std::vector<int64_t> timing_ms = {1, 16, 64, 256};   // rows of A per timed shape
  int iters = 40;                          // timed calls per (shape, M): the median is reported
  int warmup = 5;
  // Perplexity, optional (empty tokens: not measured): ids as EvalSpec's.
  int seqlen = 512;
  std::vector<int32_t> tokens;
  std::string text;                        // where the tokens came from, for the report
  // The fused path's element type (common/verify_vocab.h: kVerifyDTypes): its
  // activations, scales and outputs, and the cuBLAS baseline's weights and
  // activations.
  std::string dtype = "fp16";
  // Polled after each linear, timed (shape, M) and perplexity layer: a
  // 70B artifact takes minutes, and a worker asked to stop gives the stage
  // back instead of finishing it.
  StopFn stop;
};

// One quantized linear of the artifact.
struct VerifyLinear {
  std::string tensor;                      // "model.layers.3.mlp.down_proj"
  int64_t k = 0, n = 0;                    // in_features, out_features
  std::string status;                      // "ok" | "fail" | "unsupported"
  // max over check_ms of ||C_fused - C_ref|| / ||C_ref|| (inf when the fused
  // output is not finite); unset (-1) when unsupported.
  double max_rel_err = -1;
  double threshold = 0;
  std::string detail;                      // why unsupported / failed; empty when ok
};

// One timed (K, N, M): the fused GEMM against cuBLAS (FP16 or BF16, as the
// fused path) on the same run.
struct VerifyTiming {
  int64_t k = 0, n = 0, m = 0;
  std::string linears;                     // short names with this shape, "q_proj,o_proj"
  std::string variant;                     // the kernel variant that ran
  double fused_us = 0, cublas_us = 0;      // CUDA-event medians, L2 flushed before each call
};

struct VerifyPerplexity {
  bool measured = false;
  std::string note;                        // why not measured
  std::string text;
  int seqlen = 0;
  int64_t chunks = 0;
  double fused = 0, dequant = 0;
  double rel_diff = 0;                     // |fused - dequant| / dequant
  double tolerance = 0;
  bool passed = true;
};

struct VerifyReport {
  std::string artifact_dir;
  std::string device;                      // as resolved, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
  std::string dtype;                       // VerifySpec::dtype
  std::string format;                      // "gptq" | "awq"
  int bits = 0;
  int group_size = 0;
  bool sym = false;
  bool desc_act = false;
  std::vector<int64_t> check_ms;
  std::vector<VerifyLinear> linears;       // layer-major, canonical linear order
  bool timing_measured = false;
  std::string timing_note;                 // why not measured
  int iters = 0;
  std::vector<VerifyTiming> timings;
  VerifyPerplexity ppl;
  std::string verdict;                     // common/verify_vocab.h: kVerifyVerdicts
  std::string failure;                     // first failure, one line naming the tensor; empty unless failed
  double seconds = 0;
};

// Progress: stage ("layers": the checks and both perplexity forwards of a
// layer; then "throughput"), done, total.
using VerifyProgressFn = std::function<void(const std::string& stage, int done, int total)>;

class Engine {
 public:
  // dlopens libqf_engine.so (common/dl_module.h search order). Unavailable with
  // the loader's message if it cannot be found or its ABI version differs.
  // cpu_threads sizes libtorch's CPU pool; 0: OMP_NUM_THREADS when set, else
  // the CPUs this process may use (common/cpu_budget.h: CpuThreadsFor).
  static absl::StatusOr<std::unique_ptr<Engine>> Load(int cpu_threads = 0);
  virtual ~Engine() = default;

  // The intra-op CPU threads of every later call (process-wide: libtorch has
  // one pool). Load() calls it; test doubles need not.
  virtual void SetCpuThreads(int n) {}
  virtual int cpu_threads() const { return 0; }

  virtual absl::StatusOr<std::unique_ptr<Session>> OpenSession(const SessionSpec& spec) = 0;
  virtual absl::StatusOr<EvalResult> Evaluate(const EvalSpec& spec, const EvalProgressFn& progress) = 0;
  // A report whose verdict says whether the artifact passed; errors only for
  // what stops the run: NotFound / DataLoss / InvalidArgument from reading the
  // artifact (storage::ReadArtifact, naming the file or tensor), bad device or
  // tokens (InvalidArgument), CUDA asked for without one (FailedPrecondition).
  // Not virtual-pure so that test doubles of the engine need not implement it.
  virtual absl::StatusOr<VerifyReport> Verify(const VerifySpec& spec, const VerifyProgressFn& progress) {
    return absl::UnimplementedError("verify: not implemented by this engine");
  }

  // NCCL for the activation hand-off (CUDA builds with a loadable libnccl;
  // NCCL_NVLS_ENABLE is forced to 0 before NCCL starts). Unavailable, saying
  // why, where there is none: the worker then replays.
  // A fresh unique id (the rank-0 side makes it; the coordinator relays it).
  virtual absl::StatusOr<std::string> NcclUniqueId() {
    return absl::UnavailableError("NCCL is not compiled into this engine");
  }
  // Joins the 2-rank communicator of spec.unique_id; blocks until the peer
  // joined (DeadlineExceeded after spec.timeout_ms, everything torn down).
  virtual absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectNccl(const NcclLinkSpec& spec) {
    return absl::UnavailableError("NCCL is not compiled into this engine");
  }
  // Names the physical device of `device` for pairing ("<host>/<pci bus id>"):
  // two workers with the same key cannot form an NCCL pair. Unavailable for
  // the CPU.
  virtual absl::StatusOr<std::string> DeviceKey(const std::string& device) {
    return absl::UnavailableError(absl::StrCat("device ", device, ": no activation hand-off"));
  }
};

}  // namespace qf::worker
