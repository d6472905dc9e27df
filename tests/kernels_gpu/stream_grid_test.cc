// The grid model of the weight-streaming / decode kernels (kernels/plan/stream_grid.h)
// against what the grids measured on an H200 and an H100: for every shape,
// kernel and m in bench/results/w4a16_h200_grids.log (cold calls) and the
// H100 logs' grid sweeps (decode loop), the grid it picks must have run
// within 20% of the fastest grid measured there (and within 8% on average).
// The devices: 132 multiprocessors, each one's attainable bandwidth, 227 KB
// of shared memory per block, and residency from each kernel's registers
// per thread (ptxas, nvcc 13.0, sm_90a).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/plan/stream_grid.h"

namespace qf::kernels {
namespace {

using ::testing::HasSubstr;

constexpr int kSms = 132;
constexpr size_t kSmemPerSm = 233472;  // 228 KB, of which 1 KB per block is reserved

struct Kernel {
  int rows;        // m per launch
  int regs;        // per thread
  int max_warps;   // launch bound
  int static_smem;
  bool whole_a;    // decode kernel
  int depth;
  bool reg_ring;
  int a_slot = 0;  // decode kernel with A in its ring: A bytes per slot
  int a_depth = 0;  // its A slots per warp when fewer than `depth` (a split ring)
};
const std::map<std::string, Kernel>& Kernels() {
  static const auto* k = new std::map<std::string, Kernel>{
      {"stream_m8", {8, 102, 16, 256, false, 8, false}},
      {"stream_m8_d16", {8, 101, 16, 256, false, 16, false}},
      {"stream_m16", {16, 108, 16, 256, false, 8, false}},
      {"dec_m8", {8, 165, 12, 0, true, 8, true}},
      {"dec_m16", {16, 167, 12, 0, true, 8, true}},
      {"dec_m16_a12", {16, 145, 12, 0, false, 12, false, 512}},
      {"dec_m16_a8", {16, 128, 16, 0, false, 8, false, 512}},
      {"dec_m16_w16a8", {16, 168, 12, 0, false, 16, false, 512, 8}},
      {"dec_m8_s16", {8, 128, 16, 0, true, 16, false}},
      {"dec_m16_s16", {16, 128, 16, 0, true, 16, false}},
      {"dec_m16_s8", {16, 128, 16, 0, true, 8, false}},
      {"dec_m8_a16", {8, 128, 16, 0, false, 16, false, 256}},
  };
  return *k;
}

// The occupancy calculator's arithmetic for sm_90: registers in 256-register
// units per warp, 64K per multiprocessor; shared memory per block plus 1 KB.
int64_t Resident(const Kernel& kern, const StreamGridShape& g) {
  const int warps = g.threads / 32;
  const int reg_warp = (kern.regs * 32 + 255) / 256 * 256;
  const int by_regs = 65536 / (reg_warp * warps);
  const int by_smem = static_cast<int>(kSmemPerSm / (g.smem + kern.static_smem + 1024));
  const int bps = std::min({by_regs, by_smem, 32});
  return int64_t{bps} * kSms / g.split * g.split;
}

// The device the grids were measured on: multiprocessors and the attainable
// DRAM bandwidth the planner assumes (0.9 x the memory interface's peak, as
// w4a16_stream.cu computes it from the device's clock and bus width).
struct Device {
  int sms;
  double bytes_per_s;
};
constexpr Device kH200 = {kSms, 0.9 * 2.0 * 3.2e9 * 6144 / 8};   // 3.2 GHz x 6144-bit HBM3e
constexpr Device kH100 = {kSms, 0.9 * 2.0 * 2.619e9 * 5120 / 8};  // 2.619 GHz x 5120-bit HBM3

StreamGridProblem Problem(const Kernel& kern, int m, int64_t n, int64_t k, const Device& dev = kH200) {
  StreamGridProblem p;
  p.sms = dev.sms;
  p.device_bytes_per_s = dev.bytes_per_s;
  p.smem_per_block = 232448 - kern.static_smem;
  p.m = m;
  p.n64 = n / 64;
  p.slices = k / 16;
  p.max_warps = kern.max_warps;
  p.depth = kern.depth;
  p.reg_ring = kern.reg_ring;
  p.whole_a = kern.whole_a;
  p.a_slot = kern.a_slot;
  p.a_depth = kern.a_depth;
  return p;
}

const std::map<std::string, std::pair<int64_t, int64_t>> kShapes = {
    {"qkv", {8192, 10240}}, {"o", {8192, 8192}}, {"gate_up", {8192, 57344}}, {"down", {28672, 8192}}};

// (k, n) of a shape as w4a16_bench names it: a 70B name or "KxN".
std::pair<int64_t, int64_t> ShapeKn(const std::string& name) {
  if (const auto it = kShapes.find(name); it != kShapes.end()) return it->second;
  const size_t x = name.find('x');
  return {std::stoll(name.substr(0, x)), std::stoll(name.substr(x + 1))};
}

// The model's grid for `kern` at (m, n, k) on `dev`, resident blocks from the
// occupancy arithmetic above; `push` as StreamGridProblem's, `force` as
// PickStreamGrid's.
absl::StatusOr<StreamGrid> Pick(const Kernel& kern, int m, int64_t n, int64_t k, const Device& dev,
                                bool push = false, ForcedStreamGrid force = {}) {
  StreamGridProblem p = Problem(kern, m, n, k, dev);
  p.push = push;
  return PickStreamGrid(p, force,
                        [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); });
}

// (wn, wk, split) of `variant`'s grid at m = 16 on the H100; (0, 0, 0) and a
// failure when the model finds none.
std::tuple<int, int, int> PickedOnH100AtM16(const char* variant, int64_t k, int64_t n) {
  const absl::StatusOr<StreamGrid> g = Pick(Kernels().at(variant), 16, n, k, kH100);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::make_tuple(g->wn, g->wk, g->split) : std::make_tuple(0, 0, 0);
}

// Every (shape, m, variant) whose grids a results log lists (w4a16_bench
// --sweep --grids rows; `column` 0 = the cold call's microseconds, 1 = the
// decode loop's): the grid the model picks must be one of them and run
// within `worst` of the fastest, and within `mean` on average. Returns the
// number of cases.
int CheckPicks(const std::string& log, const Device& dev, int column, double worst, double mean) {
  const std::string path = std::string(QF_SOURCE_DIR) + "/bench/results/" + log;
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  // (shape, m, variant) -> (wn, wk, split) -> microseconds
  std::map<std::tuple<std::string, int, std::string>, std::map<std::tuple<int, int, int>, double>> measured;
  const std::regex row(
      R"(\|   grid \| (\w+) \| (\d+) \| (\w+) \| wn (\d+) wk (\d+) split (\d+) \| ([\d.]+) \|(?: [\d.]+x \| ([\d.]+) \|)?)");
  for (std::string line; std::getline(in, line);) {
    std::smatch s;
    if (!std::regex_search(line, s, row) || !s[7 + column].matched) continue;
    measured[{s[1], std::stoi(s[2]), s[3]}][{std::stoi(s[4]), std::stoi(s[5]), std::stoi(s[6])}] =
        std::stod(s[7 + column]);
  }
  double regret_sum = 0;
  for (const auto& [key, grids] : measured) {
    const auto& [shape, m, variant] = key;
    SCOPED_TRACE(absl::StrCat(log, ": ", shape, " m=", m, " ", variant));
    if (Kernels().count(variant) == 0) {
      ADD_FAILURE() << "no registers or launch bound listed for " << variant << " (Kernels())";
      continue;
    }
    const Kernel& kern = Kernels().at(variant);
    const auto [k, n] = ShapeKn(shape);
    absl::StatusOr<StreamGrid> g = Pick(kern, std::min(m, kern.rows), n, k, dev);
    EXPECT_TRUE(g.ok()) << g.status();
    if (!g.ok()) continue;
    const auto it = grids.find({g->wn, g->wk, g->split});
    EXPECT_NE(it, grids.end()) << "picked wn=" << g->wn << " wk=" << g->wk << " split=" << g->split
                               << ", which the sweep did not run";
    if (it == grids.end()) continue;
    double best = it->second;
    for (const auto& [grid, us] : grids) best = std::min(best, us);
    EXPECT_LE(it->second, (1 + worst) * best) << "picked wn=" << g->wn << " wk=" << g->wk << " split=" << g->split;
    regret_sum += it->second / best - 1;
  }
  if (!measured.empty()) {
    EXPECT_LE(regret_sum / measured.size(), mean) << log;
  }
  return static_cast<int>(measured.size());
}

TEST(StreamGridTest, PicksAGridMeasuredNearTheFastestOnTheH200) {
  EXPECT_GE(CheckPicks("w4a16_h200_grids.log", kH200, 0, 0.20, 0.08), 20);
}

// The same model with the H100's bandwidth, against the decode loop's times
// of every grid swept there (the timing the targets use; programmatic
// launches, padded placement). The A-in-the-ring preference for two warps per
// k-part, applied at every k, picked 2 x 8 warps for dec_m16_a8 on qkv at
// m = 16: 26.7 us against 21.4, 25% over.
TEST(StreamGridTest, PicksAGridMeasuredNearTheFastestOnTheH100) {
  int cases = 0;
  for (const char* log : {"w4a16_h100_grids.log", "w4a16_h100_early.log", "w4a16_h100_variants.log",
                          "w4a16_h100_aring.log", "w4a16_h100_tile_grids.log", "w4a16_h100_m16_ties.log",
                          "w4a16_h100_m16_deep.log", "w4a16_h100_m1_shapes.log", "w4a16_h100_push_grids.log",
                          "w4a16_h100_refit_grids.log", "w4a16_h100_measured_grids.log"}) {
    cases += CheckPicks(log, kH100, 1, 0.20, 0.08);
  }
  // The odd-k and tie sweeps: Qwen2 72B's down, Llama 3.2 3B's gate_up and o,
  // Qwen2 1.5B's down and qkv (1536 x 2048, 1.5 MB of weights; a known miss
  // until the small-weight model of the 8-row A-ring kernel, stream_grid.cc).
  cases += CheckPicks("w4a16_h100_deep_odd_k.log", kH100, 1, 0.20, 0.08);
  // Small models' projections at m = 1 and 4 (Qwen2 0.5B and 1.5B, Llama 3.2
  // 1B and 3B): weights of 0.6-8 MB that leave most multiprocessors idle.
  cases += CheckPicks("w4a16_h100_small_models.log", kH100, 1, 0.20, 0.08);
  EXPECT_GE(cases, 20);
}

// The 8-row A-ring kernel's pick at M = 1 on the H100 for each k x n, with
// both reductions (push and pull): wn x wk x split as wanted, and whatever
// `more` checks of the grid.
struct WantedGrid {
  int64_t k, n;
  std::tuple<int, int, int> want;
};
void ExpectEightRowPicks(const std::vector<WantedGrid>& cases,
                         const std::function<void(const WantedGrid&, const StreamGrid&)>& more = nullptr) {
  for (const bool push : {false, true}) {
    for (const WantedGrid& c : cases) {
      SCOPED_TRACE(absl::StrCat(c.k, " x ", c.n, " push=", push));
      const absl::StatusOr<StreamGrid> g = Pick(Kernels().at("dec_m8_a16"), 1, c.n, c.k, kH100, push);
      ASSERT_TRUE(g.ok()) << g.status();
      EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split), c.want);
      if (more) more(c, *g);
    }
  }
}

