// storage::DigestJobInputs on a copy of tiny-llama: every kind of change a
// resumed job must notice, named by file, and a damaged shard named as such.
#include "storage/inputs_digest.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

namespace fs = std::filesystem;
using ::qf::storage::testing::TempDir;
using ::testing::HasSubstr;

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

uint64_t DataStart(const std::string& shard) {
  std::ifstream f(shard, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
  return 8 + n;
}

TEST(InputsDigestTest, EveryInputChangeIsNamed) {
  TempDir tmp;
  const std::string model = tmp.Path("model");
  fs::copy(std::string(QF_SOURCE_DIR) + "/models/tiny-llama", model);
  const std::string calib = tmp.Path("calib.txt");
  fs::copy_file(std::string(QF_SOURCE_DIR) + "/data/calib.txt", calib);
  const std::string shard = model + "/model.safetensors";

  auto base = DigestJobInputs(model, calib);
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_GE(base->size(), 4u);  // config, tokenizer files, the shard, the calibration text
  auto again = DigestJobInputs(model, calib);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(FirstInputChange(*base, *again), "");

  struct Case {
    const char* what;
    std::function<void()> change, undo;
    std::string expect;
  };
  const uint64_t data = DataStart(shard);
  const uint64_t size = fs::file_size(shard);
  const std::vector<Case> cases = {
      {"a weight at the start of the data", [&] { FlipByte(shard, data + 100); },
       [&] { FlipByte(shard, data + 100); }, shard + " changed"},
      {"a weight at the end of the data", [&] { FlipByte(shard, size - 3); }, [&] { FlipByte(shard, size - 3); },
       shard + " changed"},
      {"the header", [&] { FlipByte(shard, 20); }, [&] { FlipByte(shard, 20); }, shard + " changed"},
      {"config.json", [&] { FlipByte(model + "/config.json", 5); }, [&] { FlipByte(model + "/config.json", 5); },
       model + "/config.json changed"},
      {"the calibration text", [&] { FlipByte(calib, 0); }, [&] { FlipByte(calib, 0); }, calib + " changed"},
      {"a new shard", [&] { fs::copy_file(shard, model + "/extra.safetensors"); },
       [&] { fs::remove(model + "/extra.safetensors"); }, model + "/extra.safetensors is new"},
      {"the tokenizer", [&] { fs::rename(model + "/tokenizer.model", tmp.Path("t")); },
       [&] { fs::rename(tmp.Path("t"), model + "/tokenizer.model"); }, model + "/tokenizer.model is gone"},
  };
  for (const Case& c : cases) {
    c.change();
    auto now = DigestJobInputs(model, calib);
    ASSERT_TRUE(now.ok()) << c.what << ": " << now.status();
    EXPECT_EQ(FirstInputChange(*base, *now), c.expect) << c.what;
    c.undo();
    now = DigestJobInputs(model, calib);
    ASSERT_TRUE(now.ok());
    EXPECT_EQ(FirstInputChange(*base, *now), "") << c.what << " undone";
  }

  fs::resize_file(shard, data / 2);  // a shard cut inside its header
  auto cut = DigestJobInputs(model, calib);
  EXPECT_FALSE(cut.ok());
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr(shard));
  EXPECT_TRUE(DigestJobInputs("synthetic:llama-tiny", "")->empty());
}

}  // namespace
}  // namespace qf::storage
