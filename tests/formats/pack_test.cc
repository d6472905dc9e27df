// Tests of kernels/ref/pack.h: bit-exact round trips over bits x group size x
// act-order, words computed by hand from the format definitions, rejections.

#include "kernels/ref/pack.h"

#include <cmath>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/formats/test_linear.h"

namespace qf::kernels {
namespace {

using ::qf::kernels::testing::ExpectSameLinear;
using ::qf::kernels::testing::LinearShape;
using ::qf::kernels::testing::RandomLinear;
using ::qf::kernels::testing::Word;
using ::testing::HasSubstr;

void ExpectInvalid(const absl::Status& s, std::initializer_list<std::string_view> parts) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  for (std::string_view p : parts) EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(p)));
}

// A linear whose every field is set by the caller afterwards.
QuantizedLinear Blank(int64_t n, int64_t k, int bits, int group_size = -1) {
  return RandomLinear({.n = n, .k = k, .bits = bits, .group_size = group_size, .seed = 7});
}

// ---- round trips ----------------------------------------------------------

class GptqRoundTrip : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(GptqRoundTrip, BitExact) {
  const auto [bits, group_size, desc_act] = GetParam();
  for (bool sym : {false, true}) {
    LinearShape s{.n = 96, .k = 256, .bits = bits, .group_size = group_size, .sym = sym,
                  .desc_act = desc_act, .bias = sym, .seed = static_cast<uint32_t>(bits * 1000 + group_size)};
    const QuantizedLinear q = RandomLinear(s);
    absl::StatusOr<PackedLinear> p = PackGptqV1(q);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->qweight.shape, (std::vector<int64_t>{256 * bits / 32, 96}));
    EXPECT_EQ(p->qzeros.shape, (std::vector<int64_t>{q.num_groups, 96 * bits / 32}));
    EXPECT_EQ(p->scales.shape, (std::vector<int64_t>{q.num_groups, 96}));
    ASSERT_TRUE(p->g_idx.has_value());
    EXPECT_EQ(p->g_idx->shape, (std::vector<int64_t>{256}));
    EXPECT_EQ(p->bias.has_value(), sym);
    absl::StatusOr<QuantizedLinear> back = UnpackGptqV1(ViewOf(*p), InfoOf(q));
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameLinear(*back, q);
  }
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, GptqRoundTrip,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(-1, 32, 64, 128),
                                            ::testing::Bool()));

class AwqRoundTrip : public ::testing::TestWithParam<int> {};

TEST_P(AwqRoundTrip, BitExact) {
  const QuantizedLinear q = RandomLinear({.n = 72, .k = 256, .bits = 4, .group_size = GetParam(), .bias = true});
  absl::StatusOr<PackedLinear> p = PackAwqGemm(q);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->qweight.shape, (std::vector<int64_t>{256, 9}));
  EXPECT_EQ(p->qzeros.shape, (std::vector<int64_t>{q.num_groups, 9}));
  EXPECT_FALSE(p->g_idx.has_value());
  absl::StatusOr<QuantizedLinear> back = UnpackAwqGemm(ViewOf(*p), InfoOf(q));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameLinear(*back, q);
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, AwqRoundTrip, ::testing::Values(-1, 32, 64, 128));

TEST(PackedLinear, TakePrefixesNamesInOrder) {
  QuantizedLinear q = RandomLinear({.n = 8, .k = 32, .bits = 4, .group_size = 32, .bias = true});
  absl::StatusOr<PackedLinear> p = PackGptqV1(q);
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<std::string> names;
  for (const auto& t : std::move(*p).Take("model.layers.3.mlp.up_proj.")) names.push_back(t.name);
  EXPECT_THAT(names, ::testing::ElementsAre("model.layers.3.mlp.up_proj.qweight", "model.layers.3.mlp.up_proj.qzeros",
                                            "model.layers.3.mlp.up_proj.scales", "model.layers.3.mlp.up_proj.g_idx",
                                            "model.layers.3.mlp.up_proj.bias"));
}

// ---- words from the format definitions -------------------------------------

TEST(GptqV1Words, FourBitCodesAlongInputDim) {
  // 8 input channels x 8 outputs: q(n, k) = (n + k) % 16; z(0, n) = n + 1.
  QuantizedLinear q = Blank(8, 8, 4);
  for (int n = 0; n < 8; ++n)
    for (int k = 0; k < 8; ++k) q.codes[n * 8 + k] = static_cast<uint8_t>((n + k) % 16);
  for (int n = 0; n < 8; ++n) q.zeros[n] = static_cast<uint8_t>(n + 1);
  absl::StatusOr<PackedLinear> p = PackGptqV1(q);
  ASSERT_TRUE(p.ok()) << p.status();
  // Column n holds channel k at bits 4k..4k+3.
  EXPECT_EQ(Word(p->qweight, 0), 0x76543210u);   // n = 0: codes 0..7
  EXPECT_EQ(Word(p->qweight, 1), 0x87654321u);   // n = 1: codes 1..8
  EXPECT_EQ(Word(p->qweight, 7), 0xEDCBA987u);   // n = 7: codes 7..14
  // qzeros stores z - 1 = n along the output dim.
  EXPECT_EQ(Word(p->qzeros, 0), 0x76543210u);
  EXPECT_EQ(p->wrapped_zeros, 0);
}

