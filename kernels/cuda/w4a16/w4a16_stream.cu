// Host side of the weight-streaming W4A16 variants: the grid planner and the
// cluster launch (w4a16_stream.cuh). The kernel is in w4a16_stream_kernel.cuh.
//
// Planning. A block is wn x wk warps: wn adjacent 64-column tiles, each
// walked by wk warps over wk parts of the block's k-chunk; `split` blocks
// (one thread-block cluster, split <= 8, the portable cluster size) share a
// column group, each taking one of split equal k-chunks. The planner tries
// every (wn | n/64, wk, split) whose shared memory fits and estimates the
// time: the busiest multiprocessor streams its blocks' bytes at the rate its
// tiles in flight sustain (Little's law with the loaded latency measured on
// the H100), never faster than the whole device's bandwidth allows, plus the
// cluster reduction. Ties go to fewer blocks. Plans are cached per (kernel,
// device, m, n, k), so the occupancy queries run once per shape.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/w4a16/w4a16_stream.cuh"

namespace qf::kernels::w4a16 {
namespace {

constexpr int kMaxSplit = 8;  // portable cluster size
// Model constants (H100 SXM, measured with w4a16_bench): loaded DRAM latency
// seen by a warp, the most one multiprocessor streams, device bandwidth,
// per-warp time of one slice when the data is there, distributed
// shared-memory read rate of one block.
constexpr double kLatencyS = 2.5e-6;
constexpr double kSmMaxBytesPerS = 40e9;
constexpr double kDeviceBytesPerS = 3.0e12;
constexpr double kStepS = 0.1e-6;
constexpr double kDsmemBytesPerS = 100e9;
constexpr double kClusterSyncS = 0.5e-6;

struct StreamPlan {
  int wn = 0;
  int wk = 0;
  int split = 0;
  int steps = 0;  // slices of the longest k-part, padded to the ring depth
  size_t smem = 0;
  int64_t blocks = 0;
  int blocks_per_sm = 0;  // resident on the busiest multiprocessor
  double seconds = 0;     // the model's estimate
};

absl::Status CudaError(cudaError_t e, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("W4A16 stream: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

struct Caches {
  std::mutex mu;
  // (kernel, device, m, n, k, forced wn, wk, split)
  std::map<std::tuple<const void*, int, int64_t, int64_t, int64_t, int, int, int>, StreamPlan> plans;
  std::map<std::tuple<const void*, int, int, size_t>, int> blocks;          // (kernel, device, threads, smem)
  std::map<std::tuple<const void*, int, int, int, size_t>, int> clusters;   // (+ split)
  std::map<std::pair<const void*, int>, bool> attributes_set;              // (kernel, device)
};

Caches& GetCaches() {
  static Caches* c = new Caches;
  return *c;
}

// A grid forced by the caller (tuning sweeps); all zero: the planner's.
struct ForcedGrid {
  int wn = 0, wk = 0, split = 0;
  bool Any() const { return wn > 0 || wk > 0 || split > 0; }
};

absl::StatusOr<StreamPlan> PlanLocked(Caches& cache, const StreamKernel& sk, int device, int m, int64_t n, int64_t k,
                                      ForcedGrid force) {
  const void* fn = reinterpret_cast<const void*>(sk.kernel);
  const auto key = std::make_tuple(fn, device, int64_t{m}, n, k, force.wn, force.wk, force.split);
  if (auto it = cache.plans.find(key); it != cache.plans.end()) return it->second;

  int sms = 0, smem_optin = 0;
  cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("query device ", device));
  e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("query device ", device));
  // The kernel's static shared memory counts against the same per-block limit.
  cudaFuncAttributes fa;
  e = cudaFuncGetAttributes(&fa, fn);
  if (e != cudaSuccess) return CudaError(e, "query the kernel's attributes");
  smem_optin -= static_cast<int>(fa.sharedSizeBytes);
  if (!cache.attributes_set[{fn, device}]) {
    e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin);
    if (e != cudaSuccess) {
      return CudaError(e, absl::StrCat("raise the dynamic shared-memory limit to ", smem_optin, " bytes"));
    }
    e = cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return CudaError(e, "set the shared-memory carveout");
    cache.attributes_set[{fn, device}] = true;
  }

