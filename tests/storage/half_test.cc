// fp16 / bf16 conversion: exact anchor values, ties to even, overflow, NaN,
// subnormals; then sweeps against independent references (the compiler's
// _Float16 conversion, and a nearest-of-two-neighbours search for bf16).
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "storage/safetensors.h"
#include "storage/synthetic_model.h"

namespace qf::storage {
namespace {

bool IsHalfNaN(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }
bool IsBF16NaN(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x007f) != 0; }

TEST(HalfTest, ExactValuesBothWays) {
  struct Row { float value; uint16_t bits; };
  const Row rows[] = {
      {0.0f, 0x0000},       {-0.0f, 0x8000},          {1.0f, 0x3c00},           {-2.0f, 0xc000},
      {0.5f, 0x3800},       {65504.0f, 0x7bff},       {0x1p-14f, 0x0400},       // smallest normal
      {0x1p-24f, 0x0001},   {0x3ffp-24f, 0x03ff},     // smallest / largest subnormal
      {-0x1p-24f, 0x8001},  {0.333251953125f, 0x3555}, {1.0f + 0x1p-10f, 0x3c01},
      {std::numeric_limits<float>::infinity(), 0x7c00}, {-std::numeric_limits<float>::infinity(), 0xfc00},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.value);
    EXPECT_EQ(FloatToHalf(r.value), r.bits);
    EXPECT_EQ(std::bit_cast<uint32_t>(HalfToFloat(r.bits)), std::bit_cast<uint32_t>(r.value));
  }
}

TEST(HalfTest, RoundsToNearestTiesToEven) {
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);                 // tie, 0x3c00 is even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);             // tie, rounds up to even
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3c01);  // just past the tie
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + 0x1p-11f, 0.0f)), 0x3c00);
  EXPECT_EQ(FloatToHalf(2047.0f + 0.5f), 0x6800);                  // 2048: carry into the exponent
  // Subnormal range: units of 2^-24.
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);                        // half a unit: tie to 0
  EXPECT_EQ(FloatToHalf(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);                    // 1.5 units -> 2
  EXPECT_EQ(FloatToHalf(5 * 0x1p-25f), 0x0002);                    // 2.5 units -> 2
  EXPECT_EQ(FloatToHalf(0x1p-30f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0x1p-30f), 0x8000);                       // sign survives underflow
  EXPECT_EQ(FloatToHalf(0x3ffp-24f + 0x1p-25f), 0x0400);           // tie at the top: to the smallest normal
}

TEST(HalfTest, OverflowAndNaN) {
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);   // tie between 65504 (odd) and 2^16: Inf
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::max()), 0x7c00);
  const uint16_t qnan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(IsHalfNaN(qnan));
  EXPECT_TRUE(qnan & 0x0200) << "quiet bit";
  EXPECT_TRUE(IsHalfNaN(FloatToHalf(std::numeric_limits<float>::signaling_NaN())));
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::quiet_NaN()) & 0x8000, 0x8000);
  // A NaN whose payload sits only in the low float bits must not become Inf.
  EXPECT_TRUE(IsHalfNaN(FloatToHalf(std::bit_cast<float>(0x7f800001u))));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0xfc01)));
}

TEST(HalfTest, EveryHalfSurvivesARoundTrip) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (IsHalfNaN(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f)) << h;
      ASSERT_TRUE(IsHalfNaN(FloatToHalf(f))) << h;
    } else {
      ASSERT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

#if defined(__FLT16_MAX__)
// The compiler's float -> _Float16 conversion is an independent IEEE reference.
TEST(HalfTest, MatchesCompilerConversionOnAFloatSweep) {
  uint64_t checked = 0;
  // Stride through every exponent and mantissa pattern, plus all floats around
  // each half's rounding boundaries where mistakes would hide.
  auto check = [&](uint32_t bits) {
    const float f = std::bit_cast<float>(bits);
    if (std::isnan(f)) return;
    const uint16_t want = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    ASSERT_EQ(FloatToHalf(f), want) << std::hex << "float bits 0x" << bits;
    ++checked;
  };
  for (uint64_t bits = 0; bits <= 0xffffffffu; bits += 997) check(static_cast<uint32_t>(bits));
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const uint32_t mid = std::bit_cast<uint32_t>((HalfToFloat(h) + HalfToFloat(h + 1)) / 2);
    for (uint32_t d = 0; d < 3; ++d) {
      check(mid - 1 + d);
      check((mid - 1 + d) | 0x80000000u);
    }
  }
  EXPECT_GT(checked, 4'000'000u);
}
#endif

TEST(BFloat16Test, ExactValuesAndTies) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(-2.0f), 0xc000);
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(FloatToBFloat16(3.14159265f), 0x4049);
  EXPECT_EQ(FloatToBFloat16(1.0f + 0x1p-8f), 0x3f80);       // tie, even stays
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * 0x1p-8f), 0x3f82);   // tie, up to even
  EXPECT_EQ(FloatToBFloat16(std::nextafter(1.0f + 0x1p-8f, 2.0f)), 0x3f81);
  EXPECT_EQ(FloatToBFloat16(0x1p-133f), 0x0001);            // bf16 subnormal
  EXPECT_EQ(BFloat16ToFloat(0x0001), 0x1p-133f);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);   // rounds past the max: Inf
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = FloatToBFloat16(std::bit_cast<float>(0x7f800001u));  // payload only in dropped bits
  EXPECT_TRUE(IsBF16NaN(nan));
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::quiet_NaN()) & 0x8000, 0x8000);
}

