#include "worker/engine/gptq_fast.h"

#include <ATen/DeviceAccelerator.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kernels/cuda/gptq/gptq_block.cuh"
#include "worker/engine/quantize.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/weights.h"

#if defined(QF_WITH_CUDA)
#include "kernels/cuda/gptq/gptq_block.h"
#endif

namespace qf::worker {
namespace {

namespace gk = ::qf::kernels::gptq;

// Samples per forward: bounds the attention and MLP working set (16 x 2048
// tokens x 28672 x 2 bytes = 1.9 GB a tensor). Must stay the session's
// (session.cc): cuBLAS may pick another kernel for another M, and the layer's
// output must be a replay's bit for bit.
constexpr int64_t kBatch = 16;
// Below this size the triangular inverse is one triangular solve.
constexpr int64_t kTriInvLeaf = 2048;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

int64_t GroupWidth(const QuantParams& p, int64_t cols) { return p.group_size == -1 ? cols : p.group_size; }

// The CPU twin of the block kernel: the same RecurRow, one row at a time.
template <int B>
void RecurBlockCpu(const gk::BlockArgs& a) {
  float hinv[B * B];
  int32_t groups[B];
  for (int i = 0; i < B; ++i) {
    groups[i] = a.col_group[i < a.count ? i : a.count - 1];
    for (int j = 0; j < B; ++j) {
      hinv[i * B + j] = (i < a.count && j < a.count) ? a.hinv[i * a.ld_h + j] : (i == j ? 1.0f : 0.0f);
    }
  }
  at::parallel_for(0, a.rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float w[B];
      for (int j = 0; j < B; ++j) w[j] = j < a.count ? a.w[r * a.ld_w + j] : 0.0f;
      gk::RecurRow<B>(w, hinv, groups, r, a);
    }
  });
}

bool HasBlockWidth(int b) { return b == 32 || b == 64 || b == 128; }

absl::Status RecurBlockFused(const gk::BlockArgs& a, int block_width, const at::Device& device) {
  if (device.is_cuda()) {
#if defined(QF_WITH_CUDA)
    void* stream = at::accelerator::getCurrentStream(device.index()).native_handle();
    return gk::LaunchGptqBlock(a, block_width, stream);
#else
    return absl::FailedPreconditionError("GPTQ: this engine was built without its CUDA kernels");
#endif
  }
  switch (block_width) {
    case 128: RecurBlockCpu<128>(a); break;
    case 64: RecurBlockCpu<64>(a); break;
    default: RecurBlockCpu<32>(a); break;
  }
  return absl::OkStatus();
}

// One block of the textbook recurrence, as quantize.cc (and the paper's
// gptq.py) compute it: a dozen ATen operations per column.
void RecurBlockTextbook(const at::Tensor& w, const at::Tensor& hinv1, int64_t i1, int64_t count,
                        const std::vector<int32_t>& col_group, const at::Tensor& scales, const at::Tensor& zeros,
                        double maxq, const at::Tensor& codes, const at::Tensor& err, const at::Tensor& losses) {
  at::Tensor w1 = w.narrow(1, i1, count).clone();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t col = i1 + i;
    at::Tensor s = scales[col_group[col]], z = zeros[col_group[col]];
    at::Tensor wc = w1.select(1, i);
    at::Tensor d = hinv1[i][i];
    at::Tensor q = at::clamp(at::round(wc / s) + z, 0, maxq);
    at::Tensor qv = s * (q - z);
    codes.select(1, col).copy_(q);
    at::Tensor e = (wc - qv) / d;
    losses.add_((e * e).to(at::kDouble) / 2);
    w1.narrow(1, i, count - i).sub_(at::outer(e, hinv1[i].narrow(0, i, count - i)));
    err.select(1, i).copy_(e);
  }
}

}  // namespace

// ---------------------------------------------------------------- factorization

