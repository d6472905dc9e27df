// The balanced decode kernel's work split (kernels/plan/balanced_split.h), on
// the CPU: every unit has exactly one warp, the warps' shares differ by at
// most one unit, the contributors of a tile are exactly the warps
// WarpOf(first unit)..WarpOf(last unit), and the partial slots are distinct
// and below Slots().
#include "kernels/plan/balanced_split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace qf::kernels {
namespace {

struct Case {
  int tiles, slices, warps;
};

TEST(BalancedSplitTest, EveryUnitHasOneWarpAndSlotsAreDistinct) {
  const Case cases[] = {
      {1, 22, 22},    {1, 22, 7},     {20, 24, 480},  {20, 24, 479},  {128, 512, 2112},
      {160, 512, 2112}, {896, 512, 2112}, {5, 3, 15},  {3, 1000, 2},   {1, 1, 1},
      {7, 13, 90},    {64, 24, 1000},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "tiles=" << c.tiles << " slices=" << c.slices << " warps=" << c.warps);
    const BalancedSplit split{static_cast<long long>(c.tiles) * c.slices, c.warps};
    ASSERT_LE(split.warps, split.units);
    long long min_share = split.units, max_share = 0;
    for (int w = 0; w < c.warps; ++w) {
      const long long share = split.Begin(w + 1) - split.Begin(w);
      min_share = std::min(min_share, share);
      max_share = std::max(max_share, share);
    }
    EXPECT_GE(min_share, 1);
    EXPECT_LE(max_share - min_share, 1);
    EXPECT_EQ(split.Begin(c.warps), split.units);
    std::set<long long> slots;
    std::vector<std::set<int>> contributors(c.tiles);
    for (long long x = 0; x < split.units; ++x) {
      const int w = split.WarpOf(x);
      ASSERT_GE(w, 0);
      ASSERT_LT(w, c.warps);
      ASSERT_LE(split.Begin(w), x);
      ASSERT_LT(x, split.Begin(w + 1));
      contributors[x / c.slices].insert(w);
    }
    for (int t = 0; t < c.tiles; ++t) {
      const long long first = static_cast<long long>(t) * c.slices;
      const int w_first = split.WarpOf(first), w_last = split.WarpOf(first + c.slices - 1);
      EXPECT_EQ(static_cast<int>(contributors[t].size()), w_last - w_first + 1) << "tile " << t;
      EXPECT_EQ(*contributors[t].begin(), w_first);
      EXPECT_EQ(*contributors[t].rbegin(), w_last);
      for (int w : contributors[t]) {
        const long long slot = BalancedSplit::Slot(w, t);
        EXPECT_TRUE(slots.insert(slot).second) << "slot " << slot << " twice";
        EXPECT_LT(slot, split.Slots(c.tiles));
      }
    }
  }
}

}  // namespace
}  // namespace qf::kernels
