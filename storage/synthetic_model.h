// File: storage/synthetic_model.h
//
// The host side of synthetic models (`--model synthetic:<preset>[?layers=N&seed=S]`):
// everything that needs no libtorch, so that qctl, the coordinator, the worker
// and the artifact writer treat a synthetic model like a checkpoint directory:
//
//   - the preset table and the model's config.json (SyntheticConfig);
//   - the calibration ids (SyntheticCalibrationTokens; a synthetic model has
//     no tokenizer);
//   - the tensors outside the decoder layers (embeddings, final norm,
//     lm_head), generated on the host by a counter-based generator, so the
//     engine's embedding lookup and the artifact's copy are the same bytes;
//   - a TensorSource (safetensors.h) for WriteArtifact: the shapes of every
//     linear weight (never their data: those are always replaced by the
//     quantized result) and the bytes of the non-layer tensors.
//
// The decoder layers' weights are generated on the device by the engine
// (worker/engine/synthetic.h), one layer at a time.
//
//   QF_ASSIGN_OR_RETURN(SyntheticSpec s, ParseSyntheticModel("synthetic:llama-70b?layers=4"));
//   ModelConfig cfg = SyntheticConfig(s);
//   QF_ASSIGN_OR_RETURN(ModelConfig c2, LoadModelConfigOrSynthetic(model));   // either kind
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"

namespace qf::storage {

inline constexpr const char* kSyntheticPrefix = "synthetic:";

bool IsSyntheticModel(const std::string& model);

struct SyntheticSpec {
  std::string preset;      // "llama-70b" | "llama-8b" | "llama-tiny"
  int64_t layers = 0;      // 0 = the preset's
  uint64_t seed = 0;
};

// "synthetic:NAME[?layers=N&seed=S]". InvalidArgument naming the model string
// and the part at fault: unknown preset (lists them), unknown key, a value
// that is not a positive number (layers) or a number (seed).
absl::StatusOr<SyntheticSpec> ParseSyntheticModel(const std::string& model);

// The preset's config (llama, llama3 RoPE, fp16), with `layers` applied.
ModelConfig SyntheticConfig(const SyntheticSpec& spec);

// A synthetic model's config, or LoadModelConfig(dir) for a checkpoint.
absl::StatusOr<ModelConfig> LoadModelConfigOrSynthetic(const std::string& model);

// samples * seqlen ids, uniform over [0, vocab), row-major; the same for the
// same arguments on every machine (splitmix64, no library distribution).
std::vector<int32_t> SyntheticCalibrationTokens(int64_t vocab, uint64_t seed, int samples, int seqlen);

// splitmix64, and the per-(layer, tensor) seed both generators use: layers
// can be generated in any order. layer -1 holds the non-layer tensors.
uint64_t SplitMix64(uint64_t x);
uint64_t SyntheticTensorSeed(uint64_t seed, int64_t layer, int tensor);

// out[i] = FloatToHalf(in[i]) for i < n, 8 at a time with F16C where the CPU has it.
void FloatsToHalf(const float* in, int64_t n, uint16_t* out);

// Names of the non-layer tensors and their ids for SyntheticTensorSeed(seed, -1, id).
inline constexpr const char* kSyntheticEmbedding = "model.embed_tokens.weight";
inline constexpr const char* kSyntheticFinalNorm = "model.norm.weight";
inline constexpr const char* kSyntheticLmHead = "lm_head.weight";

// The F16 bytes of one non-layer tensor (one of the three names above):
// embeddings and lm_head N(0, 0.02^2) (lm_head scaled by 1/sqrt(hidden)
// relative to that, so logits stay O(1)), the final norm log-normal around 1.
// Rows are generated in parallel from per-row counters: the same bytes for
// any thread count. NotFound for another name.
absl::StatusOr<std::string> SyntheticNonLayerTensor(const SyntheticSpec& spec, const ModelConfig& cfg,
                                                    const std::string& name);

// The TensorSource WriteArtifact reads a synthetic model through: Get() of a
// linear weight gives its shape with empty data; the non-layer tensors are
// generated when opened (2 x vocab x hidden fp16: 4.2 GB for llama-70b).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSyntheticSource(const std::string& model);

}  // namespace qf::storage
