#include "worker/engine/fused_linear.h"

#include <ATen/DeviceAccelerator.h>
#include <c10/core/DeviceGuard.h>

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/safetensors.h"
#include "worker/engine/torch_util.h"

#if defined(QF_WITH_W4A16)
#include "kernels/cuda/w4a16.h"
#endif

namespace qf::worker {

#if defined(QF_WITH_W4A16)
struct FusedContext::Gpu {
  kernels::W4A16Workspace workspace;
};
bool HaveFusedGpuKernel() { return true; }
#else
struct FusedContext::Gpu {};
bool HaveFusedGpuKernel() { return false; }
#endif

FusedContext::FusedContext(const at::Device& d, at::ScalarType t) : device(d), dtype(t), gpu(std::make_unique<Gpu>()) {}
FusedContext::~FusedContext() = default;
FusedLinear::~FusedLinear() = default;

namespace {

// The kernel refuses the linear: an "unsupported" entry, not a failure.
absl::Status Unsupported(const absl::Status& s) {
  if (s.ok() || s.code() == absl::StatusCode::kInternal || s.code() == absl::StatusCode::kResourceExhausted) return s;
  return absl::UnimplementedError(s.message());
}

bool IsBf16(at::ScalarType t) { return t == at::kBFloat16; }

std::string DTypeName(at::ScalarType t) { return IsBf16(t) ? "bf16" : "fp16"; }

// The fp16 bias bits of the checkpoint in the fused path's type.
at::Tensor BiasAs(const std::vector<uint16_t>& bits, int64_t n, at::ScalarType t) {
  return at::from_blob(const_cast<uint16_t*>(bits.data()), {n}, at::kShort).view(at::kHalf).to(t);
}

#if defined(QF_WITH_W4A16)
void* CurrentStream(const at::Device& d) { return at::accelerator::getCurrentStream(d.index()).native_handle(); }

kernels::W4A16DType KernelDType(at::ScalarType t) {
  return IsBf16(t) ? kernels::W4A16DType::kBF16 : kernels::W4A16DType::kF16;
}

// A packed tensor of the artifact, its bytes copied to the device as is.
absl::StatusOr<at::Tensor> PackedToDevice(const storage::LoadedArtifact& art, const std::string& name,
                                          at::ScalarType type, const at::Device& dev) {
  QF_ASSIGN_OR_RETURN(const storage::TensorView* v, art.Get(name));
  const int64_t elems = static_cast<int64_t>(v->data.size() / at::elementSize(type));
  return TorchCall([&] {
    return at::from_blob(const_cast<char*>(v->data.data()), {elems}, type).to(dev);
  }, name);
}
#endif

}  // namespace

absl::StatusOr<std::unique_ptr<FusedLinear>> FusedLinear::Load(FusedContext& ctx, const storage::LoadedArtifact& art,
                                                               int layer, const kernels::QuantizedLinear& q) {
  if (q.bits != 4) {
    return absl::UnimplementedError(absl::StrCat("bits ", q.bits, " (the fused W4A16 kernel takes 4-bit weights)"));
  }
  auto lin = std::unique_ptr<FusedLinear>(new FusedLinear());
  lin->ctx_ = &ctx;
  lin->name_ = absl::StrCat("model.layers.", layer, ".", q.name);
  lin->k_ = q.in_features;
  lin->n_ = q.out_features;
  lin->group_size_ = q.group_size;
  if (!ctx.device.is_cuda()) {
    absl::StatusOr<kernels::W4A16Weights> w = kernels::RepackW4A16Ref(q);
    if (!w.ok()) return Unsupported(w.status());
    std::vector<float> wt = IsBf16(ctx.dtype) ? kernels::DequantizeW4A16RefBf16(*w) : kernels::DequantizeW4A16Ref(*w);
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      lin->w_ref_ = at::from_blob(wt.data(), {lin->n_, lin->k_}, at::kFloat).to(at::kDouble);
      if (!w->bias.empty()) lin->b_ref_ = BiasAs(w->bias, lin->n_, ctx.dtype).to(at::kDouble);
      return absl::OkStatus();
    }, lin->name_));
    return lin;
  }
