// File: storage/artifact.h
//
// The quantized-model artifact: a directory that HF transformers (through
// gptqmodel), vLLM, AutoGPTQ and AutoAWQ load as they load their own output.
//
//   config.json              the source config + "quantization_config"
//   quantize_config.json     the AutoGPTQ / AutoAWQ spelling of the same
//   model.safetensors        or model-0000i-of-0000N.safetensors + index
//                            (shards of at most 4 GiB, tensors in name order)
//   tokenizer files          copied from the source when present
//   qforge-manifest.json     {"format_version": 1,
//                             "files": {name: {"bytes", "sha256"}},  sorted
//                             "quantization": QuantSpec, "provenance": ...,
//                             "layer_errors": {"<layer>": {linear: loss}}}
//
// Tensor naming: layer i's linear "self_attn.q_proj" becomes
// "model.layers.i.self_attn.q_proj.{qweight,qzeros,scales,g_idx,bias}" (AWQ:
// no g_idx; packing in kernels/ref/pack.h); a layer's DenseTensor "NAME" is
// "model.layers.i.NAME" and replaces the source tensor of that name; every
// other source tensor that is not a quantized linear's ".weight" (embeddings,
// final norm, lm_head, norms the result does not carry) is copied byte for
// byte with its dtype. The same inputs always give the same bytes.
//
//   qf::storage::QuantSpec spec{.method = "gptq", .bits = 4, .group_size = 128, ...};
//   QF_RETURN_IF_ERROR(qf::storage::WriteArtifact(model_dir, cfg, spec, layers, out_dir,
//                                                  {{"job", job_id}}));
//   QF_ASSIGN_OR_RETURN(qf::storage::LoadedArtifact a, qf::storage::ReadArtifact(out_dir));
//   // a.layers[i].linears[j] == layers[i].linears[j], bit for bit
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "nlohmann/json.hpp"
#include "storage/model_config.h"
#include "storage/safetensors.h"

