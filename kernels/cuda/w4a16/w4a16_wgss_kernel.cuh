// File: kernels/cuda/w4a16/w4a16_wgss_kernel.cuh
//
// The Hopper W4A16 GEMM with dequantization into shared memory (sm_90a, the
// wg_ss_* variants): warpgroup MMA with both operands in shared memory, the
// activations as the M operand and the dequantized weights as the N operand,
// so C = A * dequant(B)^T comes out of wgmma.m64nBNk16 directly. Same QF4
// layout, Params, stream-K units, plan, workspace and fixup protocol as the
// other wgmma kernel (w4a16_wgmma_kernel.cuh); the host side is unchanged.
//
// Why another wgmma kernel: the register-A kernel dequantizes in the warps
// that issue the wgmma, so every stage runs in lock-step (copy, barrier,
// dequantize, issue) and its tensor pipe stays ~50% busy at m = 256 (ncu,
// kernels/MEASUREMENTS.md). Here the roles are split across warpgroups:
//
//   warpgroup       role
//   0 .. BM/64-1    consumers: wait for stage i's B (full_o) and their own
//                   64 rows of A (full_a), issue 4 wgmma (64 rows x BN
//                   columns each), commit, retire the previous stage, release
//                   its B slot (empty_o) and refill its A slot by TMA
//   BM/64 ..        transform (T warpgroups; with T > 1 they take runs of
//                   two stages in turn, so that a 128-row group's constants
//                   serve both of its stages): wait for stage i's raw
//                   weights, dequantize them to fp16 with stmatrix into B
//                   slot i % O, arrive on full_o
//
// Each transform warp fetches its own raw weights: its lane 0 issues the bulk
// copies of the warp's QF4 tiles, scales and zeros into the warp's part of
// W slot i % WSTAGES, completing on the warp's own barrier, and refills it
// with stage i + WSTAGES as soon as the warp has dequantized stage i. No
// barrier joins the transform warps (a named barrier per stage held 31% of
// their stall samples, ncu) and the consumers issue nothing but A and wgmma
// (issuing the weights' copies there put ~150 instructions per stage between
// their wgmma).
//
// Three rings: W (raw QF4 tiles, scales, zeros; WSTAGES slots, filled by bulk
// copies, read only by the transform warps), B (the dequantized weights;
// OSTAGES slots) and, per consumer warpgroup, A (its 64 rows; ASTAGES slots,
// each refilled by the warpgroup itself as soon as its wgmma retired it, so
// A is fetched ASTAGES-1 stages ahead and no warpgroup waits on another's
// A). A B slot is written again once the consumers retired the stage
// OSTAGES before, which they do after committing the stage after it (one
// wgmma group stays in flight), so OSTAGES >= 3 lets the transform warps
// write up to OSTAGES-1 stages ahead of the consumers' last commit.
//
// Measured on the H200 (kernels/MEASUREMENTS.md): level with the register-A kernel
// at m = 64 and 15-30% behind it at m = 256, so the table does not select it;
// what holds it is instruction issue in the transform warps and the
// dequantized tile's round trip through shared memory.
//
// Slot layout of the dequantized weights (the wgmma N operand, K-major):
// row n (a column of C) holds the stage's 64 kernel rows as 128 bytes,
// 16-byte chunk c at c ^ (n % 8) (the 128-byte swizzle the descriptor
// names). Transform warp w of its warpgroup dequantizes k16 row w of the
// stage: per 64-column QF4 tile one 16-byte load per lane (4 words), and per
// word one stmatrix.x4 of the 16 columns x 16 kernel rows that word holds
// (kernels/README.md, "Layout QF4": the word's four fp16 pairs are exactly
// an m16k16 fragment whose rows are columns of C).
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_kernel.cuh"
#include "kernels/cuda/w4a16/w4a16_wgmma_kernel.cuh"

namespace qf::kernels::w4a16 {

// Four 8x8 b16 matrices to shared memory; lane l supplies the row address of
// row l % 8 of matrix l / 8, register i holds matrix i in mma fragment order.
__device__ __forceinline__ void StMatrixX4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  QF_SM90(asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0),
                       "r"(r1), "r"(r2), "r"(r3)
                       : "memory"));
}

// TMA copy of one 64-row box of A into shared address `smem` and the arming
// of its barrier, issued only where `pred` holds: predicated, not branched,
// so the consumer warpgroup's wgmma pipeline sees no divergent path (ptxas
// would serialize it, C7518).
__device__ __forceinline__ void TmaLoadAIf(uint32_t smem, const CUtensorMap* map, int k0, int row0, uint32_t bar,
                                           uint32_t bytes, bool pred) {
  QF_SM90(asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  setp.ne.u32 p, %5, 0;\n"
      "  @p mbarrier.arrive.expect_tx.shared::cta.b64 _, [%4], %6;\n"
      "  @p cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
      "}\n" ::"r"(smem),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(bar), "r"(static_cast<uint32_t>(pred)), "r"(bytes)
      : "memory"));
}