// Small weights on the 8-row A-ring kernel (stream_grid.cc, kSmPeakShare):
// each warp's ring chain and the busiest multiprocessor's bytes, 3 to 8 warps
// per block, ties to the fewest padded steps. H100, decode loop, every grid
// swept (bench/results/w4a16_h100_small_models.log, w4a16_h100_deep_odd_k.log):
// Qwen2 1.5B's qkv and o take 1 x 3 warps in clusters of 2, parts of one
// 16-slice ring turn (3.2 us, the fastest; the byte model's 1 x 12 x 2 ran
// 5.7 and 6.6), and its down 1 x 6 x 8 (7.0, the fastest; parts of 12). No grid of more
// than 8 warps per block: Llama 3.2 1B's down ran 7.8 us on 1 x 16 x 2.
TEST(StreamGridTest, SmallWeightsOnTheEightRowARingFillWholeRingTurnsWithFewWarps) {
  ExpectEightRowPicks({{1536, 2048, {1, 3, 2}}, {1536, 1536, {1, 3, 2}}, {8960, 1536, {1, 6, 8}}},
                      [](const WantedGrid& c, const StreamGrid& g) {
                        if (c.k == 1536) {
                          EXPECT_EQ(g.part, g.steps);  // one whole ring turn
                        }
                      });
  for (const auto& [k, n] : {std::pair<int64_t, int64_t>{8192, 2048}, {2048, 3072}, {3072, 5120}, {896, 1152}}) {
    const absl::StatusOr<StreamGrid> g = Pick(Kernels().at("dec_m8_a16"), 1, n, k, kH100, /*push=*/true);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_LE(g->wn * g->wk, 8) << k << " x " << n;
  }
}