  const int64_t n64 = n / 64, slices = k / 16;
  const double total_bytes = static_cast<double>(n) * k / 2;
  const int ahead = sk.reg_ring ? sk.depth : sk.depth - 2;  // slices in flight per warp
  StreamPlan best;
  for (int wn = 1; wn <= sk.max_warps; ++wn) {
    if (n64 % wn != 0 || (force.Any() && wn != force.wn)) continue;
    for (int wk = 1; wn * wk <= sk.max_warps; ++wk) {
      if (force.Any() && wk != force.wk) continue;
      const int threads = 32 * wn * wk;
      for (int split = 1; split <= kMaxSplit && split * wk <= slices; ++split) {
        if (force.Any() && split != force.split) continue;
        const int64_t chunk = (slices + split - 1) / split;
        const int part = static_cast<int>((chunk + wk - 1) / wk);
        const int steps = (part + sk.depth - 1) / sk.depth * sk.depth;
        const size_t smem = sk.whole_a ? DecodeSmemBytes(m, wn, wk, steps)
                                       : StreamSmemBytes(m, wn, wk, sk.depth, sk.reg_ring);
        if (smem > static_cast<size_t>(smem_optin)) continue;
        int& bps = cache.blocks.try_emplace({fn, device, threads, smem}, -1).first->second;
        if (bps < 0) {
          e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, fn, threads, smem);
          if (e != cudaSuccess) return CudaError(e, "occupancy query");
        }
        if (bps <= 0) continue;
        int resident = bps * sms;  // blocks the device holds at once
        if (split > 1) {
          int& clusters = cache.clusters.try_emplace({fn, device, threads, split, smem}, -1).first->second;
          if (clusters < 0) {
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = dim3(static_cast<unsigned>(n64 / wn), static_cast<unsigned>(split), 1);
            cfg.blockDim = dim3(threads, 1, 1);
            cfg.dynamicSmemBytes = smem;
            cudaLaunchAttribute attr;
            attr.id = cudaLaunchAttributeClusterDimension;
            attr.val.clusterDim.x = 1;
            attr.val.clusterDim.y = split;
            attr.val.clusterDim.z = 1;
            cfg.attrs = &attr;
            cfg.numAttrs = 1;
            if (cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg) != cudaSuccess) {
              cudaGetLastError();  // this cluster shape cannot run: skip it
              clusters = 0;
            }
          }
          resident = clusters * split;
        }
        if (resident <= 0) continue;
        const int64_t blocks = n64 / wn * split;
        const int64_t waves = (blocks + resident - 1) / resident;
        const int per_sm = static_cast<int>((std::min<int64_t>(blocks, resident) + sms - 1) / sms);
        const double inflight = static_cast<double>(per_sm) * wn * wk * ahead * 512;
        const double sm_rate = std::min(kSmMaxBytesPerS, inflight / kLatencyS);
        const double block_bytes = static_cast<double>(wn) * wk * part * 512 + static_cast<double>(m) * wk * part * 32;
        const double t_stream = std::max({waves * per_sm * block_bytes / sm_rate, total_bytes / kDeviceBytesPerS,
                                          waves * steps * kStepS});
        const double t_reduce =
            waves * (static_cast<double>(wk) * m * 256 * wn / kDsmemBytesPerS + (split > 1 ? kClusterSyncS : 0));
        const double t = t_stream + t_reduce;
        const bool better = best.wn == 0 || t < best.seconds * (1 - 1e-6) ||
                            (t <= best.seconds * (1 + 1e-6) &&
                             (blocks < best.blocks || (blocks == best.blocks && split < best.split)));
        if (better) best = StreamPlan{wn, wk, split, steps, smem, blocks, per_sm, t};
      }
    }
  }
  if (best.wn == 0 && force.Any()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W4A16 stream: forced grid wn=", force.wn, ", wk=", force.wk, ", split=", force.split, " does not fit m=", m,
        ", n=", n, ", k=", k, " on device ", device, " (expected wn | n/64, wn*wk <= ", sk.max_warps,
        ", split <= ", kMaxSplit, ", split*wk <= k/16, and the shared memory to fit)"));
  }
  if (best.wn == 0) {
    return absl::InternalError(absl::StrCat("W4A16 stream: no grid fits device ", device, " for m=", m, ", n=", n,
                                            ", k=", k, " (", smem_optin, " bytes of shared memory per block)"));
  }
  cache.plans.emplace(key, best);
  return best;
}

absl::StatusOr<StreamPlan> Plan(const StreamKernel& sk, int device, int m, int64_t n, int64_t k,
                                ForcedGrid force = {}) {
  Caches& cache = GetCaches();
  std::lock_guard<std::mutex> lock(cache.mu);
  return PlanLocked(cache, sk, device, m, n, k, force);
}

}  // namespace

absl::Status RunStreamKernel(const StreamKernel& sk, const StreamCall& call, int device) {
  absl::StatusOr<StreamPlan> plan =
      Plan(sk, device, call.m, call.n, call.k, ForcedGrid{call.plan_wn, call.plan_wk, call.plan_split});
  if (!plan.ok()) return plan.status();
  StreamParams p;
  p.a = call.a;
  p.b = reinterpret_cast<const int4*>(call.qweight);
  p.scales = reinterpret_cast<const int4*>(call.scales);
  p.zeros = call.zeros;
  p.bias = call.bias;
  p.c = call.c;
  p.m = call.m;
  p.n = call.n;
  p.k = call.k;
  p.n64 = call.n / 64;
  p.slices = call.k / 16;
  p.slices_per_group = call.group_size / 16;
  p.groups = call.k / call.group_size;
  p.wn = plan->wn;
  p.wk = plan->wk;

  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(p.n64 / plan->wn), static_cast<unsigned>(plan->split), 1);
  cfg.blockDim = dim3(32 * plan->wn * plan->wk, 1, 1);
  cfg.dynamicSmemBytes = plan->smem;
  cfg.stream = call.stream;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1;
  attr.val.clusterDim.y = plan->split;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = plan->split > 1 ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, sk.kernel, p);
  if (e != cudaSuccess) {
    return CudaError(e, absl::StrCat("launch (m=", call.m, ", n=", call.n, ", k=", call.k, ", grid ",
                                     p.n64 / plan->wn, " x ", plan->split, ")"));
  }
  return absl::OkStatus();
}

std::string DescribeStreamKernel(const StreamKernel& sk, int64_t m, int64_t n, int64_t k, int device) {
  const int rows = static_cast<int>(std::min<int64_t>(m, 8 * sk.mh));
  absl::StatusOr<StreamPlan> plan = Plan(sk, device, rows, n, k);
  if (!plan.ok()) return std::string(plan.status().message());
  return absl::StrFormat("grid %dx%d (cluster %d), %dx%d warps, %d steps, %.0f KB smem, %d/SM, model %.1f us",
                         n / 64 / plan->wn, plan->split, plan->split, plan->wn, plan->wk, plan->steps,
                         plan->smem / 1024.0, plan->blocks_per_sm, plan->seconds * 1e6);
}

}  // namespace qf::kernels::w4a16
