// Host side of the weight-streaming and decode W4A16 variants: the grid
// choice (device queries: w4a16_residency.h; cluster occupancy here) and the
// cluster launch (w4a16_stream.cuh).
// The kernels are in w4a16_stream_kernel.cuh and w4a16_decode_kernel.cuh; the
// grid model, plain C++ and unit-tested, in kernels/plan/stream_grid.h. Plans
// are cached per (kernel, device, m, n, k, forced grid), so the occupancy
// queries run once per shape.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "kernels/cuda/w4a16/w4a16_residency.h"
#include "kernels/cuda/w4a16/w4a16_stream.cuh"
#include "kernels/plan/stream_grid.h"

namespace qf::kernels::w4a16 {
namespace {

constexpr int kMaxSplit = 8;  // portable cluster size

absl::Status CudaError(cudaError_t e, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("W4A16 stream: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

struct Caches {
  std::mutex mu;
  // (kernel, device, m, n, k, forced wn, wk, split, pull)
  std::map<std::tuple<const void*, int, int64_t, int64_t, int64_t, int, int, int, bool>, StreamGrid> plans;
  // (kernel, device, threads, split, smem); resident blocks: w4a16_residency.h
  std::map<std::tuple<const void*, int, int, int, size_t>, int> clusters;
};

Caches& GetCaches() {
  static Caches* c = new Caches;
  return *c;
}

// Pads the grid's shared memory so that no more than its planned blocks
// share a multiprocessor (PlacementSmemBytes), when the padded grid still
// runs in as many waves: where registers or clusters already cap residency
// it changes nothing.
template <typename ResidentFn>
absl::Status HoldPlacement(StreamGrid& grid, int device, const cudaFuncAttributes& fa, size_t max_dynamic,
                           ResidentFn& resident) {
  int smem_per_sm = 0, reserved = 0;
  cudaError_t e = cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("query device ", device));
  const size_t padded = PlacementSmemBytes(grid.smem, grid.blocks_per_sm, static_cast<size_t>(smem_per_sm),
                                           fa.sharedSizeBytes + static_cast<size_t>(reserved), max_dynamic);
  if (padded == grid.smem) return absl::OkStatus();
  const int threads = 32 * grid.wn * grid.wk;
  QF_ASSIGN_OR_RETURN(const int64_t before, resident({grid.wn, grid.wk, grid.split, threads, grid.smem}));
  QF_ASSIGN_OR_RETURN(const int64_t after, resident({grid.wn, grid.wk, grid.split, threads, padded}));
  if (after >= std::min(grid.blocks, before)) {
    grid.smem_pad = padded - grid.smem;
    grid.smem = padded;
  }
  return absl::OkStatus();
}

absl::StatusOr<StreamGrid> PlanLocked(Caches& cache, const StreamKernel& sk, int device, int m, int64_t n, int64_t k,
                                      ForcedStreamGrid force) {
  const void* fn = reinterpret_cast<const void*>(sk.kernel);
  const auto key = std::make_tuple(fn, device, int64_t{m}, n, k, force.wn, force.wk, force.split, force.pull);
  if (auto it = cache.plans.find(key); it != cache.plans.end()) return it->second;

  QF_ASSIGN_OR_RETURN(const int sms, MultiprocessorCount(device));
  int smem_optin = 0;
  cudaError_t e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return CudaError(e, absl::StrCat("query device ", device));
  // The kernel's static shared memory counts against the same per-block limit.
  cudaFuncAttributes fa;
  e = cudaFuncGetAttributes(&fa, fn);
  if (e != cudaSuccess) return CudaError(e, "query the kernel's attributes");
  smem_optin -= static_cast<int>(fa.sharedSizeBytes);
  QF_RETURN_IF_ERROR(AllowSharedMemory(fn, device, static_cast<size_t>(smem_optin), "stream"));

  // Attainable DRAM bandwidth: 90% of the peak the memory clock and bus width give.
  int mem_khz = 0, bus_bits = 0;
  double device_bw = 3.0e12;  // the H100's measured streaming read, when the device does not say
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess && mem_khz > 0 &&
      bus_bits > 0) {
    device_bw = 0.9 * 2.0 * mem_khz * 1e3 * bus_bits / 8;
  } else {
    cudaGetLastError();
  }
  StreamGridProblem problem;
  problem.sms = sms;
  problem.device_bytes_per_s = device_bw;
  problem.smem_per_block = static_cast<size_t>(smem_optin);
  problem.m = m;
  problem.n64 = n / 64;
  problem.slices = k / 16;
  problem.max_warps = sk.max_warps;
  problem.depth = sk.depth;
  problem.reg_ring = sk.reg_ring;
  problem.whole_a = sk.whole_a;
  problem.a_slot = sk.a_slot;
  problem.a_depth = sk.a_depth;
  problem.push = sk.push;
  problem.max_split = kMaxSplit;
  // Resident blocks of one candidate: the occupancy query, and for clusters
  // the cluster-occupancy query (whole clusters, placed within one GPC).
  const auto resident = [&](const StreamGridShape& g) -> absl::StatusOr<int64_t> {
    QF_ASSIGN_OR_RETURN(const int bps, ResidentBlocksPerSm(fn, device, g.threads, g.smem, "stream"));
    if (bps <= 0 || g.split == 1) return int64_t{bps} * sms;
    int& clusters = cache.clusters.try_emplace({fn, device, g.threads, g.split, g.smem}, -1).first->second;
    if (clusters < 0) {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(static_cast<unsigned>(n / 64 / g.wn), static_cast<unsigned>(g.split), 1);
      cfg.blockDim = dim3(g.threads, 1, 1);
      cfg.dynamicSmemBytes = g.smem;
      cudaLaunchAttribute attr;
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 1;
      attr.val.clusterDim.y = g.split;
      attr.val.clusterDim.z = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      if (cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg) != cudaSuccess) {
        cudaGetLastError();  // this cluster shape cannot run: skip it
        clusters = 0;
      }
    }
    return int64_t{clusters} * g.split;
  };
  absl::StatusOr<StreamGrid> picked = PickStreamGrid(problem, force, resident);
  if (!picked.ok()) {
    return absl::Status(picked.status().code(), absl::StrCat(picked.status().message(), " on device ", device));
  }
  QF_RETURN_IF_ERROR(HoldPlacement(*picked, device, fa, static_cast<size_t>(smem_optin), resident));
  cache.plans.emplace(key, *picked);
  return picked;
}

absl::StatusOr<StreamGrid> Plan(const StreamKernel& sk, int device, int m, int64_t n, int64_t k,
                                ForcedStreamGrid force = {}) {
  Caches& cache = GetCaches();
  std::lock_guard<std::mutex> lock(cache.mu);
  return PlanLocked(cache, sk, device, m, n, k, force);
}

}  // namespace

