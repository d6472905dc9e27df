#include "worker/engine/quantize.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "worker/engine/torch_util.h"

namespace qf::worker {
namespace {

// Smallest positive fp16 subnormal: a scale below it would round to 0.
constexpr double kMinHalfScale = 5.960464477539063e-08;

int64_t GroupWidth(const QuantParams& p, int64_t cols) { return p.group_size == -1 ? cols : p.group_size; }

}  // namespace

void MinMaxParams(const at::Tensor& w, int bits, bool sym, at::Tensor* scale, at::Tensor* zero, int min_zero) {
  const double maxq = std::ldexp(1.0, bits) - 1;
  at::Tensor xmin = at::clamp_max(std::get<0>(w.min(1)), 0);
  at::Tensor xmax = at::clamp_min(std::get<0>(w.max(1)), 0);
  if (sym) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  at::Tensor both_zero = (xmin == 0).logical_and(xmax == 0);
  xmin = at::where(both_zero, at::full_like(xmin, -1), xmin);
  xmax = at::where(both_zero, at::full_like(xmax, 1), xmax);
  *scale = at::clamp_min(RoundToHalf(at::clamp_min((xmax - xmin) / maxq, kMinHalfScale)), kMinHalfScale);
  if (sym) {
    *zero = at::full_like(*scale, std::ldexp(1.0, bits - 1));
  } else {
    *zero = at::clamp(at::round(-xmin / *scale), min_zero, maxq);
  }
}

at::Tensor QuantCodes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int bits) {
  const double maxq = std::ldexp(1.0, bits) - 1;
  return at::clamp(at::round(w / scale) + zero, 0, maxq);
}

