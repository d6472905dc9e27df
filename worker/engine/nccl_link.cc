#include "worker/engine/nccl_link.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace qf::worker {
namespace {

using Clock = std::chrono::steady_clock;

// The few NCCL entry points the hand-off uses, from the dlopen'ed library.
struct NcclApi {
  ncclResult_t (*GetVersion)(int*);
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*);
  ncclResult_t (*CommFinalize)(ncclComm_t);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  ncclResult_t (*Send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  const char* (*GetErrorString)(ncclResult_t);
};

absl::StatusOr<const NcclApi*> Nccl() {
  static absl::StatusOr<const NcclApi*>* api = []() -> absl::StatusOr<const NcclApi*>* {
    // NVLink multicast (NVLS) stays off, whatever the environment says:
    // NCCL reads it once, at its first call, which is below.
    const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
    if (nvls != nullptr && std::strcmp(nvls, "0") != 0)
      QF_LOG(WARNING) << "NCCL_NVLS_ENABLE=" << nvls << " overridden: the activation hand-off keeps NVLS off";
    ::setenv("NCCL_NVLS_ENABLE", "0", 1);
    void* h = ::dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) h = ::dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = ::dlerror();
      return new absl::StatusOr<const NcclApi*>(
          absl::UnavailableError(absl::StrCat("NCCL not loadable: ", e != nullptr ? e : "libnccl.so.2 not found")));
    }
    auto* a = new NcclApi();
    std::string missing;
    auto get = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
      if (fn == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
    };
    get(a->GetVersion, "ncclGetVersion");
    get(a->GetUniqueId, "ncclGetUniqueId");
    get(a->CommInitRankConfig, "ncclCommInitRankConfig");
    get(a->CommGetAsyncError, "ncclCommGetAsyncError");
    get(a->CommFinalize, "ncclCommFinalize");
    get(a->CommDestroy, "ncclCommDestroy");
    get(a->CommAbort, "ncclCommAbort");
    get(a->Send, "ncclSend");
    get(a->Recv, "ncclRecv");
    get(a->GetErrorString, "ncclGetErrorString");
    if (!missing.empty()) {
      return new absl::StatusOr<const NcclApi*>(
          absl::UnavailableError(absl::StrCat("NCCL too old: libnccl.so.2 lacks ", missing)));
    }
    int version = 0;
    a->GetVersion(&version);
    QF_LOG(INFO) << "NCCL " << version << " loaded for the activation hand-off (NCCL_NVLS_ENABLE=0)";
    return new absl::StatusOr<const NcclApi*>(static_cast<const NcclApi*>(a));
  }();
  return *api;
}

absl::Status CudaError(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::StatusOr<int> DeviceIndex(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5) {
    int index = 0;
    for (size_t i = 5; i < device.size(); ++i) {
      if (device[i] < '0' || device[i] > '9') break;
      index = index * 10 + (device[i] - '0');
    }
    return index;
  }
  return absl::InvalidArgumentError(absl::StrCat("NCCL link: device '", device, "', expected cuda:N"));
}

