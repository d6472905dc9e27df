// qctl export: a qforge artifact as a GGUF file for llama.cpp (storage/gguf.h).
#include <cstdio>
#include <memory>

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

absl::StatusOr<storage::GgufVocab> VocabOf(const std::string& dir) {
  QF_ASSIGN_OR_RETURN(std::unique_ptr<worker::Tokenizer> tok, worker::Tokenizer::Load(dir));
  if (tok->kind() != worker::TokenizerKind::kSentencePiece) {  // GgufVocab is sentencepiece's ("llama")
    return absl::InvalidArgumentError(absl::StrCat(tok->model_path(),
                                                   ": GGUF export supports sentencepiece tokenizers only "
                                                   "(this model has an HF BPE tokenizer.json)"));
  }
  QF_ASSIGN_OR_RETURN(const std::vector<worker::Tokenizer::Piece> pieces, tok->Pieces());
  storage::GgufVocab v;
  for (size_t id = 0; id < pieces.size(); ++id) {
    v.tokens.push_back(pieces[id].text);
    v.scores.push_back(pieces[id].score);
    v.types.push_back(pieces[id].type);
    if (pieces[id].type == 2 && v.unk_id < 0) v.unk_id = static_cast<int32_t>(id);
  }
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
