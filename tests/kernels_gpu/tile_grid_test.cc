// The grid of the tiled and wgmma W4A16 kernels (kernels/plan/tile_grid.h):
// which of whole tiles, an even split and stream-K each shape gets, on the
// Llama-70B shapes with the table's wgmma variants on an H200 (132 SMs), and
// that an even split never ends a block's units inside a second tile, which
// is what it is for.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

#include "kernels/plan/tile_grid.h"

namespace qf::kernels {
namespace {

constexpr int64_t kSms = 132;

TileGridProblem Wgmma(int64_t n, int64_t bn, int64_t k, int64_t bk, int64_t slots) {
  TileGridProblem p;
  p.tiles = n / bn;
  p.k_tiles = k / bk;
  p.slots = slots;
  p.full_tile_partials = true;
  return p;
}

// Block b's first unit as the kernels compute it (w4a16_kernel.cuh,
// BlockUnits); its units run up to block b + 1's first.
int64_t FirstUnit(int64_t units, int64_t grid, int64_t b) { return units * b / grid; }

TEST(TileGridTest, SplitsFewTilesEvenlyForTheWgmmaKernel) {
  // m = 256, wg_t256_n128_s5_d2 (one block per SM, 64-row units):
  // o and down have 64 tiles, two ways each fill 128 of 132 slots.
  TileGrid o256 = PickTileGrid(Wgmma(8192, 128, 8192, 64, kSms));
  EXPECT_EQ(o256.split, TileSplit::kEven);
  EXPECT_EQ(o256.grid, 128);
  TileGrid down256 = PickTileGrid(Wgmma(8192, 128, 28672, 64, kSms));
  EXPECT_EQ(down256.split, TileSplit::kEven);
  EXPECT_EQ(down256.grid, 128);
  // m = 64, wg_t64_n128_s4_k128_2blk (two blocks per SM): o 64 tiles x 4,
  // qkv 80 tiles x 3 = 240 of 264 slots.
  EXPECT_EQ(PickTileGrid(Wgmma(8192, 128, 8192, 128, 2 * kSms)).grid, 256);
  EXPECT_EQ(PickTileGrid(Wgmma(10240, 128, 8192, 128, 2 * kSms)).grid, 240);
  // m = 64, wg_t64_n256_s6_k128 on down: 32 tiles x 4.
  EXPECT_EQ(PickTileGrid(Wgmma(8192, 256, 28672, 128, kSms)).grid, 128);
}

TEST(TileGridTest, KeepsStreamKWhereAnEvenSplitLeavesSlotsIdle) {
  // qkv at m = 256: 80 tiles, one way fills 61% of the slots.
  TileGrid qkv256 = PickTileGrid(Wgmma(10240, 128, 8192, 64, kSms));
  EXPECT_EQ(qkv256.split, TileSplit::kStreamK);
  EXPECT_EQ(qkv256.grid, kSms);
  // gate_up at m = 256: more tiles than slots.
  TileGrid gate_up = PickTileGrid(Wgmma(57344, 128, 8192, 64, kSms));
  EXPECT_EQ(gate_up.split, TileSplit::kStreamK);
  EXPECT_EQ(gate_up.grid, kSms);
  // The tiled kernel (partials of its own rows only) keeps stream-K.
  TileGridProblem tiled = Wgmma(8192, 256, 8192, 256, kSms);
  tiled.full_tile_partials = false;
  EXPECT_EQ(PickTileGrid(tiled).split, TileSplit::kStreamK);
  EXPECT_EQ(PickTileGrid(tiled).grid, kSms);
  // More ways than a tile has units: stream-K, one unit per block.
  TileGridProblem deep_few;
  deep_few.tiles = 1;
  deep_few.k_tiles = 20;
  deep_few.slots = kSms;
  deep_few.full_tile_partials = true;
  EXPECT_EQ(PickTileGrid(deep_few).split, TileSplit::kStreamK);
  EXPECT_EQ(PickTileGrid(deep_few).grid, 20);
}

TEST(TileGridTest, AVariantMayTakeAnEvenSplitThatFillsFewerSlots) {
  // m = 128, the 128 x 256 tiles on 4096 x 14336: 56 tiles, two ways fill 112
  // of 132 slots (85%). Stream-K at the default 90%, the even split at the
  // 84% those tiles ask for; 54 tiles (108 slots, 82%) stay on stream-K.
  TileGridProblem p = Wgmma(14336, 256, 4096, 64, kSms);
  EXPECT_EQ(PickTileGrid(p).split, TileSplit::kStreamK);
  EXPECT_EQ(PickTileGrid(p).grid, kSms);
  p.min_even_fill_pct = 84;
  EXPECT_EQ(PickTileGrid(p).split, TileSplit::kEven);
  EXPECT_EQ(PickTileGrid(p).grid, 112);
  TileGridProblem narrower = Wgmma(13824, 256, 5120, 64, kSms);
  narrower.min_even_fill_pct = 84;
  EXPECT_EQ(PickTileGrid(narrower).split, TileSplit::kStreamK);
  EXPECT_EQ(PickTileGrid(narrower).grid, kSms);
}

TEST(TileGridTest, TakesWholeTilesWhenTheyFillTheDeviceOrKIsShallow) {
  TileGridProblem full = Wgmma(128 * 124, 128, 8192, 64, kSms);  // 124 of 132 slots
  EXPECT_EQ(PickTileGrid(full).split, TileSplit::kWholeTiles);
  EXPECT_EQ(PickTileGrid(full).grid, 124);
  TileGridProblem shallow = Wgmma(256, 128, 256, 64, kSms);  // 4 stages: never split
  EXPECT_EQ(PickTileGrid(shallow).split, TileSplit::kWholeTiles);
  EXPECT_EQ(PickTileGrid(shallow).grid, 2);
  TileGridProblem none;  // no tiles: no blocks
  none.slots = kSms;
  EXPECT_EQ(PickTileGrid(none).grid, 0);
}

TEST(TileGridTest, AnEvenSplitNeverEndsABlockInsideASecondTile) {
  int even = 0;
  for (int64_t tiles = 1; tiles <= 200; ++tiles) {
    for (int64_t k_tiles : {9, 17, 64, 127, 128, 130, 448}) {
      for (int64_t slots : {kSms, 2 * kSms}) {
        for (int64_t fill : {90, 84}) {  // the default, and the 128 x 256 tiles' (w4a16_wgmma.cuh)
          TileGridProblem p;
          p.tiles = tiles;
          p.k_tiles = k_tiles;
          p.slots = slots;
          p.full_tile_partials = true;
          p.min_even_fill_pct = fill;
          const TileGrid g = PickTileGrid(p);
          ASSERT_GE(g.grid, 1);
          ASSERT_LE(g.grid, std::max(slots, tiles)) << tiles << " tiles";
          if (g.split != TileSplit::kEven) continue;
          ++even;
          const int64_t units = tiles * k_tiles;
          for (int64_t b = 0; b < g.grid; ++b) {
            const int64_t begin = FirstUnit(units, g.grid, b), end = FirstUnit(units, g.grid, b + 1);
            ASSERT_LT(begin, end) << "block " << b << " has no units";
            ASSERT_EQ(begin / k_tiles, (end - 1) / k_tiles)
                << "block " << b << " of " << g.grid << " spans two tiles (" << tiles << " tiles of " << k_tiles
                << " units)";
          }
        }
      }
    }
  }
  EXPECT_GT(even, 100);  // the property was checked on many even splits
}

}  // namespace
}  // namespace qf::kernels
