#include "worker/engine/decoder.h"

#include <cmath>

namespace qf::worker {
namespace {

at::Tensor Linear(const at::Tensor& x, const LinearWeights& l) {
  if (l.apply) return l.apply(x);
  at::Tensor y = at::matmul(x, l.w.t());
  if (l.b.defined()) y = y + l.b;
  return y;
}

// HF's rotate_half: [-x2, x1] on the two halves of the head dimension.
at::Tensor RotateHalf(const at::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

Tap TapOf(LinearId id) {
  static constexpr Tap kTaps[kNumLinears] = {Tap::kAttnIn, Tap::kAttnIn, Tap::kAttnIn, Tap::kOIn,
                                             Tap::kMlpIn,  Tap::kMlpIn,  Tap::kDownIn};
  return kTaps[id];
}

RopeTables MakeRope(const storage::ModelConfig& cfg, int64_t seqlen, const at::Device& device) {
  const int64_t d = cfg.head_dim;
  at::Tensor inv_freq =
      1.0 / at::pow(cfg.rope.theta, at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<double>(d));
  const auto& r = cfg.rope;
  if (r.type == "linear") {
    inv_freq = inv_freq / r.factor;
  } else if (r.type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths are divided by
    // `factor`, short ones kept, the band between blended smoothly. A scalar
    // over a tensor is written as Python evaluates it (torch.Tensor.__rtruediv__:
    // the tensor's reciprocal times the scalar), not as ATen's C++ operator/,
    // which divides: the two differ in the last bit of the blended band's
    // frequencies, and the logits then by ~1e-4 (engine_hf_logits_llama3_rope).
    double old_ctx = static_cast<double>(r.original_max_position_embeddings);
    double low_wavelen = old_ctx / r.low_freq_factor;
    double high_wavelen = old_ctx / r.high_freq_factor;
    at::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
    at::Tensor smooth = (wavelen.reciprocal() * old_ctx - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    at::Tensor medium = at::logical_not(wavelen < high_wavelen).logical_and(at::logical_not(wavelen > low_wavelen));
    inv_freq = at::where(medium, smoothed, scaled);
  }
  at::Tensor pos = at::arange(seqlen, at::kLong).to(at::kFloat);
  at::Tensor freqs = at::outer(pos, inv_freq);           // [seqlen, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);           // [seqlen, d]
  return RopeTables{emb.cos().to(device), emb.sin().to(device)};
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (x.scalar_type() != at::kFloat) {
    // Half-precision forward (GPU): normalize in float32, round once, as
    // transformers does (x^2 alone can overflow fp16).
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
    return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
  }
  at::Tensor var = x.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x * at::rsqrt(var + eps));
}

at::Tensor AttentionForward(const at::Tensor& h, const LayerWeights& lw, const storage::ModelConfig& cfg,
                            const RopeTables& rope, const TapFn& tap) {
  const int64_t b = h.size(0), s = h.size(1);
  const int64_t nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim;
  at::Tensor q = Linear(h, lw.lin[kQ]).view({b, s, nh, hd}).transpose(1, 2);   // [b, nh, s, hd]
  at::Tensor k = Linear(h, lw.lin[kK]).view({b, s, nkv, hd}).transpose(1, 2);  // [b, nkv, s, hd]
  at::Tensor v = Linear(h, lw.lin[kV]).view({b, s, nkv, hd}).transpose(1, 2);
  at::Tensor cos = rope.cos.narrow(0, 0, s), sin = rope.sin.narrow(0, 0, s);
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  at::Tensor a = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                  /*is_causal=*/true, 1.0 / std::sqrt(static_cast<double>(hd)),
                                                  /*enable_gqa=*/nkv != nh);
  a = a.transpose(1, 2).reshape({b, s, nh * hd});                               // [b, s, nh*hd]
  if (tap) tap(Tap::kOIn, a);
  return Linear(a, lw.lin[kO]);
}

at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up) {
  if (!gate.device().is_cpu()) return at::silu(gate) * up;
  return gate / (at::exp(-gate) + 1) * up;
}

at::Tensor MlpForward(const at::Tensor& h, const LayerWeights& lw, const TapFn& tap) {
  at::Tensor m = SwiGlu(Linear(h, lw.lin[kGate]), Linear(h, lw.lin[kUp]));
  if (tap) tap(Tap::kDownIn, m);
  return Linear(m, lw.lin[kDown]);
}

at::Tensor LayerForward(const at::Tensor& x, const LayerWeights& lw, const storage::ModelConfig& cfg,
                        const RopeTables& rope, const TapFn& tap, Tap stop) {
  at::Tensor h = RmsNorm(x, lw.input_norm, cfg.rms_norm_eps);
  if (tap) tap(Tap::kAttnIn, h);
  if (stop == Tap::kAttnIn) return {};
  at::Tensor attn = AttentionForward(h, lw, cfg, rope, tap);
  if (stop == Tap::kOIn) return {};
  at::Tensor y = x + attn;
  at::Tensor h2 = RmsNorm(y, lw.post_norm, cfg.rms_norm_eps);
  if (tap) tap(Tap::kMlpIn, h2);
  if (stop == Tap::kMlpIn) return {};
  return y + MlpForward(h2, lw, tap);
}

LayerWeights CastLayerWeights(const LayerWeights& lw, at::ScalarType dt) {
  if (dt == at::kFloat) return lw;
  LayerWeights o;
  o.input_norm = lw.input_norm.to(dt);
  o.post_norm = lw.post_norm.to(dt);
  for (int id = 0; id < kNumLinears; ++id) {
    o.lin[id].apply = lw.lin[id].apply;
    if (lw.lin[id].w.defined()) o.lin[id].w = lw.lin[id].w.to(dt);
    if (lw.lin[id].b.defined()) o.lin[id].b = lw.lin[id].b.to(dt);
  }
  return o;
}

}  // namespace qf::worker
