#include "worker/engine/awq.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "worker/engine/quantize.h"
#include "worker/engine/torch_util.h"

namespace qf::worker {
namespace {

// Samples per forward, to bound the attention working set. Must equal
// session.cc's kBatch: the statistics forward doubles as the layer's advance
// and has to produce the replay's bits.
constexpr int64_t kBatch = 16;
// Tokens kept for the clip search (AutoAWQ's n_sample_token) and its shrink steps.
constexpr int64_t kClipTokens = 512;
constexpr int kClipSteps = 10;  // max shrink 0.5 over a 20-point grid
// Bound on one clip-search buffer ([groups, rows, tokens] float32): rows are
// taken in chunks so a 28672-row gate_proj does not need 3.8 GB per buffer.
constexpr int64_t kClipBufferElems = int64_t{1} << 27;   // 512 MiB

int64_t GroupWidth(int64_t group_size, int64_t cols) { return group_size == -1 ? cols : group_size; }

// One scaling group: linears whose input channels get multiplied by s.
struct ScaleGroup {
  std::vector<LinearId> linears;   // scaled along their input channels
  Tap input;                       // where their input comes from
  // The block whose output judges a candidate s: maps the (unscaled) group
  // input to the block output with the candidate weights.
  std::function<at::Tensor(const at::Tensor&, const LayerWeights&)> block;
};

// What the float forward leaves for the search: per tap, the sum of |x| over
// every calibration token (float32, for s) and the tap's values on the search
// samples (compute dtype, for the losses and the clip search).
struct TapStats {
  at::Tensor abs_sum[4];
  at::Tensor search[4];   // [search samples, seqlen, features]
  int64_t tokens = 0;
};

// Whole samples the grid search is judged on: every `stride`-th one, at most
// search_tokens / seqlen of them (at least one).
struct SearchSubset {
  int64_t stride = 1, count = 0;
  bool Contains(int64_t sample) const { return sample % stride == 0 && sample / stride < count; }
};

SearchSubset ChooseSubset(int64_t samples, int64_t seqlen, int64_t search_tokens) {
  SearchSubset s;
  s.count = std::clamp<int64_t>(search_tokens / seqlen, 1, samples);
  s.stride = samples / s.count;
  return s;
}

// acts <- float layer(acts), batch by batch, gathering TapStats on the way.
TapStats ForwardWithStats(at::Tensor& acts, const LayerWeights& lwc, const storage::ModelConfig& cfg,
                          const RopeTables& rope, const SearchSubset& subset) {
  TapStats st;
  std::vector<at::Tensor> kept[4];
  const at::Device device = lwc.lin[0].w.device();   // acts may sit in pinned host memory
  for (int64_t b = 0; b < acts.size(0); b += kBatch) {
    const int64_t n = std::min(kBatch, acts.size(0) - b);
    std::vector<int64_t> local;
    for (int64_t i = 0; i < n; ++i) if (subset.Contains(b + i)) local.push_back(i);
    at::Tensor pick = at::tensor(at::ArrayRef<int64_t>(local), at::kLong).to(device);
    acts.narrow(0, b, n).copy_(LayerForward(RowsOn(acts, b, n, device), lwc, cfg, rope, [&](Tap t, const at::Tensor& v) {
      const int ti = static_cast<int>(t);
      at::Tensor s = v.reshape({-1, v.size(-1)}).abs().sum({0}, /*keepdim=*/false, at::kFloat);
      st.abs_sum[ti] = st.abs_sum[ti].defined() ? st.abs_sum[ti] + s : s;
      if (!local.empty()) kept[ti].push_back(v.index_select(0, pick));
    }, Tap::kNone));
    st.tokens += n * acts.size(1);
  }
  for (int t = 0; t < 4; ++t) st.search[t] = at::cat(kept[t], 0);
  return st;
}

// Sum over the search samples of (block(x, ref) - block(x, cand))^2 in float32,
// as a 0-dim device tensor (no host sync per candidate).
at::Tensor BlockLoss(const ScaleGroup& g, const at::Tensor& in, const std::vector<at::Tensor>& ref,
                     const LayerWeights& cand) {
  at::Tensor loss = at::zeros({}, in.options().dtype(at::kFloat));
  for (int64_t b = 0, i = 0; b < in.size(0); b += kBatch, ++i) {
    at::Tensor out = g.block(in.narrow(0, b, std::min(kBatch, in.size(0) - b)), cand);
    loss = loss + (ref[i].to(at::kFloat) - out.to(at::kFloat)).pow(2).sum();
  }
  return loss;
}

// The best clip of each group's max |w| for w [rows, cols] given inputs xs
// [T, cols] (float32): w clamped to the chosen +-max per (row, group).
at::Tensor ClipSearch(const at::Tensor& w, const at::Tensor& xs, const QuantParams& p) {
  const int64_t rows = w.size(0), cols = w.size(1), gw = GroupWidth(p.group_size, cols), ng = cols / gw;
  const int64_t t = xs.size(0);
  at::Tensor xg = xs.reshape({t, ng, gw}).permute({1, 2, 0});                 // [ng, gw, T]
  const int64_t chunk = std::max<int64_t>(1, kClipBufferElems / (ng * t));
  std::vector<at::Tensor> clipped;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t rn = std::min(chunk, rows - r0);
    at::Tensor wr = w.narrow(0, r0, rn);
    at::Tensor wg = wr.reshape({rn, ng, gw}).transpose(0, 1);                 // [ng, rn, gw]
    at::Tensor org_out = at::bmm(wg, xg);                                     // [ng, rn, T]
    at::Tensor org_max = wg.abs().amax(-1, true);                             // [ng, rn, 1]
    at::Tensor best_max = org_max.clone();
    at::Tensor min_err = at::full({ng, rn, 1}, 1e30, w.options());
    for (int i = 0; i < kClipSteps; ++i) {
      at::Tensor mx = org_max * (1.0 - static_cast<double>(i) / (2 * kClipSteps));
      at::Tensor cw = at::clamp(wg, -mx, mx);                                  // [ng, rn, gw]
      at::Tensor qw = AwqPseudoQuantize(cw.transpose(0, 1).reshape({rn, cols}), p.bits, p.group_size,
                                        p.zero_at_least_one, nullptr, nullptr, nullptr)
                          .reshape({rn, ng, gw}).transpose(0, 1);
      at::Tensor err = (at::bmm(qw, xg) - org_out).pow(2).mean(-1, true);     // [ng, rn, 1]
      at::Tensor better = err < min_err;
      min_err = at::where(better, err, min_err);
      best_max = at::where(better, mx, best_max);
    }
    clipped.push_back(at::clamp(wg, -best_max, best_max).transpose(0, 1).reshape({rn, cols}));
  }
  return clipped.size() == 1 ? clipped[0] : at::cat(clipped, 0);
}

}  // namespace

