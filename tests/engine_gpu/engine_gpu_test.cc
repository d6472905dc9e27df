// The fast GPTQ path on a CUDA device (label gpu; every test skips itself
// without one): the fused kernel against the ATen path on the same GPU bit for
// bit, the GPU against the CPU reference within named thresholds, tensor-core
// Hessians, synthetic models, and GPU sessions (determinism, agreement).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#if defined(QF_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tests/engine_gpu/gptq_test_util.h"
#include "worker/engine/engine_host.h"
#include "worker/engine/gptq_fast.h"
#include "worker/engine/quantize.h"
#include "worker/engine/synthetic.h"
#include "worker/engine/torch_util.h"

namespace qf::worker {
namespace {

using ::testing::HasSubstr;
using testing::GptqCase;
using testing::GptqCases;
using testing::MakeGptqProblem;
using testing::MismatchFraction;

// GPU against the CPU reference: cuBLAS and MKL sum the lazy-update GEMMs in
// different orders, and the default path factorizes differently; codes differ
// only where a value sits on a rounding tie (and along the rest of its row).
constexpr double kMaxCodeMismatchGpuVsCpu = 0.01;
constexpr double kMaxLossRelDiffGpuVsCpu = 0.02;
// A whole tiny-llama session (4 layers, 8 x 64 tokens) on the GPU against the
// CPU. A flipped code feeds a different error into the rest of its row and a
// changed layer changes the next one's inputs, so code differences cascade
// through the session while the GPTQ loss (what GPTQ minimizes) stays put.
// Seen on an H100: float32 18.4% of codes, summed loss +0.10%; fp16 22.8%,
// +0.11% (and the artifacts' perplexities within 0.01%). The summed loss is
// the criterion; the code fraction only bounds gross breakage.
constexpr double kMaxSessionCodeMismatchFp32 = 0.30;
constexpr double kMaxSessionLossRelDiffFp32 = 0.01;
constexpr double kMaxSessionCodeMismatchFp16 = 0.30;
constexpr double kMaxSessionLossRelDiffFp16 = 0.01;

const std::string kModel = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";

#define SKIP_WITHOUT_GPU()                                             \
  do {                                                                 \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process"; \
  } while (0)

const at::Device kGpu(at::kCUDA, 0);

std::vector<uint8_t> Codes(const GptqDeviceResult& r) {
  at::Tensor c = r.codes.to(at::kCPU).contiguous();
  return std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
}

class GpuCaseTest : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GpuCaseTest, FusedKernelMatchesAtenPathOnTheSameGpu) {
  SKIP_WITHOUT_GPU();
  const GptqCase& c = GetParam();
  const QuantParams p = c.Params();
  // Enough rows for several CTAs, not a multiple of the CTA size.
  auto pb = MakeGptqProblem(300, c.cols, 41 + c.bits, kGpu);
  double ref_loss = 0;
  auto ref = GptqQuantize("w", pb.w, {}, pb.h, p, &ref_loss);
  ASSERT_TRUE(ref.ok()) << ref.status();
  GptqFastOptions o;
  o.reference_factorization = true;
  o.exact_lazy_update = true;
  auto r = GptqFast("w", pb.w, pb.h.clone(), p, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  kernels::QuantizedLinear q = ToQuantizedLinear("w", p, *r, 0, pb.w.size(0), {});
  EXPECT_EQ(q.codes, ref->codes);
  EXPECT_EQ(q.scales, ref->scales);
  EXPECT_EQ(q.zeros, ref->zeros);
  EXPECT_EQ(q.g_idx, ref->g_idx);
  EXPECT_NEAR(r->row_loss.sum().item<double>(), ref_loss, 1e-9 * ref_loss);
}

TEST_P(GpuCaseTest, DefaultGpuPathAgreesWithCpuReference) {
  SKIP_WITHOUT_GPU();
  const GptqCase& c = GetParam();
  const QuantParams p = c.Params();
  auto pb = MakeGptqProblem(300, c.cols, 53 + c.bits, at::kCPU);
  double ref_loss = 0;
  auto ref = GptqQuantize("w", pb.w, {}, pb.h, p, &ref_loss);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto r = GptqFast("w", pb.w.to(kGpu), pb.h.to(kGpu), p, GptqFastOptions{}, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<uint8_t> codes = Codes(*r);
  at::Tensor a = at::from_blob(codes.data(), {static_cast<int64_t>(codes.size())}, at::kByte);
  at::Tensor b = at::from_blob(ref->codes.data(), {static_cast<int64_t>(ref->codes.size())}, at::kByte);
  const double mismatch = MismatchFraction(a, b);
  RecordProperty("code_mismatch", std::to_string(mismatch));
  EXPECT_LE(mismatch, kMaxCodeMismatchGpuVsCpu);
  EXPECT_NEAR(r->row_loss.sum().item<double>(), ref_loss, kMaxLossRelDiffGpuVsCpu * ref_loss);
  // The device dequantization is the host one's.
  kernels::QuantizedLinear q = ToQuantizedLinear("w", p, *r, 0, pb.w.size(0), {});
  EXPECT_TRUE(at::equal(DequantizeDevice(*r).to(at::kCPU), DequantizeToTensor(q, at::kCPU)));
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuCaseTest, ::testing::ValuesIn(GptqCases()),
                         [](const auto& info) { return info.param.name; });

TEST(GpuHessianTest, HalfInputsAccumulateInFloat32) {
  SKIP_WITHOUT_GPU();
  at::Generator gen = at::detail::createCPUGenerator(8);
  const int64_t n = 1000;   // tiles 256 x 4 (last 232)
  at::Tensor x = (at::randn({4096, n}, gen, at::kFloat) * 30).to(at::kHalf);
  HessianAccumulator acc(n, kGpu, 256);
  acc.Add(x.narrow(0, 0, 3000).to(kGpu));
  acc.Add(x.narrow(0, 3000, 1096).to(kGpu));
  at::Tensor h = acc.Finish(2.0 / 4096).to(at::kCPU);
  at::Tensor xd = x.to(at::kDouble);
  at::Tensor ref = at::matmul(xd.t(), xd) * (2.0 / 4096);
  EXPECT_LT((h.to(at::kDouble) - ref).norm().item<double>() / ref.norm().item<double>(), 1e-5);
  EXPECT_TRUE(at::equal(h, h.t()));
}

TEST(GpuFactorizationTest, MatchesCpuReferenceAndHandlesIndefiniteH) {
  SKIP_WITHOUT_GPU();
  auto pb = MakeGptqProblem(1, 2500, 9, at::kCPU);
  pb.h.diagonal().masked_fill_(pb.h.diagonal() == 0, 1);
  auto ref = InverseCholesky("h", pb.h.clone(), 0.01);
  auto fast = InverseCholeskyFast("h", pb.h.to(kGpu), 0.01);
  ASSERT_TRUE(ref.ok() && fast.ok());
  const double rel = (fast->to(at::kCPU) - *ref).abs().max().item<double>() / ref->abs().max().item<double>();
  EXPECT_LT(rel, 1e-3);
  at::Tensor h = at::eye(512, at::TensorOptions().dtype(at::kFloat).device(kGpu));
  h[0][0] = -0.05;
  auto u = InverseCholeskyFast("model.layers.0.mlp.down_proj", h, 0.01);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(at::isfinite(*u).all().item<bool>());
}

TEST(GpuSyntheticTest, DeterministicOnTheDevice) {
  SKIP_WITHOUT_GPU();
  auto a = SyntheticWeights::Open("synthetic:llama-tiny", kGpu);
  auto b = SyntheticWeights::Open("synthetic:llama-tiny", kGpu);
  ASSERT_TRUE(a.ok() && b.ok());
  auto la = (*a)->Layer(3), lb = (*b)->Layer(3);
  ASSERT_TRUE(la.ok() && lb.ok());
  for (int id = 0; id < kNumLinears; ++id) EXPECT_TRUE(at::equal(la->lin[id].w, lb->lin[id].w));
  EXPECT_TRUE(la->lin[kQ].w.is_cuda());
}

// ---------------------------------------------------------------- sessions

class GpuSessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!at::hasCUDA()) return;
    auto e = Engine::Load();
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static SessionSpec Spec(const std::string& model, const std::string& device, bool act_order) {
    SessionSpec s;
    s.model_dir = model;
    s.device = device;
    s.samples = 8;
    s.seqlen = 64;
    s.quant.act_order = act_order;
    if (model == kModel) s.calib_tokens = SyntheticCalibrationTokens(8000, 3, s.samples, s.seqlen);
    return s;
  }
  static std::vector<kernels::LayerResult> Run(const SessionSpec& spec) {
    std::vector<kernels::LayerResult> out;
    auto s = engine_->OpenSession(spec);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return out;
    for (int i = 0; i < (*s)->num_layers(); ++i) {
      auto r = (*s)->QuantizeLayer(i, nullptr);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) return out;
      out.push_back(std::move(*r));
    }
    return out;
  }
  static Engine* engine_;
};
Engine* GpuSessionTest::engine_ = nullptr;

TEST_F(GpuSessionTest, TwoGpuRunsGiveIdenticalResults) {
  SKIP_WITHOUT_GPU();
  for (bool act_order : {false, true}) {
    SCOPED_TRACE(act_order ? "act-order" : "natural order");
    auto a = Run(Spec(kModel, "cuda", act_order));
    auto b = Run(Spec(kModel, "cuda", act_order));
    ASSERT_EQ(a.size(), 4u);
    ASSERT_EQ(a.size(), b.size());
    for (size_t l = 0; l < a.size(); ++l) {
      for (size_t i = 0; i < a[l].linears.size(); ++i) {
        EXPECT_EQ(a[l].linears[i].codes, b[l].linears[i].codes) << l << " " << a[l].linears[i].name;
        EXPECT_EQ(a[l].linears[i].scales, b[l].linears[i].scales);
        EXPECT_EQ(a[l].linears[i].zeros, b[l].linears[i].zeros);
        EXPECT_EQ(a[l].linears[i].g_idx, b[l].linears[i].g_idx);
      }
    }
  }
}

TEST_F(GpuSessionTest, ReplayOfACommittedLayerGivesTheSameNextLayer) {
  SKIP_WITHOUT_GPU();
  // QuantizeLayer moves the activations itself (GptqLayerFast's advance);
  // ApplyLayer replays the result through LayerForward: the same bits.
  for (bool act_order : {false, true}) {
    SCOPED_TRACE(act_order ? "act-order" : "natural order");
    auto a = engine_->OpenSession(Spec(kModel, "cuda", act_order));
    ASSERT_TRUE(a.ok()) << a.status();
    auto r0 = (*a)->QuantizeLayer(0, nullptr);
    ASSERT_TRUE(r0.ok()) << r0.status();
    auto r1 = (*a)->QuantizeLayer(1, nullptr);
    ASSERT_TRUE(r1.ok()) << r1.status();
    auto b = engine_->OpenSession(Spec(kModel, "cuda", act_order));
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->ApplyLayer(*r0).ok());
    auto r1b = (*b)->QuantizeLayer(1, nullptr);
    ASSERT_TRUE(r1b.ok()) << r1b.status();
    for (size_t i = 0; i < r1->linears.size(); ++i) {
      EXPECT_EQ(r1->linears[i].codes, r1b->linears[i].codes) << r1->linears[i].name;
      EXPECT_EQ(r1->linears[i].scales, r1b->linears[i].scales) << r1->linears[i].name;
    }
  }
}

