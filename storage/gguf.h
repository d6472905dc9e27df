// File: storage/gguf.h
//
// GGUF (version 3), the single file llama.cpp loads, written from a qforge
// artifact: `qctl export ARTIFACT --gguf FILE`.
//
// The quantized linears keep their codes and scales: llama.cpp's block types
// hold our 4-bit symmetric weights exactly (Q4_0), 4-bit asymmetric ones up to
// one fp16 rounding of -scale * zero (Q4_1), 8-bit symmetric ones exactly
// (Q8_0) (kernels/ref/ggml_blocks.h); nothing is requantized. Norms are
// written as F32, the embeddings and lm_head in their dtype (F16, BF16, F32;
// no lm_head when tie_word_embeddings). Architecture `llama` (llama and
// mistral checkpoints; a mistral sliding window is not written, as llama.cpp's
// own converter writes none) or `qwen2` (with the q/k/v biases, F32), with its
// metadata (Llama 3.1's llama3 RoPE scaling as the rope_freqs.weight tensor of
// per-frequency factors llama.cpp takes it as), and the vocabulary as
// llama.cpp's converter writes it: a sentencepiece one as tokenizer `llama`
// (pieces, scores, types), a byte-level BPE tokenizer.json as `gpt2` (tokens
// in the byte alphabet, types, merges, the pre-tokenizer name; no scores).
// For `llama`, q_proj and k_proj rows are reordered as llama.cpp's converter
// does: it pairs RoPE dimensions (2i, 2i + 1) of a head where HF pairs
// (i, i + d/2); `qwen2` pairs them as HF does.
//
// Layout: header, metadata, tensor infos, then the tensors in that order, each
// at a multiple of 32 bytes. The file is streamed one decoder layer at a time
// (memory: one layer's codes) through a temp file renamed into place: on any
// error nothing is left at the path. The same artifact gives the same bytes.
//
//   QF_ASSIGN_OR_RETURN(qf::storage::LoadedArtifact a, qf::storage::OpenArtifact(dir));
//   QF_RETURN_IF_ERROR(qf::storage::WriteGguf(a, vocab, "out/model-q4_0.gguf"));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "storage/artifact.h"

namespace qf::storage {

// A vocabulary as GGUF's tokenizer keys store it (tokenizer.ggml.*). `types`
// are llama.cpp's token types, sentencepiece's piece types (1 normal,
// 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte); -1 ids are left
// out of the metadata.
struct GgufVocab {
  enum class Model {
    kLlama,  // sentencepiece: tokens, scores, types
    kGpt2,   // byte-level BPE: tokens, types, merges, pre; no scores
  };
  Model model = Model::kLlama;
  // kGpt2: llama.cpp's pre-tokenizer name ("llama-bpe", "gpt-2"); kLlama: empty.
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;        // kLlama: one per token; kGpt2: empty
  std::vector<int32_t> types;       // one per token
  std::vector<std::string> merges;  // kGpt2: "a b" in rank order; kLlama: empty
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
};

// Writes `artifact` to `path` (see above). Returns
//   InvalidArgument naming the artifact and the field, linear or tensor: a
//     model type other than llama / mistral / qwen2, biases other than
//     qwen2's q/k/v ones (a bias of the wrong length names its linear), a RoPE type
//     other than default / linear / llama3, a vocabulary that is empty, longer than
//     vocab_size or not of its model's shape (see GgufVocab: a count of
//     scores or types that is not the count of tokens, a kGpt2 vocabulary
//     without merges or pre, a merge not "a b", a kLlama one with either),
//     codes llama.cpp's blocks cannot hold (GgmlTypeFor), a
//     norm, embedding or lm_head tensor of an unexpected shape or dtype;
//   the artifact's own errors (Layer()); I/O errors naming the path.
// A vocabulary shorter than vocab_size is padded as llama.cpp's converter
// pads it: "[PAD<id>]" pieces, type unused (kLlama: score -1000).
// tokenizer.ggml.add_bos_token is true when the vocabulary has a BOS (qforge's
// eval and calibration start with it), add_eos_token false.
absl::Status WriteGguf(const LoadedArtifact& artifact, const GgufVocab& vocab, const std::string& path);

}  // namespace qf::storage
