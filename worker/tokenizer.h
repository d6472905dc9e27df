// File: worker/tokenizer.h
//
// The model's tokenizer, host side and torch-free. Today: sentencepiece
// `tokenizer.model` (Llama, Mistral), run inside the module
// libqf_spm_plugin.so (see worker/spm_plugin.cc for why it is a module).
// HF `tokenizer.json` BPE (Llama 3, Qwen2) is not supported yet.
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

#include "absl/status/statusor.h"

namespace qf::worker {

struct SpmPluginApi;  // the plugin's entry points, resolved once per process

class Tokenizer {
 public:
  // Loads <model_dir>/tokenizer.model.
  // NotFound: no tokenizer.model there (the message names the path).
  // Unimplemented: only a tokenizer.json there (HF BPE, not supported yet).
  // InvalidArgument: sentencepiece rejects the file (corrupt or not a model).
  // NotFound / Internal: the plugin module is missing or cannot be loaded.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  // The ids of `text` exactly as sentencepiece's Encode gives them (same as
  // the Python package's sp.encode(text)): no BOS/EOS, no normalisation of
  // ours. Internal if sentencepiece reports an error.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;

  // -1 when the model defines no BOS piece.
  int32_t bos_id() const { return bos_id_; }
  // -1 when the model defines no EOS piece.
  int32_t eos_id() const;
  int32_t vocab_size() const { return vocab_size_; }
  // Every piece in id order, with its score and sentencepiece type (1 normal,
  // 2 unknown, 3 control, 5 unused, 6 byte): the vocabulary as GGUF stores it.
  struct Piece {
    std::string text;
    float score = 0;
    int32_t type = 1;
  };
  absl::StatusOr<std::vector<Piece>> Pieces() const;
  // <model_dir>/tokenizer.model, for error messages.
  const std::string& model_path() const { return model_path_; }

 private:
  Tokenizer(const SpmPluginApi* api, void* handle, std::string model_path);

  const SpmPluginApi* api_;  // process-wide, never freed
  void* handle_;          // the plugin's processor; closed in the destructor
  std::string model_path_;
  int32_t bos_id_;
  int32_t vocab_size_;
};

}  // namespace qf::worker