// The measured grids (stream_grid.cc, kLightARingMeasured) come before the
// model only on the device class and rows they were measured on: Llama 3 8B's
// down (14336 x 4096) takes 1 x 4 warps in clusters of 2 on the H100 at 1-8
// rows with either reduction, the model's own pick on the H200 and for the
// 16-row kernel, and a forced grid stays the caller's.
TEST(StreamGridTest, MeasuredGridsComeBeforeTheModelOnTheirDeviceOnly) {
  ExpectEightRowPicks({{14336, 4096, {1, 4, 2}}});
  for (const int m : {1, 4, 8}) {
    SCOPED_TRACE(absl::StrCat("m=", m));
    const absl::StatusOr<StreamGrid> h100 = Pick(Kernels().at("dec_m8_a16"), m, 4096, 14336, kH100, true);
    ASSERT_TRUE(h100.ok()) << h100.status();
    EXPECT_EQ(std::make_tuple(h100->wn, h100->wk, h100->split), std::make_tuple(1, 4, 2));
    EXPECT_EQ(h100->part, 14336 / 16 / 2 / 4);
  }
  const absl::StatusOr<StreamGrid> h200 = Pick(Kernels().at("dec_m8_a16"), 1, 4096, 14336, kH200, true);
  ASSERT_TRUE(h200.ok()) << h200.status();
  EXPECT_NE(std::make_tuple(h200->wn, h200->wk, h200->split), std::make_tuple(1, 4, 2)) << "H200: the model";
  const absl::StatusOr<StreamGrid> rows16 = Pick(Kernels().at("dec_m16_a8"), 16, 4096, 14336, kH100, true);
  ASSERT_TRUE(rows16.ok()) << rows16.status();
  EXPECT_NE(std::make_tuple(rows16->wn, rows16->wk, rows16->split), std::make_tuple(1, 4, 2)) << "16 rows: the model";
  const absl::StatusOr<StreamGrid> forced =
      Pick(Kernels().at("dec_m8_a16"), 1, 4096, 14336, kH100, true, ForcedStreamGrid{1, 8, 2});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(std::make_tuple(forced->wn, forced->wk, forced->split), std::make_tuple(1, 8, 2));
}

