// CPU tests of the QF4 layout and the W4A16 reference (kernels/ref/w4a16_ref.h).
#include "kernels/ref/w4a16_ref.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "kernels/ref/pack.h"
#include "storage/safetensors.h"
#include "tests/kernels_gpu/w4a16_test_util.h"

namespace qf::kernels {
namespace {

using ::qf::kernels::testing::LinearSpec;
using ::qf::kernels::testing::RandomActivations;
using ::qf::kernels::testing::RandomLinear;
using ::testing::HasSubstr;

TEST(W4A16Layout, CodePositionsAreABijection) {
  const int64_t k = 48, n = 192;
  std::set<std::pair<int64_t, int>> seen;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t o = 0; o < n; ++o) {
      const W4A16Pos p = W4A16CodePos(j, o, n);
      ASSERT_GE(p.word, 0);
      ASSERT_LT(p.word, k * n / 8);
      ASSERT_EQ(p.shift % 4, 0);
      ASSERT_TRUE(seen.insert({p.word, p.shift}).second) << "k=" << j << " n=" << o;
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(k * n));
}

TEST(W4A16Layout, MatchesTheBitDiagram) {
  const int64_t n = 128;
  // Nibble p of word w of lane l: k = 2(l%4) + 8(p&1) + (p>>2), n = 8(2w + ((p>>1)&1)) + l/4.
  EXPECT_EQ(W4A16CodePos(0, 0, n).word, 0);
  EXPECT_EQ(W4A16CodePos(0, 0, n).shift, 0);
  EXPECT_EQ(W4A16CodePos(8, 0, n).shift, 4);    // p = 1: k + 8
  EXPECT_EQ(W4A16CodePos(0, 8, n).shift, 8);    // p = 2: fragment 2w + 1
  EXPECT_EQ(W4A16CodePos(1, 0, n).shift, 16);   // p = 4: k + 1
  EXPECT_EQ(W4A16CodePos(9, 8, n).shift, 28);   // p = 7
  EXPECT_EQ(W4A16CodePos(0, 16, n).word, 1);    // word 1 = fragments 2, 3
  EXPECT_EQ(W4A16CodePos(2, 0, n).word, 4);     // lane 1
  EXPECT_EQ(W4A16CodePos(0, 1, n).word, 16);    // lane 4
  EXPECT_EQ(W4A16CodePos(0, 64, n).word, 128);  // next 64-column tile
  EXPECT_EQ(W4A16CodePos(16, 0, n).word, 256);  // next 16-row slice: n/64 tiles later
  EXPECT_EQ(W4A16ScaleIndex(0, 8, n), 1);       // column 8f + r sits at 8r + f
  EXPECT_EQ(W4A16ScaleIndex(1, 1, n), n + 8);
  EXPECT_EQ(W4A16ZeroPos(0, 8, n).shift, 8);    // fragment 1: byte 1, low nibble
  EXPECT_EQ(W4A16ZeroPos(0, 32, n).shift, 4);   // fragment 4: byte 0, high nibble
  EXPECT_EQ(W4A16ZeroPos(0, 63, n).shift, 28);  // fragment 7: byte 3, high nibble
  EXPECT_EQ(W4A16ZeroPos(0, 1, n).word, 1);
  EXPECT_EQ(W4A16ZeroPos(0, 64, n).word, 8);
}

// Emulates the kernel's register-level dequantization on the host: for every
// lane and word, the four fp16 pairs that the masks 0x000F000F / 0x00F000F0
// (and the shift by 8) extract must be the mma.m16n8k16 B fragments
// b0 = (B[k0][n], B[k0+1][n]), b1 = (B[k0+8][n], B[k0+9][n]), k0 = 2(l%4), n = l/4.
TEST(W4A16Layout, MagicNumberExtractionYieldsMmaFragments) {
  QuantizedLinear q = RandomLinear({.n = 128, .k = 32, .group_size = 32}, 11);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const auto half_of = [](uint32_t reg, int hi) {
    return storage::HalfToFloat(static_cast<uint16_t>(reg >> (16 * hi)));
  };
  for (int64_t t = 0; t < q.in_features / 16; ++t) {
    for (int64_t c = 0; c < q.out_features / 64; ++c) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int wi = 0; wi < 4; ++wi) {
          const uint32_t word = w->qweight[(t * (q.out_features / 64) + c) * 128 + lane * 4 + wi];
          const uint32_t regs[4] = {(word & 0x000F000Fu) | 0x64006400u, (word & 0x00F000F0u) | 0x64006400u,
                                    ((word >> 8) & 0x000F000Fu) | 0x64006400u,
                                    ((word >> 8) & 0x00F000F0u) | 0x64006400u};
          for (int r = 0; r < 4; ++r) {
            const int frag = 2 * wi + r / 2;
            const bool upper = r % 2 == 1;  // b1: rows k0 + 8, k0 + 9; 1024 + 16q encoding
            const int64_t col = 64 * c + 8 * frag + lane / 4;
            for (int hi = 0; hi < 2; ++hi) {
              const int64_t row = 16 * t + 2 * (lane % 4) + (upper ? 8 : 0) + hi;
              const float v = half_of(regs[r], hi);
              const float code = upper ? (v / 16.0f - 64.0f) : (v - 1024.0f);
              ASSERT_EQ(code, q.codes[col * q.in_features + row]) << "lane " << lane << " word " << wi;
            }
          }
        }
      }
    }
  }
}

