// File: kernels/plan/stream_grid.h
//
// Grid planning for the weight-streaming and decode W4A16 kernels
// (kernels/cuda/w4a16/w4a16_stream.cu launches what this picks). Plain C++:
// the device's answers (how many blocks of a shape stay resident) come in
// through a callback, so the choice is unit-tested on the CPU against grids
// measured on the H200 and the H100 (tests/kernels_gpu/stream_grid_test.cc).
//
// A grid: `split` blocks per column group (one thread-block cluster), each
// block wn x wk warps; warp (i, j) streams QF4 column tile i of the block's
// group over k-part j of the block's k-chunk. The model, fitted to 2000
// grids measured on the H200 (bench/results/w4a16_h200_grids.log; over 27
// shape/kernel/m cases its picks run 3% slower than the best grid on average,
// 15% at worst; the previous Little's-law model's: 8%, and 77% at worst; on
// the H100, over the 94 cases of the grid sweeps tests/kernels_gpu/
// stream_grid_test.cc reads, decode loop, the 70B projections, Llama 8B's,
// Qwen2 7B's, the down of Qwen2 72B, and small models' projections (Qwen2
// 0.5B and 1.5B, Llama 3.2 1B and 3B), at m = 1 to 16: 2.8% on average, 19%
// at worst, Qwen2 7B's qkv at m = 1, 9.3 us on 1 x 8 warps in clusters of 2
// against 7.8 unsplit; bench/results/w4a16_h100_m1_shapes.log), is this; for
// the 8-row A-ring kernel stream_grid.cc replaces its seconds with each
// warp's ring chain and the busiest multiprocessor's bytes (kSmPeakShare),
// which small weights need:
//
//   waves    = ceil(blocks / resident blocks)
//   busiest  = slices the busiest multiprocessor streams over all waves
//   rate     = min(its warps x slices in flight x 512 B / kLatencyS,
//                  the device's bandwidth / multiprocessors)
//   seconds  = busiest x 512 B / rate + waves x kWaveS,  x 1.2 when split > 2
//
// over wn in {1, 2, 4, 8, 16} (and 7, 14 for the shared-ring decode kernel:
// gate_up's 896 column tiles in 128 blocks), wk in {1, 2, 3, 4, 6, 8, 12, 16} and split in
// {1, 2, 4, 8} (what the sweep measured), preferring blocks of at least 4
// warps (3 to 8 for the 8-row A-ring kernel) and, for the streaming kernel, at most 8 warps (its block barrier
// waits for the slowest warp) and a power-of-two wk (3, 6 or 12 k-parts per
// block measured up to 70% slower there; the barrier-free decode kernel runs
// best at 12), and for the decode kernel with 16 rows of A in its ring and
// k >= 16384 at least 2 warps per k-part and clusters of at most 2, unless
// the model rates the best such grid 25% slower than its own pick (narrow n:
// too few column groups to fill the device; stream_grid.cc). Ties go to the
// fewest padded steps on the busiest multiprocessor, then to fewer blocks and
// the smaller split. For that 16-row A-in-the-ring kernel the
// rate counts the busiest multiprocessor's warps instead of the average, and
// ties go first to smaller blocks (measured on the H100, stream_grid.cc).
// Before the model: a short table of grids measured faster than its pick on
// one device class (stream_grid.cc, kLightARingMeasured).
//
//   PickStreamGrid(problem, {}, [&](const StreamGridShape& g) { return Resident(g); });
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "kernels/plan/host_device.h"