// The 16-row A-in-the-ring kernels: the busiest multiprocessor's warps set the
// rate, and ties go to smaller blocks. On the H100 (decode loop,
// w4a16_h100_m16_ties.log) that picks the fastest grid swept for dec_m16_a8
// on o (1 x 4 warps in clusters of 2, 17.5 us; "fewer blocks" on the average
// rate picked 1 x 8 unsplit, 18.3), on Llama 8B's qkv 4096 x 6144 (10.2 us;
// before, 1 x 16 unsplit, 11.7) and on 70B qkv (21.1 us, unchanged).
TEST(StreamGridTest, SixteenRowARingPicksTheFastestSweptGrid) {
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_a8", 8192, 8192), std::make_tuple(1, 4, 2));
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_a8", 4096, 6144), std::make_tuple(1, 4, 2));
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_a8", 8192, 10240), std::make_tuple(1, 4, 2));
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_w16a8", 8192, 8192), std::make_tuple(1, 4, 2));
}

// Deep k (k >= 16384): clusters of at most 2 with 2 warps per k-part share A,
// unless the model rates them far slower (kASharedSlack). H100, decode loop
// (w4a16_h100_m16_deep.log), dec_m16_w16a8: 70B down keeps 2 x 4 x 2 (47.9 us,
// the fastest); Qwen2 7B's down (18944 x 3584) takes 1 x 8 x 2 (23.5; the
// A-sharing 2 x 4 x 2, 28 groups in 56 blocks, 31.7).
TEST(StreamGridTest, DeepKSharesAUnlessTooFewGroupsFillTheDevice) {
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_w16a8", 28672, 8192), std::make_tuple(2, 4, 2));
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_w16a8", 18944, 3584), std::make_tuple(1, 8, 2));
  EXPECT_EQ(PickedOnH100AtM16("dec_m16_w16a8", 28672, 4096), std::make_tuple(1, 8, 2));
}