kernels::QuantizedLinear MakeQuantizedLinear(const std::string& name, const QuantParams& p, bool desc_act,
                                             const at::Tensor& codes, const at::Tensor& scales,
                                             const at::Tensor& zeros, const at::Tensor& g_idx,
                                             const at::Tensor& bias) {
  kernels::QuantizedLinear q;
  q.name = name;
  q.bits = p.bits;
  q.group_size = p.group_size;
  q.sym = p.sym;
  q.desc_act = desc_act;
  q.out_features = codes.size(0);
  q.in_features = codes.size(1);
  q.num_groups = scales.size(0);
  // Bytes on the codes' device first (a quarter of float32's), then through
  // page-locked memory: the largest copy of a layer's result (one byte per
  // weight) runs at the link's speed, not the pageable path's.
  at::Tensor c = codes.to(at::kByte);
  if (c.is_cuda()) {
    at::Tensor staged = at::empty(c.sizes(), c.options().device(at::kCPU).pinned_memory(true));
    staged.copy_(c);
    c = staged;
  }
  c = c.contiguous();
  q.codes.assign(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
  at::Tensor s = scales.to(at::kCPU).to(at::kHalf).contiguous();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(s.data_ptr());
  q.scales.assign(sp, sp + s.numel());
  at::Tensor z = zeros.to(at::kCPU).to(at::kByte).contiguous();
  q.zeros.assign(z.data_ptr<uint8_t>(), z.data_ptr<uint8_t>() + z.numel());
  at::Tensor g = g_idx.to(at::kCPU).to(at::kInt).contiguous();
  q.g_idx.assign(g.data_ptr<int32_t>(), g.data_ptr<int32_t>() + g.numel());
  if (bias.defined()) {
    at::Tensor b = bias.to(at::kCPU).to(at::kHalf).contiguous();
    const uint16_t* bp = reinterpret_cast<const uint16_t*>(b.data_ptr());
    q.bias.assign(bp, bp + b.numel());
  }
  return q;
}

absl::StatusOr<kernels::QuantizedLinear> RtnQuantize(const std::string& name, const at::Tensor& w,
                                                     const at::Tensor& bias, const QuantParams& p) {
  return TorchCall([&] {
    const int64_t rows = w.size(0), cols = w.size(1), gw = GroupWidth(p, cols);
    const int64_t groups = cols / gw;
    at::Tensor codes = at::empty_like(w);
    at::Tensor scales = at::empty({groups, rows}, w.options());
    at::Tensor zeros = at::empty({groups, rows}, w.options());
    for (int64_t g = 0; g < groups; ++g) {
      at::Tensor wg = w.narrow(1, g * gw, gw);
      at::Tensor s, z;
      MinMaxParams(wg, p.bits, p.sym, &s, &z, p.zero_at_least_one);
      codes.narrow(1, g * gw, gw).copy_(QuantCodes(wg, s.unsqueeze(1), z.unsqueeze(1), p.bits));
      scales[g] = s;
      zeros[g] = z;
    }
    at::Tensor g_idx = at::div(at::arange(cols, at::kLong), gw, "floor");
    return MakeQuantizedLinear(name, p, false, codes, scales, zeros, g_idx, bias);
  }, absl::StrCat(name, ": RTN"));
}

// Upper Cholesky factor of H^-1 (GPTQ's Hinv). Adds damp * mean(diag(H)) to the
// diagonal; when the factorization fails (H not positive definite in float32),
// multiplies damp by 10 and retries, with a warning, up to damp = 1.
absl::StatusOr<at::Tensor> InverseCholesky(const std::string& name, at::Tensor h, double damp_percent) {
  SingleThreadedOnCpu same_bits_whatever_the_threads(h);
  const double mean_diag = h.diagonal().mean().item<double>();
  for (double damp = damp_percent; damp <= 1.0 + 1e-9; damp *= 10) {
    at::Tensor hd = h.clone();
    hd.diagonal().add_(damp * mean_diag);
    auto [l, info] = at::linalg_cholesky_ex(hd);
    if (info.item<int>() == 0) {
      at::Tensor hinv = at::cholesky_inverse(l);
      auto [u, info2] = at::linalg_cholesky_ex(hinv, /*upper=*/true);
      if (info2.item<int>() == 0 && at::isfinite(u).all().item<bool>()) {
        if (damp != damp_percent) {
          QF_LOG(WARNING) << name << ": Hessian not positive definite with damp " << damp_percent
                          << "; succeeded with damp " << damp;
        }
        return u;
      }
    }
    QF_LOG(WARNING) << name << ": Cholesky failed with damp " << damp << ", increasing damping";
  }
  return absl::InternalError(absl::StrCat(name, ": GPTQ Hessian could not be factorized even with damp 1.0"));
}

GptqPrepared GptqPrepare(at::Tensor w, at::Tensor h, const QuantParams& p) {
  const int64_t rows = w.size(0), cols = w.size(1), gw = GroupWidth(p, cols);
  const int64_t groups = cols / gw;
  GptqPrepared r;
  // Dead inputs (never active in calibration): any value works, zero them.
  {
    at::Tensor dead = h.diagonal() == 0;
    h.diagonal().masked_fill_(dead, 1);
    w.masked_fill_(dead.unsqueeze(0), 0);
  }
  r.scales = at::empty({groups, rows}, w.options());
  r.zeros = at::empty({groups, rows}, w.options());
  if (p.group_size == -1 || p.static_groups) {
    // Parameters fixed up front, on the natural column order.
    for (int64_t g = 0; g < groups; ++g) {
      at::Tensor s, z;
      MinMaxParams(w.narrow(1, g * gw, gw), p.bits, p.sym, &s, &z, p.zero_at_least_one);
      r.scales[g] = s;
      r.zeros[g] = z;
    }
  }
  if (p.act_order) {
    r.perm = at::argsort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    w = w.index_select(1, r.perm);
    h = h.index_select(0, r.perm).index_select(1, r.perm);
    r.perm_cpu = r.perm.to(at::kCPU).contiguous();
  }
  r.w = std::move(w);
  r.h = std::move(h);
  return r;
}

absl::StatusOr<kernels::QuantizedLinear> GptqQuantize(const std::string& name, const at::Tensor& w_in,
                                                      const at::Tensor& bias, const at::Tensor& h_in,
                                                      const QuantParams& p, double* loss) {
  try {
    const int64_t rows = w_in.size(0), cols = w_in.size(1), gw = GroupWidth(p, cols);
    const double maxq = std::ldexp(1.0, p.bits) - 1;
    GptqPrepared prep = GptqPrepare(w_in.clone(), h_in.clone(), p);
    at::Tensor w = prep.w;
    at::Tensor h = prep.h;
    at::Tensor scales = prep.scales, zeros = prep.zeros, perm = prep.perm;
    at::Tensor cur_scale, cur_zero;
    at::Tensor invperm;
    if (p.act_order) invperm = at::argsort(perm);

    auto hinv_or = InverseCholesky(name, h, p.damp_percent);
    if (!hinv_or.ok()) return hinv_or.status();
    at::Tensor hinv = *hinv_or;

    at::Tensor q_codes = at::zeros_like(w);
    at::Tensor losses = at::zeros({rows}, w.options().dtype(at::kDouble));
    // Column j (in processing order) -> group index; filled as groups are formed.
    std::vector<int64_t> col_group(cols, 0);
    const int64_t* perm_p = p.act_order ? prep.perm_cpu.data_ptr<int64_t>() : nullptr;

    for (int64_t i1 = 0; i1 < cols; i1 += p.block_size) {
      const int64_t i2 = std::min(i1 + p.block_size, cols), count = i2 - i1;
      at::Tensor w1 = w.narrow(1, i1, count).clone();
      at::Tensor err1 = at::zeros_like(w1);
      at::Tensor hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t col = i1 + i;
        const int64_t orig_col = perm_p ? perm_p[col] : col;
        int64_t g;
        if (p.group_size == -1) {
          g = 0;
        } else if (p.static_groups) {
          g = orig_col / gw;
        } else {
          g = col / gw;
          if (col % gw == 0) {
            // As in the reference: parameters from the not-yet-updated-in-block columns of W.
            at::Tensor s, z;
            MinMaxParams(w.narrow(1, col, gw), p.bits, p.sym, &s, &z, p.zero_at_least_one);
            scales[g] = s;
            zeros[g] = z;
          }
        }
        col_group[col] = g;
        cur_scale = scales[g];
        cur_zero = zeros[g];
        at::Tensor wc = w1.select(1, i);
        at::Tensor d = hinv1[i][i];
        at::Tensor codes = at::clamp(at::round(wc / cur_scale) + cur_zero, 0, maxq);
        at::Tensor qv = cur_scale * (codes - cur_zero);
        q_codes.select(1, col).copy_(codes);
        at::Tensor e = (wc - qv) / d;
        losses += (e * e).to(at::kDouble) / 2;
        w1.narrow(1, i, count - i).sub_(at::outer(e, hinv1[i].narrow(0, i, count - i)));
        err1.select(1, i).copy_(e);
      }
      if (i2 < cols) w.narrow(1, i2, cols - i2).sub_(at::matmul(err1, hinv.narrow(0, i1, count).narrow(1, i2, cols - i2)));
    }

    // g_idx maps each original input channel to its group.
    at::Tensor g_idx = at::empty({cols}, at::kLong);
    int64_t* gp = g_idx.data_ptr<int64_t>();
    for (int64_t col = 0; col < cols; ++col) gp[perm_p ? perm_p[col] : col] = col_group[col];
    if (p.act_order) q_codes = q_codes.index_select(1, invperm);
    if (loss) *loss = losses.sum().item<double>();
    const bool desc_act = p.act_order && p.group_size != -1 && !p.static_groups;
    return MakeQuantizedLinear(name, p, desc_act, q_codes, scales, zeros, g_idx, bias);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(name, ": GPTQ: ", e.what_without_backtrace()));
  }
}

}  // namespace qf::worker
