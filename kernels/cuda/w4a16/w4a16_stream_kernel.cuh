// File: kernels/cuda/w4a16/w4a16_stream_kernel.cuh
//
// The weight-streaming W4A16 GEMM for few rows of A (decode), on the same
// QF4 layout as the tiled kernel (w4a16_kernel.cuh). Host side: w4a16_stream.cu;
// grid model: kernels/plan/stream_grid.h; picture: kernels/README.md; measurements: kernels/MEASUREMENTS.md.
//
// Roles are swapped with respect to the tiled kernel: the dequantized weights
// are the A operand of mma.m16n8k16 (16 output columns x 16 kernel rows) and
// the activations the B operand (8 rows of A per n8 block). One QF4 word of a
// lane already holds, for its two n8 fragments 2w and 2w+1, exactly the four
// A-operand registers of the 16 columns 16w..16w+15 (a0 = b0 of fragment 2w,
// a1 = b0 of 2w+1, a2 = b1 of 2w, a3 = b1 of 2w+1), so the layout is unchanged
// and one 512-byte tile costs 4 mma per 8 rows of A instead of 8.
//
//   grid (n/64/wn column groups, split), cluster (1, split, 1), wn x wk warps per block
//
// Warp (i, j) of block (x, y) owns the 64 columns of QF4 tile column x*wn + i
// and part j of the block's k-chunk (chunk y of split equal chunks, cut into
// wk parts). It streams its 512-byte tiles through a private DEPTH-slot ring,
// one slice per step: in shared memory by cp.async (evict-first; DEPTH-2
// tiles ahead), or with REG in registers by ld.global.nc (DEPTH ahead). The
// shared-memory operands of step i+1 are loaded during step i. A lives in
// shared memory in blocks of DEPTH slices per k-part, double buffered, with
// one block barrier per DEPTH steps. The split blocks of a column group form
// a thread-block cluster: each writes its fp32 partial tiles to its own
// shared memory, and after one cluster barrier block y sums its slice of the
// tile over all partials in rank and part order (distributed shared memory),
// adds the bias and stores fp16. The decode kernels push instead where the
// grid has room (StreamReduceStore): no cluster barrier after the main loop.
// One launch, no workspace, bit-identical from call to call.
//
// Dequantization (per QF4 word = 8 codes): 1 shift, 4 lop3 (code | 0x6400 =
// 1024 + q, exact), 2 hsub2 + 2 hfma2 (minus 1024 + z, resp. (1024 + 16q)/16
// - (64 + z): exact small integers). FOLD: the integers go straight into the
// mma, each group accumulates separately, and the group's scales are applied
// once per group per accumulator in fp32, so no weight is ever rounded.
// Without FOLD the scale is multiplied in fp16 per weight (4 hmul2 per word),
// which keeps the accumulators to one set (16 warps fit for 16 rows).
//
// Glossary: step = one slice (16 kernel rows) of a warp's k-part, s0 = the
// part's first slice, h = 8-row block of A, w = QF4 word (16 columns).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cuda/w4a16/w4a16_kernel.cuh"
#include "kernels/plan/stream_grid.h"  // StreamSmemBytes

