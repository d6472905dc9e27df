// File: storage/model_config.h
//
// The parts of an HF `config.json` the engine needs, for the decoder families
// we support (`llama`, `mistral`, `qwen2`), in both transformers spellings:
//   4.x: "rope_theta", "rope_scaling": {"rope_type"|"type": "llama3", "factor", ...},
//        "torch_dtype"
//   5.x: "rope_parameters": {"rope_theta", "rope_type", ...}, "dtype"
//
// Family rules (as transformers applies them):
//   llama:   `attention_bias` puts biases on q, k, v and o; `mlp_bias` on the MLP.
//   qwen2:   q, k, v always carry biases, o and the MLP never; the sliding
//            window applies only with `use_sliding_window`.
//   mistral: no biases; `sliding_window` (null = none).
// `eos_token_id` may be a list: the first entry is kept. `null` counts as absent.
//
//   QF_ASSIGN_OR_RETURN(qf::storage::ModelConfig cfg, qf::storage::LoadModelConfig(dir));
//   int64_t kv_dim = cfg.num_key_value_heads * cfg.head_dim;
#pragma once

#include <array>
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

// Parses and validates `<dir>/config.json`. NotFound if the file is missing.
// InvalidArgument naming the file and field: invalid JSON, unsupported
// model_type (lists the supported ones), missing, mistyped or non-positive
// sizes, heads not dividing hidden size (when head_dim is not given), kv heads
// not dividing heads, odd head_dim, unknown rope type or bad rope parameters,
// unknown dtype, a hidden_act other than silu.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// The same on an already parsed document; `source` names it in messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& j, const std::string& source);

// [out_features, in_features] of a decoder layer's seven linears, in the
// order q, k, v, o, gate, up, down (storage/artifact.h kLinearNames).
struct LinearShape {
  int64_t out = 0, in = 0;
};
std::array<LinearShape, 7> DecoderLinearShapes(const ModelConfig& cfg);

}  // namespace qf::storage
