// File: kernels/cuda/w4a16/w4a16_balanced_kernel.cuh
//
// The balanced decode kernel (`bal_m8`): up to 8 rows of A, every warp of a
// one-wave grid streaming the same number of weight slices. The other
// streaming kernels give each block whole 64-column tiles (times a k-part),
// so a shape's tiles rarely divide evenly over the multiprocessors: qkv's
// 320 blocks on 132 SMs put 3 blocks on some and 2 on others, gate_up's 224
// blocks put 2 and 1, and the busiest multiprocessor sets the time
// (kernels/plan/stream_grid.h models exactly that). Here the work is the
// flat sequence of units u = tile * slices + slice (tile-major), and warp w
// of W streams units [U*w/W, U*(w+1)/W): equal to one slice, across tile
// boundaries.
//
//   grid: one wave (SMs x resident blocks), WARPS warps per block, W = warps
//   that take units (<= U)
//   warp: DEPTH-slot ring in shared memory, each slot one unit's weights
//         (cp.async, evict-first) and its 16 kernel rows of A, its own
//         cp.async groups, no block barrier anywhere
//   segment = the units of one tile a warp streams; at its end:
//     the tile's only warp  -> C (+ bias) from the registers
//     else                  -> fp32 partial to slot (w + tile) of the
//                              workspace, then a tile counter; the last of
//                              the tile's warps sums the slots in warp order
//                              (deterministic), stores C and resets the
//                              counter to zero
//
// The split, the owner of a unit and the slots: kernels/plan/balanced_split.h
// (tested on the CPU); at most W + tiles slots of m x 64 floats.
//
// Dequantization and mma as the weight-streaming kernel without FOLD
// (DequantWordA, mma.m16n8k16 with the weights as the A operand).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_stream_kernel.cuh"
#include "kernels/plan/balanced_split.h"

namespace qf::kernels::w4a16 {

template <int DEPTH, int WARPS>
struct BalancedConfig {
  static constexpr int kDepth = DEPTH;  // ring slots per warp
  static constexpr int kWarps = WARPS;
  static constexpr int kThreads = 32 * WARPS;
  static constexpr int kRows = 8;     // rows of A per launch
  static constexpr int kMinBlocks = 2;  // launch bound: 128 registers, 16 warps per SM
  static constexpr int kSmemBytes = WARPS * DEPTH * 768;  // per slot: 512 B of weights, 256 B of A
  static_assert((DEPTH & (DEPTH - 1)) == 0 && DEPTH >= 4, "power-of-two ring");
};

struct BalancedParams {
  StreamParams s;   // shapes and operands (wn, wk unused)
  float* partials;  // [W + tiles][m][64] fp32 slots
  int* counters;    // [tiles], zero on entry and on exit
  int warps;        // W: warps that take units, <= units
};

__device__ __forceinline__ uint32_t LdShared32(uint32_t smem) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(smem) : "memory");
  return v;
}

