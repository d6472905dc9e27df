// File: kernels/cuda/w4a16/w4a16_kernel.cuh
//
// The fused W4A16 GEMM kernel template (host entry points: ../w4a16.h).
// C[m x n] = A[m x k] * dequant(B) with B in layout QF4 (kernels/ref/w4a16_ref.h).
// Its parts, shared with the other kernels: w4a16_ptx.cuh (the PTX wrappers)
// and w4a16_dequant.cuh (QF4 words to operand registers, element types).
//
// Tiling (kernels/README.md has the picture). A block owns a tile of
// BM = 16*MB rows x BN = 64*WN columns and walks K in stages of BK = 16*KS
// kernel rows. Its 32*WN*WK threads form WN x WK warps: warp (wn, wk) owns the
// 64 columns wn and, inside every stage, a run of KS/WK consecutive 16-row
// slices starting at wk*KS/WK. Each slice is one 16-byte shared load of B per
// lane = 8 mma fragments of 16 x 8, dequantized in registers, times MB
// ldmatrix'ed A fragments; the per-group scale/zero constants are rebuilt only
// where a group starts inside the run. The WK warps of a column reduce
// through shared memory when the tile ends.
//
// Work split (stream-K): the "units" are (n-tile, m-chunk, k-stage) triples in
// that order, k fastest; block b of G takes units [U*b/G, U*(b+1)/G). A tile
// whose k-range a single block covers is written straight to C; otherwise
// every block that touched it stores its fp32 partial in a workspace slot,
// bumps the tile's counter, and the last one to arrive sums the slots in block
// order (deterministic) and writes C. No block ever waits for another.
//
// Pipeline: STAGES-deep ring of shared-memory slots (A, B, scales, zeros of
// one stage each), one barrier per stage; filled by cp.async (sm_80+) or, with
// Config's TMA flag, by bulk copies completing on an mbarrier (sm_90).
//
// Glossary: kt = k-stage index, nt = n-tile index, mc = m-chunk index,
// kr = 16-row slice inside a stage, mt = 16-row m fragment, f = n8 fragment.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/w4a16/w4a16_dequant.cuh"  // F16, BF16, DequantWord
#include "kernels/cuda/w4a16/w4a16_ptx.cuh"

