// File: kernels/cuda/gptq/gptq_block.h
//
// Launcher of the fused GPTQ block kernel: the whole in-block column
// recurrence of one lazy block (up to 128 columns) for every row of W in ONE
// launch, where the textbook implementation issues a dozen small launches per
// column. The lazy update of the columns after the block stays a GEMM (the
// caller's). The math is in gptq_block.cuh, shared with the CPU twin.
//
// Torch-free: plain device pointers, the stream as a `void*` (a cudaStream_t),
// so that ATen code includes this header without the CUDA headers.
//
//   qf::kernels::gptq::BlockArgs a;  a.w = w_ptr + i1; a.ld_w = cols; ...
//   QF_RETURN_IF_ERROR(qf::kernels::gptq::LaunchGptqBlock(a, /*block_width=*/128, stream));
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/gptq/gptq_block.cuh"

namespace qf::kernels::gptq {

// Block widths with a compiled kernel (the lazy-block size of GPTQ; 128 is the
// paper's and everyone's default).
bool HasBlockKernel(int block_width);

// Launches on `stream` (asynchronous). InvalidArgument naming the field for
// a block width without a kernel, count outside [1, block_width], rows <= 0 or
// a null pointer; Internal with the CUDA error string if the launch fails.
absl::Status LaunchGptqBlock(const BlockArgs& args, int block_width, void* stream);

}  // namespace qf::kernels::gptq
