// Shared by verify_test (CPU) and verify_gpu_test: qctl as a subprocess, and
// tiny-llama artifacts quantized once per test binary.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace qf::verify_test {

namespace fs = std::filesystem;

inline const std::string kSrc = QF_SOURCE_DIR;
inline const std::string kModel = kSrc + "/models/tiny-llama";
inline const std::string kCalib = kSrc + "/data/calib.txt";
inline const std::string kText = kSrc + "/data/books-heldout.txt";

struct RunResult {
  int code;
  std::string out;
  std::string err;
};

inline std::string ReadAll(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteAll(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

inline RunResult Qctl(const std::string& tmp, const std::string& args) {
  const std::string out = tmp + "/stdout", err = tmp + "/stderr";
  const std::string cmd = std::string(QCTL_BIN) + " " + args + " >" + out + " 2>" + err;
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadAll(out), ReadAll(err)};
}

// The last stderr line, which must be the only "qctl: error:" line.
inline std::string ErrorLine(const RunResult& r) {
  std::string last = r.err;
  while (!last.empty() && last.back() == '\n') last.pop_back();
  const size_t nl = last.rfind('\n');
  return nl == std::string::npos ? last : last.substr(nl + 1);
}

inline void ExpectOneLineError(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.code, 1) << r.err;
  const std::string line = ErrorLine(r);
  EXPECT_THAT(line, ::testing::StartsWith("qctl: error: ")) << r.err;
  EXPECT_THAT(line, ::testing::HasSubstr(needle)) << r.err;
  EXPECT_EQ(r.err.find("qctl: error:"), r.err.rfind("qctl: error:")) << "more than one error line:\n" << r.err;
}

inline nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadAll(path), nullptr, /*allow_exceptions=*/false);
}

// Artifacts of tiny-llama: "gptq" (GPTQ w4 g128), "awq" (AWQ w4 g128, awq
// format), "gptq_act_sym" (GPTQ w4 g64 act-order symmetric), "rtn3" (RTN w3
// g128). Tests only read them (CopyArtifact). Where they live:
//   - QF_VERIFY_ARTIFACTS=DIR (ctest, tests/verify/CMakeLists.txt): made
//     once per ctest run into DIR by the fixture's setup test, which sets
//     QF_VERIFY_ARTIFACTS_MAKE=1, and read from there by every test
//     process; ctest gives each test its own process, and four quantizes in
//     each of ten processes were most of the suite's time;
//   - otherwise in a temp dir of this process, made at its start and removed
//     at its end (the binary run by hand).
class Artifacts : public ::testing::Environment {
 public:
  static inline const std::map<std::string, std::string> kSpecs = {
      {"gptq", "--method gptq --bits 4 --group-size 128"},
      {"awq", "--method awq --bits 4 --group-size 128 --format awq"},
      {"gptq_act_sym", "--method gptq --bits 4 --group-size 64 --act-order --sym"},
      {"rtn3", "--method rtn --bits 3 --group-size 128"},
  };

  void SetUp() override {
    const char* shared = std::getenv("QF_VERIFY_ARTIFACTS");
    const char* make = std::getenv("QF_VERIFY_ARTIFACTS_MAKE");
    owned_ = shared == nullptr || *shared == '\0';
    if (owned_) {
      char tmpl[] = "/tmp/qf_verify_art.XXXXXX";
      dir_ = mkdtemp(tmpl);
    } else {
      dir_ = shared;
    }
    if (!owned_ && (make == nullptr || std::string(make) != "1")) {
      for (const auto& [name, flags] : kSpecs) {
        ASSERT_TRUE(Made(name)) << Path(name) << ": no artifact; the verify_artifacts test makes it (ctest runs it first)";
      }
      return;
    }
    if (!owned_) {  // the fixture's setup: whatever an earlier run left goes
      fs::remove_all(dir_);
      fs::create_directories(dir_);
    }
    for (const auto& [name, flags] : kSpecs) {
      RunResult r = Qctl(dir_, "quantize --model " + kModel + " --calib " + kCalib +
                                   " --samples 4 --seqlen 64 --seed 1 --out " + Path(name) + " " + flags);
      ASSERT_EQ(r.code, 0) << name << ": " << r.err;
    }
  }
  void TearDown() override {
    if (owned_) fs::remove_all(dir_);
  }
  static std::string Path(const std::string& name) { return dir_ + "/" + name; }
  // qctl quantize renames a finished artifact directory into place, manifest
  // and all: a manifest there is a complete artifact.
  static bool Made(const std::string& name) { return fs::exists(Path(name) + "/qforge-manifest.json"); }

 private:
  static inline std::string dir_;
  bool owned_ = true;
};

// What the setup test runs (a filter that selects only this test, so that
// the environment above makes the artifacts): each one is there.
TEST(VerifyArtifacts, AreThere) {
  for (const auto& [name, flags] : Artifacts::kSpecs) {
    EXPECT_TRUE(Artifacts::Made(name)) << Artifacts::Path(name);
  }
}

// A private copy of an artifact that a test may damage.
inline std::string CopyArtifact(const std::string& name, const std::string& tmp) {
  const std::string to = tmp + "/" + name;
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(Artifacts::Path(name))) {
    fs::copy_file(e.path(), to + "/" + e.path().filename().string());
  }
  return to;
}

class VerifyTestBase : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qf_verify_test.XXXXXX";
    tmp_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(tmp_); }
  RunResult Run(const std::string& args) { return Qctl(tmp_, args); }
  std::string tmp_;
};

}  // namespace qf::verify_test