StreamParams StreamParamsOf(const StreamCall& call) {
  StreamParams p = {};
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
  p.wn = 1;
  p.wk = 1;
  return p;
}

unsigned StreamLaunchAttributes(int split, bool pdl, cudaLaunchAttribute (&attrs)[2]) {
  unsigned n = 0;
  if (split > 1) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = 1;
    attrs[n].val.clusterDim.y = split;
    attrs[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl) {
    // May start before the previous kernel on the stream ends: the kernel
    // waits for it (griddepcontrol.wait) before it reads A.
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  return n;
}

absl::Status RunStreamKernel(const StreamKernel& sk, const StreamCall& call, int device) {
  absl::StatusOr<StreamGrid> plan = Plan(sk, device, call.m, call.n, call.k, call.plan);
  if (!plan.ok()) return plan.status();
  StreamParams p = StreamParamsOf(call);
  p.wn = plan->wn;
  p.wk = plan->wk;
  p.recv_off = static_cast<int>(plan->recv_off);

  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(p.n64 / plan->wn), static_cast<unsigned>(plan->split), 1);
  cfg.blockDim = dim3(32 * plan->wn * plan->wk, 1, 1);
  cfg.dynamicSmemBytes = plan->smem;
  cfg.stream = call.stream;
  cudaLaunchAttribute attrs[2];
  cfg.attrs = attrs;
  cfg.numAttrs = StreamLaunchAttributes(plan->split, call.pdl, attrs);
  const cudaError_t e = cudaLaunchKernelEx(&cfg, sk.kernel, p);
  if (e != cudaSuccess) {
    return CudaError(e, absl::StrCat("launch (m=", call.m, ", n=", call.n, ", k=", call.k, ", grid ",
                                     p.n64 / plan->wn, " x ", plan->split, ")"));
  }
  return absl::OkStatus();
}

std::string DescribeStreamKernel(const StreamKernel& sk, int64_t m, int64_t n, int64_t k, int device) {
  const int rows = static_cast<int>(std::min<int64_t>(m, 8 * sk.mh));
  absl::StatusOr<StreamGrid> plan = Plan(sk, device, rows, n, k);
  if (!plan.ok()) return std::string(plan.status().message());
  const std::string pad =
      plan->smem_pad > 0 ? absl::StrFormat(" (%.0f KB used)", (plan->smem - plan->smem_pad) / 1024.0) : "";
  return absl::StrFormat("grid %dx%d (cluster %d%s), %dx%d warps, %d steps, %.0f KB smem%s, %d/SM, model %.1f us",
                         n / 64 / plan->wn, plan->split, plan->split, plan->recv_off > 0 ? ", push" : "", plan->wn,
                         plan->wk, plan->steps,
                         plan->smem / 1024.0, pad, plan->blocks_per_sm, plan->seconds * 1e6);
}

}  // namespace qf::kernels::w4a16