namespace qf::kernels::w4a16 {

// a, scales, bias and c hold 2-byte elements of the variant's element type
// (Config's ELEM: fp16, or bf16 for the bf16 variants, which read them as
// __nv_bfloat16); the __half type only gives the address arithmetic.
struct Params {
  const __half* a;        // [m x k] row-major
  const int4* b;          // QF4 qweight, 16-byte units
  const int4* scales;     // [G x n] permuted, 16-byte units
  const uint32_t* zeros;  // [G x n/8], nullptr = symmetric
  const __half* bias;     // [n] or nullptr
  __half* c;              // [m x n] row-major
  float* partials;        // [2*grid][BM*BN] fp32 split-K slots
  int* counters;          // [n_tiles*m_chunks], zero on entry and on exit
  int m, n, k;
  int group_size;  // effective: k when the checkpoint says -1
  int group_log2;  // log2(group_size) when it is a power of two, else -1
  int n_tiles, m_chunks, k_tiles;
  long long units;  // n_tiles * m_chunks * k_tiles
  // Host side: launch as a programmatic dependent (W4A16GemmArgs::pdl; the
  // wgmma variants read it, the tiled kernel launches as usual).
  bool pdl;
};

// Group row of kernel row k: a shift for power-of-two group sizes, the
// division (a long subroutine on the GPU) only for the others.
__device__ __forceinline__ int GroupRow(const Params& p, int k) {
  return p.group_log2 >= 0 ? k >> p.group_log2 : k / p.group_size;
}

// ---------------------------------------------------------------- configuration

template <int MB, int WN, int WK, int KS, int STAGES, int MIN_BLOCKS, bool TMA = false, class ELEM = F16>
struct Config {
  using Elem = ELEM;                             // F16 or BF16: a, scales, bias and c
  static constexpr int kMb = MB;                 // 16-row m fragments per block tile
  static constexpr int kWn = WN;                 // warps across n, 64 columns each
  static constexpr int kWk = WK;                 // warps across k inside a stage
  static constexpr int kKs = KS;                 // 16-row k slices per stage
  static constexpr int kStages = STAGES;         // cp.async ring depth
  static constexpr int kMinBlocks = MIN_BLOCKS;  // launch bound: resident blocks per SM
  static constexpr bool kTma = TMA;              // stages by bulk copies + mbarrier (sm_90), else cp.async
  static constexpr int kThreads = 32 * WN * WK;
  static constexpr int kBm = 16 * MB;
  static constexpr int kBn = 64 * WN;
  static constexpr int kBk = 16 * KS;
  static constexpr int kSlicesPerWarp = KS / WK;
  static constexpr int kAChunksPerRow = kBk / 8;  // 16-byte chunks of one A row
  // A rows in shared memory: XOR-swizzled for cp.async; bulk copies cannot
  // swizzle, so they land in rows padded by 16 bytes instead (either way the
  // 8 rows an ldmatrix phase reads hit 8 different bank groups).
  static constexpr int kARowInt4 = TMA ? kAChunksPerRow + 1 : kAChunksPerRow;
  static constexpr int kAStage = kBm * kARowInt4;              // int4 per stage
  static constexpr int kBStage = KS * WN * 32;                 // int4 per stage
  static constexpr int kMaxGroups = kBk / 32;                  // group rows per stage (gs >= 32)
  static constexpr int kSChunksPerRow = kBn / 8;               // int4 of scales per group row
  static constexpr int kSStage = kMaxGroups * kSChunksPerRow;  // int4 per stage
  static constexpr int kZWordsPerRow = kBn / 8;
  static constexpr int kZStage = kMaxGroups * kZWordsPerRow;  // words per stage
  static constexpr int kAccPerLane = MB * 8 * 4;              // fp32 accumulators per lane
  static constexpr int kTileStride = kBn + 8;                 // fp32 row stride of the epilogue tile
  static constexpr int kTileSmemFloats = kBm * kTileStride;
  static constexpr int kTileFloats = kBm * kBn;  // one split-K slot
  static constexpr size_t kSmemBytes = size_t{STAGES} * (kAStage * 16 + kBStage * 16 + kSStage * 16 + kZStage * 4) +
                                       size_t{kTileSmemFloats} * 4 + 16 + size_t{STAGES} * 8;

