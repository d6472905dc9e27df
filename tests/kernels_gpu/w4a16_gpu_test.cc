// GPU tests of the fused W4A16 GEMM and repack (kernels/cuda/w4a16.h).
// Skipped when no CUDA device is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/ref/pack.h"
#include "kernels/ref/w4a16_ref.h"
#include "tests/kernels_gpu/gpu_ref.h"
#include "tests/kernels_gpu/w4a16_gpu_fixture.h"
#include "tests/kernels_gpu/w4a16_test_util.h"

namespace qf::kernels {
namespace {

using ::qf::kernels::testing::DeviceArray;
using ::qf::kernels::testing::DeviceLinear;
using ::qf::kernels::testing::H;
using ::qf::kernels::testing::HalfsToFloats;
using ::qf::kernels::testing::LinearSpec;
using ::qf::kernels::testing::RandomActivations;
using ::qf::kernels::testing::RandomLinear;
using ::qf::kernels::testing::RelErr;
using ::qf::kernels::testing::RepackOnDevice;
using ::qf::kernels::testing::Trace;
using ::qf::kernels::testing::W4A16GpuFixture;
using ::testing::HasSubstr;

// Thresholds on ||C - C_ref||_2 / ||C_ref||_2 against the double / fp32
// reference. Error sources: one fp16 rounding per dequantized weight (the
// scale multiply; code - zero is exact), the fp16 rounding of C, and fp32
// accumulation order; together about 3e-4 on random data.
constexpr double kMaxRelErrGptqAsym = 2e-3;
constexpr double kMaxRelErrGptqSym = 2e-3;
constexpr double kMaxRelErrAwq = 2e-3;
// The device reference against the CPU one: both fp32/double, same inputs.
constexpr double kMaxRelErrGpuReference = 1e-5;

constexpr int64_t kSweepM[] = {1, 2, 3, 7, 16, 33, 64, 118, 256};

// The neutral arrays for ReferenceGemmF32.
struct DeviceNeutral {
  explicit DeviceNeutral(const QuantizedLinear& q)
      : codes(q.codes),
        scales(q.scales),
        zeros(q.zeros),
        g_idx(q.g_idx),
        bias(q.bias),
        n(q.out_features),
        k(q.in_features) {}
  testing::RefLinearDevice View() const {
    return {codes.get(), H(scales), zeros.get(), g_idx.get(), bias.size() ? H(bias) : nullptr, n, k};
  }
  DeviceArray<uint8_t> codes;
  DeviceArray<uint16_t> scales;
  DeviceArray<uint8_t> zeros;
  DeviceArray<int32_t> g_idx;
  DeviceArray<uint16_t> bias;
  int64_t n, k;
};

class W4A16GpuTest : public W4A16GpuFixture {
 protected:
  // The fused GEMM on fp16 weights and activations (RunFused); C as floats.
  absl::StatusOr<std::vector<float>> Fused(const DeviceLinear& d, const std::vector<uint16_t>& a, int64_t m,
                                           const char* variant = nullptr,
                                           W4A16GemmArgs::StreamPlan stream_plan = {}, int tile_blocks = 0,
                                           uint16_t* a_buffer = nullptr) {
    absl::StatusOr<std::vector<uint16_t>> c = RunFused(d, a, m, variant, stream_plan, tile_blocks, a_buffer);
    if (!c.ok()) return c.status();
    return HalfsToFloats(*c);
  }
};

double Threshold(const QuantizedLinear& q, bool awq) {
  if (awq) return kMaxRelErrAwq;
  return q.sym ? kMaxRelErrGptqSym : kMaxRelErrGptqAsym;
}

struct RepackCase {
  const char* name;
  LinearSpec spec;
};

TEST_F(W4A16GpuTest, RepackFromGptqV1IsBitExact) {
  const RepackCase cases[] = {
      {"asym_g128", {.n = 384, .k = 512, .group_size = 128}},
      {"sym_g128", {.n = 384, .k = 512, .group_size = 128, .sym = true}},
      {"asym_g32_act_order", {.n = 256, .k = 512, .group_size = 32, .desc_act = true}},
      {"sym_g64_act_order", {.n = 192, .k = 256, .group_size = 64, .sym = true, .desc_act = true}},
      {"asym_channelwise", {.n = 128, .k = 384, .group_size = -1}},
  };
  for (const RepackCase& c : cases) {
    SCOPED_TRACE(c.name);
    const QuantizedLinear q = RandomLinear(c.spec, 21);
    absl::StatusOr<W4A16Weights> ref = RepackW4A16Ref(q);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<testing::DeviceRepack> got = RepackOnDevice(q, W4A16Source::kGptqV1, ref->perm);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->qweight, ref->qweight);
    EXPECT_EQ(got->scales, ref->scales);
    EXPECT_EQ(got->zeros, ref->zeros);
  }
}

TEST_F(W4A16GpuTest, RepackFromAwqGemmIsBitExact) {
  for (int gs : {128, 64}) {
    SCOPED_TRACE(gs);
    const QuantizedLinear q = RandomLinear({.n = 320, .k = 512, .group_size = gs}, 22);
    absl::StatusOr<W4A16Weights> ref = RepackW4A16Ref(q);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<testing::DeviceRepack> got = RepackOnDevice(q, W4A16Source::kAwqGemm, {});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->qweight, ref->qweight);
    EXPECT_EQ(got->scales, ref->scales);
    EXPECT_EQ(got->zeros, ref->zeros);
  }
}

