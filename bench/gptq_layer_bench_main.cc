// gptq_layer_bench: loads libqf_gptq_bench.so (bench/gptq_layer_bench.cc) with
// dlopen(RTLD_LOCAL), so libtorch's exported libstdc++ symbols never shadow
// the process's own (DESIGN.md), and runs it with this process's arguments.
#include <cstdio>

#include "common/dl_module.h"

int main(int argc, char** argv) {
  absl::StatusOr<void*> module = qf::OpenModule("libqf_gptq_bench.so");
  if (!module.ok()) {
    std::fprintf(stderr, "gptq_layer_bench: %s\n", module.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<void*> entry = qf::ModuleSymbol(*module, "qf_gptq_bench_main");
  if (!entry.ok()) {
    std::fprintf(stderr, "gptq_layer_bench: %s\n", entry.status().ToString().c_str());
    return 1;
  }
  return reinterpret_cast<int (*)(int, char**)>(*entry)(argc, argv);
}