TEST(GptqV1Words, TwoAndEightBit) {
  QuantizedLinear q2 = Blank(16, 16, 2);
  for (int k = 0; k < 16; ++k) q2.codes[k] = static_cast<uint8_t>(k % 4);   // row n = 0
  absl::StatusOr<PackedLinear> p2 = PackGptqV1(q2);
  ASSERT_TRUE(p2.ok()) << p2.status();
  EXPECT_EQ(Word(p2->qweight, 0), 0xE4E4E4E4u);   // 0b11'10'01'00 repeated

  QuantizedLinear q8 = Blank(4, 4, 8);
  for (int k = 0; k < 4; ++k) q8.codes[k] = static_cast<uint8_t>(k + 1);
  for (int n = 0; n < 4; ++n) q8.zeros[n] = static_cast<uint8_t>(0x10 * (n + 1) + 1);
  absl::StatusOr<PackedLinear> p8 = PackGptqV1(q8);
  ASSERT_TRUE(p8.ok()) << p8.status();
  EXPECT_EQ(Word(p8->qweight, 0), 0x04030201u);
  EXPECT_EQ(Word(p8->qzeros, 0), 0x40302010u);
}

// AutoGPTQ's 3-bit layout, written the way its packer states it: 10 codes,
// a split code, 10 codes, a split code, 10 codes per 3 words.
std::array<uint32_t, 3> AutoGptqThreeBit(const uint8_t* c) {
  std::array<uint32_t, 3> w{};
  for (int j = 0; j < 10; ++j) w[0] |= uint32_t{c[j]} << (3 * j);
  w[0] |= uint32_t{c[10]} << 30;
  w[1] |= (uint32_t{c[10]} >> 2) & 1u;
  for (int j = 11; j < 21; ++j) w[1] |= uint32_t{c[j]} << (3 * (j - 11) + 1);
  w[1] |= uint32_t{c[21]} << 31;
  w[2] |= (uint32_t{c[21]} >> 1) & 3u;
  for (int j = 22; j < 32; ++j) w[2] |= uint32_t{c[j]} << (3 * (j - 22) + 2);
  return w;
}

TEST(GptqV1Words, ThreeBitStraddlesWords) {
  QuantizedLinear q = Blank(32, 64, 3);
  std::fill(q.codes.begin(), q.codes.end(), 0);
  q.codes[10] = 7;             // row 0: only channel 10 (split over words 0 and 1)
  q.codes[64 + 21] = 5;        // row 1: only channel 21 (split over words 1 and 2)
  absl::StatusOr<PackedLinear> p = PackGptqV1(q);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->qweight.shape, (std::vector<int64_t>{6, 32}));
  EXPECT_EQ(Word(p->qweight, 0 * 32 + 0), 0xC0000000u);
  EXPECT_EQ(Word(p->qweight, 1 * 32 + 0), 0x00000001u);
  EXPECT_EQ(Word(p->qweight, 2 * 32 + 0), 0u);
  EXPECT_EQ(Word(p->qweight, 1 * 32 + 1), 0x80000000u);   // 5 = 0b101: bit 0 -> bit 31
  EXPECT_EQ(Word(p->qweight, 2 * 32 + 1), 0x00000002u);   // bits 1..2 -> bits 0..1

  // Random codes: every word equals AutoGPTQ's formula, for both 32-blocks.
  QuantizedLinear r = RandomLinear({.n = 32, .k = 64, .bits = 3, .group_size = 32, .seed = 11});
  absl::StatusOr<PackedLinear> pr = PackGptqV1(r);
  ASSERT_TRUE(pr.ok()) << pr.status();
  for (int n = 0; n < 32; ++n) {
    for (int block = 0; block < 2; ++block) {
      const std::array<uint32_t, 3> want = AutoGptqThreeBit(&r.codes[n * 64 + 32 * block]);
      for (int w = 0; w < 3; ++w) {
        EXPECT_EQ(Word(pr->qweight, (3 * block + w) * 32 + n), want[w]) << "n=" << n << " block=" << block;
      }
    }
    // qzeros: the same layout over n of (z - 1) mod 8.
  }
  for (int g = 0; g < 2; ++g) {
    uint8_t stored[32];
    for (int n = 0; n < 32; ++n) stored[n] = static_cast<uint8_t>((r.zeros[g * 32 + n] + 7) % 8);
    const std::array<uint32_t, 3> want = AutoGptqThreeBit(stored);
    for (int w = 0; w < 3; ++w) EXPECT_EQ(Word(pr->qzeros, g * 3 + w), want[w]) << "group " << g;
  }
}

