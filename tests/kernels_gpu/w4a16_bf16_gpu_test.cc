// GPU tests of the fused W4A16 GEMM with bf16 activations, scales, bias and
// output (W4A16GemmArgs::dtype = kBF16: the tiled kernel, and the decode and
// wgmma kernels on sm_90) and of the repack that converts the checkpoint's fp16
// scales to bf16. Skipped when no CUDA device is present.
#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/ref/pack.h"
#include "kernels/ref/w4a16_ref.h"
#include "storage/safetensors.h"
#include "tests/kernels_gpu/w4a16_gpu_fixture.h"
#include "tests/kernels_gpu/w4a16_test_util.h"

namespace qf::kernels {
namespace {

using ::qf::kernels::testing::Bf16OfHalfs;
using ::qf::kernels::testing::Bf16sToFloats;
using ::qf::kernels::testing::DeviceLinear;
using ::qf::kernels::testing::DeviceRepack;
using ::qf::kernels::testing::LinearSpec;
using ::qf::kernels::testing::RandomActivations;
using ::qf::kernels::testing::RandomLinear;
using ::qf::kernels::testing::RelErr;
using ::qf::kernels::testing::RepackOnDevice;
using ::qf::kernels::testing::Trace;
using ::qf::kernels::testing::W4A16GpuFixture;
using ::testing::HasSubstr;

// Threshold on ||C - C_ref||_2 / ||C_ref||_2 against a double reference that
// dequantizes with the bf16 scales the kernel holds. bf16 keeps 8 significant
// bits (unit roundoff 2^-8, fp16's 2^-11), so the rounding of each
// dequantized weight (the scale multiply of the tiled and wgmma kernels;
// code - zero is exact, and the decode kernel rounds no weight) and of each
// output add about 2.3e-3 rms each, 3.2e-3 together on random data; the
// threshold keeps fp16's margin (2e-3 against about 4e-4 there).
constexpr double kMaxRelErrBf16 = 1.5e-2;

constexpr int64_t kSweepM[] = {1, 2, 3, 7, 16, 33, 64, 118, 256};

// C[m x n] = A * W^T + bias in double, rounded to float: A and bias bf16 bits,
// W dequantized with every scale rounded to bf16 first, as the repack does.
// (RandomLinear's scales lie in [2^-8, 2^-6], where a bf16 value is an fp16
// value too, so the rounded scales go through DequantizeRef unchanged.)
std::vector<float> ReferenceBf16(const std::vector<uint16_t>& a, int64_t m, QuantizedLinear q,
                                 const std::vector<uint16_t>& bias) {
  for (uint16_t& s : q.scales) {
    s = storage::FloatToHalf(storage::BFloat16ToFloat(storage::FloatToBFloat16(storage::HalfToFloat(s))));
  }
  const std::vector<float> w = DequantizeRef(q);  // [n x k], input-channel order
  const int64_t n = q.out_features, k = q.in_features;
  std::vector<float> c(static_cast<size_t>(m * n));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t o = 0; o < n; ++o) {
      double acc = bias.empty() ? 0.0 : storage::BFloat16ToFloat(bias[o]);
      for (int64_t i = 0; i < k; ++i) {
        acc += static_cast<double>(storage::BFloat16ToFloat(a[r * k + i])) * w[o * k + i];
      }
      c[r * n + o] = static_cast<float>(acc);
    }
  }
  return c;
}

constexpr W4A16DType kBf16 = W4A16DType::kBF16;

struct Bf16Case {
  const char* name;
  LinearSpec spec;
  std::vector<int64_t> ms;
};

class W4A16Bf16GpuTest : public W4A16GpuFixture {
 protected:
  // Each case's linear (RandomLinear with `seed`) through the table's
  // variant against ReferenceBf16, for each of the case's m.
  template <size_t N>
  void ExpectCasesMatchReference(const Bf16Case (&cases)[N], uint64_t seed) {
    for (const Bf16Case& c : cases) {
      const QuantizedLinear q = RandomLinear(c.spec, seed);
      absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
      ASSERT_TRUE(w.ok()) << w.status();
      const DeviceLinear d(*w, kBf16);
      for (int64_t m : c.ms) {
        SCOPED_TRACE(Trace(c.name, m, *w, kBf16));
        const std::vector<uint16_t> a = Bf16OfHalfs(RandomActivations(m, q.in_features, seed * 1000 + m));
        const std::vector<float> want = ReferenceBf16(a, m, q, Bf16OfHalfs(q.bias));
        absl::StatusOr<std::vector<uint16_t>> got = RunFused(d, a, m);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_LT(RelErr(Bf16sToFloats(*got), want), kMaxRelErrBf16);
      }
    }
  }
};

