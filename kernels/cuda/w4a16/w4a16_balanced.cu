// Host side of the balanced decode kernel (w4a16_balanced.cuh): one wave of
// blocks (multiprocessors x resident blocks, w4a16_residency.h),
// the workspace it needs, and the launch.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "kernels/cuda/w4a16/w4a16_balanced.cuh"
#include "kernels/cuda/w4a16/w4a16_residency.h"

namespace qf::kernels::w4a16 {
namespace {

absl::Status CudaError(cudaError_t e, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("W4A16 balanced: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

// Resident blocks of the kernel on the device, with its shared memory allowed.
struct Wave {
  int sms = 0;
  int blocks_per_sm = 0;
  int Blocks() const { return sms * blocks_per_sm; }
};

// Shared memory of one block for m rows of A and k.
size_t SmemOf(const BalancedKernel& bk, int64_t m, int64_t k) {
  return BalancedSmemBytes(static_cast<int>(m), static_cast<int>(k / 16), bk.warps, bk.depth);
}

absl::StatusOr<Wave> WaveOf(const BalancedKernel& bk, int device, size_t smem) {
  const void* fn = reinterpret_cast<const void*>(bk.kernel);
  Wave w;
  QF_ASSIGN_OR_RETURN(w.sms, MultiprocessorCount(device));
  QF_RETURN_IF_ERROR(AllowSharedMemory(fn, device, smem, "balanced"));
  QF_ASSIGN_OR_RETURN(w.blocks_per_sm, ResidentBlocksPerSm(fn, device, 32 * bk.warps, smem, "balanced"));
  if (w.blocks_per_sm < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("W4A16 balanced: a block needs ", smem, " bytes of shared memory (all of A and ", bk.warps,
                     " rings); none fits device ", device));
  }
  return w;
}

// Warps that take chunks and the blocks that hold them: one wave, fewer
// when the shape has fewer chunks than the wave has warps.
struct BalancedGrid {
  int warps;
  int blocks;
};

BalancedGrid GridOf(const BalancedKernel& bk, const Wave& wave, int64_t n, int64_t k) {
  const int64_t units = (n / 64) * BalancedChunks(static_cast<int>(k / 16));
  const int warps = static_cast<int>(std::min<int64_t>(int64_t{wave.Blocks()} * bk.warps, units));
  return {warps, (warps + bk.warps - 1) / bk.warps};
}

}  // namespace

absl::StatusOr<StreamWorkspace> BalancedWorkspace(const BalancedKernel& bk, int64_t n, int64_t k, int device) {
  // The largest W: one row of A, the least shared memory, the most blocks.
  absl::StatusOr<Wave> wave = WaveOf(bk, device, SmemOf(bk, 1, k));
  if (!wave.ok()) return wave.status();
  const int64_t tiles = n / 64;
  StreamWorkspace ws;
  ws.counter_bytes = static_cast<size_t>(tiles) * sizeof(int);
  // One slot of 8 rows x 64 fp32 per (warp, tile) segment.
  const int64_t units = tiles * BalancedChunks(static_cast<int>(k / 16));
  const int64_t slots =
      BalancedSplit{units, static_cast<int>(std::min<int64_t>(int64_t{wave->Blocks()} * bk.warps, units))}.Slots(
          static_cast<int>(tiles));
  ws.partial_bytes = static_cast<size_t>(slots) * 8 * 64 * sizeof(float);
  return ws;
}

absl::Status RunBalancedKernel(const BalancedKernel& bk, const StreamCall& call, int device) {
  if (call.plan.Any()) {
    return absl::InvalidArgumentError(absl::StrCat("forced grid wn=", call.plan.wn, ", wk=", call.plan.wk,
                                                   ", split=", call.plan.split,
                                                   ": the balanced kernel plans one wave of equal warps, no grid"));
  }
  if (call.counters == nullptr || call.partials == nullptr) {
    return absl::InternalError("W4A16 balanced: launched without its workspace");
  }
  const size_t smem = SmemOf(bk, call.m, call.k);
  absl::StatusOr<Wave> wave = WaveOf(bk, device, smem);
  if (!wave.ok()) return wave.status();
  const BalancedGrid grid = GridOf(bk, *wave, call.n, call.k);
  BalancedParams bp = {};
  bp.s = StreamParamsOf(call);
  bp.partials = call.partials;
  bp.counters = call.counters;
  bp.warps = grid.warps;

  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(grid.blocks), 1, 1);
  cfg.blockDim = dim3(static_cast<unsigned>(32 * bk.warps), 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = call.stream;
  cudaLaunchAttribute attrs[2];
  cfg.attrs = attrs;
  cfg.numAttrs = StreamLaunchAttributes(/*split=*/1, call.pdl, attrs);
  const cudaError_t e = cudaLaunchKernelEx(&cfg, bk.kernel, bp);
  if (e != cudaSuccess) {
    return CudaError(e, absl::StrCat("launch (m=", call.m, ", n=", call.n, ", k=", call.k, ", ", grid.blocks,
                                     " blocks)"));
  }
  return absl::OkStatus();
}

std::string DescribeBalancedKernel(const BalancedKernel& bk, int64_t m, int64_t n, int64_t k, int device) {
  const size_t smem = SmemOf(bk, std::min<int64_t>(m, 8), k);
  absl::StatusOr<Wave> wave = WaveOf(bk, device, smem);
  if (!wave.ok()) return std::string(wave.status().message());
  const BalancedGrid grid = GridOf(bk, *wave, n, k);
  const double per_warp = static_cast<double>((n / 64) * BalancedChunks(static_cast<int>(k / 16))) / grid.warps;
  return absl::StrFormat("grid %d, %d warps, %d/SM, %.1f chunks of 16 slices per warp, %.0f KB smem", grid.blocks,
                         grid.warps, wave->blocks_per_sm, per_warp, smem / 1024.0);
}

}  // namespace qf::kernels::w4a16
