// File: worker/tokenizer.h
//
// The model's tokenizer, host side and torch-free. Two kinds, chosen by the
// files of the model directory:
//   - sentencepiece `tokenizer.model` (Llama, Mistral), run inside the module
//     libqf_spm_plugin.so (see worker/spm_plugin.cc for why it is a module);
//   - HF `tokenizer.json` byte-level BPE (Llama 3, Qwen2, GPT-2), our own code
//     (worker/bpe_tokenizer.h says which files it accepts).
//
//   QF_ASSIGN_OR_RETURN(std::unique_ptr<qf::worker::Tokenizer> tok,
//                       qf::worker::Tokenizer::Load("models/tiny-llama"));
//   QF_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello world"));
//   // ids: the pieces only; no BOS/EOS is added (callers add tok->bos_id()).
//
// NOTE: a loaded Tokenizer is immutable; Encode may be called from several
// threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qf::worker {

enum class TokenizerKind {
  kSentencePiece,  // tokenizer.model
  kHfBpe,          // tokenizer.json (byte-level BPE)
};

// The split pattern of a byte-level BPE pre-tokenizer (worker/bpe_tokenizer.h).
enum class BpePattern { kLlama3, kQwen2, kGpt2 };

class Tokenizer {
 public:
  // Loads <model_dir>/tokenizer.model when it exists, else
  // <model_dir>/tokenizer.json: Llama 2 and Mistral checkpoints ship both,
  // and keep the sentencepiece path they always had.
  // NotFound: neither file there (the message names both paths).
  // InvalidArgument: the file is corrupt or asks for something unsupported
  //   (the message names the file and, for tokenizer.json, the JSON field).
  // NotFound / Internal: the sentencepiece plugin module is missing or cannot
  //   be loaded (tokenizer.model only).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  virtual ~Tokenizer() = default;

  // The ids of `text` exactly as the reference library gives them: the Python
  // sentencepiece package's sp.encode(text), or HF tokenizers'
  // tokenizer.encode(text, add_special_tokens=False).ids. No BOS/EOS, no
  // normalisation of ours. Internal if sentencepiece (or ICU, for a
  // tokenizer.json's NFC) reports an error.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;

  // Every piece in id order, with its score and sentencepiece type (1 normal,
  // 2 unknown, 3 control, 5 unused, 6 byte): the vocabulary as GGUF stores it.
  // A BPE tokenizer gives its tokens (byte-level alphabet) with score 0 and
  // type 3 for special added tokens, 4 (user-defined) for the other added
  // tokens, 1 for the rest.
  struct Piece {
    std::string text;
    float score = 0;
    int32_t type = 1;
  };
  virtual absl::StatusOr<std::vector<Piece>> Pieces() const = 0;

  // What a byte-level BPE tokenizer holds beyond Pieces(), as GGUF's "gpt2"
  // vocabulary stores it.
  struct BpeModel {
    BpePattern pattern = BpePattern::kGpt2;
    bool nfc = false;  // the normalizer is NFC
    // "a b" in rank order, every entry of model.merges; a space inside a
    // token of the [["a", "b"]] form is written U+0120, as llama.cpp's
    // converter writes it.
    std::vector<std::string> merges;
  };
  // FailedPrecondition naming model_path() for a sentencepiece tokenizer.
  virtual absl::StatusOr<BpeModel> Bpe() const {
    return absl::FailedPreconditionError(model_path() + ": not a byte-level BPE tokenizer");
  }

  TokenizerKind kind() const { return kind_; }
  // -1 when the model defines no BOS piece (BPE: tokenizer_config.json has no
  // bos_token, as for Qwen2).
  int32_t bos_id() const { return bos_id_; }
  // -1 when the model defines no EOS piece.
  int32_t eos_id() const { return eos_id_; }
  int32_t vocab_size() const { return vocab_size_; }
  // The file the tokenizer was read from (tokenizer.model or tokenizer.json),
  // for error messages.
  const std::string& model_path() const { return model_path_; }

 protected:
  Tokenizer(TokenizerKind kind, std::string model_path, int32_t bos_id, int32_t eos_id, int32_t vocab_size);

 private:
  TokenizerKind kind_;
  std::string model_path_;
  int32_t bos_id_;
  int32_t eos_id_;
  int32_t vocab_size_;
};

}  // namespace qf::worker