// The bf16 twin of the test above. bf16 has 7 mantissa bits, so the kernel
// shifts each nibble to bits 0..3 of its half first (by 0, 4, 8 and 12) and
// ORs the exponent of 128.0 (0x4300): the four registers must be 128 + code
// of the B fragments b0, b1 of fragment 2w and then of 2w+1.
TEST(W4A16Layout, Bf16MagicNumberExtractionYieldsMmaFragments) {
  QuantizedLinear q = RandomLinear({.n = 128, .k = 64, .group_size = 32}, 13);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  const auto bf16_of = [](uint32_t reg, int hi) {
    return storage::BFloat16ToFloat(static_cast<uint16_t>(reg >> (16 * hi)));
  };
  const auto and_or = [](uint32_t x) { return (x & 0x000F000Fu) | 0x43004300u; };
  for (int64_t t = 0; t < q.in_features / 16; ++t) {
    for (int64_t c = 0; c < q.out_features / 64; ++c) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int wi = 0; wi < 4; ++wi) {
          const uint32_t word = w->qweight[(t * (q.out_features / 64) + c) * 128 + lane * 4 + wi];
          const uint32_t regs[4] = {and_or(word), and_or(word >> 4), and_or(word >> 8), and_or(word >> 12)};
          for (int r = 0; r < 4; ++r) {
            const int frag = 2 * wi + r / 2;
            const bool upper = r % 2 == 1;  // b1: rows k0 + 8, k0 + 9
            const int64_t col = 64 * c + 8 * frag + lane / 4;
            for (int hi = 0; hi < 2; ++hi) {
              const int64_t row = 16 * t + 2 * (lane % 4) + (upper ? 8 : 0) + hi;
              const float v = bf16_of(regs[r], hi);
              const int code = q.codes[col * q.in_features + row];
              ASSERT_EQ(v, 128.0f + code) << "lane " << lane << " word " << wi;
            }
          }
        }
      }
    }
  }
  // The zero constant: bytes (z, 0x43) are bf16 128 + z for every 4-bit z.
  for (uint32_t z = 0; z < 16; ++z) EXPECT_EQ(storage::BFloat16ToFloat(static_cast<uint16_t>(0x4300u | z)), 128.0f + z);
}

// The kernel's zero extraction: masking a zeros word with 0x0F0F0F0F (and
// the word shifted right by 4) puts fragment f's zero in byte f % 4.
TEST(W4A16Layout, ZeroBytesFeedTheBytePermute) {
  QuantizedLinear q = RandomLinear({.n = 192, .k = 64, .group_size = 32}, 12);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
  ASSERT_TRUE(w.ok()) << w.status();
  for (int64_t g = 0; g < q.num_groups; ++g) {
    for (int64_t c = 0; c < q.out_features / 64; ++c) {
      for (int r = 0; r < 8; ++r) {
        const uint32_t zw = w->zeros[g * (q.out_features / 8) + c * 8 + r];
        const uint32_t lo = zw & 0x0F0F0F0Fu, hi = (zw >> 4) & 0x0F0F0F0Fu;
        for (int f = 0; f < 8; ++f) {
          const uint32_t z = ((f < 4 ? lo : hi) >> (8 * (f % 4))) & 0xFFu;
          ASSERT_EQ(z, q.zeros[g * q.out_features + 64 * c + 8 * f + r]) << "g " << g << " c " << c << " f " << f;
        }
      }
    }
  }
}

struct Format {
  const char* name;
  LinearSpec spec;
};

const Format kFormats[] = {
    {"asym_g128", {.n = 192, .k = 256, .group_size = 128}},
    {"asym_g32_bias", {.n = 128, .k = 128, .group_size = 32, .bias = true}},
    {"sym_g64", {.n = 64, .k = 192, .group_size = 64, .sym = true}},
    {"asym_channelwise", {.n = 128, .k = 96, .group_size = -1}},
    {"sym_g32_act_order", {.n = 128, .k = 256, .group_size = 32, .sym = true, .desc_act = true}},
    {"asym_g64_act_order", {.n = 64, .k = 256, .group_size = 64, .desc_act = true}},
};

TEST(W4A16Ref, RepackRoundTripsToDequantizeRef) {
  for (const Format& f : kFormats) {
    SCOPED_TRACE(f.name);
    QuantizedLinear q = RandomLinear(f.spec, 3);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->zeros.empty(), q.sym);
    EXPECT_EQ(w->perm.empty(), !q.desc_act);
    EXPECT_EQ(DequantizeW4A16Ref(*w), DequantizeRef(q));
  }
}

