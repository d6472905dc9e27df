// File: kernels/cuda/w4a16/w4a16_residency.h
//
// What every W4A16 launch path asks the device before it sizes a grid: the
// multiprocessor count, the kernel's shared-memory allowance, and how many
// blocks of a (threads, shared memory) shape stay resident on one
// multiprocessor. One cache for all of them (the variant table in
// w4a16_gemm.cu, the streaming grids in w4a16_stream.cu, the balanced wave in
// w4a16_balanced.cu), keyed by kernel and device, so each query runs once per
// process. Thread-safe. Errors name the kernel (`who`) and the device.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qf::kernels::w4a16 {

// Multiprocessors of `device`.
absl::StatusOr<int> MultiprocessorCount(int device);

// Lets `fn` use up to `bytes` of dynamic shared memory on the current device
// (needed above 48 KB) and prefers the whole unified L1 array as shared
// memory: the W4A16 kernels read global memory through cp.async.cg, ld.cg or
// ld.nc with no L1 allocation, so L1 is no use to them. A later call with
// fewer bytes keeps the larger allowance.
absl::Status AllowSharedMemory(const void* fn, int device, size_t bytes, absl::string_view who);

// Blocks of `fn` with `threads` threads and `smem` bytes of dynamic shared
// memory resident on one multiprocessor (0: the shape cannot run). Call
// AllowSharedMemory first for smem above 48 KB.
absl::StatusOr<int> ResidentBlocksPerSm(const void* fn, int device, int threads, size_t smem, absl::string_view who);

}  // namespace qf::kernels::w4a16
