// File: kernels/cuda/w4a16/w4a16_balanced_kernel.cuh
//
// The balanced decode kernel (`bal_m8`): up to 8 rows of A, every warp of a
// one-wave grid streaming the same number of weight chunks. The other
// streaming kernels give each block whole 64-column tiles (times a k-part),
// so a shape's tiles rarely divide evenly over the multiprocessors: qkv's
// 320 blocks on 132 SMs put 3 blocks on some and 2 on others, gate_up's 112
// or 224 leave the equivalent of 20 SMs idle, and the busiest multiprocessor
// sets the time (kernels/plan/stream_grid.h models exactly that). Here the
// work is the flat sequence of chunks (16 slices of one tile; a tile's last
// chunk may be short) in tile-major order, and warp w of W streams chunks
// [C*w/W, C*(w+1)/W): equal to one chunk, across tile boundaries.
//
//   grid: one wave (SMs x resident blocks), WARPS warps per block, W = warps
//   that take chunks (<= C)
//   block: all of A in shared memory (rows padded with zeros to whole
//          chunks), staged once: the only block barrier
//   warp: the decode kernel's loop (w4a16_decode_kernel.cuh): a DEPTH = 16
//         slot cp.async ring of weights, 14 slices ahead, one chunk per
//         unrolled block of 16 steps, operands one step ahead, no barrier
//   segment = the chunks of one tile a warp streams; at its end:
//     the tile's only warp  -> C (+ bias) from the registers
//     else                  -> fp32 partial to slot (w + tile) of the
//                              workspace, then a tile counter; the last of
//                              the tile's warps sums the slots in warp order
//                              (deterministic), stores C and resets the
//                              counter to zero
//
// The split, the owner of a chunk and the slots: kernels/plan/balanced_split.h
// (tested on the CPU); at most W + tiles slots of m x 64 floats.
//
// Dequantization and mma as the decode kernel (DequantMmaSlice: the weights
// as the A operand of mma.m16n8k16, times the fp16 scale).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_stream_kernel.cuh"
#include "kernels/plan/balanced_split.h"