namespace qf::kernels::w4a16 {

// a, scales, bias and c: 2-byte elements of the kernel's type (fp16, or bf16
// for the streaming and decode kernels' ELEM = BF16), as in Params.
struct StreamParams {
  const __half* a;        // [m x k] row-major, m <= 8*MH
  const int4* b;          // QF4 codes, 16-byte units
  const int4* scales;     // [G x n] QF4-permuted, 16-byte units
  const uint32_t* zeros;  // [G x n/8], nullptr = symmetric
  const __half* bias;     // [n] or nullptr
  __half* c;              // [m x n] row-major
  int m, n, k;
  int n64;               // n / 64: QF4 tiles across n
  int slices;            // k / 16
  int slices_per_group;  // group size / 16
  int groups;            // k / group size
  int wn;                // warps across n per block (one 64-column tile each)
  int wk;                // warps per column tile: the block's k-chunk in wk parts
  int recv_off;          // bytes into shared memory: the push reduction's mbarrier and
                         // receive buffer (PushRecvBytes), or 0: the pull reduction
};

template <int MH, int DEPTH, bool FOLD, bool REG>
struct StreamConfig {
  static constexpr int kMh = MH;        // 8-row blocks of A per launch
  static constexpr int kDepth = DEPTH;  // ring slots per warp = slices per A block
  static constexpr bool kFold = FOLD;   // scales applied per group in fp32 (else per weight in fp16)
  static constexpr bool kReg = REG;     // B ring in registers (ld.global.nc), else shared memory (cp.async)
  static constexpr int kRows = 8 * MH;
  // Register budget: the launch bound caps registers at 65536 / kMaxThreads;
  // 16 warps per multiprocessor keep enough tiles in flight.
  static constexpr int kMaxWarps = REG ? (MH <= 2 ? 12 : 8) : (MH == 1 || (MH == 2 && !FOLD)) ? 16 : MH == 8 ? 8 : 12;
  static constexpr int kMaxThreads = 32 * kMaxWarps;
  static constexpr int kARowInt4 = 2 * DEPTH + 1;  // odd: ldmatrix rows hit distinct banks
  static_assert(MH == 1 || MH == 2 || MH == 4 || MH == 8, "1, 2, 4 or 8 blocks of 8 rows");
  static_assert(DEPTH == 4 || DEPTH == 8 || DEPTH == 16, "power-of-two ring");
  static_assert(!FOLD || MH <= 2, "the per-group accumulators fit registers for m <= 16 only");
};

// Calls f(std::integral_constant<int, J>) for J = 0..N-1: a fully unrolled
// loop whose index can feed template arguments (immediate offsets).
template <class F, int... Js>
__device__ __forceinline__ void StaticForImpl(F&& f, std::integer_sequence<int, Js...>) {
  (f(std::integral_constant<int, Js>{}), ...);
}
// For lambdas in the kernels' main loops: inlined whatever their size. A
// lambda the inliner leaves out of line takes the accumulators it captures by
// reference with it into local memory (dec_m16_s16: a 688-byte stack frame,
// the 16 rows' accumulators stored and reloaded around every slice's mma).
#define QF_INLINE __attribute__((always_inline))

template <int N, class F>
__device__ __forceinline__ void StaticFor(F&& f) {
  StaticForImpl(f, std::make_integer_sequence<int, N>{});
}

// ---------------------------------------------------------------- PTX wrappers

template <int kOff>
__device__ __forceinline__ void CpAsyncAt(uint32_t smem, const void* gmem, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0+%3], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "l"(policy), "n"(kOff)
               : "memory");
}

// 16 bytes, of which the first src_bytes (16 or 0) come from gmem and the
// rest are zero (cp.async's zero fill). Through L1 (.ca): for data that
// several warps of the block read, such as A.
template <int kOff>
__device__ __forceinline__ void CpAsyncZfillAt(uint32_t smem, const void* gmem, uint32_t src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0+%3], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes),
               "n"(kOff)
               : "memory");
}

// Waits for all but the kPending most recent cp.async groups of this thread;
// the clobber keeps the compiler from moving shared loads above it.
template <int kPending>
__device__ __forceinline__ void CpAsyncWaitMem() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

template <int kOff>
__device__ __forceinline__ int4 LdShared16(uint32_t smem) {
  int4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4+%5];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(smem), "n"(kOff)
               : "memory");
  return v;
}

// 16 bytes of weights straight into registers: read once, so no L1 line and
// evict-first in L2.
__device__ __forceinline__ int4 LdStream16(const int4* p, uint64_t policy) {
  int4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.s32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p), "l"(policy));
  return v;
}

template <int kOff>
__device__ __forceinline__ void LdMatrixX2At(uint32_t (&r)[2], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2+%3];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem), "n"(kOff)
               : "memory");
}

template <int kOff>
__device__ __forceinline__ void LdMatrixX4At(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4+%5];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem), "n"(kOff)
               : "memory");
}

// D = A * B + D with 4 A registers (16 x 16) and 2 B registers (16 x 8),
// fp16 or (kBf16) bf16 inputs.
template <bool kBf16 = false>
__device__ __forceinline__ void Mma16816A(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Mma16816<kBf16>(d, a, b0, b1);
}

// Whole-cluster barrier; release/acquire orders the partial tiles in shared
// memory before the other blocks read them (the release is a MEMBAR.ALL.GPU).
__device__ __forceinline__ void ClusterSync() {
  ClusterArrive();
  ClusterWait();
}

// The barrier that keeps a block's shared memory alive until the other blocks
// of its cluster have read it: execution order only. Their loads of our tiles
// have returned before they arrive (the values feed the sums they store
// first), so the arrive is relaxed and compiles to no MEMBAR. With release,
// the MEMBAR.ALL.GPU it brought waited for the block's output stores to reach
// L2 before any block of the pair could exit.
__device__ __forceinline__ void ClusterExitSync() {
  ClusterArriveRelaxed();
  ClusterWait();
}

__device__ __forceinline__ float4 LdCluster16(uint32_t addr) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  QF_SM90(asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                       : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                       : "r"(addr)
                       : "memory"));
  return v;
}

