// File: worker/engine/fused_linear.h
//
// One quantized linear of an artifact, loaded for the fused W4A16 GEMM, as a
// serving engine would load it:
//   GPU: the artifact's own packed tensors (GPTQ v1 or AWQ GEMM) go to the
//        device and W4A16Repack turns them into QF4 there; each call runs
//        W4A16Gemm (after W4A16PermuteColumns for act-order weights).
//   CPU: RepackW4A16Ref of the unpacked linear, and each call computes what
//        GemmW4A16Ref computes (the weights read back from QF4 by
//        DequantizeW4A16Ref, products and sums in double; through at::matmul,
//        since the scalar loop is too slow for a perplexity run), rounded to
//        fp16 like the kernel's output.
// Both paths are independent of DequantizeToTensor (the dequantized path):
// that is what `qctl verify` compares them with.
//
// The context's dtype picks fp16 or bf16 activations, scales and outputs
// (bf16: the scales rounded to bf16 once at load, as a bf16 serving engine
// holds them; on the CPU the weights are read back as the tiled and wgmma
// kernels' bf16 paths compute them, DequantizeW4A16RefBf16).
//
//   FusedContext ctx{device};                                                // at::kBFloat16 as 2nd argument: bf16
//   QF_ASSIGN_OR_RETURN(auto lin, FusedLinear::Load(ctx, artifact, 3, q));  // Unimplemented: kernel cannot take it
//   QF_ASSIGN_OR_RETURN(at::Tensor y, lin->Forward(x_half));                // [m, k] fp16 -> [m, n] fp16
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "kernels/ref/w4a16_ref.h"
#include "storage/artifact.h"

namespace qf::worker {

// What the linears of one device share: the element type and the split-K
// workspace (one is enough for every shape as long as every call passes its
// current size).
struct FusedContext {
  // dtype: at::kHalf or at::kBFloat16.
  explicit FusedContext(const at::Device& d, at::ScalarType dtype = at::kHalf);
  ~FusedContext();
  at::Device device;
  at::ScalarType dtype;
  struct Gpu;                 // the workspace (fused_linear.cc; empty in CPU builds)
  std::unique_ptr<Gpu> gpu;
};

// True when this engine has the CUDA kernel (a CUDA build).
bool HaveFusedGpuKernel();

class FusedLinear {
 public:
  // Unimplemented with the reason when the fused kernel cannot take the
  // linear (bits != 4, shapes or groups it refuses: the messages of
  // RepackW4A16Ref / W4A16Repack / ActOrderPerm); FailedPrecondition for a GPU
  // in an engine built without the kernel; Internal on CUDA failures.
  static absl::StatusOr<std::unique_ptr<FusedLinear>> Load(FusedContext& ctx, const storage::LoadedArtifact& art,
                                                           int layer, const kernels::QuantizedLinear& q);
  ~FusedLinear();

  // x: [m, k] of the context's dtype on its device (input channel order) ->
  // [m, n] of that dtype, bias included. Unimplemented when the kernel takes
  // no variant for this m (message quoting m/n/k); Internal on launch
  // failures.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& x) const;
  // Same into a preallocated c [m, n] (what the throughput timing calls).
  absl::Status ForwardInto(const at::Tensor& x, at::Tensor& c) const;

  // The kernel variant W4A16Gemm runs for m rows ("cpu-reference" on the CPU).
  std::string Variant(int64_t m) const;

  // The function LinearWeights::apply takes: [..., k] (any float dtype) ->
  // [..., n] float32; throws std::runtime_error on errors (TorchCall maps it).
  static std::function<at::Tensor(const at::Tensor&)> AsApply(std::shared_ptr<const FusedLinear> self);

  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  const std::string& name() const { return name_; }

 private:
  FusedLinear() = default;
  absl::Status ForwardGpu(const at::Tensor& x, at::Tensor& c) const;

  FusedContext* ctx_ = nullptr;
  std::string name_;
  int64_t k_ = 0, n_ = 0;
  int group_size_ = 128;
  // CPU: the QF4 weights read back, double [n, k]; bias double [n] or undefined.
  at::Tensor w_ref_, b_ref_;
  // GPU: QF4 tensors on the device.
  at::Tensor qweight_, scales_, zeros_, perm_, bias_;
  mutable std::map<int64_t, size_t> ws_bytes_;  // workspace bytes per m, queried once
};

}  // namespace qf::worker
