// File: tests/engine_gpu/gptq_test_util.h
//
// GPTQ problems for the engine_gpu tests: a weight matrix and the Hessian of
// calibration inputs with a few large-magnitude channels and one dead
// channel, and the configurations every comparison sweeps.
//
//   GptqProblem pb = MakeGptqProblem(72, 320, /*seed=*/3, at::kCPU);
//   for (const GptqCase& c : GptqCases()) { QuantParams p = c.Params(); ... }
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "worker/engine/engine_host.h"

namespace qf::worker::testing {

struct GptqProblem {
  at::Tensor w;   // [rows, cols] float32
  at::Tensor h;   // [cols, cols] float32 = 2/N X^T X
};

// X: [4 * cols, cols] N(0,1) with channels 5 and cols/2 x20 and channel 7 dead.
GptqProblem MakeGptqProblem(int64_t rows, int64_t cols, uint64_t seed, const at::Device& device);

struct GptqCase {
  std::string name;
  int bits;
  int group_size;
  bool act_order;
  bool static_groups;
  bool sym;
  int64_t cols;   // not always a multiple of 128: a partial last block
  bool zero_at_least_one = false;
  QuantParams Params() const;
};

// Groups aligned with blocks, inside blocks, per row; act-order with dynamic
// and static groups; 2, 3, 4, 8 bits; a partial last block.
std::vector<GptqCase> GptqCases();

// Fraction of differing elements of two integer tensors of the same shape.
double MismatchFraction(const at::Tensor& a, const at::Tensor& b);

}  // namespace qf::worker::testing