at::Tensor AwqPseudoQuantize(const at::Tensor& w, int bits, int64_t group_size, int min_zero, at::Tensor* codes,
                             at::Tensor* scales, at::Tensor* zeros) {
  const int64_t rows = w.size(0), cols = w.size(1), gw = GroupWidth(group_size, cols);
  const double maxq = std::ldexp(1.0, bits) - 1;
  at::Tensor wg = w.reshape({rows, cols / gw, gw});
  // One pass for both extremes, and the code chain in place: the same
  // operations in the same order as max/min and out-of-place ops, so the same
  // bits, with a third of the memory traffic (this runs 20 times per scaling
  // group in the grid search and 10 times per linear in the clip search).
  auto [mn, mx] = at::aminmax(wg, -1, /*keepdim=*/true);
  at::Tensor s = RoundToHalf(at::clamp_min((mx - mn), 1e-5) / maxq);
  at::Tensor z = at::clamp(-at::round(mn / s), min_zero, maxq);
  at::Tensor c = at::div(wg, s).round_().add_(z).clamp_(0, maxq);
  if (codes) *codes = c.reshape({rows, cols});
  if (scales) *scales = s.squeeze(-1).t().contiguous();   // [groups, rows]
  if (zeros) *zeros = z.squeeze(-1).t().contiguous();
  return ((c - z) * s).reshape({rows, cols});
}

