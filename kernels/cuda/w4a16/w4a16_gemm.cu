// Host side of the W4A16 GEMM: validation, variant selection, grid and
// workspace sizing, launch. The kernel is in w4a16_kernel.cuh.
#include <algorithm>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/cuda/w4a16/w4a16_residency.h"
#include "kernels/cuda/w4a16/w4a16_variants.cuh"
#include "kernels/plan/tile_grid.h"

namespace qf::kernels {
namespace {

using w4a16::Variant;

// Selection table: the first row with min_m <= m <= max_m, min_n <= n < max_n and
// min_k <= k < max_k whose variant takes n, k and the group size runs (rows
// of one m range are alternatives for shapes the first cannot take). Tuned
// with w4a16_bench --sweep --grids (kernels/MEASUREMENTS.md): up to 8 rows of A and
// n >= kLargeN the barrier-free decode kernel with its shared-memory weight
// ring (dec_m8_s16), on the grids kernels/plan/stream_grid.h picks, beats the
// streaming kernel with its per-block A barrier and the register-ring decode
// kernel on the H200 (decode loop, M = 1: down 34.6 vs 40.8 / 39.8 us, o 14.2
// vs 15.1 / 15.9) and ties the streaming kernel on qkv and gate_up (20.4 vs
// 20.5, 71.9 vs 70.9); all of them beat the tiled kernel there (gate_up 93.9
// us, cold call), which keeps n < kLargeN (see there). For deep k it carried
// A in its ring instead (dec_m8_a16, kDeepK); since the runs on the H100
// with padded grids and the early start, it does so for every k. From 9 to
// 16 rows the 16-row decode kernel takes n >= kLargeN: for wide weights
// (kWideN) below kDeepK with A staged whole, where an 8-slot ring lets 16
// warps share one k-part (gate_up m = 16, decode loop: 79.2-83.2 us against
// 93.6-94.0 with 16 slots and 95.2-100.1 tiled); narrower, A in an 8-slot
// ring (on the H200, before the padding, the 16-slot ring with A staged
// whole led: o 18.3 against 20.8 tiled; qkv 23.4 against 23.3, where 8
// slots took 27.2), also for deep k (the split ring, dec_m16_w16a8: 16
// weight slots, then 8 of A, led there until the 8-slot ring stopped
// spilling, and keeps deep and wide weights; on grids that share A's slices
// between two warps, down m = 16 on the H100 took 48.0-48.3 us against
// 49.4-50.2 for 12 slots of both, dec_m16_a12,
// bench/results/w4a16_h100_split_ring.log; on the H200 dec_m16_a12 took
// 45.3 against 51.9 tiled and 99.4 for dec_m16_s16). Streaming serves only the shapes the
// tiled variants reject.
constexpr int64_t kAnyM = int64_t{1} << 40;
constexpr int64_t kAnyK = int64_t{1} << 40;
constexpr int64_t kAnyN = int64_t{1} << 40;
struct Row {
  int64_t max_m;
  int64_t min_n;
  int64_t min_k;
  const Variant* v;
  int64_t max_k = kAnyK;  // exclusive
  int64_t max_n = kAnyN;  // exclusive
  int64_t min_m = 0;
};
constexpr int64_t kWgMinN = 1024;
// Below, the streaming kernels' fixed cost (cluster launch, staging A) loses
// to the tiled kernel: tiny-llama's n <= 768 at m = 1 ran in 8.1-9.1 us
// against 6.0-8.4 us tiled (verify on the H200).
constexpr int64_t kLargeN = 1024;
// From here 16 rows of A ride in a ring (dec_m16_a8, or dec_m16_w16a8 for
// wide weights): staged whole, A's k-part crowds the weight rings out of
// shared memory (down, k = 28672, H200 decode loop, m = 16: 45.3 us against
// 99.4 for dec_m16_s16). Up to 8
// rows this bound no longer splits the table: dec_m8_a16 carries A in its
// ring at every k (it was first chosen only from here: down m = 8 41.6 vs
// 100.5 us on the H200, while at k = 8192 the whole-A form led there).
constexpr int64_t kDeepK = 16384;
// From here 16 rows of A take the 8-slot ring (see above), and more than 128
// rows the 5-slot wgmma ring.
constexpr int64_t kWideN = 16384;
// Below this many rows and columns of weights (both; tiny-llama's layers) a
// call is a few microseconds of launch and ramp, and what counts is how many
// blocks share it: 16-row, 128-column tiles (two blocks per SM) for every m.
// H100, cold calls (bench/results/w4a16_h100_small.log): fastest of every
// variant at each of 256 x {128, 256, 768} and 768 x 256 with m in {1, 16,
// 64, 256}, e.g. k 768 x n 256 at m = 256 in 8.7 us where the 64-row,
// 256-column tiles' 12 blocks took 19.6 (cuBLAS 6.8), at m = 1 7.8 against
// 8.1-8.3 for 16-row, 256-column tiles.
constexpr int64_t kSmallKN = 1024;
// Below this many columns (Llama 8B's and Qwen2 7B's projections but for
// gate_up), 17-128 rows take tiles of 128 columns with one block per SM,
// and up to 64 rows only below kNarrowK. The 70B-tuned rows' tiles leave too
// few of them for 132 SMs: the plan then splits each tile's k 8 ways, and
// the fixup that sums full fp32 tile partials from L2 outweighs the k it
// spreads. H100 decode loop (bench/results/w4a16_h100_narrow_m64.log: every
// wgmma variant and grid swept; w4a16_h100_narrow.log: the rows against the
// ones before, alternating processes): 4096 x 4096 at m = 64 12.5 us on
// wg_t64_n128_s6_k128 against 16.6 on the 2-block 64 x 128 tiles split 8
// ways (cuBLAS 14.5), at m = 24 11.8 against 14.2 on the tiled kernel's
// 32-row tiles; at m = 128 wg_t128_n128_s5 18.4 against 29.6 for the
// 128 x 256 tiles (cuBLAS 14.6), Llama 8B's down (14336 x 4096) 38.3
// against 51.3. From kNarrowK rows the 2-block tiles split deep enough
// (Qwen2 7B's down, 18944 x 3584, m = 64: 29.3 against 31.9) and the
// tiled ones at 17-32 rows tie. At n = 28672 the one-block tiles lost
// (4096 x 28672, m = 64: 50.7 against 42.7), and at n >= 8192 (every 70B
// projection) the rows below were tuned: they keep them.
constexpr int64_t kNarrowN = 8192;
constexpr int64_t kNarrowK = 8192;
// The decode kernels' rows end at 16 rows. The wgmma rows placed among the
// tiled ones start after them, so that shapes the decode rows refuse at 16
// rows or fewer still reach the tiled kernel's 16-row tiles.
constexpr int64_t kPastDecodeM = 17;
// C arrays whose sizes the initializers give: a std::array longer than its
// list would hold null rows.
const Row kTable[] = {
    {kAnyM, 0, 0, &w4a16::kW4A16Mb1TwoBlocks, kSmallKN, kSmallKN},
    // A rides in the ring at every depth and width: on the H100, with the
    // padded grids and the early start, staging A whole before the first
    // step (dec_m8_s16, now the alternative) cost qkv 17.6 against 18.9 us at
    // m = 1 and 17.8 against 20.6 at m = 4, o 13.9 / 14.1 and 14.2 / 15.5,
    // gate_up 80.6 / 88.3 and 80.9 / 83.8 (decode loop,
    // bench/results/w4a16_h100_aring.log).
    {8, kLargeN, 0, &w4a16::kW4A16DecodeM8A16},
    {8, kLargeN, 0, &w4a16::kW4A16DecodeM8S16},
    {16, kWideN, 0, &w4a16::kW4A16DecodeM16S8, kDeepK},
    // Narrower, A in an 8-slot ring, on the grid the planner takes for it
    // (stream_grid.cc: one warp per k-part below kShallowASlices). H100
    // decode loop: qkv 21.4 us against 24.7 for the 16-slot ring with A
    // staged whole, o 18.3 against 20.7 (bench/results/w4a16_h100_aring.log).
    // At every k since it stopped spilling (DecodeConfig::kShiftHi; H100,
    // alternating processes against the split ring, bench/results/
    // w4a16_h100_deep_k16.log): 70B down and Qwen2 7B's level (46.7-46.8
    // against 46.7-46.9 us, 22.6-22.9 against 22.5-22.6), Qwen2 72B's down
    // (k = 29568) 52.7-52.9 against 74.0-74.4.
    {16, kLargeN, 0, &w4a16::kW4A16DecodeM16A8, kAnyK, kWideN},
    {16, kLargeN, 0, &w4a16::kW4A16DecodeM16S16, kDeepK},
    {16, kWideN, kDeepK, &w4a16::kW4A16DecodeM16W16A8},
    {16, 0, 0, &w4a16::kW4A16Mb1Bn256},
    {16, 0, 0, &w4a16::kW4A16Mb1Bk512},
    {16, 0, 0, &w4a16::kW4A16Mb1TwoBlocks},
    // Narrow, shallow weights from 17 rows (kNarrowN, kNarrowK): 64 x 128
    // tiles of two warpgroups, one block per SM.
    {64, kWgMinN, 0, &w4a16::kW4A16WgT64N128K128, kNarrowK, kNarrowN, kPastDecodeM},
    {32, 0, 0, &w4a16::kW4A16Mb2Bn128},
    // k % 256 != 0, which the 256-row stages above refuse, would fall to
    // the weight-streaming kernels: the wgmma tiles' 128-row stages take it
    // from 17 rows, one block per SM below kNarrowK as for narrow weights,
    // two one-warpgroup blocks per SM from there. H100 decode loop, two
    // processes each (bench/results/w4a16_h100_deep_odd_k.log): Qwen2 72B's
    // down (29568 x 8192) 69.7-75.1 us at m = 17-32 against 102.2-110.0 for
    // stream_m32; Qwen2 0.5B's gate_up (896 x 9728) 7.1-7.2 against 9.6-13.7
    // (the 2-block tiles 8.9-9.0); between them, 12160 x 8192 at m = 24,
    // 33.8-34.5 on the 2-block tiles against 38.2 on one block and 44.3
    // streamed.
    {32, kWgMinN, 0, &w4a16::kW4A16WgT64N128K128, kNarrowK, kAnyN, kPastDecodeM},
    {32, kWgMinN, kNarrowK, &w4a16::kW4A16WgT64W1K128TwoBlocks, kAnyK, kAnyN, kPastDecodeM},
    // Weight streaming (sm_90): any n % 64 and k % 16 for m <= 32.
    {8, 0, 0, &w4a16::kW4A16StreamM8},
    {16, 0, 0, &w4a16::kW4A16StreamM16},
    {32, 0, 0, &w4a16::kW4A16StreamM32},
    // Warpgroup MMA (sm_90a) from 33 rows up, tuned on the H200 with
    // w4a16_bench --sweep=wg_ (kernels/MEASUREMENTS.md): up to 64 rows, 128-row
    // stages on 64 x 128 tiles of one warpgroup, two blocks per SM (run 38:
    // qkv 34.8-36.1 us against 36.9-38.1 for two warpgroups per block, down
    // 83.0-83.9 against 91.0-92.8 for 64 x 256 tiles); 128-row tiles up to
    // 128; 256-row tiles with two stages of wgmma in flight above. Only from
    // kWgMinN columns: below, its few large tiles leave most SMs idle
    // (tiny-llama's n <= 768: 10.8-28 us in verify against 8.7-19 us tiled).
    {64, kWgMinN, 0, &w4a16::kW4A16WgT64W1K128TwoBlocks},
    {48, 0, 0, &w4a16::kW4A16Mb3Bn128},
    {48, 0, 0, &w4a16::kW4A16Mb3Bn256},
    // Deep or wide weights: the 256-column, 256-row stages (down: 107 vs 113 us).
    {64, 16384, 0, &w4a16::kW4A16Mb4Bk256},
    {64, 0, 16384, &w4a16::kW4A16Mb4Bk256},
    {64, 0, 0, &w4a16::kW4A16Mb4Bn128},
    {64, 0, 0, &w4a16::kW4A16Mb4Bn256},
    // Narrow weights at 65-128 rows, at any k (kNarrowN).
    {128, kWgMinN, 0, &w4a16::kW4A16WgT128N128, kAnyK, kNarrowN},
    // Deep k (70B's projections) at 65-128 rows: the same 128 x 256 tiles
    // staged by a producer warpgroup (TMA, setmaxnreg). H100, settled sweeps,
    // four processes on three leases (bench/results/w4a16_h100_producer_wg.log,
    // w4a16_h100_producer_mc2.log, w4a16_h100_m128_pc.log), decode loop
    // against wg_t128_n256_s5: gate_up 244.9-252.0 us against 264.2-273.0,
    // down 120.5-128.8 against 126.4-135.3, qkv 55.5-56.6 against 57.2-57.7,
    // o 49.1-49.7 against 48.4-48.8 (cold calls level on o, 3-9% faster on
    // the others). Shallower k, from 15360 columns (Llama 8B's and 13B's
    // gate_up, 13B's qkv, Qwen2 7B's gate_up; w4a16_h100_m128_shallow.log,
    // two processes): 4096 x 28672 74.5-75.3 against 77.3, 5120 x 27648
    // 84.8-87.8 against 88.1-89.9, 3584 x 37888 86.2-88.4 against 89.5-90.0,
    // 5120 x 15360 51.6-51.9 against 54.8-55.1, and ahead by 4-8% at m = 65
    // and 96 too. From 14336 columns since these tiles split 56 tiles evenly
    // over 112 blocks (kT128N256EvenFillPct): on stream-K's 132 blocks 8B's
    // 4096 x 14336 had lost (50.2-51.3 against 47.7-48.2), split evenly it
    // leads, 44.5 against the cp.async tiles' 48.1 on stream-K, and 5120 x
    // 14336 51.3-51.6 against 54.5 (w4a16_h100_m128_grids.log). No k below
    // 3584 was measured.
    {128, kWgMinN, 8192, &w4a16::kW4A16WgPcT128N256S8},
    {128, 14336, 3584, &w4a16::kW4A16WgPcT128N256S8},
    {128, kWgMinN, 0, &w4a16::kW4A16WgT128},
    {128, kWgMinN, 0, &w4a16::kW4A16WgT128N128},
    // Above 128 rows: a 6-slot ring below 16384 columns (H200, run 54, decode
    // loop: qkv M = 256 86-87 us against 93-95, down 217 against 218-223, o
    // level) and the 5-slot ring from there (gate_up 435-439 against 445-448).
    {kAnyM, kWideN, 0, &w4a16::kW4A16WgT256N128D2},
    {kAnyM, kWgMinN, 0, &w4a16::kW4A16WgT256N128S6D2},
    {kAnyM, 0, 0, &w4a16::kW4A16Mb4Bk256},
    {kAnyM, 0, 0, &w4a16::kW4A16Mb4Bn256},
    {kAnyM, 0, 0, &w4a16::kW4A16Mb4Bn128},
};
// Shallow stages for shapes the rows above reject (k % 256 != 0, ...); they
// take any m by chunking it.
const Variant* const kFallbackVariants[] = {&w4a16::kW4A16AnyBk128, &w4a16::kW4A16AnyBk64};
// Reachable only by name (W4A16GemmArgs::variant): alternatives the bench
// sweeps when retuning the tables above. Their instances (instances/tuning/)
// are compiled only with QF_W4A16_TUNING_VARIANTS (CMake option of that name,
// on by default); without them a name here is unknown, as any other.
#ifdef QF_W4A16_TUNING_VARIANTS
const Variant* const kTuningVariants[] = {
    &w4a16::kW4A16WgT64,           &w4a16::kW4A16WgT64D2,       &w4a16::kW4A16WgT256N128,
    &w4a16::kW4A16WgT128N128TwoBlocks, &w4a16::kW4A16WgT256N128K128, &w4a16::kW4A16WgT64N128TwoBlocks,
    &w4a16::kW4A16WgT64K128,
    &w4a16::kW4A16WgT64S6K128,      &w4a16::kW4A16WgT64N128K128TwoBlocks,
    &w4a16::kW4A16WsT64N128TwoBlocks, &w4a16::kW4A16WsT64N256,
    &w4a16::kW4A16WgPcT256N128S6,   &w4a16::kW4A16WgPcT256N128S6D2,
    &w4a16::kW4A16WgPcT64N256S6K128, &w4a16::kW4A16WgPcT64N128S8K128,
    &w4a16::kW4A16WgPcT256N128S6Mc2, &w4a16::kW4A16WgPcT256N128S6D2Mc2,
    &w4a16::kW4A16WgSsT128N256,     &w4a16::kW4A16WgSsT64N256,   &w4a16::kW4A16WgSsT64N256O4,
    &w4a16::kW4A16WgT256N128D2Tma,  &w4a16::kW4A16WgT256N128Tma, &w4a16::kW4A16WgT64S6K128Tma,
    &w4a16::kW4A16WgT64N128K128TwoBlocksTma,
    &w4a16::kW4A16WgT256N128S6D2Mc2, &w4a16::kW4A16WgT256N128D2Mc2, &w4a16::kW4A16WgT64W1K128TwoBlocksMc2,
    &w4a16::kW4A16StreamM8Reg,      &w4a16::kW4A16StreamM16Reg,
    &w4a16::kW4A16StreamM16Fold,    &w4a16::kW4A16StreamM64,     &w4a16::kW4A16DecodeM16,
    &w4a16::kW4A16BalancedM8,       &w4a16::kW4A16DecodeM8,      &w4a16::kW4A16StreamM8D16,
    &w4a16::kW4A16DecodeM16S12,     &w4a16::kW4A16DecodeM16A12,
    &w4a16::kW4A16TuneMb1Bk128,
    &w4a16::kW4A16TuneMb2TwoBlocks, &w4a16::kW4A16TuneMb4Bk128,  &w4a16::kW4A16TmaMb1TwoBlocks,
    &w4a16::kW4A16TmaMb1Bk512,      &w4a16::kW4A16TmaMb2,        &w4a16::kW4A16TmaMb4Bn128,
    &w4a16::kW4A16TmaMb4Bn256,
};
#else
const absl::Span<const Variant* const> kTuningVariants;
#endif

// bf16 activations run the fp16 table's rows and fallbacks through each
// variant's bf16 twin (the same kernel and tiles compiled for bf16), so the
// two tables cannot drift apart. The tiled kernel's 48-row tiles have no twin:
// bf16 takes the 64-row rows from 33 rows on. Not tuned for bf16 yet.
const std::pair<const Variant*, const Variant*> kBf16Twins[] = {
    {&w4a16::kW4A16DecodeM8A16, &w4a16::kW4A16Bf16DecodeM8A16},
    {&w4a16::kW4A16DecodeM8S16, &w4a16::kW4A16Bf16DecodeM8S16},
    {&w4a16::kW4A16DecodeM16S8, &w4a16::kW4A16Bf16DecodeM16S8},
    {&w4a16::kW4A16DecodeM16S16, &w4a16::kW4A16Bf16DecodeM16S16},
    {&w4a16::kW4A16DecodeM16W16A8, &w4a16::kW4A16Bf16DecodeM16W16A8},
    {&w4a16::kW4A16DecodeM16A8, &w4a16::kW4A16Bf16DecodeM16A8},
    {&w4a16::kW4A16Mb1Bn256, &w4a16::kW4A16Bf16Mb1Bn256},
    {&w4a16::kW4A16Mb1Bk512, &w4a16::kW4A16Bf16Mb1Bk512},
    {&w4a16::kW4A16Mb1TwoBlocks, &w4a16::kW4A16Bf16Mb1TwoBlocks},
    {&w4a16::kW4A16Mb2Bn128, &w4a16::kW4A16Bf16Mb2Bn128},
    {&w4a16::kW4A16StreamM8, &w4a16::kW4A16Bf16StreamM8},
    {&w4a16::kW4A16StreamM16, &w4a16::kW4A16Bf16StreamM16},
    {&w4a16::kW4A16StreamM32, &w4a16::kW4A16Bf16StreamM32},
    {&w4a16::kW4A16WgT64W1K128TwoBlocks, &w4a16::kW4A16Bf16WgT64W1K128TwoBlocks},
    {&w4a16::kW4A16WgT64N128K128, &w4a16::kW4A16Bf16WgT64N128K128},
    {&w4a16::kW4A16Mb4Bk256, &w4a16::kW4A16Bf16Mb4Bk256},
    {&w4a16::kW4A16Mb4Bn128, &w4a16::kW4A16Bf16Mb4Bn128},
    {&w4a16::kW4A16Mb4Bn256, &w4a16::kW4A16Bf16Mb4Bn256},
    {&w4a16::kW4A16WgT128, &w4a16::kW4A16Bf16WgT128},
    {&w4a16::kW4A16WgPcT128N256S8, &w4a16::kW4A16Bf16WgPcT128N256S8},
    {&w4a16::kW4A16WgT128N128, &w4a16::kW4A16Bf16WgT128N128},
    {&w4a16::kW4A16WgT256N128D2, &w4a16::kW4A16Bf16WgT256N128D2},
    {&w4a16::kW4A16WgT256N128S6D2, &w4a16::kW4A16Bf16WgT256N128S6D2},
    {&w4a16::kW4A16AnyBk128, &w4a16::kW4A16Bf16AnyBk128},
    {&w4a16::kW4A16AnyBk64, &w4a16::kW4A16Bf16AnyBk64},
};

const Variant* Bf16Twin(const Variant* v) {
  for (const auto& [f16, bf16] : kBf16Twins) {
    if (f16 == v) return bf16;
  }
  return nullptr;
}

// The rows (fallbacks) of the fp16 table whose variant has a twin, in order,
// with the twin. (Only addresses are read: the variants' own initialization
// in other files may come later.)
std::vector<Row> TwinRows(absl::Span<const Row> rows) {
  std::vector<Row> out;
  for (Row r : rows) {
    if ((r.v = Bf16Twin(r.v)) != nullptr) out.push_back(r);
  }
  return out;
}
std::vector<const Variant*> TwinVariants(absl::Span<const Variant* const> variants) {
  std::vector<const Variant*> out;
  for (const Variant* v : variants) {
    if (const Variant* t = Bf16Twin(v)) out.push_back(t);
  }
  return out;
}
const std::vector<Row> kTableBf16 = TwinRows(kTable);
const std::vector<const Variant*> kFallbackBf16 = TwinVariants(kFallbackVariants);

// The selection table, fallbacks and tuning variants of one element type.
struct DTypeTable {
  W4A16DType dtype;
  const char* name;  // for messages
  absl::Span<const Row> rows;
  absl::Span<const Variant* const> fallbacks;
  absl::Span<const Variant* const> tuning;
};
const DTypeTable kDTypeTables[] = {
    {W4A16DType::kF16, "fp16", kTable, kFallbackVariants, kTuningVariants},
    {W4A16DType::kBF16, "bf16", kTableBf16, kFallbackBf16, {}},
};
// Null for a value that names no element type.
const DTypeTable* TableOf(W4A16DType dtype) {
  for (const DTypeTable& t : kDTypeTables) {
    if (t.dtype == dtype) return &t;
  }
  return nullptr;
}

std::vector<const Variant*> Variants(const DTypeTable& t) {
  std::vector<const Variant*> all;
  for (const Row& r : t.rows) {
    if (std::find(all.begin(), all.end(), r.v) == all.end()) all.push_back(r.v);
  }
  all.insert(all.end(), t.fallbacks.begin(), t.fallbacks.end());
  all.insert(all.end(), t.tuning.begin(), t.tuning.end());
  return all;
}

std::string Shape(int64_t m, int64_t n, int64_t k, int group_size) {
  return absl::StrCat("m=", m, ", n=", n, ", k=", k, ", group_size=", group_size);
}

absl::Status CudaError(cudaError_t e, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("W4A16: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

// Size checks shared by every entry point; `who` names the caller.
absl::Status CheckShape(absl::string_view who, int64_t m, int64_t n, int64_t k, int group_size) {
  const auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(who, "(", Shape(m, n, k, group_size), "): ", what));
  };
  if (m < 0 || n <= 0 || k <= 0) return bad("expected m >= 0 and n, k > 0");
  if (n % 64 != 0) return bad("n must be a multiple of 64");
  if (k % 16 != 0) return bad("k must be a multiple of 16");
  if (n > (int64_t{1} << 30) || k > (int64_t{1} << 30) || m > (int64_t{1} << 30)) return bad("sizes above 2^30");
  if (group_size != -1 && (group_size <= 0 || k % group_size != 0)) {
    return bad("group_size must be -1 or divide k");
  }
  return absl::OkStatus();
}

// Shape constraints of a variant, m aside (any variant can chunk m).
bool Fits(const Variant& v, int64_t n, int64_t k, int64_t gs) {
  return n % v.bn == 0 && k % v.bk == 0 && gs % 32 == 0 && (gs % v.bk == 0 || v.bk % gs == 0) && n <= v.max_kn &&
         k <= v.max_kn;
}

// Compute capability of `device` as 10*major + minor; 0 when unknown (then
// no variant is ruled out by architecture).
int DeviceSm(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return 10 * major + minor;
}

int CurrentSm() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return DeviceSm(device);
}

absl::StatusOr<const Variant*> Select(absl::string_view who, int64_t m, int64_t n, int64_t k, int group_size,
                                      const char* forced, int sm, W4A16DType dtype) {
  QF_RETURN_IF_ERROR(CheckShape(who, m, n, k, group_size));
  const int64_t gs = group_size == -1 ? k : group_size;
  const int64_t m_eff = std::max<int64_t>(m, 1);
  const DTypeTable* found = TableOf(dtype);
  if (found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who, "(", Shape(m, n, k, group_size), "): dtype ",
                                                   static_cast<int>(dtype), " is neither kF16 nor kBF16"));
  }
  const DTypeTable& table = *found;
  // A variant runs only calls of its element type, whichever table lists it.
  const auto same_type = [&](const Variant* v) { return v->bf16 == (dtype == W4A16DType::kBF16); };
  if (forced != nullptr) {
    for (const DTypeTable& t : kDTypeTables) {
      for (const Variant* v : Variants(t)) {
        if (absl::string_view(v->name) != forced || same_type(v)) continue;
        return absl::InvalidArgumentError(absl::StrCat(who, "(", Shape(m, n, k, group_size), "): variant ", forced,
                                                       " runs ", v->bf16 ? "bf16" : "fp16",
                                                       " activations, the call passes ", table.name,
                                                       " (W4A16GemmArgs::dtype)"));
      }
    }
    for (const Variant* v : Variants(table)) {
      if (absl::string_view(v->name) != forced) continue;
      // A forced variant may have fewer block rows than m: it then chunks m.
      if (Fits(*v, n, k, gs) && v->RunsOn(sm)) return v;
      return absl::UnimplementedError(
          absl::StrCat(who, "(", Shape(m, n, k, group_size), "): variant ", forced, " does not accept the shape"));
    }
    return absl::InvalidArgumentError(absl::StrCat(who, ": unknown variant '", forced, "'"));
  }
  const auto runs_here = [&](const Variant* v) { return v->RunsOn(sm) && same_type(v); };
  for (const Row& r : table.rows) {
    const bool in_range =
        m_eff >= r.min_m && m_eff <= r.max_m && n >= r.min_n && n < r.max_n && k >= r.min_k && k < r.max_k;
    if (in_range && Fits(*r.v, n, k, gs) && runs_here(r.v)) return r.v;
  }
  for (const Variant* v : table.fallbacks) {
    if (Fits(*v, n, k, gs) && runs_here(v)) return v;
  }
  return absl::UnimplementedError(
      absl::StrCat(who, "(", Shape(m, n, k, group_size), "): no ", table.name,
                   " kernel variant fits; supported: on sm_90 m <= 32 with any n % 64 == 0 and k % 16 == 0, and any "
                   "m with n % 128 == 0 and k % 64 == 0; otherwise n % 128 == 0 and k % 128 == 0, or n % 256 == 0 "
                   "and k % 64 == 0; group_size -1 or a multiple of 32 that divides or is divided by the stage depth "
                   "(32, 64, 128, 256, ...)"));
}

