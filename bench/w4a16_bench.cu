// Benchmark of the fused W4A16 GEMM (kernels/cuda/w4a16.h) against cuBLAS
// FP16 (cublasGemmEx, the call torch.nn.functional.linear makes) on the
// Llama-70B projection shapes, in one run on one GPU; with --dtype=bf16 both
// run bf16 activations, scales and outputs (cuBLAS BF16).
//
// Method: random weights (asymmetric, group 128, the common GPTQ setting) in
// QF4; the 16-bit weights cuBLAS reads are their dequantization rounded to
// the run's type. Both outputs are compared with an fp32 reference (fp32 weights and
// activations, fp32 cuBLAS): "rel.err" = ||C - C32|| / ||C32||, where
// cuBLAS's includes its weights' rounding. Two timings of every row:
//   cold call:   each timed call is preceded by a 256 MiB streaming read
//                that evicts L2 (50 MB on H100), with CUDA events around the
//                one call: its launch and ramp-up are in the time.
//   decode loop: what a decode step through 80 layers does: one CUDA graph
//                of >= 24 back-to-back calls rotating over copies of the
//                weights that together exceed L2 four times (each call finds
//                its weights cold), replayed; time per call. Ours with
//                W4A16GemmArgs::pdl (each call launches during the previous
//                one's epilogue) and without; cuBLAS as torch calls it.
//                The targets are checked on this timing.
// Medians over --iters calls (replays) after --warmup. The roofline is the
// bytes a call must move (packed weights + scales + zeros + A + C) over the
// peak read bandwidth that a plain streaming-read kernel reaches in the same
// run; the read floor is that kernel on the packed weights alone, timed both ways.
//
//   w4a16_bench [--iters=50] [--warmup=5] [--ms=1,4,16,64,256] [--shapes=qkv,o,gate_up,down|KxN,...]
//               [--sweep[=SUBSTR,...]] [--variant=NAME] [--grids (with --sweep)] [--dtype=fp16|bf16] [--pull]
//               [--settle-ms=MS (250)] [--sweep-settle-ms=MS (0)]
//
// --sweep also times every compiled variant (W4A16VariantNames; with
// substrings, those whose name contains one, or =NAME exactly) per row and prints them after
// the table: the data for retuning the selection table. The grid each row
// ran with (W4A16LaunchDescription) is listed under the table. --grids adds,
// for the swept weight-streaming and decode variants, every grid
// (W4A16GemmArgs::stream_plan: wn x wk warps, cluster split) that fits: the
// data for checking the planner's model; for the swept tiled and wgmma
// variants, grids of whole tiles, even splits and stream-K
// (W4A16GemmArgs::tile_blocks). --shapes also takes K x N pairs
// ("768x256": a model's own projections, such as the ones qctl verify times);
// their decode loop rotates over at most kMaxCopies weight copies. --pull
// runs split decode grids with the pull reduction (W4A16GemmArgs::stream_plan
// .pull; the grid lines still name the planned push): the push reduction's A/B.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/w4a16_bench_options.h"
#include "kernels/cuda/w4a16.h"

namespace {

#define CUDA_CHECK(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                                    \
  do {                                                                                                        \
    const cublasStatus_t s_ = (expr);                                                                         \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                        \
      std::fprintf(stderr, "%s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__, #expr, static_cast<int>(s_)); \
      std::exit(1);                                                                                           \
    }                                                                                                         \
  } while (0)

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

struct Shape {
  std::string name;
  int64_t k, n;
  bool targeted = true;  // the issue's targets apply (the 70B shapes; not K x N pairs)
};
const Shape kShapes[] = {{"qkv", 8192, 10240}, {"o", 8192, 8192}, {"gate_up", 8192, 57344}, {"down", 28672, 8192}};

// The shapes a run measures: the named ones in table order, then the K x N
// pairs in the order given (W4A16BenchOptions::shapes, already validated).
std::vector<Shape> SelectedShapes(const std::vector<std::string>& wanted) {
  std::vector<Shape> out;
  for (const Shape& s : kShapes) {
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), s.name) != wanted.end()) out.push_back(s);
  }
  for (const std::string& w : wanted) {
    int64_t k = 0, n = 0;
    if (qf::bench::ParseKxN(w, &k, &n)) out.push_back({w, k, n, false});
  }
  return out;
}
constexpr int kGroupSize = 128;