// The repack with out_dtype bf16: the same codes and zeros as the fp16
// repack, every scale rounded to nearest even once.
TEST_F(W4A16Bf16GpuTest, RepackRoundsScalesToBf16) {
  for (W4A16Source source : {W4A16Source::kGptqV1, W4A16Source::kAwqGemm}) {
    const bool gptq = source == W4A16Source::kGptqV1;
    SCOPED_TRACE(gptq ? "gptq_v1" : "awq_gemm");
    const QuantizedLinear q = RandomLinear({.n = 384, .k = 512, .group_size = 64, .desc_act = gptq}, 61);
    absl::StatusOr<W4A16Weights> ref = RepackW4A16Ref(q);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<DeviceRepack> got = RepackOnDevice(q, source, ref->perm, kBf16);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->qweight, ref->qweight);
    EXPECT_EQ(got->scales, Bf16OfHalfs(ref->scales));
    EXPECT_EQ(got->zeros, ref->zeros);
  }
}

// Formats, act-order and the shapes the bf16 table takes: each of its tiled,
// decode and wgmma rows (the latter two from n = 1024, on sm_90) and both
// fallbacks (k % 128 only, k % 64 only) are reached.
TEST_F(W4A16Bf16GpuTest, MatchesReferenceAcrossMAndFormats) {
  const Bf16Case cases[] = {
      {"asym_g128_bias", {.n = 768, .k = 1024, .group_size = 128, .bias = true}, {std::begin(kSweepM), std::end(kSweepM)}},
      {"sym_g128_act_order", {.n = 768, .k = 1024, .group_size = 128, .sym = true, .desc_act = true}, {1, 7, 33, 118}},
      {"asym_g32_k640", {.n = 384, .k = 640, .group_size = 32}, {1, 16, 64, 256}},
      {"asym_g64_k576", {.n = 512, .k = 576, .group_size = 64, .desc_act = true}, {1, 40, 130}},
      {"asym_channelwise_bias", {.n = 1280, .k = 384, .group_size = -1, .bias = true}, {1, 37, 256}},
      {"asym_g128_deep_k", {.n = 256, .k = 4096, .group_size = 128}, {1, 16, 64}},
      {"sym_g128_o_proj_8b", {.n = 4096, .k = 4096, .group_size = 128, .sym = true}, {1, 5, 16, 64}},
      {"asym_g64_n1024_bias", {.n = 1024, .k = 1024, .group_size = 64, .bias = true}, {1, 12, 33, 64, 100, 128, 200, 256}},
      {"asym_g128_wide_n", {.n = 16384, .k = 256, .group_size = 128}, {4, 16, 130, 256}},
      {"asym_g128_deep_k_n1024", {.n = 1024, .k = 16384, .group_size = 128, .bias = true}, {1, 9}},
  };
  ExpectCasesMatchReference(cases, 71);
}

// The weight-streaming kernels' shapes (sm_90): n a multiple of 64 only (and
// k of 32), up to 32 rows, with act-order and channel-wise groups.
TEST_F(W4A16Bf16GpuTest, StreamingShapesMatchReference) {
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major != 9) GTEST_SKIP() << "weight-streaming variants need sm_90";
  const Bf16Case cases[] = {
      {"sym_g32_n192", {.n = 192, .k = 576, .group_size = 32, .sym = true}, {1, 8, 9, 16, 17, 32}},
      {"asym_g64_n320_act_order", {.n = 320, .k = 640, .group_size = 64, .desc_act = true}, {3, 16, 30}},
      {"asym_channelwise_n64_k352_bias", {.n = 64, .k = 352, .group_size = -1, .bias = true}, {1, 32}},
  };
  ExpectCasesMatchReference(cases, 78);
}