TEST(StreamGridTest, ForcedGridIsTakenAsIsOrRefusedWithTheShape) {
  const Kernel& kern = Kernels().at("dec_m8");
  const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); };
  absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(kern, 1, 8192, 8192), {2, 3, 4}, resident);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split), std::make_tuple(2, 3, 4));
  EXPECT_EQ(g->blocks, 8192 / 64 / 2 * 4);
  for (const ForcedStreamGrid bad : {ForcedStreamGrid{3, 1, 1}, ForcedStreamGrid{4, 4, 1}, ForcedStreamGrid{1, 1, 9},
                                     ForcedStreamGrid{-1, 0, 0}, ForcedStreamGrid{0, 0, -2}}) {
    absl::StatusOr<StreamGrid> r = PickStreamGrid(Problem(kern, 1, 8192, 8192), bad, resident);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat("forced grid wn=", bad.wn, ", wk=", bad.wk)));
    EXPECT_THAT(r.status().message(), HasSubstr("m=1, n=8192, k=8192"));
  }
}

TEST(StreamGridTest, DeviceErrorsAndImpossibleShapesAreReported) {
  const Kernel& kern = Kernels().at("stream_m8");
  absl::StatusOr<StreamGrid> r =
      PickStreamGrid(Problem(kern, 8, 8192, 8192), {}, [](const StreamGridShape&) -> absl::StatusOr<int64_t> {
        return absl::InternalError("occupancy query: cudaErrorInvalidDevice");
      });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("cudaErrorInvalidDevice"));
  // No candidate is resident anywhere: Internal naming the shape.
  r = PickStreamGrid(Problem(kern, 8, 8192, 8192), {},
                     [](const StreamGridShape&) -> absl::StatusOr<int64_t> { return int64_t{0}; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("no grid fits m=8, n=8192, k=8192"));
}

// Smaller problems keep every multiprocessor busy: a one-tile-wide linear
// (n = 64) still spreads its k over clusters, and every pick respects the
// shared-memory limit it was given.
TEST(StreamGridTest, NarrowAndDeepShapesSpreadOverTheDevice) {
  for (const auto& [name, kern] : Kernels()) {
    SCOPED_TRACE(name);
    const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); };
    absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(kern, kern.rows, 64, 28672), {}, resident);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->wn, 1);
    EXPECT_GE(g->wk * g->split, 8) << "one column tile must still use several warps' worth of k-parts";
    EXPECT_LE(g->smem, size_t{232448});
  }
}