__device__ __forceinline__ uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void FillWords(uint32_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    p[i] = static_cast<uint32_t>(Mix(seed * 0x9E3779B97F4A7C15ull + i));
  }
}

// The run's 16-bit element type (--dtype): the buffers below are __half
// arrays that hold bf16 bits when bf16 is set.
__host__ __device__ inline float ElemToFloat(const __half* p, size_t i, bool bf16) {
  return bf16 ? __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]) : __half2float(p[i]);
}

__global__ void ElemsToFloat(const __half* in, float* out, size_t n, bool bf16) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    out[i] = ElemToFloat(in, i, bf16);
  }
}

__global__ void FillElems(__half* p, size_t n, float lo, float hi, uint64_t seed, bool bf16) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    const float u = static_cast<float>(Mix(seed * 0x9E3779B97F4A7C15ull + i) >> 40) * 0x1.0p-24f;
    const float v = lo + (hi - lo) * u;
    if (bf16) {
      reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
    } else {
      p[i] = __float2half(v);
    }
  }
}

// w[o][j] = scale * (code - zero) read through the QF4 index formulas
// (kernels/ref/w4a16_ref.h); one thread per weight, j fastest. T = __half
// or __nv_bfloat16 for cuBLAS (one rounding per weight), float for the fp32
// reference; the scales are bf16 when bf16 is set.
template <class T>
__global__ void DequantQf4(const uint32_t* qweight, const __half* scales, bool bf16, const uint32_t* zeros, T* w,
                           int64_t k, int64_t n, int gs) {
  const int64_t total = k * n;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t o = idx / k, j = idx % k;
    const int64_t t = j / 16, c = o / 64;
    const int kr = static_cast<int>(j % 16), nr = static_cast<int>(o % 64);
    const int frag = nr / 8, lane = (nr % 8) * 4 + (kr % 8) / 2;
    const int p = ((kr / 8) & 1) | ((frag & 1) << 1) | ((kr & 1) << 2);
    const uint32_t word = qweight[(t * (n / 64) + c) * 128 + lane * 4 + frag / 2];
    const int code = static_cast<int>((word >> (4 * p)) & 15u);
    const int64_t g = j / gs;
    const int f = nr / 8, zshift = f < 4 ? 8 * f : 8 * (f - 4) + 4;
    const int zero = static_cast<int>((zeros[g * (n / 8) + c * 8 + nr % 8] >> zshift) & 15u);
    const float scale = ElemToFloat(scales, g * n + c * 64 + (nr % 8) * 8 + nr / 8, bf16);
    w[idx] = static_cast<T>(scale * static_cast<float>(code - zero));
  }
}