TEST(BFloat16Test, EveryBFloat16SurvivesARoundTrip) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(h));
    if (IsBF16NaN(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(IsBF16NaN(FloatToBFloat16(f))) << h;
    } else {
      ASSERT_EQ(FloatToBFloat16(f), h) << h;
    }
  }
}

// Reference: of the two bf16 values around f (truncation and the next one up
// in magnitude), take the nearer, the even one on a tie; computed in double.
uint16_t NearestBFloat16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t lo = static_cast<uint16_t>(bits >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dlo = std::fabs(double(f) - BFloat16ToFloat(lo));
  const double vhi = (hi & 0x7fff) == 0x7f80 ? std::ldexp(std::copysign(1.0, f), 128) : BFloat16ToFloat(hi);
  const double dhi = std::fabs(double(f) - vhi);
  if (dlo != dhi) return dlo < dhi ? lo : hi;
  return (lo & 1) ? hi : lo;
}

TEST(BFloat16Test, MatchesNearestNeighbourReferenceOnAFloatSweep) {
  for (uint64_t bits = 0; bits <= 0xffffffffu; bits += 1009) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(bits));
    if (std::isnan(f) || std::isinf(f)) continue;
    ASSERT_EQ(FloatToBFloat16(f), NearestBFloat16(f)) << std::hex << "float bits 0x" << bits;
  }
}

// The array conversion (F16C where available) gives FloatToHalf's bits: every
// 4099th float bit pattern (NaNs, infinities, subnormals, ties included) and
// an array length that is not a multiple of 8.
TEST(HalfTest, FloatsToHalfMatchesFloatToHalf) {
  std::vector<float> in;
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 4099) in.push_back(std::bit_cast<float>(static_cast<uint32_t>(b)));
  for (uint32_t b : {0x33000000u, 0x33000001u, 0x387fe000u, 0x38800000u, 0x477fefffu, 0x477ff000u, 0x7f800001u})
    in.push_back(std::bit_cast<float>(b));
  std::vector<uint16_t> out(in.size());
  FloatsToHalf(in.data(), static_cast<int64_t>(in.size()), out.data());
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(out[i], FloatToHalf(in[i])) << "float bits " << std::bit_cast<uint32_t>(in[i]);
}

// FirstNonFinite: each float dtype's NaN and Inf patterns found at their flat
// index, in the first, a middle and the last block, through a view that is not
// aligned to the element; finite extremes (largest, subnormal, -0) and integer
// dtypes pass.
TEST(HalfTest, FirstNonFiniteFindsNaNAndInfByIndex) {
  struct Row { DType dtype; int width; std::vector<uint64_t> finite, bad; };
  const Row rows[] = {
      {DType::kF16, 2, {0x7bff, 0xfbff, 0x0001, 0x8000}, {0x7c00, 0xfc00, 0x7e00, 0x7c01}},
      {DType::kBF16, 2, {0x7f7f, 0xff7f, 0x0001, 0x8000}, {0x7f80, 0xff80, 0x7fc0, 0xffff}},
      {DType::kF32, 4, {0x7f7fffff, 0x00000001, 0x80000000}, {0x7f800000, 0xff800000, 0x7fc00000}},
      {DType::kF64, 8, {0x7fefffffffffffffull, 1}, {0x7ff0000000000000ull, 0xfff8000000000000ull}},
      {DType::kF8E5M2, 1, {0x7b, 0xfb, 0x01}, {0x7c, 0xfc, 0x7f}},
      {DType::kF8E4M3, 1, {0x7e, 0xfe, 0x01}, {0x7f, 0xff}},
  };
  constexpr int64_t kN = 10000;  // three blocks of the scan
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(DTypeName(r.dtype)));
    // One leading byte, so that the view is not aligned to its elements.
    std::string bytes(1 + kN * r.width, '\0');
    const auto put = [&](int64_t i, uint64_t bits) { std::memcpy(&bytes[1 + i * r.width], &bits, r.width); };
    for (int64_t i = 0; i < kN; ++i) put(i, r.finite[i % r.finite.size()]);
    TensorView v{"t", r.dtype, {kN}, std::string_view(bytes).substr(1)};
    EXPECT_EQ(FirstNonFinite(v), -1);
    for (uint64_t bad : r.bad) {
      for (int64_t at : {int64_t{0}, int64_t{4095}, int64_t{4096}, int64_t{7001}, kN - 1}) {
        put(at, bad);
        put(kN - 1, bad);  // a later one must not hide the first
        EXPECT_EQ(FirstNonFinite(v), at) << std::hex << bad << std::dec << " at " << at;
        put(at, r.finite[0]);
        put(kN - 1, r.finite[0]);
      }
    }
  }
  std::string ints(64, '\xff');
  EXPECT_EQ(FirstNonFinite(TensorView{"i", DType::kI32, {16}, ints}), -1);
  EXPECT_EQ(FirstNonFinite(TensorView{"u", DType::kU8, {64}, ints}), -1);
}

}  // namespace
}  // namespace qf::storage
