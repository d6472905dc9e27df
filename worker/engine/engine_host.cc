#include "worker/engine/engine_host.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"
#include "common/cpu_budget.h"
#include "common/dl_module.h"
#include "common/status_macros.h"

namespace qf::worker {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(int cpu_threads) {
  // RTLD_LOCAL (OpenModule's default): libtorch's symbols stay private to the module.
  QF_ASSIGN_OR_RETURN(void* handle, OpenModule("libqf_engine.so", 0));
  QF_ASSIGN_OR_RETURN(void* ver, ModuleSymbol(handle, "qf_engine_abi_version"));
  QF_ASSIGN_OR_RETURN(void* create, ModuleSymbol(handle, "qf_engine_create_v1"));
  int v = reinterpret_cast<int (*)()>(ver)();
  if (v != kEngineAbiVersion) {
    return absl::UnavailableError(absl::StrCat("libqf_engine.so: ABI version ", v, ", expected ", kEngineAbiVersion,
                                               " (stale build?)"));
  }
  Engine* e = reinterpret_cast<Engine* (*)()>(create)();
  if (e == nullptr) return absl::UnavailableError("libqf_engine.so: engine creation failed");
  e->SetCpuThreads(CpuThreadsFor(cpu_threads));
  // The module stays loaded for the life of the process: engine objects and
  // their vtables live in it.
  return std::unique_ptr<Engine>(e);
}

}  // namespace qf::worker
