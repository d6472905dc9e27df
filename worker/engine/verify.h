// File: worker/engine/verify.h
//
// `qctl verify ARTIFACT` and a job's verify stage, inside the engine module:
//   1. every quantized linear is loaded for the fused W4A16 GEMM
//      (fused_linear.h) and run on a deterministic activation matrix of
//      spec.dtype (fp16 or bf16) for each M of spec.check_ms; the result is
//      compared with dequantize + matmul in fp32 (DequantizeToTensor, the
//      eval path's weights): ||C_fused - C_ref|| / ||C_ref|| must stay below
//      the threshold of the format and dtype;
//   2. GPU only: the fused GEMM and cuBLAS in the same dtype (at::mm on a
//      copy of the dequantized weight, made for the timing and freed) timed
//      in the same run on each distinct (K, N) of the model's linears, for
//      each M of spec.timing_ms (kernels/cuda/event_timer.h: L2 flushed,
//      median);
//   3. with tokens: perplexity with every decoder linear run by the fused
//      path, against the dequantized path (EvalRun, `qctl eval`'s forward)
//      on the same tokens.
// 1 and 3 run in one pass over the layers: each layer is unpacked once, its
// linears checked, and both forwards of 3 advanced through it (their
// activations stay on the device meanwhile: 2 x chunks x seqlen x hidden
// float32); 2 runs after, on the first linear of each shape.
// A linear the kernel does not take (bits != 4, refused shapes) is reported
// "unsupported" with the reason and takes no part in 2 and 3.
#pragma once

#include "absl/status/statusor.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

// ||C_fused - C_ref|| / ||C_ref|| bounds. Error sources: one fp16 rounding per
// weight inside the kernel (the CPU twin computes in double), the fp16 input
// and the fp16 output; the kernel tests (tests/kernels_gpu) hold the CUDA
// kernel to the same 2e-3 against a double reference.
inline constexpr double kVerifyMaxRelErrGptq = 2e-3;
inline constexpr double kVerifyMaxRelErrAwq = 2e-3;
// bf16 keeps 8 significant bits to fp16's 11 (unit roundoff 2^-8): the bound
// of the kernel tests' bf16 GEMMs (tests/kernels_gpu/w4a16_bf16_gpu_test.cc),
// which also covers rounding the scales to bf16 at load.
inline constexpr double kVerifyMaxRelErrBf16 = 1.5e-2;
// |ppl_fused - ppl_dequant| / ppl_dequant. The fused path rounds every
// linear's input and output to fp16 (or bf16) where the dequantized path
// stays in float32; on tiny-llama that moves perplexity by 2.5e-5 (CPU, RTN
// w4, 8 x 512 tokens), and on its GPTQ w4 g128 artifact by 8.1e-6 in fp16
// and 5.4e-5 in bf16 (CPU, 64 x 512 tokens of data/books-heldout.txt).
inline constexpr double kVerifyMaxPplRelDiff = 1e-3;
// bf16: its 8x larger roundings move each token's NLL by about 1.1e-2 rms on
// tiny-llama, and the difference of the means shrinks only as 1/sqrt(tokens):
// 1.4e-3 over one chunk of 64 tokens (RTN w4), 5.4e-5 over 64 x 512. A
// wrong kernel moves it by far more (a scale off by one bf16 ulp everywhere
// is a 0.4% error in every weight).
inline constexpr double kVerifyMaxPplRelDiffBf16 = 5e-3;

absl::StatusOr<VerifyReport> RunVerify(const VerifySpec& spec, const VerifyProgressFn& progress);

}  // namespace qf::worker
