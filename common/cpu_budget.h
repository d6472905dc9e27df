// File: common/cpu_budget.h
//
// How many CPUs this process may really use, for sizing the engine's CPU
// thread pool (libtorch's OpenMP). libgomp sizes its pool by the affinity
// mask alone; a Kubernetes CPU limit is a CFS quota, not a mask, so a worker
// pod limited to 8 CPUs on a 128-core node would start 128 threads, and every
// parallel region's barrier then waits for threads the quota has parked.
// The same happens to processes that share a machine each sizing itself for
// all of it. Measured on 16 cores, tiny-llama AWQ quantizes: 1.6 s alone; four
// at once with 4 threads each, 1.7 s; four at once with 16 threads each, none
// finished in 60 s (bench/results/gpu_tests_h100_j4_threads.log). With a
// 1-CPU quota on 2 cores: 3.3 s on 1 thread, 7.9 s on 16.
//
//   int threads = qf::UsableCpus();          // min(affinity mask, ceil(quota / period)), >= 1
//   qf::CpuBudget b = qf::ReadCpuBudget("/"); // the parts, for a log line
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace qf {

struct CpuBudget {
  int affinity = 1;                  // CPUs in sched_getaffinity's mask
  std::optional<double> quota_cpus;  // the tightest CFS quota over the cgroup and its ancestors, in CPUs
  std::string quota_file;            // where quota_cpus came from ("" without one)
  int usable() const;                // min(affinity, ceil(quota_cpus)), at least 1
  std::string ToString() const;      // "4 CPUs (affinity 16, quota 3.5 from /sys/fs/cgroup/cpu.max)"
};

// Reads the affinity mask and the cgroup CPU quota of this process; `root`
// prefixes every /proc and /sys path (tests point it at a fake tree). A file
// that is missing or unreadable means "no limit there", never an error: the
// answer only sizes a thread pool.
CpuBudget ReadCpuBudget(const std::string& root = "/");
int UsableCpus();

// One cgroup quota file's limit in CPUs: cgroup v2 cpu.max ("max 100000" or
// "350000 100000"), or v1's cpu.cfs_quota_us and cpu.cfs_period_us contents
// joined by a space ("-1 100000"). nullopt for no limit or anything unparsable.
std::optional<double> ParseCpuQuota(std::string_view contents);

// The engine's CPU threads: `requested` when > 0; else OMP_NUM_THREADS when
// it is a positive number (set by hand, it wins as it would in libgomp);
// else UsableCpus().
int CpuThreadsFor(int requested);

}  // namespace qf
