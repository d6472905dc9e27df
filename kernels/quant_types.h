// File: kernels/quant_types.h
//
// The neutral, format-independent result of quantizing one linear layer. The
// numeric engine produces it, the coordinator stores it, and the format writers
// (GPTQ v1, AWQ GEMM) pack it. No torch here: plain vectors.
//
// Dequantization contract (every format and kernel agrees with it):
//   g = g_idx[i]                                  // group of input channel i
//   W[o][i] = scales[g][o] * (codes[o][i] - zeros[g][o])
// codes and zeros are unsigned in [0, 2^bits - 1]. Symmetric quantization uses
// zeros[g][o] = 2^(bits-1) everywhere (GPTQ's convention: maxq+1 / 2).
//
//   QuantizedLinear q;  q.name = "self_attn.q_proj"; q.bits = 4; ...
//   std::vector<float> w = DequantizeRef(q);     // kernels/ref/pack.h
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qf::kernels {

struct QuantizedLinear {
  std::string name;              // module path inside the decoder layer, e.g. "mlp.down_proj"
  int bits = 4;                  // 2, 3, 4 or 8
  int group_size = 128;          // input channels per group; -1 = one group per row
  bool sym = false;              // zeros are all 2^(bits-1) when true
  bool desc_act = false;         // act-order was used: g_idx is not monotone
  int64_t out_features = 0;      // rows of W (N)
  int64_t in_features = 0;       // columns of W (K)
  int64_t num_groups = 0;        // rows of scales/zeros
  std::vector<uint8_t> codes;    // [out_features x in_features], row-major, < 2^bits
  std::vector<uint16_t> scales;  // [num_groups x out_features], IEEE fp16 bits
  std::vector<uint8_t> zeros;    // [num_groups x out_features], < 2^bits
  std::vector<int32_t> g_idx;    // [in_features], each in [0, num_groups)
  std::vector<uint16_t> bias;    // [out_features] fp16 bits, empty when the linear has none
};

// Extra full-precision tensors a layer result carries besides its linears: the
// norm weights (AWQ folds its scales into them) and any bias of a linear that
// is not quantized. Stored as fp16 unless the checkpoint said otherwise.
struct DenseTensor {
  std::string name;              // module path inside the layer, e.g. "input_layernorm.weight"
  std::string dtype;             // safetensors dtype string: "F16", "BF16", "F32"
  std::vector<int64_t> shape;
  std::string data;              // little-endian bytes, size = numel * dtype size
};

// Everything the engine produced for one decoder layer.
struct LayerResult {
  int layer = 0;
  std::vector<QuantizedLinear> linears;   // in the canonical order of the layer
  std::vector<DenseTensor> dense;
  std::vector<double> errors;             // per linear: the loss the method measured
};

}  // namespace qf::kernels
