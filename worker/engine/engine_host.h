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
#include "kernels/quant_types.h"

namespace qf::worker {

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
};

struct EvalSpec {
  std::string model_dir;           // an HF checkpoint or a qforge artifact
  std::string device = "cpu";
  int seqlen = 512;
  std::vector<int32_t> tokens;     // chunks * seqlen ids (worker/calibration.h BuildEvalTokens)
  std::string logits_out;          // optional: safetensors with "tokens" I32 [seqlen] and "logits" F32 [seqlen, vocab] of chunk 0
};

struct EvalResult {
  double ppl = 0;
  double nll_sum = 0;
  int64_t predicted_tokens = 0;    // chunks * (seqlen - 1)
  int64_t chunks = 0;
  double seconds = 0;
};

using EvalProgressFn = std::function<void(int done, int total)>;

class Engine {
 public:
  // dlopens libqf_engine.so (common/dl_module.h search order). Unavailable with
  // the loader's message if it cannot be found or its ABI version differs.
  static absl::StatusOr<std::unique_ptr<Engine>> Load();
  virtual ~Engine() = default;

  virtual absl::StatusOr<std::unique_ptr<Session>> OpenSession(const SessionSpec& spec) = 0;
  virtual absl::StatusOr<EvalResult> Evaluate(const EvalSpec& spec, const EvalProgressFn& progress) = 0;
};

}  // namespace qf::worker
