// config.json parsing: the bundled tiny-llama (transformers 5.x spelling),
// real-world 4.x configs of each supported family, and one table row per
// validation rule.
#include "storage/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

using ::qf::storage::testing::ExpectError;
using ::qf::storage::testing::TempDir;
using ::qf::storage::testing::WriteBytes;
using json = nlohmann::json;

// Writes `text` as <tmp>/config.json and loads it.
absl::StatusOr<ModelConfig> LoadText(const TempDir& tmp, const std::string& text) {
  WriteBytes(tmp.Path("config.json"), text);
  return LoadModelConfig(tmp.path());
}

// Llama-3.1-8B as transformers 4.x writes it.
const char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0",
  "vocab_size": 128256})";

// Qwen2.5-0.5B-Instruct (4.x).
const char kQwen2Config[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// Mistral-7B-v0.1 (4.x).
const char kMistralConfig[] = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 32000})";

TEST(ModelConfigTest, BundledTinyLlamaIn5xSpelling) {
  absl::StatusOr<ModelConfig> cfg = LoadModelConfig(std::string(QF_SOURCE_DIR) + "/models/tiny-llama");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_type, "llama");
  EXPECT_EQ(cfg->hidden_size, 256);
  EXPECT_EQ(cfg->intermediate_size, 768);
  EXPECT_EQ(cfg->num_hidden_layers, 4);
  EXPECT_EQ(cfg->num_attention_heads, 4);
  EXPECT_EQ(cfg->num_key_value_heads, 2);
  EXPECT_EQ(cfg->head_dim, 64);
  EXPECT_EQ(cfg->vocab_size, 8000);
  EXPECT_DOUBLE_EQ(cfg->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(cfg->rope.theta, 10000.0);
  EXPECT_EQ(cfg->rope.type, "default");
  EXPECT_EQ(cfg->dtype, "float16");
  EXPECT_FALSE(cfg->attention_bias || cfg->o_proj_bias || cfg->mlp_bias || cfg->tie_word_embeddings);
  EXPECT_EQ(cfg->eos_token_id, 2);
  EXPECT_EQ(cfg->raw["transformers_version"], "5.17.0");
}