// The bf16 read-back: every weight from the neutral arrays (scale of the
// channel's group, code - zero), the scale and then the product rounded to
// bf16; and it really rounds (it differs from the fp16 read-back somewhere,
// by at most two bf16 roundings: 2^-8 relative each).
TEST(W4A16Ref, Bf16ReadBackRoundsScaleAndWeight) {
  const auto round_bf16 = [](float v) { return storage::BFloat16ToFloat(storage::FloatToBFloat16(v)); };
  for (const Format& f : kFormats) {
    SCOPED_TRACE(f.name);
    QuantizedLinear q = RandomLinear(f.spec, 4);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const std::vector<float> got = DequantizeW4A16RefBf16(*w), fp16 = DequantizeW4A16Ref(*w);
    ASSERT_EQ(got.size(), fp16.size());
    int64_t differ = 0;
    for (int64_t o = 0; o < q.out_features; ++o) {
      for (int64_t i = 0; i < q.in_features; ++i) {
        const int64_t g = q.g_idx[i], idx = o * q.in_features + i;
        const float scale = storage::HalfToFloat(q.scales[g * q.out_features + o]);
        const int diff = q.codes[idx] - q.zeros[g * q.out_features + o];
        ASSERT_EQ(got[idx], round_bf16(round_bf16(scale) * static_cast<float>(diff))) << "o " << o << " i " << i;
        ASSERT_LE(std::abs(got[idx] - fp16[idx]), 0x1.0p-7 * 1.01 * std::abs(fp16[idx]));
        differ += got[idx] != fp16[idx];
      }
    }
    EXPECT_GT(differ, 0);
  }
}

TEST(W4A16Ref, GemmMatchesDequantizedMatmul) {
  for (const Format& f : kFormats) {
    SCOPED_TRACE(f.name);
    QuantizedLinear q = RandomLinear(f.spec, 5);
    absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(q);
    ASSERT_TRUE(w.ok()) << w.status();
    const int64_t m = 3;
    const std::vector<uint16_t> a = RandomActivations(m, q.in_features, 6);
    absl::StatusOr<std::vector<float>> c = GemmW4A16Ref(a, m, *w);
    ASSERT_TRUE(c.ok()) << c.status();
    const std::vector<float> wt = DequantizeRef(q);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t o = 0; o < q.out_features; ++o) {
        double want = q.bias.empty() ? 0.0 : storage::HalfToFloat(q.bias[o]);
        for (int64_t i = 0; i < q.in_features; ++i) {
          want += static_cast<double>(storage::HalfToFloat(a[r * q.in_features + i])) * wt[o * q.in_features + i];
        }
        ASSERT_NEAR((*c)[r * q.out_features + o], want, 1e-5 * (1.0 + std::abs(want)));
      }
    }
  }
}

TEST(W4A16Ref, ActOrderPermSortsChannelsByGroup) {
  QuantizedLinear q = RandomLinear({.n = 64, .k = 128, .group_size = 32, .desc_act = true}, 9);
  absl::StatusOr<std::vector<int32_t>> perm = ActOrderPerm(q);
  ASSERT_TRUE(perm.ok()) << perm.status();
  ASSERT_EQ(perm->size(), 128u);
  for (int j = 0; j < 128; ++j) EXPECT_EQ(q.g_idx[(*perm)[j]], j / 32);
  q.desc_act = false;
  std::iota(q.g_idx.begin(), q.g_idx.end(), 0);
  for (auto& g : q.g_idx) g /= 32;
  perm = ActOrderPerm(q);
  ASSERT_TRUE(perm.ok());
  EXPECT_TRUE(perm->empty());
}

TEST(W4A16Ref, RejectsWhatTheKernelCannotRun) {
  QuantizedLinear uneven = RandomLinear({.n = 64, .k = 128, .group_size = 32, .desc_act = true}, 1);
  // Move one channel of group 0 into group 1: groups no longer hold 32 channels each.
  for (auto& g : uneven.g_idx) {
    if (g == 0) {
      g = 1;
      break;
    }
  }
  EXPECT_THAT(RepackW4A16Ref(uneven).status().message(), HasSubstr("g_idx"));
  EXPECT_EQ(RepackW4A16Ref(uneven).status().code(), absl::StatusCode::kInvalidArgument);

  QuantizedLinear narrow = RandomLinear({.n = 96, .k = 128, .group_size = 32}, 1);
  EXPECT_THAT(RepackW4A16Ref(narrow).status().message(), HasSubstr("out_features 96"));

  QuantizedLinear three_bit = RandomLinear({.n = 64, .k = 128, .group_size = 32}, 1);
  three_bit.bits = 3;
  for (auto& c : three_bit.codes) c &= 7;
  for (auto& z : three_bit.zeros) z &= 7;
  EXPECT_THAT(RepackW4A16Ref(three_bit).status().message(), HasSubstr("bits 3"));

  QuantizedLinear ok = RandomLinear({.n = 64, .k = 128, .group_size = 32}, 1);
  absl::StatusOr<W4A16Weights> w = RepackW4A16Ref(ok);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(GemmW4A16Ref(std::vector<uint16_t>(5), 1, *w).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qf::kernels
