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

namespace qf::worker {
namespace {

class TorchEngine final : public Engine {
 public:
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
