// File: kernels/cuda/w4a16/w4a16_balanced.cuh
//
// Host side of the balanced decode kernel (w4a16_balanced_kernel.cuh): its
// one-wave grid, its workspace (tile counters and partial slots, in the
// layout W4A16Gemm passes through StreamCall) and the launch;
// MakeBalancedVariant turns one instance into a row of the variant table.
//
//   // instances/w4a16_bal_m8.cu
//   const Variant kW4A16BalancedM8 = MakeBalancedVariant<16, 16>("bal_m8");
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/w4a16/w4a16_balanced_kernel.cuh"
#include "kernels/cuda/w4a16/w4a16_stream.cuh"  // StreamFamilyVariant
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {

// One compiled instance of W4A16BalancedKernel.
struct BalancedKernel {
  void (*kernel)(const BalancedParams);
  int warps;  // per block
  int depth;  // ring slots per warp
};

absl::Status RunBalancedKernel(const BalancedKernel& bk, const StreamCall& call, int device);
std::string DescribeBalancedKernel(const BalancedKernel& bk, int64_t m, int64_t n, int64_t k, int device);
absl::StatusOr<StreamWorkspace> BalancedWorkspace(const BalancedKernel& bk, int64_t n, int64_t k, int device);

template <int DEPTH, int WARPS>
const BalancedKernel& BalancedKernelOf() {
  using Cfg = BalancedConfig<DEPTH, WARPS>;
  static const BalancedKernel bk{&W4A16BalancedKernel<DEPTH, WARPS>, WARPS, Cfg::kDepth};
  return bk;
}

template <int DEPTH, int WARPS>
absl::Status RunBalanced(const StreamCall& call, int device) {
  return RunBalancedKernel(BalancedKernelOf<DEPTH, WARPS>(), call, device);
}

template <int DEPTH, int WARPS>
std::string DescribeBalanced(int64_t m, int64_t n, int64_t k, int device) {
  return DescribeBalancedKernel(BalancedKernelOf<DEPTH, WARPS>(), m, n, k, device);
}

template <int DEPTH, int WARPS>
absl::StatusOr<StreamWorkspace> BalancedWorkspaceOf(int64_t n, int64_t k, int device) {
  return BalancedWorkspace(BalancedKernelOf<DEPTH, WARPS>(), n, k, device);
}

template <int DEPTH, int WARPS>
Variant MakeBalancedVariant(const char* name) {
  using Cfg = BalancedConfig<DEPTH, WARPS>;
  Variant v = StreamFamilyVariant(name, Cfg::kRows, Cfg::kThreads, DEPTH,
                                  reinterpret_cast<const void*>(&W4A16BalancedKernel<DEPTH, WARPS>),
                                  &RunBalanced<DEPTH, WARPS>, &DescribeBalanced<DEPTH, WARPS>);
  v.stream_workspace = &BalancedWorkspaceOf<DEPTH, WARPS>;
  return v;
}

}  // namespace qf::kernels::w4a16
