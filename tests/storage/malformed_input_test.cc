// Mutated inputs: thousands of deterministic corruptions of a safetensors
// header, a config.json and a shard index (an artifact's JSON files:
// formats_test). Each
// must either load or be refused with a one-line status that names the file;
// none may crash, throw, or hand out a tensor view outside its file. The hand-written malformed cases
// (safetensors_test.cc, model_config_test.cc) pin the messages; this covers
// the combinations nobody thought to write.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"
#include "tests/mutator.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

TEST(MalformedInputTest, MutatedSafetensorsHeadersAreRefusedOrReadInBounds) {
  testing::TempDir dir;
  const std::string good = dir.Path("good.safetensors");
  ASSERT_TRUE(WriteFile(good,
                        {{"a.weight", DType::kF16, {4, 8}, std::string(64, '\x11')},
                         {"b.bias", DType::kF32, {5}, std::string(20, '\x22')},
                         {"c.idx", DType::kI32, {2, 3}, std::string(24, '\x33')},
                         {"d.empty", DType::kBF16, {0, 7}, ""}},
                        {{"format", "pt"}})
                  .ok());
  const std::string bytes = testing::ReadBytes(good);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const std::string header = bytes.substr(8, n), data = bytes.substr(8 + n);
  const std::string path = dir.Path("m.safetensors");
  qf::testing::Mutator mut(20261205);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string h = mut.Mutate(header);
    // The length prefix follows the edit, except now and then, when it is
    // left stale (or the data area loses bytes) to test the bounds checks.
    uint64_t len = h.size();
    if (i % 7 == 0) len = n;
    std::string file(8, '\0');
    std::memcpy(file.data(), &len, 8);
    file += h;
    file += i % 11 == 0 ? data.substr(0, data.size() / 2) : data;
    testing::WriteBytes(path, file);
    auto f = SafetensorsFile::Open(path);
    if (!f.ok()) {
      ++refused;
      qf::testing::ExpectRefusalNames(f.status(), path, i);
      continue;
    }
    // Accepted: every view lies inside the file's data area and has its size.
    const char* lo = nullptr;
    for (const std::string& name : (*f)->names()) {
      auto v = (*f)->Get(name);
      ASSERT_TRUE(v.ok()) << "mutant " << i << ": " << v.status();
      ASSERT_EQ((*v)->data.size(), static_cast<size_t>((*v)->numel()) * DTypeSize((*v)->dtype)) << "mutant " << i;
      if (!(*v)->data.empty() && (lo == nullptr || (*v)->data.data() < lo)) lo = (*v)->data.data();
    }
    for (const std::string& name : (*f)->names()) {
      const TensorView* v = *(*f)->Get(name);
      if (v->data.empty()) continue;
      EXPECT_LE(static_cast<size_t>(v->data.data() + v->data.size() - lo), file.size() - 8 - h.size())
          << "mutant " << i << " tensor " << name;
    }
  }
  // The mutations mostly break the header: a run that refused nothing would
  // be testing nothing.
  EXPECT_GT(refused, 2000);
}

TEST(MalformedInputTest, MutatedConfigJsonIsRefusedNamingTheFile) {
  testing::TempDir dir;
  const std::string model = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";
  const std::string config = testing::ReadBytes(model + "/config.json");
  ASSERT_FALSE(config.empty());
  qf::testing::Mutator mut(7);
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    testing::WriteBytes(dir.Path("config.json"), mut.Mutate(config));
    auto c = LoadModelConfig(dir.path());
    if (c.ok()) continue;
    ++refused;
    qf::testing::ExpectRefusalNames(c.status(), dir.path(), i);
  }
  EXPECT_GT(refused, 500);
}

// A sharded checkpoint's index (model.safetensors.index.json), mutated: the
// checkpoint is refused naming the index, or opens and every name it lists
// reads or fails naming the directory.
TEST(MalformedInputTest, MutatedShardIndexIsRefusedNamingTheIndex) {
  testing::TempDir dir;
  std::vector<TensorRef> refs;
  std::vector<OwnedTensor> tensors;
  for (int i = 0; i < 6; ++i) {
    tensors.push_back({"model.layers." + std::to_string(i) + ".w", DType::kF16, {8}, std::string(16, char(i))});
  }
  for (const OwnedTensor& t : tensors) refs.push_back(RefOf(t));
  ASSERT_TRUE(WriteSharded(dir.path(), refs, 40, {}).ok());  // three shards
  const std::string index = dir.Path("model.safetensors.index.json");
  const std::string original = testing::ReadBytes(index);
  ASSERT_FALSE(original.empty());
  qf::testing::Mutator mut(5);
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    testing::WriteBytes(index, mut.Mutate(original));
    auto c = Checkpoint::Open(dir.path());
    if (!c.ok()) {
      ++refused;
      qf::testing::ExpectRefusalNames(c.status(), dir.path(), i);
      continue;
    }
    for (const std::string& name : (*c)->names()) {
      qf::testing::ExpectRefusalNames((*c)->Get(name).status(), dir.path(), i);
    }
  }
  EXPECT_GT(refused, 500);
}

}  // namespace
}  // namespace qf::storage
