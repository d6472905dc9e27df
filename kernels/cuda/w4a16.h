// File: kernels/cuda/w4a16.h
//
// Fused INT4 x FP16/BF16 GEMM: C[m x n] = A[m x k] * dequant(B)^T (+ bias),
// with B the 4-bit codes of one linear (per-group scales, optional 4-bit zero
// points) in the kernel layout QF4 (kernels/ref/w4a16_ref.h, drawn in
// kernels/README.md). The weights are dequantized in registers inside the
// GEMM; no fp16 copy of them ever exists. Torch-free: plain CUDA pointers and
// streams, absl::Status results. Host-side validation never launches on bad
// input; device code reports nothing.
//
// Loading a linear (once):
//   1. perm = ActOrderPerm(q)                  (host, only for act-order)
//   2. W4A16Repack({.source = kGptqV1, ...})   (device: GPTQ v1 / AWQ GEMM
//      tensors -> QF4), or RepackW4A16Ref(q) on the host and copy the result.
// Each call:
//   3. if perm is non-empty: W4A16PermuteColumns(x -> x_perm)  (one gather of
//      the m x k activations, so that column j of A is input channel perm[j])
//   4. W4A16Gemm({.a = x_perm, .qweight = ..., .c = y, ...})
//
//   W4A16Workspace ws;                                  // once per device
//   QF_RETURN_IF_ERROR(ws.Reserve(W4A16WorkspaceBytes(max_m, n, k, /*device=*/0)));
//   QF_RETURN_IF_ERROR(W4A16Gemm({.a = a, .qweight = qw, .scales = s, .zeros = z,
//                                 .c = c, .m = m, .n = n, .k = k, .group_size = 128,
//                                 .workspace = ws.data(), .workspace_bytes = ws.size()}));
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/plan/stream_grid.h"  // ForcedStreamGrid