// With A in the ring a block's shared memory is its rings, whatever k is.
// For deep k, 16 rows of A are shared between at least two warps in clusters
// of at most two (stream_grid.cc); on down (k = 28672) that is the measured
// best grid, one wave of 2 x 6 warps, where staging A's k-part whole leaves
// fewer warps or more waves. Below 16384 k the model picks freely: on qkv
// (k = 8192) that is 4 warps of one column tile in clusters of 2, the
// H100's fastest grid for both rings (bench/results/w4a16_h100_aring.log:
// dec_m16_a8 21.4 us against 26.7 for the 2 x 8 warps the preference took).
// A split ring (dec_m16_w16a8: 16 weight slots and 8 A slots per warp) is
// planned with 16 x 512 + 8 x 512 bytes per warp: the 12-slot ring's 12 KB,
// with the weights 14 slices ahead instead of 10, in less than 16 slots of
// both would take.
TEST(StreamGridTest, SplitRingPlansItsOwnASlots) {
  const Kernel& split = Kernels().at("dec_m16_w16a8");
  for (const auto& [shape, kn] : kShapes) {
    SCOPED_TRACE(shape);
    const auto [k, n] = kn;
    const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(split, s); };
    absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(split, 16, n, k), {}, resident);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->smem, DecodeARingSmemBytes(16, g->wn, g->wk, 16, 512, 8));
    EXPECT_EQ(DecodeARingSmemBytes(16, g->wn, g->wk, 16, 512, 8), DecodeARingSmemBytes(16, g->wn, g->wk, 12, 512));
    EXPECT_LT(DecodeARingSmemBytes(16, g->wn, g->wk, 16, 512, 8), DecodeARingSmemBytes(16, g->wn, g->wk, 16, 512));
    EXPECT_LE(g->wn * g->wk, 12);
  }
}

TEST(StreamGridTest, ARingGridsDoNotGrowWithK) {
  const Kernel& whole = Kernels().at("dec_m16");
  for (const char* name : {"dec_m16_a12", "dec_m16_a8"}) {
    const Kernel& ring = Kernels().at(name);
    for (const auto& [shape, kn] : kShapes) {
      SCOPED_TRACE(absl::StrCat(name, " ", shape));
      const auto [k, n] = kn;
      const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(ring, s); };
      absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(ring, 16, n, k), {}, resident);
      ASSERT_TRUE(g.ok()) << g.status();
      EXPECT_EQ(g->smem, DecodeARingSmemBytes(16, g->wn, g->wk, ring.depth, 512));
      EXPECT_LE(g->smem, size_t{232448});
      if (shape == "qkv") {
        EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split), std::make_tuple(1, 4, 2));
      }
      if (k < 16384) continue;
      EXPECT_GE(g->wn, 2) << "A's slices shared by two warps";
      EXPECT_LE(g->split, 2);
      if (shape != "down" || ring.depth != 12) continue;
      EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split), std::make_tuple(2, 6, 2));
      const int64_t slots = *resident({g->wn, g->wk, g->split, 32 * g->wn * g->wk, g->smem});
      EXPECT_LE(g->blocks, slots) << "one wave";
      EXPECT_GE(g->blocks_per_sm * g->wn * g->wk, 12);
    }
  }
  const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(whole, s); };
  absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(whole, 16, 8192, 28672), {}, resident);
  ASSERT_TRUE(g.ok()) << g.status();
  const int64_t slots = *resident({g->wn, g->wk, g->split, 32 * g->wn * g->wk, g->smem});
  EXPECT_TRUE(g->blocks > slots || g->blocks_per_sm * g->wn * g->wk < 12)
      << "whole A at m = 16, k = 28672: wn=" << g->wn << " wk=" << g->wk << " split=" << g->split;
}

// Where k / 16 divides by 3, grids of different warps per k-part carry the
// same bytes on the busiest multiprocessor, and the first found won. Ties now
// go to fewer padded steps, then to a power-of-two wk. Measured on the H100,
// decode loop, M = 1 (bench/results/w4a16_h100_deep_odd_k.log): Qwen2 72B's
// down 1 x 8 50.0 us against 61.3 for the 1 x 6 picked before, Llama 3.2
// 3B's gate_up 2 x 4 11.1 against 11.3. 70B's down (1792 slices) had no tie
// and keeps 1 x 8. (Small weights, whose chain-bound grids tie too:
// SmallWeightsOnTheEightRowARingFillWholeRingTurnsWithFewWarps.)
TEST(StreamGridTest, ByteTiesGoToFewerPaddedStepsThenPowerOfTwoWarpsPerKPart) {
  ExpectEightRowPicks({{29568, 8192, {1, 8, 1}}, {3072, 16384, {2, 4, 1}}, {28672, 8192, {1, 8, 1}}});
}

