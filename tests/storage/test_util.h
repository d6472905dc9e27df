// File: tests/storage/test_util.h
//
// Helpers shared by the storage tests: a self-removing temp directory, raw
// safetensors byte builders (for corrupt fixtures the writer refuses to make)
// and a status check that names the expected code and message fragments.
//
//   TempDir tmp;
//   WriteBytes(tmp.Path("bad.safetensors"), RawSafetensors(R"({"w": 1})", ""));
//   ExpectError(SafetensorsFile::Open(tmp.Path("bad.safetensors")).status(),
//               absl::StatusCode::kInvalidArgument, {"bad.safetensors", "'w'"});
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/fs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qf::storage::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qf-storage-test-XXXXXX";
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr) << "mkdtemp " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() { (void)qf::RemoveAll(path_); }
  const std::string& path() const { return path_; }
  std::string Path(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "writing " << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// [u64 len][header][data], exactly as given (no padding, no checks).
inline std::string RawSafetensors(std::string_view header, std::string_view data) {
  return LengthPrefix(header.size()) + std::string(header) + std::string(data);
}

inline void ExpectError(const absl::Status& s, absl::StatusCode code,
                        std::initializer_list<std::string_view> fragments) {
  EXPECT_EQ(s.code(), code) << s;
  for (std::string_view f : fragments) EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(std::string(f)));
  // One line: messages end up in job records and CLI output.
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos) << s;
}

}  // namespace qf::storage::testing