// Fraction of differing codes over a whole session, and the relative
// difference of the summed GPTQ losses.
struct SessionDiff {
  double code_mismatch = 0;
  double loss_rel = 0;   // of the summed GPTQ losses of all linears
};
SessionDiff Compare(const std::vector<kernels::LayerResult>& a, const std::vector<kernels::LayerResult>& b) {
  SessionDiff d;
  int64_t diff = 0, total = 0;
  double la = 0, lb = 0;
  for (size_t l = 0; l < a.size() && l < b.size(); ++l) {
    for (size_t i = 0; i < a[l].linears.size(); ++i) {
      const auto& x = a[l].linears[i].codes;
      const auto& y = b[l].linears[i].codes;
      for (size_t k = 0; k < x.size() && k < y.size(); ++k) diff += x[k] != y[k];
      total += static_cast<int64_t>(x.size());
      la += a[l].errors[i];
      lb += b[l].errors[i];
    }
  }
  d.code_mismatch = static_cast<double>(diff) / static_cast<double>(std::max<int64_t>(total, 1));
  d.loss_rel = std::abs(la - lb) / lb;
  return d;
}

TEST_F(GpuSessionTest, GpuSessionAgreesWithCpuSession) {
  SKIP_WITHOUT_GPU();
  auto cpu = Run(Spec(kModel, "cpu", false));
  ASSERT_EQ(cpu.size(), 4u);
  // float32 on the GPU: only summation orders and the factorization differ.
  ::setenv("QF_ENGINE_CUDA_DTYPE", "float32", 1);
  auto gpu32 = Run(Spec(kModel, "cuda", false));
  ::unsetenv("QF_ENGINE_CUDA_DTYPE");
  // The checkpoint's fp16 on the GPU (the default).
  auto gpu16 = Run(Spec(kModel, "cuda", false));
  ASSERT_EQ(gpu32.size(), 4u);
  ASSERT_EQ(gpu16.size(), 4u);
  SessionDiff d32 = Compare(gpu32, cpu), d16 = Compare(gpu16, cpu);
  std::printf("tiny-llama GPU vs CPU session: float32 %.4f%% of codes differ (summed loss %+.3f%%); "
              "fp16 %.4f%% (summed loss %+.3f%%)\n", 100 * d32.code_mismatch, 100 * d32.loss_rel,
              100 * d16.code_mismatch, 100 * d16.loss_rel);
  RecordProperty("code_mismatch_fp32", std::to_string(d32.code_mismatch));
  RecordProperty("code_mismatch_fp16", std::to_string(d16.code_mismatch));
  EXPECT_LE(d32.code_mismatch, kMaxSessionCodeMismatchFp32);
  EXPECT_LE(d32.loss_rel, kMaxSessionLossRelDiffFp32);
  EXPECT_LE(d16.code_mismatch, kMaxSessionCodeMismatchFp16);
  EXPECT_LE(d16.loss_rel, kMaxSessionLossRelDiffFp16);
}