namespace qf::kernels {

// Dynamic shared memory of one streaming-kernel block (w4a16_stream_kernel.cuh):
// two A blocks per k-part and the per-warp rings (none for a register ring),
// or the fp32 partial tiles that reuse them after the main loop.
QF_HOST_DEVICE constexpr size_t StreamSmemBytes(int m, int wn, int wk, int depth, bool reg_ring) {
  const size_t main = size_t{2} * wk * m * (2 * depth + 1) * 16 + (reg_ring ? 0 : size_t{512} * wn * wk * depth);
  const size_t out = size_t{4} * wk * m * (64 * wn + 4);
  return main > out ? main : out;
}

// Dynamic shared memory of one decode-kernel block (w4a16_decode_kernel.cuh):
// every k-part of A (padded to `steps` slices, 2 * steps + 1 int4 per row:
// odd, so ldmatrix rows hit distinct banks) and, for a shared-memory weight
// ring, `ring_depth` 512-byte slots per warp; or the partial tiles.
QF_HOST_DEVICE constexpr size_t DecodeSmemBytes(int m, int wn, int wk, int steps, int ring_depth = 0) {
  const size_t main = size_t{16} * wk * m * (2 * steps + 1) + size_t{512} * wn * wk * ring_depth;
  const size_t out = size_t{4} * wk * m * (64 * wn + 4);
  return main > out ? main : out;
}

// One warp's ring in the decode kernel with A in its ring
// (w4a16_decode_kernel.cuh, ARING): `depth` slots of 512 bytes of weights and
// `a_depth` (0: `depth`) slots of `a_slot` bytes of A (32 bytes per row of A,
// 8 * MH rows). The kernel lays its rings out by this size.
QF_HOST_DEVICE constexpr size_t DecodeARingWarpBytes(int depth, int a_slot, int a_depth = 0) {
  return size_t{512} * depth + static_cast<size_t>(a_slot) * (a_depth > 0 ? a_depth : depth);
}

// Dynamic shared memory of one block of that kernel: wn * wk warps' rings, or
// the partial tiles.
QF_HOST_DEVICE constexpr size_t DecodeARingSmemBytes(int m, int wn, int wk, int depth, int a_slot, int a_depth = 0) {
  const size_t main = DecodeARingWarpBytes(depth, a_slot, a_depth) * wn * wk;
  const size_t out = size_t{4} * wk * m * (64 * wn + 4);
  return main > out ? main : out;
}

// The push reduction's region (w4a16_stream_kernel.cuh, StreamReduceStore):
// rank 0's mbarrier (16 bytes) and the other split - 1 blocks' sums, 8 fp32
// per item of 8 columns, m x 8 * wn items. Placed after the rings and
// partial tiles, so the other blocks may send while rank 0 still streams.
// PushSumBytes: the sums alone, what rank 0's mbarrier counts.
inline constexpr size_t kPushBarrierBytes = 16;
QF_HOST_DEVICE constexpr uint32_t PushSumBytes(uint32_t m, uint32_t wn, uint32_t split) {
  return 32u * (split - 1) * m * 8 * wn;
}
QF_HOST_DEVICE constexpr size_t PushRecvBytes(int m, int wn, int split) {
  return split > 1 ? kPushBarrierBytes + PushSumBytes(m, wn, split) : 0;
}

// Dynamic shared memory that holds a grid to the model's placement: at most
// `blocks_per_sm` blocks (StreamGrid::blocks_per_sm) on one multiprocessor.
// A grid launched on an idle device spreads that way by itself. A
// programmatic dependent (W4A16GemmArgs::pdl) launches while the previous
// kernel still holds every multiprocessor, and its blocks pack onto whichever
// have room: two blocks of 72-96 KB on one multiprocessor while another
// waits. On the H100 the decode loop then ran 4-23% slower with
// programmatic launch than without wherever two of the planned blocks fit
// on one multiprocessor (gate_up M = 1: 106-112 us against 89-91; down
// M = 1 and 4: 49-52 against 43-45), and 1-12% faster wherever no more
// than the planned blocks fit (gate_up M = 4, o M = 4 and 16, qkv and down
// M = 16; bench/results/w4a16_h100_pdl.log). A launch cannot cap residency except
// through its resources, so the grid asks for more shared memory than it
// uses. `overhead`: what else each block holds (static shared memory and the
// 1 KB the device reserves). Returns `smem` when it already caps residency,
// or when the padded size would exceed `max_dynamic`.
constexpr size_t PlacementSmemBytes(size_t smem, int blocks_per_sm, size_t smem_per_sm, size_t overhead,
                                    size_t max_dynamic) {
  if (blocks_per_sm <= 0) return smem;
  // blocks_per_sm + 1 blocks of more than `cap` bytes each do not fit.
  const size_t cap = smem_per_sm / static_cast<size_t>(blocks_per_sm + 1);
  if (smem + overhead > cap || cap < overhead) return smem;
  const size_t padded = (cap - overhead + 1 + 127) / 128 * 128;
  return padded <= max_dynamic ? padded : smem;
}

struct StreamGridProblem {
  int sms = 0;               // multiprocessors
  double device_bytes_per_s = 0;  // attainable DRAM read bandwidth
  size_t smem_per_block = 0;      // dynamic shared memory a block may use
  int m = 0;                 // rows of A in one launch
  int64_t n64 = 0;           // QF4 column tiles (n / 64)
  int64_t slices = 0;        // k / 16
  int max_warps = 0;         // per block (the kernel's launch bound)
  int depth = 0;             // ring slots per warp
  bool reg_ring = false;     // weights in registers: depth slices in flight (else depth - 2)
  bool whole_a = false;      // the decode kernel: A's k-part staged whole
  int a_slot = 0;            // the decode kernel with A in its ring: A bytes per slot (else 0)
  int a_depth = 0;           // its A slots per warp when fewer than `depth` (else 0)
  int max_split = 8;         // cluster size limit
  // The kernel can push its split-K sums to rank 0 (the decode kernels):
  // split grids then get PushRecvBytes more shared memory where that keeps
  // their blocks per multiprocessor, else they reduce by pulling.
  bool push = false;
};

// One candidate, as the residency callback sees it.
struct StreamGridShape {
  int wn = 0, wk = 0, split = 0;
  int threads = 0;
  size_t smem = 0;
};

struct StreamGrid {
  int wn = 0, wk = 0, split = 0;
  int steps = 0;        // slices of the longest k-part, padded to the ring depth
  int part = 0;         // slices of the longest k-part
  size_t smem = 0;
  int64_t blocks = 0;
  int blocks_per_sm = 0;  // resident on the busiest multiprocessor
  double seconds = 0;     // the model's estimate
  size_t smem_pad = 0;    // of smem, the bytes asked for only to hold the placement (PlacementSmemBytes)
  size_t recv_off = 0;    // of smem, where the push reduction's region starts (0: the grid pulls)
};

// A grid forced by the caller (tuning sweeps); all zero: the model's pick.
// Anything else must be a grid that fits (negative values never do).
// `pull`: split grids reduce by pulling even where the push region would fit
// (StreamGridProblem::push), for A/B runs and tests of both reductions.
struct ForcedStreamGrid {
  int wn = 0, wk = 0, split = 0;
  bool pull = false;
  bool Any() const { return wn != 0 || wk != 0 || split != 0; }
};

// Blocks of this shape the device holds at once (0: it cannot run), or the
// error of the query.
using ResidentBlocksFn = absl::FunctionRef<absl::StatusOr<int64_t>(const StreamGridShape&)>;

// The grid for `p` (or the forced one). InvalidArgument naming the forced grid
// and the shape when that does not fit; Internal when nothing fits; the
// callback's error as is.
absl::StatusOr<StreamGrid> PickStreamGrid(const StreamGridProblem& p, ForcedStreamGrid force,
                                          ResidentBlocksFn resident);

}  // namespace qf::kernels