TEST(GptqV1Words, ZeroPointZeroWrapsToMaskAndRoundTrips) {
  QuantizedLinear q = Blank(8, 8, 4);
  std::fill(q.zeros.begin(), q.zeros.end(), 0);
  absl::StatusOr<PackedLinear> p = PackGptqV1(q);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(Word(p->qzeros, 0), 0xFFFFFFFFu);   // (0 - 1) & 0xF in every nibble
  EXPECT_EQ(p->wrapped_zeros, 8);
  absl::StatusOr<QuantizedLinear> back = UnpackGptqV1(ViewOf(*p), InfoOf(q));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->zeros == q.zeros);
}

TEST(AwqWords, InterleavedNibbles) {
  // Input channel 0 of outputs 0..7 holds codes 0..7; nibble i holds output
  // kAwqOrder[i] = {0, 2, 4, 6, 1, 3, 5, 7}.
  QuantizedLinear q = Blank(8, 32, 4, 32);
  for (int n = 0; n < 8; ++n) {
    q.codes[n * 32 + 0] = static_cast<uint8_t>(n);
    q.codes[n * 32 + 1] = static_cast<uint8_t>(15 - n);
    q.zeros[n] = static_cast<uint8_t>(n + 8);
  }
  absl::StatusOr<PackedLinear> p = PackAwqGemm(q);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->qweight.shape, (std::vector<int64_t>{32, 1}));
  EXPECT_EQ(Word(p->qweight, 0), 0x75316420u);
  EXPECT_EQ(Word(p->qweight, 1), 0x8ACE9BDFu);   // 15 - n in the same order
  EXPECT_EQ(Word(p->qzeros, 0), 0xFDB9ECA8u);    // zeros stored as they are
}

// ---- rejections -------------------------------------------------------------

TEST(PackRejects, AwqOnlyFourBitsWithoutActOrder) {
  ExpectInvalid(PackAwqGemm(RandomLinear({.n = 32, .k = 64, .bits = 3, .group_size = 32})).status(),
                {"mlp.up_proj", "bits", "4"});
  ExpectInvalid(PackAwqGemm(RandomLinear({.n = 32, .k = 64, .bits = 4, .group_size = 32, .desc_act = true})).status(),
                {"mlp.up_proj", "desc_act"});
  ExpectInvalid(PackAwqGemm(RandomLinear({.n = 12, .k = 64, .bits = 4, .group_size = 32})).status(),
                {"out_features", "12", "8"});
}

TEST(PackRejects, GptqShapesAndFields) {
  QuantizedLinear q = RandomLinear({.n = 32, .k = 64, .bits = 4, .group_size = 32, .name = "self_attn.o_proj"});
  QuantizedLinear bad = q;
  bad.bits = 5;
  ExpectInvalid(PackGptqV1(bad).status(), {"self_attn.o_proj", "bits", "5"});
  ExpectInvalid(PackGptqV1(RandomLinear({.n = 32, .k = 12, .bits = 4, .group_size = -1})).status(),
                {"in_features", "12"});
  ExpectInvalid(PackGptqV1(RandomLinear({.n = 32, .k = 48, .bits = 3, .group_size = -1})).status(),
                {"in_features", "48", "32"});
  ExpectInvalid(PackGptqV1(RandomLinear({.n = 20, .k = 64, .bits = 4, .group_size = -1})).status(),
                {"out_features", "20"});
  bad = q;
  bad.group_size = 48;
  ExpectInvalid(PackGptqV1(bad).status(), {"group_size", "48", "64"});
  bad = q;
  bad.codes.pop_back();
  ExpectInvalid(PackGptqV1(bad).status(), {"codes", "2047", "2048"});
  bad = q;
  bad.zeros[3] = 16;
  ExpectInvalid(PackGptqV1(bad).status(), {"zeros", "16"});
  bad = q;
  bad.codes[5] = 200;
  ExpectInvalid(PackGptqV1(bad).status(), {"codes", "200"});
  bad = q;
  bad.g_idx[0] = 1;   // not k / group_size without desc_act
  ExpectInvalid(PackGptqV1(bad).status(), {"g_idx[0]", "desc_act"});
  bad = q;
  bad.g_idx[0] = 2;   // out of range even with act-order
  bad.desc_act = true;
  ExpectInvalid(PackGptqV1(bad).status(), {"g_idx[0]", "[0, 2)"});
  bad = q;
  bad.sym = true;     // random zeros are not all 8
  ExpectInvalid(PackGptqV1(bad).status(), {"sym", "zero"});
  bad = q;
  bad.scales[0] = 0x7c00;   // +Inf
  ExpectInvalid(PackGptqV1(bad).status(), {"scales", "finite"});
  bad = q;
  bad.bias.assign(31, 0);
  ExpectInvalid(PackGptqV1(bad).status(), {"bias", "31", "32"});
  bad = q;
  bad.num_groups = 3;
  ExpectInvalid(PackGptqV1(bad).status(), {"num_groups", "3"});
}

