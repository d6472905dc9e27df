// File: kernels/cuda/w4a16/w4a16_wgmma_kernel.cuh
//
// The Hopper W4A16 GEMM for m >= 33 rows of A (prefill, batched decode):
// warpgroup MMA (wgmma, sm_90a) with the dequantized weights as the register
// A operand and the activations as the shared-memory B operand, so the
// product computed is C^T = dequant(B) * A^T, 64 output columns per wgmma.
// Same QF4 layout as the other kernels, no repack.
//
// Why swapped operands: wgmma takes only its A operand from registers, and
// the weights must pass through registers to be dequantized. A lane's QF4
// word of a 16 x 64 tile (kernel rows x columns) already holds the four
// A-operand registers of 16 columns x 16 kernel rows (the pairs of fragments
// 2w and 2w+1, see DequantFragPair), so each warp of a warpgroup takes one
// word per wgmma, and the wgmma's 64 rows are 4 such 16-column subgroups:
// with MW wgmma per k16 step, warp q takes the MW adjacent words q*MW ..
// q*MW+MW-1 of the warpgroup's 4*MW subgroups (one load; see w_tile).
//
// Tile: BN = 64*WGS*MW columns x BM = BT rows of A, WGS warpgroups (2, or 1
// for the _w1 variants);
// warpgroup g owns the MW 64-column blocks g*MW .. g*MW+MW-1 and issues, per
// 16-row k step, MW wgmma.m64nBTk16 into MW accumulator sets of BT/2 fp32.
// A stage is BK = 16*KS kernel rows (KS = 4 or 8): per token of A, KS/4 rows
// of 128 bytes, each in a 128-byte swizzle atom (the layout wgmma reads
// without bank conflicts); cp.async writes them swizzled (chunk c of row r
// at c ^ (r % 8)).
//
// Pipeline (all 8 warps load and compute; no producer warp): a STAGES-deep
// ring filled by cp.async, one barrier per stage. Iteration i (D = DEPTH, 1
// or 2): wait for stage i, barrier, refill the slot of stage i-1-D with stage
// i+STAGES-1-D, dequantize stage i into registers, issue its wgmma as one
// batch and commit, then wait until stage i-D's wgmma group is done
// (wait_group D). So the tensor cores hold D stages while the warps prepare
// the next, and a slot is refilled only after every warpgroup has passed the
// wait that retired the wgmma reading it.
//
// TMA form (WgConfig TMA, the wg_*_tma tuning variants; measured level or
// slower, kernels/MEASUREMENTS.md): the same ring and block barrier, but a slot is
// filled by TMA tensor copies of A and bulk copies of the weights, scales and
// zeros, issued by lane 0 of each warp and completing on one mbarrier per
// slot, which every thread waits on instead of cp.async.wait_group.
//
// Cluster form (WgConfig CLUSTER = 2, the wg_*_mc2 tuning variants;
// kernels/MEASUREMENTS.md): the TMA form on a pair of CTAs that take
// neighbouring column tiles of the same rows and units, each multicasting
// half of every A stage into both. No barrier ties the pair's stages: a
// slot is handed back on its "empty" mbarrier in both CTAs, which every warp
// of the pair arrives on once it has retired the slot's wgmma, and the lanes
// that refill the slot wait on their own CTA's.
//
// Warp-specialized form (WgConfig WS, the wg_ws_* tuning variants; measured
// slower, kernels/MEASUREMENTS.md): a ninth warp issues every copy into the ring
// and arms full[slot] with cp.async.mbarrier.arrive; the compute warpgroups
// wait on full[slot] and release each slot on empty[slot] after the wait
// that retires its wgmma. No block barrier in the loop; the fixup syncs the
// 256 compute threads on named barrier 1.
//
// Producer-warpgroup form (WgConfig WS and TMA, the wg_pc_* variants;
// kernels/README.md): the producer is a whole warpgroup, so that setmaxnreg
// can take its registers (40 left) for the compute warpgroups (232). One of
// its threads stages each slot by TMA onto full[slot] once empty[slot]
// completes; the rest leave (in a cluster pair they wait at the pair's exit
// barrier). The compute warpgroups wait with MbarWaitRaised: ptxas
// allocates code that can reach a trap to the launch bound's share.
//
// Work split and fixup: the same stream-K units, block ranges, partial slots
// and tile counters as the tiled kernel (w4a16_kernel.cuh, shared Params and
// host plan); the partial slot of a tile is stored in accumulator order
// (index r * 256 + thread), so its stores and the fixup's loads coalesce.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/w4a16/w4a16_kernel.cuh"
#include "kernels/cuda/w4a16/w4a16_wgmma_ptx.cuh"