TEST_F(W4A16GpuTest, DeviceReferenceMatchesCpuReference) {
  const QuantizedLinear q = RandomLinear({.n = 192, .k = 320, .group_size = 64, .desc_act = true, .bias = true}, 23);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const int64_t m = 5;
  const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 24);
  absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
  ASSERT_TRUE(want.ok());
  DeviceNeutral dn(q);
  DeviceArray<uint16_t> a_dev(a);
  DeviceArray<float> c(static_cast<size_t>(m * q.out_features));
  CUDA_ASSERT(testing::ReferenceGemmF32(H(a_dev), m, dn.View(), c.get(), nullptr));
  CUDA_ASSERT(cudaDeviceSynchronize());
  EXPECT_LT(RelErr(c.ToHost(), *want), kMaxRelErrGpuReference);
}

// Every m of the sweep against the CPU double reference, asymmetric g128 +
// bias, through every compiled variant (the tuning ones included).
TEST_F(W4A16GpuTest, MatchesCpuReferenceAcrossMAndVariants) {
  const QuantizedLinear q = RandomLinear({.n = 768, .k = 1024, .group_size = 128, .bias = true}, 31);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  for (int64_t m : kSweepM) {
    const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 100 + m);
    absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
    ASSERT_TRUE(want.ok());
    {
      SCOPED_TRACE(Trace("asym_g128_bias", m, *w));
      absl::StatusOr<std::vector<float>> got = Fused(d, a, m);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
    }
    for (const std::string& name : W4A16VariantNames()) {
      SCOPED_TRACE("forced variant " + name + " m=" + std::to_string(m));
      absl::StatusOr<std::vector<float>> got = Fused(d, a, m, name.c_str());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
    }
  }
}

struct GemmCase {
  const char* name;
  LinearSpec spec;
  std::vector<int64_t> ms;
};

// Formats, act-order, and the odd shapes the variant table accepts (n only a
// multiple of 128, k only a multiple of 64, deep k with few n-tiles).
TEST_F(W4A16GpuTest, MatchesCpuReferenceAcrossFormatsAndShapes) {
  const GemmCase cases[] = {
      {"sym_g128_act_order", {.n = 768, .k = 1024, .group_size = 128, .sym = true, .desc_act = true}, {1, 7, 33, 118}},
      {"asym_g32_n384", {.n = 384, .k = 640, .group_size = 32}, {1, 3, 16, 33, 64, 118, 256}},
      {"asym_g64_act_order", {.n = 512, .k = 512, .group_size = 64, .desc_act = true}, {2, 48, 100}},
      {"asym_g128_deep_k", {.n = 256, .k = 4096, .group_size = 128}, {1, 16, 64}},
      // k % 256 != 0: the wgmma tiles at 17-32 rows, two blocks per SM from k = 8192 (Qwen2
      // 72B's down), one below (Qwen2 0.5B's gate_up).
      {"asym_g128_deep_odd_k", {.n = 1024, .k = 16512, .group_size = 128}, {1, 24}},
      {"asym_g128_wide_odd_k", {.n = 8192, .k = 896, .group_size = 128}, {24}},
      {"asym_channelwise", {.n = 1280, .k = 384, .group_size = -1, .bias = true}, {1, 24, 37, 256}},
      {"asym_g64_k576", {.n = 512, .k = 576, .group_size = 64}, {1, 40, 64, 130}},
      {"asym_g32_long_runs", {.n = 512, .k = 1024, .group_size = 32}, {1, 16, 30, 64, 200}},
      {"sym_g128_n128", {.n = 128, .k = 256, .group_size = 128, .sym = true}, {1, 65, 300}},
  };
  for (const GemmCase& c : cases) {
    const QuantizedLinear q = RandomLinear(c.spec, 41);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const DeviceLinear d(*w);
    for (int64_t m : c.ms) {
      SCOPED_TRACE(Trace(c.name, m, *w));
      const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 200 + m);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
      ASSERT_TRUE(want.ok());
      absl::StatusOr<std::vector<float>> got = Fused(d, a, m);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
    }
  }
}

// The Llama-70B projections (k x n) for every m of the sweep, against the
// device fp32 reference.
TEST_F(W4A16GpuTest, MatchesDeviceReferenceOnLlama70bShapes) {
  const std::pair<int64_t, int64_t> shapes[] = {{8192, 10240}, {8192, 8192}, {8192, 57344}, {28672, 8192}};
  for (const auto& [k, n] : shapes) {
    const QuantizedLinear q = RandomLinear({.n = n, .k = k, .group_size = 128}, 51);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const DeviceLinear d(*w);
    const DeviceNeutral dn(q);
    for (int64_t m : kSweepM) {
      SCOPED_TRACE(Trace("llama70b", m, *w));
      const std::vector<uint16_t> a = RandomActivations(m, k, 300 + m);
      DeviceArray<uint16_t> a_dev(a);
      DeviceArray<float> ref(static_cast<size_t>(m * n));
      CUDA_ASSERT(testing::ReferenceGemmF32(H(a_dev), m, dn.View(), ref.get(), nullptr));
      absl::StatusOr<std::vector<float>> got = Fused(d, a, m);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, ref.ToHost()), Threshold(q, false));
    }
  }
}

