// File: tests/kernels_gpu/w4a16_test_util.h
//
// Shared fixtures of the W4A16 tests: random QuantizedLinears that satisfy
// the dequantization contract (kernels/quant_types.h), random fp16
// activations, and the relative-error metric the thresholds are stated in.
//
//   QuantizedLinear q = RandomLinear({.n = 768, .k = 1024, .group_size = 128}, /*seed=*/1);
//   std::vector<uint16_t> a = RandomActivations(7, q.in_features, /*seed=*/2);
//   double e = RelErr(got, want);   // ||got - want||_2 / ||want||_2
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/quant_types.h"

namespace qf::kernels::testing {

struct LinearSpec {
  int64_t n = 0;         // out_features
  int64_t k = 0;         // in_features
  int group_size = 128;  // -1 = one group
  bool sym = false;
  bool desc_act = false;  // g_idx from a random channel permutation, GPTQ style
  bool bias = false;
};

// Codes and zeros uniform in [0, 15] (zeros 8 when sym), scales uniform in
// [2^-8, 2^-6] as fp16, bias uniform in [-1, 1].
QuantizedLinear RandomLinear(const LinearSpec& spec, uint64_t seed);

// fp16 bits, uniform in [-1, 1].
std::vector<uint16_t> RandomActivations(int64_t m, int64_t k, uint64_t seed);

// ||got - want||_2 / ||want||_2; +inf when got has a NaN/Inf or sizes differ.
double RelErr(const std::vector<float>& got, const std::vector<float>& want);

std::vector<float> HalfsToFloats(const std::vector<uint16_t>& h);

}  // namespace qf::kernels::testing
