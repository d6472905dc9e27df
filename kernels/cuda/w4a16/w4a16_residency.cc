// Device queries of the W4A16 launch paths (w4a16_residency.h), cached.
#include "kernels/cuda/w4a16/w4a16_residency.h"

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qf::kernels::w4a16 {
namespace {

absl::Status CudaError(cudaError_t e, absl::string_view who, absl::string_view what) {
  cudaGetLastError();  // a failed query leaves nothing sticky for the next launch
  return absl::InternalError(
      absl::StrCat("W4A16 ", who, ": ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

struct Cache {
  std::mutex mu;
  std::map<int, int> sms;                                                // device -> multiprocessors
  std::map<std::pair<const void*, int>, size_t> allowed;                 // (kernel, device) -> smem bytes
  std::map<std::tuple<const void*, int, int, size_t>, int> resident;     // (kernel, device, threads, smem)
};

Cache& GetCache() {
  static Cache* c = new Cache;
  return *c;
}

}  // namespace

absl::StatusOr<int> MultiprocessorCount(int device) {
  Cache& c = GetCache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (auto it = c.sms.find(device); it != c.sms.end()) return it->second;
  int sms = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return CudaError(e, "device query", absl::StrCat("multiprocessors of device ", device));
  c.sms.emplace(device, sms);
  return sms;
}

absl::Status AllowSharedMemory(const void* fn, int device, size_t bytes, absl::string_view who) {
  Cache& c = GetCache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (auto it = c.allowed.find({fn, device}); it != c.allowed.end() && it->second >= bytes) return absl::OkStatus();
  cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e != cudaSuccess) {
    return CudaError(e, who, absl::StrCat("allow ", bytes, " bytes of shared memory on device ", device));
  }
  e = cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return CudaError(e, who, absl::StrCat("set the shared-memory carveout on device ", device));
  c.allowed[{fn, device}] = bytes;
  return absl::OkStatus();
}

absl::StatusOr<int> ResidentBlocksPerSm(const void* fn, int device, int threads, size_t smem, absl::string_view who) {
  Cache& c = GetCache();
  std::lock_guard<std::mutex> lock(c.mu);
  const auto key = std::make_tuple(fn, device, threads, smem);
  if (auto it = c.resident.find(key); it != c.resident.end()) return it->second;
  int blocks = 0;
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fn, threads, smem);
  if (e != cudaSuccess) {
    return CudaError(e, who, absl::StrCat("occupancy of ", threads, " threads with ", smem, " bytes of shared memory"));
  }
  c.resident.emplace(key, blocks);
  return blocks;
}

}  // namespace qf::kernels::w4a16