// The split-K fixup sums in block order and resets its counters: repeated
// calls give the same bits.
TEST_F(W4A16GpuTest, RepeatedCallsAreBitIdentical) {
  const QuantizedLinear q = RandomLinear({.n = 256, .k = 8192, .group_size = 128}, 61);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  for (int64_t m : {1, 9, 16, 40, 100}) {
    SCOPED_TRACE(Trace("deterministic", m, *w));
    const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 400 + m);
    absl::StatusOr<std::vector<float>> first = Fused(d, a, m);
    ASSERT_TRUE(first.ok()) << first.status();
    for (int rep = 0; rep < 3; ++rep) {
      absl::StatusOr<std::vector<float>> again = Fused(d, a, m);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(*again, *first) << "repeat " << rep;
    }
  }
}

bool HasStreamingVariants() {
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9;
}

// Whether the build compiled the fp16 variant of that name (null: the
// table's, always). The tuning variants (kernels/cuda/w4a16/instances/tuning/)
// are left out of builds with QF_W4A16_TUNING_VARIANTS=OFF; the cases that
// name them run where they exist.
bool Compiled(const char* variant) {
  if (variant == nullptr) return true;
  const std::vector<std::string> names = W4A16VariantNames();
  return std::find(names.begin(), names.end(), variant) != names.end();
}

// The weight-streaming variants (sm_90) on their own, forced by name: every
// group size, sym/asym, act-order, bias, n down to one 64-column tile, k not
// a multiple of the ring depth (ragged and prime slice counts), m at the
// edges of each variant's row range and above it (several launches).
TEST_F(W4A16GpuTest, StreamingVariantsMatchCpuReference) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "weight-streaming variants need sm_90";
  struct StreamCase {
    const char* name;
    LinearSpec spec;
  };
  const StreamCase cases[] = {
      {"asym_g128_bias", {.n = 448, .k = 1024, .group_size = 128, .bias = true}},
      {"sym_g32", {.n = 192, .k = 576, .group_size = 32, .sym = true}},
      {"asym_g64_act_order", {.n = 256, .k = 640, .group_size = 64, .desc_act = true}},
      {"asym_channelwise_k352", {.n = 64, .k = 352, .group_size = -1}},
      {"sym_g128_act_order_deep", {.n = 128, .k = 4096, .group_size = 128, .sym = true, .desc_act = true}},
      {"asym_g32_n1280", {.n = 1280, .k = 384, .group_size = 32, .bias = true}},
  };
  struct VariantMs {
    const char* variant;
    std::vector<int64_t> ms;
  };
  const VariantMs variants[] = {
      {"stream_m8", {1, 2, 3, 7, 8, 20}},  {"stream_m16", {1, 9, 16, 33}},     {"stream_m32", {3, 17, 32, 40}},
      {"stream_m64", {1, 33, 64, 118}},    {"stream_m8_reg", {1, 5, 8, 9}},    {"stream_m16_reg", {2, 16}},
      {"stream_m8_d16", {1, 5, 8}},        {"stream_m16_fold", {11, 16}},   {"dec_m8", {1, 2, 7, 8, 20}},
      {"dec_m16", {1, 9, 16, 33}},        {"bal_m8", {1, 2, 7, 8, 20}},    {"dec_m8_s16", {1, 2, 7, 8, 20}},
      {"dec_m8_a16", {1, 3, 8, 20}},      {"dec_m16_a12", {1, 9, 16, 33}}, {"dec_m16_s16", {1, 9, 16, 33}},
      {"dec_m16_s8", {1, 9, 16, 33}},     {"dec_m16_s12", {1, 9, 16, 33}}, {"dec_m16_a8", {1, 9, 16, 33}},
      {"dec_m16_w16a8", {1, 9, 16, 33}},
  };
  for (const StreamCase& c : cases) {
    const QuantizedLinear q = RandomLinear(c.spec, 71);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const DeviceLinear d(*w);
    for (const VariantMs& v : variants) {
      if (!Compiled(v.variant)) continue;
      for (int64_t m : v.ms) {
        absl::StatusOr<std::string> plan = W4A16LaunchDescription(m, w->n, w->k, w->group_size, v.variant);
        ASSERT_TRUE(plan.ok()) << plan.status();
        SCOPED_TRACE(std::string(c.name) + " m=" + std::to_string(m) + " n=" + std::to_string(w->n) +
                     " k=" + std::to_string(w->k) + " " + *plan);
        const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 500 + m);
        absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
        ASSERT_TRUE(want.ok());
        absl::StatusOr<std::vector<float>> got = Fused(d, a, m, v.variant);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
      }
    }
  }
}

// Names of every warpgroup-MMA variant (wg_*), in table order.
std::vector<std::string> WgmmaVariantNames() {
  std::vector<std::string> wg;
  for (const std::string& name : W4A16VariantNames()) {
    if (name.rfind("wg_", 0) == 0) wg.push_back(name);
  }
  return wg;
}

