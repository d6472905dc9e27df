// File: tests/formats/artifact_fixture.h
//
// Layer results for artifact tests, made from the bundled tiny-llama by
// round-to-nearest of its real weights (a plain loop, not the engine), so the
// writers and readers are tested on real shapes and values.
//
//   Fixture f = Load();
//   std::vector<LayerResult> layers = MakeLayers(f, spec);
//   ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, out, nullptr).ok());
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/quant_types.h"
#include "storage/artifact.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"

namespace qf::storage::testing {

using kernels::DenseTensor;
using kernels::LayerResult;
using kernels::QuantizedLinear;

inline const std::string kModel = QF_SOURCE_DIR "/models/tiny-llama";

// Round-to-nearest of one fp16 weight [N, K]: per group of each row,
// asym: scale = (max - min) / maxq, zero = round(-min / scale);
// sym: scale = 2 max|w| / maxq, zero = 2^(bits-1). g_idx from `order` (act-order).
inline QuantizedLinear Rtn(const TensorView& w, std::string name, const QuantSpec& spec, bool permute) {
  const int64_t n = w.shape[0], k = w.shape[1];
  const int gs = spec.group_size == -1 ? static_cast<int>(k) : spec.group_size;
  const int maxq = (1 << spec.bits) - 1;
  QuantizedLinear q;
  q.name = std::move(name);
  q.bits = spec.bits;
  q.group_size = spec.group_size;
  q.sym = spec.sym;
  q.desc_act = spec.desc_act;
  q.out_features = n;
  q.in_features = k;
  q.num_groups = k / gs;
  // Act-order stand-in: channel i joins group perm(i) / gs with perm reversing k.
  q.g_idx.resize(k);
  for (int64_t i = 0; i < k; ++i) q.g_idx[i] = static_cast<int32_t>((permute ? k - 1 - i : i) / gs);
  std::vector<float> wf(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    uint16_t h;
    std::memcpy(&h, w.data.data() + 2 * i, 2);
    wf[i] = HalfToFloat(h);
  }
  q.scales.assign(q.num_groups * n, 0);
  q.zeros.assign(q.num_groups * n, 0);
  q.codes.assign(n * k, 0);
  for (int64_t o = 0; o < n; ++o) {
    for (int64_t g = 0; g < q.num_groups; ++g) {
      float lo = 0.f, hi = 0.f;
      for (int64_t i = 0; i < k; ++i) {
        if (q.g_idx[i] != g) continue;
        lo = std::min(lo, wf[o * k + i]);
        hi = std::max(hi, wf[o * k + i]);
      }
      float scale;
      int zero;
      if (spec.sym) {
        scale = 2.f * std::max(std::fabs(lo), std::fabs(hi)) / maxq;
        zero = (maxq + 1) / 2;
      } else {
        scale = (hi - lo) / maxq;
        zero = scale > 0 ? static_cast<int>(std::lround(-lo / scale)) : 0;
      }
      if (scale <= 0) scale = 1.f;
      const uint16_t s16 = FloatToHalf(scale);
      q.scales[g * n + o] = s16;
      q.zeros[g * n + o] = static_cast<uint8_t>(std::clamp(zero, 0, maxq));
      const float s = HalfToFloat(s16);
      for (int64_t i = 0; i < k; ++i) {
        if (q.g_idx[i] != g) continue;
        const long c = std::lround(wf[o * k + i] / s) + q.zeros[g * n + o];
        q.codes[o * k + i] = static_cast<uint8_t>(std::clamp<long>(c, 0, maxq));
      }
    }
  }
  return q;
}

struct Fixture {
  ModelConfig cfg;
  std::unique_ptr<Checkpoint> src;
};

inline Fixture Load() {
  Fixture f;
  absl::StatusOr<ModelConfig> cfg = LoadModelConfig(kModel);
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  f.cfg = *cfg;
  absl::StatusOr<std::unique_ptr<Checkpoint>> src = Checkpoint::Open(kModel);
  EXPECT_TRUE(src.ok()) << src.status();
  f.src = std::move(*src);
  return f;
}

// One result per layer: RTN of the 7 linears, both norms as dense tensors
// (input_layernorm doubled, as a folded AWQ scale would change it), errors.
inline std::vector<LayerResult> MakeLayers(const Fixture& f, const QuantSpec& spec) {
  std::vector<LayerResult> layers;
  for (int i = 0; i < f.cfg.num_hidden_layers; ++i) {
    LayerResult r;
    r.layer = i;
    for (std::string_view lin : kLinearNames) {
      absl::StatusOr<const TensorView*> w = f.src->Get(absl::StrCat("model.layers.", i, ".", std::string(lin), ".weight"));
      EXPECT_TRUE(w.ok()) << w.status();
      r.linears.push_back(Rtn(**w, std::string(lin), spec, spec.desc_act));
      r.errors.push_back(0.25 * (i + 1) + 0.001 * r.errors.size());
    }
    for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      absl::StatusOr<const TensorView*> t = f.src->Get(absl::StrCat("model.layers.", i, ".", norm));
      EXPECT_TRUE(t.ok()) << t.status();
      DenseTensor d{norm, "F16", (*t)->shape, std::string((*t)->data)};
      if (std::string_view(norm) == "input_layernorm.weight") {
        for (size_t j = 0; j < d.data.size(); j += 2) {
          uint16_t h;
          std::memcpy(&h, d.data.data() + j, 2);
          h = FloatToHalf(2.f * HalfToFloat(h));
          std::memcpy(d.data.data() + j, &h, 2);
        }
      }
      r.dense.push_back(std::move(d));
    }
    layers.push_back(std::move(r));
  }
  return layers;
}

}  // namespace qf::storage::testing
