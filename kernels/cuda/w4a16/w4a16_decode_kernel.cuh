// File: kernels/cuda/w4a16/w4a16_decode_kernel.cuh
//
// The barrier-free decode kernel: few rows of A (m <= 16), QF4 weights
// streamed from DRAM into registers with nothing between them and the
// tensor cores but the dequantization. Same grid, clusters, operand roles
// and reduction as the weight-streaming kernel (w4a16_stream_kernel.cuh),
// whose profile (kernels/MEASUREMENTS.md) showed its warps waiting mostly on the
// block barrier that recycles the shared A buffer every DEPTH slices: 16
// warps each wait for the slowest of 16 independent DRAM streams. Here A
// never recycles, so the main loop has no barrier at all:
//
//   prologue: slices 0..DEPTH-1 of the warp's weights -> a register ring
//             (ld.global.nc, evict-first); then (after the previous kernel,
//             GridDependencyWait) its whole k-part of A -> shared memory
//             (cp.async, once; the wn warps of a k-part share it)
//   step i:   take slice i from the ring, refill the slot with slice
//             i + DEPTH, ldmatrix A of step i, 4 words -> 4 x MH mma
//   end:      StreamReduceStore (DSMEM, fixed order, + bias, fp16), pushed
//             to rank 0 where the grid has room for it (PushReduceBegin)
//
// Launched as a programmatic dependent, the 8-row kernel lets the next
// kernel launch as soon as it starts (DecodeConfig::kEarlyDependents).
//
// The cost: A's k-part lives in shared memory for the whole kernel, m x
// (k / split) x 2 bytes per block; the grid model (kernels/plan/stream_grid.h)
// only considers splits for which it fits.
//
// ARING (A in the ring): no whole-A staging. Each ring slot holds a slice's
// 512 bytes of weights and the same 16 k of A (8 * MH rows x 32 bytes), both
// copied by cp.async into the warp's own slot, so shared memory is the rings
// alone, whatever k is. Staged whole, A crowded the rings out as m grew (down,
// m = 8, H200 decode loop: 100.5 us whole against 41.6 in the ring). A's
// copies go through L1 (cp.async.ca): the warps of a block that share a
// k-part fetch each line once; through L2 only, every warp of the grid asked
// for the same A lines at once and gate_up ran 2.5x slower. The warp's lanes
// read each other's A chunks (ldmatrix), so each step's wait ends in
// __syncwarp.
//
// Dequantization as the weight-streaming kernel without FOLD: exact (q - z)
// in fp16, times the fp16 scale (DequantWordA). A zero-folding version (one
// lop3 per register, 1024 + q / 64 + q, zeros and scales applied per group in
// fp32 through a constant-operand mma: 36 instead of ~50 instructions per
// slice) measured the same speed on the H200, so the issue rate is not what
// limits this loop; it was dropped (kernels/MEASUREMENTS.md).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_stream_kernel.cuh"
#include "kernels/plan/stream_grid.h"  // DecodeARingWarpBytes

