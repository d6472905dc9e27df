// File: bench/synthetic_layer.h
//
// A decoder layer's result shaped like `cfg`'s (4-bit codes, group size 128,
// the seven Llama linears plus the two norms), from a counter-based generator:
// the same (cfg, layer) always gives the same result. For the host-path
// benchmarks, which need realistic sizes, not realistic values.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "kernels/quant_types.h"
#include "storage/model_config.h"
#include "storage/synthetic_model.h"

namespace qf::bench {

inline kernels::LayerResult MakeSyntheticLayer(const storage::ModelConfig& c, int layer) {
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const struct { const char* name; int64_t out, in; } shapes[] = {
      {"self_attn.q_proj", q, c.hidden_size},          {"self_attn.k_proj", kv, c.hidden_size},
      {"self_attn.v_proj", kv, c.hidden_size},         {"self_attn.o_proj", c.hidden_size, q},
      {"mlp.gate_proj", c.intermediate_size, c.hidden_size}, {"mlp.up_proj", c.intermediate_size, c.hidden_size},
      {"mlp.down_proj", c.hidden_size, c.intermediate_size}};
  kernels::LayerResult r;
  r.layer = layer;
  uint64_t s = 1 + static_cast<uint64_t>(layer);
  for (const auto& sh : shapes) {
    kernels::QuantizedLinear l;
    l.name = sh.name;
    l.bits = 4;
    l.group_size = 128;
    l.out_features = sh.out;
    l.in_features = sh.in;
    l.num_groups = sh.in / 128;
    l.codes.resize(static_cast<size_t>(sh.out * sh.in));
    for (size_t i = 0; i < l.codes.size(); i += 8) {
      s = storage::SplitMix64(s);
      for (int j = 0; j < 8 && i + j < l.codes.size(); ++j) l.codes[i + j] = static_cast<uint8_t>((s >> (4 * j)) & 15);
    }
    l.scales.resize(static_cast<size_t>(l.num_groups * sh.out));
    l.zeros.resize(l.scales.size());
    for (size_t i = 0; i < l.scales.size(); ++i) {
      s = storage::SplitMix64(s);
      l.scales[i] = static_cast<uint16_t>(0x1c00 + (s & 0x3ff));
      l.zeros[i] = static_cast<uint8_t>(1 + (s >> 32) % 15);
    }
    l.g_idx.resize(static_cast<size_t>(sh.in));
    for (int64_t i = 0; i < sh.in; ++i) l.g_idx[i] = static_cast<int32_t>(i / 128);
    r.linears.push_back(std::move(l));
    r.errors.push_back(0.5);
  }
  for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"})
    r.dense.push_back({norm, "F16", {c.hidden_size}, std::string(static_cast<size_t>(c.hidden_size) * 2, '\x3c')});
  return r;
}

}  // namespace qf::bench
