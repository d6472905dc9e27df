// The W4A16 selection tables of both element types (w4a16_gemm.cu), through
// the host API alone: W4A16VariantName needs no device (without one the
// architecture is unknown and no variant is ruled out by it), so this runs in
// every CUDA build, GPU or not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/types/span.h"
#include "kernels/cuda/w4a16.h"

namespace qf::kernels {
namespace {

using ::testing::HasSubstr;

constexpr W4A16DType kF16 = W4A16DType::kF16, kBf16 = W4A16DType::kBF16;

// The Llama-70B projections (k, n) and one 8B-sized one.
const std::pair<int64_t, int64_t> kShapes[] = {{8192, 10240}, {8192, 8192}, {8192, 57344}, {28672, 8192}, {4096, 4096}};
const int64_t kMs[] = {1, 4, 8, 9, 16, 17, 32, 33, 48, 64, 65, 128, 129, 256, 1000};

// bf16 runs the fp16 table's decode, weight-streaming and wgmma choices as
// their bf16 twins, and where fp16 takes the tiled kernel's 48-row tiles a
// tiled bf16 variant.
TEST(W4A16Select, Bf16TakesTheTwinOfTheFp16Choice) {
  for (const auto& [k, n] : kShapes) {
    for (int64_t m : kMs) {
      SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
      absl::StatusOr<std::string> fp16 = W4A16VariantName(m, n, k, 128, kF16);
      absl::StatusOr<std::string> bf16 = W4A16VariantName(m, n, k, 128, kBf16);
      ASSERT_TRUE(fp16.ok()) << fp16.status();
      ASSERT_TRUE(bf16.ok()) << bf16.status();
      ASSERT_TRUE(absl::StartsWith(*bf16, "bf16_")) << *bf16;
      if (!absl::StartsWith(*fp16, "mb3_")) {
        EXPECT_EQ(*bf16, "bf16_" + *fp16);
      } else {
        EXPECT_TRUE(absl::StartsWith(*bf16, "bf16_mb4_")) << *bf16;
      }
    }
  }
}

// A call's shape and the fp16 variant the table must pick for it (bf16: its twin).
struct Pick {
  int64_t m, n, k;
  const char* want;
};
void ExpectPicks(absl::Span<const Pick> cases) {
  for (const Pick& c : cases) {
    for (const W4A16DType t : {kF16, kBf16}) {
      absl::StatusOr<std::string> v = W4A16VariantName(c.m, c.n, c.k, 128, t);
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(*v, std::string(t == kBf16 ? "bf16_" : "") + c.want) << "m=" << c.m << " n=" << c.n << " k=" << c.k;
    }
  }
}

// 9 to 16 rows of A on the 16-row decode kernels, by width and depth of the
// weights: A in an 8-slot ring below 16384 columns at any k (the 70B qkv, o
// and down; Qwen2 72B's down, k = 29568), beside whole A from there below
// 16384 rows (gate_up), and a split ring where both are large.
TEST(W4A16Select, SixteenRowsTakeTheDecodeKernelByWidthAndDepth) {
  const Pick cases[] = {{16, 10240, 8192, "dec_m16_a8"},       {16, 8192, 28672, "dec_m16_a8"},
                        {9, 8192, 29568, "dec_m16_a8"},        {16, 3584, 18944, "dec_m16_a8"},
                        {16, 57344, 8192, "dec_m16_s8"},       {16, 57344, 16384, "dec_m16_w16a8"},
                        {12, 16384, 16384, "dec_m16_w16a8"},   {16, 16320, 16384, "dec_m16_a8"}};
  ExpectPicks(cases);
}

// 17-128 rows of narrow weights (n < 8192: Llama 8B's and Qwen2 7B's
// projections but for gate_up) take 128-column tiles with one block per SM,
// up to 64 rows only for k < 8192; deep k, 70B's projections and wide
// weights keep the rows tuned on them, and 16 rows or fewer the decode kernels.
TEST(W4A16Select, NarrowWeightsTakeOneBlockPerSmTilesFrom17To128Rows) {
  const Pick cases[] = {{64, 4096, 4096, "wg_t64_n128_s6_k128"},           {17, 6144, 4096, "wg_t64_n128_s6_k128"},
                        {32, 4608, 3584, "wg_t64_n128_s6_k128"},           {16, 4096, 4096, "dec_m16_a8"},
                        {64, 3584, 18944, "wg_t64_n128_w1_s4_k128_2blk"},  {32, 4096, 14336, "mb2_bn128_bk256_s4"},
                        {128, 4096, 14336, "wg_t128_n128_s5"},             {65, 4608, 3584, "wg_t128_n128_s5"},
                        {64, 8192, 8192, "wg_t64_n128_w1_s4_k128_2blk"},   {32, 8192, 8192, "mb2_bn128_bk256_s4"},
                        {64, 28672, 4096, "wg_t64_n128_w1_s4_k128_2blk"},  {128, 8192, 28672, "wg_pc_t128_n256_s8"},
                        {128, 28672, 4096, "wg_pc_t128_n256_s8"},          {256, 4096, 4096, "wg_t256_n128_s6_d2"}};
  ExpectPicks(cases);
}

// 65-128 rows of deep weights (k >= 8192: the 70B projections), and of
// shallower ones from 14336 columns and k = 3584 (8B's and 13B's gate_up, 8B's
// gate or up alone), take the 128 x 256 tiles that a producer warpgroup
// stages by TMA; narrower shallow weights (13B's 5120 x 13824) and k below
// 3584 keep the cp.async form of the same tiles, and from 129 rows the
// 256-row tiles.
TEST(W4A16Select, DeepOrWideWeightsAt65To128RowsTakeTheProducerWarpgroupTiles) {
  const Pick cases[] = {{65, 10240, 8192, "wg_pc_t128_n256_s8"},   {128, 57344, 8192, "wg_pc_t128_n256_s8"},
                        {96, 8192, 28672, "wg_pc_t128_n256_s8"},   {128, 28672, 4096, "wg_pc_t128_n256_s8"},
                        {100, 15360, 5120, "wg_pc_t128_n256_s8"},  {128, 37888, 3584, "wg_pc_t128_n256_s8"},
                        {128, 14336, 4096, "wg_pc_t128_n256_s8"},  {128, 28672, 3072, "wg_t128_n256_s5"},
                        {128, 13824, 5120, "wg_t128_n256_s5"},
                        {129, 10240, 8192, "wg_t256_n128_s6_d2"}, {64, 10240, 8192, "wg_t64_n128_w1_s4_k128_2blk"}};
  ExpectPicks(cases);
}

// k that the tiled kernel's 256-row stages refuse (k % 256 != 0: Qwen2 72B's
// down, k = 29568; Qwen2 0.5B's gate_up, k = 896) takes the wgmma tiles from
// 17 rows, not the weight-streaming kernels: one block per SM below k = 8192,
// the one-warpgroup 2-block tiles from there. 16 rows stay on the decode
// kernel, k % 256 == 0 on the tiled rows, and n below 1024 still streams.
TEST(W4A16Select, OddKTakesTheWgmmaTilesFrom17Rows) {
  const Pick cases[] = {{17, 8192, 29568, "wg_t64_n128_w1_s4_k128_2blk"}, {32, 1024, 8320, "wg_t64_n128_w1_s4_k128_2blk"},
                        {24, 9728, 896, "wg_t64_n128_s6_k128"},           {32, 8192, 8064, "wg_t64_n128_s6_k128"},
                        {16, 8192, 29568, "dec_m16_a8"},                  {24, 8192, 28672, "mb2_bn128_bk256_s4"},
                        {24, 960, 29568, "stream_m32"},                   {48, 8192, 29568, "wg_t64_n128_w1_s4_k128_2blk"}};
  ExpectPicks(cases);
}

// The decode rows need n >= 1024 and the wgmma rows too: tiny-llama's
// layers (k, n < 1024) take the tiled kernel's 16-row, 128-column tiles at
// every m, in both types; from 1024 rows or columns of weights on, the other
// rows choose again (the 64-row tiles at m = 256).
TEST(W4A16Select, SmallLayersTakeTheTiledKernelInBothTypes) {
  const std::pair<int64_t, int64_t> tiny[] = {{256, 128}, {256, 256}, {256, 768}, {768, 256}};
  for (const auto& [k, n] : tiny) {
    for (int64_t m : {1, 16, 17, 64, 256, 1000}) {
      SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
      absl::StatusOr<std::string> fp16 = W4A16VariantName(m, n, k, 128, kF16);
      absl::StatusOr<std::string> bf16 = W4A16VariantName(m, n, k, 128, kBf16);
      ASSERT_TRUE(fp16.ok()) << fp16.status();
      ASSERT_TRUE(bf16.ok()) << bf16.status();
      EXPECT_EQ(*fp16, "mb1_bn128_bk256_s3_2blk");
      EXPECT_EQ(*bf16, "bf16_" + *fp16);
    }
  }
  for (const auto& [k, n] : {std::pair<int64_t, int64_t>{1024, 768}, {768, 1024}}) {
    absl::StatusOr<std::string> fp16 = W4A16VariantName(256, n, k, 128, kF16);
    ASSERT_TRUE(fp16.ok()) << fp16.status();
    EXPECT_NE(*fp16, "mb1_bn128_bk256_s3_2blk") << "k=" << k << " n=" << n;
  }
}

// n % 64 only: the weight-streaming kernels take it up to 32 rows, in both
// types, and nothing above; the refusal names the type and the shape. An
// unknown type is an argument error.
TEST(W4A16Select, NarrowShapesStreamInBothTypesAndUnknownTypesAreRefused) {
  for (int64_t m : {1, 8, 9, 16, 32}) {
    absl::StatusOr<std::string> fp16 = W4A16VariantName(m, 192, 256, 128, kF16);
    absl::StatusOr<std::string> bf16 = W4A16VariantName(m, 192, 256, 128, kBf16);
    ASSERT_TRUE(fp16.ok() && bf16.ok()) << "m=" << m;
    EXPECT_TRUE(absl::StartsWith(*fp16, "stream_")) << *fp16;
    EXPECT_EQ(*bf16, "bf16_" + *fp16);
  }
  ASSERT_FALSE(W4A16VariantName(33, 192, 256, 128, kF16).ok());
  absl::StatusOr<std::string> refused = W4A16VariantName(33, 192, 256, 128, kBf16);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(refused.status().message(), HasSubstr("m=33, n=192"));
  EXPECT_THAT(refused.status().message(), HasSubstr("no bf16 kernel variant fits"));
  absl::StatusOr<std::string> unknown = W4A16VariantName(1, 256, 256, 128, static_cast<W4A16DType>(7));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("dtype 7"));
}

// Every name is one variant: a name listed twice (a table row that is also
// a tuning row) would be swept and reported twice by the bench.
TEST(W4A16Select, VariantNamesAreUnique) {
  for (W4A16DType dtype : {kF16, kBf16}) {
    const std::vector<std::string> names = W4A16VariantNames(dtype);
    const std::set<std::string> unique(names.begin(), names.end());
    EXPECT_EQ(unique.size(), names.size()) << "dtype " << static_cast<int>(dtype);
  }
}

// A forced variant of the other type is refused before any device work,
// whichever way round (W4A16WorkspaceBytes selects as W4A16Gemm does); the
// names of the two types never overlap.
TEST(W4A16Select, ForcedVariantsOfTheOtherTypeAreRefused) {
  const std::vector<std::string> fp16 = W4A16VariantNames(kF16), bf16 = W4A16VariantNames(kBf16);
  ASSERT_FALSE(fp16.empty());
  ASSERT_FALSE(bf16.empty());
  const std::set<std::string> fp16_set(fp16.begin(), fp16.end());
  for (const std::string& name : bf16) {
    EXPECT_TRUE(absl::StartsWith(name, "bf16_")) << name;
    EXPECT_EQ(fp16_set.count(name), 0u) << name;
  }
  absl::StatusOr<size_t> fp16_forced = W4A16WorkspaceBytes(1, 256, 256, 0, "mb1_bn256_bk256_s3", kBf16);
  ASSERT_FALSE(fp16_forced.ok());
  EXPECT_EQ(fp16_forced.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fp16_forced.status().message(), HasSubstr("runs fp16 activations, the call passes bf16"));
  absl::StatusOr<size_t> bytes = W4A16WorkspaceBytes(1, 256, 256, 0, "bf16_mb1_bn256_bk256_s3", kF16);
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("runs bf16 activations, the call passes fp16"));
}

}  // namespace
}  // namespace qf::kernels