namespace qf::kernels {

// Element type of a GEMM's activations, scales, bias and output. Both run
// the same kernels (the selection table's rows; bf16 has no tuning-only
// variants) and take the same shapes; the scales are converted to bf16 once
// at load (W4A16RepackArgs::out_dtype).
enum class W4A16DType { kF16, kBF16 };

struct W4A16GemmArgs {
  // a, scales, bias and c are arrays of `dtype` (2-byte elements).
  const void* a = nullptr;            // [m x k] row-major; columns in kernel-row order (see perm)
  const uint32_t* qweight = nullptr;  // QF4 codes, k*n/8 words
  const void* scales = nullptr;       // [G x n] QF4-permuted
  const uint32_t* zeros = nullptr;    // [G x n/8] QF4 words; nullptr = symmetric (zero 8)
  const void* bias = nullptr;         // [n] natural order, or nullptr
  void* c = nullptr;                  // [m x n] row-major
  W4A16DType dtype = W4A16DType::kF16;
  int64_t m = 0, n = 0, k = 0;
  int group_size = 128;  // 32, 64, 128, ... or -1 (one group of k)
  // Scratch for the split-K fixup: at least W4A16WorkspaceBytes(m, n, k, device)
  // bytes, zero-filled once after allocation (every call leaves its counters at
  // zero again). Its layout depends on workspace_bytes alone, so calls of any
  // shape may share one workspace as long as they pass the same size; one
  // workspace must not serve two calls in flight at once.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
  // Runs this variant (a name from W4A16VariantNames) instead of the table's
  // choice: for tests and tuning sweeps. Unimplemented if it cannot take the shape.
  const char* variant = nullptr;
  // Weight-streaming and decode variants only, for tuning sweeps: this grid
  // (wn column tiles x wk k-parts per block, split blocks per cluster) instead
  // of the planner's; InvalidArgument when it does not fit the shape or the
  // device, or when the variant that runs is not a streaming one. {0, 0, 0}:
  // the planner's. `pull`: split grids sum their k-parts by the pull
  // reduction even where the push one fits (w4a16_stream_kernel.cuh).
  using StreamPlan = ForcedStreamGrid;
  StreamPlan stream_plan;
  // Tiled and wgmma variants only, for tuning sweeps: launch this many
  // stream-K blocks (block b takes units [U*b/G, U*(b+1)/G) of the U =
  // tiles x k-tiles units, as every planned grid does) instead of the
  // planner's (kernels/plan/tile_grid.h); W4A16TileGrids gives the range.
  // InvalidArgument outside 1..max_blocks or for a streaming variant. 0: the
  // planner's.
  int tile_blocks = 0;
  // Programmatic dependent launch (sm_90), for decode loops of back-to-back
  // layers (a stream or a CUDA graph): the weight-streaming, decode and
  // wgmma variants then launch while the previous kernel on the stream is
  // still running (as early as it allows), set up (the decode kernel loads
  // its first weights) and read a and bias, write c and use the workspace
  // only once that kernel has completed and its writes are visible. The
  // previous kernel must not write qweight, scales or zeros. They let the
  // next kernel launch early the same way (it does only if launched so):
  // after their main loop, the 8-row decode kernels at their start. The
  // tiled variants launch as usual. Measured on the H200: 2-6% less time per
  // call in a graph of back-to-back calls for the decode kernels
  // (kernels/README.md); on the H100 the early start of the 8-row kernels
  // took another 2-4% off qkv and o at m <= 8.
  bool pdl = false;
};

// Launches the GEMM on args.stream (asynchronous). m == 0 is a no-op.
// InvalidArgument quoting m/n/k/group_size for bad sizes (n not a multiple of
// 64, k not a multiple of 16, group_size not dividing k), null or misaligned
// (16-byte) pointers, or a small workspace; Unimplemented quoting them when
// no kernel variant accepts the shape (supported: on sm_90, m <= 32 with any
// n and k that pass the checks above, through the weight-streaming variants,
// which need no workspace, and any m with n % 128 == 0 and k % 64 == 0
// through the wgmma variants; otherwise n % 128 == 0 and k % 128 == 0, or
// n % 256 == 0 and k % 64 == 0; group_size a multiple of 32 or -1); Internal
// with the CUDA error when the launch fails. bf16 takes the same shapes
// through the bf16 twins of the same variants; a forced variant of the other
// element type is InvalidArgument.
absl::Status W4A16Gemm(const W4A16GemmArgs& args);

// Workspace bytes that W4A16Gemm needs for every m in [1, max_m] with this
// n and k on `device` (for the forced `variant` only, when given); 0 when
// only the table's weight-streaming variants serve those m (a null workspace
// is fine then; the tuning variant bal_m8 needs one).
// InvalidArgument/Unimplemented as W4A16Gemm for the shape; Internal when the
// device cannot be queried.
absl::StatusOr<size_t> W4A16WorkspaceBytes(int64_t max_m, int64_t n, int64_t k, int device,
                                           const char* variant = nullptr, W4A16DType dtype = W4A16DType::kF16);

// Name of the variant W4A16Gemm would run, e.g. "mb1_bn128_bk128_s6"; errors
// as W4A16Gemm.
absl::StatusOr<std::string> W4A16VariantName(int64_t m, int64_t n, int64_t k, int group_size,
                                             W4A16DType dtype = W4A16DType::kF16);

// The variant W4A16Gemm would run (or `variant`) and its grid, in words, e.g.
// "stream_m8: grid 16x8 cluster 8, 8 warps, 64 slices/block, 33 KB smem, 1/SM";
// for benchmarks and logs. Errors as W4A16Gemm; Internal without a device.
absl::StatusOr<std::string> W4A16LaunchDescription(int64_t m, int64_t n, int64_t k, int group_size,
                                                   const char* variant = nullptr,
                                                   W4A16DType dtype = W4A16DType::kF16);

// The grids a tiled or wgmma variant can be forced onto
// (W4A16GemmArgs::tile_blocks) for this shape on the current device: tiles
// (column tiles x row chunks), units (tiles x k-tiles), max_blocks
// (min(units, resident blocks)) and the planner's grid. InvalidArgument for a
// streaming variant; other errors as W4A16Gemm.
struct W4A16TileGridRange {
  int64_t tiles = 0, units = 0, max_blocks = 0, planned = 0;
};
absl::StatusOr<W4A16TileGridRange> W4A16TileGrids(int64_t m, int64_t n, int64_t k, const char* variant = nullptr,
                                                  W4A16DType dtype = W4A16DType::kF16);

// Every compiled variant of `dtype`, each once: the selection table's, then
// the tuning-only ones (builds with QF_W4A16_TUNING_VARIANTS, the default).
std::vector<std::string> W4A16VariantNames(W4A16DType dtype = W4A16DType::kF16);

// out[r][j] = a[r][perm[j]]: puts activations (2-byte elements, fp16 or
// bf16) into kernel-row order for act-order weights. perm is a device array
// of k entries (ActOrderPerm). InvalidArgument for null pointers or negative
// sizes.
absl::Status W4A16PermuteColumns(const void* a, const int32_t* perm, void* out, int64_t m, int64_t k,
                                 cudaStream_t stream = nullptr);

// Checkpoint layouts W4A16Repack reads (kernels/ref/pack.h documents them).
enum class W4A16Source {
  kGptqV1,   // qweight I32 [k/8, n], qzeros I32 [G, n/8] holding zero-1
  kAwqGemm,  // qweight I32 [k, n/8], qzeros I32 [G, n/8], AWQ nibble order
};

struct W4A16RepackArgs {
  W4A16Source source = W4A16Source::kGptqV1;
  const uint32_t* qweight = nullptr;  // device, in `source` layout
  const uint32_t* qzeros = nullptr;   // device, or nullptr for symmetric weights
  const __half* scales = nullptr;     // device [G x n] fp16, natural order
  const int32_t* perm = nullptr;      // device [k] (ActOrderPerm), GPTQ only; nullptr = identity
  uint32_t* out_qweight = nullptr;    // device, k*n/8 words
  uint32_t* out_zeros = nullptr;      // device, G*n/8 words; nullptr iff qzeros is
  void* out_scales = nullptr;         // device, G*n of out_dtype
  // The GEMM's element type: bf16 rounds each scale to nearest even once here.
  W4A16DType out_dtype = W4A16DType::kF16;
  int64_t k = 0, n = 0, num_groups = 0;
  cudaStream_t stream = nullptr;
};

// Converts one linear's checkpoint tensors into QF4 on the device; the
// result equals RepackW4A16Ref of the unpacked linear bit for bit (with
// out_dtype bf16: its scales, each rounded to bf16).
// InvalidArgument for k % 16, n % 64, num_groups not dividing k, a perm with
// AWQ, or null/inconsistent pointers; Internal on a launch failure.
absl::Status W4A16Repack(const W4A16RepackArgs& args);

// Owns a device allocation (cudaMalloc), zero-filled when it grows. Move-only.
class W4A16Workspace {
 public:
  W4A16Workspace() = default;
  ~W4A16Workspace();
  W4A16Workspace(W4A16Workspace&& other) noexcept;
  W4A16Workspace& operator=(W4A16Workspace&& other) noexcept;
  W4A16Workspace(const W4A16Workspace&) = delete;
  W4A16Workspace& operator=(const W4A16Workspace&) = delete;

  // Ensures at least `bytes` (synchronous). Internal on allocation failure.
  absl::Status Reserve(absl::StatusOr<size_t> bytes);
  void* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qf::kernels