namespace qf::storage {

// How the artifact was quantized. `format` decides the packing and the
// config; `method` is what produced the codes (an RTN result can be stored in
// the GPTQ format).
struct QuantSpec {
  std::string method = "gptq";   // "gptq" | "awq" | "rtn"
  int bits = 4;                  // gptq format: 2, 3, 4, 8; awq format: 4
  int group_size = 128;          // -1: one group per output row
  bool sym = true;
  bool desc_act = false;
  double damp_percent = 0.01;    // in (0, 1): transformers' GPTQConfig rejects others
  bool static_groups = false;
  bool true_sequential = true;
  std::string format = "gptq";   // "gptq" (GPTQ v1) | "awq" (AWQ GEMM)
};

// InvalidArgument naming the field: unknown method or format, unsupported
// bits, group_size neither -1 nor positive, damp_percent outside (0, 1), and
// for the awq format bits != 4, desc_act, or group_size -1 (vLLM's AWQ needs
// a group count per row).
absl::Status ValidateQuantSpec(const QuantSpec& spec);
nlohmann::json QuantSpecToJson(const QuantSpec& spec);
// InvalidArgument naming `source` and the field for a missing or mistyped key.
absl::StatusOr<QuantSpec> QuantSpecFromJson(const nlohmann::json& j, const std::string& source);

// The two JSON documents loaders read (exposed for tests and `qctl inspect`).
nlohmann::json QuantizationConfigJson(const QuantSpec& spec);   // config.json's entry
nlohmann::json QuantizeConfigJson(const QuantSpec& spec);       // quantize_config.json

// The linears of a decoder layer in canonical order; every layer result of an
// artifact holds exactly these.
inline constexpr std::array<std::string_view, 7> kLinearNames = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// Files copied from the model directory when present.
inline constexpr std::array<std::string_view, 11> kTokenizerFiles = {
    "tokenizer.model",       "tokenizer.json",     "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "added_tokens.json", "vocab.json",            "merges.txt",
    "chat_template.jinja",   "chat_template.json", "preprocessor_config.json"};

inline constexpr uint64_t kMaxShardBytes = uint64_t{4} << 30;
inline constexpr const char* kManifestName = "qforge-manifest.json";
// The verify stage's report (worker/runtime/verify_stage.h): written into the
// artifact directory after it, so it is not in the manifest and readers
// ignore it.
inline constexpr const char* kVerifyReportName = "verify.json";

// Writes the artifact for `layers` (one LayerResult per decoder layer
// 0 .. cfg.num_hidden_layers-1, any order) quantized from the checkpoint in
// `model_dir`, into `out_dir` through a staging directory renamed into place
// at the end: on any error nothing is left at `out_dir` (an earlier qforge
// artifact there stays as it was). `provenance` goes into the manifest as is.
// Returns:
//   InvalidArgument: bad spec; a layer missing, repeated or out of range; a
//     linear missing, unknown, or whose bits / group_size / sym / desc_act
//     differ from the spec, or whose shape differs from the source weight;
//     a dense tensor with a bad dtype or size; any packing error (pack.h).
//   FailedPrecondition: out_dir is a non-empty directory that is no artifact.
//   NotFound / other: the source checkpoint or config cannot be read; I/O
//     errors naming the path.
absl::Status WriteArtifact(const std::string& model_dir, const ModelConfig& cfg, const QuantSpec& spec,
                           const std::vector<kernels::LayerResult>& layers, const std::string& out_dir,
                           const nlohmann::json& provenance);

// The same artifact, with layer results fetched on demand: layers(l) is
// called once for each l = 0 .. cfg.num_hidden_layers-1, in that order, and
// each result is packed, parked in an unlinked spill file of the staging
// directory and dropped before the next is fetched: memory holds one layer (a
// 70B job's results are ~70 GB at one byte per code, its packed artifact
// ~35 GB), the output's file system about one artifact (each spilled range is
// punched out once copied into its shard, where the file system can). Its
// errors are returned as they are; a result for another layer is
// InvalidArgument. Otherwise as above, and the same bytes.
using LayerSource = std::function<absl::StatusOr<kernels::LayerResult>(int layer)>;
absl::Status WriteArtifact(const std::string& model_dir, const ModelConfig& cfg, const QuantSpec& spec,
                           const LayerSource& layers, const std::string& out_dir, const nlohmann::json& provenance);

// An artifact opened for reading. Movable; the tensors stay mapped while it lives.
struct LoadedArtifact {
  std::string dir;
  ModelConfig config;          // parsed config.json (quantization_config stays in config.raw)
  QuantSpec spec;
  nlohmann::json manifest;
  // layers[i].layer == i; linears in kLinearNames order (empty after
  // OpenArtifact: see Layer()); dense = every other "model.layers.i.*" tensor
  // (norms, biases of unquantized linears) in name order; errors from the
  // manifest (NaN where it has none).
  std::vector<kernels::LayerResult> layers;
  // Tensors outside the decoder layers (embeddings, final norm, lm_head), sorted.
  std::vector<std::string> other_tensors;
  std::unique_ptr<Checkpoint> checkpoint;

  // Any tensor of the artifact, packed ones included. NotFound naming it.
  absl::StatusOr<const TensorView*> Get(std::string_view name) const { return checkpoint->Get(name); }

  // Layer `layer` whole: a copy of layers[layer], its linears unpacked now
  // from the mapped tensors when OpenArtifact left them out (the errors of
  // UnpackGptqV1 / UnpackAwqGemm, naming the directory and tensor).
  // OutOfRange for a layer the artifact does not have.
  absl::StatusOr<kernels::LayerResult> Layer(int layer) const;
};

// Opens `dir`. Verifies qforge-manifest.json first: every file it lists must
// exist with the listed size and sha256 (DataLoss naming the file otherwise),
// and config.json plus every safetensors file read must be listed. Then parses
// config.json (InvalidArgument without a quantization_config or when it
// disagrees with the manifest's spec) and unpacks every layer (errors of
// UnpackGptqV1 / UnpackAwqGemm, naming the tensor). NotFound without a
// manifest: only qforge artifacts are read here.
absl::StatusOr<LoadedArtifact> ReadArtifact(const std::string& dir);

// ReadArtifact without unpacking the linears: every check above but the
// unpacking, which Layer() does one layer at a time when asked. For readers
// that walk the layers (eval, verify): a 70B artifact's linears, unpacked at
// one byte per code, take ~70 GB; one layer of them ~0.9 GB.
absl::StatusOr<LoadedArtifact> OpenArtifact(const std::string& dir);

}  // namespace qf::storage