namespace qf::kernels::w4a16 {

template <int MH, int DEPTH, bool SRING = false, bool ARING = false, int ADEPTH = DEPTH>
struct DecodeConfig {
  static constexpr int kMh = MH;
  static constexpr int kDepth = DEPTH;  // ring slots per warp
  static constexpr bool kSharedRing = SRING;
  static constexpr int kRows = 8 * MH;
  // Bytes of A per ring slot (ARING): 16 k of 8 * MH rows.
  static constexpr int kASlot = ARING ? 256 * MH : 0;
  static constexpr int kSlot = 512 + kASlot;
  // SPLIT RING (ARING, ADEPTH < DEPTH): A's slices come from L2, the
  // weights' from DRAM, so A needs fewer slots in flight than the weights.
  // The warp's ring is then DEPTH weight slots followed by ADEPTH A slots
  // (instead of DEPTH slots of both): the weights stay DEPTH - 2 slices
  // ahead, and before the programmatic wait DEPTH - 1 of them are requested,
  // in less shared memory per warp than DEPTH slots of both. Otherwise each
  // slot holds a slice's weights and, 512 bytes in, its A.
  static constexpr int kADepth = ARING ? ADEPTH : DEPTH;
  static constexpr bool kSplitRing = ARING && ADEPTH < DEPTH;
  static constexpr int kWStride = kSplitRing ? 512 : kSlot;     // between weight slots
  static constexpr int kAStride = kSplitRing ? kASlot : kSlot;  // between A slots
  static constexpr int kABase = kSplitRing ? 512 * DEPTH : 512;  // A slot 0 in the warp's ring
  static constexpr int kWarpRing = static_cast<int>(DecodeARingWarpBytes(DEPTH, kASlot, kADepth));  // bytes per warp
  // Register ring: 4 * DEPTH registers; 12 warps give 168 registers per
  // thread (at 16 warps' 128 dec_m8 spilled), 8 warps 255 for a 16-deep ring
  // (212 used; 9-17% slower than dec_m8 on the best grids of each on the
  // H200, so not built). In flight per multiprocessor: 12 x 8 slices, 48 KB.
  // Shared-memory ring (cp.async, DEPTH - 2 slices ahead): no ring
  // registers, 16 warps (94 registers for 8 rows); 16 x 14 slices, 112 KB in
  // flight per multiprocessor, with no block barrier in the loop. 24 warps
  // (80 registers, no spills) measured 1-4% slower on the H200 on three of
  // the four 70B shapes at M = 1 and 4; 16 rows (110 registers) lost to the
  // tiled kernel at M = 16 (bench/results/w4a16_h200_tileorder.log, run 4).
  // A in the ring: 16 warps for 8 rows; 12 for 16 rows (at 16 warps' 128
  // registers they spilled), except the 8-slot form (dec_m16_a8, a tuning
  // row): 16 warps with a 32-byte spill, so that grids of up to 16 warps
  // can be swept. The split ring for 16 rows (16 weight slots) takes 12:
  // 168 registers and a 4-byte spill (ptxas 13.5), where 16 warps' 128
  // spilled 76-100 bytes. Deeper ones (24, 32 weight slots on 8 warps, no
  // spill) ran down 2-14% slower on the H100 and were removed.
  static constexpr int kMaxWarps = ARING ? (MH == 1 || DEPTH == 8 ? 16 : 12)
                                   : SRING ? 16
                                   : DEPTH <= 8 ? 12
                                                : 8;
  static constexpr int kMaxThreads = 32 * kMaxWarps;
  // When the next kernel on the stream may launch (AllowDependents): at the
  // start for 8 rows, after the main loop for 16. Its blocks take each
  // multiprocessor as ours retire from it and load their first weights while
  // our slowest blocks finish. At the start, they no longer wait for every
  // block of ours to leave its loop. The grid planner pads shared memory so
  // that they cannot double up beside ours (PlacementSmemBytes). H100,
  // decode loop, medians of four alternating rounds: qkv 19.6 -> 18.8 us at
  // m = 1, 20.8 -> 20.4 at m = 4; o 14.6 -> 14.1 and 16.2 -> 15.9; down
  // 0.2 us less; 16 rows level or 0.2 us slower (bench/results/
  // w4a16_h100_early.log). Before the padding it was slower (H200).
  static constexpr bool kEarlyDependents = MH == 1;
  // The fp16 dequantization with the high nibbles shifted down (DequantWordA's
  // SHIFT_HI): fewer live group constants where 16 rows and A in the ring fill
  // the registers (ptxas 13.5: dec_m16_a8 44 bytes of spill -> 0, dec_m16_w16a8
  // 4 -> 0, dec_m16_a12 146 -> 136 registers). The whole-A dec_m16_s16 spilled
  // more with it (16 -> 44 bytes), so it keeps the fma form.
  static constexpr bool kShiftHi = MH == 2 && ARING;
  // A in pairs of slices (16 rows, A in the ring): every other step the
  // warp copies the next two slices of A at once, lane l taking 16 of the 64
  // bytes of row l / 4 (and of row 8 + l / 4), so each row's two slices are
  // one request of two adjacent sectors instead of two requests a step
  // apart. A timing probe without the in-loop A copies ran the 16-row
  // kernels 2-8% faster (bench/results/w4a16_h100_m16_a_probe.log): at 16
  // rows a slice of A is as many bytes as its weights, but in 16 rows. The
  // pairs, H100, decode loop, m = 16 (bench/results/w4a16_h100_m16_a_pairs.log):
  // 70B down 48.0-48.1 -> 46.5-46.8 us, qkv 19.8-19.9 -> 19.0-19.2, Llama 8B
  // o 8.1 -> 7.1 and down 16.6-16.8 -> 15.5-16.0; 1-4% slower on 70B o, Llama
  // 8B and Qwen2 7B qkv, and on down at m = 12.
  static constexpr bool kAPairs = ARING && MH == 2 && ADEPTH % 2 == 0;
  static_assert(MH == 1 || MH == 2, "8 or 16 rows of A");
  static_assert(DEPTH == 8 || DEPTH == 12 || DEPTH == 16, "ring depth");
  static_assert(!ARING || SRING, "A rides in a shared-memory ring");
  static_assert(ADEPTH == DEPTH || (ARING && ADEPTH >= 4 && DEPTH % ADEPTH == 0),
                "a split ring's A slots divide its weight slots");
};

// ARING: where 16-byte chunk h (k 8h .. 8h+7) of row r of a slot's A lies,
// in chunks: rows 4..7 of each 8 swap their halves, so the 8 rows an
// ldmatrix phase reads hit 32 distinct banks.
__device__ __forceinline__ int ARingChunk(int r, int h) { return 2 * r + (h ^ ((r >> 2) & 1)); }

// ELEM: F16, or BF16 for bf16 activations, scales, bias and output.
template <int MH, int DEPTH, bool SRING, bool ARING = false, class ELEM = F16, int ADEPTH = DEPTH>
__global__ void __launch_bounds__(DecodeConfig<MH, DEPTH, SRING, ARING, ADEPTH>::kMaxThreads, 1)
    W4A16DecodeKernel(const StreamParams p) {
  using Cfg = DecodeConfig<MH, DEPTH, SRING, ARING, ADEPTH>;
  if constexpr (Cfg::kEarlyDependents) AllowDependents();
  constexpr int D = DEPTH;
  constexpr int AD = Cfg::kADepth;  // A slots per warp (ARING)
  constexpr int kWs = Cfg::kWStride, kAs = Cfg::kAStride;
  constexpr int kStaticSpg = 8;  // slices per 128-row group
  constexpr bool kCanStatic = SRING && D % kStaticSpg == 0;
  extern __shared__ int4 smem[];
  PushReduceBegin(p, smem);
  const StreamWarp sw(p);
  const int lane = sw.lane, wn = p.wn, wk = p.wk, wn_i = sw.wn_i, wk_i = sw.wk_i, col_tile = sw.col_tile;
  const int m = p.m;
  // This warp's part: slices [s0, s0 + len).
  const int s0 = sw.PartBegin(wk_i, wk), len = sw.PartBegin(wk_i + 1, wk) - s0;
  // Steps of the loop: with whole A every warp's (A zero past its part),
  // with A in the ring the warp's own part (A zero-filled past it).
  const int steps = ARING ? (len + D - 1) / D * D : sw.PaddedSteps(wk, D);
  const int row_int4 = 2 * steps + 1;

  // ---- The weight ring. Registers: slices 0..D-1 (zero past the part:
  // finite, and A is zero there). Shared memory (after every part's A):
  // slices 0..D-2, one cp.async group each; slots past the part keep
  // whatever they held, which dequantizes to finite values that meet zeros
  // of A.
  const uint64_t policy = EvictFirstPolicy();
  const long long b_stride = static_cast<long long>(p.n64) * 32;  // int4 per slice
  const int4* b_next = p.b + (static_cast<long long>(s0) * p.n64 + col_tile) * 32 + lane;
  int4 rr[SRING ? 1 : D];
  const uint32_t warp_ring = ARING ? SmemAddr(smem) + sw.warp * Cfg::kWarpRing
                                   : SmemAddr(smem + wk * m * row_int4 + sw.warp * D * 32);
  const uint32_t ring = warp_ring + lane * 16;
  if constexpr (SRING) {
    StaticFor<D - 1>([&](auto ic) {
      constexpr int i = decltype(ic)::value;
      if (i < len) CpAsyncAt<i * kWs>(ring, b_next, policy);
      b_next += b_stride;
      CpAsyncCommit();
    });
  } else {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      rr[i] = i < len ? LdStream16(b_next, policy) : make_int4(0, 0, 0, 0);
      b_next += b_stride;
    }
  }
  // Up to here the kernel may overlap the previous one (programmatic launch):
  // weights only. Then A, which that kernel may have written.
  GridDependencyWait();

