// File: tests/fuzz/bpe_tokenizer_fuzz.cc
//
// LoadHfBpeTokenizer on an arbitrary tokenizer.json (no tokenizer_config.json
// beside it), then one encode. An accepted tokenizer must give ids inside its
// vocabulary and list exactly vocab_size pieces.
#include <string>

#include "tests/fuzz/fuzz_target.h"
#include "worker/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qf::fuzz::WriteScratch("tokenizer.json", {reinterpret_cast<const char*>(data), size});
  auto tok = qf::worker::LoadHfBpeTokenizer(path);
  if (!tok.ok()) {
    qf::fuzz::CheckRefusal(tok.status(), path);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  const qf::worker::Tokenizer& t = **tok;
  auto pieces = t.Pieces();
  QF_FUZZ_CHECK(pieces.ok(), "Pieces: %s", std::string(pieces.status().message()).c_str());
  QF_FUZZ_CHECK(static_cast<int64_t>(pieces->size()) == t.vocab_size(), "%zu pieces, vocab_size %d", pieces->size(),
                t.vocab_size());
  QF_FUZZ_CHECK(t.bos_id() < t.vocab_size() && t.eos_id() < t.vocab_size(), "BOS/EOS outside the vocabulary");
  auto ids = t.Encode("Hello world, it's 2026!\n  \xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 <|endoftext|> \xff");
  if (!ids.ok()) {
    qf::fuzz::CheckRefusal(ids.status(), path);
    return 0;
  }
  for (int32_t id : *ids) QF_FUZZ_CHECK(id >= 0 && id < t.vocab_size(), "id %d outside [0, %d)", id, t.vocab_size());
  return 0;
}
