// File: kernels/cuda/w4a16/w4a16_variants.cuh
//
// The table of compiled W4A16 GEMM variants. Each instance file under
// instances/ defines one Variant; w4a16_gemm.cu lists them in preference
// order and picks the first whose shape constraints hold (no if-chains over
// sizes). Adding a variant = one instance file + one table row.
//
//   const Variant& v = kW4A16Mb1Bn128;      // declared below
//   v.launch(params, grid, stream);
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/w4a16/w4a16_kernel.cuh"
#include "kernels/plan/stream_grid.h"  // ForcedStreamGrid
#include "kernels/plan/tile_grid.h"    // kDefaultEvenFillPct

namespace qf::kernels::w4a16 {

// One launch of a weight-streaming variant (w4a16_stream.cu): at most
// Variant::bm rows of A; pointers as in W4A16GemmArgs.
struct StreamCall {
  const __half* a;
  const uint32_t* qweight;
  const __half* scales;
  const uint32_t* zeros;
  const __half* bias;
  __half* c;
  int m, n, k;
  int group_size;  // effective (k for -1)
  cudaStream_t stream;
  ForcedStreamGrid plan;  // W4A16GemmArgs::stream_plan; all zero: planned
  bool pdl;               // W4A16GemmArgs::pdl
  // The caller's workspace, for variants with Variant::stream_workspace:
  // tile counters (zero at rest) and fp32 partial slots. Null otherwise.
  int* counters = nullptr;
  float* partials = nullptr;
};

// Workspace bytes a streaming-family variant needs for one (n, k) and every
// m it takes per launch.
struct StreamWorkspace {
  size_t counter_bytes = 0;
  size_t partial_bytes = 0;
};

struct Variant {
  const char* name;  // "mb1_bn128_bk128_s6"
  int bm, bn, bk;    // block tile: rows of A, columns of C, kernel rows per stage
  int threads;
  int stages;
  int min_blocks;      // launch bound: resident blocks per SM the registers are sized for
  int min_sm;          // oldest architecture it runs on (90: bulk copies; 80: cp.async + mma.sync)
  size_t smem_bytes;   // dynamic shared memory
  const void* kernel;  // for cudaFuncSetAttribute / occupancy queries
  // Enqueues the kernel; an error here is one found before the launch (the
  // caller reads the launch's own with cudaGetLastError).
  cudaError_t (*launch)(const Params& p, int grid, cudaStream_t stream);
  // Weight-streaming family (w4a16_stream.cu) instead of `launch`: plans its
  // own grid per (m, n, k), needs no workspace, takes bm rows per launch.
  absl::Status (*stream_run)(const StreamCall& call, int device) = nullptr;
  // "grid 16 x 8 (cluster 8), 8 warps, 64 slices per block, 40 KB shared"
  std::string (*stream_describe)(int64_t m, int64_t n, int64_t k, int device) = nullptr;
  // Streaming variants that sum partials across blocks (the balanced kernel):
  // the workspace they need; null = none.
  absl::StatusOr<StreamWorkspace> (*stream_workspace)(int64_t n, int64_t k, int device) = nullptr;
  // Newest architecture it runs on: arch-specific code (sm_90a wgmma) runs on
  // sm_90 only, and not at all when the build has no sm_90a code (0 then).
  int max_sm = 1 << 30;
  // A split-K partial holds all bm rows of the tile (the wgmma kernel), not
  // only the rows below m: splitting a shallow k then costs more than it saves.
  bool full_tile_partials = false;
  // The least share of the resident blocks (percent) that an even split of
  // its tiles must fill before the planner takes it over stream-K
  // (kernels/plan/tile_grid.h).
  int64_t even_fill_pct = kDefaultEvenFillPct;
  // Largest k and n it takes: the wgmma kernel's copy offsets are 32-bit
  // (w4a16_wgmma_kernel.cuh); the others take every size CheckShape does.
  int64_t max_kn = int64_t{1} << 30;
  // CTAs per cluster (launch attribute): a cluster is one stream-K block
  // whose CTAs split the bn columns of each tile and keep one tile counter
  // each (w4a16_wgmma_kernel.cuh, WgConfig CLUSTER).
  int cluster = 1;
  // Element type of a, scales, bias and c: bf16 (Config's BF16) or fp16.
  // The table runs a variant only for calls of its type.
  bool bf16 = false;