namespace qf::kernels::w4a16 {

// ---------------------------------------------------------------- split-K fixup

// The fixup of a kernel whose split-K partial is the whole tile (both wgmma
// kernels): when other blocks share `tile`, each thread stores its N
// accumulators in the block's partial slot in accumulator order (index
// i * kThreads + tid: the stores and the loads below coalesce), and the block
// that arrives last sums every contributor's slot into `acc` in block order.
// Returns false when another block finishes the tile. kSync as in
// StreamKArriveLast: 0 = every thread of the block takes part.
// kCluster CTAs that share A (WgConfig CLUSTER) are one stream-K block
// (`bid` of `grid`) and split each tile's columns: CTA `part` stores and
// sums its part of every slot, and counts on its own counter.
template <int N, int kThreads, int kSync, int kCluster = 1>
__device__ __forceinline__ bool FullTileFixup(const Params& p, float (&acc)[N], int tile, long long u_begin,
                                              long long u_end, int* sh_flag, int bid, int grid, int part) {
  const int tid = threadIdx.x;
  const long long t_begin = static_cast<long long>(tile) * p.k_tiles, t_end = t_begin + p.k_tiles;
  if (u_begin <= t_begin && u_end >= t_end) return true;  // this block holds the whole tile
  constexpr long long kSlotFloats = static_cast<long long>(N) * kThreads;
  constexpr long long kPitch = kSlotFloats * kCluster;
  float* mine = p.partials + StreamKSlot(p.units, grid, bid, t_begin) * kPitch + part * kSlotFloats;
#pragma unroll
  for (int i = 0; i < N; ++i) __stcg(mine + i * kThreads + tid, acc[i]);
  const int b_first = StreamKOwner(p.units, grid, t_begin), b_last = StreamKOwner(p.units, grid, t_end - 1);
  if (!StreamKArriveLast<kSync>(p.counters + tile * kCluster + part, b_last - b_first + 1, sh_flag)) return false;
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.f;
  for (int b = b_first; b <= b_last; ++b) {
    const float* slot = p.partials + StreamKSlot(p.units, grid, b, t_begin) * kPitch + part * kSlotFloats;
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += __ldcg(slot + i * kThreads + tid);
  }
  return true;
}

// ---------------------------------------------------------------- configuration

template <int BT, int MW, int STAGES, int MIN_BLOCKS = 1, int DEPTH = 1, int KS = 4, bool WS = false,
          bool TMA = false, int WGS = 2, int CLUSTER = 1, class ELEM = F16>
struct WgConfig {
  using Elem = ELEM;                      // F16 or BF16: a, scales, bias and c (w4a16_dequant.cuh)
  static constexpr int kBm = BT;          // rows of A per tile (the wgmma N)
  static constexpr int kMw = MW;          // 64-column blocks per warpgroup
  static constexpr int kWgs = WGS;        // compute warpgroups per block (1 or 2)
  static constexpr int kBn = 64 * WGS * MW;  // columns of C per tile
  static constexpr int kKs = KS;          // k16 steps per stage (4 or 8)
  static constexpr int kBk = 16 * KS;     // kernel rows per stage
  static constexpr int kHalves = KS / 4;  // 64-row swizzle atoms per row of A and stage
  static constexpr int kStages = STAGES;  // cp.async ring depth
  static constexpr int kMinBlocks = MIN_BLOCKS;  // launch bound: resident blocks per SM
  static constexpr int kDepth = DEPTH;           // wgmma stages left in flight by each wait (1 or 2)
  // Warp-specialized (WS): a producer warp (warp 8) fills the ring. Nine
  // warps put three on one SM sub-partition, which caps registers at 168 per
  // thread: only tiles with BT*MW <= 128 keep their wgmma unserialized.
  static constexpr bool kWs = WS;
  // Producer warpgroup (WS and TMA, the wg_pc_* tuning variants): the
  // producer is a whole warpgroup so that `setmaxnreg` can move
  // registers between roles (it acts on warpgroups): the producer keeps
  // kProducerRegs, the compute warpgroups take kConsumerRegs, and one thread
  // of the producer issues each stage's tensor and bulk copies. The 168 cap
  // above then no longer holds the 256-row tiles.
  static constexpr bool kProducerWg = WS && TMA;
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  // TMA: each slot is staged by one tensor copy of A per 64-row half (the
  // hardware writes the 128-byte swizzle and zero-fills rows past m) and one
  // bulk copy per row of QF4 tiles, scales and zeros, all completing on the
  // slot's mbarrier; lane 0 of each warp issues one or two of them.
  // The map is fp16 for bf16 activations too: a tensor copy moves bytes
  // (same element size, and rows past m fill with +0 in both types).
  static constexpr bool kTma = TMA;
  // One warpgroup per block (_w1): a block's barrier then holds only its own
  // 4 warps, and the two blocks an SM runs drift apart, so one can dequantize
  // while the other's wgmma run.
  static constexpr int kComputeThreads = 128 * WGS;
  static constexpr int kProducerThreads = !WS ? 0 : TMA ? 128 : 32;
  static constexpr int kThreads = kComputeThreads + kProducerThreads;
  static constexpr int kCopyThreads = WS ? 32 : kComputeThreads;               // threads that issue the copies
  // Pairs of CTAs that share A (CLUSTER = 2, the _mc2 variants; TMA only):
  // the two CTAs of a cluster work on the same rows of A and stream-K units,
  // each on its own BN columns of a 2*BN-column tile (the host's bn), and
  // each loads half of every A stage by TMA multicast into both, so A
  // crosses from L2 once per two column tiles. (At M = 256, dropping the A
  // copies altogether took 18-29% off the time: kernels/MEASUREMENTS.md.) A
  // slot is refilled once both CTAs have retired its wgmma: every warp of the
  // pair arrives on the slot's empty barrier in both CTAs after the wait that
  // retires it. (A cluster barrier per stage instead, which compiled to
  // MEMBAR.ALL.GPU before every arrival, ran the pairs 30-40% slower.)
  static constexpr int kCluster = CLUSTER;
  static constexpr int kAccSet = BT / 2;  // fp32 per thread per 64-column block
  static constexpr int kAcc = MW * kAccSet;
  static constexpr int kColTiles = kBn / 64;  // QF4 tiles across the block's columns
  static constexpr int kAStage = kHalves * BT * 128;    // bytes: [kHalves][BT rows][64 fp16], swizzled
  static constexpr int kBStage = KS * kColTiles * 512;  // bytes: KS x kColTiles QF4 tiles
  static constexpr int kGroupRows = kBk / 32;           // group rows a stage can span (group size >= 32)
  static constexpr int kSStage = kGroupRows * kBn * 2;  // bytes: fp16 scales
  static constexpr int kZStage = kGroupRows * kBn / 2;  // bytes: 4-bit zeros
  static constexpr int kTileFloats = BT * kBn;         // one split-K slot = kAcc * kThreads
  // + 1024: the activation ring is aligned to the swizzle atom at run time.
  static constexpr size_t kSmemBytes = 1024 + size_t{STAGES} * (kAStage + kBStage + kSStage + kZStage);
  static_assert(kTileFloats == kAcc * kComputeThreads, "a slot holds every compute thread's accumulators");
  static_assert(kAStage % 1024 == 0, "activation stages stay atom-aligned");
  static_assert(KS == 4 || KS == 8, "one or two swizzle atoms per row of a stage");
  static_assert(BT * 8 * kHalves % kCopyThreads == 0 && (KS * kColTiles * 32) % kCopyThreads == 0,
                "equal copy shares");
  static_assert(DEPTH == 1 || DEPTH == 2, "two or three A register sets");
  static_assert(!kProducerWg || kConsumerRegs * kComputeThreads + kProducerRegs * 128 <= 65536,
                "the roles' registers fit the SM's register file");
  static_assert(WGS == 1 || WGS == 2, "one or two compute warpgroups");
  static_assert(STAGES >= DEPTH + 2, "slot i-1-DEPTH is refilled at stage i");
  static_assert(CLUSTER == 1 || (CLUSTER == 2 && TMA), "A is multicast by TMA");
  static_assert(BT % (8 * CLUSTER) == 0, "each CTA's share of A is whole 8-row swizzle atoms");
};

// ---------------------------------------------------------------- the kernel

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    W4A16WgmmaKernel(const Params p, const __grid_constant__ CUtensorMap a_map) {
  constexpr int BT = Cfg::kBm, BN = Cfg::kBn, MW = Cfg::kMw, STAGES = Cfg::kStages;
  constexpr int kThreads = Cfg::kComputeThreads, kAccSet = Cfg::kAccSet, kColTiles = Cfg::kColTiles;
  constexpr int kDepth = Cfg::kDepth;
  constexpr int kPrefetch = STAGES - 1 - kDepth;  // copies in flight ahead of the stage computed
  using Elem = typename Cfg::Elem;
  constexpr bool kBf16 = Elem::kBf16;

  extern __shared__ int4 smem_raw[];
  __shared__ int sh_flag;
  // Warp-specialized ring hand-off: full[s] completes when the producer's 32
  // lanes' copies into slot s have landed, empty[s] when the 256 compute
  // threads have retired the wgmma that read it.
  // TMA: full[s] completes when the bulk and tensor copies into slot s have
  // landed (lane 0 of warp 0 arms it with the stage's byte count). Cluster
  // pairs: empty[s] (after full) when every warp of both CTAs has retired the
  // wgmma that read slot s.
  __shared__ uint64_t ring_bar[Cfg::kWs || Cfg::kCluster > 1 ? 2 * STAGES : Cfg::kTma ? STAGES : 1];
  char* base = reinterpret_cast<char*>(smem_raw) + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
  char* sh_a = base;                                                          // [STAGES][BT][128 B]
  char* sh_b = sh_a + STAGES * Cfg::kAStage;                               // [STAGES][KS][kColTiles][32] int4
  __half* sh_s = reinterpret_cast<__half*>(sh_b + STAGES * Cfg::kBStage);  // [STAGES][kGroupRows][BN]
  uint32_t* sh_z = reinterpret_cast<uint32_t*>(sh_s + STAGES * Cfg::kGroupRows * BN);  // [STAGES][kGroupRows][BN/8]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wg = warp / 4, wq = warp % 4;  // warpgroup, warp inside it
  constexpr int kCluster = Cfg::kCluster;
  // The stream-K block is the cluster; `part` picks this CTA's columns.
  const int part = kCluster > 1 ? static_cast<int>(blockIdx.x) % kCluster : 0;
  // This CTA's BN-column tile of the plan's tile nt (kCluster * BN columns).
  const auto cta_tile = [&](int nt) { return nt * kCluster + part; };
  const int sk_bid = static_cast<int>(blockIdx.x) / kCluster, sk_grid = static_cast<int>(gridDim.x) / kCluster;
  const StreamKRange range = BlockUnits(p, sk_bid, sk_grid);
  const long long u_begin = range.begin, u_end = range.end;
  const int count = range.count;
  const int k_tiles = p.k_tiles, m_chunks = p.m_chunks;
  // Group sizes: a power of two below the stage depth (several groups per
  // stage, each starting every gs/16 k16 steps) or a multiple of it (one).
  const int gs = p.group_size;
  const int group_rows = gs < Cfg::kBk ? Cfg::kBk / gs : 1;
  const int group_step_mask = gs < Cfg::kBk ? gs / 16 - 1 : Cfg::kKs - 1;
  const int n64 = p.n / 64;
  const uint64_t b_policy = m_chunks == 1 ? EvictFirstPolicy() : EvictNormalPolicy();

  const int tile_begin = range.tile;
  int f_kt = range.kt, f_mc = tile_begin % m_chunks, f_nt = tile_begin / m_chunks;

  // ---- Copy addressing. Copy thread ct (every thread, or the producer
  // warp's lanes) copies the same pieces of every stage: A chunk a_c of rows
  // a_r + kARowsPerIt*it and B chunk ct + it*kCopyThreads of the stage's QF4
  // tiles. Their global addresses are byte pointers that advance by one stage
  // per fetch and are recomputed (seek) only when the tile changes; a copy's
  // address is its pointer plus a compile-time multiple of a 32-bit stride
  // (one IMAD.WIDE), and the stage's group row is an offset that steps when
  // a group ends. (Recomputing 64-bit offsets and the group row, a shift or a
  // division behind a branch, per copy and stage had put ~130 instructions
  // between the stage barrier and the dequantization of the M = 64 kernel.)
  constexpr int kCT = Cfg::kCopyThreads;
  const int ct = Cfg::kWs ? lane : tid;
  constexpr int kAChunks = 8 * Cfg::kHalves;   // 16-byte chunks per row of A and stage
  constexpr int kARowsPerIt = kCT / kAChunks;  // a power of two
  const int a_r = ct / kAChunks, a_c = ct % kAChunks;
  // Swizzled chunk of row r = a_r + kARowsPerIt*it: (a_c % 8) ^ (r % 8), and
  // r % 8 = (a_r % 8) ^ (kARowsPerIt*it % 8) (a_r < kARowsPerIt or the step
  // is a multiple of 8: no carry), a constant per unrolled it.
  const int a_sh_off = (a_c / 8) * BT * 128 + a_r * 128, a_swz = (a_c % 8) ^ (a_r % 8);
  // Every byte offset below is < 2^32: the variants take k, n <= 2^23
  // (kWgmmaMaxKn), and an offset spans at most a tile's rows of A or a
  // stage's rows of weights.
  const uint32_t a_it_bytes = static_cast<uint32_t>(kARowsPerIt) * p.k * 2;  // between a thread's rows
  constexpr int kBRow = kColTiles * 32;  // 16-byte chunks per k16 row of a stage's QF4 tiles
  const uint32_t b_row_bytes = static_cast<uint32_t>(n64) * 512;
  const char* a_src = nullptr;  // row a_r of the fetch tile, at its k0
  int a_left = 0;               // rows of the fetch tile from a_r on that exist
  bool a_full = false;          // every row this thread copies exists (all but a last, partial tile)
  const char* b_src = nullptr;  // this thread's first chunk of the fetch stage's QF4 tiles
  // The fetch stage's first group row, at the fetch tile's columns: an offset
  // in 16-byte units of the scales and in words of the zeros (both n / 8 per
  // row). g_k is the stage's k inside its group; a stage of several groups
  // (gs < kBk) always starts one.
  long long g_off = 0;
  int g_k = 0;
  const int g_step = (gs < Cfg::kBk ? Cfg::kBk / gs : 1) * (p.n / 8);  // when a group ends
  auto seek = [&]() {
    const int m0 = f_mc * BT;
    a_left = p.m - m0 - a_r;
    a_full = a_left > BT - kARowsPerIt;
    a_src = reinterpret_cast<const char*>(p.a + static_cast<long long>(a_left > 0 ? m0 + a_r : 0) * p.k +
                                          f_kt * Cfg::kBk + a_c * 8);
    const int f_ct = cta_tile(f_nt);
    b_src = reinterpret_cast<const char*>(p.b + (static_cast<long long>(f_kt) * Cfg::kKs * n64 + f_ct * kColTiles) * 32) +
            (ct / kBRow) * b_row_bytes + (ct % kBRow) * 16;
    const int k0 = f_kt * Cfg::kBk;
    const int g0 = GroupRow(p, k0);
    g_k = k0 - g0 * gs;
    g_off = static_cast<long long>(g0) * (p.n / 8) + f_ct * (BN / 8);
  };
  seek();

  // ---- fetch_stage: copies of the next unit into ring slot `slot`.
  auto fetch_stage_cp = [&](int slot) {
    // A: BT rows x kAChunks chunks of 16 bytes; rows past m read nothing (zeros).
    // A full tile takes the path without a predicate and select per copy
    // (ISETP and SEL were 12% of wg_t256_n128_s4's instructions at m = 256,
    // issued right after the stage barrier).
    char* a_sh = sh_a + slot * Cfg::kAStage + a_sh_off;
    if (a_full) {
#pragma unroll
      for (int it = 0; it < BT / kARowsPerIt; ++it)
        CpAsync16(a_sh + it * kARowsPerIt * 128 + (a_swz ^ ((kARowsPerIt * it) % 8)) * 16, a_src + it * a_it_bytes);
    } else {
#pragma unroll
      for (int it = 0; it < BT / kARowsPerIt; ++it) {
        const bool valid = kARowsPerIt * it < a_left;
        const int chunk = a_swz ^ ((kARowsPerIt * it) % 8);
        CpAsync16Zfill(a_sh + it * kARowsPerIt * 128 + chunk * 16,
                       valid ? a_src + it * a_it_bytes : reinterpret_cast<const char*>(p.a),
                       valid ? 16 : 0);
      }
    }
    // B: the KS k16 rows of QF4 tiles; the kColTiles tiles of one row are
    // contiguous in global memory (512 bytes each).
    int4* b_sh = reinterpret_cast<int4*>(sh_b + slot * Cfg::kBStage) + ct;
#pragma unroll
    for (int it = 0; it < Cfg::kKs * kBRow / kCT; ++it) {
      const int q0 = it * kCT;  // first piece of round it: k16 row q0 / kBRow
      CpAsync16Hint(b_sh + q0, b_src + (q0 / kBRow) * b_row_bytes + (q0 % kBRow) * 16, b_policy);
    }
    // Scales (BN/8 chunks per group row) and zeros (BN/32 chunks per row) of
    // the stage's groups; the zeros start at the other half of the copiers.
    // Unrolled ifs, not loops: one round for 256 copiers (with loops the
    // kernel's code grew by a third and M = 64/256 ran ~6% slower on the H200).
    const int rows = group_rows;
#pragma unroll
    for (int r = 0; r < (Cfg::kGroupRows * (BN / 8) + kCT - 1) / kCT; ++r) {
      const int t = ct + r * kCT;
      if (t < rows * (BN / 8)) {
        const int gr = t / (BN / 8), ch = t % (BN / 8);
        CpAsync16(reinterpret_cast<int4*>(sh_s + (slot * Cfg::kGroupRows + gr) * BN) + ch,
                  p.scales + (g_off + gr * (p.n / 8) + ch));
      }
    }
    static_assert(Cfg::kTma || Cfg::kGroupRows * (BN / 32) <= kCT / 2, "one round of zero copies");
    if (const int t = ct ^ (kCT / 2); p.zeros != nullptr && t < rows * (BN / 32)) {
      const int gr = t / (BN / 32), ch = t % (BN / 32);
      CpAsync16(reinterpret_cast<int4*>(sh_z + (slot * Cfg::kGroupRows + gr) * (BN / 8)) + ch,
                p.zeros + (g_off + gr * (p.n / 8) + 4 * ch));
    }
  };
  // TMA: the stage's copies are numbered (the kHalves tensor boxes of A, the
  // KS rows of QF4 tiles, the scale rows, the zero rows) and lane 0 of warp
  // w issues copies w, w + 8, ...: one or two per warp, so no warpgroup's
  // wgmma waits on a warp busy issuing the whole stage. Warp 0 also arms the
  // slot's barrier with the stage's bytes (a box counts whole, its
  // zero-filled rows included); a copy that completes before the arming only
  // drives the barrier's byte count below zero, the phase still needs the
  // arrival.
  [[maybe_unused]] const uint64_t s_policy = Cfg::kTma ? EvictNormalPolicy() : 0;
  [[maybe_unused]] const uint32_t stage_bytes =
      Cfg::kAStage + Cfg::kBStage + group_rows * (BN * 2 + (p.zeros != nullptr ? BN / 2 : 0));
  [[maybe_unused]] const int stage_copies = Cfg::kHalves + Cfg::kKs + group_rows * (p.zeros != nullptr ? 2 : 1);
  // Cluster pairs: a refill (the fetch's fill of its slot past the first)
  // first waits until both CTAs have retired the slot's previous stage; its
  // multicast writes the peer's slot too. The arming needs no wait: this
  // CTA's own wait on the slot's last phase came before.
  [[maybe_unused]] int fetched = 0;  // stages fetched by this block so far
  auto fetch_stage_tma = [&](int slot) {
    if (lane != 0) return;
    uint64_t* bar = ring_bar + slot;
    if constexpr (kCluster > 1 && !Cfg::kProducerWg) {  // (the producer waited on empty[slot])
      const int round = fetched / STAGES;  // this fill of the slot, from 0
      if (round > 0 && warp < stage_copies) MbarWaitInFlight(ring_bar + STAGES + slot, (round - 1) & 1);
    }
    // The producer warpgroup's one copying thread issues them all.
    constexpr int kCopyWarps = Cfg::kProducerWg ? 1 : kThreads / 32;
    const int cw = Cfg::kProducerWg ? 0 : warp;
    if (cw == 0) MbarArriveExpectTx(bar, stage_bytes);
    const int k0 = f_kt * Cfg::kBk, f_ct = cta_tile(f_nt);
    constexpr int kBFirst = Cfg::kHalves, kSFirst = kBFirst + Cfg::kKs;
    const int z_first = kSFirst + group_rows;
    for (int c = cw; c < stage_copies; c += kCopyWarps) {
      if (c < kBFirst) {
        if constexpr (kCluster > 1) {  // this CTA's share of the rows, into every CTA of the cluster
          constexpr int kRows = BT / kCluster;
          TmaLoad2dMulticast(sh_a + slot * Cfg::kAStage + c * BT * 128 + part * kRows * 128, &a_map, k0 + 64 * c,
                             f_mc * BT + part * kRows, bar, static_cast<uint16_t>((1u << kCluster) - 1));
        } else {
          TmaLoad2d(sh_a + slot * Cfg::kAStage + c * BT * 128, &a_map, k0 + 64 * c, f_mc * BT, bar);
        }
      } else if (c < kSFirst) {
        const int j = c - kBFirst;
        BulkCopy(sh_b + slot * Cfg::kBStage + j * kColTiles * 512,
                 p.b + ((static_cast<long long>(f_kt) * Cfg::kKs + j) * n64 + f_ct * kColTiles) * 32,
                 kColTiles * 512, bar, b_policy);
      } else if (c < z_first) {
        const int gr = c - kSFirst;
        BulkCopy(sh_s + (slot * Cfg::kGroupRows + gr) * BN, p.scales + (g_off + gr * (p.n / 8)), BN * 2, bar,
                 s_policy);
      } else {
        const int gr = c - z_first;
        BulkCopy(sh_z + (slot * Cfg::kGroupRows + gr) * (BN / 8), p.zeros + (g_off + gr * (p.n / 8)), BN / 2, bar,
                 s_policy);
      }
    }
  };
  auto fetch_stage = [&](int slot) {
    if constexpr (Cfg::kTma) {
      fetch_stage_tma(slot);
      if constexpr (kCluster > 1) ++fetched;
    } else {
      fetch_stage_cp(slot);
    }
    if (++f_kt == k_tiles) {
      f_kt = 0;
      if (++f_mc == m_chunks) {
        f_mc = 0;
        ++f_nt;
      }
      seek();
    } else {
      a_src += Cfg::kBk * 2;
      b_src += Cfg::kKs * b_row_bytes;
      if ((g_k += Cfg::kBk) >= gs) {
        g_k = 0;
        g_off += g_step;
      }
    }
  };

  float acc[MW][kAccSet];
  auto zero_acc = [&]() {
#pragma unroll
    for (int mw = 0; mw < MW; ++mw)
#pragma unroll
      for (int i = 0; i < kAccSet; ++i) acc[mw][i] = 0.f;
  };

  // Which 16 columns warp wq feeds into wgmma mw: column subgroup
  // s = wq * MW + mw of the warpgroup's 4 * MW, i.e. word s % 4 of QF4 tile
  // s / 4. So a warp's MW words of one k16 row are adjacent in each lane's
  // 16 bytes and come in one LDS.32/64. (The order mw * 4 + wq, one word
  // per load, had the lanes 16 bytes apart: 4-way bank conflicts, 512 of
  // the 1317 shared-memory wavefronts of an M = 64 stage.)
  static_assert(MW == 1 || MW == 2, "a warp's words are one 4- or 8-byte load");
  const int w_tile = wg * MW + (wq * MW) / 4;  // the warp's QF4 tile among the block's kColTiles
  const int w_word = (wq * MW) % 4;            // its first word in each lane's 16 bytes

  // Dequantization constants of this lane's two columns (fragments 2*word
  // and 2*word+1 of QF4 tile q) for one group row of a stage.
  struct ConstsF16 {
    half2 s_a, zlo_a, zhi_a, s_b, zlo_b, zhi_b;
  };
  struct ConstsBf16 {
    __nv_bfloat162 s_a, z_a, s_b, z_b;  // z: (128 + zero, 128 + zero)
  };
  using Consts = std::conditional_t<kBf16, ConstsBf16, ConstsF16>;
  auto load_consts = [&](int slot, int gr, int q, int word) {
    // Scales are permuted inside each 64-column chunk: the lane's two columns
    // 64q + 16word + lane/4 (+8) sit side by side at 64q + 8*(lane/4) + 2word.
    const uint32_t s = *reinterpret_cast<const uint32_t*>(sh_s + (slot * Cfg::kGroupRows + gr) * BN + 64 * q +
                                                          8 * (lane / 4) + 2 * word);
    // Zeros: byte (2word) % 4 and the next of word 8q + lane/4, low nibbles
    // for fragments 0..3, high for 4..7 (symmetric: 8 everywhere).
    const uint32_t zw =
        p.zeros != nullptr ? sh_z[(slot * Cfg::kGroupRows + gr) * (BN / 8) + 8 * q + lane / 4] : 0x88888888u;
    const uint32_t zz = (word >= 2 ? zw >> 4 : zw) & 0x0F0F0F0Fu;
    const uint32_t b_a = (2 * word) % 4, b_b = b_a + 1;
    Consts c;
    if constexpr (kBf16) {
      c.s_a = __low2bfloat162(AsBf162(s));
      c.s_b = __high2bfloat162(AsBf162(s));
      // Bytes (z, 0x43, z, 0x43): bf16 0x43zz = 128 + z in both halves.
      c.z_a = AsBf162(__byte_perm(zz, 0x43434343u, b_a | 0x4040u | (b_a << 8)));
      c.z_b = AsBf162(__byte_perm(zz, 0x43434343u, b_b | 0x4040u | (b_b << 8)));
    } else {
      c.s_a = __low2half2(AsHalf2(s));
      c.s_b = __high2half2(AsHalf2(s));
      // Bytes (z, 0x64, z, 0x64): fp16 0x64zz = 1024 + z in both halves.
      c.zlo_a = AsHalf2(__byte_perm(zz, 0x64646464u, b_a | 0x4040u | (b_a << 8)));
      c.zlo_b = AsHalf2(__byte_perm(zz, 0x64646464u, b_b | 0x4040u | (b_b << 8)));
      c.zhi_a = __hsub2(AsHalf2(0x63806380u), c.zlo_a);  // 960 - (1024 + z) = -(64 + z)
      c.zhi_b = __hsub2(AsHalf2(0x63806380u), c.zlo_b);
    }
    return c;
  };

  // ---- compute_stage: dequantize the stage into the A registers `af`, then
  // issue its 4 * MW wgmma as one group. Returns with that group in flight:
  // `af` must not be written until a wait retires the group. `one_group`
  // (std::true_type: the group size is at least the stage's depth, e.g. 128)
  // loads the group constants once, at step 0; otherwise a runtime test per
  // step finds where groups start. That test is a branch per step, and a
  // branch ends a basic block, so ptxas cannot move the shared-memory loads of
  // later steps' words above it: each step waited for its own loads.
  using AFrags = uint32_t[MW][Cfg::kKs][4];
  auto compute_stage = [&](int slot, AFrags& af, auto one_group) {
    const uint32_t* b_words = reinterpret_cast<const uint32_t*>(sh_b + slot * Cfg::kBStage);
    const uint32_t a_addr = SmemAddr(sh_a + slot * Cfg::kAStage);
    Consts c[MW];
    // Dequantize the whole stage, then one fence and one batch of wgmma (a
    // fence and issue per k16 step measured the same on the H200).
#pragma unroll
    for (int j = 0; j < Cfg::kKs; ++j) {
      if (j == 0 || (!decltype(one_group)::value && (j & group_step_mask) == 0)) {  // a group starts here
        const int gr = j == 0 ? 0 : (16 * j) >> p.group_log2;
#pragma unroll
        for (int mw = 0; mw < MW; ++mw) c[mw] = load_consts(slot, gr, w_tile, w_word + mw);
      }
      // Words w_word .. w_word + MW - 1 of this lane's 16 bytes in QF4 tile
      // (k16 row j, column w_tile).
      uint32_t words[MW];
      LoadWords<MW>(b_words + ((j * kColTiles + w_tile) * 32 + lane) * 4 + w_word, words);
#pragma unroll
      for (int mw = 0; mw < MW; ++mw) {
        FragPairs f;
        if constexpr (kBf16) {
          f = DequantFragPair(words[mw], c[mw].s_a, c[mw].z_a, c[mw].s_b, c[mw].z_b);
        } else {
          f = DequantFragPair(words[mw], c[mw].s_a, c[mw].zlo_a, c[mw].zhi_a, c[mw].s_b, c[mw].zlo_b, c[mw].zhi_b);
        }
        // A fragment: a0 (row g, k), a1 (row g+8, k), a2 (row g, k+8), a3 (row g+8, k+8).
        af[mw][j][0] = f.lo_a;
        af[mw][j][1] = f.lo_b;
        af[mw][j][2] = f.hi_a;
        af[mw][j][3] = f.hi_b;
      }
    }
    WgmmaFence();
#pragma unroll
    for (int j = 0; j < Cfg::kKs; ++j) {
      // Step j reads 32 bytes at (j % 4) * 32 of each 128-byte row of atom j / 4.
      const uint64_t desc = SmemDescSw128(a_addr + (j / 4) * BT * 128 + 32 * (j % 4));
#pragma unroll
      for (int mw = 0; mw < MW; ++mw) WgmmaM64K16<BT, kBf16>(acc[mw], af[mw][j], desc);
    }
    WgmmaCommit();
  };

  // ---- finish_tile: split-K fixup when other blocks share the tile, then
  // C (+ bias) straight from the accumulators. Accumulator i of block mw holds
  // column 64 w_tile + 16 (w_word + mw) + lane/4 (+8 for i % 4 >= 2) and row
  // 8(i/4) + 2(lane%4) (+1 for odd i) of the tile.
  auto finish_tile = [&](int nt, int mc) {
    // acc[mw][i] is accumulator mw * kAccSet + i of the slot.
    float(&flat)[MW * kAccSet] = reinterpret_cast<float(&)[MW * kAccSet]>(acc);
    if (!FullTileFixup<MW * kAccSet, kThreads, Cfg::kWs ? kThreads : 0, kCluster>(
            p, flat, nt * m_chunks + mc, u_begin, u_end, &sh_flag, sk_bid, sk_grid, part))
      return;
#pragma unroll
    for (int mw = 0; mw < MW; ++mw) {
      const int col_a = cta_tile(nt) * BN + 64 * w_tile + 16 * (w_word + mw) + lane / 4;
      const float bias_a = p.bias != nullptr ? Elem::Load1(p.bias + col_a) : 0.f;
      const float bias_b = p.bias != nullptr ? Elem::Load1(p.bias + col_a + 8) : 0.f;
#pragma unroll
      for (int i = 0; i < kAccSet; ++i) {
        const int row = mc * BT + 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
        if (row < p.m) {
          const int col = col_a + (i % 4 >= 2 ? 8 : 0);
          Elem::Store1(p.c + static_cast<long long>(row) * p.n + col, acc[mw][i] + (i % 4 >= 2 ? bias_b : bias_a));
        }
      }
    }
  };

  // ---- The A registers of a wgmma group in flight. ptxas before CUDA 13.3
  // may hand the input registers of an asynchronous wgmma to later
  // instructions before the wgmma has read them (fixed in 13.3's assembler),
  // so the kernel keeps them live itself: stages rotate through kDepth + 1
  // register sets (the loop below is unrolled by that much, so no set is ever
  // copied), and after the wait that retires a group its set is folded into
  // `sink`, a real use that ends the set's live range there. The fold costs
  // 8 * MW three-input XORs per stage; `sink` is consumed by a store that
  // never happens (m is never negative) so that ptxas cannot drop it.
  AFrags af_x = {}, af_y = {}, af_z = {};
  uint32_t sink = 0;
  auto retire = [&](const AFrags& af) {
#pragma unroll
    for (int mw = 0; mw < MW; ++mw)
#pragma unroll
      for (int j = 0; j < Cfg::kKs; ++j) sink ^= af[mw][j][0] ^ af[mw][j][1] ^ af[mw][j][2] ^ af[mw][j][3];
  };
  int slot = 0;
  // One stage: wait for its copies, refill the slot of stage i-1-kDepth,
  // compute into `af`, retire stage i-kDepth's group (registers `old`).
  // Where the refill's copies go (H200, A/B in one run, kernels/MEASUREMENTS.md):
  // with one stage of wgmma in flight, before the compute, so that they have
  // the most time to land (after it: 2-9% slower at m = 64 and 256, 21-27%
  // for the 3-stage ring); with two stages in flight, after the stage's
  // wgmma are issued, which takes them off the path from the barrier to the
  // tensor cores (wg_t256_n128_s5_d2 at m = 256, together with the A copies
  // without predicate: 2-14% faster in the loop, 5-16% cold).
  constexpr bool kFetchLate = kDepth == 2;
  auto refill = [&](int i) {
    if (i + kPrefetch < count) fetch_stage(slot + kPrefetch >= STAGES ? slot + kPrefetch - STAGES : slot + kPrefetch);
    CpAsyncCommit();
  };
  uint32_t phase = 0;  // parity of slot `slot`'s current fill (mbarrier hand-offs)
  // Cluster pairs: lane 0 of each warp hands a retired slot back to both
  // CTAs (the addresses of empty[0] there; each warp arrives for itself,
  // so no lane relies on another warp's wait).
  [[maybe_unused]] uint32_t empty_at[kCluster];
  if constexpr (kCluster > 1) {
#pragma unroll
    for (int r = 0; r < kCluster; ++r) empty_at[r] = MapShared(SmemAddr(ring_bar + STAGES), r);
  }
  auto step = [&](int i, AFrags& af, const AFrags& old, auto one_group) {
    if constexpr (kCluster > 1) {
      if constexpr (!kFetchLate) refill(i);  // waits for both CTAs to retire stage i-1-kDepth's slot
      MbarWaitInFlight(ring_bar + slot, phase);
    } else if constexpr (Cfg::kTma) {
      __syncthreads();  // every warpgroup retired stage i-1-kDepth's wgmma: its slot may be refilled
      if constexpr (!kFetchLate) refill(i);
      MbarWaitInFlight(ring_bar + slot, phase);  // stage i landed (the async proxy wrote it, wgmma reads it there)
    } else {
      CpAsyncWait<kPrefetch - 1>();
      FenceProxyAsync();  // this thread's cp.async bytes, before wgmma reads them through the async proxy
      __syncthreads();    // stage i landed everywhere; every warpgroup retired stage i-1-kDepth's wgmma
      if constexpr (!kFetchLate) refill(i);
    }
    compute_stage(slot, af, one_group);
    if constexpr (kFetchLate) refill(i);
    WgmmaWait<kDepth>();  // stage i-kDepth's group: its A registers and ring slot are free
    retire(old);
    if constexpr (kCluster > 1) {
      const uint32_t off = static_cast<uint32_t>(slot >= kDepth ? slot - kDepth : slot - kDepth + STAGES) * 8;
#pragma unroll
      for (int r = 0; r < kCluster; ++r) MbarArriveIf<true>(empty_at[r] + off, lane == 0 && i >= kDepth);
    }
    if (slot == STAGES - 1) {
      slot = 0;
      phase ^= 1;
    } else {
      ++slot;
    }
  };

  // ---- Warp-specialized stage (kWs): wait until the producer's copies of
  // the stage have landed, compute it, retire stage i-kDepth's group and hand
  // the oldest held slot back (`held`, in ring order; `holding` counts the
  // tile's stages computed and not yet handed back: a tile's first stages
  // hand back nothing, the tile-end wait retired and released the rest). The
  // hand-off is a predicated arrive, not a branch beside the wgmma.
  uint64_t* const full_bar = ring_bar;
  uint64_t* const empty_bar = ring_bar + (Cfg::kWs ? STAGES : 0);
  int held = 0, holding = 0;
  auto release = [&](bool pred) {
    if constexpr (kCluster > 1) {  // lane 0 of each warp, in both CTAs (empty_at)
#pragma unroll
      for (int r = 0; r < kCluster; ++r) MbarArriveIf<true>(empty_at[r] + held * 8, pred && lane == 0);
    } else {
      MbarArriveIf(empty_bar + held, pred);
    }
    held = pred ? (held == STAGES - 1 ? 0 : held + 1) : held;
    holding -= pred;
  };
  auto step_ws = [&](AFrags& af, const AFrags& old, auto one_group) {
    if constexpr (Cfg::kProducerWg) {
      MbarWaitRaised<Cfg::kProducerRegs>(SmemAddr(full_bar + slot), phase);
    } else {
      MbarWait(full_bar + slot, phase);
    }
    // The producer's cp.async bytes, acquired above, before wgmma reads them
    // (TMA writes through the async proxy already).
    if constexpr (!Cfg::kTma) FenceProxyAsync();
    compute_stage(slot, af, one_group);
    ++holding;
    WgmmaWait<kDepth>();
    retire(old);
    release(holding > kDepth);
    if (++slot == STAGES) {
      slot = 0;
      phase ^= 1;
    }
  };
  auto stage = [&](int i, AFrags& af, const AFrags& old, auto one_group) {
    if constexpr (Cfg::kWs) {
      step_ws(af, old, one_group);
    } else {
      step(i, af, old, one_group);
    }
  };

  // ---- main loop: tiles outside, their k-stages inside. The accumulators
  // are redefined (zeroed, fixed up) only between tiles: inside the k loop
  // only wgmma writes them, so ptxas keeps the wgmma pipeline across
  // iterations instead of waiting for it at the back edge.
  //
  // Launched as a programmatic dependent (Params::pdl), everything above
  // overlapped the previous kernel: it touched no memory but registers.
  // A, C, the bias and the workspace's counters and partials are that
  // kernel's until it completes.
  GridDependencyWait();
  if constexpr (Cfg::kWs) {
    if (tid == 0) {
      for (int s = 0; s < STAGES; ++s) {
        // cp.async: one arrival per producer lane; TMA: the arming thread's
        // (the bytes complete the phase).
        MbarInit(full_bar + s, Cfg::kProducerWg ? 1 : kCT);
        // Cluster pairs: one arrival per compute warp of each CTA.
        MbarInit(empty_bar + s, kCluster > 1 ? kCluster * kThreads / 32 : kThreads);
      }
      QF_SM90(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
    }
    if constexpr (kCluster > 1) {  // the peer's copies and arrivals signal our barriers
      ClusterArrive();
      ClusterWait();
    } else {
      __syncthreads();
    }
    if (count <= 0) return;  // the same for every CTA of a cluster
    if (warp >= kThreads / 32) {
      // The producer: the block's stages in order into the ring, each slot
      // refilled once the compute threads have released its last use (the
      // first round finds every slot free: parity 1 of a fresh barrier). A
      // producer warpgroup first gives its registers to the compute
      // warpgroups; then one thread copies and the others leave (in a
      // cluster pair, at the pair's exit barrier: a CTA stays until its
      // peer can no longer arrive on its barriers).
      auto produce = [&]() {
        int ps = 0;
        uint32_t pphase = 0;
        for (int i = 0; i < count; ++i) {
          MbarWait(empty_bar + ps, pphase ^ 1);
          fetch_stage(ps);
          if constexpr (!Cfg::kTma) CpAsyncMbarArrive(full_bar + ps);
          if (++ps == STAGES) {
            ps = 0;
            pphase ^= 1;
          }
        }
        if constexpr (!Cfg::kTma) asm volatile("cp.async.wait_all;\n" ::: "memory");
      };
      if constexpr (Cfg::kProducerWg) {
        SetMaxNRegDec<Cfg::kProducerRegs>();
        if (warp == kThreads / 32 && lane == 0) produce();
        if constexpr (kCluster > 1) {
          __syncwarp();
          ClusterArrive();
          ClusterWait();
        }
      } else {
        produce();
      }
      return;
    }
    if constexpr (Cfg::kProducerWg) SetMaxNRegInc<Cfg::kConsumerRegs>();
  } else {
    if constexpr (Cfg::kTma) {
      if (tid == 0) {
        for (int s = 0; s < STAGES; ++s) MbarInit(ring_bar + s, 1);
        if constexpr (kCluster > 1) {
          for (int s = 0; s < STAGES; ++s) MbarInit(ring_bar + STAGES + s, kCluster * kThreads / 32);
        }
        QF_SM90(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
      }
      if constexpr (kCluster > 1) {  // the peer's first copies and arrivals signal our barriers
        ClusterArrive();
        ClusterWait();
      } else {
        __syncthreads();
      }
    }
    if (count <= 0) return;  // the same for every CTA of a cluster
#pragma unroll
    for (int s = 0; s < kPrefetch; ++s) {
      if (s < count) fetch_stage(s);
      CpAsyncCommit();
    }
  }
  // With 128-row stages the loop is compiled twice: for group sizes of at
  // least a stage (one group per stage: the common 128, or per-column) and for
  // smaller ones. On the H200 (bench/results/w4a16_h200_ceiling.log, runs
  // 34-36) the one-group loop took M = 64 2-8% faster; with 64-row stages
  // (256-row tiles, M = 256) it changed nothing beyond the spread, so those
  // keep the runtime test and half the code.
  auto run = [&](auto one_group) {
    int c_kt = range.kt, c_tile = tile_begin;
    for (int i = 0; i < count;) {
      const int end = i + min(k_tiles - c_kt, count - i);
      zero_acc();
      if constexpr (kDepth == 1) {
        while (true) {
          stage(i, af_x, af_y, one_group);
          if (++i == end) break;
          stage(i, af_y, af_x, one_group);
          if (++i == end) break;
        }
      } else {  // x, y, z: stage i retires stage i-2's set, the next in the rotation
        while (true) {
          stage(i, af_x, af_y, one_group);
          if (++i == end) break;
          stage(i, af_y, af_z, one_group);
          if (++i == end) break;
          stage(i, af_z, af_x, one_group);
          if (++i == end) break;
        }
      }
      WgmmaWait<0>();
      if (i == count) AllowDependents();  // the last tile's fixup and epilogue overlap the next launch
      if constexpr (Cfg::kWs) {
#pragma unroll
        for (int r = 0; r < kDepth; ++r) release(holding > 0);
      }
#pragma unroll
      for (int mw = 0; mw < MW; ++mw) FenceRegs(acc[mw]);
      finish_tile(c_tile / m_chunks, c_tile % m_chunks);
      c_kt = 0;
      ++c_tile;
    }
  };
  if constexpr (Cfg::kKs == 8) {
    if (gs >= Cfg::kBk) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  } else {
    run(std::false_type{});
  }
  if constexpr (!Cfg::kWs) CpAsyncWait<0>();
  // No CTA leaves while its peer may still arrive on its empty barriers: the
  // release orders each warp's last arrivals before the pair's barrier (every
  // copy into a CTA completes on its own full barriers, which it waited on).
  if constexpr (kCluster > 1) {
    ClusterArrive();
    ClusterWait();
  }
  if (sink == 0x9E3779B9u && p.m < 0) p.counters[0] = 0;
}

}  // namespace qf::kernels::w4a16