namespace qf::kernels::w4a16 {

template <int DEPTH, int WARPS>
struct BalancedConfig {
  static constexpr int kDepth = DEPTH;  // ring slots per warp = slices per chunk
  static constexpr int kWarps = WARPS;
  static constexpr int kThreads = 32 * WARPS;
  static constexpr int kRows = 8;  // rows of A per launch
  static_assert(DEPTH == 16, "one chunk of 16 slices per ring turn");
};

// Chunks (16 slices) per tile column: the last one may be short.
QF_HOST_DEVICE constexpr int BalancedChunks(int slices) { return (slices + 15) / 16; }

// Dynamic shared memory of one block: m rows of A padded to whole chunks
// (2 * 16 * chunks + 1 int4 per row: odd, so ldmatrix rows hit distinct
// banks) and the warps' rings.
QF_HOST_DEVICE constexpr size_t BalancedSmemBytes(int m, int slices, int warps, int depth) {
  return size_t{16} * m * (32 * BalancedChunks(slices) + 1) + size_t{512} * warps * depth;
}

struct BalancedParams {
  StreamParams s;   // shapes and operands (wn, wk unused)
  float* partials;  // [W + tiles][m][64] fp32 slots
  int* counters;    // [tiles], zero on entry and on exit
  int warps;        // W: warps that take units, <= units
};

template <int DEPTH, int WARPS>
__global__ void __launch_bounds__(32 * WARPS, 1) W4A16BalancedKernel(const BalancedParams bp) {
  constexpr int D = DEPTH;
  const StreamParams& p = bp.s;
  extern __shared__ int4 smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gw = blockIdx.x * WARPS + warp;
  const bool active = gw < bp.warps;  // a warp without chunks only helps stage A
  const int S = p.slices, CS = BalancedChunks(S), m = p.m;
  const BalancedSplit split{static_cast<long long>(p.n64) * CS, bp.warps};
  const long long c0 = active ? split.Begin(gw) : 0;
  const int nchunks = active ? static_cast<int>(split.Begin(gw + 1) - c0) : 0;

  const int row_int4 = 32 * CS + 1;
  int4* sh_a = smem;  // [m][row_int4]
  const uint32_t ring = SmemAddr(smem + m * row_int4 + warp * D * 32 + lane);
  const uint64_t policy = EvictFirstPolicy();
  const long long b_stride = static_cast<long long>(p.n64) * 32;  // int4 per slice
  // This lane's 16 bytes of slice 0 of chunk c.
  const auto chunk_ptr = [&](long long c) {
    const long long tile = c / CS, s0 = (c % CS) * 16;
    return p.b + (s0 * p.n64 + tile) * 32 + lane;
  };
  // Slices of chunk c that exist (16, or fewer for a tile's last chunk).
  const auto chunk_len = [&](long long c) { return min(16, S - static_cast<int>(c % CS) * 16); };

  // ---- Weights first (they may stream while the previous kernel ends):
  // slices 0..D-2 of the first chunk, one cp.async group each.
  if (active) {
    const int4* src = chunk_ptr(c0);
    const int valid = chunk_len(c0);
#pragma unroll
    for (int i = 0; i < D - 1; ++i) {
      if (i < valid) CpAsyncAt<0>(ring + i * 512, src + i * b_stride, policy);
      CpAsyncCommit();
    }
  }
  GridDependencyWait();  // A, the bias, C and the workspace belong to the previous kernel until here

  // ---- All of A, zero past k, by the whole block (the only barrier).
  for (int idx = tid; idx < m * 32 * CS; idx += 32 * WARPS) {
    const int r = idx / (32 * CS), q = idx - r * (32 * CS);
    if (q < 2 * S) {
      CpAsync16(sh_a + r * row_int4 + q, p.a + static_cast<long long>(r) * p.k + q * 8);
    } else {
      sh_a[r * row_int4 + q] = make_int4(0, 0, 0, 0);
    }
  }
  CpAsyncCommit();
  CpAsyncWaitMem<0>();
  __syncthreads();
  if (!active) return;

  // ldmatrix row addresses: lane l feeds matrix l/8 = k half (l/8)%2 of rows
  // l%8 (rows past m read row m-1; their outputs are dropped).
  const uint32_t a_lane = SmemAddr(sh_a + min(lane & 7, m - 1) * row_int4 + ((lane >> 3) & 1));

  // End of a segment of `tile`: to C, or through the workspace.
  auto flush = [&](int tile, const float (&acc)[1][4][4]) {
    const long long first = static_cast<long long>(tile) * CS;
    const int w_first = split.WarpOf(first), w_last = split.WarpOf(first + CS - 1);
    const int col0 = tile * 64;
    if (w_first == w_last) {
#pragma unroll
      for (int w = 0; w < 4; ++w)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = AccRow(lane, 0, e), col = col0 + AccCol(lane, w, e);
          if (row < m) {
            const float b = p.bias != nullptr ? __half2float(p.bias[col]) : 0.f;
            p.c[static_cast<long long>(row) * p.n + col] = __float2half_rn(acc[0][w][e] + b);
          }
        }
      return;
    }
    const int slot_floats = m * 64;
    float* slot = bp.partials + BalancedSplit::Slot(gw, tile) * slot_floats;
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = AccRow(lane, 0, e), col = AccCol(lane, w, e);
        if (row < m) slot[row * 64 + col] = acc[0][w][e];
      }
    __threadfence();  // the slot before the counter
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(bp.counters + tile, 1);
    arrived = __shfl_sync(0xFFFFFFFFu, arrived, 0);
    if (arrived != w_last - w_first) return;
    // The tile's last warp: every slot is written and visible.
    __threadfence();
    float2 sum[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) sum[r] = make_float2(0.f, 0.f);
#pragma unroll 2
    for (int w = w_first; w <= w_last; ++w) {
      const float* src = bp.partials + BalancedSplit::Slot(w, tile) * slot_floats + 2 * lane;
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        if (r < m) {
          const float2 v = __ldcg(reinterpret_cast<const float2*>(src + r * 64));
          sum[r].x += v.x;
          sum[r].y += v.y;
        }
      }
    }
    const int col = col0 + 2 * lane;
    const float2 b = p.bias != nullptr ? __half22float2(*reinterpret_cast<const half2*>(p.bias + col))
                                       : make_float2(0.f, 0.f);
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      if (r < m) {
        *reinterpret_cast<half2*>(p.c + static_cast<long long>(r) * p.n + col) =
            __floats2half2_rn(sum[r].x + b.x, sum[r].y + b.y);
      }
    }
    if (lane == 0) bp.counters[tile] = 0;  // at rest again for the next call
  };

  // ---- main loop: one chunk per block of D steps. Step j of chunk c refills
  // the slot of slice j - 1 with slice j + D - 1 (j = 0: slice 15 of c;
  // else slice j - 1 of chunk c + 1), waits for slice j + 1, loads its
  // operands, and computes slice j with the operands loaded a step earlier.
  float acc[1][4][4] = {};
  StreamGroups grp;
  int tile = static_cast<int>(c0 / CS);
  int seg_len = 0, step = 0;  // the segment's slices, and the step inside it
  {
    const int cs = static_cast<int>(c0 % CS);
    const long long seg_chunks = min(static_cast<long long>(CS - cs), static_cast<long long>(nchunks));
    seg_len = static_cast<int>(min(static_cast<long long>(S - cs * 16), seg_chunks * 16));
    grp.Init(p, tile, cs * 16, seg_len);
  }
  uint32_t af[1][2];
  LdMatrixX2At<0>(af[0], a_lane + static_cast<uint32_t>(c0 % CS) * 16 * 32);
  int4 bv_ring = LdShared16<0>(ring);
  const int4* b_cur = chunk_ptr(c0);
  int cur_len = chunk_len(c0);
  for (int ci = 0; ci < nchunks; ++ci) {
    const long long c = c0 + ci;
    const bool has_next = ci + 1 < nchunks;
    const int4* b_nxt = has_next ? chunk_ptr(c + 1) : b_cur;
    const int nxt_len = has_next ? chunk_len(c + 1) : 0;
    const uint32_t a_cur = a_lane + static_cast<uint32_t>(c % CS) * 16 * 32;
    const uint32_t a_nxt = has_next ? a_lane + static_cast<uint32_t>((c + 1) % CS) * 16 * 32 : a_cur;
    StaticFor<D>([&](auto jc) {
      constexpr int j = decltype(jc)::value;
      const int4 bv = bv_ring;
      if constexpr (j == 0) {
        if (D - 1 < cur_len) CpAsyncAt<((D - 1) % D) * 512>(ring, b_cur + (D - 1) * b_stride, policy);
      } else {
        if (j - 1 < nxt_len) CpAsyncAt<((j + D - 1) % D) * 512>(ring, b_nxt + (j - 1) * b_stride, policy);
      }
      CpAsyncCommit();
      CpAsyncWaitMem<D - 2>();  // slice j + 1 has landed (this lane's own bytes)
      bv_ring = LdShared16<((j + 1) % D) * 512>(ring);
      uint32_t af_next[1][2];
      if constexpr (j + 1 < D) {
        LdMatrixX2At<(j + 1) * 32>(af_next[0], a_cur);
      } else {
        LdMatrixX2At<0>(af_next[0], a_nxt);
      }
      DequantMmaSlice<1>(bv, grp.gc, af, acc);
      if (step == grp.switch_at) grp.Advance(p, seg_len);
      ++step;
      af[0][0] = af_next[0][0];
      af[0][1] = af_next[0][1];
    });
    // Chunk c done. A tile's last chunk, or the warp's: the segment ends.
    if (c % CS == CS - 1 || !has_next) {
      flush(tile, acc);
#pragma unroll
      for (int w = 0; w < 4; ++w)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][w][e] = 0.f;
      if (has_next) {
        ++tile;
        step = 0;
        seg_len = static_cast<int>(min(static_cast<long long>(S), static_cast<long long>(nchunks - ci - 1) * 16));
        grp.Init(p, tile, 0, seg_len);
      }
    }
    b_cur = b_nxt;
    cur_len = nxt_len;
  }
  CpAsyncWaitMem<0>();
  AllowDependents();
}

}  // namespace qf::kernels::w4a16
