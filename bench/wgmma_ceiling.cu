// File: bench/wgmma_ceiling.cu
//
// The tensor-pipe ceiling of the wgmma shapes the W4A16 kernels use, on the
// GPU at hand: each block's warpgroups issue batches of 8 wgmma.m64nNk16
// (fp16 in, fp32 accumulate) back to back on operands that stay in shared
// memory (and registers), with nothing else in the loop, one wait per batch
// as in w4a16_wgmma_kernel.cuh (wait_group 1: one batch left in flight).
//
// Why: at M = 64 the register-A kernel's wgmma are m64n64k16 (the 64 rows of
// A are the N operand), at M = 256 m64n256k16. If the narrow shape cannot
// keep the tensor cores busy on its own, no amount of work around it will.
// Every row prints its rate against the first row (m64n256k16, both operands
// in shared memory, two warpgroups: what a dense fp16 GEMM issues), measured
// in the same run.
//
//   wgmma_ceiling [--iters=N]
#include <cuda_runtime.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include "kernels/cuda/w4a16/w4a16_wgmma_kernel.cuh"

namespace {

using namespace qf::kernels::w4a16;

// D[64 x 64] += A[64 x 16] * B[16 x 64], both in shared memory: the one
// shared-A width the kernels do not use.
__device__ __forceinline__ void WgmmaSsM64N64K16(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
  QF_SM90A(asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " QF_WG_D32
                        ", %32, %33, 1, 1, 1, 0, 0;\n"
                        : QF_WG_ACC32(d, 0)
                        : "l"(desc_a), "l"(desc_b)));
}

template <int N, bool kRegA>
__device__ __forceinline__ void Issue(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (kRegA) {
    WgmmaM64K16<N>(d, a, desc_b);
  } else if constexpr (N == 64) {
    WgmmaSsM64N64K16(d, desc_a, desc_b);
  } else if constexpr (N == 128) {
    WgmmaSsM64N128K16(d, desc_a, desc_b);
  } else {
    WgmmaSsM64N256K16(d, desc_a, desc_b);
  }
}

constexpr int kBatch = 8;  // wgmma per commit group (a 128-row stage)

// Shared memory: B = N rows x 128 bytes (one 128-byte swizzle atom per 8
// rows), then A = 64 rows x 128 bytes; contents are zeros (the rate does not
// depend on them).
template <int N, bool kRegA, int kWgs>
__global__ void __launch_bounds__(128 * kWgs, 1) CeilingKernel(int iters, float* out) {
  extern __shared__ int4 smem_raw[];
  char* base = reinterpret_cast<char*>(smem_raw) + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
  for (int i = threadIdx.x; i < (N + 64) * 8; i += blockDim.x) reinterpret_cast<int4*>(base)[i] = int4{0, 0, 0, 0};
  __syncthreads();
  const uint32_t b_addr = SmemAddr(base), a_addr = b_addr + N * 128;
  float acc[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) acc[i] = 0.f;
  const uint32_t a[4] = {threadIdx.x, threadIdx.x ^ 1u, threadIdx.x ^ 2u, threadIdx.x ^ 3u};
  for (int it = 0; it < iters; ++it) {
    WgmmaFence();
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      Issue<N, kRegA>(acc, a, SmemDescSw128(a_addr + 32 * (j % 4)), SmemDescSw128(b_addr + 32 * (j % 4)));
    }
    WgmmaCommit();
    WgmmaWait<1>();
  }
  WgmmaWait<0>();
  FenceRegs(acc);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < N / 2; ++i) s += acc[i];
  if (s != 0.f) out[blockIdx.x] = s;  // never (zero operands); keeps the loop
}

struct Row {
  const char* name;
  int n, wgs;
  bool reg_a;
  void (*kernel)(int, float*);
};

template <int N, bool kRegA, int kWgs>
constexpr Row MakeRow(const char* name) {
  return Row{name, N, kWgs, kRegA, &CeilingKernel<N, kRegA, kWgs>};
}

// First row: the baseline every other row is divided by.
const Row kRows[] = {
    MakeRow<256, false, 2>("ss m64n256k16, 2 warpgroups"),
    MakeRow<256, false, 1>("ss m64n256k16, 1 warpgroup"),
    MakeRow<256, true, 2>("rs m64n256k16, 2 warpgroups (M = 256 kernel)"),
    MakeRow<256, true, 1>("rs m64n256k16, 1 warpgroup"),
    MakeRow<128, false, 2>("ss m64n128k16, 2 warpgroups"),
    MakeRow<128, true, 2>("rs m64n128k16, 2 warpgroups"),
    MakeRow<128, true, 4>("rs m64n128k16, 4 warpgroups"),
    MakeRow<64, false, 2>("ss m64n64k16, 2 warpgroups"),
    MakeRow<64, false, 4>("ss m64n64k16, 4 warpgroups"),
    MakeRow<64, true, 1>("rs m64n64k16, 1 warpgroup"),
    MakeRow<64, true, 2>("rs m64n64k16, 2 warpgroups (M = 64 kernel)"),
    MakeRow<64, true, 4>("rs m64n64k16, 4 warpgroups"),
};

bool Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "wgmma_ceiling: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--iters=", 8) == 0) {
      const char* v = argv[i] + 8;
      const char* end = v + std::strlen(v);
      const std::from_chars_result r = std::from_chars(v, end, iters);
      if (r.ec != std::errc() || r.ptr != end) {  // empty, not a number, or a tail
        std::fprintf(stderr, "wgmma_ceiling: --iters expects an integer, got '%s'\n", v);
        return 2;
      }
    } else {
      std::fprintf(stderr, "wgmma_ceiling: unknown argument '%s' (expected --iters=N)\n", argv[i]);
      return 2;
    }
  }
  if (iters <= 0) {
    std::fprintf(stderr, "wgmma_ceiling: --iters must be positive\n");
    return 2;
  }
  cudaDeviceProp prop{};
  if (!Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) return 1;
  if (prop.major != 9) {
    std::fprintf(stderr, "wgmma_ceiling: needs an sm_90 GPU (wgmma), found sm_%d%d\n", prop.major, prop.minor);
    return 1;
  }
  float* out = nullptr;
  if (!Check(cudaMalloc(&out, sizeof(float) * prop.multiProcessorCount), "cudaMalloc")) return 1;
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  std::printf("%s, %d SMs, %d x %d wgmma per warpgroup\n", prop.name, prop.multiProcessorCount, iters, kBatch);
  std::printf("%-48s %10s %8s\n", "shape", "TFLOP/s", "ratio");
  double baseline = 0;
  for (const Row& r : kRows) {
    const size_t smem = 1024 + size_t(r.n + 64) * 128;
    if (!Check(cudaFuncSetAttribute(r.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), r.name))
      return 1;
    const dim3 grid(prop.multiProcessorCount), block(128 * r.wgs);
    r.kernel<<<grid, block, smem>>>(iters / 10, out);  // warm-up (clocks, caches)
    cudaEventRecord(t0);
    r.kernel<<<grid, block, smem>>>(iters, out);
    cudaEventRecord(t1);
    if (!Check(cudaEventSynchronize(t1), r.name)) return 1;
    float ms = 0;
    cudaEventElapsedTime(&ms, t0, t1);
    const double flop = 2.0 * 64 * r.n * 16 * kBatch * double(iters) * r.wgs * prop.multiProcessorCount;
    const double tflops = flop / (ms * 1e-3) / 1e12;
    if (baseline == 0) baseline = tflops;
    std::printf("%-48s %10.1f %7.2fx\n", r.name, tflops, tflops / baseline);
  }
  cudaFree(out);
  return 0;
}