absl::StatusOr<kernels::LayerResult> AwqQuantizeLayer(int layer, LayerWeights lw, at::Tensor& acts,
                                                      const storage::ModelConfig& cfg, const RopeTables& rope,
                                                      const QuantParams& p, const std::string& norm_dtype,
                                                      const LayerProgressFn& progress) {
  std::string where = absl::StrCat("layer ", layer, ": AWQ");
  return TorchCall([&]() -> absl::StatusOr<kernels::LayerResult> {
    const at::ScalarType dt = acts.scalar_type();
    const SearchSubset subset = ChooseSubset(acts.size(0), acts.size(1), p.awq_search_tokens);
    // QF_ENGINE_PROFILE=1: per-phase times in the log (each boundary syncs the device).
    static const bool kProfile = [] {
      const char* e = std::getenv("QF_ENGINE_PROFILE");
      return e != nullptr && *e != '\0' && std::string(e) != "0";
    }();
    PhaseTimer timer(lw.lin[0].w.device(), kProfile);
    double t_forward = 0, t_scale_quant = 0, t_block = 0, t_fold = 0, t_clip = 0, t_pack = 0;
    // 1. The float forward: advances the activations (AWQ feeds the next layer
    //    the float layer's output) and leaves the statistics of every tap.
    TapStats st = ForwardWithStats(acts, CastLayerWeights(lw, dt), cfg, rope, subset);
    t_forward = timer.Lap();

    const bool v_to_o = lw.lin[kV].w.size(0) == lw.lin[kO].w.size(1);
    std::vector<ScaleGroup> groups = {
        {{kQ, kK, kV}, Tap::kAttnIn,
         [&](const at::Tensor& in, const LayerWeights& w) { return AttentionForward(in, w, cfg, rope, nullptr); }},
    };
    if (v_to_o) {
      groups.push_back({{kO}, Tap::kOIn, [&](const at::Tensor& in, const LayerWeights& w) {
                          return at::matmul(in, w.lin[kO].w.t());
                        }});
    }
    groups.push_back({{kGate, kUp}, Tap::kMlpIn,
                      [&](const at::Tensor& in, const LayerWeights& w) { return MlpForward(in, w, nullptr); }});
    groups.push_back({{kDown}, Tap::kDownIn, [&](const at::Tensor& in, const LayerWeights& w) {
                        return at::matmul(in, w.lin[kDown].w.t());
                      }});

    // 2. Grid search of the scale exponent per group, each on the original
    //    weights. Candidates are quantized in float32 and run in the compute dtype.
    const int total_steps = static_cast<int>(groups.size()) + kNumLinears;
    int step = 0;
    const LayerWeights lwc = CastLayerWeights(lw, dt);
    std::vector<at::Tensor> best_scales;
    for (const ScaleGroup& g : groups) {
      const at::Tensor& in = st.search[static_cast<int>(g.input)];
      at::Tensor x_mean = st.abs_sum[static_cast<int>(g.input)] / static_cast<double>(st.tokens);
      // Per input channel mean of |w| normalised by its group's max |w|, over
      // every linear of the group (only used with duo scaling).
      at::Tensor w_mean;
      if (p.awq_duo_scaling) {
        std::vector<at::Tensor> ws;
        for (LinearId id : g.linears) ws.push_back(lw.lin[id].w);
        at::Tensor w = at::cat(ws, 0);
        const int64_t gw = GroupWidth(p.group_size, w.size(1));
        at::Tensor wg = w.abs().reshape({-1, gw});
        w_mean = (wg / (wg.amax(1, true) + 1e-6)).reshape(w.sizes()).mean(0);
      }
      std::vector<at::Tensor> ref;
      for (int64_t b = 0; b < in.size(0); b += kBatch) ref.push_back(g.block(in.narrow(0, b, std::min(kBatch, in.size(0) - b)), lwc));
      t_block += timer.Lap();
      std::vector<at::Tensor> scales, losses;
      for (int i = 0; i < p.awq_grid; ++i) {
        double ratio = static_cast<double>(i) / p.awq_grid;
        at::Tensor s = p.awq_duo_scaling ? at::clamp_min(x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4), 1e-4)
                                         : at::clamp_min(x_mean.pow(ratio), 1e-4);
        s = s / at::sqrt(s.max() * s.min());
        LayerWeights cand = lwc;
        for (LinearId id : g.linears) {
          at::Tensor ws = lw.lin[id].w * s.unsqueeze(0);
          cand.lin[id].w = (AwqPseudoQuantize(ws, p.bits, p.group_size, p.zero_at_least_one, nullptr, nullptr, nullptr) /
                            s.unsqueeze(0)).to(dt);
        }
        t_scale_quant += timer.Lap();
        losses.push_back(BlockLoss(g, in, ref, cand));
        t_block += timer.Lap();
        scales.push_back(s);
      }
      // First minimum, as a strict '<' scan would pick.
      best_scales.push_back(scales[at::stack(losses).argmin().item<int64_t>()]);
      if (progress) progress("awq-scale", ++step, total_steps);
    }

    // 3. Fold the scales into the previous op; the inputs seen by the scaled
    //    linears shrink by the same factor (used by the clip search).
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const ScaleGroup& g = groups[gi];
      const at::Tensor& s = best_scales[gi];
      switch (g.input) {
        case Tap::kAttnIn: lw.input_norm = lw.input_norm / s; break;
        case Tap::kMlpIn: lw.post_norm = lw.post_norm / s; break;
        case Tap::kOIn:
          lw.lin[kV].w = lw.lin[kV].w / s.unsqueeze(1);
          if (lw.lin[kV].b.defined()) lw.lin[kV].b = lw.lin[kV].b / s;
          break;
        case Tap::kDownIn:
          lw.lin[kUp].w = lw.lin[kUp].w / s.unsqueeze(1);
          if (lw.lin[kUp].b.defined()) lw.lin[kUp].b = lw.lin[kUp].b / s;
          break;
        default: break;
      }
      for (LinearId id : g.linears) lw.lin[id].w = lw.lin[id].w * s.unsqueeze(0);
      at::Tensor& f = st.search[static_cast<int>(g.input)];
      f = f / s.to(dt);
    }
    // The folded norms are stored in the checkpoint's dtype: use exactly those values.
    at::ScalarType norm_st = norm_dtype == "BF16" ? at::kBFloat16 : norm_dtype == "F32" ? at::kFloat : at::kHalf;
    lw.input_norm = lw.input_norm.to(norm_st).to(at::kFloat);
    lw.post_norm = lw.post_norm.to(norm_st).to(at::kFloat);

    t_fold = timer.Lap();
    // 4 + 5. Clip search (q/k skipped: the softmax hides their error), then
    //        quantization with zero points.
    kernels::LayerResult result;
    result.layer = layer;
    for (int id = 0; id < kNumLinears; ++id) {
      at::Tensor w = lw.lin[id].w;
      const int64_t cols = w.size(1), gw = GroupWidth(p.group_size, cols);
      if (id != kQ && id != kK) {
        at::Tensor in = st.search[static_cast<int>(TapOf(static_cast<LinearId>(id)))].reshape({-1, cols});
        const int64_t stride = std::max<int64_t>(1, in.size(0) / kClipTokens);
        w = ClipSearch(w, in.slice(0, 0, in.size(0), stride).to(at::kFloat), p);
      }
      t_clip += timer.Lap();
      at::Tensor codes, scales, zeros;
      AwqPseudoQuantize(w, p.bits, p.group_size, p.zero_at_least_one, &codes, &scales, &zeros);
      at::Tensor g_idx = at::div(at::arange(cols, at::kLong), gw, "floor");
      result.linears.push_back(MakeQuantizedLinear(kLinearNames[id], p, false, codes, scales, zeros, g_idx,
                                                   lw.lin[id].b));
      t_pack += timer.Lap();
      if (progress) progress("awq-quantize", ++step, total_steps);
    }
    auto dense = [&](const char* name, const at::Tensor& t) {
      kernels::DenseTensor d;
      d.name = name;
      d.dtype = norm_dtype;
      d.shape = {t.size(0)};
      d.data = TensorBytes(t, norm_st);
      return d;
    };
    result.dense.push_back(dense("input_layernorm.weight", lw.input_norm));
    result.dense.push_back(dense("post_attention_layernorm.weight", lw.post_norm));
    if (timer.on()) {
      QF_LOG(INFO) << where << " phases (s): statistics forward " << t_forward << ", grid: candidate quantization "
                   << t_scale_quant << " + block forwards " << t_block << " (" << subset.count << " samples), fold "
                   << t_fold << ", clip search " << t_clip << ", codes to host " << t_pack;
    }
    return result;
  }, where);
}

}  // namespace qf::worker
