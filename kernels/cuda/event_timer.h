// File: kernels/cuda/event_timer.h
//
// Median device time of a launch, measured as bench/w4a16_bench.cu measures
// it: each timed call is preceded by an untimed `flush` (a streaming read
// larger than L2, so every call starts cold, as one decode step through a
// deep model does), bracketed by two CUDA events on `stream`, and the median
// of `iters` calls after `warmup` untimed ones is reported. Host-only,
// torch-free; the callables return Status so that launch errors surface.
//
//   qf::kernels::EventTimer timer;
//   QF_ASSIGN_OR_RETURN(double us, timer.MedianUs([&] { return W4A16Gemm(args); }, flush, 5, 40, stream));
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace qf::kernels {

class EventTimer {
 public:
  using Fn = std::function<absl::Status()>;

  EventTimer() {
    if (cudaEventCreate(&e0_) != cudaSuccess || cudaEventCreate(&e1_) != cudaSuccess) ok_ = false;
  }
  ~EventTimer() {
    if (e0_) cudaEventDestroy(e0_);
    if (e1_) cudaEventDestroy(e1_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  // Microseconds. Internal naming the CUDA error; launch/flush errors as they come.
  absl::StatusOr<double> MedianUs(const Fn& launch, const Fn& flush, int warmup, int iters, cudaStream_t stream) {
    if (!ok_) return absl::InternalError("EventTimer: cudaEventCreate failed");
    if (iters < 1) return absl::InvalidArgumentError(absl::StrCat("EventTimer: iters ", iters, ", expected >= 1"));
    for (int i = 0; i < warmup; ++i) {
      if (absl::Status s = flush(); !s.ok()) return s;
      if (absl::Status s = launch(); !s.ok()) return s;
    }
    std::vector<float> ms;
    for (int i = 0; i < iters; ++i) {
      if (absl::Status s = flush(); !s.ok()) return s;
      if (absl::Status s = Check(cudaEventRecord(e0_, stream)); !s.ok()) return s;
      if (absl::Status s = launch(); !s.ok()) return s;
      if (absl::Status s = Check(cudaEventRecord(e1_, stream)); !s.ok()) return s;
      if (absl::Status s = Check(cudaEventSynchronize(e1_)); !s.ok()) return s;
      float t = 0;
      if (absl::Status s = Check(cudaEventElapsedTime(&t, e0_, e1_)); !s.ok()) return s;
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[ms.size() / 2];
  }

 private:
  static absl::Status Check(cudaError_t e) {
    if (e == cudaSuccess) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("EventTimer: ", cudaGetErrorString(e)));
  }
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
  bool ok_ = true;
};

}  // namespace qf::kernels