// Every bf16 variant, forced, on a shape all of them take (the wgmma, decode
// and streaming ones only on sm_90, the one architecture they run on).
TEST_F(W4A16Bf16GpuTest, EveryVariantMatchesReference) {
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  const QuantizedLinear q = RandomLinear({.n = 768, .k = 1024, .group_size = 128, .bias = true}, 72);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w, kBf16);
  const std::vector<std::string> names = W4A16VariantNames(kBf16);
  ASSERT_FALSE(names.empty());
  for (int64_t m : {1, 33, 118}) {
    const std::vector<uint16_t> a = Bf16OfHalfs(RandomActivations(m, q.in_features, 500 + m));
    const std::vector<float> want = ReferenceBf16(a, m, q, Bf16OfHalfs(q.bias));
    for (const std::string& name : names) {
      const bool sm90_only = absl::StartsWith(name, "bf16_wg_") || absl::StartsWith(name, "bf16_dec_") ||
                             absl::StartsWith(name, "bf16_stream_");
      if (major != 9 && sm90_only) continue;
      SCOPED_TRACE("forced variant " + name + " m=" + std::to_string(m));
      absl::StatusOr<std::vector<uint16_t>> got = RunFused(d, a, m, name.c_str());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LT(RelErr(Bf16sToFloats(*got), want), kMaxRelErrBf16);
    }
  }
}

// Deep k over few tiles splits k across blocks (stream-K); the fixup sums in
// block order, so repeated calls give the same bits.
TEST_F(W4A16Bf16GpuTest, RepeatedCallsAreBitIdentical) {
  const QuantizedLinear q = RandomLinear({.n = 256, .k = 8192, .group_size = 128}, 73);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w, kBf16);
  for (int64_t m : {1, 64, 200}) {
    SCOPED_TRACE(Trace("deep_k", m, *w, kBf16));
    const std::vector<uint16_t> a = Bf16OfHalfs(RandomActivations(m, q.in_features, 600 + m));
    absl::StatusOr<std::vector<uint16_t>> first = RunFused(d, a, m);
    ASSERT_TRUE(first.ok()) << first.status();
    for (int rep = 0; rep < 3; ++rep) {
      absl::StatusOr<std::vector<uint16_t>> again = RunFused(d, a, m);
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(*again, *first);
    }
  }
}

// The element types do not mix: a forced variant of the other type is
// refused with the reason, as is a shape no bf16 variant takes (n % 64 only,
// above the streaming kernels' 32 rows).
TEST_F(W4A16Bf16GpuTest, RefusesOtherTypesVariantsAndUnsupportedShapes) {
  for (const std::string& name : W4A16VariantNames(kBf16)) EXPECT_TRUE(absl::StartsWith(name, "bf16_"));
  for (const std::string& name : W4A16VariantNames()) EXPECT_FALSE(absl::StartsWith(name, "bf16_")) << name;

  const QuantizedLinear q = RandomLinear({.n = 256, .k = 512, .group_size = 128}, 74);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const DeviceLinear d(*w, kBf16);
  const std::vector<uint16_t> a = Bf16OfHalfs(RandomActivations(4, q.in_features, 75));
  absl::StatusOr<std::vector<uint16_t>> fp16_variant = RunFused(d, a, 4, "mb1_bn256_bk256_s3");
  ASSERT_FALSE(fp16_variant.ok());
  EXPECT_EQ(fp16_variant.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fp16_variant.status().message(), HasSubstr("runs fp16 activations, the call passes bf16"));

  // n = 192: a multiple of 64 only, which the streaming kernels take up to 32 rows.
  const QuantizedLinear narrow = RandomLinear({.n = 192, .k = 256, .group_size = 128}, 76);
  absl::StatusOr<W4A16Weights> wn = RepackW4A16Ref(narrow);
  ASSERT_TRUE(wn.ok()) << wn.status();
  const DeviceLinear dn(*wn, kBf16);
  absl::StatusOr<std::vector<uint16_t>> refused = RunFused(dn, Bf16OfHalfs(RandomActivations(33, 256, 77)), 33);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(refused.status().message(), HasSubstr("n=192"));
  EXPECT_THAT(refused.status().message(), HasSubstr("no bf16 kernel variant fits"));
}

}  // namespace
}  // namespace qf::kernels
