#include "tests/kernels_gpu/w4a16_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "storage/safetensors.h"

namespace qf::kernels::testing {
namespace {

// splitmix64: fast, and good enough to fill hundreds of millions of codes.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
};

}  // namespace

QuantizedLinear RandomLinear(const LinearSpec& spec, uint64_t seed) {
  Rng rng{seed * 0x2545F4914F6CDD1Dull + 1};
  QuantizedLinear q;
  q.name = "test.linear";
  q.bits = 4;
  q.group_size = spec.group_size;
  q.sym = spec.sym;
  q.desc_act = spec.desc_act;
  q.out_features = spec.n;
  q.in_features = spec.k;
  const int64_t gs = spec.group_size == -1 ? spec.k : spec.group_size;
  q.num_groups = spec.k / gs;
  const size_t nk = static_cast<size_t>(spec.n * spec.k);
  q.codes.resize(nk);
  for (size_t i = 0; i < nk; i += 16) {
    uint64_t bits = rng.Next();
    for (size_t j = i; j < std::min(nk, i + 16); ++j, bits >>= 4) q.codes[j] = static_cast<uint8_t>(bits & 15u);
  }
  const size_t gn = static_cast<size_t>(q.num_groups * spec.n);
  q.scales.resize(gn);
  q.zeros.resize(gn);
  for (size_t i = 0; i < gn; ++i) {
    q.scales[i] = storage::FloatToHalf(static_cast<float>(std::ldexp(1.0, -8) * (1.0 + 3.0 * rng.Uniform())));
    q.zeros[i] = spec.sym ? uint8_t{8} : static_cast<uint8_t>(rng.Next() & 15u);
  }
  q.g_idx.resize(static_cast<size_t>(spec.k));
  std::vector<int64_t> order(static_cast<size_t>(spec.k));
  std::iota(order.begin(), order.end(), 0);
  if (spec.desc_act) {
    for (int64_t i = spec.k - 1; i > 0; --i) std::swap(order[i], order[rng.Next() % static_cast<uint64_t>(i + 1)]);
  }
  for (int64_t j = 0; j < spec.k; ++j) q.g_idx[order[j]] = static_cast<int32_t>(j / gs);
  if (spec.bias) {
    q.bias.resize(static_cast<size_t>(spec.n));
    for (auto& b : q.bias) b = storage::FloatToHalf(static_cast<float>(2.0 * rng.Uniform() - 1.0));
  }
  return q;
}

std::vector<uint16_t> RandomActivations(int64_t m, int64_t k, uint64_t seed) {
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 7};
  std::vector<uint16_t> a(static_cast<size_t>(m * k));
  for (auto& v : a) v = storage::FloatToHalf(static_cast<float>(2.0 * rng.Uniform() - 1.0));
  return a;
}

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? (num == 0 ? 0 : std::numeric_limits<double>::infinity()) : std::sqrt(num / den);
}

std::vector<float> HalfsToFloats(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = storage::HalfToFloat(h[i]);
  return f;
}

}  // namespace qf::kernels::testing
