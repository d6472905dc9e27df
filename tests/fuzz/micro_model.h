// File: tests/fuzz/micro_model.h
//
// A one-layer Llama small enough to write or send once per fuzz process:
// hidden size 64, 2 heads of 32 (1 kv head), intermediate 128, vocabulary 64;
// and its decoder layer quantized to 4 bits, group size 32, asymmetric, as a
// worker would return it (random codes from a fixed seed).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/quant_types.h"
#include "storage/model_config.h"

namespace qf::fuzz {

// `numel` fp16 ones, little-endian bytes (norm weights, source tensors).
std::string HalfOnes(int64_t numel);

// config.json of the model.
const char* MicroConfigJson();

// The parsed config (aborts if it does not parse: a bug of this file).
storage::ModelConfig MicroConfig();

// Layer 0: the seven linears in kLinearNames order, both norms (fp16 ones),
// a zero error per linear.
kernels::LayerResult MicroLayer();

}  // namespace qf::fuzz
