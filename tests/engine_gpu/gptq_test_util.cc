#include "tests/engine_gpu/gptq_test_util.h"

#include <ATen/CPUGeneratorImpl.h>

namespace qf::worker::testing {

GptqProblem MakeGptqProblem(int64_t rows, int64_t cols, uint64_t seed, const at::Device& device) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor w = at::randn({rows, cols}, gen, at::kFloat) * 0.05;
  at::Tensor x = at::randn({4 * cols, cols}, gen, at::kFloat);
  x.select(1, 5).mul_(20);
  x.select(1, cols / 2).mul_(20);
  x.select(1, 7).zero_();
  at::Tensor h = at::matmul(x.t(), x) * (2.0 / static_cast<double>(x.size(0)));
  return {w.to(device), h.to(device)};
}

QuantParams GptqCase::Params() const {
  QuantParams p;
  p.bits = bits;
  p.group_size = group_size;
  p.act_order = act_order;
  p.static_groups = static_groups;
  p.sym = sym;
  p.zero_at_least_one = zero_at_least_one;
  return p;
}

std::vector<GptqCase> GptqCases() {
  return {
      {"b4_g128", 4, 128, false, false, false, 384},
      {"b4_g64_partial_block", 4, 64, false, false, false, 320},
      {"b4_g128_zero_at_least_one", 4, 128, false, false, false, 256, true},
      {"b3_g32_act_order", 3, 32, true, false, false, 320},
      {"b4_g64_static_act_order", 4, 64, true, true, false, 320},
      {"b4_per_row_sym_act_order", 4, -1, true, false, true, 200},
      {"b8_g128", 8, 128, false, false, false, 256},
      {"b2_g256_sym", 2, 256, false, false, true, 512},
  };
}

double MismatchFraction(const at::Tensor& a, const at::Tensor& b) {
  return static_cast<double>(a.to(at::kCPU).to(at::kLong).ne(b.to(at::kCPU).to(at::kLong)).sum().item<int64_t>()) /
         static_cast<double>(a.numel());
}

}  // namespace qf::worker::testing
