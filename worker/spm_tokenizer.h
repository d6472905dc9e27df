// File: worker/spm_tokenizer.h
//
// The sentencepiece Tokenizer (worker/tokenizer.h): `tokenizer.model` run by
// the plugin module libqf_spm_plugin.so, opened once per process. Callers use
// Tokenizer::Load; this header is for tokenizer.cc.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/tokenizer.h"

namespace qf::worker {

// Loads the sentencepiece model at `model_path` (a tokenizer.model file).
// InvalidArgument: sentencepiece rejects the file (corrupt or not a model).
// NotFound / Internal / FailedPrecondition: the plugin module is missing,
//   cannot be loaded, or is of another ABI version.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSpmTokenizer(const std::string& model_path);

}  // namespace qf::worker
