#include "tests/tokenizer/spm_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "common/fs.h"
#include "gtest/gtest.h"

namespace qf::testing {

const nlohmann::json& SpmExpected() {
  static const nlohmann::json fixture = [] {
    const std::string path = SourcePath("tests/tokenizer/spm_expected.json");
    absl::StatusOr<std::string> text = ReadFileToString(path);
    if (!text.ok()) {
      std::fprintf(stderr, "%s\n", text.status().ToString().c_str());
      std::abort();
    }
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded()) {
      std::fprintf(stderr, "%s: not valid JSON; rerun gen_spm_fixture.py\n", path.c_str());
      std::abort();
    }
    return j;
  }();
  return fixture;
}

std::string MakeTempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const std::string dir = ::testing::TempDir() + "/qf_tok_" + std::to_string(getpid()) + "_" +
                          std::to_string(counter++) + "_" + name;
  EXPECT_TRUE(RemoveAll(dir).ok());
  EXPECT_EQ(mkdir(dir.c_str(), 0755), 0) << dir;
  return dir;
}

}  // namespace qf::testing