struct DeviceFacts {
  int sms = 0;
  int blocks_per_sm = 0;
};

// Multiprocessor count and resident blocks of `v` on `device`, with its
// dynamic shared-memory allowance raised (w4a16_residency.h: cached).
absl::StatusOr<DeviceFacts> Facts(const Variant& v, int device) {
  DeviceFacts f;
  QF_ASSIGN_OR_RETURN(f.sms, w4a16::MultiprocessorCount(device));
  QF_RETURN_IF_ERROR(w4a16::AllowSharedMemory(v.kernel, device, v.smem_bytes, v.name));
  QF_ASSIGN_OR_RETURN(f.blocks_per_sm, w4a16::ResidentBlocksPerSm(v.kernel, device, v.threads, v.smem_bytes, v.name));
  if (f.blocks_per_sm < 1) {
    return absl::InternalError(absl::StrCat("W4A16: variant ", v.name, " cannot run on device ", device, " (",
                                            v.smem_bytes, " bytes of shared memory)"));
  }
  return f;
}

// Workspace layout, a function of its size alone so that calls with
// different plans (m, n, variant) can share one workspace: the split-K tile
// counters live in the first sixteenth (they must be zero at rest, and no
// call ever writes partial sums there), the fp32 partial slots in the rest.
size_t CounterRegion(size_t workspace_bytes) { return workspace_bytes / 16 / 256 * 256; }