namespace {

// Writes L^-1 into `out` (same shape as l, lower triangle; the strict upper
// triangle is left as it is). Recursive 2x2 blocking on a multiple of 256:
//   [A 0; B C]^-1 = [A^-1 0; -C^-1 B A^-1  C^-1]
// Work in place: only one (n/2)^2 temporary per level.
void LowerTriangularInverseInto(const at::Tensor& l, at::Tensor out) {
  const int64_t n = l.size(0);
  if (n <= kTriInvLeaf) {
    out.copy_(at::linalg_solve_triangular(l, at::eye(n, l.options()), /*upper=*/false));
    return;
  }
  const int64_t n1 = std::max<int64_t>(256, (n / 2) / 256 * 256), n2 = n - n1;
  at::Tensor x11 = out.narrow(0, 0, n1).narrow(1, 0, n1);
  at::Tensor x22 = out.narrow(0, n1, n2).narrow(1, n1, n2);
  LowerTriangularInverseInto(l.narrow(0, 0, n1).narrow(1, 0, n1), x11);
  LowerTriangularInverseInto(l.narrow(0, n1, n2).narrow(1, n1, n2), x22);
  at::Tensor b_x11 = at::matmul(l.narrow(0, n1, n2).narrow(1, 0, n1), x11);
  out.narrow(0, n1, n2).narrow(1, 0, n1).copy_(at::matmul(x22, b_x11).neg_());
}

// GPTQ's Hinv, kept as L^-1 where J H J = L L^T (see the header): the upper
// factor is U = J L^-1 J, read a row panel at a time (HinvPanels). Lean on
// memory: the damped J H J is released once its Cholesky factor exists, and
// L once L^-1 is known to be finite (a non-finite L^-1 rebuilds J H J = L L^T
// for the next, more damped try).
absl::StatusOr<at::Tensor> ReversedInverseCholesky(const std::string& name, at::Tensor h, double damp_percent) {
  SingleThreadedOnCpu same_bits_whatever_the_threads(h);
  const double mean_diag = h.diagonal().mean().item<double>();
  at::Tensor hr = h.flip({0, 1});   // J H J: the damping adds to the same diagonal, reversed
  h = at::Tensor();
  // Retries raise the damping of the same matrix; its diagonal then differs
  // from a fresh H + damp * mean by rounding only.
  double applied = 0;
  for (double damp = damp_percent; damp <= 1.0 + 1e-9; damp *= 10) {
    hr.diagonal().add_((damp - applied) * mean_diag);
    applied = damp;
    auto [l, info] = at::linalg_cholesky_ex(hr);
    // L is checked too: a backend may report success for a bad last pivot and
    // leave NaN behind, and a NaN L must not become the next try's J H J.
    if (info.item<int>() == 0 && at::isfinite(l).all().item<bool>()) {
      hr = at::Tensor();
      at::Tensor linv = at::zeros({l.size(0), l.size(1)}, l.options());
      LowerTriangularInverseInto(l, linv);
      if (at::isfinite(linv).all().item<bool>()) {
        if (damp != damp_percent) {
          QF_LOG(WARNING) << name << ": Hessian not positive definite with damp " << damp_percent
                          << "; succeeded with damp " << damp;
        }
        return linv;
      }
      linv = at::Tensor();
      hr = at::matmul(l, l.t());
    }
    QF_LOG(WARNING) << name << ": Cholesky failed with damp " << damp << ", increasing damping";
  }
  return absl::InternalError(absl::StrCat(name, ": GPTQ Hessian could not be factorized even with damp 1.0"));
}

// Row panels U[i1 : i1 + count, i1 :] of GPTQ's Hinv, from either form.
class HinvPanels {
 public:
  // upper: U itself (quantize.cc's InverseCholesky); else L^-1 (U = J L^-1 J).
  HinvPanels(at::Tensor t, bool upper) : t_(std::move(t)), upper_(upper) {}
  // [count, n - i1]: column 0 is U's diagonal column i1.
  at::Tensor Panel(int64_t i1, int64_t count) const {
    const int64_t n = t_.size(0);
    if (upper_) return t_.narrow(0, i1, count).narrow(1, i1, n - i1);
    return t_.narrow(0, n - i1 - count, count).narrow(1, 0, n - i1).flip({0, 1});
  }

 private:
  at::Tensor t_;
  bool upper_;
};

}  // namespace

