// File: kernels/plan/stream_grid.cc
#include "kernels/plan/stream_grid.h"

#include <algorithm>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qf::kernels {
namespace {

// Fitted on the H200 (stream_grid.h): the loaded DRAM latency a warp's ring
// hides, the fill and drain of one wave of blocks, and the cost of clusters
// larger than 2 (cluster placement and the distributed-shared-memory sum).
constexpr double kLatencyS = 1.0e-6;
constexpr double kWaveS = 3.0e-6;
constexpr double kLargeClusterFactor = 1.2;
constexpr int kMinWarps = 4;
constexpr int kMaxAhead = 8;
// The streaming kernel's block barrier (every ring turn) waits for the
// slowest of its warps: 16-warp blocks measured 20-30% slower than two
// 8-warp blocks with the same warps per multiprocessor.
constexpr int kMaxStreamWarps = 8;
// With A in the ring and 16 rows (A bytes per slot >= the weights' 512), a
// warp reads as many bytes of A as of weights, through L1: warps of one
// k-part share them, and 8-way clusters measured twice as slow. down at
// m = 16 on the H200 (dec_m16_a12, decode loop): 2 x 6 warps in clusters of
// 2 45.3 us, the model's earlier pick 1 x 12 warps unsplit 61.7, 8 x 1 x 8
// 95.8 (bench/results/w4a16_h200_m16.log, run 6). The model has no term for
// this traffic (one that charged A / wn picked the 8-way clusters), so it is
// a preference: at least kMinARingWn warps per k-part, at most
// kMaxARingSplit blocks per cluster, from kShallowASlices of k on. Below,
// A is small enough (256 KB at k = 8192) that the model's own pick runs
// fastest: qkv at m = 16 on the H100 (decode loop), 1 x 4 warps in clusters
// of 2 21.4 us (dec_m16_a8) and 23.4 (dec_m16_a12), against 26.7 and 26.1
// for the preference's 2 x 8 and 2 x 6 (bench/results/w4a16_h100_aring.log).
constexpr int kHeavyASlot = 512;
constexpr int kMinARingWn = 2;
constexpr int kMaxARingSplit = 2;
constexpr int64_t kShallowASlices = 1024;  // k = 16384
// ... unless the model rates the best such grid this much slower than the
// best of all: with few column groups (narrow n) clusters of at most 2 leave
// multiprocessors idle. H100, m = 16, decode loop (bench/results/
// w4a16_h100_m16_deep.log): Qwen2 7B's down (k 18944, n 3584) 2 x 4 warps in
// clusters of 2 (28 groups, 56 blocks) 31.7 us, where the model's own pick,
// 1 x 8 in clusters of 2, ran 23.5 (the fastest grid 22.4); k 28672 x n 4096
// 38.4 against 32.2. The model rates those A-sharing grids 1.8-1.9x slower
// than its own pick, and the A-sharing grids of 70B's down (2 x 4 x 2, the
// fastest there, 47.9) and of the H200 fit no slower than any: every slack
// from 0 to 0.8 picks the same grids on every log.
constexpr double kASharedSlack = 0.25;
// For the same kernels the model's rate comes from the busiest multiprocessor's
// own warps (not the average), and ties go to smaller blocks: grids of 4-warp
// blocks in clusters of 2 then win where they measured fastest. H100, m = 16,
// decode loop (bench/results/w4a16_h100_m16_ties.log): o (dec_m16_a8) 17.5 us
// against 18.3 for 1 x 8 warps unsplit, which the average-rate model with
// "fewer blocks" picked; Llama 8B's qkv (4096 x 6144) 10.2 against 11.7 for
// 1 x 16. Mean regret against the fastest swept grid: that log's 8 cases 8.0%
// -> 4.0%, w4a16_h100_aring.log 1.1% -> 0.6% (one case worse: dec_m16_a12,
// which the table does not take, on o at m = 4, 0.6% -> 2.9%),
// w4a16_h100_tile_grids.log 0.7% -> 0, the H200's 3.2% -> 3.1%. The other
// kernels keep the average, as fitted on the H200 (the busiest SM's warps
// there picked 8 x 1 warps for dec_m8 on gate_up, 24% slower).

// The 8-row decode kernel with A in its ring (A bytes per slot below
// kHeavyASlot: dec_m8_a16, the table's kernel for m <= 8) on small weights,
// where a grid leaves most multiprocessors idle. The average-warps rate above
// rates few-warp grids by the idle multiprocessors too, and its bytes leave
// out the padded steps, which this kernel runs (A zero-filled). Qwen2 1.5B's
// qkv (1536 x 2048, 96 slices) at m = 1 on the H100, decode loop
// (bench/results/w4a16_h100_deep_odd_k.log): the model took 1 x 12 warps in
// clusters of 2 (parts of 4 slices, 16 steps), 5.7 us, behind cuBLAS's 5.2;
// every grid whose parts fill the 16-deep ring exactly ran 3.2-4.0 with at
// most 6 warps per SM, and grids of the same 16 steps with 4-12 padded ones
// 4.6-6.6. So for this kernel:
//   seconds = max(waves x max(chain, busiest bytes / (kSmPeakShare x the
//                 multiprocessor's share of the bandwidth)),
//                 all bytes / the device's bandwidth) + waves x kWaveS
//   chain   = steps x kLatencyS / slices in flight (one warp's ring, padded
//             steps included)
// with 3 to 8 warps per block and ties going first to the fewest padded
// steps on the busiest multiprocessor (Best::BeatenBy). Why at most 8: of
// the 28 sweeps of every grid of this kernel in the H100 logs (m = 1 and
// 4), grids of at most 8 warps per block ran fastest in 27, by 4-60%
// (Qwen2 72B's down: 12 warps 44.9 us against 45.8). Without the bound
// Llama 3.2 1B's down (8192 x 2048) took 1 x 16 in clusters of 2, 7.8 us;
// with it 1 x 8 in clusters of 4, 7.3 (the fastest, 1 x 8 x 2, 6.7;
// bench/results/w4a16_h100_small_models.log). What moved on those logs:
// Qwen2 1.5B's qkv to 1 x 3 x 2 (3.2 us, the fastest swept; was 5.7),
// Llama 3.2 3B's qkv to 1 x 6 x 2 (6.2 against 6.6) and Qwen2 1.5B's down
// to 1 x 6 x 8 (7.0, the fastest); no 70B or Llama 8B pick.
constexpr double kSmPeakShare = 2.0;
constexpr int kMinARingLightWarps = 3;
constexpr int kMaxARingLightWarps = 8;

// Grids measured faster than the model's pick, in every sweep of every grid
// that timed the shape, taken before the model on the device class they were
// measured on (multiprocessors and at most this bandwidth: the H100 SXM, not
// the H200). Only shapes where the model lost by 5% or more in at least two
// sweeps are here; a grid that does not fit leaves the pick to the model.
struct MeasuredGrid {
  int sms;
  double max_device_bytes_per_s;
  int max_m;
  int64_t n64, slices;  // n / 64, k / 16
  int wn, wk, split;
};
// The 8-row kernel with A in its ring (dec_m8_a16) on Llama 3 8B's and
// Mistral 7B's down (14336 x 4096), H100, decode loop, M = 1: 1 x 4 warps in
// clusters of 2 ran 13.2, 13.2 and 14.4 us where the model's 1 x 8 warps in
// clusters of 2 (parts of 56 slices run as 64 ring steps) ran 14.6, 14.6 and
// 16.0 (bench/results/w4a16_h100_push_grids.log, w4a16_h100_refit_grids.log,
// w4a16_h100_m1_shapes.log). Swept again with this table (126 grids per row,
// w4a16_h100_measured_grids.log) it was the fastest grid at M = 1, 4 and 8:
// 13.2, 13.5 and 13.8 us against 14.5, 14.8 and 15.2 for the model's; bf16
// at M = 1 14.3 against 15.6 (w4a16_h100_measured_grids_bf16.log).
constexpr MeasuredGrid kLightARingMeasured[] = {
    {132, 3.5e12, 8, 4096 / 64, 14336 / 16, 1, 4, 2},
};

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool PowerOfTwo(int x) { return x > 0 && (x & (x - 1)) == 0; }

}  // namespace

