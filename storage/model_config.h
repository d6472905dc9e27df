// File: storage/model_config.h
//
// The parts of an HF `config.json` the engine needs, for the decoder families
// we support (`llama`, `mistral`, `qwen2`), in both transformers spellings:
//   4.x: "rope_theta", "rope_scaling": {"rope_type"|"type": "llama3", "factor", ...},
//        "torch_dtype"
//   5.x: "rope_parameters": {"rope_theta", "rope_type", ...}, "dtype"
//
//   QF_ASSIGN_OR_RETURN(qf::storage::ModelConfig cfg, qf::storage::LoadModelConfig(dir));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace qf::storage {

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";        // "default" | "llama3" | "linear"
  double factor = 1.0;                 // llama3 / linear
  double low_freq_factor = 1.0;        // llama3
  double high_freq_factor = 4.0;       // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string model_type;              // "llama" | "mistral" | "qwen2"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;     // defaults to num_attention_heads
  int64_t head_dim = 0;                // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool attention_bias = false;         // q/k/v (and o for llama's flag) carry biases; qwen2: q/k/v yes
  bool o_proj_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::string dtype = "float16";       // "float16" | "bfloat16" | "float32"
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t sliding_window = 0;          // mistral; 0 = none (ignored when seqlen <= window)
  nlohmann::json raw;                  // the whole file, to copy into artifacts
};

// Parses and validates `<dir>/config.json`. InvalidArgument naming the file and
// field: unsupported model_type (lists the supported ones), missing or
// non-positive sizes, heads not dividing hidden size, kv heads not dividing
// heads, unknown rope type, unknown dtype.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& j, const std::string& source);

}  // namespace qf::storage
