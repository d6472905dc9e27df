// File: worker/engine/quantize.h
//
// Per-linear quantization algorithms on float32 tensors:
//   - RtnQuantize:  round-to-nearest with per-group min/max (the baseline);
//   - GptqQuantize: GPTQ (Frantar et al. 2022, arXiv:2210.17323, Alg. 1) with
//     lazy block updates, act-order, static groups, dead columns and damping
//     that grows (with a warning) until the Cholesky factorization succeeds.
// Both return the neutral QuantizedLinear (kernels/quant_types.h). Scales are
// rounded to fp16 *before* they are used, so the error GPTQ feeds back is the
// error of the artifact's own dequantization.
//
//   at::Tensor h = 2 * xt_x / n_tokens;                // [in, in]
//   QF_ASSIGN_OR_RETURN(QuantizedLinear q, GptqQuantize("mlp.up_proj", w, h, params, &loss));
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

// Min/max affine parameters per row of `w` ([rows, cols]) as GPTQ's Quantizer
// computes them (range widened to include 0; an all-zero row gets [-1, 1]).
// scale: fp16-representable float32 [rows]; zero: integer-valued float32 [rows].
// min_zero: 1 keeps asymmetric zero points representable in GPTQ v1.
void MinMaxParams(const at::Tensor& w, int bits, bool sym, at::Tensor* scale, at::Tensor* zero, int min_zero = 0);

// Integer codes clamp(round(w / scale) + zero, 0, 2^bits - 1) as float32.
at::Tensor QuantCodes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int bits);

// Packs codes [rows, cols] (float32, integral), per-group scale/zero [groups, rows]
// and g_idx [cols] into a QuantizedLinear.
kernels::QuantizedLinear MakeQuantizedLinear(const std::string& name, const QuantParams& p, bool desc_act,
                                             const at::Tensor& codes, const at::Tensor& scales,
                                             const at::Tensor& zeros, const at::Tensor& g_idx,
                                             const at::Tensor& bias);

absl::StatusOr<kernels::QuantizedLinear> RtnQuantize(const std::string& name, const at::Tensor& w,
                                                     const at::Tensor& bias, const QuantParams& p);

// Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (GPTQ's Hinv), by
// cholesky, cholesky_inverse, cholesky. Damping grows x10 with a warning until
// the factorization succeeds; Internal naming `name` if damp 1.0 fails.
absl::StatusOr<at::Tensor> InverseCholesky(const std::string& name, at::Tensor h, double damp_percent);

// GPTQ's set-up before the column recurrence, shared by GptqQuantize and the
// fast path (gptq_fast.h), so both start from the same tensors bit for bit:
// dead inputs (zero Hessian diagonal) get H_ii = 1 and W[:, i] = 0; group
// parameters fixed up front (group size -1 or static groups) are computed on
// the natural column order; with act-order, W's columns and H are permuted by
// decreasing Hessian diagonal. Throws c10::Error.
struct GptqPrepared {
  at::Tensor w;         // [rows, cols], in processing order
  at::Tensor h;         // [cols, cols], in processing order
  at::Tensor scales;    // [groups, rows]; rows set up front only when groups do not form in the recurrence
  at::Tensor zeros;     // [groups, rows]; likewise
  at::Tensor perm;      // processing position -> input channel; undefined without act-order
  at::Tensor perm_cpu;  // perm on the CPU, contiguous (for indexing from the host)
};
// `w` and `h` are taken over (callers pass their own copies).
GptqPrepared GptqPrepare(at::Tensor w, at::Tensor h, const QuantParams& p);

// h: the layer input's Hessian 2/N * X^T X, [in, in] float32. `loss` receives
// GPTQ's summed (w - q)^2 / d^2 / 2.
absl::StatusOr<kernels::QuantizedLinear> GptqQuantize(const std::string& name, const at::Tensor& w,
                                                      const at::Tensor& bias, const at::Tensor& h,
                                                      const QuantParams& p, double* loss);

}  // namespace qf::worker
