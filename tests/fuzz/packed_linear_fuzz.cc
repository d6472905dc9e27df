// File: tests/fuzz/packed_linear_fuzz.cc
//
// UnpackGptqV1 and UnpackAwqGemm (kernels/ref/pack.h) on packed tensors of
// any dtype and shape, as a checkpoint can hand them over: every reader of an
// artifact (eval, verify, export, the W4A16 repack) starts here. Input:
//
//   byte 0      flags: 1 AWQ (else GPTQ v1), 2 sym, 4 desc_act, 8 has g_idx, 16 has bias
//   byte 1      bits: {2, 3, 4, 8}[byte % 4]
//   byte 2      group_size: 0 -> -1, else the byte
//   bytes 3-8   qweight, qzeros, scales: rows, cols (one byte each)
//   bytes 9-10  g_idx length (little-endian)
//   byte 11     bias length
//   bytes 12-16 dtypes of qweight, qzeros, scales, g_idx, bias (DType order % 15)
//   the rest    the tensors' bytes in that order, zero-padded
//
// An accepted linear must satisfy the dequantization contract
// (ValidateQuantizedLinear) and pack back to the very bytes it came from:
// unpacking loses nothing and invents nothing.
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "kernels/ref/pack.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using qf::storage::DType;
using qf::storage::TensorView;

struct Input {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  // The next n bytes, zero-padded past the end of the input.
  std::string Take(size_t n) {
    std::string out(n, '\0');
    for (size_t i = 0; i < n && pos < size; ++i) out[i] = static_cast<char>(data[pos++]);
    return out;
  }
};

TensorView View(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::string& bytes) {
  TensorView v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.data = bytes;
  return v;
}

void CheckSameBytes(const qf::storage::OwnedTensor& packed, const TensorView& in, const char* what) {
  QF_FUZZ_CHECK(packed.dtype == in.dtype && packed.shape == in.shape, "%s: repacked with another dtype or shape",
                what);
  QF_FUZZ_CHECK(packed.data == in.data, "%s: repacked bytes differ from the input", what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 17) return 0;
  constexpr std::array<int, 4> kBits = {2, 3, 4, 8};
  const uint8_t flags = data[0];
  const bool awq = flags & 1;
  qf::kernels::PackedLinearInfo info;
  info.name = "mlp.fuzz_proj";
  info.bits = kBits[data[1] % 4];
  info.group_size = data[2] == 0 ? -1 : data[2];
  info.sym = flags & 2;
  info.desc_act = flags & 4;
  const auto dtype = [&](int i) { return static_cast<DType>(data[12 + i] % 15); };
  const int64_t g_len = data[9] | (data[10] << 8);
  Input in{data, size, 17};
  const auto bytes = [&](DType d, int64_t numel) { return in.Take(static_cast<size_t>(numel) * qf::storage::DTypeSize(d)); };

  const std::string qw = bytes(dtype(0), int64_t{data[3]} * data[4]);
  const std::string qz = bytes(dtype(1), int64_t{data[5]} * data[6]);
  const std::string sc = bytes(dtype(2), int64_t{data[7]} * data[8]);
  const std::string gi = (flags & 8) ? bytes(dtype(3), g_len) : std::string();
  const std::string bi = (flags & 16) ? bytes(dtype(4), data[11]) : std::string();
  qf::kernels::PackedLinearView view{View("qweight", dtype(0), {data[3], data[4]}, qw),
                                     View("qzeros", dtype(1), {data[5], data[6]}, qz),
                                     View("scales", dtype(2), {data[7], data[8]}, sc), std::nullopt, std::nullopt};
  if (flags & 8) view.g_idx = View("g_idx", dtype(3), {g_len}, gi);
  if (flags & 16) view.bias = View("bias", dtype(4), {data[11]}, bi);

  auto q = awq ? qf::kernels::UnpackAwqGemm(view, info) : qf::kernels::UnpackGptqV1(view, info);
  if (!q.ok()) {
    qf::fuzz::CheckRefusal(q.status(), info.name);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  const absl::Status valid = qf::kernels::ValidateQuantizedLinear(*q);
  QF_FUZZ_CHECK(valid.ok(), "accepted, but breaks the contract: %s", std::string(valid.message()).c_str());
  QF_FUZZ_CHECK(qf::kernels::DequantizeRef(*q).size() == static_cast<size_t>(q->out_features * q->in_features),
                "dequantized size");
  auto packed = awq ? qf::kernels::PackAwqGemm(*q) : qf::kernels::PackGptqV1(*q);
  QF_FUZZ_CHECK(packed.ok(), "accepted, but does not pack again: %s", std::string(packed.status().message()).c_str());
  CheckSameBytes(packed->qweight, view.qweight, "qweight");
  CheckSameBytes(packed->qzeros, view.qzeros, "qzeros");
  CheckSameBytes(packed->scales, view.scales, "scales");
  if (view.g_idx && packed->g_idx) CheckSameBytes(*packed->g_idx, *view.g_idx, "g_idx");
  QF_FUZZ_CHECK(packed->bias.has_value() == view.bias.has_value(), "bias appeared or vanished");
  if (view.bias) CheckSameBytes(*packed->bias, *view.bias, "bias");
  return 0;
}
