// Tests of the GGUF export (storage/gguf.h) and of llama.cpp's block types
// (kernels/ref/ggml_blocks.h). The file is read back here with a small reader
// of the GGUF layout; tests/interop/gguf_interop_test.py loads it with
// independent consumers.
#include "storage/gguf.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/ref/ggml_blocks.h"
#include "kernels/ref/pack.h"
#include "tests/formats/artifact_fixture.h"
#include "tests/formats/test_linear.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

using kernels::GgmlType;
using kernels::QuantizedLinear;
using ::testing::HasSubstr;
using testing::Fixture;
using testing::kModel;
using testing::Load;
using testing::MakeLayers;
using testing::ReadBytes;
using testing::TempDir;

// ---- llama.cpp's blocks

// Every row of `q` through AppendGgmlRow and back through DequantizeGgmlRow
// against DequantizeRef: at most `tol` * the row's scale apart.
void ExpectBlocksHold(const QuantizedLinear& q, GgmlType want, float tol) {
  absl::StatusOr<GgmlType> t = kernels::GgmlTypeFor(q);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(*t, want);
  const std::vector<float> ref = kernels::DequantizeRef(q);
  const int64_t k = q.in_features, gs = q.group_size == -1 ? k : q.group_size;
  for (int64_t r = 0; r < q.out_features; ++r) {
    std::string bytes;
    ASSERT_TRUE(kernels::AppendGgmlRow(q, *t, r, &bytes).ok());
    ASSERT_EQ(bytes.size(), kernels::GgmlRowBytes(*t, k));
    const std::vector<float> got = kernels::DequantizeGgmlRow(*t, bytes, k);
    for (int64_t i = 0; i < k; ++i) {
      const float scale = HalfToFloat(q.scales[(i / gs) * q.out_features + r]);
      ASSERT_LE(std::fabs(got[i] - ref[r * k + i]), tol * scale) << "row " << r << " column " << i;
    }
  }
}

TEST(GgmlBlocks, SymmetricFourBitIsQ4_0Exactly) {
  ExpectBlocksHold(kernels::testing::RandomLinear({.n = 48, .k = 256, .bits = 4, .group_size = 128, .sym = true}),
                   GgmlType::kQ4_0, 0.f);
}

TEST(GgmlBlocks, AsymmetricFourBitIsQ4_1WithinAnFp16RoundingOfTheOffset) {
  // m = fp16(-scale * zero) with zero <= 15: half an ulp of 15 * scale < scale / 128.
  ExpectBlocksHold(kernels::testing::RandomLinear({.n = 48, .k = 256, .bits = 4, .group_size = 32, .seed = 3}),
                   GgmlType::kQ4_1, 1.f / 128);
}

TEST(GgmlBlocks, SymmetricEightBitPerRowIsQ8_0Exactly) {
  ExpectBlocksHold(kernels::testing::RandomLinear({.n = 16, .k = 96, .bits = 8, .group_size = -1, .sym = true}),
                   GgmlType::kQ8_0, 0.f);
}