TEST_F(GpuSessionTest, SyntheticModelOnTheGpu) {
  SKIP_WITHOUT_GPU();
  auto r = Run(Spec("synthetic:llama-tiny", "cuda", true));
  ASSERT_EQ(r.size(), 4u);
  for (const auto& l : r) {
    for (double e : l.errors) EXPECT_TRUE(std::isfinite(e) && e > 0);
  }
}

TEST_F(GpuSessionTest, AwqRunsAreIdenticalAndReplayGivesTheSameNextLayer) {
  SKIP_WITHOUT_GPU();
  SessionSpec spec = Spec(kModel, "cuda", false);
  spec.quant.method = "awq";
  auto a = Run(spec);
  auto b = Run(spec);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t l = 0; l < a.size(); ++l) {
    for (size_t i = 0; i < a[l].linears.size(); ++i) {
      EXPECT_EQ(a[l].linears[i].codes, b[l].linears[i].codes) << l << " " << a[l].linears[i].name;
      EXPECT_EQ(a[l].linears[i].scales, b[l].linears[i].scales);
      EXPECT_EQ(a[l].linears[i].zeros, b[l].linears[i].zeros);
    }
    ASSERT_EQ(a[l].dense.size(), b[l].dense.size());
    for (size_t i = 0; i < a[l].dense.size(); ++i) EXPECT_EQ(a[l].dense[i].data, b[l].dense[i].data);
  }
  // AWQ's statistics forward is the advance: a replay of layer 0 must leave
  // the same activations, hence the same layer 1.
  auto s = engine_->OpenSession(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->ApplyLayer(a[0]).ok());
  auto r1 = (*s)->QuantizeLayer(1, nullptr);
  ASSERT_TRUE(r1.ok()) << r1.status();
  for (size_t i = 0; i < r1->linears.size(); ++i) EXPECT_EQ(r1->linears[i].codes, a[1].linears[i].codes);
}