// The warpgroup-MMA variants (sm_90a) forced by name: group sizes that put
// one, two or four groups in a stage, sym/asym, act-order, bias, m below,
// at and above each variant's row count; and the plan that gives every block
// one whole tile (no split-K fixup) when the tiles fill 90-100% of the SMs.
TEST_F(W4A16GpuTest, WgmmaVariantsMatchCpuReference) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "wgmma variants need sm_90";
  struct WgCase {
    const char* name;
    LinearSpec spec;
  };
  const WgCase cases[] = {
      {"asym_g32_bias", {.n = 512, .k = 1024, .group_size = 32, .bias = true}},
      {"sym_g64_act_order", {.n = 512, .k = 768, .group_size = 64, .sym = true, .desc_act = true}},
      {"asym_channelwise", {.n = 256, .k = 1024, .group_size = -1}},
  };
  const std::vector<std::string> wg = WgmmaVariantNames();
  ASSERT_GE(wg.size(), 4u);
  for (const WgCase& c : cases) {
    const QuantizedLinear q = RandomLinear(c.spec, 73);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const DeviceLinear d(*w);
    for (int64_t m : {33, 64, 200}) {
      const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 900 + m);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
      ASSERT_TRUE(want.ok());
      for (const std::string& v : wg) {
        absl::StatusOr<std::string> plan = W4A16LaunchDescription(m, w->n, w->k, w->group_size, v.c_str());
        if (absl::IsUnimplemented(plan.status())) continue;  // n % 256 or k % 128 for this variant
        ASSERT_TRUE(plan.ok()) << plan.status();
        SCOPED_TRACE(std::string(c.name) + " m=" + std::to_string(m) + " " + *plan);
        absl::StatusOr<std::vector<float>> got = Fused(d, a, m, v.c_str());
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
      }
    }
  }
  if (!Compiled("wg_t256_n128_s4")) return;
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const QuantizedLinear q = RandomLinear({.n = 128 * (sms - 4), .k = 256, .group_size = 128, .bias = true}, 79);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  const int64_t m = 200;
  absl::StatusOr<std::string> plan = W4A16LaunchDescription(m, w->n, w->k, w->group_size, "wg_t256_n128_s4");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(*plan, HasSubstr("grid " + std::to_string(sms - 4) + ","));  // one block per tile
  // A k of a few stages runs unsplit too, even with far fewer tiles than SMs.
  absl::StatusOr<std::string> shallow = W4A16LaunchDescription(256, 128, 256, 128, "wg_t256_n128_s4");
  ASSERT_TRUE(shallow.ok()) << shallow.status();
  EXPECT_THAT(*shallow, HasSubstr("grid 1,"));
  const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 7);
  absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
  ASSERT_TRUE(want.ok());
  absl::StatusOr<std::vector<float>> got = Fused(d, a, m, "wg_t256_n128_s4");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
}

// Every wgmma variant forced on a deep k (8192): each block runs tens of
// stages, so the ring wraps many times and blocks share tiles through the
// split-K fixup (the small shapes above give most blocks one stage).
TEST_F(W4A16GpuTest, WgmmaVariantsMatchDeviceReferenceOnDeepRings) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "wgmma variants need sm_90";
  const QuantizedLinear q = RandomLinear({.n = 2048, .k = 8192, .group_size = 128}, 83);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  const DeviceNeutral dn(q);
  for (int64_t m : {1, 64, 200}) {
    const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 500 + m);
    DeviceArray<uint16_t> a_dev(a);
    DeviceArray<float> ref(static_cast<size_t>(m * q.out_features));
    CUDA_ASSERT(testing::ReferenceGemmF32(H(a_dev), m, dn.View(), ref.get(), nullptr));
    const std::vector<float> want = ref.ToHost();
    for (const std::string& v : WgmmaVariantNames()) {
      absl::StatusOr<std::string> plan = W4A16LaunchDescription(m, w->n, w->k, w->group_size, v.c_str());
      ASSERT_TRUE(plan.ok()) << plan.status();
      SCOPED_TRACE("deep m=" + std::to_string(m) + " " + *plan);
      absl::StatusOr<std::vector<float>> got = Fused(d, a, m, v.c_str());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, want), Threshold(q, false));
    }
  }
}

// The TMA variants describe A to the hardware by a tensor map of its address,
// rows and k (w4a16_tensor_map.cu). One buffer that holds activations of
// different m and k in turn, as a caller's reused workspace does, must still
// give every call its own shape's product: a map that outlived its shape
// would read the rows at the old k's stride.
TEST_F(W4A16GpuTest, WgmmaVariantsFollowTheShapeOfOneReusedActivationBuffer) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "wgmma variants need sm_90";
  const QuantizedLinear deep = RandomLinear({.n = 512, .k = 1024, .group_size = 128}, 89);
  const QuantizedLinear shallow = RandomLinear({.n = 512, .k = 768, .group_size = 64}, 97);
  absl::StatusOr<W4A16Weights> w_deep = RepackW4A16Ref(deep);
  absl::StatusOr<W4A16Weights> w_shallow = RepackW4A16Ref(shallow);
  ASSERT_TRUE(w_deep.ok() && w_shallow.ok());
  const DeviceLinear d_deep(*w_deep), d_shallow(*w_shallow);
  DeviceArray<uint16_t> buffer(static_cast<size_t>(200 * 1024));
  struct Call {
    const QuantizedLinear& q;
    const W4A16Weights& w;
    const DeviceLinear& d;
    int64_t m;
  };
  const Call calls[] = {{deep, *w_deep, d_deep, 200},
                        {deep, *w_deep, d_deep, 70},
                        {shallow, *w_shallow, d_shallow, 200},
                        {deep, *w_deep, d_deep, 200},
                        {shallow, *w_shallow, d_shallow, 130}};
  // Each call's activations and CPU reference, once for every variant.
  std::vector<std::vector<uint16_t>> a(std::size(calls));
  std::vector<std::vector<float>> want(std::size(calls));
  for (size_t i = 0; i < std::size(calls); ++i) {
    a[i] = RandomActivations(calls[i].m, calls[i].q.in_features, 1100 + static_cast<uint64_t>(i));
    absl::StatusOr<std::vector<float>> ref = GemmW4A16Ref(a[i], calls[i].m, calls[i].w);
    ASSERT_TRUE(ref.ok()) << ref.status();
    want[i] = *std::move(ref);
  }
  int tma_calls = 0;
  for (const std::string& v : WgmmaVariantNames()) {
    for (size_t i = 0; i < std::size(calls); ++i) {
      const Call& c = calls[i];
      absl::StatusOr<std::string> plan = W4A16LaunchDescription(c.m, c.w.n, c.w.k, c.w.group_size, v.c_str());
      if (absl::IsUnimplemented(plan.status())) continue;
      ASSERT_TRUE(plan.ok()) << plan.status();
      SCOPED_TRACE("call " + std::to_string(i) + " m=" + std::to_string(c.m) + " " + *plan);
      absl::StatusOr<std::vector<float>> got = Fused(c.d, a[i], c.m, v.c_str(), {}, 0, buffer.get());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(*got, want[i]), Threshold(c.q, false));
      if (v.find("pc_") != std::string::npos || v.find("tma") != std::string::npos) ++tma_calls;
    }
  }
  EXPECT_GT(tma_calls, 0) << "no TMA variant took these shapes";
}

