// File: tests/kernels_gpu/device_array.h
//
// Small helpers of the GPU kernel tests: an owning device array, the words of
// a packed tensor, and an assertion on CUDA calls.
//
//   DeviceArray<uint16_t> a(host_halfs);          // cudaMalloc + copy
//   CUDA_ASSERT(cudaDeviceSynchronize());
//   std::vector<uint16_t> back = a.ToHost();
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

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

}  // namespace qf::kernels::testing