  static_assert(KS % WK == 0, "each warp takes whole 16-row slices");
  static_assert(kAChunksPerRow >= 8, "the A swizzle permutes 8 chunks per row");
  static_assert(kMaxGroups * kSChunksPerRow <= kThreads, "one thread per scale chunk");
  static_assert(kBStage % kThreads == 0, "every thread issues the same number of B copies");
  static_assert(!TMA || KS <= 32, "one lane per B slice row");
};

// ---------------------------------------------------------------- stream-K

// Block owning unit u when block b of `grid` takes units [U*b/G, U*(b+1)/G):
// the largest b whose range starts at or before u. floor(U*b/G) <= u  <=>
// U*b < (u+1)*G, so only multiplications after a floating-point estimate
// (64-bit integer division is a long subroutine).
__device__ __forceinline__ int StreamKOwner(long long units, int grid, long long u) {
  const long long lim = (u + 1) * grid;
  int b = static_cast<int>(static_cast<double>(lim - 1) / static_cast<double>(units));
  b = max(0, min(b, grid - 1));
  while (b + 1 < grid && units * (b + 1) < lim) ++b;
  while (b > 0 && units * b >= lim) --b;
  return b;
}

// This block's stream-K units [begin, end) (count of them) and where they
// start: tile (n-tile * m_chunks + m-chunk) and k-stage inside it.
struct StreamKRange {
  long long begin, end;
  int count, tile, kt;
};
// Block `bid` of `grid` (a cluster of CTAs that share A counts as one).
__device__ __forceinline__ StreamKRange BlockUnits(const Params& p, int bid, int grid) {
  StreamKRange r;
  r.begin = p.units * bid / grid;
  r.end = p.units * (bid + 1) / grid;
  r.count = static_cast<int>(r.end - r.begin);
  r.tile = static_cast<int>(r.begin / p.k_tiles);
  r.kt = static_cast<int>(r.begin % p.k_tiles);
  return r;
}
__device__ __forceinline__ StreamKRange BlockUnits(const Params& p) {
  return BlockUnits(p, blockIdx.x, gridDim.x);
}

// Partial slot of block b for the tile whose units start at t_begin: each
// block owns two slots, 0 for the tile its range starts in (floor(U*b/G) >=
// t_begin) and 1 for the tile its range ends in.
__device__ __forceinline__ long long StreamKSlot(long long units, int grid, int b, long long t_begin) {
  return 2LL * b + (units * b >= t_begin * grid ? 0 : 1);
}

// The block's compute threads: kSyncThreads 0 = the whole block (barrier 0);
// otherwise the first kSyncThreads threads on named barrier 1, for kernels
// with warps that take no part (the warp-specialized kernel's producer warp).
template <int kSyncThreads = 0>
__device__ __forceinline__ void SyncComputeThreads() {
  if constexpr (kSyncThreads == 0) {
    __syncthreads();
  } else {
    asm volatile("bar.sync 1, %0;\n" ::"n"(kSyncThreads) : "memory");
  }
}

// Called by every compute thread of a block after it stored its partial slot
// of a shared tile; returns (the same for the whole block) whether the block
// arrived last of `contributors`, in which case it resets the tile's counter
// for the next launch and must sum the slots. The first barrier orders every
// thread's slot stores before thread 0's release fence and count, which is
// cumulative at gpu scope; the fence after the count acquires the other
// blocks' slots for the whole block through the second barrier. Only thread
// 0 fences: a fence waits for the thread's own outstanding memory operations.
template <int kSyncThreads = 0>
__device__ __forceinline__ bool StreamKArriveLast(int* counter, int contributors, int* sh_flag) {
  SyncComputeThreads<kSyncThreads>();
  if (threadIdx.x == 0) {
    __threadfence();
    const int arrived = atomicAdd(counter, 1) + 1;
    const int last = arrived == contributors;
    if (last) *counter = 0;
    __threadfence();
    *sh_flag = last;
  }
  SyncComputeThreads<kSyncThreads>();
  return *sh_flag != 0;
}

// ---------------------------------------------------------------- the kernel

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks) W4A16GemmKernel(const Params p) {
  constexpr int MB = Cfg::kMb, WN = Cfg::kWn, WK = Cfg::kWk, STAGES = Cfg::kStages;
  constexpr int kThreads = Cfg::kThreads, kBm = Cfg::kBm, kBn = Cfg::kBn, kBk = Cfg::kBk;
  using Elem = typename Cfg::Elem;

  extern __shared__ int4 smem[];
  int4* sh_a = smem;                                                           // [STAGES][BM][kARowInt4]
  int4* sh_b = sh_a + STAGES * Cfg::kAStage;                                   // [STAGES][KS][WN][32]
  int4* sh_s = sh_b + STAGES * Cfg::kBStage;                                   // [STAGES][groups][BN/8]
  uint32_t* sh_z = reinterpret_cast<uint32_t*>(sh_s + STAGES * Cfg::kSStage);  // [STAGES][groups][BN/8]
  float* sh_tile = reinterpret_cast<float*>(sh_z + STAGES * Cfg::kZStage);     // [BM][BN + 8] fp32
  int* sh_flag = reinterpret_cast<int*>(sh_tile + Cfg::kTileSmemFloats);
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(sh_flag + 4);  // [STAGES], TMA only

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wn = warp % WN, wk = warp / WN;
  const int grid = gridDim.x, bid = blockIdx.x;
  const StreamKRange range = BlockUnits(p);
  const long long u_begin = range.begin, u_end = range.end;
  const int count = range.count;
  const int k_tiles = p.k_tiles, m_chunks = p.m_chunks;
  // Groups inside a stage. When a group is shorter than a stage it divides
  // the (power-of-two) stage depth, so it is a power of two itself and every
  // group computation below is a shift: no integer division in the loop.
  const int gs = p.group_size;
  const bool multi_group = gs < kBk;
  const int group_log2 = p.group_log2;
  const int groups_per_stage = multi_group ? kBk >> group_log2 : 1;
  const int slice_group_mask = multi_group ? (gs >> 4) - 1 : 0x7fffffff;  // slices per group - 1
  const int n64 = p.n / 64;  // QF4 tiles across n: the stride of one 16-row slice, in tiles
  // The weights are read once per call when m fits one chunk; later chunks
  // re-read them from L2 otherwise.
  const uint64_t b_policy = m_chunks == 1 ? EvictFirstPolicy() : EvictNormalPolicy();
  const uint64_t a_policy = EvictNormalPolicy();

  // Position of the next unit to fetch, advanced one unit per fetch_stage
  // (k fastest, then m-chunk, then n-tile) so no division runs per stage.
  const int tile_begin = range.tile;
  int f_kt = range.kt, f_mc = tile_begin % m_chunks, f_nt = tile_begin / m_chunks;

  // Per-thread pieces of the B copies: thread tid copies 16-byte chunk
  // tid % (WN*32) of slice rows tid / (WN*32) + it * kBRowStep.
  constexpr int kBRowStep = kThreads / (WN * 32);
  static_assert(kThreads % (WN * 32) == 0, "whole slice rows per copy round");
  const long long b_thread = static_cast<long long>(tid / (WN * 32)) * n64 * 32 + tid % (WN * 32);
  const long long b_round = static_cast<long long>(kBRowStep) * n64 * 32;

  // Thread-invariant parts of the A / scale / zero copies: thread tid copies
  // A chunk tid % kAChunksPerRow of rows a_row0 + it * kARowStep, scale chunk
  // tid and zero chunk tid when those exist for the stage's groups.
  constexpr int kARowStep = kThreads / Cfg::kAChunksPerRow;
  static_assert(kThreads % Cfg::kAChunksPerRow == 0, "whole A rows per copy round");
  const int a_row0 = tid / Cfg::kAChunksPerRow, a_ch = tid % Cfg::kAChunksPerRow;
  const bool copies_scales = tid < groups_per_stage * Cfg::kSChunksPerRow;
  const bool copies_zeros = p.zeros != nullptr && tid < groups_per_stage * (kBn / 32);
  const int s_gl = (tid / Cfg::kSChunksPerRow) * (p.n / 8) + tid % Cfg::kSChunksPerRow;  // int4 units
  const int z_gl = (tid / (kBn / 32)) * (p.n / 8) + (tid % (kBn / 32)) * 4;              // words

  // ---- fetch_stage: issue the copies of the next unit into ring slot `slot`.
  auto fetch_stage = [&](int slot) {
    const int k0 = f_kt * kBk, n0 = f_nt * kBn, m0 = f_mc * kBm;
    const int a_rows = min(kBm, p.m - m0);
    const int g0 = GroupRow(p, k0);
    const __half* a_gl = p.a + static_cast<long long>(m0) * p.k + k0;
    int4* a_sh = sh_a + slot * Cfg::kAStage;
    if constexpr (Cfg::kTma) {
      // Warp 0 issues one bulk copy per contiguous row: B slice rows (WN
      // tiles = WN*512 bytes each), A rows, scale and zero rows.
      if (warp == 0) {
        uint64_t* bar = full_bar + slot;
        const uint32_t bytes =
            Cfg::kBStage * 16 + a_rows * kBk * 2 + groups_per_stage * (kBn * 2 + (p.zeros != nullptr ? kBn / 2 : 0));
        if (lane == 0) MbarArriveExpectTx(bar, bytes);
        __syncwarp();
        const int4* b_gl = p.b + (static_cast<long long>(f_kt * Cfg::kKs) * n64 + f_nt * WN) * 32;
        int4* b_sh = sh_b + slot * Cfg::kBStage;
        for (int r = lane; r < Cfg::kKs; r += 32) {
          BulkCopy(b_sh + r * WN * 32, b_gl + static_cast<long long>(r) * n64 * 32, WN * 512, bar, b_policy);
        }
        for (int r = lane; r < a_rows; r += 32) {
          BulkCopy(a_sh + r * Cfg::kARowInt4, a_gl + static_cast<long long>(r) * p.k, kBk * 2, bar, a_policy);
        }
        for (int gr = lane; gr < groups_per_stage; gr += 32) {
          BulkCopy(sh_s + slot * Cfg::kSStage + gr * Cfg::kSChunksPerRow,
                   p.scales + static_cast<long long>(g0 + gr) * (p.n / 8) + n0 / 8, kBn * 2, bar, a_policy);
          if (p.zeros != nullptr) {
            BulkCopy(sh_z + slot * Cfg::kZStage + gr * Cfg::kZWordsPerRow,
                     p.zeros + static_cast<long long>(g0 + gr) * (p.n / 8) + n0 / 8, kBn / 2, bar, a_policy);
          }
        }
      }
    } else {
      const int4* b_gl = p.b + (static_cast<long long>(f_kt * Cfg::kKs) * n64 + f_nt * WN) * 32 + b_thread;
      int4* b_sh = sh_b + slot * Cfg::kBStage + tid;
#pragma unroll
      for (int it = 0; it < Cfg::kBStage / kThreads; ++it) {
        CpAsync16Hint(b_sh + it * kThreads, b_gl + it * b_round, b_policy);
      }
      // A: only the rows that exist. Rows past m were zeroed once at kernel
      // start (or hold an earlier chunk's rows): either way they only feed
      // output rows that are never stored.
#pragma unroll
      for (int it = 0; it < (kBm + kARowStep - 1) / kARowStep; ++it) {
        const int r = a_row0 + it * kARowStep;
        if (r < a_rows) {
          CpAsync16(a_sh + r * Cfg::kARowInt4 + (a_ch ^ (r & 7)), a_gl + r * p.k + a_ch * 8);
        }
      }
      const long long g_off = static_cast<long long>(g0) * (p.n / 8) + n0 / 8;
      if (copies_scales) CpAsync16(sh_s + slot * Cfg::kSStage + tid, p.scales + g_off + s_gl);
      if (copies_zeros) CpAsync16(sh_z + slot * Cfg::kZStage + tid * 4, p.zeros + g_off + z_gl);
    }
    if (++f_kt == k_tiles) {
      f_kt = 0;
      if (++f_mc == m_chunks) {
        f_mc = 0;
        ++f_nt;
      }
    }
  };

  float acc[MB][8][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int mt = 0; mt < MB; ++mt)
#pragma unroll
      for (int f = 0; f < 8; ++f)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][f][e] = 0.f;
  };

  // ---- compute_stage: this warp's run of kSlicesPerWarp consecutive 16-row
  // slices of the stage in ring slot `slot`. Group constants are rebuilt only
  // where a group starts (every slice of a run shares one group when gs >= the
  // run, the common case).
  auto compute_stage = [&](int slot) {
    const int4* a_sh = sh_a + slot * Cfg::kAStage;
    const int4* b_sh = sh_b + slot * Cfg::kBStage;
    typename Elem::Consts gc;
#pragma unroll
    for (int j = 0; j < Cfg::kSlicesPerWarp; ++j) {
      const int kr = wk * Cfg::kSlicesPerWarp + j;
      if (j == 0 || (j & slice_group_mask) == 0) {  // runs start on group boundaries
        const int grp = multi_group ? (kr * 16) >> group_log2 : 0;
        const int4 sv = sh_s[slot * Cfg::kSStage + grp * Cfg::kSChunksPerRow + wn * 8 + lane / 4];
        const uint32_t zw =
            p.zeros != nullptr ? sh_z[slot * Cfg::kZStage + grp * Cfg::kZWordsPerRow + wn * 8 + lane / 4] : 0x88888888u;
        LoadGroupConsts(gc, sv, zw);
      }
      uint32_t a_frag[MB][4];
#pragma unroll
      for (int mt = 0; mt < MB; ++mt) {
        const int r = mt * 16 + lane % 16;
        const int ch = kr * 2 + lane / 16;
        LdMatrixX4(a_frag[mt], a_sh + r * Cfg::kARowInt4 + (Cfg::kTma ? ch : ch ^ (r & 7)));
      }
      const int4 bv = b_sh[(kr * WN + wn) * 32 + lane];
      uint32_t bf[4][4];
      DequantWord<0>(static_cast<uint32_t>(bv.x), gc, bf[0]);
      DequantWord<1>(static_cast<uint32_t>(bv.y), gc, bf[1]);
      DequantWord<2>(static_cast<uint32_t>(bv.z), gc, bf[2]);
      DequantWord<3>(static_cast<uint32_t>(bv.w), gc, bf[3]);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
#pragma unroll
        for (int mt = 0; mt < MB; ++mt) {
          Mma16816<Elem::kBf16>(acc[mt][2 * w], a_frag[mt], bf[w][0], bf[w][1]);
          Mma16816<Elem::kBf16>(acc[mt][2 * w + 1], a_frag[mt], bf[w][2], bf[w][3]);
        }
      }
    }
  };

  auto owner = [&](long long u) { return StreamKOwner(p.units, grid, u); };

  // ---- finish_tile: sum the WK warps' accumulators into sh_tile (row-major
  // fp32), go through the split-K fixup when other blocks share the tile,
  // and write C (+ bias) in the element type with 16-byte stores.
  auto finish_tile = [&](int nt, int mc) {
  // Warps of one column add in wk order, so the sum is deterministic.
#pragma unroll
    for (int step = 0; step < WK; ++step) {
      if (wk == step) {
#pragma unroll
        for (int mt = 0; mt < MB; ++mt)
#pragma unroll
          for (int f = 0; f < 8; ++f)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = mt * 16 + lane / 4 + 8 * h;
              const int col = wn * 64 + f * 8 + (lane % 4) * 2;
              float2* dst = reinterpret_cast<float2*>(sh_tile + row * Cfg::kTileStride + col);
              float2 v = make_float2(acc[mt][f][2 * h], acc[mt][f][2 * h + 1]);
              if (step > 0) {
                const float2 old = *dst;
                v.x += old.x;
                v.y += old.y;
              }
              *dst = v;
            }
      }
      __syncthreads();
    }
    const int rows = min(kBm, p.m - mc * kBm);  // rows of this chunk that exist
    const int tile = nt * m_chunks + mc;
    const long long t_begin = static_cast<long long>(tile) * k_tiles, t_end = t_begin + k_tiles;
    if (u_begin > t_begin || u_end < t_end) {  // shared with other blocks: split-K fixup
      float* mine = p.partials + StreamKSlot(p.units, grid, bid, t_begin) * Cfg::kTileFloats;
      for (int idx = tid; idx < rows * (kBn / 4); idx += kThreads) {
        const int r = idx / (kBn / 4), c4 = idx % (kBn / 4);
        __stcg(reinterpret_cast<float4*>(mine) + idx,
               *reinterpret_cast<const float4*>(sh_tile + r * Cfg::kTileStride + c4 * 4));
      }
      const int b_first = owner(t_begin), b_last = owner(t_end - 1);
      if (!StreamKArriveLast(p.counters + tile, b_last - b_first + 1, sh_flag)) return;
      // Last to arrive: sum every contributor's slot in block order.
      for (int idx = tid; idx < rows * (kBn / 4); idx += kThreads) {
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int b = b_first; b <= b_last; ++b) {
          const float4 v = __ldcg(
              reinterpret_cast<const float4*>(p.partials + StreamKSlot(p.units, grid, b, t_begin) * Cfg::kTileFloats) +
              idx);
          sum.x += v.x;
          sum.y += v.y;
          sum.z += v.z;
          sum.w += v.w;
        }
        const int r = idx / (kBn / 4), c4 = idx % (kBn / 4);
        *reinterpret_cast<float4*>(sh_tile + r * Cfg::kTileStride + c4 * 4) = sum;
      }
      __syncthreads();
    }
    for (int idx = tid; idx < rows * (kBn / 8); idx += kThreads) {
      const int r = idx / (kBn / 8), c8 = idx % (kBn / 8);
      const int col = nt * kBn + c8 * 8;
      const float* src = sh_tile + r * Cfg::kTileStride + c8 * 8;
      __align__(16) uint32_t out[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float2 v = make_float2(src[2 * q], src[2 * q + 1]);
        if (p.bias != nullptr) {
          const float2 b = Elem::Load2(p.bias + col + 2 * q);
          v.x += b.x;
          v.y += b.y;
        }
        out[q] = Elem::Pack2(v.x, v.y);
      }
      *reinterpret_cast<int4*>(p.c + static_cast<long long>(mc * kBm + r) * p.n + col) =
          *reinterpret_cast<const int4*>(out);
    }
  };

  // ---- main loop: one stage per iteration; a tile ends at its last k-stage
  // or at the end of this block's range.
  zero_acc();
  if (count <= 0) return;
  for (int idx = tid; idx < STAGES * Cfg::kAStage; idx += kThreads) sh_a[idx] = make_int4(0, 0, 0, 0);
  if constexpr (Cfg::kTma) {
    FenceProxyAsync();  // the zeros above before any bulk copy into the same rows
    if (tid == 0) {
      for (int s = 0; s < STAGES; ++s) MbarInit(full_bar + s, 1);
      QF_SM90(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
    }
  }
  __syncthreads();
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < count) fetch_stage(s);
    if constexpr (!Cfg::kTma) CpAsyncCommit();
  }
  int fetch_slot = STAGES - 1, compute_slot = 0;
  uint32_t phase = 0;  // parity of the current use of compute_slot's barrier
  int c_kt = range.kt, c_mc = tile_begin % m_chunks, c_nt = tile_begin / m_chunks;
  for (int i = 0; i < count; ++i) {
    if constexpr (!Cfg::kTma) CpAsyncWait<STAGES - 2>();
    __syncthreads();  // every warp is done with the slot refilled next
    if (i + STAGES - 1 < count) fetch_stage(fetch_slot);
    if constexpr (Cfg::kTma) {
      MbarWait(full_bar + compute_slot, phase);
    } else {
      CpAsyncCommit();
    }
    compute_stage(compute_slot);
    fetch_slot = fetch_slot == STAGES - 1 ? 0 : fetch_slot + 1;
    if (compute_slot == STAGES - 1) {
      compute_slot = 0;
      phase ^= 1;
    } else {
      ++compute_slot;
    }
    if (c_kt == k_tiles - 1 || i == count - 1) {
      finish_tile(c_nt, c_mc);
      zero_acc();
    }
    if (++c_kt == k_tiles) {
      c_kt = 0;
      if (++c_mc == m_chunks) {
        c_mc = 0;
        ++c_nt;
      }
    }
  }
  if constexpr (!Cfg::kTma) CpAsyncWait<0>();
}

}  // namespace qf::kernels::w4a16
