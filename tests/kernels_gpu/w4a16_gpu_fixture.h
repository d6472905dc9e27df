// File: tests/kernels_gpu/w4a16_gpu_fixture.h
//
// What the fused W4A16 GEMM's GPU tests share (w4a16_gpu_test.cc for fp16,
// w4a16_bf16_gpu_test.cc for bf16): an owning device array, QF4 weights on
// the device in either element type, a fixture that skips without a device
// and runs the GEMM on host activations, and the repack on the device.
//
//   class MyTest : public W4A16GpuFixture {};
//   const DeviceLinear d(*RepackW4A16Ref(q), W4A16DType::kBF16);   // bf16 scales and bias
//   absl::StatusOr<std::vector<uint16_t>> c = RunFused(d, a_bits, m);  // C's 16-bit elements
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/w4a16.h"
#include "kernels/quant_types.h"
#include "kernels/ref/w4a16_ref.h"
#include "storage/safetensors.h"

#define CUDA_ASSERT(expr)                                                  \
  do {                                                                     \
    const cudaError_t e_ = (expr);                                         \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_); \
  } while (0)

namespace qf::kernels::testing {

// A device allocation of n elements (null when cudaMalloc fails), freed on
// destruction. Move-only.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : n_(n) {
    if (n > 0 && cudaMalloc(&p_, n * sizeof(T)) != cudaSuccess) p_ = nullptr;
  }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) {
    if (p_ != nullptr) cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  std::vector<T> ToHost() const {
    std::vector<T> v(n_);
    if (n_ > 0) cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// The little-endian words of a packed tensor.
template <class T>
std::vector<T> Words(const storage::OwnedTensor& t) {
  std::vector<T> v(t.data.size() / sizeof(T));
  std::memcpy(v.data(), t.data.data(), v.size() * sizeof(T));
  return v;
}

inline __half* H(const DeviceArray<uint16_t>& d) { return reinterpret_cast<__half*>(d.get()); }

// bf16 bits of fp16 bits, rounded to nearest even (what the repack does to
// the scales with out_dtype bf16), element by element.
std::vector<uint16_t> Bf16OfHalfs(const std::vector<uint16_t>& h);
std::vector<float> Bf16sToFloats(const std::vector<uint16_t>& b);

// QF4 weights on the device; with bf16, the scales and bias converted on the
// host (the repack tests check that the device conversion matches).
struct DeviceLinear {
  explicit DeviceLinear(const W4A16Weights& w, W4A16DType dtype = W4A16DType::kF16);
  const W4A16Weights* host;
  W4A16DType dtype;
  DeviceArray<uint32_t> qweight;
  DeviceArray<uint16_t> scales;
  DeviceArray<uint32_t> zeros;
  DeviceArray<int32_t> perm;
  DeviceArray<uint16_t> bias;
};

// "name m=.. n=.. k=.. gs=.. variant=<the launch W4A16Gemm would make>".
std::string Trace(const char* name, int64_t m, const W4A16Weights& w, W4A16DType dtype = W4A16DType::kF16);

// The QF4 tensors W4A16Repack writes from q packed as `source` (GPTQ v1,
// with the act-order perm; or AWQ GEMM), scales in out_dtype.
struct DeviceRepack {
  std::vector<uint32_t> qweight, zeros;
  std::vector<uint16_t> scales;
};
absl::StatusOr<DeviceRepack> RepackOnDevice(const QuantizedLinear& q, W4A16Source source,
                                            const std::vector<int32_t>& perm,
                                            W4A16DType out_dtype = W4A16DType::kF16);

class W4A16GpuFixture : public ::testing::Test {
 protected:
  void SetUp() override;

  // Runs the fused GEMM of d's type on host activations (16-bit elements of
  // that type) in input-channel order, the act-order gather included; C's
  // elements, or an error status. With `a_buffer` (device, at least m x k
  // elements; no act-order) the activations go there instead of into a fresh
  // allocation, so calls of different shapes share one address.
  absl::StatusOr<std::vector<uint16_t>> RunFused(const DeviceLinear& d, const std::vector<uint16_t>& a, int64_t m,
                                                 const char* variant = nullptr,
                                                 W4A16GemmArgs::StreamPlan stream_plan = {}, int tile_blocks = 0,
                                                 uint16_t* a_buffer = nullptr);

  W4A16Workspace ws_;
};

}  // namespace qf::kernels::testing