// 16 bytes into another block's shared memory (`addr`, from MapShared),
// counted against that block's mbarrier `bar` (also mapped) when they land.
// Weak stores: no fence, no MEMBAR; the receiver's wait on `bar` orders them.
__device__ __forceinline__ void StAsync16(uint32_t addr, float a, float b, float c, float d, uint32_t bar) {
  QF_SM90(asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];\n" ::
                           "r"(addr), "f"(a), "f"(b), "f"(c), "f"(d), "r"(bar)
                       : "memory"));
}

// One QF4 word -> the four A-operand registers of columns 16kW..16kW+15:
// exact integers (q - z) in [-15, 15], times the fp16 scale when SCALE.
// SHIFT_HI: the high nibbles shifted down and taken as the low ones (two
// more shifts per word), so only zlo is live and the group's constants take
// 16 registers instead of 24. The same exact integers: the same bits. Under
// the 128-register bound of the 16-warp, 16-row decode kernels the 24 spilled
// (dec_m16_a8: 44 bytes with ptxas 13.5; the bf16 twin, 16 registers of
// constants, none).
template <int kW, bool SCALE, bool SHIFT_HI = false>
__device__ __forceinline__ void DequantWordA(uint32_t x, const GroupConsts& g, uint32_t (&a)[4]) {
  constexpr uint32_t kLo = 0x000F000Fu, kHi = 0x00F000F0u, kMagic = 0x64006400u;
  const half2 kSixteenth = AsHalf2(0x2C002C00u);
  const uint32_t x8 = x >> 8;
  constexpr int f0 = 2 * kW, f1 = 2 * kW + 1;
  half2 v0 = __hsub2(AsHalf2(AndOr(x, kLo, kMagic)), g.zlo[f0]);   // fragment f0, rows k, k+1
  half2 v1 = __hsub2(AsHalf2(AndOr(x8, kLo, kMagic)), g.zlo[f1]);  // fragment f1, rows k, k+1
  half2 v2, v3;                                                    // f0 and f1, rows k+8, k+9
  if constexpr (SHIFT_HI) {
    v2 = __hsub2(AsHalf2(AndOr(x >> 4, kLo, kMagic)), g.zlo[f0]);
    v3 = __hsub2(AsHalf2(AndOr(x >> 12, kLo, kMagic)), g.zlo[f1]);
  } else {
    v2 = __hfma2(AsHalf2(AndOr(x, kHi, kMagic)), kSixteenth, g.zhi[f0]);
    v3 = __hfma2(AsHalf2(AndOr(x8, kHi, kMagic)), kSixteenth, g.zhi[f1]);
  }
  if constexpr (SCALE) {
    v0 = __hmul2(v0, g.scale[f0]);
    v1 = __hmul2(v1, g.scale[f1]);
    v2 = __hmul2(v2, g.scale[f0]);
    v3 = __hmul2(v3, g.scale[f1]);
  }
  a[0] = AsU32(v0);
  a[1] = AsU32(v1);
  a[2] = AsU32(v2);
  a[3] = AsU32(v3);
}

// The bf16 twin (GroupConstsBf16, w4a16_dequant.cuh): each nibble shifted to
// bits 0..3 of its half, 128 + q - (128 + z) exact, times the bf16 scale
// when SCALE (its nibbles are always shifted: SHIFT_HI is moot).
template <int kW, bool SCALE, bool SHIFT_HI = false>
__device__ __forceinline__ void DequantWordA(uint32_t x, const GroupConstsBf16& g, uint32_t (&a)[4]) {
  constexpr uint32_t kLo = 0x000F000Fu, kMagic = 0x43004300u;
  constexpr int f0 = 2 * kW, f1 = 2 * kW + 1;
  const auto code = [&](uint32_t v, int f) {
    __nv_bfloat162 d = __hsub2(AsBf162(AndOr(v, kLo, kMagic)), g.zero[f]);
    if constexpr (SCALE) d = __hmul2(d, g.scale[f]);
    return AsU32(d);
  };
  a[0] = code(x, f0);        // fragment f0, rows k, k+1
  a[1] = code(x >> 8, f1);   // fragment f1, rows k, k+1
  a[2] = code(x >> 4, f0);   // f0, rows k+8, k+9
  a[3] = code(x >> 12, f1);  // f1, rows k+8, k+9
}