at::Tensor LowerTriangularInverse(const at::Tensor& l) {
  at::Tensor out = at::zeros({l.size(0), l.size(1)}, l.options());
  LowerTriangularInverseInto(l, out);
  return out;
}

absl::StatusOr<at::Tensor> InverseCholeskyFast(const std::string& name, at::Tensor h, double damp_percent) {
  absl::StatusOr<at::Tensor> linv = ReversedInverseCholesky(name, std::move(h), damp_percent);
  if (!linv.ok()) return linv.status();
  return linv->flip({0, 1});
}

// ---------------------------------------------------------------- Hessian

HessianAccumulator::HessianAccumulator(int64_t n, const at::Device& device, int64_t tile)
    : n_(n), device_(device) {
  // Tiles of 2048 (4096 past 8192 features) keep every product a large GEMM
  // while skipping 40-45% of the work below the diagonal.
  tile_ = tile > 0 ? tile : (n <= 8192 ? 2048 : 4096);
  tile_ = std::min(tile_, n);
  num_tiles_ = (n + tile_ - 1) / tile_;
  tiles_.resize(num_tiles_ * num_tiles_);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  for (int64_t a = 0; a < num_tiles_; ++a) {
    for (int64_t b = a; b < num_tiles_; ++b) {
      tiles_[a * num_tiles_ + b] = at::zeros({std::min(tile_, n - a * tile_), std::min(tile_, n - b * tile_)}, opts);
    }
  }
}

void HessianAccumulator::Add(const at::Tensor& x) {
  const bool half = x.scalar_type() != at::kFloat;
  for (int64_t a = 0; a < num_tiles_; ++a) {
    at::Tensor xa = x.narrow(1, a * tile_, std::min(tile_, n_ - a * tile_)).t();
    for (int64_t b = a; b < num_tiles_; ++b) {
      at::Tensor xb = x.narrow(1, b * tile_, std::min(tile_, n_ - b * tile_));
      // fp16/bf16 operands, fp32 accumulation and output (cuBLAS GemmEx).
      tiles_[a * num_tiles_ + b].add_(half ? at::mm(xa, xb, at::kFloat) : at::mm(xa, xb));
    }
  }
  rows_ += x.size(0);
}

