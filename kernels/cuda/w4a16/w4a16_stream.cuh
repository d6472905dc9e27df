// File: kernels/cuda/w4a16/w4a16_stream.cuh
//
// Host side of the weight-streaming and decode W4A16 variants (kernels:
// w4a16_stream_kernel.cuh, w4a16_decode_kernel.cuh): planning (through
// kernels/plan/stream_grid.h) and the cluster launch, shared by every
// instance; MakeStreamVariant / MakeDecodeVariant turn one instance into a
// row of the variant table (w4a16_variants.cuh).
//
//   // instances/w4a16_stream_m8.cu
//   const Variant kW4A16StreamM8 = MakeStreamVariant<1, 8, true, false>("stream_m8");
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/cuda/w4a16/w4a16_decode_kernel.cuh"
#include "kernels/cuda/w4a16/w4a16_stream_kernel.cuh"
#include "kernels/cuda/w4a16/w4a16_variants.cuh"

namespace qf::kernels::w4a16 {

// One compiled instance of W4A16StreamKernel.
struct StreamKernel {
  void (*kernel)(const StreamParams);
  int mh;         // 8-row blocks of A
  int depth;      // ring slots per warp
  bool reg_ring;  // B ring in registers
  int max_warps;  // per block (register budget of the launch bound)
  // The decode kernel: every k-part of A staged whole (shared memory grows
  // with k / split), no barrier in the main loop.
  bool whole_a = false;
  // The decode kernel with A in its ring: A bytes per ring slot (else 0),
  // and its A slots per warp when fewer than `depth` (else 0).
  int a_slot = 0;
  int a_depth = 0;
  // Split-K sums pushed to rank 0 where the grid has room (StreamReduceStore's PUSH).
  bool push = false;
};

// The kernel parameters of one call (one 64-column tile per warp, one k-part).
StreamParams StreamParamsOf(const StreamCall& call);

// The launch attributes of a streaming-family launch: a (1, split, 1)
// cluster when split > 1, programmatic stream serialization when pdl.
// Fills attrs from the front; returns how many.
unsigned StreamLaunchAttributes(int split, bool pdl, cudaLaunchAttribute (&attrs)[2]);

// Plans (cached per device, m, n, k) and launches one call; Internal with
// the CUDA error when the launch fails or no grid fits the device.
absl::Status RunStreamKernel(const StreamKernel& sk, const StreamCall& call, int device);

// The plan in words, for benchmarks and test traces.
std::string DescribeStreamKernel(const StreamKernel& sk, int64_t m, int64_t n, int64_t k, int device);

template <int MH, int DEPTH, bool FOLD, bool REG, class ELEM>
const StreamKernel& StreamKernelOf() {
  static const StreamKernel sk{&W4A16StreamKernel<MH, DEPTH, FOLD, REG, ELEM>, MH, DEPTH, REG,
                               StreamConfig<MH, DEPTH, FOLD, REG>::kMaxWarps};
  return sk;
}

template <int MH, int DEPTH, bool FOLD, bool REG, class ELEM>
absl::Status RunStream(const StreamCall& call, int device) {
  return RunStreamKernel(StreamKernelOf<MH, DEPTH, FOLD, REG, ELEM>(), call, device);
}

template <int MH, int DEPTH, bool FOLD, bool REG, class ELEM>
std::string DescribeStream(int64_t m, int64_t n, int64_t k, int device) {
  return DescribeStreamKernel(StreamKernelOf<MH, DEPTH, FOLD, REG, ELEM>(), m, n, k, device);
}

template <int MH, int DEPTH, bool SRING, bool ARING, class ELEM, int ADEPTH>
const StreamKernel& DecodeKernelOf() {
  using Cfg = DecodeConfig<MH, DEPTH, SRING, ARING, ADEPTH>;
  static const StreamKernel sk{&W4A16DecodeKernel<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>, MH, DEPTH, !SRING,
                               Cfg::kMaxWarps, !ARING, Cfg::kASlot, Cfg::kSplitRing ? ADEPTH : 0, /*push=*/true};
  return sk;
}

template <int MH, int DEPTH, bool SRING, bool ARING, class ELEM, int ADEPTH>
absl::Status RunDecode(const StreamCall& call, int device) {
  return RunStreamKernel(DecodeKernelOf<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>(), call, device);
}

template <int MH, int DEPTH, bool SRING, bool ARING, class ELEM, int ADEPTH>
std::string DescribeDecode(int64_t m, int64_t n, int64_t k, int device) {
  return DescribeStreamKernel(DecodeKernelOf<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>(), m, n, k, device);
}

// A table row of the streaming family: rows of A per launch, threads of the
// launch bound, ring depth; grid and shared memory are planned per call.
inline Variant StreamFamilyVariant(const char* name, int rows, int max_threads, int depth, const void* kernel,
                                   absl::Status (*run)(const StreamCall&, int),
                                   std::string (*describe)(int64_t, int64_t, int64_t, int)) {
  Variant v{name, rows, 64, 16, max_threads, depth, 1, /*min_sm: thread-block clusters*/ 90, 0, kernel, nullptr};
  v.stream_run = run;
  v.stream_describe = describe;
  return v;
}

// The decode kernel (w4a16_decode_kernel.cuh): MH 8-row blocks of A, a
// DEPTH-slice weight ring per warp, in registers or (SRING) shared memory,
// and with ARING A's slices in the same ring instead of staged whole (in
// ADEPTH slots per warp: ADEPTH < DEPTH gives A a shallower ring of its own);
// ELEM F16 or BF16.
template <int MH, int DEPTH, bool SRING = false, bool ARING = false, class ELEM = F16, int ADEPTH = DEPTH>
Variant MakeDecodeVariant(const char* name) {
  using Cfg = DecodeConfig<MH, DEPTH, SRING, ARING, ADEPTH>;
  Variant v = StreamFamilyVariant(
      name, Cfg::kRows, Cfg::kMaxThreads, DEPTH,
      reinterpret_cast<const void*>(&W4A16DecodeKernel<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>),
      &RunDecode<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>, &DescribeDecode<MH, DEPTH, SRING, ARING, ELEM, ADEPTH>);
  v.bf16 = ELEM::kBf16;
  return v;
}

// MH 8-row blocks of A, DEPTH-slot ring, FOLD: fp32 per-group scaling, REG:
// register ring (see w4a16_stream_kernel.cuh); ELEM F16 or BF16.
template <int MH, int DEPTH, bool FOLD, bool REG, class ELEM = F16>
Variant MakeStreamVariant(const char* name) {
  using Cfg = StreamConfig<MH, DEPTH, FOLD, REG>;
  Variant v = StreamFamilyVariant(name, Cfg::kRows, Cfg::kMaxThreads, DEPTH,
                                  reinterpret_cast<const void*>(&W4A16StreamKernel<MH, DEPTH, FOLD, REG, ELEM>),
                                  &RunStream<MH, DEPTH, FOLD, REG, ELEM>, &DescribeStream<MH, DEPTH, FOLD, REG, ELEM>);
  v.bf16 = ELEM::kBf16;
  return v;
}

}  // namespace qf::kernels::w4a16