struct Plan {
  int64_t n_tiles, m_chunks, k_tiles, units;
  int grid;
  int64_t max_grid;      // min(units, resident blocks): the largest grid the workspace serves
  size_t counter_bytes;  // tiles * cluster * 4
  size_t partial_bytes;  // 2 * grid * bm * bn * 4

  bool Fits(size_t workspace_bytes) const {
    return counter_bytes <= CounterRegion(workspace_bytes) &&
           partial_bytes <= workspace_bytes - CounterRegion(workspace_bytes);
  }
  // The smallest workspace that Fits.
  size_t MinWorkspace() const {
    size_t w = std::max(16 * ((counter_bytes + 255) / 256 * 256), partial_bytes + partial_bytes / 15 + 4096);
    while (!Fits(w)) w += 4096;
    return w;
  }
};

Plan MakePlan(const Variant& v, const DeviceFacts& f, int64_t m, int64_t n, int64_t k) {
  Plan p;
  p.n_tiles = n / v.bn;
  p.m_chunks = (std::max<int64_t>(m, 1) + v.bm - 1) / v.bm;
  p.k_tiles = k / v.bk;
  p.units = p.n_tiles * p.m_chunks * p.k_tiles;
  // A cluster of v.cluster CTAs is one block of the plan (the H100/H200 pair
  // their SMs in TPCs, so every GPC holds an even number).
  const int64_t slots = int64_t{f.sms} * f.blocks_per_sm / v.cluster, tiles = p.n_tiles * p.m_chunks;
  // Whole tiles, an even split of each tile, or stream-K (kernels/plan/tile_grid.h).
  TileGridProblem g;
  g.tiles = tiles;
  g.k_tiles = p.k_tiles;
  g.slots = slots;
  g.full_tile_partials = v.full_tile_partials;
  g.min_even_fill_pct = v.even_fill_pct;
  p.grid = static_cast<int>(PickTileGrid(g).grid);
  p.max_grid = std::min(p.units, slots);
  p.counter_bytes = static_cast<size_t>(p.n_tiles * p.m_chunks * v.cluster) * sizeof(int);
  // Sized for the stream-K grid even when the plan takes whole tiles, so a
  // workspace sized for some m serves every smaller m of the same variant.
  p.partial_bytes = size_t{2} * std::min<int64_t>(p.units, slots) * v.bm * v.bn * sizeof(float);
  return p;
}

