// File: tests/fuzz/bpe_encode_fuzz.cc
//
// Byte-level BPE encoding of arbitrary bytes (invalid UTF-8 included, which
// the HF tokenizers never see) with the three fixture tokenizers of
// tests/tokenizer/data; the first byte picks the tokenizer. Every id must be
// inside the vocabulary, and, where the tokenizer holds all 256 byte symbols
// and does not normalize (NFC), the pieces of the ids must spell the input
// back byte for byte: byte-level BPE loses nothing.
#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"
#include "worker/bpe_tokenizer.h"

namespace {

// GPT-2's byte-level alphabet (bytes_to_unicode): printable Latin-1 bytes
// stand for themselves, the other 68 for U+0100.. in byte order.
std::array<uint32_t, 256> ByteAlphabet() {
  std::array<uint32_t, 256> cp{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    cp[b] = printable ? b : next++;
  }
  return cp;
}

std::string Utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

struct Loaded {
  std::unique_ptr<qf::worker::Tokenizer> tok;
  std::vector<qf::worker::Tokenizer::Piece> pieces;
  bool lossless = false;  // all 256 byte symbols, no NFC
  std::array<std::string, 256> symbol;  // UTF-8 of byte b's symbol
};

std::vector<Loaded> LoadFixtures() {
  std::vector<Loaded> out;
  const std::array<uint32_t, 256> cp = ByteAlphabet();
  for (const char* name : {"bpe-llama3", "bpe-gpt2", "bpe-qwen2"}) {
    const std::string path = std::string(QF_SOURCE_DIR) + "/tests/tokenizer/data/" + name + "/tokenizer.json";
    auto tok = qf::worker::LoadHfBpeTokenizer(path);
    QF_FUZZ_CHECK(tok.ok(), "fixture %s: %s", path.c_str(), std::string(tok.status().message()).c_str());
    Loaded l;
    l.tok = std::move(*tok);
    auto pieces = l.tok->Pieces();
    auto bpe = l.tok->Bpe();
    QF_FUZZ_CHECK(pieces.ok() && bpe.ok(), "fixture %s: no pieces", path.c_str());
    l.pieces = std::move(*pieces);
    std::vector<std::string> texts;
    for (const auto& p : l.pieces) texts.push_back(p.text);
    std::sort(texts.begin(), texts.end());
    l.lossless = !bpe->nfc;
    for (int b = 0; b < 256; ++b) {
      l.symbol[b] = Utf8(cp[b]);
      l.lossless = l.lossless && std::binary_search(texts.begin(), texts.end(), l.symbol[b]);
    }
    out.push_back(std::move(l));
  }
  // The round trip below must run somewhere: Llama 3's and GPT-2's fixtures
  // hold every byte symbol and do not normalize.
  QF_FUZZ_CHECK(out[0].lossless && out[1].lossless, "the fixtures no longer cover the round trip");
  return out;
}

// The bytes a piece stands for: an added token (types 3, 4) its own text,
// a byte-level token the bytes of its symbols. False if a symbol is not one.
bool PieceBytes(const Loaded& l, const qf::worker::Tokenizer::Piece& p, std::string* out) {
  if (p.type == 3 || p.type == 4) {
    *out += p.text;
    return true;
  }
  for (size_t i = 0; i < p.text.size();) {
    int b = 0;
    while (b < 256 && p.text.compare(i, l.symbol[b].size(), l.symbol[b]) != 0) ++b;
    if (b == 256) return false;
    *out += static_cast<char>(b);
    i += l.symbol[b].size();
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Loaded> fixtures = LoadFixtures();
  if (size == 0) return 0;
  const Loaded& l = fixtures[data[0] % fixtures.size()];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto ids = l.tok->Encode(text);
  if (!ids.ok()) {
    qf::fuzz::CheckRefusal(ids.status(), l.tok->model_path());
    return 0;
  }
  std::string back;
  bool spelled = true;
  for (int32_t id : *ids) {
    QF_FUZZ_CHECK(id >= 0 && id < l.tok->vocab_size(), "id %d outside [0, %d)", id, l.tok->vocab_size());
    spelled = PieceBytes(l, l.pieces[id], &back) && spelled;
  }
  if (l.lossless) {
    QF_FUZZ_CHECK(spelled && back == text, "%s: %zu input bytes came back as %zu", l.tok->model_path().c_str(),
                  text.size(), back.size());
    qf::fuzz::NoteAccepted();  // counted only where the round trip was checked
  }
  return 0;
}