template <int DEPTH, int WARPS>
__global__ void __launch_bounds__(32 * WARPS, 2) W4A16BalancedKernel(const BalancedParams bp) {
  constexpr int D = DEPTH;
  const StreamParams& p = bp.s;
  extern __shared__ int4 smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gw = blockIdx.x * WARPS + warp;
  if (gw >= bp.warps) return;  // no barrier below: a warp without units just leaves
  const int S = p.slices, m = p.m;
  const BalancedSplit split{static_cast<long long>(p.n64) * S, bp.warps};
  const long long u0 = split.Begin(gw);
  const int len = static_cast<int>(split.Begin(gw + 1) - u0);

  GridDependencyWait();  // A, the bias, C and the workspace belong to the previous kernel until here

  // ---- The ring: per slot the unit's 512 bytes of weights (one 16-byte
  // copy per lane, evict-first) and its 16 kernel rows of A (m rows of 32
  // bytes, lanes < 2m), one cp.async group per unit, D - 1 units ahead.
  const uint64_t policy = EvictFirstPolicy();
  const uint32_t ring_b = SmemAddr(smem + warp * D * 48) + 16 * lane;  // [D][512 B weights | 256 B A]
  const uint32_t ring_a = SmemAddr(smem + warp * D * 48 + 32);
  const __half* a_copy = p.a + static_cast<long long>(lane >> 1) * p.k + 8 * (lane & 1);  // row l/2, half l%2
  int ld_tile = static_cast<int>(u0 / S), ld_s = static_cast<int>(u0 % S);
  auto issue = [&](int slot) {
    CpAsyncAt<0>(ring_b + slot * 768, p.b + (static_cast<long long>(ld_s) * p.n64 + ld_tile) * 32 + lane, policy);
    if (lane < 2 * m) CpAsync16(smem + warp * D * 48 + slot * 48 + 32 + lane, a_copy + 16 * ld_s);
    if (++ld_s == S) {
      ld_s = 0;
      ++ld_tile;
    }
  };
#pragma unroll
  for (int j = 0; j < D - 1; ++j) {
    if (j < len) issue(j);
    CpAsyncCommit();
  }

  // ---- A fragments (mma B operand) from the slot: lane l reads row l/4
  // (rows past m read row m-1; their outputs are dropped), kernel rows
  // 2(l%4), +1 and +8, +9: two 4-byte words.
  const uint32_t a_lane = ring_a + static_cast<uint32_t>(min(lane >> 2, m - 1)) * 32 + 4 * (lane & 3);
  int tile = static_cast<int>(u0 / S), s = static_cast<int>(u0 % S);
  int seg_len = min(S - s, len), seg_step = 0;  // the current segment: tile's slices [s0, s0 + seg_len)
  StreamGroups grp;
  grp.Init(p, tile, s, seg_len);
  uint32_t af[1][2];
  float acc[1][4][4] = {};

  // End of a segment of `tile`: to C, or through the workspace.
  auto flush = [&]() {
    const long long first = static_cast<long long>(tile) * S;
    const int w_first = split.WarpOf(first), w_last = split.WarpOf(first + S - 1);
    const int col0 = tile * 64;
    if (w_first == w_last) {
#pragma unroll
      for (int w = 0; w < 4; ++w)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // d0,d1: column 16w + l/4, rows 2(l%4) + {0,1}; d2,d3: column + 8.
          const int row = 2 * (lane & 3) + (e & 1), col = col0 + 16 * w + (lane >> 2) + 8 * (e >> 1);
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
        const int row = 2 * (lane & 3) + (e & 1), col = 16 * w + (lane >> 2) + 8 * (e >> 1);
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

  CpAsyncWaitMem<D - 2>();  // unit 0 has landed
  for (int i = 0; i < len; ++i) {
    const uint32_t slot = static_cast<uint32_t>(i & (D - 1)) * 768;
    const int4 bv = LdShared16<0>(ring_b + slot);
    af[0][0] = LdShared32(a_lane + slot);
    af[0][1] = LdShared32(a_lane + slot + 16);
    if (i + D - 1 < len) issue((i + D - 1) & (D - 1));  // the slot of unit i - 1
    CpAsyncCommit();
    const int s_next = s + 1 == S ? 0 : s + 1;  // the next slice, or slice 0 of the next tile
    DequantMmaSlice<1>(bv, grp.gc, af, acc);
    if (seg_step == grp.switch_at) grp.Advance(p, seg_len);
    s = s_next;
    if (++seg_step == seg_len) {
      flush();
#pragma unroll
      for (int w = 0; w < 4; ++w)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][w][e] = 0.f;
      ++tile;
      seg_step = 0;
      seg_len = min(S, len - (i + 1));
      if (seg_len > 0) grp.Init(p, tile, 0, seg_len);
    }
    CpAsyncWaitMem<D - 2>();  // unit i + 1 has landed
  }
  CpAsyncWaitMem<0>();
  AllowDependents();
}

}  // namespace qf::kernels::w4a16