// Workspace of a streaming-family variant: none, or the counters and
// partial slots it declares, in the same layout as Plan's.
absl::StatusOr<Plan> StreamWorkspacePlan(const Variant& v, int64_t n, int64_t k, int device) {
  Plan plan = {};
  if (v.stream_workspace == nullptr) return plan;
  QF_ASSIGN_OR_RETURN(const w4a16::StreamWorkspace need, v.stream_workspace(n, k, device));
  plan.counter_bytes = need.counter_bytes;
  plan.partial_bytes = need.partial_bytes;
  return plan;
}

size_t StreamMinWorkspace(const Plan& plan) { return plan.partial_bytes == 0 ? 0 : plan.MinWorkspace(); }

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

absl::StatusOr<int> CurrentDevice() {
  int device = 0;
  const cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return CudaError(e, "cudaGetDevice");
  return device;
}

}  // namespace

absl::Status W4A16Gemm(const W4A16GemmArgs& args) {
  const int64_t m = args.m, n = args.n, k = args.k;
  const int gsz = args.group_size;
  QF_RETURN_IF_ERROR(CheckShape("W4A16Gemm", m, n, k, gsz));  // bad sizes fail before any CUDA call
  if (m == 0) return absl::OkStatus();
  QF_ASSIGN_OR_RETURN(const int device, CurrentDevice());
  QF_ASSIGN_OR_RETURN(const Variant* v,
                      Select("W4A16Gemm", m, n, k, gsz, args.variant, DeviceSm(device), args.dtype));
  const auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("W4A16Gemm(", Shape(m, n, k, gsz), "): ", what));
  };
  if (args.a == nullptr || args.qweight == nullptr || args.scales == nullptr || args.c == nullptr) {
    return bad("a, qweight, scales and c must be non-null");
  }
  if (!Aligned16(args.a) || !Aligned16(args.qweight) || !Aligned16(args.scales) || !Aligned16(args.c) ||
      !Aligned16(args.zeros) || !Aligned16(args.bias) || !Aligned16(args.workspace)) {
    return bad("every pointer must be 16-byte aligned");
  }
  const int gs_eff = gsz == -1 ? static_cast<int>(k) : gsz;
  const W4A16GemmArgs::StreamPlan& sp = args.stream_plan;
  if (args.tile_blocks != 0 && v->stream_run != nullptr) {
    return bad(absl::StrCat("tile_blocks=", args.tile_blocks,
                            " applies to the tiled and wgmma variants only; variant ", v->name, " streams"));
  }
  if (sp.Any() && v->stream_run == nullptr) {
    return bad(absl::StrCat("stream_plan (wn=", sp.wn, ", wk=", sp.wk, ", split=", sp.split,
                            ") applies to the weight-streaming and decode variants only; variant ", v->name,
                            " is not one"));
  }
  if (v->stream_run != nullptr) {
    // Weight streaming: v->bm rows per launch; a workspace only for the
    // balanced kernel (tile counters, partial slots).
    QF_ASSIGN_OR_RETURN(const Plan wplan, StreamWorkspacePlan(*v, n, k, device));
    int* counters = nullptr;
    float* partials = nullptr;
    if (wplan.partial_bytes > 0) {
      if (args.workspace == nullptr || !wplan.Fits(args.workspace_bytes)) {
        return bad(absl::StrCat("workspace of ", args.workspace_bytes, " bytes (null: ", args.workspace == nullptr,
                                "), variant ", v->name, " needs ", wplan.MinWorkspace(), " (W4A16WorkspaceBytes)"));
      }
      counters = static_cast<int*>(args.workspace);
      partials =
          reinterpret_cast<float*>(static_cast<char*>(args.workspace) + CounterRegion(args.workspace_bytes));
    }
    // 2-byte elements of the variant's type, as in w4a16::StreamParams.
    const __half* a = static_cast<const __half*>(args.a);
    __half* c = static_cast<__half*>(args.c);
    for (int64_t m0 = 0; m0 < m; m0 += v->bm) {
      const w4a16::StreamCall call{a + m0 * k,
                                   args.qweight,
                                   static_cast<const __half*>(args.scales),
                                   args.zeros,
                                   static_cast<const __half*>(args.bias),
                                   c + m0 * n,
                                   static_cast<int>(std::min<int64_t>(v->bm, m - m0)),
                                   static_cast<int>(n),
                                   static_cast<int>(k),
                                   gs_eff,
                                   args.stream,
                                   args.stream_plan,
                                   args.pdl,
                                   counters,
                                   partials};
      if (absl::Status s = v->stream_run(call, device); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("W4A16Gemm(", Shape(m, n, k, gsz), "), variant ", v->name, ": ",
                                                   s.message()));
      }
    }
    return absl::OkStatus();
  }
  QF_ASSIGN_OR_RETURN(const DeviceFacts facts, Facts(*v, device));
  Plan plan = MakePlan(*v, facts, m, n, k);
  if (args.tile_blocks != 0) {
    // Every grid up to max_grid keeps its partial slots (2 per block) inside
    // the workspace the plan sizes.
    if (args.tile_blocks < 1 || args.tile_blocks > plan.max_grid) {
      return bad(absl::StrCat("tile_blocks=", args.tile_blocks, " for variant ", v->name, ": expected 1..",
                              plan.max_grid, " (", plan.units, " units, ", facts.sms * facts.blocks_per_sm / v->cluster,
                              " resident blocks)"));
    }
    plan.grid = args.tile_blocks;
  }
  if (args.workspace == nullptr || !plan.Fits(args.workspace_bytes)) {
    return bad(absl::StrCat("workspace of ", args.workspace_bytes, " bytes (null: ", args.workspace == nullptr,
                            "), variant ", v->name, " needs ", plan.MinWorkspace(), " (W4A16WorkspaceBytes)"));
  }
  w4a16::Params p;
  // 2-byte elements of the variant's type (w4a16::Params).
  p.a = static_cast<const __half*>(args.a);
  p.b = reinterpret_cast<const int4*>(args.qweight);
  p.scales = static_cast<const int4*>(args.scales);
  p.zeros = args.zeros;
  p.bias = static_cast<const __half*>(args.bias);
  p.c = static_cast<__half*>(args.c);
  p.counters = static_cast<int*>(args.workspace);
  p.partials = reinterpret_cast<float*>(static_cast<char*>(args.workspace) + CounterRegion(args.workspace_bytes));
  p.m = static_cast<int>(m);
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.group_size = gs_eff;
  p.group_log2 = (p.group_size & (p.group_size - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(p.group_size)) : -1;
  p.n_tiles = static_cast<int>(plan.n_tiles);
  p.m_chunks = static_cast<int>(plan.m_chunks);
  p.k_tiles = static_cast<int>(plan.k_tiles);
  p.units = plan.units;
  p.pdl = args.pdl;
  cudaError_t e = v->launch(p, plan.grid, args.stream);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("launch of ", v->name, " (", Shape(m, n, k, gsz), ")"));
  return absl::OkStatus();
}