at::Tensor HessianAccumulator::Finish(double scale) {
  at::Tensor h = at::empty({n_, n_}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (int64_t a = 0; a < num_tiles_; ++a) {
    for (int64_t b = a; b < num_tiles_; ++b) {
      at::Tensor& t = tiles_[a * num_tiles_ + b];
      h.narrow(0, a * tile_, t.size(0)).narrow(1, b * tile_, t.size(1)).copy_(t);
      if (b != a) h.narrow(0, b * tile_, t.size(1)).narrow(1, a * tile_, t.size(0)).copy_(t.t());
      t = at::Tensor();
    }
  }
  return h.mul_(scale);
}

// ---------------------------------------------------------------- GPTQ

absl::StatusOr<GptqDeviceResult> GptqFast(const std::string& name, const at::Tensor& w_in, at::Tensor h,
                                          const QuantParams& p, const GptqFastOptions& o, GptqPhaseTimes* times) {
  if (o.impl == GptqImpl::kFused && !HasBlockWidth(p.block_size)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": block_size ", p.block_size,
                                                   " has no fused GPTQ kernel (expected 32, 64 or 128)"));
  }
  const at::Device device = w_in.device();
  return TorchCall([&]() -> absl::StatusOr<GptqDeviceResult> {
    PhaseTimer timer(device, times != nullptr);
    const int64_t rows = w_in.size(0), cols = w_in.size(1), gw = GroupWidth(p, cols);
    const double maxq = std::ldexp(1.0, p.bits) - 1;
    const bool dynamic_groups = p.group_size != -1 && !p.static_groups;
    // Row-major, as the kernel's pointer arithmetic assumes.
    GptqPrepared prep = GptqPrepare(w_in.clone(at::MemoryFormat::Contiguous), std::move(h), p);
    at::Tensor w = std::move(prep.w);
    h = std::move(prep.h);
    at::Tensor scales = std::move(prep.scales), zeros = std::move(prep.zeros);
    at::Tensor perm = std::move(prep.perm), perm_cpu = std::move(prep.perm_cpu);
    const int64_t* perm_p = p.act_order ? perm_cpu.data_ptr<int64_t>() : nullptr;

    absl::StatusOr<at::Tensor> hinv_or = o.reference_factorization
                                             ? InverseCholesky(name, std::move(h), p.damp_percent)
                                             : ReversedInverseCholesky(name, std::move(h), p.damp_percent);
    h = at::Tensor();
    if (!hinv_or.ok()) return hinv_or.status();
    // linalg results can be column-major: the kernel reads rows.
    const HinvPanels hinv(hinv_or->contiguous(), o.reference_factorization);
    hinv_or = at::Tensor();
    if (times) times->factor_s += timer.Lap();

    // Group of each column in processing order.
    std::vector<int32_t> col_group(cols, 0);
    for (int64_t col = 0; col < cols; ++col) {
      if (p.group_size == -1) col_group[col] = 0;
      else if (p.static_groups) col_group[col] = static_cast<int32_t>((perm_p ? perm_p[col] : col) / gw);
      else col_group[col] = static_cast<int32_t>(col / gw);
    }
    at::Tensor col_group_t = at::from_blob(col_group.data(), {cols}, at::kInt).clone().to(device);

    const int64_t bw = p.block_size;
    at::Tensor codes = at::empty({rows, cols}, w.options().dtype(at::kByte));
    at::Tensor losses = at::zeros({rows}, w.options().dtype(at::kDouble));
    at::Tensor err = at::empty({rows, std::min(bw, cols)}, w.options());
    for (int64_t i1 = 0; i1 < cols; i1 += bw) {
      const int64_t i2 = std::min(i1 + bw, cols), count = i2 - i1;
      if (dynamic_groups) {
        // As the reference: parameters from W's columns before this block's
        // in-block updates (W itself only changes by lazy updates).
        for (int64_t col = (i1 + gw - 1) / gw * gw; col < i2; col += gw) {
          at::Tensor s, z;
          MinMaxParams(w.narrow(1, col, gw), p.bits, p.sym, &s, &z, p.zero_at_least_one);
          scales[col / gw] = s;
          zeros[col / gw] = z;
        }
      }
      at::Tensor e1 = err.narrow(1, 0, count);
      const at::Tensor panel = hinv.Panel(i1, count);   // U[i1:i2, i1:]
      if (o.impl == GptqImpl::kTextbook) {
        RecurBlockTextbook(w, panel.narrow(1, 0, count), i1, count, col_group, scales, zeros, maxq, codes, e1, losses);
      } else {
        gk::BlockArgs a;
        a.w = w.data_ptr<float>() + i1;
        a.ld_w = w.stride(0);
        a.hinv = panel.data_ptr<float>();
        a.ld_h = panel.stride(0);
        a.scales = scales.data_ptr<float>();
        a.zeros = zeros.data_ptr<float>();
        a.col_group = col_group_t.data_ptr<int32_t>() + i1;
        a.err = err.data_ptr<float>();
        a.ld_err = err.stride(0);
        a.codes = codes.data_ptr<uint8_t>() + i1;
        a.ld_codes = codes.stride(0);
        a.loss = losses.data_ptr<double>();
        a.rows = rows;
        a.count = static_cast<int>(count);
        a.maxq = static_cast<float>(maxq);
        QF_RETURN_IF_ERROR(RecurBlockFused(a, static_cast<int>(bw), device));
      }
      if (i2 < cols) {
        at::Tensor tail = w.narrow(1, i2, cols - i2);
        at::Tensor hrow = panel.narrow(1, count, cols - i2);
        if (o.exact_lazy_update) {
          tail.sub_(at::matmul(e1, hrow));
        } else {
          tail.addmm_(e1, hrow, /*beta=*/1, /*alpha=*/-1);
        }
      }
    }
    if (times) times->recurrence_s += timer.Lap();

    GptqDeviceResult r;
    std::vector<int64_t> g_idx(cols);
    for (int64_t col = 0; col < cols; ++col) g_idx[perm_p ? perm_p[col] : col] = col_group[col];
    r.g_idx = at::from_blob(g_idx.data(), {cols}, at::kLong).clone().to(device);
    r.contiguous_groups = ContiguousGroups(g_idx.data(), cols, scales.size(0));
    r.codes = p.act_order ? codes.index_select(1, at::argsort(perm)) : codes;
    r.scales = scales;
    r.zeros = zeros;
    r.row_loss = losses;
    r.desc_act = p.act_order && p.group_size != -1 && !p.static_groups;
    if (times) times->finish_s += timer.Lap();
    return r;
  }, absl::StrCat(name, ": GPTQ"));
}