// One slice of the weight-streaming family (streaming, decode, balanced): the
// lane's 16 bytes of QF4 words dequantized with the scale and multiplied
// into MH 8-row blocks of A (fragments af) for its 64 columns; fp16, or bf16
// when GC is GroupConstsBf16. SCALE = false: the exact integers (q - z) go
// into the mma and the group's scales are applied later (FoldGroup).
// SHIFT_HI as DequantWordA's.
template <int MH, bool SCALE = true, bool SHIFT_HI = false, class GC>
__device__ __forceinline__ void DequantMmaSlice(const int4 bv, const GC& gc, const uint32_t (&af)[MH][2],
                                                float (&acc)[MH][4][4]) {
  constexpr bool kBf16 = GC::kBf16;
  const uint32_t words[4] = {static_cast<uint32_t>(bv.x), static_cast<uint32_t>(bv.y), static_cast<uint32_t>(bv.z),
                             static_cast<uint32_t>(bv.w)};
  StaticFor<4>([&](auto wc) {
    constexpr int w = decltype(wc)::value;
    uint32_t wa[4];
    DequantWordA<w, SCALE, SHIFT_HI>(words[w], gc, wa);
#pragma unroll
    for (int h = 0; h < MH; ++h) Mma16816A<kBf16>(acc[h][w], wa, af[h][0], af[h][1]);
  });
}

// Where accumulator element e of QF4 word w and 8-row block h lies in the
// warp's 64-column tile (mma.m16n8k16 D layout, weights as the A operand):
// d0, d1 at column 16w + l/4, rows 2(l%4) + {0, 1}; d2, d3 at column + 8.
__device__ __forceinline__ int AccRow(int lane, int h, int e) { return 8 * h + 2 * (lane & 3) + (e & 1); }
__device__ __forceinline__ int AccCol(int lane, int w, int e) { return 16 * w + (lane >> 2) + 8 * (e >> 1); }

// End of a group with FOLD: acc += scale * accg in fp32 (the group's scales
// as stored, fp16 or (kBf16) bf16: fragment f of this lane's column in
// element f), accg = 0. acc[h][w][e] is column 16w + l/4 + 8(e/2), i.e.
// fragment 2w + e/2.
template <int MH, bool kBf16 = false>
__device__ __forceinline__ void FoldGroup(const int4 sc, float (&accg)[MH][4][4], float (&acc)[MH][4][4]) {
  float s[8];
  const uint32_t* sw = reinterpret_cast<const uint32_t*>(&sc);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = kBf16 ? BF16::ToFloat2(sw[i]) : F16::ToFloat2(sw[i]);
    s[2 * i] = f.x;
    s[2 * i + 1] = f.y;
  }
#pragma unroll
  for (int h = 0; h < MH; ++h)
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[h][w][e] = fmaf(s[2 * w + (e >> 1)], accg[h][w][e], acc[h][w][e]);
        accg[h][w][e] = 0.f;
      }
}

// Where a warp of a streaming-family block works: warp (wn_i, wk_i) of block
// (x, rank) streams QF4 tile column x * wn + wn_i over part wk_i of the
// block's k-chunk, chunk `rank` of gridDim.y equal chunks of the slices.
struct StreamWarp {
  int lane, warp, wn_i, wk_i, col_tile;
  int c0, clen;  // the block's chunk: slices [c0, c0 + clen)
  __device__ __forceinline__ explicit StreamWarp(const StreamParams& p)
      : lane(threadIdx.x & 31), warp(threadIdx.x >> 5), wn_i(warp % p.wn), wk_i(warp / p.wn),
        col_tile(blockIdx.x * p.wn + wn_i),
        c0(static_cast<int>(static_cast<long long>(p.slices) * blockIdx.y / gridDim.y)),
        clen(static_cast<int>(static_cast<long long>(p.slices) * (blockIdx.y + 1) / gridDim.y) - c0) {}
  // First slice of part i of wk (part i ends where part i + 1 begins).
  __device__ __forceinline__ int PartBegin(int i, int wk) const { return c0 + clen * i / wk; }
  // Steps every warp of the block runs: the longest part, padded to the ring depth.
  __device__ __forceinline__ int PaddedSteps(int wk, int depth) const {
    return ((clen + wk - 1) / wk + depth - 1) / depth * depth;
  }
};

// The group constants of one warp's k-part [s0, s0 + len) of QF4 tile column
// `col_tile`: the current group's in registers, the next group's raw scales
// and zeros already loaded, so a switch waits on nothing. GC: GroupConsts
// (fp16) or GroupConstsBf16.
template <class GC>
struct StreamGroupsOf {
  GC gc;
  int4 sc;            // the current group's scales as stored (FOLD applies them in fp32)
  int4 sc_next;
  uint32_t zw_next;
  int g;              // current group
  int cz;             // this lane's scale int4 / zero word in a group row
  int switch_at;      // part step after which the current group ends (or the part does)