#if defined(QF_WITH_W4A16)
  const at::Device dev = ctx.device;
  c10::DeviceGuard guard(dev);
  absl::StatusOr<std::vector<int32_t>> perm = kernels::ActOrderPerm(q);
  if (!perm.ok()) return Unsupported(perm.status());
  const std::string& p = lin->name_;
  QF_ASSIGN_OR_RETURN(at::Tensor qweight, PackedToDevice(art, p + ".qweight", at::kInt, dev));
  QF_ASSIGN_OR_RETURN(at::Tensor scales, PackedToDevice(art, p + ".scales", at::kHalf, dev));
  at::Tensor qzeros;
  if (!q.sym) {
    QF_ASSIGN_OR_RETURN(qzeros, PackedToDevice(art, p + ".qzeros", at::kInt, dev));
  }
  const int64_t k = q.in_features, n = q.out_features, g = q.num_groups;
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    lin->qweight_ = at::empty({k * n / 8}, at::TensorOptions().dtype(at::kInt).device(dev));
    lin->scales_ = at::empty({g * n}, at::TensorOptions().dtype(ctx.dtype).device(dev));
    if (!q.sym) lin->zeros_ = at::empty({g * n / 8}, at::TensorOptions().dtype(at::kInt).device(dev));
    if (!perm->empty()) lin->perm_ = at::from_blob(perm->data(), {k}, at::kInt).to(dev);
    if (!q.bias.empty()) lin->bias_ = BiasAs(q.bias, n, ctx.dtype).to(dev);
    return absl::OkStatus();
  }, p));
  kernels::W4A16RepackArgs ra;
  ra.source = art.spec.format == "awq" ? kernels::W4A16Source::kAwqGemm : kernels::W4A16Source::kGptqV1;
  ra.qweight = reinterpret_cast<const uint32_t*>(qweight.data_ptr());
  ra.qzeros = q.sym ? nullptr : reinterpret_cast<const uint32_t*>(qzeros.data_ptr());
  ra.scales = reinterpret_cast<const __half*>(scales.data_ptr());
  ra.perm = lin->perm_.defined() ? lin->perm_.data_ptr<int32_t>() : nullptr;
  ra.out_qweight = reinterpret_cast<uint32_t*>(lin->qweight_.data_ptr());
  ra.out_zeros = q.sym ? nullptr : reinterpret_cast<uint32_t*>(lin->zeros_.data_ptr());
  ra.out_scales = lin->scales_.data_ptr();
  ra.out_dtype = KernelDType(ctx.dtype);
  ra.k = k;
  ra.n = n;
  ra.num_groups = g;
  ra.stream = static_cast<cudaStream_t>(CurrentStream(dev));
  absl::Status s = kernels::W4A16Repack(ra);
  if (!s.ok()) return Unsupported(absl::Status(s.code(), absl::StrCat(p, ": ", s.message())));
  return lin;
#else
  return absl::FailedPreconditionError("fused W4A16 GEMM: this engine was built without its CUDA kernels");
#endif
}

absl::StatusOr<at::Tensor> FusedLinear::Forward(const at::Tensor& x) const {
  at::Tensor c;
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    c = at::empty({x.dim() == 2 ? x.size(0) : 0, n_}, x.options().dtype(ctx_->dtype));
    return absl::OkStatus();
  }, name_));
  QF_RETURN_IF_ERROR(ForwardInto(x, c));
  return c;
}