  // ---- A. In the ring: lane l copies row l / 2 (rows past m repeat row
  // m - 1; their outputs are dropped), k half l % 2, of every slice (8 rows;
  // 16 rows copy in pairs of slices, below); slices past the part are
  // zero-filled. Else rows [0, m) of the part, whole, the
  // wn warps of the part sharing the copies.
  // Pairs (Cfg::kAPairs): lane l copies chunk c = l % 4 of rows l / 4 and
  // 8 + l / 4, i.e. k half c % 2 of slice c / 2 of the pair (ARingChunk(r + 8, h)
  // is ARingChunk(r, h) + 16 chunks, 256 bytes further); the prologue copies
  // slices 0..AD-1, then odd steps j copy the pair j + AD - 1, j + AD.
  constexpr bool kPairs = Cfg::kAPairs;
  const int a_row = kPairs ? lane >> 2 : lane >> 1;
  const int a_half = lane & 1;                        // k half of the chunk
  const int a_pair = kPairs ? (lane >> 1) & 1 : 0;  // slice of the pair
  const bool a_copier = lane < 16 * MH;  // per-slice copies (not pairs): the lanes of 8 * MH rows
  const uint32_t a_dst = warp_ring + Cfg::kABase + a_pair * kAs + ARingChunk(a_row, a_half) * 16;
  const __half* a_next = p.a + static_cast<long long>(min(a_row, m - 1)) * p.k + static_cast<long long>(s0) * 16 +
                         (kPairs ? 8 * (lane & 3) : 8 * (lane & 1));
  // The second round's rows (8 + l / 4), as an offset from the first's.
  const long long a_hi = kPairs ? static_cast<long long>(min(8 + a_row, m - 1) - min(a_row, m - 1)) * p.k : 0;
  // Copies slice pair (slice, slice + 1) of the part into the slots from
  // OFF on; slices past the part are zero-filled.
  auto copy_a_pair = [&](auto offc, int slice, bool all_in) QF_INLINE {
    constexpr int kOff = decltype(offc)::value;
    const uint32_t bytes = all_in || slice + a_pair < len ? 16u : 0u;
    CpAsyncZfillAt<kOff>(a_dst, a_next, bytes);
    CpAsyncZfillAt<kOff + 256>(a_dst, a_next + a_hi, bytes);
    a_next += 32;
  };
  int4* sh_a = smem + wk_i * m * row_int4;
  if constexpr (kPairs) {
    StaticFor<AD / 2>([&](auto ic) {
      constexpr int t = decltype(ic)::value;
      copy_a_pair(std::integral_constant<int, 2 * t * kAs>{}, 2 * t, false);
    });
    CpAsyncCommit();
  } else if constexpr (ARING) {
    StaticFor<AD - 1>([&](auto ic) {
      constexpr int i = decltype(ic)::value;
      if (a_copier) CpAsyncZfillAt<i * kAs>(a_dst, a_next, i < len ? 16u : 0u);
      a_next += 16;
    });
    CpAsyncCommit();
  } else {
    const __half* src = p.a + static_cast<long long>(s0) * 16;
    for (int r = 0; r < m; ++r) {
      for (int q = wn_i * 32 + lane; q < 2 * steps; q += 32 * wn) {
        if (q < 2 * len) {
          CpAsync16(sh_a + r * row_int4 + q, src + static_cast<long long>(r) * p.k + q * 8);
        } else {
          sh_a[r * row_int4 + q] = make_int4(0, 0, 0, 0);
        }
      }
    }
    CpAsyncCommit();
  }