// Grids forced on the streaming and decode variants (the bench's --grids):
// every one that fits computes the same product, within the same bound;
// one that does not fit is refused with the grid and the shape, never run.
TEST_F(W4A16GpuTest, ForcedStreamGridsMatchCpuReferenceOrAreRefused) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "weight-streaming variants need sm_90";
  const QuantizedLinear q = RandomLinear({.n = 512, .k = 2048, .group_size = 128, .bias = true}, 91);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  const W4A16GemmArgs::StreamPlan fit[] = {{1, 1, 1}, {2, 3, 2}, {1, 12, 1}, {8, 1, 8}, {4, 2, 4}, {1, 5, 3}};
  for (const char* variant :
       {"dec_m8", "dec_m16", "stream_m8", "dec_m8_s16", "dec_m8_a16", "dec_m16_a12", "dec_m16_s16",
        "dec_m16_s8", "dec_m16_s12", "dec_m16_a8", "dec_m16_w16a8"}) {
    if (!Compiled(variant)) continue;
    for (int64_t m : {1, 7, 16}) {
      const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 900 + m);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
      ASSERT_TRUE(want.ok());
      for (const W4A16GemmArgs::StreamPlan& g : fit) {
        SCOPED_TRACE(absl::StrCat(variant, " m=", m, " wn=", g.wn, " wk=", g.wk, " split=", g.split));
        absl::StatusOr<std::vector<float>> got = Fused(d, a, m, variant, g);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
      }
    }
  }
  const std::vector<uint16_t> a = RandomActivations(1, q.in_features, 99);
  // wn must divide n/64 = 8; split at most 8; the decode kernel has at most 12 warps.
  const std::pair<const char*, W4A16GemmArgs::StreamPlan> bad[] = {
      {"dec_m8", {3, 1, 1}}, {"stream_m8", {1, 1, 9}}, {"dec_m8", {4, 4, 1}}, {"dec_m16", {1, 0, 1}}};
  for (const auto& [variant, g] : bad) {
    if (!Compiled(variant)) continue;
    absl::StatusOr<std::vector<float>> got = Fused(d, a, 1, variant, g);
    ASSERT_FALSE(got.ok()) << variant << " wn=" << g.wn << " wk=" << g.wk << " split=" << g.split;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
    EXPECT_THAT(std::string(got.status().message()),
                HasSubstr(absl::StrCat("forced grid wn=", g.wn, ", wk=", g.wk, ", split=", g.split)));
    EXPECT_THAT(std::string(got.status().message()), HasSubstr("n=512, k=2048"));
  }
  // A grid for a variant that plans no grid is refused, not ignored.
  absl::StatusOr<std::vector<float>> tiled = Fused(d, a, 1, "mb1_bn256_bk256_s3", {1, 1, 1});
  ASSERT_FALSE(tiled.ok());
  EXPECT_EQ(tiled.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tiled.status().message()), HasSubstr("stream_plan (wn=1, wk=1, split=1)"));
}

// The two reductions of split decode grids (w4a16_stream_kernel.cuh,
// StreamReduceStore): the push one (the planner's wherever its region fits)
// and the pull one (stream_plan.pull) compute the same product within the
// bound; they differ only in the order of the fp32 sums, and each gives the
// same bits call after call.
TEST_F(W4A16GpuTest, SplitDecodeGridsPushAndPullAgree) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "decode variants need sm_90";
  const QuantizedLinear q = RandomLinear({.n = 512, .k = 4096, .group_size = 128, .bias = true}, 95);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  // Eight column tiles on a whole device: the planner splits k in clusters.
  absl::StatusOr<std::string> planned = W4A16LaunchDescription(1, 512, 4096, 128, "dec_m8_a16");
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_THAT(*planned, HasSubstr(", push)"));
  const W4A16GemmArgs::StreamPlan grids[] = {{1, 4, 2}, {2, 2, 4}, {1, 1, 8}, {4, 2, 3}};
  for (const char* variant : {"dec_m8_a16", "dec_m8_s16", "dec_m16_a8", "dec_m16_w16a8", "dec_m16_s8"}) {
    for (int64_t m : {1, 5, 16}) {
      const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 950 + m);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
      ASSERT_TRUE(want.ok());
      for (const W4A16GemmArgs::StreamPlan& g : grids) {
        SCOPED_TRACE(absl::StrCat(variant, " m=", m, " wn=", g.wn, " wk=", g.wk, " split=", g.split));
        W4A16GemmArgs::StreamPlan pulled = g;
        pulled.pull = true;
        absl::StatusOr<std::vector<float>> push = Fused(d, a, m, variant, g);
        absl::StatusOr<std::vector<float>> pull = Fused(d, a, m, variant, pulled);
        ASSERT_TRUE(push.ok() && pull.ok()) << push.status() << " " << pull.status();
        EXPECT_LT(RelErr(*push, *want), Threshold(q, false));
        EXPECT_LT(RelErr(*pull, *want), Threshold(q, false));
        EXPECT_LT(RelErr(*push, *pull), 1e-3);
        absl::StatusOr<std::vector<float>> again = Fused(d, a, m, variant, g);
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(*again, *push);
      }
    }
  }
}

