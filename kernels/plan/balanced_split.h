// File: kernels/plan/balanced_split.h
//
// How the balanced decode kernel (kernels/cuda/w4a16/w4a16_balanced_kernel.cuh)
// cuts one layer's weight slices over its warps, and where each warp's
// partial sums go. Header-only and host/device, so that the kernel and its
// CPU test (tests/kernels_gpu/balanced_split_test.cc) run the same arithmetic.
//
// Units are the weight slices (16 kernel rows x 64 columns, 512 bytes) in
// tile-major order, u = tile * slices + slice. Warp w of W (1 <= W <= U)
// streams units [Begin(w), Begin(w + 1)) with Begin(w) = floor(U * w / W):
// every warp at least one unit, no two more than one apart. The units of one
// tile that one warp streams are a segment; a segment's fp32 partial sums go
// to slot w + tile. Along the segments in warp order each next segment has a
// larger warp, a larger tile or both, so w + tile grows strictly: the slots
// are distinct and fewer than W + tiles.
//
//   BalancedSplit split{.units = tiles * slices, .warps = w};
//   int first = split.WarpOf(tile * slices), last = split.WarpOf(tile * slices + slices - 1);
//   // warps first..last each hold one segment of `tile`
#pragma once

#include "kernels/plan/host_device.h"

namespace qf::kernels {

struct BalancedSplit {
  long long units = 0;  // U = tiles * slices
  int warps = 0;        // W, 1 <= W <= U

  QF_HOST_DEVICE long long Begin(int w) const { return units * w / warps; }
  // The warp that streams unit x: the largest w with Begin(w) <= x, i.e.
  // U*w < (x+1)*W (all products fit 64 bits for U, W < 2^31).
  QF_HOST_DEVICE int WarpOf(long long x) const { return static_cast<int>(((x + 1) * warps - 1) / units); }
  QF_HOST_DEVICE static long long Slot(int warp, int tile) { return static_cast<long long>(warp) + tile; }
  QF_HOST_DEVICE long long Slots(int tiles) const { return static_cast<long long>(warps) + tiles; }
};

}  // namespace qf::kernels