  __device__ __forceinline__ int4 Scales(const StreamParams& p, int grp) const {
    return __ldg(p.scales + static_cast<long long>(grp) * (p.n / 8) + cz);
  }
  __device__ __forceinline__ uint32_t Zeros(const StreamParams& p, int grp) const {
    return p.zeros != nullptr ? __ldg(p.zeros + static_cast<long long>(grp) * (p.n / 8) + cz) : 0x88888888u;
  }
  __device__ __forceinline__ void Init(const StreamParams& p, int col_tile, int s0, int len) {
    const int spg = p.slices_per_group, last = p.groups - 1;
    g = s0 / spg;
    cz = 8 * col_tile + ((threadIdx.x & 31) >> 2);
    sc = Scales(p, min(g, last));
    LoadGroupConsts(gc, sc, Zeros(p, min(g, last)));
    sc_next = Scales(p, min(g + 1, last));
    zw_next = Zeros(p, min(g + 1, last));
    switch_at = min((g + 1) * spg - s0, len) - 1;
  }
  // After step switch_at: the next group's constants, prefetch the one after.
  __device__ __forceinline__ void Advance(const StreamParams& p, int len) {
    ++g;
    sc = sc_next;
    LoadGroupConsts(gc, sc, zw_next);
    const int ahead = min(g + 1, p.groups - 1);
    sc_next = Scales(p, ahead);
    zw_next = Zeros(p, ahead);
    switch_at = min(switch_at + p.slices_per_group, len - 1);
  }
};

using StreamGroups = StreamGroupsOf<GroupConsts>;

// The end of a group in the weight-streaming loops: with FOLD its sums scaled
// into acc (FoldGroup), then the next group's constants (Advance).
template <bool FOLD, int MH, class GC, class AccG>
__device__ __forceinline__ void EndGroup(StreamGroupsOf<GC>& grp, const StreamParams& p, int len, AccG& accg,
                                         float (&acc)[MH][4][4]) {
  if constexpr (FOLD) FoldGroup<MH, GC::kBf16>(grp.sc, accg, acc);
  grp.Advance(p, len);
}

// ---------------------------------------------------------------- epilogue