kernels::QuantizedLinear ToQuantizedLinear(const std::string& name, const QuantParams& p, const GptqDeviceResult& r,
                                           int64_t row_begin, int64_t rows, const at::Tensor& bias) {
  return MakeQuantizedLinear(name, p, r.desc_act, r.codes.narrow(0, row_begin, rows), r.scales.narrow(1, row_begin, rows),
                             r.zeros.narrow(1, row_begin, rows), r.g_idx, bias);
}

at::Tensor DequantizeDevice(const GptqDeviceResult& r) {
  // DequantizeToTensor's arithmetic (torch_util.h), so the same bits.
  return DequantizeInPlace(r.codes.to(at::kFloat), r.scales, r.zeros, r.g_idx, r.contiguous_groups);
}

// ---------------------------------------------------------------- a layer

namespace {

// One decoder layer's GPTQ on the fast path: the forward copies of the
// weights, the results so far, and the phase times.
class LayerQuantizer {
 public:
  LayerQuantizer(int layer, LayerWeights lw, const at::Tensor& acts, const storage::ModelConfig& cfg,
                 const RopeTables& rope, const QuantParams& p, const GptqFastOptions& o,
                 const LayerProgressFn& progress, GptqLayerTimes* times)
      : layer_(layer), lw_(std::move(lw)), acts_(acts), cfg_(cfg), rope_(rope), p_(p), o_(o), progress_(progress),
        times_(times), device_(lw_.lin[0].w.device()), dt_(acts.scalar_type()), timer_(device_, times != nullptr) {}

  // Forward copies in the compute dtype; the float32 originals feed GPTQ.
  // Biases are rounded to fp16 as the result stores them, so that the layer's
  // output is the one a replay of the result computes.
  void Init() {
    cur_.input_norm = lw_.input_norm.to(dt_);
    cur_.post_norm = lw_.post_norm.to(dt_);
    for (int id = 0; id < kNumLinears; ++id) {
      cur_.lin[id].w = lw_.lin[id].w.to(dt_);
      if (lw_.lin[id].b.defined()) cur_.lin[id].b = RoundToHalf(lw_.lin[id].b).to(dt_);
    }
  }

  // Runs body(b, n) over the samples in batches; `what` names the stage in errors.
  absl::Status ForEachBatch(int64_t batch, const std::string& what, const std::function<void(int64_t, int64_t)>& body) {
    return TorchCallStatus([&] {
      timer_.Mark();
      const double hess_before = hess_s_;
      for (int64_t b = 0; b < acts_.size(0); b += batch) body(b, std::min(batch, acts_.size(0) - b));
      if (times_) times_->forward_s += timer_.Lap() - (hess_s_ - hess_before);
      return absl::OkStatus();
    }, absl::StrCat("layer ", layer_, ": ", what));
  }

  const at::Device& device() const { return device_; }

  // Rows [b, b + n) of the activations or a cache on the compute device.
  at::Tensor In(const at::Tensor& t, int64_t b, int64_t n) const { return RowsOn(t, b, n, device_); }

  // acc += x^T x, timed as Hessian work.
  void AddToHessian(HessianAccumulator& acc, const at::Tensor& x) {
    PhaseTimer t(device_, times_ != nullptr);
    acc.Add(x.reshape({-1, x.size(-1)}));
    const double s = t.Lap();
    hess_s_ += s;
    if (times_) times_->hessian_s += s;
  }

