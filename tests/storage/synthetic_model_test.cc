// The host side of synthetic models: config from the preset, non-layer
// tensors (statistics, determinism, seeds), and the TensorSource the
// artifact writer reads a synthetic model through.
#include "storage/synthetic_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace qf::storage {
namespace {

using ::testing::HasSubstr;

struct Moments {
  double mean = 0, std = 0, max_abs = 0;
};

Moments HalfMoments(const std::string& bytes) {
  const size_t n = bytes.size() / 2;
  double s = 0, s2 = 0, m = 0;
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    const double v = HalfToFloat(h);
    s += v;
    s2 += v * v;
    m = std::max(m, std::abs(v));
  }
  Moments r;
  r.mean = s / n;
  r.std = std::sqrt(s2 / n - r.mean * r.mean);
  r.max_abs = m;
  return r;
}

TEST(SyntheticModelTest, ConfigComesFromThePresetAndTheLayerCount) {
  auto cfg = LoadModelConfigOrSynthetic("synthetic:llama-70b?layers=4");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->num_hidden_layers, 4);
  EXPECT_EQ(cfg->hidden_size, 8192);
  EXPECT_EQ(cfg->intermediate_size, 28672);
  EXPECT_EQ(cfg->num_key_value_heads, 8);
  EXPECT_EQ(cfg->vocab_size, 128256);
  EXPECT_THAT(LoadModelConfigOrSynthetic("synthetic:gpt2").status().message(), HasSubstr("unknown synthetic preset"));
  EXPECT_FALSE(IsSyntheticModel("/models/synthetic:x"));
}

TEST(SyntheticModelTest, NonLayerTensorsHaveTheStatedStatisticsAndAreDeterministic) {
  SyntheticSpec spec = *ParseSyntheticModel("synthetic:llama-tiny");
  ModelConfig cfg = SyntheticConfig(spec);
  auto e = SyntheticNonLayerTensor(spec, cfg, kSyntheticEmbedding);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), static_cast<size_t>(cfg.vocab_size * cfg.hidden_size * 2));
  Moments m = HalfMoments(*e);
  EXPECT_NEAR(m.mean, 0.0, 1e-3);
  EXPECT_NEAR(m.std, 0.02, 0.001);
  EXPECT_LT(m.max_abs, 0.02 * 3.5);
  EXPECT_EQ(*e, *SyntheticNonLayerTensor(spec, cfg, kSyntheticEmbedding));

  Moments head = HalfMoments(*SyntheticNonLayerTensor(spec, cfg, kSyntheticLmHead));
  EXPECT_NEAR(head.std, 1.0 / 16, 0.003);   // 1 / sqrt(hidden 256)
  Moments norm = HalfMoments(*SyntheticNonLayerTensor(spec, cfg, kSyntheticFinalNorm));
  EXPECT_NEAR(norm.mean, 1.02, 0.05);       // exp(0.2 z): mean exp(0.02)
  EXPECT_GT(norm.std, 0.1);

  SyntheticSpec other = spec;
  other.seed = 1;
  EXPECT_NE(*e, *SyntheticNonLayerTensor(other, cfg, kSyntheticEmbedding));
  EXPECT_THAT(SyntheticNonLayerTensor(spec, cfg, "model.layers.0.mlp.up_proj.weight").status().message(),
              HasSubstr("not a non-layer tensor"));
}

TEST(SyntheticModelTest, SourceListsShapesOfEveryLinearAndBytesOfTheRest) {
  auto src = OpenSyntheticSource("synthetic:llama-tiny?layers=2");
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->names().size(), 3u + 2 * 7);
  auto down = (*src)->Get("model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(down.ok());
  EXPECT_EQ((*down)->shape, (std::vector<int64_t>{256, 768}));
  auto embed = (*src)->Get(kSyntheticEmbedding);
  ASSERT_TRUE(embed.ok());
  EXPECT_EQ((*embed)->nbytes(), size_t{2048} * 256 * 2);
  EXPECT_THAT((*src)->Get("model.layers.2.mlp.down_proj.weight").status().message(), HasSubstr("not found"));
}

TEST(SyntheticModelTest, CalibrationIdsAreInRangeAndSeeded) {
  auto a = SyntheticCalibrationTokens(2048, 5, 3, 17);
  ASSERT_EQ(a.size(), 51u);
  for (int32_t id : a) EXPECT_TRUE(id >= 0 && id < 2048);
  EXPECT_EQ(a, SyntheticCalibrationTokens(2048, 5, 3, 17));
  EXPECT_NE(a, SyntheticCalibrationTokens(2048, 6, 3, 17));
}

}  // namespace
}  // namespace qf::storage