TEST(ModelConfigTest, Llama3In4xSpelling) {
  TempDir tmp;
  absl::StatusOr<ModelConfig> cfg = LoadText(tmp, kLlama31Config);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->head_dim, 128);              // 4096 / 32
  EXPECT_EQ(cfg->num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(cfg->rope.theta, 500000.0);
  EXPECT_EQ(cfg->rope.type, "llama3");
  EXPECT_DOUBLE_EQ(cfg->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(cfg->rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(cfg->rope.high_freq_factor, 4.0);
  EXPECT_EQ(cfg->rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(cfg->dtype, "bfloat16");
  EXPECT_EQ(cfg->bos_token_id, 128000);
  EXPECT_EQ(cfg->eos_token_id, 128001);       // first of the list
  EXPECT_EQ(cfg->max_position_embeddings, 131072);
  EXPECT_EQ(cfg->sliding_window, 0);
}

TEST(ModelConfigTest, Llama3In5xSpellingMatches4x) {
  json j = json::parse(kLlama31Config);
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  absl::StatusOr<ModelConfig> a = ParseModelConfig(j, "v5/config.json");
  absl::StatusOr<ModelConfig> b = ParseModelConfig(json::parse(kLlama31Config), "v4/config.json");
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_DOUBLE_EQ(a->rope.theta, b->rope.theta);
  EXPECT_EQ(a->rope.type, b->rope.type);
  EXPECT_DOUBLE_EQ(a->rope.factor, b->rope.factor);
  EXPECT_EQ(a->rope.original_max_position_embeddings, b->rope.original_max_position_embeddings);
  EXPECT_EQ(a->dtype, b->dtype);
}

TEST(ModelConfigTest, LinearRopeWithOldTypeKeyAndLlamaBiasFlags) {
  json j = json::parse(kLlama31Config);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["tie_word_embeddings"] = true;
  absl::StatusOr<ModelConfig> cfg = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->rope.type, "linear");
  EXPECT_DOUBLE_EQ(cfg->rope.factor, 2.0);
  EXPECT_TRUE(cfg->attention_bias);
  EXPECT_TRUE(cfg->o_proj_bias);              // llama's flag covers o_proj too
  EXPECT_TRUE(cfg->mlp_bias);
  EXPECT_TRUE(cfg->tie_word_embeddings);
}

TEST(ModelConfigTest, Qwen2HasQkvBiasesAndTiedEmbeddings) {
  TempDir tmp;
  absl::StatusOr<ModelConfig> cfg = LoadText(tmp, kQwen2Config);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_type, "qwen2");
  EXPECT_TRUE(cfg->attention_bias);
  EXPECT_FALSE(cfg->o_proj_bias);
  EXPECT_FALSE(cfg->mlp_bias);
  EXPECT_TRUE(cfg->tie_word_embeddings);
  EXPECT_EQ(cfg->head_dim, 64);               // 896 / 14
  EXPECT_EQ(cfg->num_key_value_heads, 2);
  EXPECT_EQ(cfg->sliding_window, 0);          // use_sliding_window is false
  EXPECT_DOUBLE_EQ(cfg->rope.theta, 1e6);
  EXPECT_EQ(cfg->eos_token_id, 151645);
}

TEST(ModelConfigTest, MistralSlidingWindowAndExplicitHeadDim) {
  TempDir tmp;
  absl::StatusOr<ModelConfig> cfg = LoadText(tmp, kMistralConfig);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_type, "mistral");
  EXPECT_EQ(cfg->sliding_window, 4096);
  EXPECT_EQ(cfg->head_dim, 128);
  EXPECT_FALSE(cfg->attention_bias || cfg->o_proj_bias || cfg->mlp_bias);
  // Mistral-Nemo style: head_dim not hidden/heads, window null.
  json j = json::parse(kMistralConfig);
  j["hidden_size"] = 5120;
  j["head_dim"] = 128;
  j["sliding_window"] = nullptr;
  absl::StatusOr<ModelConfig> nemo = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(nemo.ok()) << nemo.status();
  EXPECT_EQ(nemo->head_dim, 128);
  EXPECT_EQ(nemo->sliding_window, 0);
}