// Grids forced on the tiled and wgmma variants (W4A16GemmArgs::tile_blocks,
// the bench's --grids): from one block that walks every tile to the most
// the workspace serves, with block ranges that start and end inside tiles,
// every grid computes the same product within the same bound; a grid out of
// range, or one for a streaming variant, is refused with the range.
TEST_F(W4A16GpuTest, ForcedTileGridsMatchCpuReferenceOrAreRefused) {
  const QuantizedLinear q = RandomLinear({.n = 512, .k = 2048, .group_size = 128, .bias = true}, 93);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w);
  std::vector<std::string> variants = {"mb1_bn128_bk256_s3_2blk", "mb4_bn256_bk128_s3"};
  if (HasStreamingVariants()) {
    variants.insert(variants.end(), {"wg_t64_n128_w1_s4_k128_2blk", "wg_t128_n256_s5", "wg_t256_n128_s6_d2"});
  }
  int ran = 0;
  for (const std::string& variant : variants) {
    for (int64_t m : {5, 64, 130}) {
      absl::StatusOr<W4A16TileGridRange> range = W4A16TileGrids(m, q.out_features, q.in_features, variant.c_str());
      if (absl::IsUnimplemented(range.status())) continue;  // a variant of this build that does not take m
      ASSERT_TRUE(range.ok()) << variant << " m=" << m << ": " << range.status();
      ASSERT_GE(range->max_blocks, 1);
      ASSERT_LE(range->max_blocks, range->units);
      const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 700 + m);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
      ASSERT_TRUE(want.ok());
      std::vector<int64_t> grids = {1, 3, range->tiles, range->max_blocks, range->max_blocks - 1, range->planned};
      for (int64_t g : grids) {
        if (g < 1 || g > range->max_blocks) continue;
        SCOPED_TRACE(absl::StrCat(variant, " m=", m, " tile_blocks=", g, " of ", range->max_blocks));
        absl::StatusOr<std::vector<float>> got = Fused(d, a, m, variant.c_str(), {}, static_cast<int>(g));
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_LT(RelErr(*got, *want), Threshold(q, false));
        ++ran;
      }
      for (int64_t g : {int64_t{-1}, range->max_blocks + 1}) {
        absl::StatusOr<std::vector<float>> got = Fused(d, a, m, variant.c_str(), {}, static_cast<int>(g));
        ASSERT_FALSE(got.ok()) << variant << " tile_blocks=" << g;
        EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(got.status().message()),
                    HasSubstr(absl::StrCat("tile_blocks=", g, " for variant ", variant, ": expected 1..",
                                           range->max_blocks)));
      }
    }
  }
  EXPECT_GT(ran, 0);
  if (!HasStreamingVariants()) return;
  const std::vector<uint16_t> a = RandomActivations(1, q.in_features, 98);
  absl::StatusOr<std::vector<float>> streaming = Fused(d, a, 1, "dec_m8_a16", {}, 4);
  ASSERT_FALSE(streaming.ok());
  EXPECT_EQ(streaming.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(streaming.status().message()), HasSubstr("tile_blocks=4 applies to the tiled and wgmma"));
  EXPECT_FALSE(W4A16TileGrids(1, q.out_features, q.in_features, "dec_m8_a16").ok());
}