// The end of every weight-streaming kernel (this one and w4a16_decode_kernel.cuh):
// each warp's fp32 accumulators (warp = wn_i + wn * wk_i, columns of tile
// blockIdx.x * wn + wn_i) become the block's partial tiles [wk][m][64*wn] in
// shared memory (reusing its operand buffers). An item is 8 consecutive
// columns of one row.
//
// Pull (the default): after one cluster barrier, block `rank` finishes items
// [items*rank/split, items*(rank+1)/split) of the tile, summing the partials
// of every block (rank order) and k-part (part order) through distributed
// shared memory; a second barrier keeps every block's tiles alive until the
// others have read them.
//
// Push (PUSH, the decode kernels, when the grid reserved p.recv_off; see
// PushReduceBegin): no barrier after the main loop. Every block sums its own
// k-parts per item (part order); the blocks of rank > 0 send those sums by
// st.async into rank 0's receive buffer, counted on its mbarrier, and leave;
// rank 0 adds them in rank order. Why: the pull's first barrier has to
// release the partial tiles to the cluster, which ptxas compiles to
// MEMBAR.ALL.GPU, and both barriers make every block of a cluster wait for
// the slowest; the st.async bytes need no fence, and the senders' multi-
// processors go to the next kernel as soon as their sums are sent.
//
// Then the bias, and C in Elem's type. Both orders of sums are fixed:
// deterministic (push and pull differ in the last bits).
template <int MH, class Elem = F16, bool PUSH = false>
__device__ __forceinline__ void StreamReduceStore(const StreamParams& p, const float (&acc)[MH][4][4], int4* smem) {
  const StreamWarp sw(p);
  const int tid = threadIdx.x, lane = sw.lane, wn_i = sw.wn_i, wk_i = sw.wk_i;
  const int nthreads = blockDim.x, wn = p.wn, wk = p.wk;
  const int split = gridDim.y, rank = blockIdx.y;
  const int m = p.m;
  const bool push = PUSH && split > 1 && p.recv_off > 0;
  __syncthreads();  // every warp is done with A and its ring
  const int out_stride = 64 * wn + 4;  // +4 floats: the 32 lanes' stores hit 32 banks
  const int out_part = m * out_stride;  // floats per k-part
  float* sh_out = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int h = 0; h < MH; ++h)
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = AccRow(lane, h, e);
        const int col = 64 * wn_i + AccCol(lane, w, e);
        if (row < m) sh_out[wk_i * out_part + row * out_stride + col] = acc[h][w][e];
      }
  if (split > 1 && !push) {
    ClusterSync();
  } else {
    __syncthreads();
  }
  const int per_row = 8 * wn, items = m * per_row;
  const uint32_t out_base = SmemAddr(sh_out);
  // Adds block src's k-parts of item (r, q), in part order, into v.
  const auto add_parts = [&](int src, int r, int q, float (&v)[8]) QF_INLINE {
    for (int part = 0; part < wk; ++part) {
      const int off = part * out_part + r * out_stride + 8 * q;  // floats
      float4 x, y;
      if (src != rank) {
        const uint32_t addr = MapShared(out_base + static_cast<uint32_t>(off) * 4, src);
        x = LdCluster16(addr);
        y = LdCluster16(addr + 16);
      } else {
        x = *reinterpret_cast<const float4*>(sh_out + off);
        y = *reinterpret_cast<const float4*>(sh_out + off + 4);
      }
      v[0] += x.x;
      v[1] += x.y;
      v[2] += x.z;
      v[3] += x.w;
      v[4] += y.x;
      v[5] += y.y;
      v[6] += y.z;
      v[7] += y.w;
    }
  };
  const auto store = [&](int r, int q, float (&v)[8]) QF_INLINE {
    const int col = blockIdx.x * 64 * wn + 8 * q;
    if (p.bias != nullptr) {
      const int4 braw = *reinterpret_cast<const int4*>(p.bias + col);
      const uint32_t* bw = reinterpret_cast<const uint32_t*>(&braw);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 bf = Elem::ToFloat2(bw[i]);
        v[2 * i] += bf.x;
        v[2 * i + 1] += bf.y;
      }
    }
    __align__(16) uint32_t out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = Elem::Pack2(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<int4*>(p.c + static_cast<long long>(r) * p.n + col) = *reinterpret_cast<const int4*>(out);
  };
  if constexpr (PUSH) {
    if (push) {
      const uint32_t bar = out_base + static_cast<uint32_t>(p.recv_off);
      const uint32_t recv = bar + kPushBarrierBytes;  // [split - 1][items][8] floats
      ClusterWait();  // rank 0's mbarrier is initialised (returns at once by now)
      if (rank > 0) {
        const uint32_t to_bar = MapShared(bar, 0);
        const uint32_t to = MapShared(recv, 0) + static_cast<uint32_t>((rank - 1) * items) * 32;
        for (int it = tid; it < items; it += nthreads) {
          const int r = it / per_row, q = it - r * per_row;
          float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          add_parts(rank, r, q, v);
          StAsync16(to + it * 32, v[0], v[1], v[2], v[3], to_bar);
          StAsync16(to + it * 32 + 16, v[4], v[5], v[6], v[7], to_bar);
        }
        return;
      }
      const float* sh_recv =
          reinterpret_cast<const float*>(reinterpret_cast<const char*>(smem) + p.recv_off + kPushBarrierBytes);
      for (int it = tid; it < items; it += nthreads) {
        const int r = it / per_row, q = it - r * per_row;
        float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        add_parts(0, r, q, v);
        MbarWait</*kCluster=*/true>(bar, 0);  // the senders' st.async data is visible after it
        for (int src = 1; src < split; ++src) {
          const float* in = sh_recv + ((src - 1) * items + it) * 8;
#pragma unroll
          for (int i = 0; i < 8; ++i) v[i] += in[i];
        }
        store(r, q, v);
      }
      return;
    }
  }
  const int i_end = items * (rank + 1) / split;
  for (int it = items * rank / split + tid; it < i_end; it += nthreads) {
    const int r = it / per_row, q = it - r * per_row;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int src = 0; src < split; ++src) add_parts(src, r, q, v);
    store(r, q, v);
  }
  if (split > 1) ClusterExitSync();  // no block leaves while others read its tiles
}

// The push reduction's set-up (StreamReduceStore), first thing in a kernel:
// rank 0 readies its mbarrier for the (split - 1) x items x 32 bytes the
// other blocks will send, and every block arrives (relaxed) on the cluster
// barrier that StreamReduceStore waits on before sending, so that no block
// sends to an mbarrier not yet initialised. Arriving here, the wait after
// the main loop finds the barrier complete.
__device__ __forceinline__ void PushReduceBegin(const StreamParams& p, int4* smem) {
  if (gridDim.y == 1 || p.recv_off == 0) return;
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    uint64_t* bar = reinterpret_cast<uint64_t*>(reinterpret_cast<char*>(smem) + p.recv_off);
    MbarInit(bar, 1);
    MbarArriveExpectTx(bar, PushSumBytes(p.m, p.wn, gridDim.y));
    QF_SM90(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
  }
  ClusterArriveRelaxed();
}

// ---------------------------------------------------------------- the kernel