TEST(GgmlBlocks, Q4_0BlockLayoutIsLlamaCpps) {
  // Weight j of a block in the low nibble of byte j, weight j + 16 in the high one.
  QuantizedLinear q = kernels::testing::RandomLinear({.n = 1, .k = 32, .bits = 4, .group_size = 32, .sym = true});
  for (int j = 0; j < 32; ++j) q.codes[j] = static_cast<uint8_t>(j % 16);
  q.scales[0] = 0x3C00;  // 1.0
  std::string b;
  ASSERT_TRUE(kernels::AppendGgmlRow(q, GgmlType::kQ4_0, 0, &b).ok());
  ASSERT_EQ(b.size(), 18u);
  EXPECT_EQ(static_cast<uint8_t>(b[0]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(b[1]), 0x3C);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(static_cast<uint8_t>(b[2 + j]), (j % 16) | ((j % 16) << 4)) << j;
}

TEST(GgmlBlocks, CodesTheBlocksCannotHoldAreRefusedNamingTheLinear) {
  const auto why = [](const QuantizedLinear& q) { return std::string(kernels::GgmlTypeFor(q).status().message()); };
  EXPECT_THAT(why(kernels::testing::RandomLinear({.bits = 3})), HasSubstr("mlp.up_proj: bits 3"));
  EXPECT_THAT(why(kernels::testing::RandomLinear({.bits = 8})), HasSubstr("bits 8 with zero points"));
  EXPECT_THAT(why(kernels::testing::RandomLinear({.k = 192, .group_size = 48})), HasSubstr("group_size 48"));
  EXPECT_THAT(why(kernels::testing::RandomLinear({.k = 240, .group_size = -1})), HasSubstr("in_features 240"));
  EXPECT_THAT(why(kernels::testing::RandomLinear({.group_size = 32, .desc_act = true})), HasSubstr("act-order"));
  QuantizedLinear q = kernels::testing::RandomLinear({.sym = true});
  q.zeros[3] = 7;
  EXPECT_THAT(why(q), HasSubstr("symmetric, but zero 7"));
}

// ---- the file, read back

// The parts of a GGUF file the tests look at.
struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, std::string> strings;  // string values
  std::map<std::string, uint64_t> ints;        // u32 / i32 values
  std::map<std::string, bool> bools;
  std::map<std::string, uint64_t> array_sizes;
  std::map<std::string, std::vector<std::string>> string_arrays;
  std::map<std::string, std::vector<int32_t>> i32_arrays;
  struct Info {
    std::vector<uint64_t> dims;
    uint32_t type = 0;
    uint64_t offset = 0;
  };
  std::vector<std::pair<std::string, Info>> tensors;
  uint64_t data_start = 0;
  std::string bytes;

  std::string_view Data(const std::string& name, size_t n) const {
    for (const auto& [t, info] : tensors) {
      if (t == name) return std::string_view(bytes).substr(data_start + info.offset, n);
    }
    ADD_FAILURE() << "no tensor " << name;
    return {};
  }
};

GgufFile ReadGguf(const std::string& path) {
  GgufFile f;
  f.bytes = ReadBytes(path);
  size_t p = 0;
  const auto take = [&](size_t n) {
    EXPECT_LE(p + n, f.bytes.size());
    const size_t at = p;
    p += n;
    return std::string_view(f.bytes).substr(at, n);
  };
  const auto u32 = [&] { uint32_t v; std::memcpy(&v, take(4).data(), 4); return v; };
  const auto i32 = [&] { int32_t v; std::memcpy(&v, take(4).data(), 4); return v; };
  const auto u64 = [&] { uint64_t v; std::memcpy(&v, take(8).data(), 8); return v; };
  const auto str = [&] { const uint64_t n = u64(); return std::string(take(n)); };
  // Value sizes by GGUF type id (strings and arrays handled apart).
  const std::map<uint32_t, size_t> size = {{0, 1}, {1, 1}, {2, 2}, {3, 2}, {4, 4}, {5, 4}, {6, 4}, {7, 1}, {10, 8}, {11, 8}, {12, 8}};
  EXPECT_EQ(take(4), "GGUF");
  f.version = u32();
  const uint64_t n_tensors = u64(), n_kv = u64();
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = str();
    const uint32_t type = u32();
    if (type == 8) {
      f.strings[key] = str();
    } else if (type == 9) {
      const uint32_t elem = u32();
      const uint64_t n = u64();
      f.array_sizes[key] = n;
      for (uint64_t j = 0; j < n; ++j) {
        if (elem == 8) {
          f.string_arrays[key].push_back(str());
        } else if (elem == 5) {
          f.i32_arrays[key].push_back(i32());
        } else {
          take(size.at(elem));
        }
      }
    } else if (type == 4 || type == 5) {
      f.ints[key] = u32();
    } else if (type == 7) {
      f.bools[key] = take(1)[0] != 0;
    } else {
      take(size.at(type));
    }
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufFile::Info info;
    const std::string name = str();
    const uint32_t nd = u32();
    for (uint32_t d = 0; d < nd; ++d) info.dims.push_back(u64());
    info.type = u32();
    info.offset = u64();
    f.tensors.emplace_back(name, info);
  }
  f.data_start = (p + 31) / 32 * 32;
  return f;
}

