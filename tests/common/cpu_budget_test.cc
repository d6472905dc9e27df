// The CPU budget: cgroup v1 and v2 quota files in fake trees under a temp
// root, the tightest ancestor winning, and what "no limit" looks like.
#include "common/cpu_budget.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;

class CpuBudgetTest : public ::testing::Test {
 protected:
  void Write(const std::string& rel, const std::string& text) {
    const fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  storage::testing::TempDir tmp_;
  const std::string root_ = tmp_.path();
};

TEST(CpuQuotaTest, ParsesBothVersionsAndTreatsTheRestAsNoLimit) {
  EXPECT_EQ(ParseCpuQuota("350000 100000\n"), 3.5);
  EXPECT_EQ(ParseCpuQuota("50000 100000"), 0.5);
  EXPECT_EQ(ParseCpuQuota("max 100000\n"), std::nullopt);
  EXPECT_EQ(ParseCpuQuota("-1 100000"), std::nullopt);  // v1: no quota
  EXPECT_EQ(ParseCpuQuota("0 100000"), std::nullopt);
  EXPECT_EQ(ParseCpuQuota("100000"), std::nullopt);
  EXPECT_EQ(ParseCpuQuota("lots 100000"), std::nullopt);
  EXPECT_EQ(ParseCpuQuota(""), std::nullopt);
}

TEST(CpuQuotaTest, UsableRoundsAQuotaUpAndNeverExceedsTheMask) {
  EXPECT_EQ((CpuBudget{16, 3.5, "f"}).usable(), 4);
  EXPECT_EQ((CpuBudget{16, 8.0, "f"}).usable(), 8);
  EXPECT_EQ((CpuBudget{2, 8.0, "f"}).usable(), 2);
  EXPECT_EQ((CpuBudget{16, 0.25, "f"}).usable(), 1);
  EXPECT_EQ((CpuBudget{16, std::nullopt, ""}).usable(), 16);
  EXPECT_EQ((CpuBudget{16, 3.5, "/sys/fs/cgroup/cpu.max"}).ToString(),
            "4 CPUs (affinity 16, quota 3.5 from /sys/fs/cgroup/cpu.max)");
}

constexpr char kV2Mount[] = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

TEST_F(CpuBudgetTest, CgroupV2TakesTheTightestAncestor) {
  Write("proc/self/mountinfo", std::string("22 1 8:1 / / rw - ext4 /dev/vda rw\n") + kV2Mount);
  Write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  Write("sys/fs/cgroup/cpu.max", "max 100000\n");
  Write("sys/fs/cgroup/kubepods/cpu.max", "6400000 100000\n");
  Write("sys/fs/cgroup/kubepods/pod1/cpu.max", "350000 100000\n");  // the pod's limit: 3.5 CPUs
  Write("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
  CpuBudget b = ReadCpuBudget(root_);
  ASSERT_TRUE(b.quota_cpus.has_value());
  EXPECT_EQ(*b.quota_cpus, 3.5);
  EXPECT_EQ(b.quota_file, root_ + "/sys/fs/cgroup/kubepods/pod1/cpu.max");
  EXPECT_EQ(b.usable(), std::min(b.affinity, 4));
}

TEST_F(CpuBudgetTest, CgroupV2InsideANamespaceReadsTheMountRoot) {
  Write("proc/self/mountinfo", kV2Mount);
  Write("proc/self/cgroup", "0::/\n");
  Write("sys/fs/cgroup/cpu.max", "100000 100000\n");
  CpuBudget b = ReadCpuBudget(root_);
  EXPECT_EQ(b.quota_cpus, 1.0);
  EXPECT_EQ(b.usable(), 1);
}

TEST_F(CpuBudgetTest, CgroupV1ContainerMountsItsOwnCgroupAsTheRoot) {
  // Docker on cgroup v1: the mount's root is the container's cgroup, which
  // /proc/self/cgroup names by its host path.
  Write("proc/self/mountinfo",
        "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n");
  Write("proc/self/cgroup", "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n");
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  CpuBudget b = ReadCpuBudget(root_);
  EXPECT_EQ(b.quota_cpus, 2.0);
  EXPECT_EQ(b.quota_file, root_ + "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us");
  EXPECT_EQ(b.usable(), std::min(b.affinity, 2));
}

TEST_F(CpuBudgetTest, HybridHostReadsTheV1CpuControllerNotTheUnifiedMount) {
  // systemd's hybrid layout: v1 controllers, plus a cgroup2 mount without cpu.
  Write("proc/self/mountinfo",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
  Write("proc/self/cgroup", "2:cpuacct:/\n1:cpu:/jobs/q\n0::/\n");
  Write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
  Write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
  Write("sys/fs/cgroup/cpu/jobs/q/cpu.cfs_quota_us", "150000\n");
  Write("sys/fs/cgroup/cpu/jobs/q/cpu.cfs_period_us", "100000\n");
  Write("sys/fs/cgroup/cpuacct/cpu.cfs_quota_us", "10000\n");  // not the cpu controller: ignored
  Write("sys/fs/cgroup/cpuacct/cpu.cfs_period_us", "100000\n");
  CpuBudget b = ReadCpuBudget(root_);
  EXPECT_EQ(b.quota_cpus, 1.5);
  EXPECT_EQ(b.usable(), std::min(b.affinity, 2));
}

TEST_F(CpuBudgetTest, NoQuotaOrNoCgroupFilesLeavesTheAffinityMask) {
  CpuBudget none = ReadCpuBudget(root_);  // an empty tree
  EXPECT_EQ(none.quota_cpus, std::nullopt);
  EXPECT_EQ(none.usable(), none.affinity);
  EXPECT_GE(none.affinity, 1);
  EXPECT_LE(none.affinity, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  Write("proc/self/mountinfo", "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
  Write("proc/self/cgroup", "4:cpu,cpuacct:/\n");
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(ReadCpuBudget(root_).quota_cpus, std::nullopt);
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "garbage\n");
  EXPECT_EQ(ReadCpuBudget(root_).quota_cpus, std::nullopt);
  Write("proc/self/mountinfo", "truncated line\n- \n");
  Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
  EXPECT_EQ(ReadCpuBudget(root_).quota_cpus, std::nullopt);  // no mount found: no limit known
}

TEST(CpuThreadsTest, AnExplicitCountWinsThenOmpNumThreadsThenTheBudget) {
  const char* saved = std::getenv("OMP_NUM_THREADS");
  const std::string keep = saved ? saved : "";
  unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(CpuThreadsFor(3), 3);
  EXPECT_EQ(CpuThreadsFor(0), UsableCpus());
  EXPECT_GE(UsableCpus(), 1);
  setenv("OMP_NUM_THREADS", "5", 1);
  EXPECT_EQ(CpuThreadsFor(0), 5);
  EXPECT_EQ(CpuThreadsFor(2), 2);
  setenv("OMP_NUM_THREADS", "6,2", 1);
  EXPECT_EQ(CpuThreadsFor(0), 6);
  for (const char* bad : {"0", "-3", "many", ""}) {
    setenv("OMP_NUM_THREADS", bad, 1);
    EXPECT_EQ(CpuThreadsFor(0), UsableCpus()) << bad;
  }
  if (saved) {
    setenv("OMP_NUM_THREADS", keep.c_str(), 1);
  } else {
    unsetenv("OMP_NUM_THREADS");
  }
}

}  // namespace
}  // namespace qf
