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
// own converter writes none), with its metadata, and the sentencepiece
// vocabulary.
// q_proj and k_proj rows are reordered as llama.cpp's converter does: it
// pairs RoPE dimensions (2i, 2i + 1) of a head where HF pairs (i, i + d/2).
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

// A sentencepiece vocabulary as GGUF's `llama` tokenizer stores it. `types`
// are sentencepiece's piece types (1 normal, 2 unknown, 3 control, 4 user
// defined, 5 unused, 6 byte); -1 ids are left out of the metadata.
struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
};

// Writes `artifact` to `path` (see above). Returns
//   InvalidArgument naming the artifact and the field, linear or tensor: a
//     model type other than llama / mistral, linears with biases, a RoPE type
//     other than default / linear, a vocabulary that is empty or longer than
//     vocab_size, codes llama.cpp's blocks cannot hold (GgmlTypeFor), a
//     norm, embedding or lm_head tensor of an unexpected shape or dtype;
//   the artifact's own errors (Layer()); I/O errors naming the path.
// A vocabulary shorter than vocab_size is padded as llama.cpp's converter
// pads it: "[PAD<id>]" pieces, score -1000, type unused.
absl::Status WriteGguf(const LoadedArtifact& artifact, const GgufVocab& vocab, const std::string& path);

}  // namespace qf::storage