absl::StatusOr<size_t> W4A16WorkspaceBytes(int64_t max_m, int64_t n, int64_t k, int device, const char* variant,
                                           W4A16DType dtype) {
  if (variant != nullptr) {
    QF_ASSIGN_OR_RETURN(const Variant* v,
                        Select("W4A16WorkspaceBytes", max_m, n, k, -1, variant, DeviceSm(device), dtype));
    if (v->stream_run != nullptr) {
      QF_ASSIGN_OR_RETURN(const Plan wplan, StreamWorkspacePlan(*v, n, k, device));
      return StreamMinWorkspace(wplan);
    }
    QF_ASSIGN_OR_RETURN(const DeviceFacts facts, Facts(*v, device));
    return MakePlan(*v, facts, max_m, n, k).MinWorkspace();
  }
  size_t bytes = 0;
  bool any = false;
  absl::Status unimplemented = absl::OkStatus();
  // Within each block-row class the variant is fixed and the need grows with m,
  // so the class tops (and max_m itself) bound every m in [1, max_m]. A class
  // no variant accepts (e.g. m <= 32 with k % 128 != 0) needs nothing.
  for (int64_t m : {int64_t{8}, int64_t{16}, int64_t{32}, int64_t{48}, int64_t{64}, int64_t{128}, max_m}) {
    const int64_t probe = std::min(std::max<int64_t>(m, 1), std::max<int64_t>(max_m, 1));
    absl::StatusOr<const Variant*> v =
        Select("W4A16WorkspaceBytes", probe, n, k, -1, nullptr, DeviceSm(device), dtype);
    if (absl::IsUnimplemented(v.status())) {
      unimplemented = v.status();
      continue;
    }
    if (!v.ok()) return v.status();
    any = true;
    if ((*v)->stream_run != nullptr) {
      QF_ASSIGN_OR_RETURN(const Plan wplan, StreamWorkspacePlan(**v, n, k, device));
      bytes = std::max(bytes, StreamMinWorkspace(wplan));
      continue;
    }
    QF_ASSIGN_OR_RETURN(const DeviceFacts facts, Facts(**v, device));
    bytes = std::max(bytes, MakePlan(**v, facts, probe, n, k).MinWorkspace());
  }
  if (!any) return unimplemented;
  return bytes;
}