  StreamGroupsOf<typename ELEM::Consts> grp;
  grp.Init(p, col_tile, s0, len);
  float acc[MH][4][4] = {};
  // Shared ring: FOLD, as the streaming kernel's (w4a16_stream_kernel.cuh):
  // exact integers into the mma, per-group sums scaled in fp32 at the
  // group's end (16 fewer hmul2 per slice; the register ring has no
  // registers to spare for the second set of accumulators).
  constexpr bool kFold = SRING;
  float accg[MH][4][4] = {};

  // ldmatrix row addresses: lane l feeds matrix l/8 = (8-row block l/16,
  // k half (l/8)%2); rows past m read row m-1 (their outputs are dropped).
  const int mat = lane >> 3;
  const uint32_t a_lane =
      ARING ? warp_ring + Cfg::kABase + ARingChunk(8 * (mat >> 1) + (lane & 7), mat & 1) * 16
            : SmemAddr(sh_a + min(8 * (mat >> 1) + (lane & 7), m - 1) * row_int4 + (mat & 1));
  // The A fragments at a_lane + addr_off + OFF (OFF a compile-time byte offset).
  auto load_a = [&](auto offc, uint32_t addr_off, uint32_t (&af)[MH][2]) QF_INLINE {
    constexpr int kOff = decltype(offc)::value;
    if constexpr (MH == 1) {
      LdMatrixX2At<kOff>(af[0], a_lane + addr_off);
    } else {
      uint32_t r4[4];
      LdMatrixX4At<kOff>(r4, a_lane + addr_off);
      af[0][0] = r4[0];
      af[0][1] = r4[1];
      af[1][0] = r4[2];
      af[1][1] = r4[3];
    }
  };