  // sm 0: the device's architecture is unknown.
  bool RunsOn(int sm) const { return max_sm >= min_sm && (sm == 0 || (sm >= min_sm && sm <= max_sm)); }
};

template <class Cfg>
cudaError_t LaunchW4A16(const Params& p, int grid, cudaStream_t stream) {
  W4A16GemmKernel<Cfg><<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaSuccess;
}

// A table row for a kernel instance whose Cfg has the tiled kernel's tile
// fields (kBm, kBn, kBk, kThreads, kStages, kMinBlocks, kSmemBytes).
template <class Cfg>
Variant VariantOf(const char* name, int min_sm, const void* kernel,
                  cudaError_t (*launch)(const Params&, int, cudaStream_t)) {
  return Variant{name,         Cfg::kBm, Cfg::kBn, Cfg::kBk, Cfg::kThreads, Cfg::kStages, Cfg::kMinBlocks, min_sm,
                 Cfg::kSmemBytes, kernel,  launch};
}

template <class Cfg>
Variant MakeVariant(const char* name) {
  Variant v = VariantOf<Cfg>(name, Cfg::kTma ? 90 : 80, reinterpret_cast<const void*>(&W4A16GemmKernel<Cfg>),
                             &LaunchW4A16<Cfg>);
  v.bf16 = Cfg::Elem::kBf16;
  return v;
}

// Config<MB, WN, WK, KS, STAGES, MIN_BLOCKS[, TMA]>: see w4a16_kernel.cuh.
// m <= 16 (memory bound): 4 x 2 warps, each warp a run of 8 slices (128 rows) per stage.
using CfgMb1Bn256 = Config<1, 4, 2, 16, 3, 1>;
// n % 256 != 0: 2 x 4 warps, 512-row stages.
using CfgMb1Bk512 = Config<1, 2, 4, 32, 3, 1>;
// k % 512 != 0: 4-slice runs, two blocks per SM.
using CfgMb1TwoBlocks = Config<1, 2, 4, 16, 3, 2>;
// m <= 32.
using CfgMb2Bn128 = Config<2, 2, 4, 16, 4, 1>;
// m <= 48.
using CfgMb3Bn128 = Config<3, 2, 4, 16, 3, 1>;
using CfgMb3Bn256 = Config<3, 4, 2, 8, 3, 1>;
// m <= 64 with n >= 16384, and m > 64 (in 64-row chunks).
using CfgMb4Bk256 = Config<4, 4, 2, 16, 2, 1>;
// m <= 64 with fewer columns (more tiles to spread).
using CfgMb4Bn128 = Config<4, 2, 4, 16, 3, 1>;
using CfgMb4Bn256 = Config<4, 4, 2, 8, 3, 1>;
// fallbacks for any m (chunked): k % 128, or k % 64 with n % 256.
using CfgAnyBk128 = Config<1, 2, 4, 8, 6, 2>;
using CfgAnyBk64 = Config<4, 4, 2, 4, 4, 1>;
// tuning only (slower on the H100 in the last sweep; kept to re-check).
using CfgTuneMb1Bk128 = Config<1, 2, 4, 8, 4, 2>;
using CfgTuneMb2TwoBlocks = Config<2, 2, 4, 8, 4, 2>;
using CfgTuneMb4Bk128 = Config<4, 2, 4, 8, 4, 1>;
// bulk-copy (TMA) pipelines, sm_90 only.
using CfgTmaMb1TwoBlocks = Config<1, 2, 4, 16, 3, 2, true>;
using CfgTmaMb1Bk512 = Config<1, 2, 4, 32, 4, 1, true>;
using CfgTmaMb2 = Config<2, 2, 4, 16, 4, 1, true>;
using CfgTmaMb4Bn128 = Config<4, 2, 4, 16, 3, 1, true>;
using CfgTmaMb4Bn256 = Config<4, 4, 2, 8, 3, 1, true>;

// bf16 activations (Config's BF16): the tiled kernel, every architecture
// from sm_80, with the tiles of the fp16 table's tiled rows; the decode,
// weight-streaming and wgmma kernels' table rows are compiled for bf16 too
// (declared below). Not tuned for bf16: the fp16 measurements chose them.
using CfgBf16Mb1Bn256 = Config<1, 4, 2, 16, 3, 1, false, BF16>;
using CfgBf16Mb1Bk512 = Config<1, 2, 4, 32, 3, 1, false, BF16>;
using CfgBf16Mb1TwoBlocks = Config<1, 2, 4, 16, 3, 2, false, BF16>;
using CfgBf16Mb2Bn128 = Config<2, 2, 4, 16, 4, 1, false, BF16>;
using CfgBf16Mb4Bk256 = Config<4, 4, 2, 16, 2, 1, false, BF16>;
using CfgBf16Mb4Bn128 = Config<4, 2, 4, 16, 3, 1, false, BF16>;
using CfgBf16Mb4Bn256 = Config<4, 4, 2, 8, 3, 1, false, BF16>;
using CfgBf16AnyBk128 = Config<1, 2, 4, 8, 6, 2, false, BF16>;
using CfgBf16AnyBk64 = Config<4, 4, 2, 4, 4, 1, false, BF16>;

// Weight-streaming variants (w4a16_stream_kernel.cuh), sm_90: up to 8, 16,
// 32, 64 rows of A per launch. _reg: weights through a register ring instead
// of shared memory; _fold: fp32 per-group scaling for 16 rows; _d16: 16-deep
// ring. The table uses m8_d16 for m <= 8 with n >= 1024 (k < 16384), and m8,
// m16, m32 for the shapes the tiled variants reject; the rest are for tuning
// sweeps.
extern const Variant kW4A16StreamM8;
extern const Variant kW4A16StreamM16;
extern const Variant kW4A16StreamM32;
extern const Variant kW4A16StreamM64;
extern const Variant kW4A16StreamM8Reg;
extern const Variant kW4A16StreamM16Reg;
extern const Variant kW4A16StreamM8D16;
extern const Variant kW4A16StreamM16Fold;
// The barrier-free decode kernel (w4a16_decode_kernel.cuh), sm_90: A staged
// whole per k-part, weights through an 8-slice register ring; 8 or 16 rows;
// dec_m8_s16: a 16-slot shared-memory ring (cp.async) instead, and for 16
// rows dec_m16_s16 / _s12 / _s8 (16, 12, 8 slots: shallower rings leave
// room for more warps beside whole A); dec_m8_a16, dec_m16_a12, dec_m16_a8:
// A's slices ride in that ring with the weights (nothing staged whole), 16,
// 12 or 8 slots. The table uses dec_m8_a16 (dec_m8_s16 as its alternative),
// dec_m16_s8, dec_m16_a8 (dec_m16_s16 as its alternative) and, for deep k,
// dec_m16_w16a8: a split ring (DecodeConfig::kSplitRing) of 16 weight slots
// and 8 A slots per warp.
extern const Variant kW4A16DecodeM8;
extern const Variant kW4A16DecodeM16;
extern const Variant kW4A16DecodeM8S16;
extern const Variant kW4A16DecodeM8A16;
extern const Variant kW4A16DecodeM16A12;
extern const Variant kW4A16DecodeM16S16;
extern const Variant kW4A16DecodeM16S8;
extern const Variant kW4A16DecodeM16S12;
extern const Variant kW4A16DecodeM16A8;
extern const Variant kW4A16DecodeM16W16A8;
// The balanced decode kernel (w4a16_balanced_kernel.cuh), sm_90: every warp
// of a one-wave grid streams the same number of slices; 8 rows per launch.
extern const Variant kW4A16BalancedM8;

// Warpgroup-MMA variants (w4a16_wgmma_kernel.cuh), sm_90a, named
// wg_t<rows of A>_n<columns>[_w1: one warpgroup per block]_s<stages>[_2blk:
// two blocks per SM][_d2: two stages of wgmma in flight][_k128: 128-row
// stages]. The table uses
// t64_n128_w1_s4_k128_2blk, t64_n128_s6_k128, t128_n256, t128_n128,
// t256_n128_s5_d2, t256_n128_s6_d2 and pc_t128_n256_s8 (below); the rest
// are for tuning sweeps.
extern const Variant kW4A16WgT64;
extern const Variant kW4A16WgT128;
extern const Variant kW4A16WgT128N128;
extern const Variant kW4A16WgT256N128;
extern const Variant kW4A16WgT256N128D2;
extern const Variant kW4A16WgT256N128S6D2;  // a 6-slot ring (226 KB)
extern const Variant kW4A16WgT64D2;
extern const Variant kW4A16WgT64N128TwoBlocks;
extern const Variant kW4A16WgT128N128TwoBlocks;
extern const Variant kW4A16WgT256N128K128;
extern const Variant kW4A16WgT64K128;
extern const Variant kW4A16WgT64S6K128;
extern const Variant kW4A16WgT64N128K128;
extern const Variant kW4A16WgT64N128K128TwoBlocks;
// _w1: one warpgroup per block, two blocks per SM (the table's m <= 64).
extern const Variant kW4A16WgT64W1K128TwoBlocks;
// _tma (tuning only): the same tiles staged by TMA tensor and bulk copies,
// one or two issued per warp, onto one mbarrier per ring slot (WgConfig TMA).
extern const Variant kW4A16WgT256N128D2Tma;
extern const Variant kW4A16WgT256N128Tma;
extern const Variant kW4A16WgT64S6K128Tma;
extern const Variant kW4A16WgT64N128K128TwoBlocksTma;
// _mc2 (tuning only): TMA pairs, a cluster of two CTAs on neighbouring column
// tiles that multicast each A stage, half each (WgConfig CLUSTER).
extern const Variant kW4A16WgT256N128S6D2Mc2;
extern const Variant kW4A16WgT256N128D2Mc2;
extern const Variant kW4A16WgT64W1K128TwoBlocksMc2;
// Warp-specialized (wg_ws_*): a producer warp fills the ring and the two
// compute warpgroups hand stages back through mbarriers, no block barrier.
extern const Variant kW4A16WsT64N128TwoBlocks;
extern const Variant kW4A16WsT64N256;
// Producer warpgroup (wg_pc_*; the table takes pc_t128_n256_s8 at 65-128
// rows for k >= 8192 and for n >= 14336 from k = 3584, the rest are tuning
// rows): one thread of a fourth warpgroup
// stages the ring by TMA onto full/empty mbarriers, and setmaxnreg moves its
// registers to the two compute warpgroups (WgConfig WS and TMA).
extern const Variant kW4A16WgPcT256N128S6;
extern const Variant kW4A16WgPcT256N128S6D2;
extern const Variant kW4A16WgPcT128N256S8;
extern const Variant kW4A16WgPcT64N256S6K128;
extern const Variant kW4A16WgPcT64N128S8K128;
// _mc2: the same on cluster pairs that multicast each A stage, half each.
extern const Variant kW4A16WgPcT256N128S6Mc2;
extern const Variant kW4A16WgPcT256N128S6D2Mc2;
// Dequantize-to-shared (w4a16_wgss_kernel.cuh, tuning only; wg_ss_t<rows>_n<columns>
// _o<B slots>_w<raw weight slots>_a<A slots>[_x2: two transform warpgroups]):
// transform warps dequantize each stage into shared memory, consumer
// warpgroups run wgmma with both operands there.
extern const Variant kW4A16WgSsT128N256;
extern const Variant kW4A16WgSsT64N256;
extern const Variant kW4A16WgSsT64N256O4;

extern const Variant kW4A16Bf16Mb1Bn256;
extern const Variant kW4A16Bf16Mb1Bk512;
extern const Variant kW4A16Bf16Mb1TwoBlocks;
extern const Variant kW4A16Bf16Mb2Bn128;
extern const Variant kW4A16Bf16Mb4Bk256;
extern const Variant kW4A16Bf16Mb4Bn128;
extern const Variant kW4A16Bf16Mb4Bn256;
extern const Variant kW4A16Bf16AnyBk128;
extern const Variant kW4A16Bf16AnyBk64;
// ... and the wgmma kernel's table rows (sm_90a), as bf16.
extern const Variant kW4A16Bf16WgT64W1K128TwoBlocks;
extern const Variant kW4A16Bf16WgT64N128K128;
extern const Variant kW4A16Bf16WgT128;
extern const Variant kW4A16Bf16WgPcT128N256S8;
extern const Variant kW4A16Bf16WgT128N128;
extern const Variant kW4A16Bf16WgT256N128D2;
extern const Variant kW4A16Bf16WgT256N128S6D2;
// ... and the decode kernel's (sm_90), as bf16.
extern const Variant kW4A16Bf16DecodeM8A16;
extern const Variant kW4A16Bf16DecodeM8S16;
extern const Variant kW4A16Bf16DecodeM16S8;
extern const Variant kW4A16Bf16DecodeM16S16;
extern const Variant kW4A16Bf16DecodeM16W16A8;
extern const Variant kW4A16Bf16DecodeM16A8;
// ... and the weight-streaming kernel's (sm_90: n % 64 for m <= 32), as bf16.
extern const Variant kW4A16Bf16StreamM8;
extern const Variant kW4A16Bf16StreamM16;
extern const Variant kW4A16Bf16StreamM32;

extern const Variant kW4A16Mb1Bn256;
extern const Variant kW4A16Mb1Bk512;
extern const Variant kW4A16Mb1TwoBlocks;
extern const Variant kW4A16Mb2Bn128;
extern const Variant kW4A16Mb3Bn128;
extern const Variant kW4A16Mb3Bn256;
extern const Variant kW4A16Mb4Bk256;
extern const Variant kW4A16Mb4Bn128;
extern const Variant kW4A16Mb4Bn256;
extern const Variant kW4A16AnyBk128;
extern const Variant kW4A16AnyBk64;
extern const Variant kW4A16TuneMb1Bk128;
extern const Variant kW4A16TuneMb2TwoBlocks;
extern const Variant kW4A16TuneMb4Bk128;
extern const Variant kW4A16TmaMb1TwoBlocks;
extern const Variant kW4A16TmaMb1Bk512;
extern const Variant kW4A16TmaMb2;
extern const Variant kW4A16TmaMb4Bn128;
extern const Variant kW4A16TmaMb4Bn256;

}  // namespace qf::kernels::w4a16