absl::StatusOr<std::string> W4A16VariantName(int64_t m, int64_t n, int64_t k, int group_size, W4A16DType dtype) {
  QF_ASSIGN_OR_RETURN(const Variant* v,
                      Select("W4A16VariantName", m, n, k, group_size, nullptr, CurrentSm(), dtype));
  return std::string(v->name);
}

absl::StatusOr<std::string> W4A16LaunchDescription(int64_t m, int64_t n, int64_t k, int group_size,
                                                   const char* variant, W4A16DType dtype) {
  QF_ASSIGN_OR_RETURN(const int device, CurrentDevice());
  QF_ASSIGN_OR_RETURN(const Variant* v,
                      Select("W4A16LaunchDescription", m, n, k, group_size, variant, DeviceSm(device), dtype));
  if (v->stream_describe != nullptr) {
    const int64_t launches = (std::max<int64_t>(m, 1) + v->bm - 1) / v->bm;
    return absl::StrCat(v->name, ": ", launches > 1 ? absl::StrCat(launches, " launches, ") : "",
                        v->stream_describe(m, n, k, device));
  }
  QF_ASSIGN_OR_RETURN(const DeviceFacts facts, Facts(*v, device));
  const Plan plan = MakePlan(*v, facts, m, n, k);
  return absl::StrCat(v->name, ": grid ", plan.grid, v->cluster > 1 ? absl::StrCat(" clusters of ", v->cluster) : "",
                      ", ", plan.units, " units of ", v->bk, " rows");
}