// Activations in pinned host memory, streamed through the GPU batch by batch:
// the same bits as device-resident ones, for GPTQ (true-sequential and not),
// AWQ and the replay, and less device memory on 70B shapes.
TEST_F(GpuSessionTest, HostActivationsGiveTheSameBitsAndLessDeviceMemory) {
  SKIP_WITHOUT_GPU();
  auto same = [](const std::vector<kernels::LayerResult>& a, const std::vector<kernels::LayerResult>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t l = 0; l < a.size(); ++l) {
      for (size_t i = 0; i < a[l].linears.size(); ++i) {
        EXPECT_EQ(a[l].linears[i].codes, b[l].linears[i].codes) << l << " " << a[l].linears[i].name;
        EXPECT_EQ(a[l].linears[i].scales, b[l].linears[i].scales) << l << " " << a[l].linears[i].name;
      }
    }
  };
  for (const char* method : {"gptq", "awq"}) {
    for (bool true_sequential : {true, false}) {
      if (std::string(method) == "awq" && !true_sequential) continue;
      SCOPED_TRACE(std::string(method) + (true_sequential ? " true-sequential" : " all at once"));
      SessionSpec spec = Spec(kModel, "cuda", false);
      spec.quant.method = method;
      spec.quant.true_sequential = true_sequential;
      auto dev = Run(spec);
      spec.host_activations = true;
      auto host = Run(spec);
      ASSERT_EQ(dev.size(), 4u);
      same(dev, host);
    }
  }
