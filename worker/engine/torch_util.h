// File: worker/engine/torch_util.h
//
// The one place where libtorch exceptions become absl::Status (TorchCall), and
// conversions between safetensors bytes / QuantizedLinear and at::Tensor.
// Only engine sources include this (it pulls in ATen).
//
//   QF_ASSIGN_OR_RETURN(at::Tensor w, TensorFromView(*view, dev));   // fp32 copy on dev
//   absl::StatusOr<at::Tensor> y = TorchCall([&] { return at::matmul(x, w.t()); });
#pragma once

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/quant_types.h"
#include "storage/safetensors.h"

namespace qf::worker {

template <typename T> struct AsStatusOr { using type = absl::StatusOr<T>; };
template <typename T> struct AsStatusOr<absl::StatusOr<T>> { using type = absl::StatusOr<T>; };

// The exception in flight (inside a catch block) as a Status: out of memory ->
// ResourceExhausted (the caller's `what` names the layer and size), c10::Error
// and std::exception -> Internal.
absl::Status CurrentTorchError(const std::string& what);

// Runs f() and converts any exception into a Status (CurrentTorchError).
// f may return T or absl::StatusOr<T>; the result is absl::StatusOr<T>.
template <typename F>
auto TorchCall(F&& f, const std::string& what) -> typename AsStatusOr<decltype(f())>::type {
  try {
    return f();
  } catch (...) {
    return CurrentTorchError(what);
  }
}

// Same for functions returning absl::Status.
template <typename F>
absl::Status TorchCallStatus(F&& f, const std::string& what) {
  try {
    return f();
  } catch (...) {
    return CurrentTorchError(what);
  }
}

// A float32 tensor with the view's shape and values, on `device`. The view's
// bytes are copied (the mapping may be unmapped later). Throws c10::Error.
at::Tensor TensorFromView(const storage::TensorView& view, const at::Device& device);

// Raw little-endian bytes of a tensor converted to `dtype` on the CPU.
std::string TensorBytes(const at::Tensor& t, at::ScalarType dtype);

// W [out, in] float32 on `device`, following the dequantization contract of
// kernels/quant_types.h exactly: scale (fp16 -> fp32) * (code - zero). Both the
// quantizing forward and a replay call this, so they see identical weights.
at::Tensor DequantizeToTensor(const kernels::QuantizedLinear& q, const at::Device& device);

// Whether g_idx [k] puts channel i in group i / (k / groups): the groups are
// runs of consecutive channels (no act-order; group size -1 is one run).
template <typename Int>
bool ContiguousGroups(const Int* g_idx, int64_t k, int64_t groups) {
  if (groups <= 0 || k % groups != 0) return false;
  const int64_t gs = k / groups;
  for (int64_t i = 0; i < k; ++i) {
    if (static_cast<int64_t>(g_idx[i]) != i / gs) return false;
  }
  return true;
}

// The arithmetic of both dequantizations (DequantizeToTensor, and
// DequantizeDevice in gptq_fast.h), in place: codes [n, k] float32 becomes
// (code - zero) * scale per element, the same IEEE operations whatever the
// path, so the same bits. scales, zeros: [groups, n] float32 on its device.
// contiguous (ContiguousGroups): they broadcast over each run of channels;
// otherwise g_idx [k] int64 gathers each channel's into [n, k] temporaries.
// One float [n, k] tensor in all where the groups are contiguous, three with
// the gather (the old out-of-place form made five; a 70B layer's gate and up
// rows: 1.9 GB each).
at::Tensor DequantizeInPlace(at::Tensor codes, const at::Tensor& scales, const at::Tensor& zeros,
                             const at::Tensor& g_idx, bool contiguous);

// MKL's LAPACK blocks a Cholesky factorization (and the triangular solves
// and inverses beside it) by the thread count, so its bits change with it:
// a 768 x 768 linalg_cholesky gave three different results with 1, 2 and 3
// threads, where the matmuls of the same shapes did not. The CPU pool is sized
// by the machine and the pod's CPU limit (common/cpu_budget.h), so a CPU
// factorization runs under this guard on one thread: the artifact's bytes do
// not depend on where the worker ran. No-op for a CUDA tensor (cuSOLVER).
// NOTE: libtorch's thread count is the calling thread's (OpenMP) plus a global
// that threads read when they first run ATen; only the session thread runs
// ATen in our processes, so the brief global change reaches no one else.
class SingleThreadedOnCpu {
 public:
  explicit SingleThreadedOnCpu(const at::Tensor& t) : saved_(t.device().is_cpu() ? at::get_num_threads() : 0) {
    if (saved_ > 1) at::set_num_threads(1);
  }
  ~SingleThreadedOnCpu() {
    if (saved_ > 1) at::set_num_threads(saved_);
  }
  SingleThreadedOnCpu(const SingleThreadedOnCpu&) = delete;
  SingleThreadedOnCpu& operator=(const SingleThreadedOnCpu&) = delete;

 private:
  const int saved_;
};

inline void Sync(const at::Device& d) {
  if (d.is_cuda()) at::accelerator::synchronizeDevice(d.index());
}

// A wall-clock phase timer that synchronizes the device at each boundary,
// only when someone asked for the times (an unsynchronized GPU makes every
// phase look free and the last one slow).
class PhaseTimer {
 public:
  PhaseTimer(const at::Device& d, bool on) : device_(d), on_(on) { Mark(); }
  bool on() const { return on_; }
  // Seconds since the last mark (0 when off).
  double Lap() {
    if (!on_) return 0;
    Sync(device_);
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return s;
  }
  void Mark() {
    if (!on_) return;
    Sync(device_);
    last_ = std::chrono::steady_clock::now();
  }

 private:
  at::Device device_;
  bool on_;
  std::chrono::steady_clock::time_point last_;
};

// Rows [b, b + n) of activations that may live in pinned host memory
// (SessionSpec::host_activations), on the compute device: the same tensor
// when it is there already, else a copy. Writes go back with
// t.narrow(0, b, n).copy_(v), which works across devices.
inline at::Tensor RowsOn(const at::Tensor& t, int64_t b, int64_t n, const at::Device& device) {
  at::Tensor rows = t.narrow(0, b, n);
  return rows.device() == device ? rows : rows.to(device, /*non_blocking=*/false);
}

// An empty tensor shaped like `like` (or `sizes`) where `like` lives: in
// pinned memory when that is the host and `device` a GPU.
inline at::Tensor EmptyBeside(const at::Tensor& like, at::IntArrayRef sizes, at::ScalarType dtype,
                              const at::Device& device) {
  auto opts = like.options().dtype(dtype);
  if (like.device().is_cpu() && device.is_cuda()) opts = opts.pinned_memory(true);
  return at::empty(sizes, opts);
}

// Rounds every element to the nearest fp16 value, kept as float32.
inline at::Tensor RoundToHalf(const at::Tensor& t) { return t.to(at::kHalf).to(at::kFloat); }

// The device string "cpu", "cuda", "cuda:N" -> at::Device. InvalidArgument otherwise,
// FailedPrecondition when CUDA is asked for and this engine has none.
absl::StatusOr<at::Device> ParseDevice(const std::string& spec);

}  // namespace qf::worker
