// File: worker/engine/awq.h
//
// AWQ (Lin et al. 2023, arXiv:2306.00978, Sec. 3.2-3.3) for one decoder layer:
//   1. input statistics of every linear from the layer's float forward, which
//      also advances the activations (AWQ feeds the next layer the float
//      layer's output): mean |x| per channel over every calibration token, and
//      the linears' inputs on a search subset (QuantParams::awq_search_tokens,
//      whole samples evenly spaced) that the losses below are judged on;
//   2. per scaling group, a grid search (QuantParams::awq_grid points) of the
//      exponent a in s = mean|x|^a (or, with awq_duo_scaling as AutoAWQ does,
//      mean|x|^a / mean|w/max_group|w||^(1-a)), judged on the output of the block the
//      group feeds (attention for the input norm -> q/k/v, the MLP for the
//      post-attention norm -> gate/up, down_proj for up -> down, o_proj for
//      v -> o when v and o shapes allow it);
//   3. the scales folded into the previous op (norm weight or linear rows);
//   4. clip search of each group's max |w| (10 shrink steps; q/k skipped since
//      their error is hidden by the softmax);
//   5. asymmetric min/max quantization with zero points.
//
// Runs in the dtype of the activations (float32 on the CPU, the checkpoint's
// fp16/bf16 on a GPU); scales, candidate quantization and losses are float32.
//
//   QF_ASSIGN_OR_RETURN(LayerResult r, AwqQuantizeLayer(layer, lw, acts, cfg, rope, params, "F16", progress));
#pragma once

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "storage/model_config.h"
#include "worker/engine/decoder.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

// acts: the layer's input activations [samples, seqlen, hidden]; on return
// (also on error, partly) they have moved through the float layer, in place,
// with the bits of a replay (same batches as the session's Advance). `lw`
// (float32) is taken by value and modified (scales folded in). The result's
// dense tensors are the two norms, in `norm_dtype` ("F16", "BF16", "F32").
absl::StatusOr<kernels::LayerResult> AwqQuantizeLayer(int layer, LayerWeights lw, at::Tensor& acts,
                                                      const storage::ModelConfig& cfg, const RopeTables& rope,
                                                      const QuantParams& p, const std::string& norm_dtype,
                                                      const LayerProgressFn& progress);

// AWQ's pseudo-quantization of w [rows, cols] by groups: min/max without
// forcing 0 into the range, zero points clamped to [0, 2^bits-1]. Returns the
// dequantized weights; codes/scales/zeros are written when non-null.
at::Tensor AwqPseudoQuantize(const at::Tensor& w, int bits, int64_t group_size, int min_zero, at::Tensor* codes,
                             at::Tensor* scales, at::Tensor* zeros);

}  // namespace qf::worker