// gate_up's 896 column tiles on the shared-ring decode kernel: 128 blocks of
// 7 x 2 warps (the decode loop's fastest grid in three processes on the
// H200), not 112 of 8 x 2; kernels with other rings keep power-of-two wn.
TEST(StreamGridTest, SharedRingDecodeSpreadsGateUpOver128Blocks) {
  for (const char* name : {"dec_m8_s16", "stream_m8"}) {
    SCOPED_TRACE(name);
    const Kernel& kern = Kernels().at(name);
    const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); };
    absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(kern, 1, 57344, 8192), {}, resident);
    ASSERT_TRUE(g.ok()) << g.status();
    if (kern.whole_a && !kern.reg_ring) {
      EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split, g->blocks), std::make_tuple(7, 2, 1, int64_t{128}));
    } else {
      EXPECT_EQ(g->wn & (g->wn - 1), 0) << "wn=" << g->wn;
    }
  }
}

// Shared memory padded to the planned placement (PlacementSmemBytes): for
// every kernel, shape and row count the padded grid fits no more blocks per
// multiprocessor than planned and still one wave's worth; grids that already
// fit no more keep their size. gate_up at M = 1 (72 KB blocks, three would
// fit) is the case measured on the H100.
TEST(StreamGridTest, PaddedSharedMemoryHoldsThePlannedPlacement) {
  EXPECT_EQ(PlacementSmemBytes(72 * 1024, 1, kSmemPerSm, 1024, 232448), size_t{115840});
  EXPECT_EQ(PlacementSmemBytes(120 * 1024, 1, kSmemPerSm, 1024, 232448), size_t{120 * 1024}) << "one fits already";
  EXPECT_EQ(PlacementSmemBytes(40 * 1024, 3, kSmemPerSm, 1024, 232448), size_t{57472});
  EXPECT_EQ(PlacementSmemBytes(40 * 1024, 0, kSmemPerSm, 1024, 232448), size_t{40 * 1024}) << "no plan";
  EXPECT_EQ(PlacementSmemBytes(40 * 1024, 1, kSmemPerSm, 1024, 64 * 1024), size_t{40 * 1024}) << "over the limit";
  int padded_grids = 0;
  for (const auto& [name, kern] : Kernels()) {
    for (const auto& [shape, kn] : kShapes) {
      for (const int m : {1, kern.rows}) {
        SCOPED_TRACE(absl::StrCat(name, " ", shape, " m=", m));
        const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); };
        absl::StatusOr<StreamGrid> g = PickStreamGrid(Problem(kern, m, kn.second, kn.first), {}, resident);
        ASSERT_TRUE(g.ok()) << g.status();
        const size_t overhead = static_cast<size_t>(kern.static_smem) + 1024;
        const size_t padded = PlacementSmemBytes(g->smem, g->blocks_per_sm, kSmemPerSm, overhead, 232448);
        const auto by_smem = [&](size_t smem) { return static_cast<int>(kSmemPerSm / (smem + overhead)); };
        if (padded == g->smem) {
          EXPECT_LE(by_smem(padded), g->blocks_per_sm);
          continue;
        }
        ++padded_grids;
        const int threads = 32 * g->wn * g->wk;
        const int64_t before = *resident({g->wn, g->wk, g->split, threads, g->smem});
        const int64_t after = *resident({g->wn, g->wk, g->split, threads, padded});
        EXPECT_GT(padded, g->smem);
        EXPECT_GT(by_smem(g->smem), g->blocks_per_sm);
        EXPECT_EQ(by_smem(padded), g->blocks_per_sm);
        EXPECT_GE(after, std::min(g->blocks, before)) << "still one wave of the planned blocks";
      }
    }
  }
  EXPECT_GT(padded_grids, 1);

  // The H100's bandwidth (2619 MHz x 5120-bit HBM3) makes gate_up at M = 1
  // 128 blocks of 7 x 1 warps (72 KB): three fit by shared memory, two by registers.
  const Kernel& kern = Kernels().at("dec_m8_s16");
  StreamGridProblem h100 = Problem(kern, 1, 57344, 8192);
  h100.device_bytes_per_s = 0.9 * 2.0 * 2.619e9 * 5120 / 8;
  const auto resident = [&](const StreamGridShape& s) -> absl::StatusOr<int64_t> { return Resident(kern, s); };
  absl::StatusOr<StreamGrid> g = PickStreamGrid(h100, {}, resident);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split, g->blocks, g->blocks_per_sm),
            std::make_tuple(7, 1, 1, int64_t{128}, 1));
  const size_t padded = PlacementSmemBytes(g->smem, 1, kSmemPerSm, 1024, 232448);
  EXPECT_EQ(*resident({7, 1, 1, 224, g->smem}), 2 * kSms);
  EXPECT_EQ(*resident({7, 1, 1, 224, padded}), kSms);
}

