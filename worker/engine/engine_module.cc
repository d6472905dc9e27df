// The engine module's entry points. Everything the host sees goes through
// qf_engine_create_v1(): a C++ object with the abstract interface of
// engine_host.h, created and destroyed inside this module.
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "worker/engine/engine_host.h"
#include "worker/engine/eval.h"
#include "worker/engine/session.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/verify.h"
#if defined(QF_WITH_NCCL)
#include "worker/engine/nccl_link.h"
#endif

namespace qf::worker {
namespace {

class TorchEngine final : public Engine {
 public:
  // libgomp would size the pool by the affinity mask alone; the host passes
  // the CPUs this process may use (common/cpu_budget.h says why it matters).
  void SetCpuThreads(int n) override {
    if (n > 0) at::set_num_threads(n);
  }
  int cpu_threads() const override { return at::get_num_threads(); }
  absl::StatusOr<std::unique_ptr<Session>> OpenSession(const SessionSpec& spec) override {
    auto s = TorchSession::Open(spec);
    if (!s.ok()) return s.status();
    return std::unique_ptr<Session>(std::move(*s));
  }
  absl::StatusOr<EvalResult> Evaluate(const EvalSpec& spec, const EvalProgressFn& progress) override {
    return RunEval(spec, progress);
  }
  absl::StatusOr<VerifyReport> Verify(const VerifySpec& spec, const VerifyProgressFn& progress) override {
    return RunVerify(spec, progress);
  }
  absl::StatusOr<std::string> NcclUniqueId() override {
#if defined(QF_WITH_NCCL)
    return NcclUniqueIdBytes();
#else
    return absl::UnavailableError("NCCL is not compiled into this engine (a build without CUDA or nccl.h)");
#endif
  }
  absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectNccl(const NcclLinkSpec& spec) override {
#if defined(QF_WITH_NCCL)
    return ConnectNcclLink(spec);
#else
    return absl::UnavailableError("NCCL is not compiled into this engine (a build without CUDA or nccl.h)");
#endif
  }
  absl::StatusOr<std::string> DeviceKey(const std::string& device) override {
    auto dev = ParseDevice(device);
    if (!dev.ok()) return dev.status();
    if (!dev->is_cuda()) return absl::UnavailableError("the device is the CPU");
#if defined(QF_WITH_NCCL)
    return CudaDeviceKey(dev->index() < 0 ? 0 : dev->index());
#else
    return absl::UnavailableError("NCCL is not compiled into this engine (a build without CUDA or nccl.h)");
#endif
  }
};

}  // namespace
}  // namespace qf::worker

extern "C" {
// Bumped whenever engine_host.h changes shape (kEngineAbiVersion).
__attribute__((visibility("default"))) int qf_engine_abi_version() { return qf::worker::kEngineAbiVersion; }
__attribute__((visibility("default"))) qf::worker::Engine* qf_engine_create_v1() {
  try {
    return new qf::worker::TorchEngine();
  } catch (...) {
    return nullptr;
  }
}
}
