// The fused GPTQ block kernel's entry point (gptq_block.h): argument checks
// and the dispatch to the block width's instantiation (gptq_block_w<B>.cu;
// the kernel itself is in gptq_block_kernel.cuh).
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/gptq/gptq_block.h"

namespace qf::kernels::gptq {

// Instantiated for 32, 64 and 128 in gptq_block_w<B>.cu.
template <int B>
cudaError_t Launch(const BlockArgs& a, cudaStream_t stream);

bool HasBlockKernel(int block_width) { return block_width == 32 || block_width == 64 || block_width == 128; }

absl::Status LaunchGptqBlock(const BlockArgs& a, int block_width, void* stream) {
  if (!HasBlockKernel(block_width)) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ block kernel: block width ", block_width,
                                                   " has no kernel (expected 32, 64 or 128)"));
  }
  if (a.count < 1 || a.count > block_width) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ block kernel: count ", a.count, " outside [1, ",
                                                   block_width, "]"));
  }
  if (a.rows <= 0) return absl::InvalidArgumentError(absl::StrCat("GPTQ block kernel: rows ", a.rows, ", expected > 0"));
  if (!a.w || !a.hinv || !a.scales || !a.zeros || !a.col_group || !a.err || !a.codes || !a.loss) {
    return absl::InvalidArgumentError("GPTQ block kernel: a null pointer among w, hinv, scales, zeros, col_group, err, codes, loss");
  }
  auto s = static_cast<cudaStream_t>(stream);
  cudaError_t rc = block_width == 128 ? Launch<128>(a, s) : block_width == 64 ? Launch<64>(a, s) : Launch<32>(a, s);
  if (rc != cudaSuccess) {
    return absl::InternalError(absl::StrCat("GPTQ block kernel (width ", block_width, ", rows ", a.rows,
                                            "): ", cudaGetErrorString(rc)));
  }
  return absl::OkStatus();
}

}  // namespace qf::kernels::gptq
