// File: common/cpu_threads_flag.h
//
// --cpu-threads N of every program that loads the engine (qworker; qctl
// quantize, eval, verify): the value worker::Engine::Load takes, resolved by
// CpuThreadsFor (common/cpu_budget.h). Header-only: CLI11 is header-only too.
//
//   int threads = 0;
//   qf::AddCpuThreadsFlag(&app, &threads);   ...   Engine::Load(threads);
#pragma once

#include "CLI/CLI.hpp"

namespace qf {

inline void AddCpuThreadsFlag(CLI::App* app, int* threads) {
  app->add_option("--cpu-threads", *threads,
                  "CPU threads of the engine (0: OMP_NUM_THREADS when set, else the CPUs this process may use, "
                  "by its affinity mask and cgroup quota)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
}

}  // namespace qf
