#include "worker/engine/torch_util.h"

#include <cstring>

namespace qf::worker {

absl::Status CurrentTorchError(const std::string& what) {
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

at::Tensor TensorFromView(const storage::TensorView& view, const at::Device& device) {
  using storage::DType;
  struct Map { DType d; at::ScalarType s; };
  static constexpr Map kMap[] = {{DType::kF32, at::kFloat}, {DType::kF16, at::kHalf},
                                 {DType::kBF16, at::kBFloat16}, {DType::kF64, at::kDouble},
                                 {DType::kI32, at::kInt}, {DType::kI64, at::kLong},
                                 {DType::kI8, at::kChar}, {DType::kU8, at::kByte},
                                 {DType::kI16, at::kShort}, {DType::kBool, at::kBool}};
  at::ScalarType st = at::kFloat;
  for (const Map& m : kMap) if (m.d == view.dtype) st = m.s;
  std::vector<int64_t> shape(view.shape.begin(), view.shape.end());
  // from_blob does not own the bytes: every path below copies them before
  // the mapping can go away, once.
  at::Tensor raw = at::from_blob(const_cast<char*>(view.data.data()), shape, at::TensorOptions().dtype(st));
  const bool integral = st == at::kInt || st == at::kLong || st == at::kChar || st == at::kByte ||
                        st == at::kShort || st == at::kBool;
  if (device.is_cpu()) return integral || st == at::kFloat ? raw.clone() : raw.to(at::kFloat);
  // Other devices convert after the (synchronous, pageable) copy: fp16 / bf16
  // weights cross the bus at half the float32 size and the host does no
  // conversion. Widening to float32 is exact, so the values are the same.
  at::Tensor t = raw.to(device);
  return integral ? t : t.to(at::kFloat);
}

std::string TensorBytes(const at::Tensor& t, at::ScalarType dtype) {
  at::Tensor c = t.detach().to(at::kCPU).to(dtype).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

at::Tensor DequantizeInPlace(at::Tensor codes, const at::Tensor& scales, const at::Tensor& zeros,
                             const at::Tensor& g_idx, bool contiguous) {
  const int64_t n = codes.size(0), k = codes.size(1), g = scales.size(0);
  if (!codes.is_contiguous()) codes = codes.contiguous();
  if (contiguous) {
    codes.view({n, g, k / g}).sub_(zeros.t().unsqueeze(-1)).mul_(scales.t().unsqueeze(-1));
  } else {
    codes.sub_(zeros.index_select(0, g_idx).t()).mul_(scales.index_select(0, g_idx).t());
  }
  return codes;
}

at::Tensor DequantizeToTensor(const kernels::QuantizedLinear& q, const at::Device& device) {
  const int64_t n = q.out_features, k = q.in_features, g = q.num_groups;
  // The raw bytes move to the device first: the arithmetic runs there.
  at::Tensor w = at::from_blob(const_cast<uint8_t*>(q.codes.data()), {n, k}, at::kByte).to(device).to(at::kFloat);
  at::Tensor scales = at::from_blob(const_cast<uint16_t*>(q.scales.data()), {g, n}, at::kShort)
                          .to(device).view(at::kHalf).to(at::kFloat);
  at::Tensor zeros = at::from_blob(const_cast<uint8_t*>(q.zeros.data()), {g, n}, at::kByte).to(device).to(at::kFloat);
  const bool contiguous = static_cast<int64_t>(q.g_idx.size()) == k && ContiguousGroups(q.g_idx.data(), k, g);
  at::Tensor gidx;
  if (!contiguous) {
    gidx = at::from_blob(const_cast<int32_t*>(q.g_idx.data()), {k}, at::kInt).to(device).to(at::kLong);
  }
  return DequantizeInPlace(std::move(w), scales, zeros, gidx, contiguous);
}

absl::StatusOr<at::Device> ParseDevice(const std::string& spec) {
  if (spec == "cpu") return at::Device(at::kCPU);
  if (spec.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", spec, "': this engine was built without CUDA or no GPU is visible (expected cpu)"));
    }
    int index = 0;
    if (spec.size() > 4) {
      if (spec[4] != ':' || spec.size() == 5) return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': expected cpu, cuda or cuda:N"));
      for (size_t i = 5; i < spec.size(); ++i) {
        if (spec[i] < '0' || spec[i] > '9') return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': expected cpu, cuda or cuda:N"));
        index = index * 10 + (spec[i] - '0');
      }
    }
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': expected cpu, cuda or cuda:N"));
}

}  // namespace qf::worker