  absl::StatusOr<HessianAccumulator> NewAccumulator(LinearId id) {
    return TorchCall([&] { return HessianAccumulator(lw_.lin[id].w.size(1), device_); },
                     absl::StrCat("layer ", layer_, ": Hessian of ", kLinearNames[id]));
  }

  // GPTQ of the linears `ids`, which share the input whose X^T X `acc` holds:
  // one matrix with their rows stacked (they share H^-1).
  absl::Status Quantize(HessianAccumulator& acc, const std::vector<LinearId>& ids) {
    std::string name = LayerTensorName(layer_, kLinearNames[ids[0]]);
    for (size_t k = 1; k < ids.size(); ++k) absl::StrAppend(&name, "+", kLinearNames[ids[k]]);
    at::Tensor h, w;
    std::vector<int64_t> row_begin, row_count;
    timer_.Mark();
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      h = acc.Finish(2.0 / static_cast<double>(acc.rows()));
      std::vector<at::Tensor> parts;
      int64_t r0 = 0;
      for (LinearId id : ids) {
        row_begin.push_back(r0);
        row_count.push_back(lw_.lin[id].w.size(0));
        r0 += lw_.lin[id].w.size(0);
        parts.push_back(lw_.lin[id].w);
      }
      w = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
      for (LinearId id : ids) lw_.lin[id].w = at::Tensor();
      return absl::OkStatus();
    }, absl::StrCat(name, ": Hessian")));
    if (times_) times_->hessian_s += timer_.Lap();
    GptqPhaseTimes pt;
    QF_ASSIGN_OR_RETURN(GptqDeviceResult res, GptqFast(name, w, std::move(h), p_, o_, times_ ? &pt : nullptr));
    w = at::Tensor();
    if (times_) {
      times_->factor_s += pt.factor_s;
      times_->recurrence_s += pt.recurrence_s;
      times_->pack_s += pt.finish_s;
      timer_.Mark();
    }
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      at::Tensor deq = DequantizeDevice(res);
      for (size_t k = 0; k < ids.size(); ++k) {
        const LinearId id = ids[k];
        out_[id] = ToQuantizedLinear(kLinearNames[id], p_, res, row_begin[k], row_count[k], lw_.lin[id].b);
        errors_[id] = res.row_loss.narrow(0, row_begin[k], row_count[k]).sum().item<double>();
        cur_.lin[id].w = deq.narrow(0, row_begin[k], row_count[k]).to(dt_);
      }
      return absl::OkStatus();
    }, absl::StrCat(name, ": results")));
    if (times_) times_->pack_s += timer_.Lap();
    for (size_t k = 0; k < ids.size(); ++k) {
      if (progress_) progress_(kLinearNames[ids[k]], ++done_, kNumLinears);
    }
    return absl::OkStatus();
  }

  // True-sequential: q/k/v, then o, then gate/up, then down, each from the
  // activations of the layer with the linears before it already quantized.
  // Each linear's product is computed once: the attention output and then the
  // residual stream after attention are kept ([samples, seqlen, hidden] in the
  // compute dtype, 4.3 GB at 70B scale) instead of recomputing q/k/v and
  // attention for every later group.
  absl::Status Sequential(bool advance) {
    const double eps = cfg_.rms_norm_eps;
    at::Tensor cache;   // attention output (o_proj's input), then the residual after attention
    {
      QF_ASSIGN_OR_RETURN(HessianAccumulator acc, NewAccumulator(kQ));
      QF_RETURN_IF_ERROR(ForEachBatch(kBatch, "q/k/v calibration forward", [&](int64_t b, int64_t n) {
        AddToHessian(acc, RmsNorm(In(acts_, b, n), cur_.input_norm, eps));
      }));
      QF_RETURN_IF_ERROR(Quantize(acc, {kQ, kK, kV}));
    }
    {
      QF_ASSIGN_OR_RETURN(HessianAccumulator acc, NewAccumulator(kO));
      QF_RETURN_IF_ERROR(ForEachBatch(kBatch, "o_proj calibration forward", [&](int64_t b, int64_t n) {
        at::Tensor h = RmsNorm(In(acts_, b, n), cur_.input_norm, eps);
        AttentionForward(h, cur_, cfg_, rope_, [&](Tap t, const at::Tensor& a) {
          if (t != Tap::kOIn) return;
          if (!cache.defined()) cache = EmptyBeside(acts_, {acts_.size(0), a.size(1), a.size(2)}, a.scalar_type(), device_);
          cache.narrow(0, b, n).copy_(a);
          AddToHessian(acc, a);
        });
      }));
      QF_RETURN_IF_ERROR(Quantize(acc, {kO}));
    }
    {
      QF_ASSIGN_OR_RETURN(HessianAccumulator acc, NewAccumulator(kGate));
      // The residual after attention, y = x + o(a): the same operations as
      // LayerForward, so the same bits as a replay.
      at::Tensor ys = cache.size(2) == acts_.size(2) ? cache : at::Tensor();
      QF_RETURN_IF_ERROR(ForEachBatch(kBatch, "gate/up calibration forward", [&](int64_t b, int64_t n) {
        at::Tensor attn = at::matmul(In(cache, b, n), cur_.lin[kO].w.t());
        if (cur_.lin[kO].b.defined()) attn = attn + cur_.lin[kO].b;
        at::Tensor y = In(acts_, b, n) + attn;
        if (!ys.defined()) ys = EmptyBeside(acts_, acts_.sizes(), acts_.scalar_type(), device_);
        ys.narrow(0, b, n).copy_(y);
        AddToHessian(acc, RmsNorm(y, cur_.post_norm, eps));
      }));
      cache = ys;
      QF_RETURN_IF_ERROR(Quantize(acc, {kGate, kUp}));
    }
    {
      QF_ASSIGN_OR_RETURN(HessianAccumulator acc, NewAccumulator(kDown));
      // Half batches: the [tokens, intermediate] temporaries are the largest.
      QF_RETURN_IF_ERROR(ForEachBatch(kBatch / 2, "down_proj calibration forward", [&](int64_t b, int64_t n) {
        at::Tensor h2 = RmsNorm(In(cache, b, n), cur_.post_norm, eps);
        at::Tensor g = at::matmul(h2, cur_.lin[kGate].w.t());
        if (cur_.lin[kGate].b.defined()) g = g + cur_.lin[kGate].b;
        at::Tensor u = at::matmul(h2, cur_.lin[kUp].w.t());
        if (cur_.lin[kUp].b.defined()) u = u + cur_.lin[kUp].b;
        AddToHessian(acc, SwiGlu(g, u));
      }));
      QF_RETURN_IF_ERROR(Quantize(acc, {kDown}));
    }
    if (!advance) return absl::OkStatus();
    // The layer's output from the kept residual: y + mlp(RmsNorm(y)), as LayerForward.
    return ForEachBatch(kBatch, "forward through the quantized layer", [&](int64_t b, int64_t n) {
      at::Tensor y = In(cache, b, n);
      at::Tensor out = y + MlpForward(RmsNorm(y, cur_.post_norm, eps), cur_, nullptr);
      acts_.narrow(0, b, n).copy_(out);
    });
  }

  // Not true-sequential: every Hessian from one float forward.
  absl::Status AllAtOnce(bool advance) {
    std::array<std::optional<HessianAccumulator>, 4> acc;
    for (LinearId id : {kQ, kO, kGate, kDown}) {
      QF_ASSIGN_OR_RETURN(HessianAccumulator a, NewAccumulator(id));
      acc[static_cast<int>(TapOf(id))].emplace(std::move(a));
    }
    QF_RETURN_IF_ERROR(ForEachBatch(kBatch, "calibration forward", [&](int64_t b, int64_t n) {
      LayerForward(In(acts_, b, n), cur_, cfg_, rope_,
                   [&](Tap t, const at::Tensor& v) { AddToHessian(*acc[static_cast<int>(t)], v); }, Tap::kNone);
    }));
    QF_RETURN_IF_ERROR(Quantize(*acc[static_cast<int>(Tap::kAttnIn)], {kQ, kK, kV}));
    QF_RETURN_IF_ERROR(Quantize(*acc[static_cast<int>(Tap::kOIn)], {kO}));
    QF_RETURN_IF_ERROR(Quantize(*acc[static_cast<int>(Tap::kMlpIn)], {kGate, kUp}));
    QF_RETURN_IF_ERROR(Quantize(*acc[static_cast<int>(Tap::kDownIn)], {kDown}));
    if (!advance) return absl::OkStatus();
    return ForEachBatch(kBatch, "forward through the quantized layer", [&](int64_t b, int64_t n) {
      acts_.narrow(0, b, n).copy_(LayerForward(In(acts_, b, n), cur_, cfg_, rope_, nullptr, Tap::kNone));
    });
  }

  kernels::LayerResult Result() {
    kernels::LayerResult r;
    r.layer = layer_;
    for (auto& q : out_) r.linears.push_back(std::move(q));
    r.errors = std::move(errors_);
    return r;
  }

 private:
  const int layer_;
  LayerWeights lw_;
  LayerWeights cur_;
  const at::Tensor& acts_;
  const storage::ModelConfig& cfg_;
  const RopeTables& rope_;
  const QuantParams& p_;
  const GptqFastOptions& o_;
  const LayerProgressFn& progress_;
  GptqLayerTimes* times_;
  const at::Device device_;
  const at::ScalarType dt_;
  PhaseTimer timer_;
  double hess_s_ = 0;
  int done_ = 0;
  std::array<kernels::QuantizedLinear, kNumLinears> out_;
  std::vector<double> errors_ = std::vector<double>(kNumLinears, 0);
};

}  // namespace

