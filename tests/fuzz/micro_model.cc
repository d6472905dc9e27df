// File: tests/fuzz/micro_model.cc
#include "tests/fuzz/micro_model.h"

#include <random>
#include <string>

#include "storage/artifact.h"  // kLinearNames
#include "tests/fuzz/fuzz_target.h"

namespace qf::fuzz {

std::string HalfOnes(int64_t numel) {
  std::string s(static_cast<size_t>(numel) * 2, '\0');
  for (int64_t i = 0; i < numel; ++i) s[2 * i + 1] = 0x3C;  // 1.0 = 0x3C00
  return s;
}

const char* MicroConfigJson() {
  return R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
  "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "hidden_act": "silu",
  "dtype": "float16", "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false})";
}

storage::ModelConfig MicroConfig() {
  auto cfg = storage::ParseModelConfig(nlohmann::json::parse(MicroConfigJson()), "micro config.json");
  QF_FUZZ_CHECK(cfg.ok(), "%s", std::string(cfg.status().message()).c_str());
  return *cfg;
}

kernels::LayerResult MicroLayer() {
  const auto shapes = storage::DecoderLinearShapes(MicroConfig());
  kernels::LayerResult layer;
  std::mt19937 rng(7);
  for (size_t i = 0; i < shapes.size(); ++i) {
    kernels::QuantizedLinear q;
    q.name = std::string(storage::kLinearNames[i]);
    q.bits = 4;
    q.group_size = 32;
    q.sym = false;
    q.out_features = shapes[i].out;
    q.in_features = shapes[i].in;
    q.num_groups = q.in_features / 32;
    q.codes.resize(static_cast<size_t>(q.out_features * q.in_features));
    for (auto& c : q.codes) c = static_cast<uint8_t>(rng() % 16);
    q.zeros.resize(static_cast<size_t>(q.num_groups * q.out_features));
    for (auto& z : q.zeros) z = static_cast<uint8_t>(1 + rng() % 15);
    q.scales.assign(q.zeros.size(), 0x2000);  // fp16 2^-7
    for (int64_t k = 0; k < q.in_features; ++k) q.g_idx.push_back(static_cast<int32_t>(k / 32));
    layer.linears.push_back(std::move(q));
    layer.errors.push_back(0.0);
  }
  for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"})
    layer.dense.push_back(kernels::DenseTensor{norm, "F16", {64}, HalfOnes(64)});
  return layer;
}

}  // namespace qf::fuzz