absl::StatusOr<W4A16TileGridRange> W4A16TileGrids(int64_t m, int64_t n, int64_t k, const char* variant,
                                                  W4A16DType dtype) {
  QF_ASSIGN_OR_RETURN(const int device, CurrentDevice());
  QF_ASSIGN_OR_RETURN(const Variant* v, Select("W4A16TileGrids", m, n, k, -1, variant, DeviceSm(device), dtype));
  if (v->stream_run != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("W4A16TileGrids(", Shape(m, n, k, -1), "): variant ", v->name, " streams; it plans no tile grid"));
  }
  QF_ASSIGN_OR_RETURN(const DeviceFacts facts, Facts(*v, device));
  const Plan plan = MakePlan(*v, facts, m, n, k);
  return W4A16TileGridRange{plan.n_tiles * plan.m_chunks, plan.units, plan.max_grid, plan.grid};
}

std::vector<std::string> W4A16VariantNames(W4A16DType dtype) {
  std::vector<std::string> names;
  const DTypeTable* t = TableOf(dtype);
  if (t == nullptr) return names;
  for (const Variant* v : Variants(*t)) names.emplace_back(v->name);
  return names;
}

W4A16Workspace::~W4A16Workspace() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

W4A16Workspace::W4A16Workspace(W4A16Workspace&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}

W4A16Workspace& W4A16Workspace::operator=(W4A16Workspace&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

absl::Status W4A16Workspace::Reserve(absl::StatusOr<size_t> bytes) {
  if (!bytes.ok()) return bytes.status();
  if (*bytes <= size_) return absl::OkStatus();
  if (ptr_ != nullptr) {
    cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  cudaError_t e = cudaMalloc(&ptr_, *bytes);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("allocate a workspace of ", *bytes, " bytes"));
  // cudaMemset runs on the legacy default stream, asynchronously to the host,
  // and a cudaStreamNonBlocking stream does not wait for it: the first split-K
  // call on such a stream could read the counters before they are zero. Wait
  // for it here (a workspace only grows, so this is rare).
  e = cudaMemset(ptr_, 0, *bytes);
  if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamLegacy);
  if (e != cudaSuccess) return CudaError(e, "zero the workspace");
  size_ = *bytes;
  return absl::OkStatus();
}

}  // namespace qf::kernels
