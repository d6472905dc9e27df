// File: tests/fuzz/model_config_fuzz.cc
//
// LoadModelConfig on an arbitrary config.json. An accepted config must hold
// what model_config.h promises the engine: positive sizes, kv heads dividing
// heads, an even head_dim, a known model type, rope type and dtype.
#include <string>

#include "storage/model_config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qf::fuzz::WriteScratch("config.json", {reinterpret_cast<const char*>(data), size});
  auto cfg = qf::storage::LoadModelConfig(qf::fuzz::ScratchDir());
  if (!cfg.ok()) {
    qf::fuzz::CheckRefusal(cfg.status(), path);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  const qf::storage::ModelConfig& c = *cfg;
  QF_FUZZ_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2", "model_type %s",
                c.model_type.c_str());
  QF_FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 && c.vocab_size > 0,
                "a non-positive size");
  QF_FUZZ_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0, "no heads");
  QF_FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "kv heads %lld do not divide heads %lld",
                static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.num_attention_heads));
  QF_FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim %lld", static_cast<long long>(c.head_dim));
  QF_FUZZ_CHECK(c.rope.type == "default" || c.rope.type == "llama3" || c.rope.type == "linear", "rope type %s",
                c.rope.type.c_str());
  QF_FUZZ_CHECK(c.dtype == "float16" || c.dtype == "bfloat16" || c.dtype == "float32", "dtype %s", c.dtype.c_str());
  QF_FUZZ_CHECK(c.rms_norm_eps > 0 && c.max_position_embeddings > 0, "a non-positive eps or context");
  // The engine sizes every linear from these products (UBSan: no overflow).
  for (const qf::storage::LinearShape& s : qf::storage::DecoderLinearShapes(c))
    QF_FUZZ_CHECK(s.out > 0 && s.in > 0, "a linear of %lld x %lld",
                  static_cast<long long>(s.out), static_cast<long long>(s.in));
  return 0;
}