absl::Status FusedLinear::ForwardInto(const at::Tensor& x, at::Tensor& c) const {
  const at::ScalarType t = ctx_->dtype;
  if (x.dim() != 2 || x.size(1) != k_ || x.scalar_type() != t) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": fused input must be ", DTypeName(t), " [m, ", k_, "]"));
  }
  if (c.dim() != 2 || c.size(0) != x.size(0) || c.size(1) != n_ || c.scalar_type() != t || !c.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": fused output must be contiguous ", DTypeName(t), " [m, ", n_, "]"));
  }
  if (ctx_->device.is_cuda()) return ForwardGpu(x, c);
  return TorchCallStatus([&] {
    at::Tensor y = at::matmul(x.to(at::kDouble), w_ref_.t());
    if (b_ref_.defined()) y = y + b_ref_;
    c.copy_(y.to(at::kFloat).to(t));
    return absl::OkStatus();
  }, name_);
}

absl::Status FusedLinear::ForwardGpu(const at::Tensor& x, at::Tensor& c) const {
#if defined(QF_WITH_W4A16)
  const at::Device dev = ctx_->device;
  c10::DeviceGuard guard(dev);
  const int64_t m = x.size(0);
  auto it = ws_bytes_.find(m);
  if (it == ws_bytes_.end()) {
    absl::StatusOr<size_t> bytes = kernels::W4A16WorkspaceBytes(m, n_, k_, dev.index(), nullptr, KernelDType(ctx_->dtype));
    if (!bytes.ok()) return Unsupported(absl::Status(bytes.status().code(), absl::StrCat(name_, ": ", bytes.status().message())));
    it = ws_bytes_.emplace(m, *bytes).first;
  }
  kernels::W4A16Workspace& ws = ctx_->gpu->workspace;
  QF_RETURN_IF_ERROR(ws.Reserve(it->second));
  const auto stream = static_cast<cudaStream_t>(CurrentStream(dev));
  at::Tensor a = x.contiguous();
  if (perm_.defined()) {
    QF_RETURN_IF_ERROR(TorchCallStatus([&] {
      at::Tensor xp = at::empty_like(a);
      QF_RETURN_IF_ERROR(
          kernels::W4A16PermuteColumns(a.data_ptr(), perm_.data_ptr<int32_t>(), xp.data_ptr(), m, k_, stream));
      a = xp;
      return absl::OkStatus();
    }, name_));
  }
  kernels::W4A16GemmArgs ga;
  ga.dtype = KernelDType(ctx_->dtype);
  ga.a = a.data_ptr();
  ga.qweight = reinterpret_cast<const uint32_t*>(qweight_.data_ptr());
  ga.scales = scales_.data_ptr();
  ga.zeros = zeros_.defined() ? reinterpret_cast<const uint32_t*>(zeros_.data_ptr()) : nullptr;
  ga.bias = bias_.defined() ? bias_.data_ptr() : nullptr;
  ga.c = c.data_ptr();
  ga.m = m;
  ga.n = n_;
  ga.k = k_;
  ga.group_size = group_size_;
  ga.workspace = ws.data();
  ga.workspace_bytes = ws.size();
  ga.stream = stream;
  absl::Status s = kernels::W4A16Gemm(ga);
  if (!s.ok()) return Unsupported(absl::Status(s.code(), absl::StrCat(name_, ": ", s.message())));
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("fused W4A16 GEMM: this engine was built without its CUDA kernels");
#endif
}

std::string FusedLinear::Variant(int64_t m) const {
#if defined(QF_WITH_W4A16)
  if (ctx_->device.is_cuda()) {
    absl::StatusOr<std::string> v = kernels::W4A16VariantName(m, n_, k_, group_size_, KernelDType(ctx_->dtype));
    return v.ok() ? *v : std::string("?");
  }
#endif
  return "cpu-reference";
}

std::function<at::Tensor(const at::Tensor&)> FusedLinear::AsApply(std::shared_ptr<const FusedLinear> self) {
  return [self](const at::Tensor& x) {
    std::vector<int64_t> shape = x.sizes().vec();
    absl::StatusOr<at::Tensor> y = self->Forward(x.reshape({-1, self->k()}).to(self->ctx_->dtype).contiguous());
    if (!y.ok()) throw std::runtime_error(std::string(y.status().message()));
    shape.back() = self->n();
    return y->to(x.scalar_type()).view(shape);
  };
}

}  // namespace qf::worker
