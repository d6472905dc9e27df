// File: worker/engine/decoder.h
//
// One Llama-family decoder layer in libtorch, matching HF transformers'
// LlamaDecoderLayer / MistralDecoderLayer / Qwen2DecoderLayer in float32:
//
//   x ─ RMSNorm(in) ─[tap kAttnIn]─ q,k,v ─ RoPE ─ causal GQA SDPA ─[tap kOIn]─ o ─(+x)─┐
//   ┌────────────────────────────────────────────────────────────────────────────────┘
//   └ RMSNorm(post) ─[tap kMlpIn]─ gate,up ─ silu(gate)*up ─[tap kDownIn]─ down ─(+)─> y
//
// Taps hand the input of each group of linears (the tensor GPTQ builds its
// Hessian from and AWQ takes its statistics from) to a callback; `stop` ends
// the forward right after a tap when the rest is not needed.
//
//   LayerWeights lw = ...;  RopeTables rope = MakeRope(cfg, seqlen, dev);
//   at::Tensor y = LayerForward(x, lw, cfg, rope, nullptr, Tap::kNone);
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <string>

#include "storage/model_config.h"

namespace qf::worker {

// The seven linears of a layer, in canonical order (also the order of
// LayerResult::linears).
enum LinearId { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumLinears };
inline constexpr std::array<const char*, kNumLinears> kLinearNames = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

struct LinearWeights {
  at::Tensor w;  // [out, in] float32
  at::Tensor b;  // [out] float32, undefined when the linear has no bias
  // When set, the linear is this function of its input [..., in] -> [..., out]
  // (bias included) and w, b are unused: the fused quantized GEMM of
  // worker/engine/fused_linear.h runs in place of a dense matmul.
  std::function<at::Tensor(const at::Tensor&)> apply;
};

struct LayerWeights {
  at::Tensor input_norm;   // [hidden]
  at::Tensor post_norm;    // [hidden]
  std::array<LinearWeights, kNumLinears> lin;
};

// Where a forward can report (and stop after) the input of a linear group.
enum class Tap { kNone = -1, kAttnIn = 0, kOIn, kMlpIn, kDownIn };
using TapFn = std::function<void(Tap, const at::Tensor&)>;

// The linears fed by each tap, and the tap feeding each linear.
Tap TapOf(LinearId id);

struct RopeTables {
  at::Tensor cos;  // [seqlen, head_dim]
  at::Tensor sin;  // [seqlen, head_dim]
};

// cos/sin tables for positions 0..seqlen-1, with the config's rope scaling
// ("default", "linear", "llama3") computed as transformers does (float32).
RopeTables MakeRope(const storage::ModelConfig& cfg, int64_t seqlen, const at::Device& device);

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// x: [batch, seqlen, hidden] -> same shape. Throws c10::Error on shape errors.
at::Tensor LayerForward(const at::Tensor& x, const LayerWeights& lw, const storage::ModelConfig& cfg,
                        const RopeTables& rope, const TapFn& tap, Tap stop);

// Attention block alone: normed input [b, s, hidden] -> o_proj output (no residual).
at::Tensor AttentionForward(const at::Tensor& h, const LayerWeights& lw, const storage::ModelConfig& cfg,
                            const RopeTables& rope, const TapFn& tap);
// silu(gate) * up. On the CPU as gate / (1 + exp(-gate)) * up: ATen's
// vectorized silu and its scalar tail differ in the last bit, and where a
// thread's share of the elements ends depends on the thread count (measured:
// 4 of 786432 elements differ between 1 and 5 threads, 7 between 1 and 7;
// exp, add, div and mul do not differ), so a CPU worker's bytes would depend
// on its CPU count. CUDA keeps at::silu.
at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up);

// MLP block alone: normed input -> down_proj output (no residual).
at::Tensor MlpForward(const at::Tensor& h, const LayerWeights& lw, const TapFn& tap);

// The weights in dtype `dt` (the forward's compute dtype); float32 returns lw.
LayerWeights CastLayerWeights(const LayerWeights& lw, at::ScalarType dt);

}  // namespace qf::worker
