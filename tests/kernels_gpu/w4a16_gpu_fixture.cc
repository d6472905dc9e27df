#include "tests/kernels_gpu/w4a16_gpu_fixture.h"

#include "kernels/ref/pack.h"

namespace qf::kernels::testing {

std::vector<uint16_t> Bf16OfHalfs(const std::vector<uint16_t>& h) {
  std::vector<uint16_t> b(h.size());
  for (size_t i = 0; i < h.size(); ++i) b[i] = storage::FloatToBFloat16(storage::HalfToFloat(h[i]));
  return b;
}

std::vector<float> Bf16sToFloats(const std::vector<uint16_t>& b) {
  std::vector<float> f(b.size());
  for (size_t i = 0; i < b.size(); ++i) f[i] = storage::BFloat16ToFloat(b[i]);
  return f;
}

namespace {

std::vector<uint16_t> AsType(const std::vector<uint16_t>& halfs, W4A16DType dtype) {
  return dtype == W4A16DType::kBF16 ? Bf16OfHalfs(halfs) : halfs;
}

}  // namespace

DeviceLinear::DeviceLinear(const W4A16Weights& w, W4A16DType t)
    : host(&w),
      dtype(t),
      qweight(w.qweight),
      scales(AsType(w.scales, t)),
      zeros(w.zeros),
      perm(w.perm),
      bias(AsType(w.bias, t)) {}

std::string Trace(const char* name, int64_t m, const W4A16Weights& w, W4A16DType dtype) {
  absl::StatusOr<std::string> v = W4A16LaunchDescription(m, w.n, w.k, w.group_size, nullptr, dtype);
  return std::string(name) + " m=" + std::to_string(m) + " n=" + std::to_string(w.n) + " k=" + std::to_string(w.k) +
         " gs=" + std::to_string(w.group_size) + " variant=" + (v.ok() ? *v : "none");
}

absl::StatusOr<DeviceRepack> RepackOnDevice(const QuantizedLinear& q, W4A16Source source,
                                            const std::vector<int32_t>& perm, W4A16DType out_dtype) {
  const bool gptq = source == W4A16Source::kGptqV1;
  absl::StatusOr<PackedLinear> packed = gptq ? PackGptqV1(q) : PackAwqGemm(q);
  if (!packed.ok()) return packed.status();
  DeviceArray<uint32_t> qweight(Words<uint32_t>(packed->qweight)), qzeros(Words<uint32_t>(packed->qzeros));
  DeviceArray<uint16_t> scales(Words<uint16_t>(packed->scales));
  DeviceArray<int32_t> perm_dev(perm);
  DeviceArray<uint32_t> out_q(static_cast<size_t>(q.in_features * q.out_features / 8));
  DeviceArray<uint32_t> out_z(q.sym ? 0 : static_cast<size_t>(q.num_groups * q.out_features / 8));
  DeviceArray<uint16_t> out_s(static_cast<size_t>(q.num_groups * q.out_features));
  W4A16RepackArgs args;
  args.source = source;
  args.qweight = qweight.get();
  args.qzeros = q.sym ? nullptr : qzeros.get();
  args.scales = H(scales);
  args.perm = perm.empty() ? nullptr : perm_dev.get();
  args.out_qweight = out_q.get();
  args.out_zeros = q.sym ? nullptr : out_z.get();
  args.out_scales = out_s.get();
  args.out_dtype = out_dtype;
  args.k = q.in_features;
  args.n = q.out_features;
  args.num_groups = q.num_groups;
  if (absl::Status s = W4A16Repack(args); !s.ok()) return s;
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
  return DeviceRepack{out_q.ToHost(), out_z.ToHost(), out_s.ToHost()};
}

void W4A16GpuFixture::SetUp() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    GTEST_SKIP() << "no CUDA device";
  }
}

absl::StatusOr<std::vector<uint16_t>> W4A16GpuFixture::RunFused(const DeviceLinear& d, const std::vector<uint16_t>& a,
                                                                int64_t m, const char* variant,
                                                                W4A16GemmArgs::StreamPlan stream_plan,
                                                                int tile_blocks, uint16_t* a_buffer) {
  const W4A16Weights& w = *d.host;
  if (a_buffer != nullptr && d.perm.size()) return absl::InvalidArgumentError("a_buffer with an act-order perm");
  if (a_buffer != nullptr && cudaMemcpy(a_buffer, a.data(), a.size() * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
    return absl::InternalError("copying A into a_buffer");
  }
  // Without a_buffer, A goes to a fresh allocation (built in place: no host copy of a).
  DeviceArray<uint16_t> a_dev = a_buffer == nullptr ? DeviceArray<uint16_t>(a) : DeviceArray<uint16_t>();
  DeviceArray<uint16_t> a_perm(d.perm.size() ? a.size() : 0);
  DeviceArray<uint16_t> c(static_cast<size_t>(m * w.n));
  cudaMemset(c.get(), 0xFF, c.size() * 2);  // NaN everywhere (either type): unwritten outputs fail RelErr
  const void* a_in = a_buffer != nullptr ? a_buffer : a_dev.get();
  if (d.perm.size()) {
    if (absl::Status s = W4A16PermuteColumns(a_dev.get(), d.perm.get(), a_perm.get(), m, w.k); !s.ok()) return s;
    a_in = a_perm.get();
  }
  if (absl::Status s = ws_.Reserve(W4A16WorkspaceBytes(m, w.n, w.k, 0, variant, d.dtype)); !s.ok()) return s;
  W4A16GemmArgs args;
  args.dtype = d.dtype;
  args.a = a_in;
  args.qweight = d.qweight.get();
  args.scales = d.scales.get();
  args.zeros = d.zeros.size() ? d.zeros.get() : nullptr;
  args.bias = d.bias.size() ? d.bias.get() : nullptr;
  args.c = c.get();
  args.m = m;
  args.n = w.n;
  args.k = w.k;
  args.group_size = w.group_size;
  args.workspace = ws_.data();
  args.workspace_bytes = ws_.size();
  args.variant = variant;
  args.stream_plan = stream_plan;
  args.tile_blocks = tile_blocks;
  if (absl::Status s = W4A16Gemm(args); !s.ok()) return s;
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
  return c.ToHost();
}

}  // namespace qf::kernels::testing