// Programmatic dependent launch (W4A16GemmArgs::pdl): a chain of layers,
// each reading the previous one's output, launched back to back on a stream
// and replayed from a CUDA graph. Each kernel starts before its predecessor
// ends; if one read A before the dependency wait it would see the NaN the
// outputs are poisoned with, or stale values, and a wgmma kernel that touched
// the split-K counters early would corrupt its predecessor's fixup. Every
// output must equal, bit for bit, the same chain launched plainly, and layer
// 1 the CPU reference.
TEST_F(W4A16GpuTest, ProgrammaticLaunchChainsMatchPlainLaunches) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "programmatic launch needs sm_90";
  constexpr int kLayers = 6;
  constexpr int64_t kDim = 2048;  // n = k: each layer's output is the next one's input
  std::vector<W4A16Weights> host;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<W4A16Weights> w =
        RepackW4A16Ref(RandomLinear({.n = kDim, .k = kDim, .group_size = 128, .bias = i == 1}, 120 + i));
    ASSERT_TRUE(w.ok()) << w.status();
    host.push_back(*std::move(w));
  }
  const DeviceLinear d0(host[0]), d1(host[1]);
  const DeviceLinear* layer[2] = {&d0, &d1};
  cudaStream_t stream;
  CUDA_ASSERT(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  // The decode-family variants at a few rows; the wgmma ones (sm_90a builds)
  // at the rows the table gives them, where blocks share tiles through the
  // split-K workspace that consecutive layers reuse.
  struct ChainCase {
    const char* variant;  // nullptr: the table's
    std::vector<int64_t> ms;
  };
  std::vector<ChainCase> cases;
  for (const char* v : {static_cast<const char*>(nullptr), "dec_m8", "stream_m8", "dec_m16", "bal_m8", "dec_m8_s16",
                        "dec_m8_a16", "dec_m16_a12", "dec_m16_s16", "dec_m16_s8", "dec_m16_a8", "dec_m16_w16a8"}) {
    if (Compiled(v)) cases.push_back({v, {1, 5}});
  }
  if (W4A16VariantName(64, kDim, kDim, 128).value_or("").rfind("wg_", 0) == 0) {
    cases.push_back({nullptr, {64, 200}});
    cases.push_back({"wg_t256_n128_s5_d2", {64}});
  }
  for (const ChainCase& cc : cases) {
    const char* variant = cc.variant;
    for (int64_t m : cc.ms) {
      SCOPED_TRACE(absl::StrCat(variant ? variant : "table", " m=", m));
      ASSERT_TRUE(ws_.Reserve(W4A16WorkspaceBytes(m, kDim, kDim, 0, variant)).ok());
      const std::vector<uint16_t> x0 = RandomActivations(m, kDim, 130 + m);
      DeviceArray<uint16_t> x(static_cast<size_t>((kLayers + 1) * m * kDim));
      // On `stream` too: a pageable cudaMemcpy may return before its DMA lands.
      CUDA_ASSERT(cudaMemcpyAsync(x.get(), x0.data(), x0.size() * 2, cudaMemcpyHostToDevice, stream));
      CUDA_ASSERT(cudaStreamSynchronize(stream));
      // Launches the chain; returns every layer's output.
      const auto chain = [&](bool pdl, bool graph) -> absl::StatusOr<std::vector<uint16_t>> {
        // On `stream`: a plain cudaMemset runs on the legacy stream, which this
        // non-blocking stream does not wait for; it once landed after the chain
        // and left every output 0xFFFF (H100, ctest -j4).
        if (cudaMemsetAsync(x.get() + m * kDim, 0xFF, kLayers * m * kDim * 2, stream) != cudaSuccess) {
          return absl::InternalError("memset");
        }
        cudaGraph_t g = nullptr;
        if (graph && cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
          return absl::InternalError("begin capture");
        }
        for (int i = 0; i < kLayers; ++i) {
          const DeviceLinear& d = *layer[i % 2];
          W4A16GemmArgs args;
          args.a = H(x) + i * m * kDim;
          args.qweight = d.qweight.get();
          args.scales = H(d.scales);
          args.zeros = d.zeros.get();
          args.bias = d.bias.size() ? H(d.bias) : nullptr;
          args.c = H(x) + (i + 1) * m * kDim;
          args.m = m;
          args.n = kDim;
          args.k = kDim;
          args.group_size = 128;
          args.stream = stream;
          args.variant = variant;
          args.pdl = pdl;
          args.workspace = ws_.data();
          args.workspace_bytes = ws_.size();
          if (absl::Status s = W4A16Gemm(args); !s.ok()) return s;
        }
        if (graph) {
          cudaGraphExec_t exec = nullptr;
          if (cudaStreamEndCapture(stream, &g) != cudaSuccess ||
              cudaGraphInstantiate(&exec, g, 0) != cudaSuccess) {
            return absl::InternalError("graph capture");
          }
          cudaError_t e = cudaGraphLaunch(exec, stream);
          cudaGraphExecDestroy(exec);
          cudaGraphDestroy(g);
          if (e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
        }
        if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
          return absl::InternalError(cudaGetErrorString(e));
        }
        std::vector<uint16_t> out = x.ToHost();
        out.erase(out.begin(), out.begin() + m * kDim);
        return out;
      };
      absl::StatusOr<std::vector<uint16_t>> plain = chain(false, false);
      ASSERT_TRUE(plain.ok()) << plain.status();
      const std::vector<uint16_t> y1(plain->begin(), plain->begin() + m * kDim);
      absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(x0, m, host[0]);
      ASSERT_TRUE(want.ok());
      EXPECT_LT(RelErr(HalfsToFloats(y1), *want), kMaxRelErrGptqAsym);
      const std::vector<float> all = HalfsToFloats(*plain);
      EXPECT_TRUE(std::all_of(all.begin(), all.end(), [](float v) { return std::isfinite(v); }))
          << "a layer's output is not finite: an unwritten element or an overflow";
      for (bool graph : {false, true}) {
        for (int rep = 0; rep < 3; ++rep) {
          absl::StatusOr<std::vector<uint16_t>> got = chain(true, graph);
          ASSERT_TRUE(got.ok()) << got.status();
          EXPECT_EQ(*got, *plain) << (graph ? "graph" : "stream") << " repeat " << rep;
        }
      }
    }
  }
  CUDA_ASSERT(cudaStreamDestroy(stream));
}