// The push reduction's region (PushRecvBytes) rides on split grids of the
// decode kernels only where it costs no resident blocks: the same grid as
// without it, then either its region after the rings and partial tiles or
// none. gate_up's 16-row grid (184 KB blocks) has no room; qkv's has.
TEST(StreamGridTest, PushRegionOnlyWhereItCostsNoResidentBlocks) {
  EXPECT_EQ(PushRecvBytes(16, 1, 1), size_t{0});
  EXPECT_EQ(PushRecvBytes(1, 1, 2), size_t{16 + 256});
  EXPECT_EQ(PushRecvBytes(16, 2, 4), size_t{16 + 3 * 16 * 16 * 32});
  int pushed = 0, refused = 0;
  for (const auto& [name, kern] : Kernels()) {
    if (!kern.whole_a && kern.a_slot == 0) continue;  // the streaming kernel pulls
    for (const auto& [shape, kn] : kShapes) {
      for (const int m : {1, kern.rows}) {
        SCOPED_TRACE(absl::StrCat(name, " ", shape, " m=", m));
        absl::StatusOr<StreamGrid> pull = Pick(kern, m, kn.second, kn.first, kH100);
        absl::StatusOr<StreamGrid> g = Pick(kern, m, kn.second, kn.first, kH100, /*push=*/true);
        ASSERT_TRUE(pull.ok() && g.ok()) << pull.status() << " " << g.status();
        EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split, g->blocks_per_sm),
                  std::make_tuple(pull->wn, pull->wk, pull->split, pull->blocks_per_sm));
        EXPECT_EQ(pull->recv_off, size_t{0});
        if (g->recv_off == 0) {
          EXPECT_EQ(g->smem, pull->smem);
          refused += g->split > 1;
          continue;
        }
        ++pushed;
        EXPECT_GT(g->split, 1);
        EXPECT_EQ(g->recv_off % 16, size_t{0});
        EXPECT_GE(g->recv_off, pull->smem);
        EXPECT_LT(g->recv_off, pull->smem + 16);
        EXPECT_EQ(g->smem, g->recv_off + PushRecvBytes(m, g->wn, g->split));
        const int threads = 32 * g->wn * g->wk;
        EXPECT_EQ(Resident(kern, {g->wn, g->wk, g->split, threads, g->smem}),
                  Resident(kern, {g->wn, g->wk, g->split, threads, pull->smem}));
      }
    }
  }
  EXPECT_GT(pushed, 0);
  EXPECT_GT(refused, 0);
  absl::StatusOr<StreamGrid> g = Pick(Kernels().at("dec_m16_s8"), 16, 57344, 8192, kH100, /*push=*/true);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(std::make_tuple(g->wn, g->split, g->recv_off), std::make_tuple(14, 2, size_t{0}));
  const Kernel& a8 = Kernels().at("dec_m16_a8");
  g = Pick(a8, 16, 10240, 8192, kH100, /*push=*/true);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(std::make_tuple(g->wn, g->wk, g->split), std::make_tuple(1, 4, 2));
  EXPECT_GT(g->recv_off, size_t{0});
  ForcedStreamGrid pull;
  pull.pull = true;
  absl::StatusOr<StreamGrid> pulled = Pick(a8, 16, 10240, 8192, kH100, /*push=*/true, pull);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(std::make_tuple(pulled->wn, pulled->wk, pulled->split, pulled->recv_off),
            std::make_tuple(1, 4, 2, size_t{0}));
  EXPECT_EQ(pulled->smem, DecodeARingSmemBytes(16, 1, 4, 8, 512));
}

}  // namespace
}  // namespace qf::kernels
