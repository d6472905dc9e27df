// The fast GPTQ path on the CPU (runs everywhere): the fused kernel's CPU twin
// (the same RecurRow code the CUDA kernel runs) against quantize.cc's
// GptqQuantize bit for bit, the fast factorization within named thresholds,
// the Hessian / triangular inverse / packing helpers, and synthetic models.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "kernels/ref/pack.h"
#include "tests/engine_gpu/gptq_test_util.h"
#include "tests/formats/test_linear.h"
#include "worker/engine/engine_host.h"
#include "worker/engine/gptq_fast.h"
#include "worker/engine/quantize.h"
#include "worker/engine/synthetic.h"
#include "worker/engine/torch_util.h"
#include "worker/engine/weights.h"

namespace qf::worker {
namespace {

using ::testing::HasSubstr;
using testing::GptqCase;
using testing::GptqCases;
using testing::MakeGptqProblem;
using testing::MismatchFraction;

// The fast factorization (one Cholesky of J H J + a triangular inverse) and the
// in-place lazy update change last bits; a code flips only near a rounding
// tie, and a flip shifts the rest of its row a little. An indexing error
// changes a third or more of the codes.
constexpr double kMaxCodeMismatchFast = 0.01;
constexpr double kMaxLossRelDiffFast = 0.02;

void ExpectSameLinear(const kernels::QuantizedLinear& a, const kernels::QuantizedLinear& b) {
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.g_idx, b.g_idx);
  EXPECT_EQ(a.desc_act, b.desc_act);
  EXPECT_EQ(a.num_groups, b.num_groups);
}

class FusedTwinTest : public ::testing::TestWithParam<GptqCase> {};

TEST_P(FusedTwinTest, MatchesGptqQuantizeBitForBit) {
  const GptqCase& c = GetParam();
  const QuantParams p = c.Params();
  auto pb = MakeGptqProblem(72, c.cols, 11 + c.bits, at::kCPU);
  double ref_loss = 0;
  auto ref = GptqQuantize("w", pb.w, {}, pb.h, p, &ref_loss);
  ASSERT_TRUE(ref.ok()) << ref.status();
  for (GptqImpl impl : {GptqImpl::kFused, GptqImpl::kTextbook}) {
    SCOPED_TRACE(impl == GptqImpl::kFused ? "fused twin" : "textbook");
    GptqFastOptions o;
    o.impl = impl;
    o.reference_factorization = true;
    o.exact_lazy_update = true;
    auto r = GptqFast("w", pb.w, pb.h.clone(), p, o, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    const kernels::QuantizedLinear q = ToQuantizedLinear("w", p, *r, 0, pb.w.size(0), {});
    ExpectSameLinear(q, *ref);
    // The next forward's weights (from the result on its device) are a replay's.
    EXPECT_TRUE(at::equal(DequantizeDevice(*r), DequantizeToTensor(q, at::kCPU)));
    const double loss = r->row_loss.sum().item<double>();
    EXPECT_NEAR(loss, ref_loss, 1e-9 * std::abs(ref_loss));
  }
}

TEST_P(FusedTwinTest, FastFactorizationAgreesWithinThreshold) {
  const GptqCase& c = GetParam();
  const QuantParams p = c.Params();
  auto pb = MakeGptqProblem(96, c.cols, 29 + c.bits, at::kCPU);
  double ref_loss = 0;
  auto ref = GptqQuantize("w", pb.w, {}, pb.h, p, &ref_loss);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto r = GptqFast("w", pb.w, pb.h.clone(), p, GptqFastOptions{}, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  kernels::QuantizedLinear q = ToQuantizedLinear("w", p, *r, 0, pb.w.size(0), {});
  at::Tensor a = at::from_blob(q.codes.data(), {static_cast<int64_t>(q.codes.size())}, at::kByte);
  at::Tensor b = at::from_blob(ref->codes.data(), {static_cast<int64_t>(ref->codes.size())}, at::kByte);
  const double mismatch = MismatchFraction(a, b);
  RecordProperty("code_mismatch", std::to_string(mismatch));
  EXPECT_LE(mismatch, kMaxCodeMismatchFast);
  EXPECT_NEAR(r->row_loss.sum().item<double>(), ref_loss, kMaxLossRelDiffFast * ref_loss);
  EXPECT_EQ(q.g_idx, ref->g_idx);
}

INSTANTIATE_TEST_SUITE_P(Cases, FusedTwinTest, ::testing::ValuesIn(GptqCases()),
                         [](const auto& info) { return info.param.name; });

TEST(GptqFastTest, UnsupportedBlockWidthIsRejected) {
  auto pb = MakeGptqProblem(8, 128, 1, at::kCPU);
  QuantParams p;
  p.block_size = 96;
  auto r = GptqFast("model.layers.0.mlp.up_proj", pb.w, pb.h, p, GptqFastOptions{}, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("model.layers.0.mlp.up_proj: block_size 96"));
}

TEST(InverseCholeskyFastTest, MatchesThreeStepReference) {
  auto pb = MakeGptqProblem(1, 300, 5, at::kCPU);
  pb.h.diagonal().masked_fill_(pb.h.diagonal() == 0, 1);
  auto ref = InverseCholesky("h", pb.h.clone(), 0.01);
  auto fast = InverseCholeskyFast("h", pb.h.clone(), 0.01);
  ASSERT_TRUE(ref.ok() && fast.ok());
  EXPECT_TRUE(at::equal(at::triu(*fast), *fast));   // upper triangular
  const double rel = (*fast - *ref).abs().max().item<double>() / ref->abs().max().item<double>();
  EXPECT_LT(rel, 1e-4);
}

TEST(InverseCholeskyFastTest, NotPositiveDefiniteGetsMoreDampingNeverNaN) {
  // One negative diagonal entry: damp 0.01 leaves it negative, 0.1 fixes it.
  at::Tensor h = at::eye(256, at::kFloat);
  h[0][0] = -0.05;
  auto u = InverseCholeskyFast("model.layers.3.mlp.down_proj", h, 0.01);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(at::isfinite(*u).all().item<bool>());
  // Negative definite: no damping up to 1.0 helps, and the error names the tensor.
  auto bad = InverseCholeskyFast("model.layers.3.mlp.down_proj", -at::eye(64, at::kFloat), 0.01);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model.layers.3.mlp.down_proj"));
}

TEST(LowerTriangularInverseTest, RecursiveBlocksInvert) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const int64_t n = 2300;   // above the 2048 leaf: one split
  at::Tensor l = at::tril(at::randn({n, n}, gen, at::kFloat)) * 0.01 + at::eye(n, at::kFloat);
  at::Tensor x = LowerTriangularInverse(l);
  EXPECT_TRUE(at::equal(at::tril(x), x));
  EXPECT_LT((at::matmul(l, x) - at::eye(n, at::kFloat)).abs().max().item<double>(), 1e-4);
}

TEST(HessianAccumulatorTest, UpperTilesGiveTheFullSymmetricProduct) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  const int64_t n = 300;   // tiles 128, 128, 44
  HessianAccumulator acc(n, at::kCPU, 128);
  at::Tensor x1 = at::randn({200, n}, gen, at::kFloat), x2 = at::randn({57, n}, gen, at::kFloat);
  acc.Add(x1);
  acc.Add(x2);
  EXPECT_EQ(acc.rows(), 257);
  at::Tensor h = acc.Finish(2.0 / 257);
  at::Tensor x = at::cat({x1, x2}, 0).to(at::kDouble);
  at::Tensor ref = at::matmul(x.t(), x) * (2.0 / 257);
  EXPECT_LT((h.to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(at::equal(h, h.t()));
}

TEST(PackGptqQweightTest, MatchesReferencePackerForEveryWidth) {
  at::Generator gen = at::detail::createCPUGenerator(6);
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(bits);
    const int64_t n = 64, k = 256;
    at::Tensor codes = at::randint(0, 1 << bits, {n, k}, gen, at::kLong).to(at::kByte);
    kernels::QuantizedLinear q;
    q.name = "w";
    q.bits = bits;
    q.group_size = 128;
    q.out_features = n;
    q.in_features = k;
    q.num_groups = 2;
    q.codes.assign(codes.data_ptr<uint8_t>(), codes.data_ptr<uint8_t>() + codes.numel());
    q.scales.assign(2 * n, 0x3c00);   // 1.0
    q.zeros.assign(2 * n, 1);
    for (int64_t i = 0; i < k; ++i) q.g_idx.push_back(static_cast<int32_t>(i / 128));
    auto ref = kernels::PackGptqV1(q);
    ASSERT_TRUE(ref.ok()) << ref.status();
    auto packed = PackGptqQweightDevice(codes, bits);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_EQ(packed->size(0), k * bits / 32);
    ASSERT_EQ(packed->size(1), n);
    std::string bytes(static_cast<const char*>(packed->data_ptr()), packed->numel() * 4);
    EXPECT_EQ(bytes, ref->qweight.data);
  }
  EXPECT_FALSE(PackGptqQweightDevice(at::zeros({4, 40}, at::kByte), 4).ok());
  EXPECT_FALSE(PackGptqQweightDevice(at::zeros({4, 64}, at::kByte), 5).ok());
}

// ---------------------------------------------------------------- synthetic

// The weights every forward and replay sees: the dequantization contract of
// kernels/quant_types.h bit for bit (DequantizeRef's scalar loop), whether the
// groups are runs of channels (broadcast in place) or act-order's (gathered
// by g_idx); an act-order linear whose g_idx happens to be in order takes the
// broadcast.
TEST(DequantizeToTensorTest, IsTheReferenceBitForBit) {
  using kernels::testing::LinearShape;
  struct Case { const char* what; LinearShape s; bool sorted_g_idx; };
  const Case cases[] = {
      {"g128 asym", {.n = 96, .k = 512, .bits = 4, .group_size = 128}, false},
      {"g32 sym 3-bit", {.n = 40, .k = 256, .bits = 3, .group_size = 32, .sym = true}, false},
      {"one group per row", {.n = 33, .k = 200, .bits = 4, .group_size = -1}, false},
      {"act-order", {.n = 64, .k = 256, .bits = 4, .group_size = 64, .desc_act = true}, false},
      {"act-order, g_idx in order", {.n = 24, .k = 256, .bits = 4, .group_size = 64, .desc_act = true}, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    kernels::QuantizedLinear q = kernels::testing::RandomLinear(c.s);
    if (c.sorted_g_idx) std::sort(q.g_idx.begin(), q.g_idx.end());
    const std::vector<float> ref = kernels::DequantizeRef(q);
    ASSERT_EQ(ref.size(), static_cast<size_t>(c.s.n * c.s.k));
    const at::Tensor w = DequantizeToTensor(q, at::kCPU);
    ASSERT_EQ(w.sizes(), at::IntArrayRef({c.s.n, c.s.k}));
    ASSERT_TRUE(w.is_contiguous());
    EXPECT_EQ(std::memcmp(w.data_ptr<float>(), ref.data(), ref.size() * sizeof(float)), 0);
  }
}

TEST(SyntheticTest, ParsesPresetsAndParameters) {
  auto s = ParseSyntheticModel("synthetic:llama-70b?layers=4&seed=9");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->preset, "llama-70b");
  EXPECT_EQ(s->layers, 4);
  EXPECT_EQ(s->seed, 9u);
  storage::ModelConfig cfg = SyntheticConfig(*s);
  EXPECT_EQ(cfg.hidden_size, 8192);
  EXPECT_EQ(cfg.intermediate_size, 28672);
  EXPECT_EQ(cfg.num_hidden_layers, 4);
  EXPECT_EQ(cfg.num_attention_heads, 64);
  EXPECT_EQ(cfg.num_key_value_heads, 8);
  EXPECT_EQ(cfg.vocab_size, 128256);
  EXPECT_EQ(cfg.rope.type, "llama3");
  auto full = ParseSyntheticModel("synthetic:llama-70b");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(SyntheticConfig(*full).num_hidden_layers, 80);
  EXPECT_EQ(SyntheticConfig(*ParseSyntheticModel("synthetic:llama-8b")).hidden_size, 4096);
}

TEST(SyntheticTest, BadNamesAreOneLineErrors) {
  EXPECT_THAT(ParseSyntheticModel("synthetic:llama-7b").status().message(),
              HasSubstr("unknown synthetic preset 'llama-7b', expected one of llama-70b, llama-8b, llama-tiny"));
  EXPECT_THAT(ParseSyntheticModel("synthetic:llama-70b?layers=0").status().message(),
              HasSubstr("layers '0', expected a number in [1, 100000]"));
  EXPECT_THAT(ParseSyntheticModel("synthetic:llama-70b?depth=3").status().message(),
              HasSubstr("unknown parameter 'depth'"));
  EXPECT_THAT(ParseSyntheticModel("synthetic:llama-70b?layers").status().message(), HasSubstr("not key=value"));
}

TEST(SyntheticTest, LayersAreDeterministicAndOrderIndependent) {
  auto a = SyntheticWeights::Open("synthetic:llama-tiny", at::kCPU);
  auto b = SyntheticWeights::Open("synthetic:llama-tiny", at::kCPU);
  ASSERT_TRUE(a.ok() && b.ok());
  auto b2 = (*b)->Layer(2);   // b reads layer 2 first
  auto a1 = (*a)->Layer(1), b1 = (*b)->Layer(1);
  ASSERT_TRUE(a1.ok() && b1.ok() && b2.ok());
  for (int id = 0; id < kNumLinears; ++id) {
    EXPECT_TRUE(at::equal(a1->lin[id].w, b1->lin[id].w)) << kLinearNames[id];
    EXPECT_FALSE(at::equal(a1->lin[id].w, b2->lin[id].w)) << kLinearNames[id];
  }
  EXPECT_EQ(a1->lin[kGate].w.size(0), 768);
  EXPECT_EQ(a1->lin[kDown].w.size(1), 768);
  EXPECT_EQ(a1->lin[kK].w.size(0), 2 * 64);
  // Weights are fp16 values.
  EXPECT_TRUE(at::equal(a1->lin[kUp].w, a1->lin[kUp].w.to(at::kHalf).to(at::kFloat)));
  // A few large-magnitude input channels.
  at::Tensor norm = a1->input_norm;
  const double median = norm.median().item<double>();
  const int64_t large = (norm > 8 * median).sum().item<int64_t>();
  EXPECT_GE(large, 1);
  EXPECT_LE(large, 4);
  EXPECT_EQ((*a)->Layer(4).status().code(), absl::StatusCode::kOutOfRange);
  // The dense norm carried into results is the forward's norm.
  auto d = (*a)->Dense("model.layers.1.input_layernorm.weight", "input_layernorm.weight");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dtype, "F16");
  at::Tensor back = at::from_blob(d->data.data(), {256}, at::kHalf).to(at::kFloat);
  EXPECT_TRUE(at::equal(back, norm));
  EXPECT_EQ((*a)->Dense("model.embed_tokens.weight", "x").status().code(), absl::StatusCode::kNotFound);
}

TEST(SyntheticTest, CalibrationTokensAreStableAndInRange) {
  auto a = SyntheticCalibrationTokens(2048, 0, 4, 32);
  auto b = SyntheticCalibrationTokens(2048, 0, 4, 32);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 128u);
  for (int32_t id : a) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 2048);
  }
  EXPECT_NE(a, SyntheticCalibrationTokens(2048, 1, 4, 32));
}