class NcclLink final : public ActivationLink {
 public:
  NcclLink(const NcclApi* api, int device, int rank, Clock::time_point deadline)
      : api_(api), device_(device), rank_(rank), deadline_(deadline) {}
  ~NcclLink() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      bool clean = healthy_;
      if (clean && api_->CommFinalize(comm_) == ncclSuccess) clean = Wait("finalize").ok();
      if (clean) {
        api_->CommDestroy(comm_);
      } else {
        api_->CommAbort(comm_);
      }
    }
    if (staging_ != nullptr) cudaFreeAsync(staging_, stream_);
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  absl::Status Init(const std::string& id_bytes) {
    QF_RETURN_IF_ERROR(CudaError(cudaSetDevice(device_), "cudaSetDevice"));
    QF_RETURN_IF_ERROR(CudaError(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    ncclUniqueId id;
    std::memcpy(id.internal, id_bytes.data(), sizeof(id.internal));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // returns at once; Wait() polls with our deadline
    ncclResult_t r = api_->CommInitRankConfig(&comm_, 2, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      comm_ = nullptr;  // nothing to abort
      healthy_ = false;
      return absl::UnavailableError(absl::StrCat("ncclCommInitRank (rank ", rank_, "): ", api_->GetErrorString(r)));
    }
    return Wait("communicator set-up");
  }

  std::string kind() const override { return "nccl"; }
  bool device_memory() const override { return true; }

  absl::Status Send(const void* data, size_t bytes, const std::string& device) override {
    if (rank_ != 0) return absl::FailedPreconditionError("NCCL link: rank 1 receives only");
    QF_ASSIGN_OR_RETURN(const void* src, OnDevice(data, bytes, device, /*to_device=*/true));
    return Transfer([&] { return api_->Send(src, bytes, ncclUint8, 1, comm_, stream_); }, bytes, "send");
  }

  absl::Status Recv(void* data, size_t bytes, const std::string& device) override {
    if (rank_ != 1) return absl::FailedPreconditionError("NCCL link: rank 0 sends only");
    const bool host = device == "cpu";
    void* dst = data;
    if (host) {
      QF_RETURN_IF_ERROR(Staging(bytes));
      dst = staging_;
    }
    QF_RETURN_IF_ERROR(Transfer([&] { return api_->Recv(dst, bytes, ncclUint8, 0, comm_, stream_); }, bytes, "recv"));
    if (host) {
      QF_RETURN_IF_ERROR(CudaError(cudaMemcpyAsync(data, staging_, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host"));
      QF_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(stream_), "copy to host"));
    }
    return absl::OkStatus();
  }

 private:
  // Small host buffers (the header) go through a device staging buffer.
  absl::Status Staging(size_t bytes) {
    if (bytes > 4096) return absl::InvalidArgumentError("NCCL link: host buffers above 4096 bytes are not staged");
    if (staging_ == nullptr)
      QF_RETURN_IF_ERROR(CudaError(cudaMallocAsync(&staging_, 4096, stream_), "cudaMallocAsync"));
    return absl::OkStatus();
  }
  absl::StatusOr<const void*> OnDevice(const void* data, size_t bytes, const std::string& device, bool) {
    if (device != "cpu") return data;
    QF_RETURN_IF_ERROR(Staging(bytes));
    QF_RETURN_IF_ERROR(CudaError(cudaMemcpyAsync(staging_, data, bytes, cudaMemcpyHostToDevice, stream_), "copy to device"));
    return static_cast<const void*>(staging_);
  }

  template <typename F>
  absl::Status Transfer(F&& op, size_t bytes, const char* what) {
    if (!healthy_) return absl::FailedPreconditionError("NCCL link: unusable after an earlier error");
    QF_RETURN_IF_ERROR(CudaError(cudaSetDevice(device_), "cudaSetDevice"));
    ncclResult_t r = op();
    if (r != ncclSuccess && r != ncclInProgress) {
      healthy_ = false;
      return absl::UnavailableError(absl::StrCat("nccl", what, " of ", bytes, " bytes: ", api_->GetErrorString(r)));
    }
    QF_RETURN_IF_ERROR(Wait(what));
    // The operation is queued on stream_: wait for it, watching the peer and the deadline.
    while (true) {
      cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) {
        healthy_ = false;
        return CudaError(e, absl::StrCat("nccl", what));
      }
      ncclResult_t async = ncclSuccess;
      api_->CommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        healthy_ = false;
        return absl::UnavailableError(absl::StrCat("nccl", what, " of ", bytes, " bytes: ", api_->GetErrorString(async),
                                                   " (the peer failed?)"));
      }
      if (Clock::now() > deadline_) {
        healthy_ = false;
        return absl::DeadlineExceededError(absl::StrCat("nccl", what, " of ", bytes, " bytes: not done by the deadline"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // Polls the communicator's state until it leaves ncclInProgress.
  absl::Status Wait(const std::string& what) {
    while (true) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = api_->CommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) state = r;
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) {
        healthy_ = false;
        return absl::UnavailableError(absl::StrCat("NCCL ", what, " (rank ", rank_, "): ", api_->GetErrorString(state)));
      }
      if (Clock::now() > deadline_) {
        healthy_ = false;
        return absl::DeadlineExceededError(absl::StrCat("NCCL ", what, " (rank ", rank_, "): the peer did not answer by the deadline"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }

  const NcclApi* api_;
  int device_;
  int rank_;
  Clock::time_point deadline_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  bool healthy_ = true;
};

}  // namespace

absl::StatusOr<std::string> NcclUniqueIdBytes() {
  QF_ASSIGN_OR_RETURN(const NcclApi* api, Nccl());
  ncclUniqueId id;
  ncclResult_t r = api->GetUniqueId(&id);
  if (r != ncclSuccess) return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", api->GetErrorString(r)));
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectNcclLink(const NcclLinkSpec& spec) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(spec.timeout_ms);
  QF_ASSIGN_OR_RETURN(const NcclApi* api, Nccl());
  if (spec.unique_id.size() != sizeof(ncclUniqueId::internal))
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id: ", spec.unique_id.size(), " bytes, expected ",
                                                   sizeof(ncclUniqueId::internal)));
  if (spec.rank != 0 && spec.rank != 1) return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", spec.rank));
  QF_ASSIGN_OR_RETURN(int device, DeviceIndex(spec.device));
  auto link = std::make_unique<NcclLink>(api, device, spec.rank, deadline);
  QF_RETURN_IF_ERROR(link->Init(spec.unique_id));
  return std::unique_ptr<ActivationLink>(std::move(link));
}

absl::StatusOr<std::string> CudaDeviceKey(int index) {
  char bus[64] = {0};
  QF_RETURN_IF_ERROR(CudaError(cudaDeviceGetPCIBusId(bus, sizeof(bus), index), absl::StrCat("cuda:", index, ": PCI bus id")));
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "/", bus);
}

}  // namespace qf::worker
