// qctl export: a qforge artifact as a GGUF file for llama.cpp (storage/gguf.h).
#include <algorithm>
#include <cstdio>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "qctl/commands.h"
#include "storage/artifact.h"
#include "storage/gguf.h"
#include "worker/tokenizer.h"

namespace qf::qctl {
namespace {

struct ExportOptions {
  std::string artifact;
  std::string gguf;
};

// tokenizer.ggml.pre for each split pattern, as llama.cpp's converter names
// it. llama.cpp's BPE tokenizer never normalizes; its converter writes Qwen2's
// tokenizer (NFC normalizer) as `qwen2` all the same, so the export takes NFC
// with that pattern only: the file then encodes text that is not already in
// NFC differently from tokenizer.json (the same holds for llama.cpp's own
// conversions of Qwen2 models).
struct PreName {
  worker::BpePattern pattern;
  const char* name;  // for messages
  const char* gguf;
  bool takes_nfc;
};
constexpr PreName kPreNames[] = {
    {worker::BpePattern::kLlama3, "Llama 3", "llama-bpe", false},
    {worker::BpePattern::kGpt2, "GPT-2", "gpt-2", false},
    {worker::BpePattern::kQwen2, "Qwen2", "qwen2", true},
};

// GGUF's "gpt2" vocabulary: tokens and types from Pieces() (3 for special
// added tokens, 4 for the others), no scores. InvalidArgument naming the file
// and the field for an unknown pattern or an NFC normalizer beside a pattern
// that does not take it.
absl::Status AddBpe(const worker::Tokenizer& tok, storage::GgufVocab* v) {
  QF_ASSIGN_OR_RETURN(worker::Tokenizer::BpeModel bpe, tok.Bpe());
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(tok.model_path(), ": ", what));
  };
  const PreName* pre = std::find_if(std::begin(kPreNames), std::end(kPreNames),
                                    [&](const PreName& p) { return p.pattern == bpe.pattern; });
  if (pre == std::end(kPreNames)) {
    return bad("pre_tokenizer: an unknown split pattern, expected the Llama 3, GPT-2 or Qwen2 one");
  }
  if (bpe.nfc && !pre->takes_nfc) {
    return bad(absl::StrCat("normalizer: NFC beside the ", pre->name,
                            " split pattern, expected none (llama.cpp's BPE tokenizer does not normalize, so the "
                            "GGUF file would encode differently)"));
  }
  v->model = storage::GgufVocab::Model::kGpt2;
  v->pre = pre->gguf;
  v->merges = std::move(bpe.merges);
  return absl::OkStatus();
}

absl::StatusOr<storage::GgufVocab> VocabOf(const std::string& dir) {
  QF_ASSIGN_OR_RETURN(std::unique_ptr<worker::Tokenizer> tok, worker::Tokenizer::Load(dir));
  QF_ASSIGN_OR_RETURN(const std::vector<worker::Tokenizer::Piece> pieces, tok->Pieces());
  const bool spm = tok->kind() == worker::TokenizerKind::kSentencePiece;
  storage::GgufVocab v;
  for (size_t id = 0; id < pieces.size(); ++id) {
    v.tokens.push_back(pieces[id].text);
    v.types.push_back(pieces[id].type);
    if (spm) v.scores.push_back(pieces[id].score);
    if (pieces[id].type == 2 && v.unk_id < 0) v.unk_id = static_cast<int32_t>(id);
  }
  if (!spm) QF_RETURN_IF_ERROR(AddBpe(*tok, &v));
  v.bos_id = tok->bos_id();
  v.eos_id = tok->eos_id();
  return v;
}

absl::Status RunExport(const ExportOptions& o) {
  QF_ASSIGN_OR_RETURN(storage::LoadedArtifact a, storage::OpenArtifact(o.artifact));
  QF_ASSIGN_OR_RETURN(storage::GgufVocab vocab, VocabOf(o.artifact));
  QF_RETURN_IF_ERROR(storage::WriteGguf(a, vocab, o.gguf));
  std::printf("wrote %s (%s, %lld layers, %zu pieces)\n", o.gguf.c_str(), a.config.model_type.c_str(),
              static_cast<long long>(a.config.num_hidden_layers), vocab.tokens.size());
  return absl::OkStatus();
}

}  // namespace

CommandFn SetupExport(CLI::App* sub) {
  auto o = std::make_shared<ExportOptions>();
  sub->add_option("artifact", o->artifact, "qforge artifact directory (qctl quantize --out)")->required();
  sub->add_option("--gguf", o->gguf, "GGUF file to write, for llama.cpp")->required();
  return [o] { return RunExport(*o); };
}

}  // namespace qf::qctl