// ELEM: F16, or BF16 for bf16 activations, scales, bias and output.
template <int MH, int DEPTH, bool FOLD, bool REG, class ELEM = F16>
__global__ void __launch_bounds__(StreamConfig<MH, DEPTH, FOLD, REG>::kMaxThreads, 1)
    W4A16StreamKernel(const StreamParams p) {
  using Cfg = StreamConfig<MH, DEPTH, FOLD, REG>;
  constexpr int D = DEPTH;
  constexpr bool kFold = FOLD;
  constexpr bool kReg = REG;
  constexpr int kRs = Cfg::kARowInt4;
  constexpr int kPairs = MH == 1 ? 1 : MH / 2;  // ldmatrix per slice (x2 for MH == 1, else x4)

  extern __shared__ int4 smem[];
  __shared__ int2 sub_chunk[32];  // (first slice, slices) of each k-part of the block's chunk
  const StreamWarp sw(p);
  const int tid = threadIdx.x, lane = sw.lane, warp = sw.warp;
  const int nthreads = blockDim.x, wk = p.wk;
  const int wk_i = sw.wk_i, col_tile = sw.col_tile;
  const int m = p.m;
  if (tid < wk) sub_chunk[tid] = make_int2(sw.PartBegin(tid, wk), sw.PartBegin(tid + 1, wk) - sw.PartBegin(tid, wk));
  const int lpad = sw.PaddedSteps(wk, D);  // steps of every warp; A is zero past a part's end
  __syncthreads();
  const int s0 = sub_chunk[wk_i].x, len = sub_chunk[wk_i].y;

  const int a_slot_int4 = m * kRs;
  int4* sh_a = smem;                           // [wk][2][m][kRs]
  int4* sh_ring = sh_a + 2 * wk * a_slot_int4;  // [wn*wk][D][32]
  const uint32_t a_base = SmemAddr(sh_a + 2 * wk_i * a_slot_int4);
  const uint32_t ring = SmemAddr(sh_ring + (warp * D) * 32 + lane);

  // ---- A blocks: block b (steps [b*D, b*D + D)) of every k-part into slot
  // b & 1. Chunks past a part's end are zero-filled so that the padded steps
  // add exact zeros.
  auto issue_a_block = [&](int b) {
    const int first = b * D;
    for (int g = 0; g < wk; ++g) {
      const int2 part = sub_chunk[g];
      int4* slot = sh_a + (2 * g + (b & 1)) * a_slot_int4;
      const __half* src = p.a + static_cast<long long>(part.x) * 16;
      for (int idx = tid; idx < m * 2 * D; idx += nthreads) {
        const int r = idx / (2 * D), q = idx % (2 * D);  // powers of two: shifts
        int4* dst = slot + r * kRs + q;
        if (first + q / 2 < part.y) {
          CpAsync16(dst, src + static_cast<long long>(r) * p.k + (first * 16 + q * 8));
        } else {
          *dst = make_int4(0, 0, 0, 0);
        }
      }
    }
  };

  // ---- Prologue: the weights first, then A. Shared-memory ring: B slices
  // 0..D-2, one cp.async group each, then A blocks 0 and 1 as group D-1.
  // Register ring: B slices 0..D-1 into registers, then A blocks 0 and 1 as
  // two groups. Everything before GridDependencyWait may overlap the previous
  // kernel (programmatic launch): it reads only weights, which no kernel
  // writes; A is that kernel's output.
  const uint64_t policy = EvictFirstPolicy();
  const long long b_stride = static_cast<long long>(p.n64) * 32;  // int4 per slice
  const int4* b_next = p.b + (static_cast<long long>(s0) * p.n64 + col_tile) * 32 + lane;
  // Register ring: the last slice of the part (re-read instead of predicating).
  const int4* b_last =
      p.b + (static_cast<long long>(min(s0 + max(len, 1), p.slices) - 1) * p.n64 + col_tile) * 32 + lane;
  int4 rr[kReg ? D : 1];
  if constexpr (kReg) {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      rr[i] = LdStream16(i < len ? b_next : b_last, policy);
      b_next += b_stride;
    }
    GridDependencyWait();
    issue_a_block(0);
    CpAsyncCommit();
    if (D < lpad) issue_a_block(1);
    CpAsyncCommit();
  } else {
#pragma unroll
    for (int i = 0; i < D - 1; ++i) {
      if (i < len) CpAsyncAt<0>(ring + i * 512, b_next, policy);
      b_next += b_stride;
      CpAsyncCommit();
    }
    GridDependencyWait();
    issue_a_block(0);
    if (D < lpad) issue_a_block(1);
    CpAsyncCommit();
  }

  // ---- Group constants: current group and one group ahead in registers.
  StreamGroupsOf<typename ELEM::Consts> grp;
  grp.Init(p, col_tile, s0, len);

  float acc[MH][4][4] = {};
  float accg[kFold ? MH : 1][4][4] = {};

  // ldmatrix row addresses: lane l feeds matrix l/8 = (8-row block 2*pair +
  // (l/16), k half (l/8)%2); rows past m read row m-1 (their outputs are dropped).
  uint32_t a_lane[kPairs];
