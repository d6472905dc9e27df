#include "kernels/ref/w4a16_ref.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "kernels/ref/pack.h"
#include "storage/safetensors.h"

namespace qf::kernels {
namespace {

absl::Status Invalid(const std::string& linear, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("W4A16 repack of linear '", linear, "': ", what));
}

}  // namespace

W4A16Pos W4A16CodePos(int64_t k, int64_t n, int64_t n_total) {
  const int64_t t = k / kW4A16TileK, c = n / kW4A16TileN;
  const int kr = static_cast<int>(k % kW4A16TileK), nr = static_cast<int>(n % kW4A16TileN);
  // Inverse of the diagram in the header: k = 2*(l%4) + 8*(p&1) + (p>>2),
  // n = 8*(2w + ((p>>1)&1)) + l/4.
  const int frag = nr / 8, row_in_frag = nr % 8;
  const int lane = row_in_frag * 4 + (kr % 8) / 2;
  const int p = ((kr / 8) & 1) | ((frag & 1) << 1) | ((kr & 1) << 2);
  const int w = frag / 2;
  const int64_t tile = t * (n_total / kW4A16TileN) + c;
  return {tile * kW4A16TileWords + lane * 4 + w, 4 * p};
}

int64_t W4A16ScaleIndex(int64_t g, int64_t n, int64_t n_total) {
  const int64_t c = n / kW4A16TileN;
  const int nr = static_cast<int>(n % kW4A16TileN);
  return g * n_total + c * kW4A16TileN + (nr % 8) * 8 + nr / 8;
}

int W4A16ZeroShift(int fragment) { return fragment < 4 ? 8 * fragment : 8 * (fragment - 4) + 4; }

W4A16Pos W4A16ZeroPos(int64_t g, int64_t n, int64_t n_total) {
  const int64_t c = n / kW4A16TileN;
  const int nr = static_cast<int>(n % kW4A16TileN);
  return {g * (n_total / 8) + c * 8 + nr % 8, W4A16ZeroShift(nr / 8)};
}

absl::StatusOr<std::vector<int32_t>> ActOrderPerm(const QuantizedLinear& q) {
  if (!q.desc_act || q.num_groups <= 1) return std::vector<int32_t>{};
  const int64_t k = q.in_features;
  if (static_cast<int64_t>(q.g_idx.size()) != k) {
    return Invalid(q.name, absl::StrCat("g_idx has ", q.g_idx.size(), " entries, expected in_features ", k));
  }
  std::vector<int32_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t x, int32_t y) { return q.g_idx[x] < q.g_idx[y]; });
  const int64_t gs = q.group_size == -1 ? k : q.group_size;
  for (int64_t j = 0; j < k; ++j) {
    if (q.g_idx[perm[j]] != j / gs) {
      return Invalid(q.name, absl::StrCat("g_idx: group ", q.g_idx[perm[j]], " does not hold exactly group_size ", gs,
                                          " channels (kernel row ", j, " expected group ", j / gs, ")"));
    }
  }
  bool identity = true;
  for (int64_t j = 0; j < k && identity; ++j) identity = perm[j] == j;
  if (identity) perm.clear();
  return perm;
}