TEST(UnpackRejects, WrongDtypeShapeOrParams) {
  const QuantizedLinear q = RandomLinear({.n = 32, .k = 64, .bits = 4, .group_size = 32});
  absl::StatusOr<PackedLinear> p = PackGptqV1(q);
  ASSERT_TRUE(p.ok()) << p.status();
  PackedLinearView v = ViewOf(*p);
  v.qweight.dtype = storage::DType::kF32;
  ExpectInvalid(UnpackGptqV1(v, InfoOf(q)).status(), {"mlp.up_proj", "qweight", "I32"});
  v = ViewOf(*p);
  v.qzeros.shape = {2, 5};
  ExpectInvalid(UnpackGptqV1(v, InfoOf(q)).status(), {"qzeros", "[2, 4]"});
  PackedLinearInfo info = InfoOf(q);
  info.group_size = 16;   // 4 groups expected, the tensors have 2
  ExpectInvalid(UnpackGptqV1(ViewOf(*p), info).status(), {"scales", "4"});
  info = InfoOf(q);
  info.bits = 8;          // 8 rows of qweight hold 32 channels at 8 bits, g_idx says 64
  ExpectInvalid(UnpackGptqV1(ViewOf(*p), info).status(), {"qweight"});
  info = InfoOf(q);
  info.desc_act = true;
  v = ViewOf(*p);
  v.g_idx.reset();
  ExpectInvalid(UnpackGptqV1(v, info).status(), {"g_idx", "desc_act"});
  // Without desc_act a missing g_idx means k / group_size.
  v = ViewOf(*p);
  v.g_idx.reset();
  absl::StatusOr<QuantizedLinear> back = UnpackGptqV1(v, InfoOf(q));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->g_idx == q.g_idx);

  absl::StatusOr<PackedLinear> a = PackAwqGemm(q);
  ASSERT_TRUE(a.ok()) << a.status();
  info = InfoOf(q);
  info.bits = 3;
  ExpectInvalid(UnpackAwqGemm(ViewOf(*a), info).status(), {"bits", "4"});
  PackedLinearView av = ViewOf(*a);
  av.scales.shape = {2, 40};
  ExpectInvalid(UnpackAwqGemm(av, InfoOf(q)).status(), {"scales", "[2, 32]"});
}

// ---- dequantization -----------------------------------------------------------

// fp16 decoded by hand (normal and subnormal), independent of storage::HalfToFloat.
double HalfValue(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  const double mag = exp == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

TEST(DequantizeRef, MatchesNaiveLoop) {
  for (bool desc_act : {false, true}) {
    QuantizedLinear q = RandomLinear({.n = 48, .k = 128, .bits = 8, .group_size = 32, .desc_act = desc_act});
    q.scales[0] = 0x0001;   // smallest subnormal
    q.scales[1] = 0x83ff;   // negative subnormal
    const std::vector<float> w = DequantizeRef(q);
    ASSERT_EQ(w.size(), 48u * 128u);
    for (int64_t o = 0; o < 48; ++o) {
      for (int64_t i = 0; i < 128; ++i) {
        const int64_t g = q.g_idx[i];
        // 11-bit scale times a difference of at most 8 bits: exact in fp32.
        const double want = HalfValue(q.scales[g * 48 + o]) * (int{q.codes[o * 128 + i]} - int{q.zeros[g * 48 + o]});
        ASSERT_EQ(static_cast<double>(w[o * 128 + i]), want) << "o=" << o << " i=" << i;
      }
    }
  }
}

TEST(DequantizeRef, InvalidInputGivesEmptyOrError) {
  QuantizedLinear q = RandomLinear({.n = 8, .k = 32, .bits = 4, .group_size = 32});
  q.scales.clear();
  EXPECT_TRUE(DequantizeRef(q).empty());
  ExpectInvalid(DequantizeChecked(q).status(), {"mlp.up_proj", "scales"});
}

}  // namespace
}  // namespace qf::kernels