GgufVocab TestVocab(int n) {
  GgufVocab v;
  for (int i = 0; i < n; ++i) {
    v.tokens.push_back(i == 0 ? "<unk>" : absl::StrCat("t", i));
    v.scores.push_back(-static_cast<float>(i));
    v.types.push_back(i == 0 ? 2 : 1);
  }
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  return v;
}

QuantSpec Spec(int bits, int group_size, bool sym) {
  return QuantSpec{.method = "rtn", .bits = bits, .group_size = group_size, .sym = sym, .desc_act = false,
                   .damp_percent = 0.01, .static_groups = false, .true_sequential = true, .format = "gptq"};
}

// An artifact of tiny-llama (RTN of its weights) and its GGUF export.
struct Exported {
  TempDir tmp;
  std::vector<kernels::LayerResult> layers;
  ModelConfig config;  // as the artifact's config.json reads back
  std::string gguf;
  absl::Status status;
};
// `edit`, when given, relabels the model (its config, parsed and raw) and
// changes the layers before the artifact is written.
using ModelEdit = std::function<void(ModelConfig&, std::vector<kernels::LayerResult>&)>;
void Export(const QuantSpec& spec, const GgufVocab& vocab, Exported* e, const ModelEdit& edit = nullptr) {
  Fixture f = Load();
  e->layers = MakeLayers(f, spec);
  if (edit) edit(f.cfg, e->layers);
  const std::string art = e->tmp.Path("art");
  const absl::Status written = WriteArtifact(kModel, f.cfg, spec, e->layers, art, nullptr);
  ASSERT_TRUE(written.ok()) << written;
  absl::StatusOr<LoadedArtifact> a = OpenArtifact(art);
  ASSERT_TRUE(a.ok()) << a.status();
  e->config = a->config;
  e->gguf = e->tmp.Path("model.gguf");
  e->status = WriteGguf(*a, vocab, e->gguf);
}
void Export(const QuantSpec& spec, int vocab, Exported* e) { Export(spec, TestVocab(vocab), e); }

