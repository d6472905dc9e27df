// File: kernels/plan/balanced_split.h
//
// How the balanced decode kernel (kernels/cuda/w4a16/w4a16_balanced_kernel.cuh)
// cuts one layer's weight slices over its blocks (parts), and where each
// part's partial sums go. Header-only and host/device, so that the kernel and its
// CPU test (tests/kernels_gpu/balanced_split_test.cc) run the same arithmetic.
//
// Units are slice rows of column groups (16 kernel rows x the group's
// columns) in group-major order, u = group * slices + slice. Part w of W
// (1 <= W <= U) streams units [Begin(w), Begin(w + 1)) with Begin(w) =
// floor(U * w / W): every part at least one unit, no two more than one
// apart. The units of one group that one part streams are a segment; a
// segment's fp32 partial sums go to slot w + group. Along the segments in
// part order each next segment has a larger part, a larger group or both, so
// w + group grows strictly: the slots are distinct and fewer than W + groups.
//
//   BalancedSplit split{.units = groups * slices, .parts = blocks};
//   int first = split.PartOf(g * slices), last = split.PartOf(g * slices + slices - 1);
//   // parts first..last each hold one segment of group g
#pragma once

#if defined(__CUDACC__)
#define QF_HOST_DEVICE __host__ __device__
#else
#define QF_HOST_DEVICE
#endif

namespace qf::kernels {

struct BalancedSplit {
  long long units = 0;  // U = groups * slices
  int parts = 0;        // W, 1 <= W <= U

  QF_HOST_DEVICE long long Begin(int w) const { return units * w / parts; }
  // The part that streams unit x: the largest w with Begin(w) <= x, i.e.
  // U*w < (x+1)*W (all products fit 64 bits for U, W < 2^31).
  QF_HOST_DEVICE int PartOf(long long x) const { return static_cast<int>(((x + 1) * parts - 1) / units); }
  QF_HOST_DEVICE static long long Slot(int part, int group) { return static_cast<long long>(part) + group; }
  QF_HOST_DEVICE long long Slots(int groups) const { return static_cast<long long>(parts) + groups; }
};

}  // namespace qf::kernels