// The table's policy for few rows on sm_90 (kernels/MEASUREMENTS.md, measured on the
// H200 and the H100): the decode kernel up to 16 rows for large weights (up
// to 8 rows with A in its ring; from 9 rows A in an 8-slot ring below 16384
// columns, then an 8-slot weight ring beside whole A, and for deep and wide
// weights a split ring (16 weight slots, 8 of A)), the tiled kernel for
// small weights.
TEST_F(W4A16GpuTest, FewRowsGoToStreamingOnlyForLargeWeights) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "weight-streaming variants need sm_90";
  const struct {
    int64_t m, n, k;
    const char* want;
  } cases[] = {
      {1, 8192, 28672, "dec_m8_a16"},    {8, 8192, 28672, "dec_m8_a16"}, {1, 57344, 8192, "dec_m8_a16"},
      {4, 10240, 8192, "dec_m8_a16"},    {1, 768, 256, "mb1_bn128_bk256_s3_2blk"}, {5, 192, 640, "stream_m8"},
      {9, 8192, 28672, "dec_m16_a8"},    {16, 8192, 8192, "dec_m16_a8"},
      {12, 10240, 8192, "dec_m16_a8"},       {16, 57344, 8192, "dec_m16_s8"},
      {16, 57344, 16384, "dec_m16_w16a8"}, {16, 768, 256, "mb1_bn128_bk256_s3_2blk"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<std::string> v = W4A16VariantName(c.m, c.n, c.k, 128);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, c.want) << "m=" << c.m << " n=" << c.n << " k=" << c.k;
  }
}

// Shapes only the weight-streaming variants take (n % 128 != 0, k % 64 !=
// 0) run for m <= 32 on sm_90 by default, with no workspace (null is fine).
TEST_F(W4A16GpuTest, StreamingRunsWithoutWorkspace) {
  if (!HasStreamingVariants()) GTEST_SKIP() << "weight-streaming variants need sm_90";
  const QuantizedLinear q = RandomLinear({.n = 192, .k = 576, .group_size = 64}, 81);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<size_t> bytes = W4A16WorkspaceBytes(32, w->n, w->k, 0);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 0u);
  const DeviceLinear d(*w);
  const int64_t m = 5;
  const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 82);
  DeviceArray<uint16_t> a_dev(a), c(static_cast<size_t>(m * w->n));
  W4A16GemmArgs args;
  args.a = H(a_dev);
  args.qweight = d.qweight.get();
  args.scales = H(d.scales);
  args.zeros = d.zeros.get();
  args.c = H(c);
  args.m = m;
  args.n = w->n;
  args.k = w->k;
  args.group_size = w->group_size;
  absl::StatusOr<std::string> variant = W4A16VariantName(m, w->n, w->k, w->group_size);
  ASSERT_TRUE(variant.ok()) << variant.status();
  EXPECT_EQ(*variant, "stream_m8");
  ASSERT_TRUE(W4A16Gemm(args).ok());
  CUDA_ASSERT(cudaDeviceSynchronize());
  absl::StatusOr<std::vector<float>> want = GemmW4A16Ref(a, m, *w);
  ASSERT_TRUE(want.ok());
  EXPECT_LT(RelErr(HalfsToFloats(c.ToHost()), *want), kMaxRelErrGptqAsym);
}

TEST_F(W4A16GpuTest, RejectsBadArgumentsWithTheShape) {
  DeviceArray<uint16_t> buf(1 << 20);
  W4A16Workspace ws;
  ASSERT_TRUE(ws.Reserve(W4A16WorkspaceBytes(128, 512, 512, 0)).ok());
  W4A16GemmArgs args;
  args.a = H(buf);
  args.qweight = reinterpret_cast<const uint32_t*>(buf.get());
  args.scales = H(buf);
  args.c = H(buf);
  args.workspace = ws.data();
  args.workspace_bytes = ws.size();
  const auto run = [&](int64_t m, int64_t n, int64_t k, int gs) {
    W4A16GemmArgs a = args;
    a.m = m;
    a.n = n;
    a.k = k;
    a.group_size = gs;
    return W4A16Gemm(a);
  };
  absl::Status s = run(4, 100, 512, 128);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("n=100"));
  s = run(4, 512, 1000, -1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("k=1000"));
  s = run(4, 512, 1536, 48);  // no variant takes group size 48
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("group_size=48"));
  // m above the weight-streaming range goes to the wgmma kernel (k % 64,
  // n % 128) or the tiled one (k % 128, or n % 256 and k % 64; n % 128).
  s = run(100, 384, 608, 32);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("k=608"));
  s = run(100, 192, 512, 128);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  // The wgmma kernel's copy offsets are 32-bit: k (or n) above 2^23 is not
  // its shape, whatever the table would pick.
  W4A16GemmArgs deep = args;
  deep.m = 100;
  deep.n = 512;
  deep.k = (int64_t{1} << 23) + 128;
  deep.group_size = 128;
  deep.variant = "wg_t256_n128_s5_d2";
  s = W4A16Gemm(deep);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("does not accept the shape"));
  EXPECT_TRUE(run(0, 512, 512, 128).ok());
  W4A16GemmArgs small = args;
  small.m = 100;  // the tiled kernel's split-K workspace
  small.n = 512;
  small.k = 512;
  small.workspace_bytes = 16;
  EXPECT_THAT(W4A16Gemm(small).message(), HasSubstr("workspace"));
  W4A16GemmArgs null_a = small;
  null_a.m = 4;
  null_a.workspace_bytes = ws.size();
  null_a.a = nullptr;
  EXPECT_EQ(W4A16Gemm(null_a).code(), absl::StatusCode::kInvalidArgument);
  W4A16GemmArgs unknown = null_a;
  unknown.a = H(buf);
  unknown.variant = "no_such_variant";
  EXPECT_EQ(W4A16Gemm(unknown).code(), absl::StatusCode::kInvalidArgument);
  W4A16RepackArgs r;
  r.k = 100;
  r.n = 64;
  r.num_groups = 1;
  EXPECT_EQ(W4A16Repack(r).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qf::kernels