#pragma unroll
  for (int pr = 0; pr < kPairs; ++pr) {
    const int mat = lane >> 3;
    const int row = min(8 * (2 * pr + (mat >> 1)) + (lane & 7), m - 1);
    a_lane[pr] = a_base + static_cast<uint32_t>(row * kRs + (mat & 1)) * 16;
  }
  // The operands of one step: this lane's 16 bytes of B and the A fragments.
  auto load_operands = [&](auto jc, uint32_t a_off, int4& bv, uint32_t (&af)[MH][2]) {
    constexpr int j = decltype(jc)::value;  // step inside the A block / ring slot
    if constexpr (!kReg) bv = LdShared16<j * 512>(ring);
    if constexpr (MH == 1) {
      LdMatrixX2At<j * 32>(af[0], a_lane[0] + a_off);
    } else {
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr) {
        uint32_t r4[4];
        LdMatrixX4At<j * 32>(r4, a_lane[pr] + a_off);
        af[2 * pr][0] = r4[0];
        af[2 * pr][1] = r4[1];
        af[2 * pr + 1][0] = r4[2];
        af[2 * pr + 1][1] = r4[3];
      }
    }
  };

  if constexpr (kReg) {
    CpAsyncWaitMem<1>();  // A block 0
  } else {
    // A blocks 0 and 1 are the newest group, so every slice in the ring has
    // landed too; they were requested together, ahead of A.
    CpAsyncWaitMem<0>();
  }
  __syncthreads();  // A block 0 visible to every warp
  int4 bv = make_int4(0, 0, 0, 0);
  uint32_t af[MH][2];
  load_operands(std::integral_constant<int, 0>{}, 0, bv, af);

  // ---- main loop: blocks of D steps. Step i refills the ring slot of slice
  // i-1, waits for slice i+1, loads its operands, and computes slice i with
  // the operands loaded one step earlier (shared-memory latency off the
  // critical path).
  const uint32_t a_slot_bytes = static_cast<uint32_t>(a_slot_int4) * 16;
  for (int base = 0; base < lpad; base += D) {
    const int blk = base / D;
    const uint32_t a_off = (blk & 1) * a_slot_bytes, a_off_next = a_slot_bytes - a_off;
    StaticFor<D>([&](auto jc) {
      constexpr int j = decltype(jc)::value;
      if constexpr (kReg) {
        // Slice base + j is in rr[j]; refill it with slice base + j + D.
        bv = rr[j];
        rr[j] = LdStream16(base + j + D < len ? b_next : b_last, policy);
        b_next += b_stride;
      } else {
        if (base + j + D - 1 < len) CpAsyncAt<((j + D - 1) % D) * 512>(ring, b_next, policy);
        b_next += b_stride;
        CpAsyncCommit();
        CpAsyncWaitMem<D - 2>();  // slice base + j + 1 has landed (this lane's own bytes)
      }
      int4 bv_next;
      uint32_t af_next[MH][2];
      if constexpr (j == D - 1) {
        // Slice base + D opens A block blk + 1 (complete: its group was
        // waited for one step ago). Slot blk & 1 is free for block blk + 2.
        if constexpr (kReg) CpAsyncWaitMem<0>();
        __syncthreads();
        if (base + 2 * D < lpad) issue_a_block(blk + 2);
        if constexpr (kReg) CpAsyncCommit();
        load_operands(std::integral_constant<int, 0>{}, a_off_next, bv_next, af_next);
      } else {
        load_operands(std::integral_constant<int, j + 1>{}, a_off, bv_next, af_next);
      }
      if constexpr (kFold) {
        DequantMmaSlice<MH, false>(bv, grp.gc, af, accg);
      } else {
        DequantMmaSlice<MH>(bv, grp.gc, af, acc);
      }
      // Group switch after part step `switch_at` (EndGroup: fold the group's
      // sums with its scales, the next group's constants).
      if (base + j == grp.switch_at) EndGroup<kFold>(grp, p, len, accg, acc);
      if constexpr (!kReg) bv = bv_next;
#pragma unroll
      for (int h = 0; h < MH; ++h) {
        af[h][0] = af_next[h][0];
        af[h][1] = af_next[h][1];
      }
    });
  }
  CpAsyncWaitMem<0>();

  AllowDependents();
  StreamReduceStore<MH, ELEM>(p, acc, smem);
}

}  // namespace qf::kernels::w4a16
