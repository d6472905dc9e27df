// StagingDir (common/fs.h) across processes: a writer killed half way leaves
// its staging directory behind, and the next Create() for the same output
// removes it; a live writer's directory, and anything not named like a staging
// directory of that output, is left alone.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using ::qf::storage::testing::TempDir;

std::vector<std::string> Staging(const std::string& dir, const std::string& base) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("." + base + ".staging-", 0) == 0) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Runs `body` in a child that ends with _exit: no destructor runs, as when the
// process is killed.
void InChild(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
}

TEST(StagingDirTest, KilledWritersDirectoryIsRemovedByTheNextCreate) {
  TempDir tmp;
  const std::string out = tmp.Path("art");
  InChild([&] {
    absl::StatusOr<StagingDir> s = StagingDir::Create(out);
    if (!s.ok()) ::_exit(1);
    std::ofstream(s->path() + "/model-00001-of-00002.safetensors") << "partial";
    new StagingDir(std::move(*s));   // never destroyed: the child "dies" holding it
  });
  const std::vector<std::string> left = Staging(tmp.path(), "art");
  ASSERT_EQ(left.size(), 1u);

  absl::StatusOr<StagingDir> next = StagingDir::Create(out);
  ASSERT_TRUE(next.ok()) << next.status();
  const std::vector<std::string> now = Staging(tmp.path(), "art");
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], left[0]);
  EXPECT_EQ(tmp.Path(now[0]), next->path());
}

TEST(StagingDirTest, LiveWritersAndOtherNamesAreLeftAlone) {
  TempDir tmp;
  const std::string out = tmp.Path("art");
  // Not staging directories of "art": another output's, a longer suffix, a file.
  for (const char* d : {".other.staging-abcdef", ".art.staging-abcdef.old", ".art.staging-abc"})
    fs::create_directories(tmp.Path(d));
  std::ofstream(tmp.Path(".art.staging-zzzzzz")) << "a file";

  // A live writer in another process: it holds its directory until told to go
  // (or until this test ends, whichever way: Live's destructor lets it go).
  struct Live {
    int to_child[2] = {-1, -1}, to_parent[2] = {-1, -1};
    pid_t pid = -1;
    void Release() {
      if (pid <= 0) return;
      char c = 'x';
      (void)!::write(to_child[1], &c, 1);
      int status = 0;
      ::waitpid(std::exchange(pid, -1), &status, 0);
    }
    ~Live() { Release(); }
  } live;
  ASSERT_EQ(::pipe(live.to_child), 0);
  ASSERT_EQ(::pipe(live.to_parent), 0);
  live.pid = ::fork();
  ASSERT_GE(live.pid, 0);
  if (live.pid == 0) {
    absl::StatusOr<StagingDir> s = StagingDir::Create(out);
    char c = s.ok() ? 'k' : 'e';
    (void)!::write(live.to_parent[1], &c, 1);
    (void)!::read(live.to_child[0], &c, 1);
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(live.to_parent[0], &c, 1), 1);
  ASSERT_EQ(c, 'k');
  // The child's, ".old", ".art.staging-abc" and the file.
  ASSERT_EQ(Staging(tmp.path(), "art").size(), 4u);

  absl::StatusOr<StagingDir> mine = StagingDir::Create(out);
  ASSERT_TRUE(mine.ok()) << mine.status();
  absl::StatusOr<StagingDir> second = StagingDir::Create(out);   // this process's own is live too
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Staging(tmp.path(), "art").size(), 6u);
  for (const char* d : {".other.staging-abcdef", ".art.staging-abcdef.old", ".art.staging-abc", ".art.staging-zzzzzz"})
    EXPECT_TRUE(fs::exists(tmp.Path(d))) << d;

  live.Release();
  // The child is gone without cleaning up; the next Create sweeps its directory.
  absl::StatusOr<StagingDir> third = StagingDir::Create(out);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(Staging(tmp.path(), "art").size(), 6u);   // mine, second, third and the three non-matching
  EXPECT_TRUE(fs::exists(mine->path()));
  EXPECT_TRUE(fs::exists(second->path()));
}

TEST(StagingDirTest, CommitAndDestructorStillBehave) {
  TempDir tmp;
  const std::string out = tmp.Path("art");
  {
    absl::StatusOr<StagingDir> s = StagingDir::Create(out);
    ASSERT_TRUE(s.ok()) << s.status();
    std::ofstream(s->path() + "/qforge-manifest.json") << "{}";
    ASSERT_TRUE(s->Commit().ok());
  }
  EXPECT_TRUE(fs::exists(out + "/qforge-manifest.json"));
  EXPECT_TRUE(Staging(tmp.path(), "art").empty());
  {
    absl::StatusOr<StagingDir> s = StagingDir::Create(out);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(Staging(tmp.path(), "art").size(), 1u);
  }
  EXPECT_TRUE(Staging(tmp.path(), "art").empty());
  EXPECT_TRUE(fs::exists(out + "/qforge-manifest.json"));
}

// A file written piece by piece appears whole at Commit, or not at all: an
// abandoned writer leaves the earlier file and no temp file behind.
TEST(AtomicFileWriterTest, CommitReplacesAndAbandonLeavesTheEarlierFile) {
  TempDir tmp;
  const std::string path = tmp.Path("model.gguf");
  {
    absl::StatusOr<AtomicFileWriter> f = AtomicFileWriter::Create(path);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Append("GG").ok());
    ASSERT_TRUE(f->Append("UF").ok());
    EXPECT_EQ(f->bytes(), 4u);
    EXPECT_FALSE(fs::exists(path));
    ASSERT_TRUE(f->Commit().ok());
    EXPECT_FALSE(f->Append("x").ok()) << "no writes after Commit";
  }
  EXPECT_EQ(storage::testing::ReadBytes(path), "GGUF");
  {
    absl::StatusOr<AtomicFileWriter> f = AtomicFileWriter::Create(path);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->Append("half").ok());
  }  // destroyed before Commit
  EXPECT_EQ(storage::testing::ReadBytes(path), "GGUF");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp.path())) names.push_back(e.path().filename().string());
  EXPECT_THAT(names, ::testing::ElementsAre("model.gguf"));
  // A writer killed half way leaves its temp file; the next Create removes it,
  // and leaves a live writer's alone.
  InChild([&] {
    absl::StatusOr<AtomicFileWriter> f = AtomicFileWriter::Create(path);
    if (f.ok()) f->Append("killed").IgnoreError();
    ::_exit(0);  // no destructor
  });
  names.clear();
  for (const auto& e : fs::directory_iterator(tmp.path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names.size(), 2u) << "the killed writer's temp file";
  {
    absl::StatusOr<AtomicFileWriter> live = AtomicFileWriter::Create(path);
    ASSERT_TRUE(live.ok());
    InChild([&] { AtomicFileWriter::Create(path).IgnoreError(); ::_exit(0); });
    names.clear();
    for (const auto& e : fs::directory_iterator(tmp.path())) names.push_back(e.path().filename().string());
    EXPECT_EQ(names.size(), 2u) << "model.gguf and the live writer's temp file";
  }
  names.clear();
  for (const auto& e : fs::directory_iterator(tmp.path())) names.push_back(e.path().filename().string());
  EXPECT_THAT(names, ::testing::ElementsAre("model.gguf"));
  absl::StatusOr<AtomicFileWriter> bad = AtomicFileWriter::Create(tmp.Path("no/such/dir/f"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("no/such/dir/f: create temp file f.tmp-"));
}

}  // namespace
}  // namespace qf
