// File: kernels/plan/tile_grid.h
//
// How many blocks the tiled and wgmma W4A16 kernels launch (w4a16_gemm.cu's
// MakePlan). Both walk the same stream-K units: a tile (BM rows of A x BN
// columns) is k_tiles units deep, block b takes units [U*b/G, U*(b+1)/G), and
// blocks that share a tile sum their fp32 partials in a fixup. Plain C++,
// tested on the CPU (tests/kernels_gpu/tile_grid_test.cc).
//
// Three shapes of grid, first match wins:
//   whole tiles  one block per tile: the tiles fill 90-100% of the block
//                slots (no partials cross L2, no block ends with a fixup), or
//                a full-tile-partial (wgmma) kernel with k at most a few
//                stages deep, where summing full-tile partials costs more
//                than the stages a split saves;
//   even split   full-tile-partial kernels with fewer tiles than slots: every
//                tile split the same number of ways, when that fills
//                min_even_fill_pct of the slots (90%, or the variant's own).
//                No block's range then ends inside a second tile.
//                With stream-K's equal shares some blocks store two partials
//                and run two fixups, and the multiprocessors' busy times
//                spread 20-25% (ncu, H200, o projection at m = 64 and 256;
//                the even split ran 3-8% faster there,
//                bench/results/w4a16_h200_wgmma_ab.log run 11);
//   stream-K     min(units, slots) blocks with equal shares of the units.
#pragma once

#include <algorithm>
#include <cstdint>

namespace qf::kernels {

// The even split's least share of the slots, in percent, unless a variant
// sets its own (Variant::even_fill_pct).
inline constexpr int64_t kDefaultEvenFillPct = 90;

struct TileGridProblem {
  int64_t tiles = 0;    // n-tiles x m-chunks
  int64_t k_tiles = 0;  // units per tile (k / BK)
  int64_t slots = 0;    // resident blocks on the device (SMs x blocks per SM)
  bool full_tile_partials = false;  // the wgmma kernel: a split writes whole fp32 tiles
  int64_t max_unsplit_stages = 8;   // deepest k (in units) a full-tile-partial kernel runs unsplit
  int64_t min_even_fill_pct = kDefaultEvenFillPct;  // the even split's least share of the slots
};

enum class TileSplit { kWholeTiles, kEven, kStreamK };

struct TileGrid {
  int64_t grid = 0;
  TileSplit split = TileSplit::kStreamK;
};

inline TileGrid PickTileGrid(const TileGridProblem& p) {
  const int64_t units = p.tiles * p.k_tiles;
  const bool fills = p.tiles <= p.slots && p.tiles * 10 >= p.slots * 9;
  const bool shallow = p.full_tile_partials && p.k_tiles <= p.max_unsplit_stages;
  if (fills || shallow) return {p.tiles, TileSplit::kWholeTiles};
  const int64_t ways = p.tiles > 0 ? p.slots / p.tiles : 0;
  if (p.full_tile_partials && ways >= 2 && ways <= p.k_tiles && p.tiles * ways * 100 >= p.slots * p.min_even_fill_pct)
    return {p.tiles * ways, TileSplit::kEven};
  return {std::min(units, p.slots), TileSplit::kStreamK};
}

}  // namespace qf::kernels