TEST(ModelConfigTest, DefaultsWhenOptionalFieldsAreAbsent) {
  const json j = {{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 128},
                  {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"vocab_size", 100}};
  absl::StatusOr<ModelConfig> cfg = ParseModelConfig(j, "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->num_key_value_heads, 4);
  EXPECT_EQ(cfg->head_dim, 16);
  EXPECT_FALSE(cfg->tie_word_embeddings);
  EXPECT_EQ(cfg->rope.type, "default");
  EXPECT_DOUBLE_EQ(cfg->rope.theta, 10000.0);
  EXPECT_EQ(cfg->raw, j);
}

// Each row patches the Llama 3.1 config (json merge patch: null deletes a key).
TEST(ModelConfigTest, InvalidConfigsNameTheFileAndField) {
  struct Case { const char* what; json patch; absl::StatusCode code; std::vector<std::string> fragments; };
  const Case cases[] = {
      {"unsupported model_type", {{"model_type", "gpt2"}}, absl::StatusCode::kInvalidArgument,
       {"model_type 'gpt2' is not supported (expected one of llama, mistral, qwen2)"}},
      {"missing model_type", {{"model_type", nullptr}}, absl::StatusCode::kInvalidArgument, {"'model_type'"}},
      {"missing hidden_size", {{"hidden_size", nullptr}}, absl::StatusCode::kInvalidArgument,
       {"'hidden_size' is missing"}},
      {"hidden_size a string", {{"hidden_size", "4096"}}, absl::StatusCode::kInvalidArgument,
       {"'hidden_size'", "expected an integer"}},
      {"zero layers", {{"num_hidden_layers", 0}}, absl::StatusCode::kInvalidArgument,
       {"'num_hidden_layers' is 0"}},
      {"negative vocab", {{"vocab_size", -5}}, absl::StatusCode::kInvalidArgument, {"'vocab_size'"}},
      {"heads do not divide hidden", {{"num_attention_heads", 24}, {"num_key_value_heads", 8}},
       absl::StatusCode::kInvalidArgument, {"'num_attention_heads'", "divisor of hidden_size"}},
      {"kv heads do not divide heads", {{"num_key_value_heads", 5}}, absl::StatusCode::kInvalidArgument,
       {"'num_key_value_heads' is 5", "divisor of num_attention_heads 32"}},
      {"odd head_dim", {{"head_dim", 127}}, absl::StatusCode::kInvalidArgument, {"'head_dim'", "even"}},
      {"unknown rope type", {{"rope_scaling", {{"rope_type", "yarn"}}}}, absl::StatusCode::kInvalidArgument,
       {"'rope_scaling.rope_type'", "'yarn'", "default, llama3, linear"}},
      {"llama3 without factor", {{"rope_scaling", {{"factor", nullptr}}}}, absl::StatusCode::kInvalidArgument,
       {"'rope_scaling.factor' is missing"}},
      {"llama3 bands reversed", {{"rope_scaling", {{"low_freq_factor", 4.0}, {"high_freq_factor", 1.0}}}},
       absl::StatusCode::kInvalidArgument, {"'rope_scaling.high_freq_factor'"}},
      {"rope_scaling not an object", {{"rope_scaling", "llama3"}}, absl::StatusCode::kInvalidArgument,
       {"'rope_scaling'"}},
      {"unknown dtype", {{"torch_dtype", "float8"}}, absl::StatusCode::kInvalidArgument,
       {"'torch_dtype' is 'float8'", "bfloat16"}},
      {"non-positive eps", {{"rms_norm_eps", 0}}, absl::StatusCode::kInvalidArgument, {"'rms_norm_eps'"}},
      {"bias flag not a bool", {{"attention_bias", "yes"}}, absl::StatusCode::kInvalidArgument,
       {"'attention_bias'"}},
      {"eos list of strings", {{"eos_token_id", {"</s>"}}}, absl::StatusCode::kInvalidArgument,
       {"'eos_token_id'"}},
      {"gelu", {{"hidden_act", "gelu"}}, absl::StatusCode::kInvalidArgument, {"'hidden_act'", "silu"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir tmp;
    json j = json::parse(kLlama31Config);
    j.merge_patch(c.patch);
    absl::StatusOr<ModelConfig> cfg = LoadText(tmp, j.dump());
    ASSERT_FALSE(cfg.ok());
    ExpectError(cfg.status(), c.code, {tmp.Path("config.json")});
    for (const std::string& f : c.fragments) EXPECT_THAT(std::string(cfg.status().message()), ::testing::HasSubstr(f));
  }
}

TEST(ModelConfigTest, Qwen2SlidingWindowIsRefused) {
  json j = json::parse(kQwen2Config);
  j["use_sliding_window"] = true;
  ExpectError(ParseModelConfig(j, "q/config.json").status(), absl::StatusCode::kUnimplemented,
              {"q/config.json", "'use_sliding_window'"});
}

TEST(ModelConfigTest, FileLevelErrors) {
  TempDir tmp;
  ExpectError(LoadModelConfig(tmp.path()).status(), absl::StatusCode::kNotFound, {tmp.Path("config.json")});
  ExpectError(LoadText(tmp, "{\"model_type\": ").status(), absl::StatusCode::kInvalidArgument,
              {tmp.Path("config.json"), "not valid JSON"});
  ExpectError(LoadText(tmp, "[1]").status(), absl::StatusCode::kInvalidArgument,
              {tmp.Path("config.json"), "expected an object"});
}

}  // namespace
}  // namespace qf::storage