TEST(GptqLayerFastTest, AdvanceEqualsAReplayOfTheResult) {
  // The staged true-sequential layer keeps the attention output and the
  // residual; its advance must be what LayerForward computes from the result.
  for (bool sequential : {true, false}) {
    SCOPED_TRACE(sequential ? "true-sequential" : "all at once");
    auto model = SyntheticWeights::Open("synthetic:llama-tiny", at::kCPU);
    ASSERT_TRUE(model.ok());
    const storage::ModelConfig& cfg = (*model)->config();
    auto embed = (*model)->Embedding();
    ASSERT_TRUE(embed.ok());
    std::vector<int32_t> ids = SyntheticCalibrationTokens(cfg.vocab_size, 1, 20, 32);   // 16 + 4 samples
    at::Tensor idx = at::from_blob(ids.data(), {640}, at::kInt).to(at::kLong);
    at::Tensor acts = embed->index_select(0, idx).view({20, 32, cfg.hidden_size});
    at::Tensor before = acts.clone();
    RopeTables rope = MakeRope(cfg, 32, at::kCPU);
    QuantParams p;
    p.true_sequential = sequential;
    auto lw = (*model)->Layer(1);
    ASSERT_TRUE(lw.ok());
    auto r = GptqLayerFast(1, *lw, acts, cfg, rope, p, GptqFastOptions{}, /*advance=*/true, nullptr, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      auto d = (*model)->Dense(LayerTensorName(1, n), n);
      ASSERT_TRUE(d.ok());
      r->dense.push_back(*d);
    }
    auto lwq = WeightsFromResult(*r, at::kCPU);
    ASSERT_TRUE(lwq.ok()) << lwq.status();
    for (int64_t b = 0; b < 20; b += 16) {
      at::Tensor xb = before.narrow(0, b, std::min<int64_t>(16, 20 - b));
      xb.copy_(LayerForward(xb, *lwq, cfg, rope, nullptr, Tap::kNone));
    }
    EXPECT_TRUE(at::equal(acts, before));
    EXPECT_GT(acts.abs().sum().item<double>(), 0);
  }
}

TEST(SyntheticTest, SessionQuantizesASyntheticModelOnTheCpu) {
  auto engine = Engine::Load();
  ASSERT_TRUE(engine.ok()) << engine.status();
  SessionSpec spec;
  spec.model_dir = "synthetic:llama-tiny?layers=2";
  spec.samples = 4;
  spec.seqlen = 32;   // synthetic calibration tokens: none given
  auto s = (*engine)->OpenSession(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->num_layers(), 2);
  for (int i = 0; i < 2; ++i) {
    auto r = (*s)->QuantizeLayer(i, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->linears.size(), static_cast<size_t>(kNumLinears));
    EXPECT_EQ(r->linears[kDown].in_features, 768);
    for (double e : r->errors) {
      EXPECT_TRUE(std::isfinite(e));
      EXPECT_GT(e, 0);
    }
    ASSERT_EQ(r->dense.size(), 2u);
    EXPECT_EQ(r->dense[0].dtype, "F16");
  }
  spec.model_dir = "synthetic:nope";
  auto bad = (*engine)->OpenSession(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown synthetic preset 'nope'"));
}

}  // namespace
}  // namespace qf::worker
