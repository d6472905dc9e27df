#include "common/cpu_budget.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace qf {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> Slurp(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return std::nullopt;
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// The quota of one cgroup directory, in CPUs; v2 first, then v1's pair.
std::optional<double> QuotaIn(const fs::path& dir, std::string* file) {
  if (auto v2 = Slurp(dir / "cpu.max")) {
    *file = (dir / "cpu.max").string();
    return ParseCpuQuota(*v2);
  }
  auto quota = Slurp(dir / "cpu.cfs_quota_us");
  auto period = Slurp(dir / "cpu.cfs_period_us");
  if (!quota || !period) return std::nullopt;
  *file = (dir / "cpu.cfs_quota_us").string();
  return ParseCpuQuota(absl::StrCat(absl::StripAsciiWhitespace(*quota), " ", absl::StripAsciiWhitespace(*period)));
}

// A cgroup hierarchy as this process sees it mounted (/proc/self/mountinfo):
// `root` is the cgroup the mount shows at `mountpoint` (a container's own
// cgroup, or "/").
struct Mount {
  std::string root, mountpoint;
};

// mountinfo lines: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS".
// The cgroup2 mount for v2 (controller ""), else the v1 mount whose super
// options name the controller.
std::optional<Mount> FindMount(absl::string_view mountinfo, absl::string_view controller) {
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    const absl::string_view fstype = dash[1];
    bool match = controller.empty() ? fstype == "cgroup2" : fstype == "cgroup";
    if (match && !controller.empty()) {
      std::vector<absl::string_view> opts = absl::StrSplit(dash[3], ',');
      match = std::find(opts.begin(), opts.end(), controller) != opts.end();
    }
    if (match) return Mount{std::string(f[3]), std::string(f[4])};
  }
  return std::nullopt;
}

// The tightest quota from the process's cgroup up to the mount's root (a
// child cannot exceed its parent's quota, and either may be the one set).
// A cgroup outside the mount's root (a v1 container without a cgroup
// namespace may list the host's path) counts as the mount's root.
void TightestQuota(const fs::path& root, const Mount& m, const std::string& cgroup_path, CpuBudget* b) {
  const fs::path top = root / fs::path(m.mountpoint).relative_path();
  fs::path rel = fs::path(cgroup_path).lexically_relative(m.root);
  if (rel.empty() || *rel.begin() == "..") rel = ".";
  fs::path dir = (top / rel).lexically_normal();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) dir = top;
  for (;;) {
    std::string file;
    if (auto q = QuotaIn(dir, &file); q && (!b->quota_cpus || *q < *b->quota_cpus)) {
      b->quota_cpus = q;
      b->quota_file = file;
    }
    if (dir.lexically_relative(top) == "." || !dir.has_parent_path() || dir.parent_path() == dir) break;
    dir = dir.parent_path();
  }
}

}  // namespace

std::optional<double> ParseCpuQuota(std::string_view contents) {
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::StripAsciiWhitespace(absl::string_view(contents.data(), contents.size())), ' ', absl::SkipEmpty());
  if (f.size() != 2) return std::nullopt;
  double quota = 0, period = 0;
  if (!absl::SimpleAtod(f[0], &quota) || !absl::SimpleAtod(f[1], &period)) return std::nullopt;  // "max"
  if (quota <= 0 || period <= 0) return std::nullopt;                                            // v1's -1
  return quota / period;
}

int CpuBudget::usable() const {
  int n = std::max(affinity, 1);
  if (quota_cpus) n = std::min<int>(n, static_cast<int>(std::ceil(*quota_cpus - 1e-9)));
  return std::max(n, 1);
}

std::string CpuBudget::ToString() const {
  std::string s = absl::StrCat(usable(), " CPUs (affinity ", affinity);
  if (quota_cpus) absl::StrAppend(&s, ", quota ", *quota_cpus, " from ", quota_file);
  return s + ")";
}

CpuBudget ReadCpuBudget(const std::string& root) {
  CpuBudget b;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) b.affinity = std::max(CPU_COUNT(&set), 1);
  const fs::path r(root);
  auto cgroups = Slurp(r / "proc/self/cgroup");
  auto mountinfo = Slurp(r / "proc/self/mountinfo");
  if (!cgroups || !mountinfo) return b;
  // Lines are "ID:CONTROLLERS:PATH": v2's single hierarchy is "0::PATH",
  // v1's cpu controller "N:cpu,cpuacct:PATH" (or "N:cpu:PATH"). On a hybrid
  // host both are present; the v2 one then usually has no cpu controller.
  for (absl::string_view line : absl::StrSplit(*cgroups, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    std::optional<Mount> m;
    if (f[0] == "0" && f[1].empty()) {
      m = FindMount(*mountinfo, "");
    } else {
      std::vector<absl::string_view> controllers = absl::StrSplit(f[1], ',');
      if (std::find(controllers.begin(), controllers.end(), "cpu") != controllers.end()) m = FindMount(*mountinfo, "cpu");
    }
    if (m) TightestQuota(r, *m, std::string(f[2]), &b);
  }
  return b;
}

int UsableCpus() { return ReadCpuBudget().usable(); }

int CpuThreadsFor(int requested) {
  if (requested > 0) return requested;
  // libgomp reads a list ("8,4" for nested levels); the first level is ours.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    int n = 0;
    absl::string_view first = env;
    first = first.substr(0, first.find(','));
    if (absl::SimpleAtoi(first, &n) && n > 0) return n;
  }
  return UsableCpus();
}

}  // namespace qf
