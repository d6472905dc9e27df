// Checkpoint directories: WriteSharded's file layout and index, reading across
// shards, the bundled tiny-llama, and broken indexes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/model_config.h"
#include "storage/safetensors.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

using ::qf::storage::testing::ExpectError;
using ::qf::storage::testing::ReadBytes;
using ::qf::storage::testing::TempDir;
using ::qf::storage::testing::WriteBytes;
using ::testing::ElementsAre;
using json = nlohmann::json;

// `n` U8 tensors t0..t{n-1} of `bytes` bytes each, with distinct contents.
std::vector<OwnedTensor> U8Tensors(int n, int64_t bytes) {
  std::vector<OwnedTensor> out;
  for (int i = n - 1; i >= 0; --i) {
    std::string data(static_cast<size_t>(bytes), '\0');
    for (int64_t k = 0; k < bytes; ++k) data[k] = static_cast<char>(i * 13 + k);
    out.push_back({"t" + std::to_string(i), DType::kU8, {bytes}, std::move(data)});
  }
  return out;
}

std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(WriteShardedTest, EverythingFitsGivesOneFileAndNoIndex) {
  TempDir tmp;
  absl::StatusOr<std::vector<std::string>> written = WriteSharded(tmp.path(), U8Tensors(3, 100), 300, {});
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_THAT(*written, ElementsAre("model.safetensors"));
  EXPECT_THAT(FilesIn(tmp.path()), ElementsAre("model.safetensors"));
  absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(tmp.path());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_THAT((*ck)->names(), ElementsAre("t0", "t1", "t2"));
}