absl::StatusOr<W4A16Weights> RepackW4A16Ref(const QuantizedLinear& q) {
  QF_RETURN_IF_ERROR(ValidateQuantizedLinear(q));
  if (q.bits != 4) return Invalid(q.name, absl::StrCat("bits ", q.bits, " (expected 4)"));
  const int64_t k = q.in_features, n = q.out_features;
  if (k % kW4A16TileK != 0 || n % kW4A16TileN != 0) {
    return Invalid(q.name, absl::StrCat("in_features ", k, " x out_features ", n, " (expected multiples of ",
                                        kW4A16TileK, " and ", kW4A16TileN, ")"));
  }
  if (q.group_size != -1 && q.group_size % kW4A16TileK != 0) {
    return Invalid(q.name, absl::StrCat("group_size ", q.group_size, " (expected -1 or a multiple of 16)"));
  }
  W4A16Weights w;
  w.name = q.name;
  w.k = k;
  w.n = n;
  w.group_size = q.group_size;
  w.num_groups = q.num_groups;
  w.bias = q.bias;
  QF_ASSIGN_OR_RETURN(w.perm, ActOrderPerm(q));

  w.qweight.assign(static_cast<size_t>(k * n / 8), 0u);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t ch = w.perm.empty() ? j : w.perm[j];
    for (int64_t o = 0; o < n; ++o) {
      const W4A16Pos pos = W4A16CodePos(j, o, n);
      w.qweight[pos.word] |= uint32_t{q.codes[o * k + ch]} << pos.shift;
    }
  }
  w.scales.assign(q.scales.size(), 0);
  if (!q.sym) w.zeros.assign(static_cast<size_t>(q.num_groups * n / 8), 0u);
  for (int64_t g = 0; g < q.num_groups; ++g) {
    for (int64_t o = 0; o < n; ++o) {
      w.scales[W4A16ScaleIndex(g, o, n)] = q.scales[g * n + o];
      if (!q.sym) {
        const W4A16Pos pos = W4A16ZeroPos(g, o, n);
        w.zeros[pos.word] |= uint32_t{q.zeros[g * n + o]} << pos.shift;
      }
    }
  }
  return w;
}

namespace {

// bf16 rounding of a float (nearest even), back as a float.
float RoundBf16(float v) { return storage::BFloat16ToFloat(storage::FloatToBFloat16(v)); }

std::vector<float> Dequantize(const W4A16Weights& w, bool bf16) {
  const int64_t k = w.k, n = w.n, gs = w.effective_group_size();
  std::vector<float> out(static_cast<size_t>(n * k));
  for (int64_t j = 0; j < k; ++j) {
    const int64_t ch = w.perm.empty() ? j : w.perm[j];
    const int64_t g = j / gs;
    for (int64_t o = 0; o < n; ++o) {
      const W4A16Pos cp = W4A16CodePos(j, o, n);
      const int code = static_cast<int>((w.qweight[cp.word] >> cp.shift) & 15u);
      int zero = kW4A16SymZero;
      if (!w.zeros.empty()) {
        const W4A16Pos zp = W4A16ZeroPos(g, o, n);
        zero = static_cast<int>((w.zeros[zp.word] >> zp.shift) & 15u);
      }
      const float scale = storage::HalfToFloat(w.scales[W4A16ScaleIndex(g, o, n)]);
      out[o * k + ch] =
          bf16 ? RoundBf16(RoundBf16(scale) * static_cast<float>(code - zero)) : scale * static_cast<float>(code - zero);
    }
  }
  return out;
}

}  // namespace

std::vector<float> DequantizeW4A16Ref(const W4A16Weights& w) { return Dequantize(w, false); }

std::vector<float> DequantizeW4A16RefBf16(const W4A16Weights& w) { return Dequantize(w, true); }

absl::StatusOr<std::vector<float>> GemmW4A16Ref(const std::vector<uint16_t>& a, int64_t m, const W4A16Weights& w) {
  if (m < 0 || static_cast<int64_t>(a.size()) != m * w.k) {
    return absl::InvalidArgumentError(absl::StrCat("GemmW4A16Ref of linear '", w.name, "': A has ", a.size(),
                                                   " elements, expected m*k = ", m, "*", w.k));
  }
  const std::vector<float> wt = DequantizeW4A16Ref(w);
  std::vector<double> af(a.size());
  for (size_t i = 0; i < a.size(); ++i) af[i] = storage::HalfToFloat(a[i]);
  std::vector<float> c(static_cast<size_t>(m * w.n));
  for (int64_t r = 0; r < m; ++r) {
    const double* ar = af.data() + r * w.k;
    for (int64_t o = 0; o < w.n; ++o) {
      const float* wr = wt.data() + o * w.k;
      double acc = w.bias.empty() ? 0.0 : storage::HalfToFloat(w.bias[o]);
      for (int64_t i = 0; i < w.k; ++i) acc += ar[i] * static_cast<double>(wr[i]);
      c[r * w.n + o] = static_cast<float>(acc);
    }
  }
  return c;
}

}  // namespace qf::kernels
