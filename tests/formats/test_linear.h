// File: tests/formats/test_linear.h
//
// Builders and comparisons for QuantizedLinear in the format tests: random
// linears that satisfy the dequantization contract (kernels/quant_types.h),
// field-by-field equality, and reading int32 words out of a packed tensor.
//
//   QuantizedLinear q = RandomLinear({.n = 64, .k = 256, .bits = 3, .group_size = 32});
//   ExpectSameLinear(back, q);
//   uint32_t w = Word(packed.qweight, /*index=*/0);
#pragma once

#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "kernels/quant_types.h"
#include "storage/safetensors.h"

namespace qf::kernels::testing {

struct LinearShape {
  int64_t n = 64;
  int64_t k = 256;
  int bits = 4;
  int group_size = 128;
  bool sym = false;
  bool desc_act = false;
  bool bias = false;
  uint32_t seed = 1;
  std::string name = "mlp.up_proj";
};

// Codes, zeros and scales drawn uniformly (zeros include 0, the GPTQ v1 edge
// case); with desc_act, g_idx is a random permutation of k / group_size.
inline QuantizedLinear RandomLinear(const LinearShape& s) {
  std::mt19937 rng(s.seed);
  const uint32_t levels = 1u << s.bits;
  QuantizedLinear q;
  q.name = s.name;
  q.bits = s.bits;
  q.group_size = s.group_size;
  q.sym = s.sym;
  q.desc_act = s.desc_act;
  q.out_features = s.n;
  q.in_features = s.k;
  q.num_groups = s.group_size == -1 ? 1 : s.k / s.group_size;
  q.codes.resize(s.n * s.k);
  for (auto& c : q.codes) c = static_cast<uint8_t>(rng() % levels);
  q.zeros.resize(q.num_groups * s.n);
  for (auto& z : q.zeros) z = static_cast<uint8_t>(s.sym ? levels / 2 : rng() % levels);
  q.scales.resize(q.num_groups * s.n);
  // Positive normal fp16 values in [2^-14, 2): exponent 1..15, any mantissa.
  for (auto& h : q.scales) h = static_cast<uint16_t>(((1 + rng() % 15) << 10) | (rng() & 0x3ff));
  std::vector<int64_t> order(s.k);
  std::iota(order.begin(), order.end(), 0);
  if (s.desc_act) std::shuffle(order.begin(), order.end(), rng);
  q.g_idx.resize(s.k);
  for (int64_t i = 0; i < s.k; ++i) {
    q.g_idx[i] = s.group_size == -1 ? 0 : static_cast<int32_t>(order[i] / s.group_size);
  }
  if (s.bias) {
    q.bias.resize(s.n);
    for (auto& h : q.bias) h = static_cast<uint16_t>(rng() & 0x7bff);   // finite, either sign
  }
  return q;
}

inline void ExpectSameLinear(const QuantizedLinear& a, const QuantizedLinear& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.sym, b.sym);
  EXPECT_EQ(a.desc_act, b.desc_act);
  EXPECT_EQ(a.out_features, b.out_features);
  EXPECT_EQ(a.in_features, b.in_features);
  EXPECT_EQ(a.num_groups, b.num_groups);
  EXPECT_TRUE(a.codes == b.codes) << a.name << ": codes differ";
  EXPECT_TRUE(a.scales == b.scales) << a.name << ": scales differ";
  EXPECT_TRUE(a.zeros == b.zeros) << a.name << ": zeros differ";
  EXPECT_TRUE(a.g_idx == b.g_idx) << a.name << ": g_idx differs";
  EXPECT_TRUE(a.bias == b.bias) << a.name << ": bias differs";
}

// Element `index` of an int32 tensor, as unsigned bits.
inline uint32_t Word(const storage::OwnedTensor& t, int64_t index) {
  uint32_t w = 0;
  std::memcpy(&w, t.data.data() + 4 * index, 4);
  return w;
}

}  // namespace qf::kernels::testing