TEST(WriteShardedTest, SplitsInNameOrderAndReadsBackAcrossShards) {
  TempDir tmp;
  const std::vector<OwnedTensor> in = U8Tensors(5, 400);
  absl::StatusOr<std::vector<std::string>> written = WriteSharded(tmp.path(), in, 1000, {{"format", "pt"}});
  ASSERT_TRUE(written.ok()) << written.status();
  // 400 + 400 fits 1000, a third would not: [t0 t1] [t2 t3] [t4].
  EXPECT_THAT(*written, ElementsAre("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                    "model-00003-of-00003.safetensors", "model.safetensors.index.json"));
  EXPECT_THAT(FilesIn(tmp.path()), ElementsAre("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                               "model-00003-of-00003.safetensors", "model.safetensors.index.json"));

  json index = json::parse(ReadBytes(tmp.Path("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 2000);
  EXPECT_EQ(index["weight_map"],
            json({{"t0", "model-00001-of-00003.safetensors"}, {"t1", "model-00001-of-00003.safetensors"},
                  {"t2", "model-00002-of-00003.safetensors"}, {"t3", "model-00002-of-00003.safetensors"},
                  {"t4", "model-00003-of-00003.safetensors"}}));

  absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(tmp.path());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_THAT((*ck)->names(), ElementsAre("t0", "t1", "t2", "t3", "t4"));
  for (const OwnedTensor& t : in) {
    SCOPED_TRACE(t.name);
    absl::StatusOr<const TensorView*> v = (*ck)->Get(t.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ((*v)->data, t.data);
    EXPECT_THAT((*v)->shape, ElementsAre(400));
  }
  EXPECT_EQ((*ck)->FileOf("t3")->path(), tmp.Path("model-00002-of-00003.safetensors"));
  EXPECT_EQ((*ck)->FileOf("t3")->metadata().at("format"), "pt");
  EXPECT_EQ((*ck)->FileOf("t9"), nullptr);
}

TEST(WriteShardedTest, OversizedTensorGetsItsOwnShardAndBytesAreDeterministic) {
  TempDir a, b;
  std::vector<OwnedTensor> in = U8Tensors(3, 10);
  in.push_back({"big", DType::kU8, {64}, std::string(64, 'x')});
  absl::StatusOr<std::vector<std::string>> wa = WriteSharded(a.path(), in, 32, {});
  ASSERT_TRUE(wa.ok()) << wa.status();
  // Name order: big, t0, t1, t2 -> [big] [t0 t1 t2].
  EXPECT_THAT(*wa, ElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                               "model.safetensors.index.json"));
  std::reverse(in.begin(), in.end());
  ASSERT_TRUE(WriteSharded(b.path(), in, 32, {}).ok());
  for (const std::string& name : *wa) EXPECT_EQ(ReadBytes(a.Path(name)), ReadBytes(b.Path(name))) << name;
  ExpectError(WriteSharded(a.path(), in, 0, {}).status(), absl::StatusCode::kInvalidArgument, {"max_shard_bytes"});
}

TEST(CheckpointTest, MissingTensorNamesDirAndTensor) {
  TempDir tmp;
  ASSERT_TRUE(WriteSharded(tmp.path(), U8Tensors(4, 10), 20, {}).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(tmp.path());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_FALSE((*ck)->Has("model.norm.weight"));
  ExpectError((*ck)->Get("model.norm.weight").status(), absl::StatusCode::kNotFound,
              {tmp.path(), "'model.norm.weight'", "model.safetensors.index.json"});
}

TEST(CheckpointTest, EmptyDirIsNotFound) {
  TempDir tmp;
  ExpectError(Checkpoint::Open(tmp.path()).status(), absl::StatusCode::kNotFound, {tmp.path(), "model.safetensors"});
}

// Broken indexes over a valid two-shard checkpoint (t0 in shard 1, t1 in shard 2).
TEST(CheckpointTest, BrokenIndexesAreRefusedNamingIndexShardAndTensor) {
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  struct Case { const char* what; std::string index; absl::StatusCode code; std::vector<std::string> fragments; };
  const Case cases[] = {
      {"missing shard",
       json({{"weight_map", {{"t0", s1}, {"t1", "model-00003-of-00003.safetensors"}}}}).dump(),
       absl::StatusCode::kNotFound, {"model-00003-of-00003.safetensors", "'t1'"}},
      {"tensor not in its shard", json({{"weight_map", {{"t0", s1}, {"t1", s1}}}}).dump(),
       absl::StatusCode::kInvalidArgument, {"'t1'", s1, "does not contain it"}},
      {"shard outside the directory", json({{"weight_map", {{"t0", "../" + s1}}}}).dump(),
       absl::StatusCode::kInvalidArgument, {"weight_map['t0']", "same directory"}},
      {"shard name not a string", json({{"weight_map", {{"t0", 1}}}}).dump(), absl::StatusCode::kInvalidArgument,
       {"weight_map['t0']"}},
      {"no weight_map", json({{"metadata", json::object()}}).dump(), absl::StatusCode::kInvalidArgument,
       {"'weight_map'"}},
      {"not JSON", "{\"weight_map\": ", absl::StatusCode::kInvalidArgument, {"not valid JSON"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir tmp;
    ASSERT_TRUE(WriteSharded(tmp.path(), U8Tensors(2, 10), 10, {}).ok());
    ASSERT_TRUE(Checkpoint::Open(tmp.path()).ok());
    WriteBytes(tmp.Path("model.safetensors.index.json"), c.index);
    absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(tmp.path());
    ASSERT_FALSE(ck.ok());
    ExpectError(ck.status(), c.code, {"model.safetensors.index.json"});
    for (const std::string& f : c.fragments) EXPECT_THAT(std::string(ck.status().message()), ::testing::HasSubstr(f));
  }
}

TEST(CheckpointTest, CorruptShardErrorNamesIndexAndShard) {
  TempDir tmp;
  ASSERT_TRUE(WriteSharded(tmp.path(), U8Tensors(2, 10), 10, {}).ok());
  const std::string shard = tmp.Path("model-00002-of-00002.safetensors");
  std::string bytes = ReadBytes(shard);
  WriteBytes(shard, bytes.substr(0, bytes.size() - 1));
  ExpectError(Checkpoint::Open(tmp.path()).status(), absl::StatusCode::kDataLoss,
              {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "'t1'"});
}

TEST(CheckpointTest, ReadsBundledTinyLlamaConsistentWithItsConfig) {
  const std::string dir = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";
  absl::StatusOr<ModelConfig> cfg = LoadModelConfig(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();

  const int64_t h = cfg->hidden_size, q = cfg->num_attention_heads * cfg->head_dim,
                kv = cfg->num_key_value_heads * cfg->head_dim, ffn = cfg->intermediate_size;
  const std::pair<std::string, std::vector<int64_t>> expected[] = {
      {"model.embed_tokens.weight", {cfg->vocab_size, h}},
      {"model.norm.weight", {h}},
      {"lm_head.weight", {cfg->vocab_size, h}},
      {"model.layers.0.self_attn.q_proj.weight", {q, h}},
      {"model.layers.0.self_attn.k_proj.weight", {kv, h}},
      {"model.layers.0.self_attn.v_proj.weight", {kv, h}},
      {"model.layers.0.self_attn.o_proj.weight", {h, q}},
      {"model.layers.0.mlp.gate_proj.weight", {ffn, h}},
      {"model.layers.0.mlp.up_proj.weight", {ffn, h}},
      {"model.layers.3.mlp.down_proj.weight", {h, ffn}},
      {"model.layers.3.input_layernorm.weight", {h}},
  };
  for (const auto& [name, shape] : expected) {
    SCOPED_TRACE(name);
    absl::StatusOr<const TensorView*> t = (*ck)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->shape, shape);
    EXPECT_EQ((*t)->dtype, DType::kF16);
    EXPECT_EQ((*t)->nbytes(), static_cast<size_t>((*t)->numel()) * 2);
  }
  // embed + final norm + lm_head (untied) + 9 per layer.
  EXPECT_EQ((*ck)->names().size(), static_cast<size_t>(3 + 9 * cfg->num_hidden_layers));
  EXPECT_FALSE((*ck)->Has("model.layers.4.mlp.up_proj.weight"));
  // RMSNorm weights of a trained model are finite and mostly near 1.
  const TensorView* norm = (*ck)->Get("model.norm.weight").value();
  double sum = 0;
  for (int64_t i = 0; i < norm->numel(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, norm->data.data() + 2 * i, 2);
    float v = HalfToFloat(bits);
    ASSERT_TRUE(std::isfinite(v)) << i;
    sum += v;
  }
  EXPECT_GT(sum / norm->numel(), 0.1);
  EXPECT_LT(sum / norm->numel(), 10.0);
}

}  // namespace
}  // namespace qf::storage