#if defined(QF_WITH_CUDA)
  // Device memory on two 70B layers, 32 x 2048 tokens (1.07 GB of fp16 activations).
  auto peak = [&](bool host) -> double {
    SessionSpec spec = Spec("synthetic:llama-70b?layers=2", "cuda", false);
    spec.samples = 32;
    spec.seqlen = 2048;
    spec.host_activations = host;
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    auto r = Run(spec);
    EXPECT_EQ(r.size(), 2u);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30);
  };
  const double on_device = peak(false), on_host = peak(true);
  std::printf("70B layers, 32 x 2048 tokens: peak allocated %.2f GiB with device activations, %.2f GiB with host "
              "activations\n", on_device, on_host);
  EXPECT_LT(on_host, on_device - 1.5);   // the activations and the layer's full-size cache stay on the host
#endif
}

// Out of device memory inside a layer: ResourceExhausted naming the layer and
// the size that failed. Afterwards the session either retries the layer (the
// failure came before the activations moved) or refuses with
// FailedPrecondition; it never runs on half-moved activations.
TEST_F(GpuSessionTest, OutOfMemoryNamesTheLayerAndTheSize) {
  SKIP_WITHOUT_GPU();
  SessionSpec spec = Spec("synthetic:llama-70b?layers=2", "cuda", false);
  spec.samples = 4;
  spec.seqlen = 128;
  auto s = engine_->OpenSession(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  // Take the device's memory in 256 MiB blocks until it runs out, then give
  // back 512 MiB: far less than a 70B layer's float32 weights (3.4 GB).
  std::vector<at::Tensor> blockers;
  try {
    for (int i = 0; i < 4096; ++i) blockers.push_back(at::empty({int64_t{256} << 20}, at::TensorOptions().dtype(at::kByte).device(kGpu)));
  } catch (const c10::Error&) {
  }
  ASSERT_GE(blockers.size(), 2u);
  blockers.pop_back();
  blockers.pop_back();
  auto r = (*s)->QuantizeLayer(0, nullptr);
  blockers.clear();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("layer 0"));
  EXPECT_THAT(std::string(r.status().message()), ::testing::ContainsRegex("[0-9.]+ [MG]iB"));
  std::printf("out-of-memory error: %s\n", std::string(r.status().message()).substr(0, 300).c_str());
  auto again = (*s)->QuantizeLayer(0, nullptr);
  EXPECT_TRUE(again.ok() || again.status().code() == absl::StatusCode::kFailedPrecondition) << again.status();
}

}  // namespace
}  // namespace qf::worker