// Plain streaming read: 16-byte loads, four in flight per thread.
__global__ void StreamRead(const int4* p, size_t n, int* sink) {
  int acc = 0;
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const int4 a = __ldg(p + i), b = __ldg(p + i + stride), c = __ldg(p + i + 2 * stride),
               d = __ldg(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const int4 a = __ldg(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x7A3B1C2D) *sink = acc;  // keeps the loads alive
}

// The packed weights read in a weight-streaming kernel's order, nothing
// else: block (x, y) holds `wn` warps, warp i streams QF4 tile column
// x * wn + i over k-part y of gridDim.y, 16 slices (512 bytes each) in
// flight. `runs` = 1: QF4 as it is (slice-major: a tile column's slices lie
// n/64 x 512 bytes apart); 16: as if every 16 slices of a tile column were
// one contiguous 8 KB run. Separates what the DRAM access pattern costs from
// what the kernels' own work costs.
__global__ void TileOrderRead(const int4* b, int n64, int slices, int runs, int* sink) {
  const int lane = threadIdx.x & 31;
  const int tile = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int s0 = static_cast<int>(static_cast<long long>(slices) * blockIdx.y / gridDim.y);
  const int s1 = static_cast<int>(static_cast<long long>(slices) * (blockIdx.y + 1) / gridDim.y);
  const auto at = [&](int t) {
    const long long unit = runs == 1 ? static_cast<long long>(t) * n64 + tile
                                     : (static_cast<long long>(t / runs) * n64 + tile) * runs + t % runs;
    return b + unit * 32 + lane;
  };
  int acc = 0;
  for (int s = s0; s < s1; s += 16) {
    int4 v[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = s + i < s1 ? __ldcs(at(s + i)) : make_int4(0, 0, 0, 0);
#pragma unroll
    for (int i = 0; i < 16; ++i) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  }
  if (acc == 0x7A3B1C2D) *sink = acc;
}

int Blocks(size_t n) { return static_cast<int>(std::min<size_t>((n + 255) / 256, 65535 * 8)); }

struct Timer {
  cudaEvent_t e0, e1;
  int settle_ms = 0;  // W4A16BenchOptions::settle_ms
  // Waits for the device, then idles settle_ms: the SM clock recovers from
  // the power cap that the previous measurement may have driven it into.
  void Settle() const {
    if (settle_ms <= 0) return;
    CUDA_CHECK(cudaDeviceSynchronize());
    std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
  }
  Timer() {
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
  }
  // Median microseconds of `launch`, each call preceded by `flush` (outside the events).
  template <class F, class G>
  double MedianUs(F launch, G flush, int warmup, int iters) {
    Settle();
    for (int i = 0; i < warmup; ++i) {
      flush();
      launch();
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> ms;
    for (int i = 0; i < iters; ++i) {
      flush();
      CUDA_CHECK(cudaEventRecord(e0));
      launch();
      CUDA_CHECK(cudaEventRecord(e1));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float t = 0;
      CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[ms.size() / 2];
  }
  // Median microseconds per call of a decode loop: launch(i) for i in [0,
  // calls) issued on `stream`, captured into one CUDA graph and replayed
  // back to back (no flush: the calls rotate over weight copies that
  // together exceed L2 several times, so each finds its weights cold).
  template <class F>
  double GraphUs(cudaStream_t stream, F launch, int calls, int warmup, int iters) {
    Settle();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) launch(i);
    CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < warmup; ++i) CUDA_CHECK(cudaGraphLaunch(exec, stream));
    std::vector<float> ms;
    for (int i = 0; i < iters; ++i) {
      CUDA_CHECK(cudaEventRecord(e0, stream));
      CUDA_CHECK(cudaGraphLaunch(exec, stream));
      CUDA_CHECK(cudaEventRecord(e1, stream));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float t = 0;
      CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[ms.size() / 2] / calls;
  }
};

// Device copies of one buffer, copy 0 the original: what the decode-loop
// timing rotates over.
template <class T>
struct Copies {
  std::vector<T*> p;
  Copies(T* original, size_t bytes, int count) : p{original} {
    for (int i = 1; i < count; ++i) {
      T* c = nullptr;
      CUDA_CHECK(cudaMalloc(&c, bytes));
      CUDA_CHECK(cudaMemcpy(c, original, bytes, cudaMemcpyDeviceToDevice));
      p.push_back(c);
    }
  }
  ~Copies() {
    for (size_t i = 1; i < p.size(); ++i) cudaFree(p[i]);
  }
  T* operator[](int i) const { return p[i % p.size()]; }
};

// Copies of `bytes` whose sum exceeds L2 four times (at least two), and the
// calls of one graph: a multiple of the copies, at least 24.
// Small weights (K x N shapes) stop at kMaxCopies: a 768 x 256 layer would
// otherwise need thousands, and a model that small stays in L2 anyway.
constexpr int kMaxCopies = 256;
int CopiesFor(double bytes, size_t l2) {
  return std::clamp(static_cast<int>(std::ceil(4.0 * l2 / bytes)), 2, kMaxCopies);
}
int CallsFor(int copies) { return copies * ((24 + copies - 1) / copies); }

// ||got - want|| / ||want|| of 16-bit results against the fp32 reference.
double RelErr16(const std::vector<__half>& got, const std::vector<float>& want, bool bf16) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = ElemToFloat(got.data(), i, bf16), w = want[i];
    if (!std::isfinite(g)) return INFINITY;
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> shape_names;
  for (const Shape& s : kShapes) shape_names.emplace_back(s.name);
  qf::bench::W4A16BenchOptions opt;
  if (const int rc = qf::bench::ParseW4A16BenchOptions(argc, argv, shape_names, &opt); rc >= 0) return rc;
  const int iters = opt.iters, warmup = opt.warmup;
  const std::vector<int64_t>& ms = opt.ms;
  const bool sweep = opt.sweep, grids = opt.grids, bf16 = opt.bf16, pull = opt.pull;
  const std::vector<std::string>& sweep_filter = opt.sweep_filter;
  const std::string& forced_variant = opt.variant;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %.0f MiB, cc %d.%d\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1048576.0, prop.major, prop.minor);
  if (pull) std::printf("split decode grids: pull reduction (--pull)\n");

  // Peak read bandwidth: a 2 GiB streaming read. Its first 256 MiB double as the L2 flush.
  const size_t bw_bytes = size_t{2} << 30, flush_bytes = size_t{256} << 20;
  int4* bw_buf = nullptr;
  int* sink = nullptr;
  CUDA_CHECK(cudaMalloc(&bw_buf, bw_bytes));
  CUDA_CHECK(cudaMalloc(&sink, sizeof(int)));
  CUDA_CHECK(cudaMemset(bw_buf, 0x5A, bw_bytes));
  Timer timer;
  timer.settle_ms = opt.settle_ms;
  const int stream_blocks = prop.multiProcessorCount * 8;
  const auto no_flush = [] {};
  const auto flush = [&] { StreamRead<<<stream_blocks, 512>>>(bw_buf, flush_bytes / 16, sink); };
  const double bw_us =
      timer.MedianUs([&] { StreamRead<<<stream_blocks, 512>>>(bw_buf, bw_bytes / 16, sink); }, no_flush, 3, 20);
  CUDA_CHECK(cudaGetLastError());
  const double peak_bw = bw_bytes / (bw_us * 1e-6);  // bytes/s
  std::printf("peak read bandwidth (streaming read of 2 GiB): %.0f GB/s\n", peak_bw / 1e9);
  std::printf(
      "cold call: L2 flushed before every timed call (256 MiB read), events around the one call; median of %d calls "
      "after %d warmup\n",
      iters, warmup);
  std::printf(
      "decode loop: one CUDA graph of back-to-back calls rotating over weight copies (> 4x L2 together; at most "
      "256 for small K x N shapes, which then stay in L2), replayed "
      "%d times after %d; median per call. Ours launched with pdl (programmatic dependent launch) and without; "
      "cuBLAS as torch calls it. The targets are checked on this one.\n",
      iters, warmup);
  std::printf("settle: the device idles %d ms before every timed measurement of the table, %d ms in the sweep "
              "(power-cap recovery)\n",
              opt.settle_ms, opt.sweep_settle_ms);
  const qf::kernels::W4A16DType dtype = bf16 ? qf::kernels::W4A16DType::kBF16 : qf::kernels::W4A16DType::kF16;
  const cudaDataType cuda_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const char* type_name = bf16 ? "bf16" : "fp16";
  std::printf(
      "weights: asymmetric 4-bit, group %d, %s activations and scales; cuBLAS: cublasGemmEx %s in/out, fp32 "
      "compute\n\n",
      kGroupSize, type_name, type_name);

  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  cudaStream_t gs;  // the decode-loop graphs are captured on it
  CUDA_CHECK(cudaStreamCreateWithFlags(&gs, cudaStreamNonBlocking));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  constexpr size_t kCublasWorkspace = size_t{32} << 20;
  void* cublas_ws = nullptr;
  CUDA_CHECK(cudaMalloc(&cublas_ws, kCublasWorkspace));
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());
  qf::kernels::W4A16Workspace ws;

  std::printf(
      "| shape | K x N | M | variant | cold: ours us | cuBLAS us | speedup | loop: ours us (pdl) | ours no pdl | "
      "cuBLAS us | speedup | ours TB/s | roofline | cuBLAS roofline | rel.err ours | cuBLAS | target |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  int met = 0, total = 0;
  std::map<std::pair<std::string, int64_t>, double> cublas_us, cublas_loop_us;  // pass 0 -> pass 1
  std::vector<std::string> plans;                                // grid of each table row
  std::vector<std::string> floors;                               // streaming read of each shape's weights
  const auto swept = [&](const std::string& name) {
    if (sweep_filter.empty()) return true;
    for (const std::string& f : sweep_filter) {
      if (f[0] == '=' ? name == f.substr(1) : name.find(f) != std::string::npos) return true;
    }
    return false;
  };
  // After the table: targets met, the grid of each row, the read floors.
  const auto print_summary = [&] {
    std::printf("\ntargets (M<=16: >=3.5x and >=85%% roofline; M=64: >=2x; M=256: >=1x): %d of %d met\n", met, total);
    std::printf("\ngrids:\n");
    for (const std::string& pl : plans) std::printf("  %s\n", pl.c_str());
    std::printf("\nread floor (streaming read of the packed weights alone, timed as the calls: cold call | decode loop):\n");
    for (const std::string& f : floors) std::printf("  %s\n", f.c_str());
  };
  // Pass 0: the table (the selected variant, or --variant). Pass 1 (--sweep):
  // every variant, printed as it goes so that a failing one loses nothing.
  for (int pass = 0; pass < (sweep ? 2 : 1); ++pass) {
    if (pass == 1) {
      timer.settle_ms = opt.sweep_settle_ms;
      print_summary();
      std::printf(
          "\nsweep: every variant that takes the shape (cold call, then decode loop with pdl)\n"
          "| shape | M | variant | cold us | vs cuBLAS | loop us | vs cuBLAS | roofline |\n|---|---|---|---|---|---|---|---|\n");
      std::fflush(stdout);
    }
    for (const Shape& s : SelectedShapes(opt.shapes)) {
      const int64_t k = s.k, n = s.n, groups = k / kGroupSize;
      uint32_t *qweight, *zeros;
      __half *scales, *w16, *a, *c_ours, *c_ref;
      CUDA_CHECK(cudaMalloc(&qweight, k * n / 2));
      CUDA_CHECK(cudaMalloc(&zeros, groups * n / 2));
      CUDA_CHECK(cudaMalloc(&scales, groups * n * 2));
      CUDA_CHECK(cudaMalloc(&w16, k * n * 2));
      CUDA_CHECK(cudaMalloc(&a, max_m * k * 2));
      CUDA_CHECK(cudaMalloc(&c_ours, max_m * n * 2));
      CUDA_CHECK(cudaMalloc(&c_ref, max_m * n * 2));
      FillWords<<<Blocks(k * n / 8), 256>>>(qweight, k * n / 8, 1);
      FillWords<<<Blocks(groups * n / 8), 256>>>(zeros, groups * n / 8, 2);
      FillElems<<<Blocks(groups * n), 256>>>(scales, groups * n, 1.0f / 256, 1.0f / 64, 3, bf16);
      FillElems<<<Blocks(max_m * k), 256>>>(a, max_m * k, -1.0f, 1.0f, 4, bf16);
      if (bf16) {
        DequantQf4<<<Blocks(k * n), 256>>>(qweight, scales, bf16, zeros, reinterpret_cast<__nv_bfloat16*>(w16), k, n,
                                           kGroupSize);
      } else {
        DequantQf4<<<Blocks(k * n), 256>>>(qweight, scales, bf16, zeros, w16, k, n, kGroupSize);
      }
      // The fp32 reference: exact weights and activations, fp32 cuBLAS (no
      // TF32 in the default math mode); both results are checked against it.
      float *w32, *a32, *c32;
      CUDA_CHECK(cudaMalloc(&w32, k * n * 4));
      CUDA_CHECK(cudaMalloc(&a32, max_m * k * 4));
      CUDA_CHECK(cudaMalloc(&c32, max_m * n * 4));
      DequantQf4<<<Blocks(k * n), 256>>>(qweight, scales, bf16, zeros, w32, k, n, kGroupSize);
      ElemsToFloat<<<Blocks(max_m * k), 256>>>(a, a32, max_m * k, bf16);
      CUDA_CHECK(cudaGetLastError());
      Check(ws.Reserve(qf::kernels::W4A16WorkspaceBytes(max_m, n, k, 0, nullptr, dtype)), "workspace");
      // The decode loop's weight copies (cuBLAS's: table pass only).
      const size_t wbytes = static_cast<size_t>(k) * n / 2;
      const int nq = CopiesFor(wbytes + groups * n * 2.5, l2);
      const int n16 = pass == 0 ? CopiesFor(k * n * 2.0, l2) : 1;
      const Copies<uint32_t> qw_c(qweight, wbytes, nq), zeros_c(zeros, groups * n / 2, nq);
      const Copies<__half> scales_c(scales, groups * n * 2, nq), w16_c(w16, k * n * 2, n16);
      if (pass == 0) {
        // The floor of each method for these bytes: a plain streaming read of
        // the packed weights alone, timed like every call.
        const double t_read = timer.MedianUs(
            [&] { StreamRead<<<stream_blocks, 512>>>(reinterpret_cast<const int4*>(qweight), wbytes / 16, sink); },
            flush, warmup, iters);
        const double g_read = timer.GraphUs(
            gs,
            [&](int i) {
              StreamRead<<<stream_blocks, 512, 0, gs>>>(reinterpret_cast<const int4*>(qw_c[i]), wbytes / 16, sink);
            },
            CallsFor(nq), warmup, iters);
        char line[200];
        std::snprintf(line, sizeof line, "%s: %.1f MiB in %.1f us | %.1f us = %.2f | %.2f TB/s (%.0f%% | %.0f%% of the 2 GiB read)",
                      s.name.c_str(), wbytes / 1048576.0, t_read, g_read, wbytes / (t_read * 1e-6) / 1e12,
                      wbytes / (g_read * 1e-6) / 1e12, 100 * wbytes / (t_read * 1e-6) / peak_bw,
                      100 * wbytes / (g_read * 1e-6) / peak_bw);
        floors.push_back(line);
        // The same bytes in tile order (TileOrderRead), about 16 warps per SM.
        const int n64 = static_cast<int>(n / 64), slices = static_cast<int>(k / 16);
        int parts = 1;
        while (static_cast<int64_t>(n64) * parts * 2 <= 16 * prop.multiProcessorCount) parts *= 2;
        for (const std::pair<int, int>& pattern : {std::pair{1, 1}, std::pair{8, 1}, std::pair{1, 16}, std::pair{8, 16}}) {
          const int wn = pattern.first, runs = pattern.second;  // tiles per block, slices per run
          if (n64 % wn != 0 || slices % runs != 0) continue;      // small K x N shapes
          const dim3 grid(n64 / wn, parts);
          const double tc = timer.MedianUs(
              [&] { TileOrderRead<<<grid, 32 * wn>>>(reinterpret_cast<const int4*>(qweight), n64, slices, runs, sink); },
              flush, warmup, iters);
          const double tg = timer.GraphUs(
              gs,
              [&](int i) {
                TileOrderRead<<<grid, 32 * wn, 0, gs>>>(reinterpret_cast<const int4*>(qw_c[i]), n64, slices, runs,
                                                       sink);
              },
              CallsFor(nq), warmup, iters);
          std::snprintf(line, sizeof line,
                        "  tile order, %d-tile blocks, %2d-slice runs, %d k-parts: %.1f us | %.1f us = %.2f | %.2f TB/s",
                        wn, runs, parts, tc, tg, wbytes / (tc * 1e-6) / 1e12, wbytes / (tg * 1e-6) / 1e12);
          floors.push_back(line);
        }
      }
      if (sweep) {
        for (const std::string& name : qf::kernels::W4A16VariantNames(dtype)) {
          if (!swept(name)) continue;
          auto bytes = qf::kernels::W4A16WorkspaceBytes(max_m, n, k, 0, name.c_str(), dtype);
          if (bytes.ok()) Check(ws.Reserve(*bytes), "workspace");
        }
      }

      for (int64_t m : ms) {
        qf::kernels::W4A16GemmArgs args;
        args.dtype = dtype;
        args.a = a;
        args.qweight = qweight;
        args.scales = scales;
        args.zeros = zeros;
        args.c = c_ours;
        args.m = m;
        args.n = n;
        args.k = k;
        args.group_size = kGroupSize;
        args.workspace = ws.data();
        args.workspace_bytes = ws.size();
        args.variant = forced_variant.empty() ? nullptr : forced_variant.c_str();
        args.stream_plan.pull = pull;
        const double bytes = k * n / 2.0 + groups * n * 2.0 + groups * n / 2.0 + m * k * 2.0 + m * n * 2.0;
        // The decode loop: copy i % copies of the weights in call i.
        const auto loop_ours = [&](const qf::kernels::W4A16GemmArgs& base, bool pdl) {
          return timer.GraphUs(
              gs,
              [&](int i) {
                qf::kernels::W4A16GemmArgs li = base;
                li.qweight = qw_c[i];
                li.scales = scales_c[i];
                li.zeros = zeros_c[i];
                li.stream = gs;
                li.pdl = pdl;
                Check(qf::kernels::W4A16Gemm(li), "W4A16Gemm (graph)");
              },
              CallsFor(nq), warmup, iters);
        };
        if (pass == 1) {
          const double t_cublas = cublas_us[{s.name, m}];
          for (const std::string& name : qf::kernels::W4A16VariantNames(dtype)) {
            if (!swept(name)) continue;
            qf::kernels::W4A16GemmArgs forced = args;
            forced.variant = name.c_str();
            if (!qf::kernels::W4A16Gemm(forced).ok()) continue;  // the variant does not take this shape
            const double t =
                timer.MedianUs([&] { Check(qf::kernels::W4A16Gemm(forced), name.c_str()); }, flush, warmup, iters);
            const double tl = loop_ours(forced, true);
            std::printf("| %s | %lld | %s | %.1f | %.2fx | %.1f | %.2fx | %.0f%% |\n", s.name.c_str(), static_cast<long long>(m),
                        name.c_str(), t, t_cublas / t, tl, cublas_loop_us[{s.name, m}] / tl,
                        100 * bytes / peak_bw * 1e6 / tl);
            std::fflush(stdout);
            // Streaming / decode variants: the planner's grid, then every grid
            // that fits (W4A16Gemm refuses a grid for the other variants and
            // for grids that do not fit, without launching).
            if (!grids) continue;
            // Tiled and wgmma variants: stream-K grids of whole tiles, even
            // splits, and the most blocks the device holds.
            if (const auto tr = qf::kernels::W4A16TileGrids(m, n, k, name.c_str(), dtype); tr.ok()) {
              std::vector<int64_t> blocks = {tr->max_blocks, tr->planned};
              for (int64_t w = 1; w <= 8; ++w) blocks.push_back(tr->tiles * w);
              for (int64_t per_sm = 1; per_sm <= 3; ++per_sm) blocks.push_back(per_sm * prop.multiProcessorCount);
              std::sort(blocks.begin(), blocks.end());
              blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
              for (int64_t g : blocks) {
                if (g < 1 || g > tr->max_blocks) continue;
                qf::kernels::W4A16GemmArgs tg_args = forced;
                tg_args.tile_blocks = static_cast<int>(g);
                const double tg =
                    timer.MedianUs([&] { Check(qf::kernels::W4A16Gemm(tg_args), name.c_str()); }, flush, warmup, iters);
                const double tgl = loop_ours(tg_args, true);
                std::printf("|   tile grid | %s | %lld | %s | %lld blocks%s (%lld tiles, %lld units) | %.1f | %.2fx | %.1f | "
                            "%.2fx | %.0f%% |\n",
                            s.name.c_str(), static_cast<long long>(m), name.c_str(), static_cast<long long>(g),
                            g == tr->planned ? " planned" : "", static_cast<long long>(tr->tiles),
                            static_cast<long long>(tr->units), tg, t_cublas / tg, tgl,
                            cublas_loop_us[{s.name, m}] / tgl, 100 * bytes / peak_bw * 1e6 / tgl);
              }
              std::fflush(stdout);
              continue;
            }
            bool planned_shown = false;
            for (int wn : {1, 2, 4, 5, 7, 8, 10, 14, 16}) {
              for (int wk : {1, 2, 3, 4, 6, 8, 12, 16}) {
                for (int split : {1, 2, 3, 4, 6, 8}) {
                  qf::kernels::W4A16GemmArgs g = forced;
                  g.stream_plan = {wn, wk, split, pull};
                  if (!qf::kernels::W4A16Gemm(g).ok()) continue;
                  if (!planned_shown) {
                    const auto planned =
                        qf::kernels::W4A16LaunchDescription(m, n, k, kGroupSize, name.c_str(), dtype);
                    std::printf("|   planned: %s |\n", planned.ok() ? planned->c_str() : "?");
                    planned_shown = true;
                  }
                  const double tg =
                      timer.MedianUs([&] { Check(qf::kernels::W4A16Gemm(g), name.c_str()); }, flush, warmup, iters);
                  const double tgl = loop_ours(g, true);
                  std::printf("|   grid | %s | %lld | %s | wn %d wk %d split %d | %.1f | %.2fx | %.1f | %.2fx | "
                              "%.0f%% |\n",
                              s.name.c_str(), static_cast<long long>(m), name.c_str(), wn, wk, split, tg, t_cublas / tg, tgl,
                              cublas_loop_us[{s.name, m}] / tgl, 100 * bytes / peak_bw * 1e6 / tgl);
                }
              }
            }
            std::fflush(stdout);
          }
          continue;
        }
        const auto ours = [&] { Check(qf::kernels::W4A16Gemm(args), "W4A16Gemm"); };
        const float alpha = 1.0f, beta = 0.0f;
        // Row-major C[m x n] = A[m x k] W^T with W [n x k] row-major: column-major
        // C^T (n x m) = W^T-op(W as k x n) * A^T, i.e. torch's linear.
        const auto cublas_on = [&](const __half* w) {
          CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                    static_cast<int>(k), &alpha, w, cuda_type, static_cast<int>(k), a, cuda_type,
                                    static_cast<int>(k), &beta, c_ref, cuda_type, static_cast<int>(n),
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        };
        const auto cublas = [&] { cublas_on(w16); };
        CUDA_CHECK(cudaMemset(c_ours, 0xFF, m * n * 2));
        ours();
        cublas();
        CUDA_CHECK(cudaDeviceSynchronize());
        CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                 static_cast<int>(k), &alpha, w32, static_cast<int>(k), a32, static_cast<int>(k), &beta,
                                 c32, static_cast<int>(n)));
        std::vector<__half> h_ours(m * n), h_ref(m * n);
        std::vector<float> h32(m * n);
        CUDA_CHECK(cudaMemcpy(h32.data(), c32, m * n * 4, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(h_ours.data(), c_ours, m * n * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(h_ref.data(), c_ref, m * n * 2, cudaMemcpyDeviceToHost));
        const double err = RelErr16(h_ours, h32, bf16), err16 = RelErr16(h_ref, h32, bf16);

        const double t_ours = timer.MedianUs(ours, flush, warmup, iters);
        const double t_cublas = timer.MedianUs(cublas, flush, warmup, iters);
        cublas_us[{s.name, m}] = t_cublas;
        const double g_ours = loop_ours(args, true), g_ours_plain = loop_ours(args, false);
        CUBLAS_CHECK(cublasSetStream(handle, gs));
        CUBLAS_CHECK(cublasSetWorkspace(handle, cublas_ws, kCublasWorkspace));  // nothing to allocate in capture
        const double g_cublas = timer.GraphUs(gs, [&](int i) { cublas_on(w16_c[i]); }, CallsFor(n16), warmup, iters);
        CUBLAS_CHECK(cublasSetStream(handle, nullptr));
        const double bytes16 = k * n * 2.0 + m * k * 2.0 + m * n * 2.0;
        const double roof = bytes / peak_bw * 1e6 / g_ours, roof16 = bytes16 / peak_bw * 1e6 / g_cublas;
        const double speedup = g_cublas / g_ours;
        cublas_loop_us[{s.name, m}] = g_cublas;
        bool ok;
        if (m <= 16)
          ok = speedup >= 3.5 && roof >= 0.85;
        else if (m <= 64)
          ok = speedup >= 2.0;
        else
          ok = speedup >= 1.0;
        // The targets are the 70B shapes' (the named ones); K x N rows print "-".
        met += s.targeted && ok;
        total += s.targeted;
        const auto variant = forced_variant.empty() ? qf::kernels::W4A16VariantName(m, n, k, kGroupSize, dtype)
                                                    : absl::StatusOr<std::string>(forced_variant);
        std::printf(
            "| %s | %lld x %lld | %lld | %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.1f | %.2fx | %.2f | %.0f%% | %.0f%% | "
            "%.1e | %.1e | %s |\n",
            s.name.c_str(), static_cast<long long>(k), static_cast<long long>(n), static_cast<long long>(m),
            variant.ok() ? variant->c_str() : "?", t_ours, t_cublas, t_cublas / t_ours, g_ours, g_ours_plain,
            g_cublas, speedup, bytes / (g_ours * 1e-6) / 1e12, 100 * roof, 100 * roof16, err, err16, !s.targeted ? "-" : ok ? "met" : "MISSED");
        std::fflush(stdout);
        const auto plan = qf::kernels::W4A16LaunchDescription(
            m, n, k, kGroupSize, forced_variant.empty() ? nullptr : forced_variant.c_str(), dtype);
        plans.push_back(std::string(s.name) + " M=" + std::to_string(m) + ": " +
                        (plan.ok() ? *plan : std::string(plan.status().message())));
      }
      CUDA_CHECK(cudaFree(qweight));
      CUDA_CHECK(cudaFree(zeros));
      CUDA_CHECK(cudaFree(scales));
      CUDA_CHECK(cudaFree(w16));
      CUDA_CHECK(cudaFree(w32));
      CUDA_CHECK(cudaFree(a32));
      CUDA_CHECK(cudaFree(c32));
      CUDA_CHECK(cudaFree(a));
      CUDA_CHECK(cudaFree(c_ours));
      CUDA_CHECK(cudaFree(c_ref));
    }
  }
  if (!sweep) print_summary();
  CUBLAS_CHECK(cublasDestroy(handle));
  CUDA_CHECK(cudaStreamDestroy(gs));
  CUDA_CHECK(cudaFree(cublas_ws));
  CUDA_CHECK(cudaFree(bw_buf));
  CUDA_CHECK(cudaFree(sink));
  return 0;
}