absl::StatusOr<kernels::LayerResult> GptqLayerFast(int layer, LayerWeights lw, const at::Tensor& acts,
                                                   const storage::ModelConfig& cfg, const RopeTables& rope,
                                                   const QuantParams& p, const GptqFastOptions& o, bool advance,
                                                   const LayerProgressFn& progress, GptqLayerTimes* times) {
  Clock::time_point t_start = Clock::now();
  LayerQuantizer lq(layer, std::move(lw), acts, cfg, rope, p, o, progress, times);
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    lq.Init();
    return absl::OkStatus();
  }, absl::StrCat("layer ", layer, ": forward weights")));
  QF_RETURN_IF_ERROR(p.true_sequential ? lq.Sequential(advance) : lq.AllAtOnce(advance));
  if (times) {
    Sync(lq.device());
    times->total_s += Seconds(t_start, Clock::now());
  }
  return lq.Result();
}

// ---------------------------------------------------------------- packing

absl::StatusOr<at::Tensor> PackGptqQweightDevice(const at::Tensor& codes, int bits) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ pack: bits ", bits, ", expected 2, 3, 4 or 8"));
  }
  const int64_t n = codes.size(0), k = codes.size(1);
  if (k % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ pack: in_features ", k, ", expected a multiple of 32"));
  }
  return TorchCall([&] {
    // Chunks of 32 channels become `bits` words: channel j of a chunk sits at
    // stream bit j * bits; a code straddling two words is split (bits = 3).
    at::Tensor c = codes.t().to(at::kLong).reshape({k / 32, 32, n});  // [chunks, 32, N]
    std::vector<at::Tensor> words;
    for (int t = 0; t < bits; ++t) {
      at::Tensor word = at::zeros({k / 32, n}, c.options());
      for (int j = 0; j < 32; ++j) {
        const int lo = j * bits - 32 * t;   // the code's first bit relative to word t
        if (lo >= 32 || lo + bits <= 0) continue;
        at::Tensor cj = c.select(1, j);
        word.add_(lo >= 0 ? at::bitwise_and(at::bitwise_left_shift(cj, lo), 0xffffffffLL)
                          : at::bitwise_right_shift(cj, -lo));
      }
      words.push_back(word);
    }
    at::Tensor packed = at::stack(words, 1).reshape({k / 32 * bits, n});   // [K * bits / 32, N]
    // Two's complement view of the unsigned 32-bit words.
    packed = at::where(packed >= (int64_t{1} << 31), packed - (int64_t{1} << 32), packed);
    return packed.to(at::kInt).contiguous();
  }, "GPTQ pack");
}

}  // namespace qf::worker