// Position of a stream-K unit (k fastest, then m-chunk, then n-tile),
// advanced one unit at a time so that no division runs per stage.
struct WgssCursor {
  int kt, mc, nt;
  __device__ __forceinline__ void Next(int k_tiles, int m_chunks) {
    if (++kt == k_tiles) {
      kt = 0;
      if (++mc == m_chunks) {
        mc = 0;
        ++nt;
      }
    }
  }
};

template <int BM, int BN, int OSTAGES, int WSTAGES, int ASTAGES, int T>
struct WgssConfig {
  static constexpr int kBm = BM;  // rows of A per tile: BM / 64 consumer warpgroups
  static constexpr int kBn = BN;  // columns of C per tile (the wgmma N)
  static constexpr int kBk = 64;  // kernel rows per stage: one 128-byte swizzle span of fp16
  static constexpr int kKs = 4;   // k16 steps per stage
  static constexpr int kConsumers = BM / 64;
  static constexpr int kComputeThreads = 128 * kConsumers;
  static constexpr int kTransformThreads = 128 * T;
  static constexpr int kTransforms = T;
  static constexpr int kRun = T > 1 ? 2 : 1;  // consecutive stages one transform warpgroup takes
  static constexpr int kThreads = kComputeThreads + kTransformThreads;
  static constexpr int kStages = OSTAGES;
  static constexpr int kWStages = WSTAGES;
  static constexpr int kAStages = ASTAGES;
  static constexpr int kMinBlocks = 1;
  static constexpr int kAcc = BN / 2;                // fp32 accumulators per consumer thread
  static constexpr int kColTiles = BN / 64;          // QF4 tiles across the block's columns
  static constexpr int kAStage = 64 * 128;           // bytes: one warpgroup's 64 rows x 64 fp16, swizzled (TMA)
  static constexpr int kBStage = BN * 128;           // bytes: BN columns x 64 fp16, swizzled (stmatrix)
  // One transform warp's part of a W slot: its QF4 row (one k16 row of the
  // stage), then the scales and zeros of the row's group.
  static constexpr int kWarpQ = kColTiles * 512, kWarpS = kColTiles * 128, kWarpZ = kColTiles * 32;
  static constexpr int kWarpW = kWarpQ + kWarpS + kWarpZ;
  static constexpr int kWStage = 4 * kWarpW;
  static constexpr int kTileFloats = BM * BN;  // one split-K slot
  // + 1024: the rings are aligned to the swizzle atom at run time.
  static constexpr size_t kSmemBytes =
      1024 + size_t{kConsumers} * ASTAGES * kAStage + size_t{OSTAGES} * kBStage + size_t{WSTAGES} * kWStage;
  static_assert(BM == 64 || BM == 128, "one or two consumer warpgroups");
  static_assert(BN == 128 || BN == 256, "compiled wgmma widths");
  static_assert(T >= 1 && WSTAGES % (T * kRun) == 0, "a W slot serves the stages of one transform warpgroup");
  static_assert(OSTAGES >= 3, "a consumer holds two slots: the one in flight and the one it computes");
  static_assert(WSTAGES >= 2 && ASTAGES >= 2, "raw weights and A are fetched ahead");
  static_assert(kWarpQ % 16 == 0 && kWarpS % 16 == 0 && kWarpZ % 16 == 0, "bulk copies move 16-byte units");
  static_assert(kTileFloats == kAcc * kComputeThreads, "a slot holds every consumer thread's accumulators");
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    W4A16WgssKernel(const Params p, const __grid_constant__ CUtensorMap a_map) {
  constexpr int BM = Cfg::kBm, BN = Cfg::kBn, O = Cfg::kStages, W = Cfg::kWStages, AS = Cfg::kAStages;
  constexpr int kCols = Cfg::kColTiles, kAcc = Cfg::kAcc, kCompute = Cfg::kComputeThreads;
  constexpr int kT = Cfg::kTransforms, kRun = Cfg::kRun;

  extern __shared__ int4 smem_raw[];
  __shared__ int sh_flag;
  // full_w[t][s]: the part of W slot s for k16 row t holds its stage (tx
  // bytes, armed by lane 0 of the transform warp that owns the slot's row);
  // full_o[s]: the 128 threads of the transform warpgroup that owns the
  // stage have written B slot s;
  // empty_o[s]: every consumer thread has retired the wgmma that read it;
  // full_a[c][s]: A slot s of consumer warpgroup c holds its box (tx bytes).
  __shared__ uint64_t full_w[4][W], full_o[O], empty_o[O], full_a[Cfg::kConsumers][AS];
  char* base = reinterpret_cast<char*>(smem_raw) + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
  char* sh_a = base;                                        // [consumers][AS][64 rows][128 B]
  char* sh_b = sh_a + Cfg::kConsumers * AS * Cfg::kAStage;  // [O][BN rows][128 B]
  char* sh_w = sh_b + O * Cfg::kBStage;                     // [W][transform warp][QF4 | scales | zeros]

  const int tid = threadIdx.x;
  // The warpgroup, through a shuffle so that ptxas sees it uniform: a role
  // branch it cannot prove warp-uniform makes it serialize the wgmma (C7518).
  const int role = __shfl_sync(0xffffffffu, tid / 128, 0);
  if (tid == 0) {
    for (int r = 0; r < 4; ++r)
      for (int s = 0; s < W; ++s) MbarInit(&full_w[r][s], 1);
    for (int s = 0; s < O; ++s) {
      MbarInit(full_o + s, 128);
      MbarInit(empty_o + s, kCompute);
    }
    for (int c = 0; c < Cfg::kConsumers; ++c)
      for (int s = 0; s < AS; ++s) MbarInit(&full_a[c][s], 1);
  }
  __syncthreads();

  const StreamKRange range = BlockUnits(p);
  const int count = range.count;
  const int k_tiles = p.k_tiles, m_chunks = p.m_chunks;

  if (role >= Cfg::kConsumers) {
    // ================================================== transform warps
    const int tt = tid - kCompute, tw = tt / 32, t = tw % 4, u = tw / 4, lane = tt % 32;
    // Warp t of transform warpgroup u dequantizes k16 row t of the stages
    // i with (i / kRun) % T == u.
    // stmatrix row addresses: lane l writes row l % 8 of matrix l / 8 of each
    // word's 16 x 16 block; matrix j holds columns +8 (j odd) and kernel rows
    // +8 (j >= 2) of the word's block. The column's row of the slot is 128
    // bytes, its 16-byte chunk (2t + j/2) lands at chunk ^ (column % 8).
    const int mj = lane / 8, mr = lane % 8;
    const uint32_t st_lane = static_cast<uint32_t>((8 * (mj & 1) + mr) * 128 + (((2 * t + (mj >> 1)) ^ mr) * 16));
    const bool sym = p.zeros == nullptr;
    const uint32_t my_full_w = SmemAddr(full_w[t]);  // + 8 * slot
    char* const my_w = sh_w + t * Cfg::kWarpW;
    const uint32_t my_w_addr = SmemAddr(my_w);
    const uint32_t full_o_addr = SmemAddr(full_o), empty_o_addr = SmemAddr(empty_o);
    const WgssCursor first{range.kt, range.tile % m_chunks, range.tile / m_chunks};
    // This warpgroup's next stage after i, and the cursor moved there.
    auto next_stage = [&](int i) { return (i + 1) % kRun != 0 ? i + 1 : i + 1 + (kT - 1) * kRun; };
    auto step = [&](WgssCursor& c, int i) {
      for (int r = i; r < next_stage(i); ++r) c.Next(k_tiles, m_chunks);
    };

    // This warp's raw weights, stage j into its part of W slot j % W (lane 0):
    // its QF4 row, and the scales and zeros of the row's group only when the
    // group or the column tiles differ from the previous stage's (a 128-row
    // group spans two stages), the same test on both sides.
    const uint64_t b_policy = m_chunks == 1 ? EvictFirstPolicy() : EvictNormalPolicy();
    const uint64_t s_policy = EvictNormalPolicy();
    const int n64 = p.n / 64;
    const uint32_t s_bytes = Cfg::kWarpS + (sym ? 0 : Cfg::kWarpZ);
    auto group_of = [&](const WgssCursor& c) {
      return GroupRow(p, c.kt * Cfg::kBk + 16 * t);
    };
    WgssCursor wc = first;
    for (int r = 0; r < u * kRun; ++r) wc.Next(k_tiles, m_chunks);
    int w_next = u * kRun, w_group = -1, w_nt = -1;
    auto fetch_w = [&]() {
      const int g = group_of(wc);
      const bool new_consts = g != w_group || wc.nt != w_nt;
      w_group = g;
      w_nt = wc.nt;
      if (lane == 0 && w_next < count) {
        const int slot = w_next % W;
        const uint32_t dst = my_w_addr + slot * Cfg::kWStage, bar = my_full_w + 8 * slot;
        MbarArriveExpectTx(bar, Cfg::kWarpQ + (new_consts ? s_bytes : 0));
        const int col64 = wc.nt * kCols;  // first 64-column tile, over all of n
        BulkCopy(dst, p.b + ((static_cast<long long>(wc.kt) * Cfg::kKs + t) * n64 + col64) * 32, Cfg::kWarpQ, bar,
                 b_policy);
        if (new_consts) {
          const long long row = static_cast<long long>(g) * (p.n / 8) + col64 * 8;
          BulkCopy(dst + Cfg::kWarpQ, p.scales + row, Cfg::kWarpS, bar, s_policy);
          if (!sym) BulkCopy(dst + Cfg::kWarpQ + Cfg::kWarpS, p.zeros + row, Cfg::kWarpZ, bar, s_policy);
        }
      }
      step(wc, w_next);
      w_next = next_stage(w_next);
    };
    while (w_next < W) fetch_w();

    WgssCursor dc = first;  // the stage dequantized
    for (int r = 0; r < u * kRun; ++r) dc.Next(k_tiles, m_chunks);
    int d_group = -1, d_nt = -1;
    GroupConsts consts[kCols];
    const uint32_t b_lane = SmemAddr(sh_b) + st_lane;
    for (int i = u * kRun; i < count; i = next_stage(i)) {
      const int ws = i % W, os = i % O;  // ring slots of stage i
      const uint32_t wphase = (i / W) & 1, ophase = (i / O) & 1;  // parity of their current fill
      const char* src = my_w + ws * Cfg::kWStage;              // this warp's part of W slot ws
      const uint32_t b_slot = b_lane + os * Cfg::kBStage;     // B slot os, at this lane's stmatrix row
      MbarWait(my_full_w + 8 * ws, wphase);
      // Everything this warp needs from its raw slot, into registers.
      int4 words[kCols];
#pragma unroll
      for (int j = 0; j < kCols; ++j) words[j] = reinterpret_cast<const int4*>(src + j * 512)[lane];
      if (const int g = group_of(dc); g != d_group || dc.nt != d_nt) {
        d_group = g;
        d_nt = dc.nt;
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          // Scales of the lane's 8 fragments: 8 halves at 64j + 8 * (lane / 4).
          const int4 sc = *reinterpret_cast<const int4*>(src + Cfg::kWarpQ + (64 * j + 8 * (lane / 4)) * 2);
          const uint32_t zw =
              sym ? 0x88888888u : reinterpret_cast<const uint32_t*>(src + Cfg::kWarpQ + Cfg::kWarpS)[8 * j + lane / 4];
          LoadGroupConsts(consts[j], sc, zw);
        }
      }
      // B slot os is free once the consumers retired stage i - O.
      if (i >= O) MbarWait(empty_o_addr + 8 * os, ophase ^ 1);
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const GroupConsts& g = consts[j];
        uint32_t q[4];
        const uint32_t col_tile = b_slot + j * 64 * 128;
        DequantWord<0>(static_cast<uint32_t>(words[j].x), g, q);
        StMatrixX4(col_tile + 0 * 16 * 128, q[0], q[2], q[1], q[3]);
        DequantWord<1>(static_cast<uint32_t>(words[j].y), g, q);
        StMatrixX4(col_tile + 1 * 16 * 128, q[0], q[2], q[1], q[3]);
        DequantWord<2>(static_cast<uint32_t>(words[j].z), g, q);
        StMatrixX4(col_tile + 2 * 16 * 128, q[0], q[2], q[1], q[3]);
        DequantWord<3>(static_cast<uint32_t>(words[j].w), g, q);
        StMatrixX4(col_tile + 3 * 16 * 128, q[0], q[2], q[1], q[3]);
      }
      FenceProxyAsync();  // the generic-proxy stores, before the wgmma read them
      MbarArrive(full_o_addr + 8 * os);
      fetch_w();  // stage i + W into the part of the slot this warp has used up
      step(dc, i);
    }
    return;
  }

  // =================================================== consumer warpgroups
  const int wg = role, warp = (tid % 128) / 32, lane = tid % 32;
  const long long u_begin = range.begin, u_end = range.end;
  const uint32_t a_base = SmemAddr(sh_a + wg * AS * Cfg::kAStage);
  const uint32_t my_full_a = SmemAddr(full_a[wg]), full_o_addr = SmemAddr(full_o), empty_o_addr = SmemAddr(empty_o);
  // wgmma descriptors of slot 0's first k16 step; a slot or step further on
  // only adds its byte offset / 16 to the start-address field (no carry: the
  // field holds every shared-memory address / 16).
  const uint64_t desc_a0 = SmemDescSw128(a_base), desc_b0 = SmemDescSw128(SmemAddr(sh_b));
  // This warpgroup's A: one TMA box of its 64 rows per stage, stage j into
  // slot j % AS, issued by its first thread (predicated) in stage order.
  const bool a_issuer = tid % 128 == 0;
  WgssCursor ac{range.kt, range.tile % m_chunks, range.tile / m_chunks};
  int a_next = 0;  // next stage whose A is fetched
  auto fetch_a = [&]() {
    const int slot = a_next % AS;
    TmaLoadAIf(a_base + slot * Cfg::kAStage, &a_map, ac.kt * Cfg::kBk, ac.mc * BM + wg * 64, my_full_a + 8 * slot,
               Cfg::kAStage, a_issuer && a_next < count);
    ac.Next(k_tiles, m_chunks);
    ++a_next;
  };
  for (int s = 0; s < AS; ++s) fetch_a();

  float acc[kAcc];
  auto zero_acc = [&]() {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
  };

  // Split-K fixup when other blocks share the tile, then C (+ bias) from the
  // accumulators: register 4j + h of thread (warp, lane) is row 16 warp +
  // lane / 4 (+8 for h >= 2) of this warpgroup's 64 and column 8j + 2 (lane %
  // 4) (+1 for odd h) of the tile.
  auto finish_tile = [&](int nt, int mc) {
    if (!FullTileFixup<kAcc, kCompute, kCompute>(p, acc, nt * m_chunks + mc, u_begin, u_end, &sh_flag, blockIdx.x,
                                                  gridDim.x, 0))
      return;
    const int row0 = mc * BM + wg * 64 + 16 * warp + lane / 4;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int col = nt * BN + 8 * j + 2 * (lane % 4);
      const half2 bias = p.bias != nullptr ? *reinterpret_cast<const half2*>(p.bias + col) : __float2half2_rn(0.f);
      const float2 b2 = __half22float2(bias);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        if (row < p.m)
          *reinterpret_cast<half2*>(p.c + static_cast<long long>(row) * p.n + col) =
              __floats2half2_rn(acc[4 * j + 2 * h] + b2.x, acc[4 * j + 2 * h + 1] + b2.y);
      }
    }
  };

  // Tile by tile: the stages of one tile run without a branch between their
  // wgmma (a divergent path there makes ptxas serialize them), one group in
  // flight across the full-barrier wait; the tile's end retires everything.
  int kt = range.kt, mc = range.tile % m_chunks, nt = range.tile / m_chunks;
  int os = 0, as = 0;
  uint32_t ophase = 0, aphase = 0;
  for (int done = 0; done < count;) {
    const int stages = min(k_tiles - kt, count - done);
    zero_acc();
    int held = -1;
    for (int s = 0; s < stages; ++s) {
      MbarWaitInFlight(my_full_a + 8 * as, aphase);  // keeps the previous stage's wgmma in flight
      MbarWaitInFlight(full_o_addr + 8 * os, ophase);
      WgmmaFence();
#pragma unroll
      for (int j = 0; j < Cfg::kKs; ++j) {
        const uint64_t da = desc_a0 + static_cast<uint32_t>((as * Cfg::kAStage + 32 * j) >> 4);
        const uint64_t db = desc_b0 + static_cast<uint32_t>((os * Cfg::kBStage + 32 * j) >> 4);
        if constexpr (BN == 256) {
          WgmmaSsM64N256K16(acc, da, db);
        } else {
          WgmmaSsM64N128K16(acc, da, db);
        }
      }
      WgmmaCommit();
      WgmmaWait<1>();  // the previous stage's group: its slots may be refilled
      MbarArriveIf(empty_o_addr + 8 * (held < 0 ? 0 : held), held >= 0);
      if (held >= 0) fetch_a();
      held = os;
      if (++os == O) {
        os = 0;
        ophase ^= 1;
      }
      if (++as == AS) {
        as = 0;
        aphase ^= 1;
      }
    }
    WgmmaWait<0>();
    FenceRegs(acc);
    MbarArriveIf(empty_o_addr + 8 * held, true);
    fetch_a();  // the tile's last stage; the one before it was refilled in the loop
    finish_tile(nt, mc);
    done += stages;
    kt += stages;
    if (kt == k_tiles) {
      kt = 0;
      if (++mc == m_chunks) {
        mc = 0;
        ++nt;
      }
    }
  }
}

}  // namespace qf::kernels::w4a16