  CpAsyncWaitMem<0>();  // A, and with a shared ring its first D - 1 slices (requested before A)
  if constexpr (ARING) {
    __syncwarp();  // the warp's own A chunks, copied by its lanes
  } else {
    __syncthreads();  // A complete for every warp: the only barrier before the epilogue
  }

  // ---- main loop. The A fragments of step i + 1 load during step i, and
  // from a shared ring its weights too. While base + 2D <= len every refill
  // is in the part (no predicate).
  uint32_t af[MH][2];
  load_a(std::integral_constant<int, 0>{}, 0u, af);
  int4 bv_ring = make_int4(0, 0, 0, 0);
  if constexpr (SRING) bv_ring = LdShared16<0>(ring);
  // STATIC groups: 128-row groups (8 slices) whose boundaries fall on the
  // same steps of every block of D steps (the part starts on a group and
  // runs whole blocks), so the group switch needs no compare and branch
  // and a block's 8 steps between switches are one basic block.
  auto block_of_steps = [&](int base, auto all_refills, auto static_groups) QF_INLINE {
    [[maybe_unused]] const uint32_t off = static_cast<uint32_t>(base) * 32;
    StaticFor<D>([&](auto jc) QF_INLINE {
      constexpr int j = decltype(jc)::value;
      int4 bv;
      if constexpr (SRING) {
        // Refill the slot of slice base + j - 1 with slice base + j + D - 1
        // (its A slot with slice base + j + AD - 1), wait for slice
        // base + j + 1 (this lane's own 16 bytes) and load it. A's slices
        // are the later ones in the commit order (AD <= D), so waiting for
        // A's group of that slice also waits for its weights.
        constexpr int kRefill = ((j + D - 1) % D) * kWs;
        bv = bv_ring;
        const bool in_part = decltype(all_refills)::value || base + j + D - 1 < len;
        if (in_part) CpAsyncAt<kRefill>(ring, b_next, policy);
        b_next += b_stride;
        if constexpr (kPairs) {
          // Odd j: slices base + j + AD - 1 and + AD into the slots of slices
          // base + j - 1 and base + j, whose fragments were loaded in the two
          // steps before (AD divides D, so the pair's slots are adjacent).
          if constexpr (j % 2 == 1) {
            copy_a_pair(std::integral_constant<int, ((j + AD - 1) % AD) * kAs>{}, base + j + AD - 1,
                        decltype(all_refills)::value);
          }
        } else if constexpr (ARING) {
          const bool a_in_part = decltype(all_refills)::value || base + j + AD - 1 < len;
          if (a_copier) CpAsyncZfillAt<((j + AD - 1) % AD) * kAs>(a_dst, a_next, a_in_part ? 16u : 0u);
          a_next += 16;
        }
        CpAsyncCommit();
        CpAsyncWaitMem<AD - 2>();
        if constexpr (ARING) __syncwarp();  // slice base + j + 1's A chunks, from every lane
        bv_ring = LdShared16<((j + 1) % D) * kWs>(ring);
      } else {
        bv = rr[j];
        if (decltype(all_refills)::value || base + j + D < len) rr[j] = LdStream16(b_next, policy);
        b_next += b_stride;
      }
      uint32_t af_next[MH][2];
      if constexpr (ARING) {
        if (j + 1 < D || base + D < steps) load_a(std::integral_constant<int, ((j + 1) % AD) * kAs>{}, 0u, af_next);
      } else if constexpr (j + 1 < D) {
        load_a(std::integral_constant<int, (j + 1) * 32>{}, off, af_next);
      } else if (base + D < steps) {
        load_a(std::integral_constant<int, 0>{}, off + D * 32, af_next);
      }
      if constexpr (kFold) {
        DequantMmaSlice<MH, false, Cfg::kShiftHi>(bv, grp.gc, af, accg);
      } else {
        DequantMmaSlice<MH, true, Cfg::kShiftHi>(bv, grp.gc, af, acc);
      }
      if constexpr (decltype(static_groups)::value) {
        if constexpr (j % kStaticSpg == kStaticSpg - 1) EndGroup<kFold>(grp, p, len, accg, acc);
      } else if (base + j == grp.switch_at) {
        EndGroup<kFold>(grp, p, len, accg, acc);
      }
#pragma unroll
      for (int h = 0; h < MH; ++h) {
        af[h][0] = af_next[h][0];
        af[h][1] = af_next[h][1];
      }
    });
  };
  int base = 0;
  const bool static_groups =
      kCanStatic && p.slices_per_group == kStaticSpg && s0 % kStaticSpg == 0 && len % D == 0 && steps == len;
  const auto all_blocks = [&](auto static_c) QF_INLINE {
    for (; base + 2 * D <= len; base += D) block_of_steps(base, std::true_type{}, static_c);
    for (; base < steps; base += D) block_of_steps(base, std::false_type{}, static_c);
  };
  if (static_groups) {
    all_blocks(std::bool_constant<kCanStatic>{});
  } else {
    all_blocks(std::false_type{});
  }

  if constexpr (SRING) CpAsyncWaitMem<0>();  // no copy lands in the partial tiles
  if constexpr (!Cfg::kEarlyDependents) AllowDependents();
  StreamReduceStore<MH, ELEM, /*PUSH=*/true>(p, acc, smem);
}

}  // namespace qf::kernels::w4a16
