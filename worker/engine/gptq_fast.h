// File: worker/engine/gptq_fast.h
//
// The fast GPTQ path (used when a session's device is CUDA; the CPU path stays
// quantize.cc's GptqQuantize, byte for byte). Same algorithm and results as
// GptqQuantize, organised for a GPU:
//
//   - HessianAccumulator: H = 2/N X^T X from fp16/bf16 activations with fp32
//     accumulation on tensor cores, computing only the upper tiles (symmetry);
//   - InverseCholeskyFast: the upper Cholesky factor U of H^-1 from ONE
//     Cholesky factorization and one triangular inverse, through the reversal
//     J (J x = x reversed): if J H J = L L^T then U = J L^-1 J (both sides are
//     upper triangular with a positive diagonal and U^T U = H^-1). The
//     reference (cholesky, cholesky_inverse, cholesky) does three O(n^3) steps;
//   - GptqFast: the column recurrence of each 128-column lazy block in one
//     launch of the fused kernel (kernels/cuda/gptq/gptq_block.cuh; its CPU twin
//     runs the same code on the CPU), the lazy update of the remaining columns
//     as one in-place GEMM, groups / static groups / act-order as GptqQuantize;
//   - GptqLayerFast: a whole decoder layer (true-sequential groups, linears
//     sharing an input quantized together as one matrix, each product
//     computed once), forwards in the activations' dtype (fp16/bf16 on a GPU).
//
//   GptqFastOptions o;                                    // fused kernel, fast factorization
//   QF_ASSIGN_OR_RETURN(GptqDeviceResult r, GptqFast("mlp.up_proj", w, std::move(h), params, o, nullptr));
//   at::Tensor wq = DequantizeDevice(r);                  // what the next forward sees
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "storage/model_config.h"
#include "worker/engine/decoder.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

// How the recurrence of each block runs.
enum class GptqImpl {
  kFused,     // one launch per block (CUDA kernel; on the CPU its twin, same code)
  kTextbook,  // one column per step in ATen ops, ~12 launches a column: the paper's reference code
};

struct GptqFastOptions {
  GptqImpl impl = GptqImpl::kFused;
  // quantize.cc's three-step InverseCholesky instead of InverseCholeskyFast.
  bool reference_factorization = false;
  // The lazy update as matmul then sub_ (as quantize.cc, bit for bit) instead
  // of one in-place addmm (half the memory traffic, last-bit differences).
  bool exact_lazy_update = false;
};

// Wall time of GptqFast's phases; filled only when a pointer is passed (the
// device is synchronized at each phase boundary, which costs a little).
struct GptqPhaseTimes {
  double factor_s = 0;      // dead columns, act-order permutation, factorization
  double recurrence_s = 0;  // block recurrences + lazy updates + group parameters
  double finish_s = 0;      // inverse permutation, g_idx
};

// GPTQ of one matrix on its device. codes are in the natural column order.
struct GptqDeviceResult {
  at::Tensor codes;     // [rows, cols] uint8
  at::Tensor scales;    // [groups, rows] float32, fp16-representable
  at::Tensor zeros;     // [groups, rows] float32, integer-valued
  at::Tensor g_idx;     // [cols] int64
  bool contiguous_groups = false;   // g_idx is i / group size (torch_util.h ContiguousGroups)
  at::Tensor row_loss;  // [rows] float64: sum over columns of e^2 / 2
  bool desc_act = false;
};

// w: [rows, cols] float32; h: [cols, cols] float32 = 2/N X^T X, consumed
// (modified in place and released: pass a clone to keep it). Same contract and
// errors as GptqQuantize (quantize.h): a Hessian that is not positive definite
// gets more damping with a warning; Internal if even damp 1.0 fails.
absl::StatusOr<GptqDeviceResult> GptqFast(const std::string& name, const at::Tensor& w, at::Tensor h,
                                          const QuantParams& p, const GptqFastOptions& o, GptqPhaseTimes* times);

// Rows [row_begin, row_begin + rows) of a result as a QuantizedLinear (copied to the host).
kernels::QuantizedLinear ToQuantizedLinear(const std::string& name, const QuantParams& p, const GptqDeviceResult& r,
                                           int64_t row_begin, int64_t rows, const at::Tensor& bias);

// scales[g_idx] * (codes - zeros[g_idx]), float32 [rows, cols] on the result's
// device: the values DequantizeToTensor gives for the same QuantizedLinear.
at::Tensor DequantizeDevice(const GptqDeviceResult& r);

// Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, float32, by the
// reversal described above. Damping grows x10 with a warning until the
// factorization succeeds (as quantize.cc's InverseCholesky); Internal naming
// `name` if damp 1.0 fails. `h` is consumed.
absl::StatusOr<at::Tensor> InverseCholeskyFast(const std::string& name, at::Tensor h, double damp_percent);

// Inverse of a lower-triangular matrix by recursive 2x2 blocking (GEMMs).
at::Tensor LowerTriangularInverse(const at::Tensor& l);

// Running X^T X of one layer input, float32, upper tiles only.
class HessianAccumulator {
 public:
  // n: input features; tile: the side of the square tiles (0 = pick by n).
  HessianAccumulator(int64_t n, const at::Device& device, int64_t tile = 0);
  // x: [tokens, n], float32, float16 or bfloat16 (fp32 accumulation).
  void Add(const at::Tensor& x);
  int64_t rows() const { return rows_; }
  // scale * X^T X, [n, n] float32, symmetric. Releases the tiles.
  at::Tensor Finish(double scale);

 private:
  int64_t n_, tile_, num_tiles_;
  int64_t rows_ = 0;
  std::vector<at::Tensor> tiles_;  // (a, b), b >= a, at a * num_tiles_ + b
  at::Device device_;
};

// Per-phase wall times of one GptqLayerFast call (seconds; filled when a pointer is passed).
struct GptqLayerTimes {
  double forward_s = 0;      // calibration forwards and the advance (without the Hessian products)
  double hessian_s = 0;      // X^T X accumulation + symmetrization
  double factor_s = 0;
  double recurrence_s = 0;
  double pack_s = 0;         // inverse permutation, dequantization, copies into QuantizedLinear
  double total_s = 0;
};

// One decoder layer's GPTQ: linears and errors of a LayerResult (no dense
// tensors). `lw` is float32 (consumed: each weight is released once
// quantized); the forwards run in `acts`' dtype with `rope` in that dtype.
// True-sequential runs compute each linear's product once (the attention
// output and the residual after attention are kept between the groups).
// With `advance`, `acts` ([samples, seqlen, hidden]) is then moved through
// the quantized layer in place, bit for bit as a replay of the result
// (LayerForward in batches of 16 samples with the result's weights) does.
absl::StatusOr<kernels::LayerResult> GptqLayerFast(int layer, LayerWeights lw, const at::Tensor& acts,
                                                   const storage::ModelConfig& cfg, const RopeTables& rope,
                                                   const QuantParams& p, const GptqFastOptions& o, bool advance,
                                                   const LayerProgressFn& progress, GptqLayerTimes* times);

// GPTQ v1 `qweight` of codes [N, K] (uint8, any device): int32 [K * bits / 32, N],
// the layout of kernels/ref/pack.h (bits 2, 3, 4, 8). InvalidArgument when K
// is not a multiple of 32 or bits is unsupported.
absl::StatusOr<at::Tensor> PackGptqQweightDevice(const at::Tensor& codes, int bits);

}  // namespace qf::worker