absl::StatusOr<StreamGrid> PickStreamGrid(const StreamGridProblem& p, ForcedStreamGrid force,
                                          ResidentBlocksFn resident) {
  if (!force.Any() && p.a_slot > 0 && p.a_slot < kHeavyASlot) {
    for (const MeasuredGrid& g : kLightARingMeasured) {
      if (g.sms != p.sms || p.device_bytes_per_s > g.max_device_bytes_per_s || p.m > g.max_m || g.n64 != p.n64 ||
          g.slices != p.slices) {
        continue;
      }
      absl::StatusOr<StreamGrid> measured = PickStreamGrid(p, {g.wn, g.wk, g.split, force.pull}, resident);
      if (measured.ok() || measured.status().code() != absl::StatusCode::kInvalidArgument) return measured;
    }
  }
  // Slices in flight per warp, as far as they count: past 8 a warp's rate
  // stops growing (the 16-deep streaming ring's best grids on the H200 are
  // the 8-deep ring's, 4-6% faster, not grids of fewer warps).
  const int ahead = std::min(p.reg_ring ? p.depth : p.depth - 2, kMaxAhead);
  const double sm_cap = p.device_bytes_per_s / p.sms;
  const bool heavy_a = p.a_slot >= kHeavyASlot;
  const bool light_a_ring = p.a_slot > 0 && !heavy_a;
  // Every slice of the weights at the device's bandwidth: the light A-ring model's floor.
  const double all_bytes_s = static_cast<double>(p.n64) * p.slices * 512 / p.device_bytes_per_s;
  // The best grid (preferred ones first), and the best of those that also
  // share A as the deep 16-row kernels want (kMinARingWn, kMaxARingSplit).
  struct Best {
    StreamGrid grid;
    bool preferred = false;
    // Whether (g, preferred) beats this one: preferred first, then the
    // model's seconds; on a tie the fewer padded steps on the busiest
    // multiprocessor (first those past the parts, then all), then a
    // power-of-two wk, then smaller blocks for the
    // A-heavy kernels, else fewer blocks and the smaller split.
    //
    // Why the padded-step and power-of-two ties: the model rates the busiest
    // multiprocessor's bytes, and where k / 16 divides by 3 grids of
    // different warps per k-part carry exactly the same bytes, so the first
    // found won. H100, decode loop, M = 1, dec_m8_a16
    // (bench/results/w4a16_h100_deep_odd_k.log): Qwen2 72B's down (29568 x
    // 8192, 1848 slices) took 1 x 6 warps, 61.3 us, where 1 x 8 runs 50.0;
    // Llama 3.2 3B's gate_up (3072 x 16384) 2 x 3, 11.3 us, where 2 x 4 runs
    // 11.1. Steps past the parts come first because the small-weight model
    // below ties every grid bound by the same ring chain: of those, the ones
    // whose parts fill whole ring turns ran fastest (Qwen2 1.5B's qkv 1 x 3
    // x 2, 3.2 us, against 4.7 for 1 x 4 x 2's 12-slice parts).
    bool BeatenBy(const StreamGrid& g, bool pref, bool heavy) const {
      if (grid.wn == 0 || pref != preferred) return grid.wn == 0 || pref;
      if (g.seconds < grid.seconds * (1 - 1e-6)) return true;
      if (g.seconds > grid.seconds * (1 + 1e-6)) return false;
      const int w = g.wn * g.wk, best_w = grid.wn * grid.wk;
      const int64_t waste = int64_t{g.blocks_per_sm} * w * (g.steps - g.part);
      const int64_t best_waste = int64_t{grid.blocks_per_sm} * best_w * (grid.steps - grid.part);
      if (waste != best_waste) return waste < best_waste;
      const int64_t padded = int64_t{g.blocks_per_sm} * w * g.steps;
      const int64_t best_padded = int64_t{grid.blocks_per_sm} * best_w * grid.steps;
      if (padded != best_padded) return padded < best_padded;
      if (PowerOfTwo(g.wk) != PowerOfTwo(grid.wk)) return PowerOfTwo(g.wk);
      if (heavy && w != best_w) return w < best_w;
      return g.blocks < grid.blocks || (g.blocks == grid.blocks && g.split < grid.split);
    }
  } best, best_shared;
  // The model's choices: the values the H200 sweep measured (a forced grid may be any).
  const auto candidate = [&](int v, int forced, std::initializer_list<int> measured) {
    return force.Any() ? v == forced : std::find(measured.begin(), measured.end(), v) != measured.end();
  };
  // The shared-ring decode kernel also takes 7 or 14 tiles per block: gate_up's
  // 896 column tiles then make 128 blocks of 7 x 2 (or 14 x 1) warps instead
  // of 112 of 8 x 2, and the decode loop ran 2-4% faster (H200, three
  // processes, bench/results/w4a16_h200_m16.log run 13: M = 1 60.0-60.5 us
  // against 61.2-61.3, M = 4 59.7-59.8 against 62.3-62.4; M = 16 with
  // dec_m16_s8 level, 74.9 against 74.1, run 6).
  const std::initializer_list<int> kWn = {1, 2, 4, 8, 16};
  const std::initializer_list<int> kWnSharedRingDecode = {1, 2, 4, 7, 8, 14, 16};
  const bool shared_ring_decode = p.whole_a && !p.reg_ring;
  for (int wn = 1; wn <= p.max_warps; ++wn) {
    if (p.n64 % wn != 0 || !candidate(wn, force.wn, shared_ring_decode ? kWnSharedRingDecode : kWn)) continue;
    for (int wk = 1; wn * wk <= p.max_warps; ++wk) {
      if (!candidate(wk, force.wk, {1, 2, 3, 4, 6, 8, 12, 16})) continue;
      for (int split = 1; split <= p.max_split && split * wk <= p.slices; ++split) {
        if (!candidate(split, force.split, {1, 2, 4, 8})) continue;
        const int64_t chunk = CeilDiv(p.slices, split);
        const int part = static_cast<int>(CeilDiv(chunk, wk));
        const int steps = static_cast<int>(CeilDiv(part, p.depth) * p.depth);
        size_t smem = p.a_slot > 0 ? DecodeARingSmemBytes(p.m, wn, wk, p.depth, p.a_slot, p.a_depth)
                      : p.whole_a  ? DecodeSmemBytes(p.m, wn, wk, steps, p.reg_ring ? 0 : p.depth)
                                   : StreamSmemBytes(p.m, wn, wk, p.depth, p.reg_ring);
        if (smem > p.smem_per_block) continue;
        const int warps = wn * wk;
        absl::StatusOr<int64_t> slots = resident({wn, wk, split, 32 * warps, smem});
        if (!slots.ok()) return slots.status();
        if (*slots <= 0) continue;
        // The push reduction's region, where it costs no resident blocks.
        size_t recv_off = 0;
        if (p.push && !force.pull && split > 1) {
          const size_t off = (smem + 15) / 16 * 16;
          const size_t with_push = off + PushRecvBytes(p.m, wn, split);
          if (with_push <= p.smem_per_block) {
            absl::StatusOr<int64_t> push_slots = resident({wn, wk, split, 32 * warps, with_push});
            if (!push_slots.ok()) return push_slots.status();
            if (*push_slots == *slots) {
              smem = with_push;
              recv_off = off;
            }
          }
        }
        const int64_t blocks = p.n64 / wn * split;
        const int64_t waves = CeilDiv(blocks, *slots);
        const int64_t wave_blocks = std::min(blocks, *slots);
        const int per_sm = static_cast<int>(CeilDiv(wave_blocks, p.sms));
        const double sm_bytes = static_cast<double>(per_sm) * warps * part * 512;  // per wave
        double t;
        if (light_a_ring) {
          const double chain = steps * kLatencyS / ahead;
          t = std::max(waves * std::max(chain, sm_bytes / (kSmPeakShare * sm_cap)), all_bytes_s) + waves * kWaveS;
        } else {
          // The busiest multiprocessor's own warps set the A-heavy kernels'
          // rate (above); the average, as fitted on the H200, the others'.
          const double warps_per_sm = static_cast<double>(wave_blocks) * warps / p.sms;
          const double rate_warps = heavy_a ? static_cast<double>(per_sm) * warps : warps_per_sm;
          const double rate = std::min(rate_warps * ahead * 512 / kLatencyS, sm_cap);
          t = waves * sm_bytes / rate + waves * kWaveS;
        }
        if (split > 2) t *= kLargeClusterFactor;
        const bool a_shared = p.a_slot < kHeavyASlot || p.slices < kShallowASlices ||
                              (wn >= kMinARingWn && split <= kMaxARingSplit);
        const bool preferred = warps >= std::min(light_a_ring ? kMinARingLightWarps : kMinWarps, p.max_warps) &&
                               (p.whole_a || p.a_slot > 0 || (PowerOfTwo(wk) && warps <= kMaxStreamWarps)) &&
                               (!light_a_ring || warps <= kMaxARingLightWarps);
        StreamGrid g{wn, wk, split, steps, part, smem, blocks, per_sm, t};
        g.recv_off = recv_off;
        if (best.BeatenBy(g, preferred, heavy_a)) best = Best{g, preferred};
        if (a_shared && best_shared.BeatenBy(g, preferred, heavy_a)) best_shared = Best{g, preferred};
      }
    }
  }
  // The A-sharing grid, unless the model rates it far slower than the best.
  if (best_shared.grid.wn != 0 && best_shared.preferred == best.preferred &&
      best_shared.grid.seconds <= best.grid.seconds * (1 + kASharedSlack)) {
    best = best_shared;
  }
  if (best.grid.wn == 0 && force.Any()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W4A16 stream: forced grid wn=", force.wn, ", wk=", force.wk, ", split=", force.split, " does not fit m=", p.m,
        ", n=", p.n64 * 64, ", k=", p.slices * 16, " (expected wn | n/64, wn*wk <= ", p.max_warps,
        ", split <= ", p.max_split, ", split*wk <= k/16, and the shared memory and registers to fit)"));
  }
  if (best.grid.wn == 0) {
    return absl::InternalError(absl::StrCat("W4A16 stream: no grid fits m=", p.m, ", n=", p.n64 * 64,
                                            ", k=", p.slices * 16, " (", p.smem_per_block,
                                            " bytes of shared memory per block)"));
  }
  return best.grid;
}

}  // namespace qf::kernels