// Llama 3.1's RoPE scaling with a short original context (factor 8, low 1,
// high 4, original_max_position_embeddings 256).
void UseLlama3Rope(ModelConfig& cfg) {
  cfg.rope.type = "llama3";
  cfg.rope.factor = 8;
  cfg.rope.low_freq_factor = 1;
  cfg.rope.high_freq_factor = 4;
  cfg.rope.original_max_position_embeddings = 256;
  cfg.raw["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                                {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                {"original_max_position_embeddings", 256}};
}

TEST(Gguf, TinyLlamaQ4_0HeaderMetadataAndTensors) {
  Exported e;
  Export(Spec(4, 128, true), 8000, &e);
  ASSERT_TRUE(e.status.ok()) << e.status;
  const GgufFile g = ReadGguf(e.gguf);
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.strings.at("general.architecture"), "llama");
  EXPECT_EQ(g.strings.at("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g.array_sizes.at("tokenizer.ggml.scores"), 8000u);
  EXPECT_EQ(g.strings.count("tokenizer.ggml.pre"), 0u);
  EXPECT_EQ(g.array_sizes.count("tokenizer.ggml.merges"), 0u);
  EXPECT_EQ(g.ints.at("general.file_type"), 2u);  // mostly Q4_0
  EXPECT_EQ(g.ints.at("llama.block_count"), 4u);
  EXPECT_EQ(g.ints.at("llama.embedding_length"), 256u);
  EXPECT_EQ(g.ints.at("llama.feed_forward_length"), 768u);
  EXPECT_EQ(g.ints.at("llama.attention.head_count"), 4u);
  EXPECT_EQ(g.ints.at("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.ints.at("llama.rope.dimension_count"), 64u);
  EXPECT_EQ(g.ints.at("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(g.array_sizes.at("tokenizer.ggml.tokens"), 8000u);
  ASSERT_EQ(g.tensors.size(), 2u + 4 * 9 + 1);  // embeddings, 9 per layer, final norm, lm_head
  EXPECT_EQ(g.tensors.front().first, "token_embd.weight");
  EXPECT_EQ(g.tensors.back().first, "output.weight");
  uint64_t end = 0;
  for (const auto& [name, info] : g.tensors) {
    SCOPED_TRACE(name);
    EXPECT_EQ(info.offset % 32, 0u);
    EXPECT_GE(info.offset, end) << "overlaps the previous tensor";
    const bool linear = name.find("attn_norm") == std::string::npos && name.find("ffn_norm") == std::string::npos &&
                        name.rfind("blk.", 0) == 0;
    EXPECT_EQ(info.type, linear ? 2u : name.find("norm") != std::string::npos ? 0u : 1u);
    const uint64_t numel = info.dims.size() == 1 ? info.dims[0] : info.dims[0] * info.dims[1];
    end = info.offset + (linear ? numel / 32 * 18 : numel * (info.type == 0 ? 4 : 2));
  }
  EXPECT_EQ(g.data_start + end, g.bytes.size());
  // ffn_down of layer 2: [768 in, 256 out], rows as the artifact's.
  const auto& down = e.layers[2].linears[6];
  const std::string_view blocks = g.Data("blk.2.ffn_down.weight", 256 * 24 * 18);
  const std::vector<float> ref = kernels::DequantizeRef(down);
  for (int64_t r : {0, 77, 255}) {
    const std::vector<float> got = kernels::DequantizeGgmlRow(GgmlType::kQ4_0, blocks.substr(r * 24 * 18, 24 * 18), 768);
    for (int64_t i = 0; i < 768; ++i) ASSERT_EQ(got[i], ref[r * 768 + i]) << r << " " << i;
  }
}

// llama.cpp's RoPE pairs dimensions (2i, 2i + 1) of a head, HF's (i, i + 64 / 2):
// GGUF row 2i + j of head h holds HF row h * 64 + j * 32 + i of q_proj and k_proj.
TEST(Gguf, QueryAndKeyRowsAreInLlamaCppsRopeOrder) {
  Exported e;
  Export(Spec(4, 128, true), 8000, &e);
  ASSERT_TRUE(e.status.ok()) << e.status;
  const GgufFile g = ReadGguf(e.gguf);
  for (const auto& [lin, name, rows] : {std::tuple{0, "blk.1.attn_q.weight", 256}, std::tuple{1, "blk.1.attn_k.weight", 128},
                                        std::tuple{2, "blk.1.attn_v.weight", 128}}) {
    SCOPED_TRACE(name);
    const auto& q = e.layers[1].linears[lin];
    const std::vector<float> ref = kernels::DequantizeRef(q);
    const std::string_view blocks = g.Data(name, static_cast<size_t>(rows) * 8 * 18);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = r / 64, i = (r % 64) / 2, j = r % 2;
      const int64_t hf = lin == 2 ? r : h * 64 + j * 32 + i;  // v keeps its order
      const std::vector<float> got = kernels::DequantizeGgmlRow(GgmlType::kQ4_0, blocks.substr(r * 8 * 18, 8 * 18), 256);
      for (int64_t c = 0; c < 256; ++c) ASSERT_EQ(got[c], ref[hf * 256 + c]) << "row " << r;
    }
  }
}

TEST(Gguf, TwoExportsAreByteIdenticalAndAShortVocabularyIsPadded) {
  Exported a, b;
  Export(Spec(4, 32, false), 7990, &a);
  Export(Spec(4, 32, false), 7990, &b);
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << b.status;
  EXPECT_TRUE(ReadBytes(a.gguf) == ReadBytes(b.gguf));
  const GgufFile g = ReadGguf(a.gguf);
  EXPECT_EQ(g.ints.at("general.file_type"), 3u);  // mostly Q4_1
  EXPECT_EQ(g.array_sizes.at("tokenizer.ggml.tokens"), 8000u);
}

TEST(Gguf, WhatLlamaCppCannotHoldIsRefusedAndLeavesNoFile) {
  for (const auto& [spec, why] : {std::pair{Spec(3, 128, false), "bits 3"}, std::pair{Spec(8, 128, false), "zero points"}}) {
    Exported e;
    Export(spec, 8000, &e);
    EXPECT_EQ(e.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(e.status.message(), HasSubstr(why));
    EXPECT_FALSE(PathExists(e.gguf));
  }
  Exported e;
  Export(Spec(4, 128, true), 8001, &e);
  EXPECT_THAT(e.status.message(), HasSubstr("expected 1 to vocab_size 8000"));
  EXPECT_FALSE(PathExists(e.gguf));
}

// Qwen2 is llama.cpp's `qwen2`: its own keys, q/k/v biases as F32 tensors
// after their weights, and q and k rows in HF's order (its RoPE rotates HF's
// pairs). A llama with attention biases (o_proj's among them), and a qwen2
// with Llama 3.1's RoPE scaling, are refused naming config.json, and no file
// is left.
TEST(Gguf, Qwen2IsWrittenAsLlamaCppsQwen2WithQkvBiasesAndRowsInHfOrder) {
  // tiny-llama relabelled: qwen2 (biases on q, k, v), or llama with
  // attention_bias (biases on q, k, v, o).
  const auto export_as = [](const std::string& model_type, Exported* e, bool llama3_rope = false) {
    Export(Spec(4, 128, true), TestVocab(8000), e, [&](ModelConfig& cfg, std::vector<kernels::LayerResult>& layers) {
      const bool qwen2 = model_type == "qwen2";
      if (llama3_rope) UseLlama3Rope(cfg);
      cfg.model_type = model_type;
      cfg.raw["model_type"] = model_type;
      cfg.attention_bias = true;
      cfg.o_proj_bias = !qwen2;
      if (!qwen2) cfg.raw["attention_bias"] = true;
      for (kernels::LayerResult& l : layers) {
        for (int i = 0; i < (qwen2 ? 3 : 4); ++i) {
          QuantizedLinear& q = l.linears[i];
          for (int64_t r = 0; r < q.out_features; ++r) {
            q.bias.push_back(storage::FloatToHalf(0.25f * static_cast<float>((l.layer * 7 + i * 3 + r) % 64 - 32)));
          }
        }
      }
    });
    ASSERT_EQ(e->config.model_type, model_type);
  };
  Exported e;
  export_as("qwen2", &e);
  ASSERT_TRUE(e.status.ok()) << e.status;
  const GgufFile g = ReadGguf(e.gguf);
  EXPECT_EQ(g.strings.at("general.architecture"), "qwen2");
  EXPECT_EQ(g.ints.at("qwen2.block_count"), 4u);
  EXPECT_EQ(g.ints.at("qwen2.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.ints.count("llama.block_count"), 0u);
  ASSERT_EQ(g.tensors.size(), 2u + 4 * 12 + 1);  // 9 per layer and 3 biases
  EXPECT_EQ(g.tensors[3].first, "blk.0.attn_q.bias");
  for (const auto& [lin, name, rows] : {std::tuple{0, "blk.1.attn_q", 256}, std::tuple{1, "blk.1.attn_k", 128},
                                        std::tuple{2, "blk.1.attn_v", 128}}) {
    SCOPED_TRACE(name);
    const QuantizedLinear& q = e.layers[1].linears[lin];
    const std::vector<float> ref = kernels::DequantizeRef(q);
    const std::string_view blocks = g.Data(std::string(name) + ".weight", static_cast<size_t>(rows) * 8 * 18);
    const std::string_view bias = g.Data(std::string(name) + ".bias", static_cast<size_t>(rows) * 4);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> got = kernels::DequantizeGgmlRow(GgmlType::kQ4_0, blocks.substr(r * 8 * 18, 8 * 18), 256);
      for (int64_t c = 0; c < 256; ++c) ASSERT_EQ(got[c], ref[r * 256 + c]) << "row " << r;
      float b = 0;
      std::memcpy(&b, bias.data() + r * 4, 4);
      ASSERT_EQ(b, storage::HalfToFloat(q.bias[r])) << "bias " << r;
    }
  }
  Exported bad;
  export_as("llama", &bad);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status.message(),
              HasSubstr("config.json: attention_bias / mlp_bias: the GGUF export writes llama linears without biases"));
  EXPECT_FALSE(PathExists(bad.gguf));
  // llama.cpp's qwen2 has no rope_freqs tensor for Llama 3.1's scaling.
  Exported scaled;
  export_as("qwen2", &scaled, /*llama3_rope=*/true);
  EXPECT_EQ(scaled.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scaled.status.message(),
              HasSubstr("config.json: rope type 'llama3': the GGUF export writes default, linear RoPE for qwen2"));
  EXPECT_FALSE(PathExists(scaled.gguf));
}

// Llama 3.1's RoPE scaling (rope_type llama3) is llama.cpp's rope_freqs.weight:
// head_dim / 2 F32 factors, each frequency divided by its own. With theta
// 1e4, head_dim 64 and original_max_position_embeddings 256 (factor 8, low 1,
// high 4), pair i has wavelength 2 pi 10^(i / 8): below 64 (i <= 8) factor 1,
// above 256 (i >= 13) 8, between them the smooth blend, e.g. i = 9: s =
// (256 / 83.787 - 1) / 3 = 0.68512, 1 / ((1 - s) / 8 + s) = 1.38031.
TEST(Gguf, Llama3RopeScalingIsWrittenAsLlamaCppsRopeFreqsTensor) {
  Exported e;
  Export(Spec(4, 128, true), TestVocab(8000), &e, [](ModelConfig& cfg, std::vector<kernels::LayerResult>&) {
    UseLlama3Rope(cfg);
  });
  ASSERT_EQ(e.config.rope.type, "llama3");
  ASSERT_TRUE(e.status.ok()) << e.status;
  const GgufFile g = ReadGguf(e.gguf);
  EXPECT_EQ(g.strings.count("llama.rope.scaling.type"), 0u);  // llama.cpp reads the tensor
  ASSERT_EQ(g.tensors.size(), 3u + 4 * 9 + 1);
  EXPECT_EQ(g.tensors[1].first, "rope_freqs.weight");
  const std::string_view data = g.Data("rope_freqs.weight", 32 * 4);
  std::vector<float> factors(32);
  std::memcpy(factors.data(), data.data(), 32 * 4);
  for (int i = 0; i <= 8; ++i) EXPECT_EQ(factors[i], 1.0f) << i;
  for (int i = 13; i < 32; ++i) EXPECT_EQ(factors[i], 8.0f) << i;
  EXPECT_NEAR(factors[9], 1.38031, 1e-4);
  for (int i = 10; i <= 12; ++i) {
    EXPECT_GT(factors[i], factors[i - 1]) << i;
    EXPECT_LT(factors[i], 8.0f) << i;
  }
}

// ---- the byte-level BPE vocabulary (tokenizer "gpt2")

// A Llama 3-style vocabulary: the 256 byte symbols are not all here, only what
// the writer must carry through: byte-alphabet tokens (U+0120 is "Ġ"), a
// special added token (control), a non-special one (user defined), merges.
GgufVocab TestBpeVocab() {
  GgufVocab v;
  v.model = GgufVocab::Model::kGpt2;
  v.pre = "llama-bpe";
  v.tokens = {"t", "h", "e", "\xC4\xA0", "\xC4\xA0t", "he", "\xC4\xA0the", "\xC4\x8A",
              "<|begin_of_text|>", "<|end_of_text|>", "[[note]]"};
  v.types = {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 4};
  v.merges = {"\xC4\xA0 t", "h e", "\xC4\xA0t he"};
  v.bos_id = 8;
  v.eos_id = 9;
  return v;
}

TEST(Gguf, BpeVocabularyIsWrittenAsLlamaCppsGpt2Tokenizer) {
  const GgufVocab v = TestBpeVocab();
  Exported e;
  Export(Spec(4, 128, true), v, &e);
  ASSERT_TRUE(e.status.ok()) << e.status;
  const GgufFile g = ReadGguf(e.gguf);
  EXPECT_EQ(g.strings.at("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.strings.at("tokenizer.ggml.pre"), "llama-bpe");
  // Tokens and types as given, then padded to vocab_size as llama.cpp's converter pads.
  const std::vector<std::string>& tokens = g.string_arrays.at("tokenizer.ggml.tokens");
  const std::vector<int32_t>& types = g.i32_arrays.at("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 8000u);
  ASSERT_EQ(types.size(), 8000u);
  EXPECT_EQ(std::vector<std::string>(tokens.begin(), tokens.begin() + 11), v.tokens);
  EXPECT_EQ(std::vector<int32_t>(types.begin(), types.begin() + 11), v.types);
  EXPECT_EQ(tokens[11], "[PAD11]");
  EXPECT_EQ(tokens[7999], "[PAD7999]");
  EXPECT_EQ(types[7999], 5);  // unused
  EXPECT_EQ(g.string_arrays.at("tokenizer.ggml.merges"), v.merges);
  EXPECT_EQ(g.array_sizes.count("tokenizer.ggml.scores"), 0u);  // llama.cpp's converter writes none for gpt2
  EXPECT_EQ(g.ints.at("tokenizer.ggml.bos_token_id"), 8u);
  EXPECT_EQ(g.ints.at("tokenizer.ggml.eos_token_id"), 9u);
  EXPECT_EQ(g.ints.count("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(g.bools.at("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(g.bools.at("tokenizer.ggml.add_eos_token"));
}

TEST(Gguf, TwoBpeExportsAreByteIdenticalAndNoBosIsNotAdded) {
  GgufVocab v = TestBpeVocab();
  v.pre = "gpt-2";
  v.bos_id = -1;
  Exported a, b;
  Export(Spec(4, 32, false), v, &a);
  Export(Spec(4, 32, false), v, &b);
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << b.status;
  EXPECT_TRUE(ReadBytes(a.gguf) == ReadBytes(b.gguf));
  const GgufFile g = ReadGguf(a.gguf);
  EXPECT_EQ(g.strings.at("tokenizer.ggml.pre"), "gpt-2");
  EXPECT_EQ(g.ints.count("tokenizer.ggml.bos_token_id"), 0u);
  EXPECT_FALSE(g.bools.at("tokenizer.ggml.add_bos_token"));
}

// A vocabulary not of its model's shape: one line naming what was expected,
// no file.
TEST(Gguf, AVocabularyNotOfItsModelsShapeIsRefusedOnOneLine) {
  const auto bpe = [](const std::function<void(GgufVocab&)>& edit) {
    GgufVocab v = TestBpeVocab();
    edit(v);
    return v;
  };
  const auto spm = [](const std::function<void(GgufVocab&)>& edit) {
    GgufVocab v = TestVocab(100);
    edit(v);
    return v;
  };
  const std::pair<GgufVocab, std::string> cases[] = {
      {bpe([](GgufVocab& v) { v.scores.assign(v.tokens.size(), 0.f); }),
       "11 pieces (11 scores, 11 types), expected 1 to vocab_size 8000, a type each and no scores (gpt2)"},
      {bpe([](GgufVocab& v) { v.types.pop_back(); }), "(0 scores, 10 types)"},
      {bpe([](GgufVocab& v) { v.merges.clear(); }), "a gpt2 vocabulary without merges"},
      {bpe([](GgufVocab& v) { v.pre.clear(); }), "a gpt2 vocabulary without a pre-tokenizer name"},
      {bpe([](GgufVocab& v) { v.merges[1] = "he"; }), "merges[1] is 'he', expected \"A B\""},
      {bpe([](GgufVocab& v) { v.merges[2] = "\xC4\xA0t h e"; }), "merges[2] is '\xC4\xA0t h e', expected \"A B\""},
      {bpe([](GgufVocab& v) { v.merges[0] = " t"; }), "merges[0] is ' t', expected \"A B\""},
      {spm([](GgufVocab& v) { v.merges = {"a b"}; }), "a sentencepiece (llama) vocabulary with merges"},
      {spm([](GgufVocab& v) { v.pre = "llama-bpe"; }), "or a pre-tokenizer name, expected neither"},
  };
  for (const auto& [vocab, why] : cases) {
    SCOPED_TRACE(why);
    Exported e;
    Export(Spec(4, 128, true), vocab, &e);
    EXPECT_EQ(e.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(e.status.message(), HasSubstr("/art: tokenizer: "));
    EXPECT_THAT(e.status.message(), HasSubstr(why));
    EXPECT_EQ(std::string(e.status.message()).find('\n'), std::string::npos);
    EXPECT_FALSE(PathExists(e.gguf));
  }
}

}  // namespace
}  // namespace qf::storage
