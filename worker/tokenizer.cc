#include "worker/tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "worker/bpe_tokenizer.h"
#include "worker/spm_tokenizer.h"

namespace qf::worker {

Tokenizer::Tokenizer(TokenizerKind kind, std::string model_path, int32_t bos_id, int32_t eos_id, int32_t vocab_size)
    : kind_(kind), model_path_(std::move(model_path)), bos_id_(bos_id), eos_id_(eos_id), vocab_size_(vocab_size) {}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_dir) {
  const std::string model_path = model_dir + "/tokenizer.model";
  if (PathExists(model_path)) return LoadSpmTokenizer(model_path);
  const std::string json_path = model_dir + "/tokenizer.json";
  if (PathExists(json_path)) return LoadHfBpeTokenizer(json_path);
  return absl::NotFoundError(absl::StrCat(model_path, ": no such file, nor ", json_path,
                                          " (need a sentencepiece tokenizer.model or an HF tokenizer.json)"));
}

}  // namespace qf::worker
