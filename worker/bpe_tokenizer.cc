#include "worker/bpe_tokenizer.h"

#ifdef QF_HAVE_ICU
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace qf::worker {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------
// Pre-tokenizer patterns.
//
// HF runs these with Oniguruma; we run them with RE2, which differs in two
// ways that matter here, so only known patterns are accepted and translated:
//  - RE2 has no lookahead. Each pattern ends in `\s+(?!\S)|\s+`: a whitespace
//    run gives up its last character to the next pre-token when a
//    non-whitespace character follows it (so " world" keeps its space), unless
//    that would leave nothing. We match `(\s+)` instead, which always takes
//    the whole run, and trim it afterwards (WhitespaceRunEnd): a run that ends
//    the text stays whole; a longer run followed by a non-space loses its last
//    character; a single whitespace character stays as it is (the plain `\s+`
//    alternative). The earlier alternatives have no lookaround and RE2 picks
//    among alternatives in the same leftmost-first order as Oniguruma.
//  - RE2's \s is ASCII [\t\n\f\r ]; Oniguruma's is Unicode White_Space, which
//    is \t..\r, U+0085 and the separators \p{Z} (U+00A0, U+2009, U+3000, ...).
//    Both \s and the \s inside [^...] classes are spelled out as that set.
// Unmatched bytes (only invalid UTF-8, which HF never sees) become pre-tokens
// of their own, as Split's Isolated behaviour keeps gaps.
// ---------------------------------------------------------------------------

struct KnownPattern {
  const char* name;
  BpePattern id;
  const char* hf;  // exactly as tokenizer.json (or HF's ByteLevel) spells it
};
constexpr KnownPattern kKnownPatterns[] = {
    {"Llama 3", BpePattern::kLlama3,
     R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
    {"Qwen2", BpePattern::kQwen2,
     R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
    {"GPT-2", BpePattern::kGpt2, R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re"},
};
constexpr int kGpt2Pattern = 2;  // what ByteLevel(use_regex: true) splits with

// Unicode White_Space, as a character-class body.
constexpr char kWhiteSpace[] = R"(\t\n\v\f\r \x{85}\p{Z})";

std::string ToRe2(absl::string_view hf) {
  // One pass; at each position the longest key wins, so the tail and "[^\s"
  // are rewritten before a bare "\s".
  return absl::StrReplaceAll(hf, {{R"(\s+(?!\S)|\s+)", absl::StrCat("([", kWhiteSpace, "]+)")},
                                  {R"([^\s)", absl::StrCat("[^", kWhiteSpace)},
                                  {R"(\s)", absl::StrCat("[", kWhiteSpace, "]")}});
}

// Where a whitespace run [start, end) matched by the `(\s+)` alternative ends
// under HF's `\s+(?!\S)|\s+` (see above). The run is valid UTF-8.
size_t WhitespaceRunEnd(std::string_view text, size_t start, size_t end) {
  if (end == text.size()) return end;
  size_t last = end - 1;
  while (last > start && (static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
  return last > start ? last : end;
}

// GPT-2's byte alphabet: the printable bytes ('!'..'~', U+00A1..U+00AC,
// U+00AE..U+00FF) stand for themselves; the other 68 bytes, in order, take
// code points 256, 257, ... So every byte is a visible character, and a
// byte-level token is a UTF-8 string of them.
std::array<std::string, 256> ByteAlphabet() {
  const auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
  std::array<std::string, 256> out;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = printable(b) ? b : next++;
    out[b] = cp < 0x80 ? std::string(1, static_cast<char>(cp))
                       : std::string{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
  }
  return out;
}

// ---------------------------------------------------------------------------
// Added tokens: HF cuts them out leftmost-longest (an Aho-Corasick automaton);
// a scan that tries, at each byte, the tokens starting with it, longest
// first, finds the same matches.
// ---------------------------------------------------------------------------

class AddedTokenMatcher {
 public:
  void Add(std::string content, int32_t id) {
    const auto first = static_cast<unsigned char>(content[0]);
    by_first_byte_[first].push_back({std::move(content), id});
    auto& list = by_first_byte_[first];
    std::stable_sort(list.begin(), list.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  // Calls on_text for each span between tokens (in order, never empty) and
  // appends the tokens' ids to `ids` between those calls.
  absl::Status Split(std::string_view text, std::vector<int32_t>* ids,
                     const std::function<absl::Status(std::string_view)>& on_text) const {
    size_t done = 0;
    for (size_t pos = 0; pos < text.size(); ++pos) {
      for (const auto& [content, id] : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
        if (text.compare(pos, content.size(), content) != 0) continue;
        if (pos > done) QF_RETURN_IF_ERROR(on_text(text.substr(done, pos - done)));
        ids->push_back(id);
        done = pos + content.size();
        pos = done - 1;
        break;
      }
    }
    if (done < text.size()) QF_RETURN_IF_ERROR(on_text(text.substr(done)));
    return absl::OkStatus();
  }

 private:
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> by_first_byte_;
};

// ---------------------------------------------------------------------------
// The loaded tokenizer.
// ---------------------------------------------------------------------------

struct MergeTarget {
  uint32_t rank;
  int32_t id;
};
uint64_t PairKey(int32_t a, int32_t b) { return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b); }

// Everything Load reads from the two files.
struct BpeData {
  std::vector<std::string> tokens;                   // id -> token (byte alphabet) or added content
  std::vector<int32_t> types;                        // id -> 1 normal, 3 special added, 4 other added
  std::unordered_map<std::string, int32_t> vocab;    // model.vocab only
  std::unordered_map<uint64_t, MergeTarget> merges;  // (left id, right id) -> rank, merged id
  std::vector<std::string> merge_list;               // "a b" in rank order, for Bpe()
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool nfc = false;  // the normalizer: none or NFC
  int pattern = -1;  // index into kKnownPatterns
  AddedTokenMatcher raw_added, normalized_added;
  int32_t bos_id = -1, eos_id = -1;
};

// NFC (Qwen2's normalizer) comes from ICU where the build has it (Debian
// libicu-dev); a build without ICU refuses such files at load.
#ifdef QF_HAVE_ICU
constexpr bool kHaveNfc = true;
absl::StatusOr<std::string> Nfc(std::string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);  // ICU's, thread-safe
  const icu::StringPiece in(s.data(), static_cast<int32_t>(s.size()));
  if (U_SUCCESS(err) && nfc->isNormalizedUTF8(in, err) && U_SUCCESS(err)) return std::string(s);
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  if (U_SUCCESS(err)) nfc->normalizeUTF8(0, in, sink, nullptr, err);
  if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("NFC of ", s.size(), " bytes: ", u_errorName(err)));
  return out;
}
#else
constexpr bool kHaveNfc = false;
absl::StatusOr<std::string> Nfc(std::string_view) { return absl::UnimplementedError("built without ICU: no NFC"); }
#endif

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(std::string path, BpeData d)
      : Tokenizer(TokenizerKind::kHfBpe, std::move(path), d.bos_id, d.eos_id, static_cast<int32_t>(d.tokens.size())),
        d_(std::move(d)),
        split_(ToRe2(kKnownPatterns[d_.pattern].hf), RE2::Quiet),
        alphabet_(ByteAlphabet()) {
    for (int b = 0; b < 256; ++b) {
      const auto it = d_.vocab.find(alphabet_[b]);
      byte_ids_[b] = it == d_.vocab.end() ? -1 : it->second;
    }
  }

  // RE2 refuses a pattern only on a bug in ToRe2 or kKnownPatterns.
  absl::Status CheckPattern() const {
    if (split_.ok()) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(model_path(), ": the ", kKnownPatterns[d_.pattern].name,
                                            " pattern does not compile in RE2: ", split_.error()));
  }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    const auto model = [&](std::string_view span) {
      ForEachPreToken(span, [&](std::string_view word) { EncodeWord(word, &ids); });
      return absl::OkStatus();
    };
    const auto normalize_then_model = [&](std::string_view span) -> absl::Status {
      if (!d_.nfc) return d_.normalized_added.Split(span, &ids, model);
      QF_ASSIGN_OR_RETURN(const std::string normalized, Nfc(span));
      return d_.normalized_added.Split(normalized, &ids, model);
    };
    absl::Status s = d_.raw_added.Split(text, &ids, normalize_then_model);
    if (!s.ok()) return absl::InternalError(absl::StrCat(model_path(), ": ", s.message()));
    return ids;
  }

  absl::StatusOr<std::vector<Piece>> Pieces() const override {
    std::vector<Piece> out(d_.tokens.size());
    for (size_t id = 0; id < out.size(); ++id) out[id] = {d_.tokens[id], 0.f, d_.types[id]};
    return out;
  }

  absl::StatusOr<BpeModel> Bpe() const override {
    return BpeModel{kKnownPatterns[d_.pattern].id, d_.nfc, d_.merge_list};
  }

 private:
  // Splits `text` with the pattern (see the comment above kKnownPatterns).
  void ForEachPreToken(std::string_view text, const std::function<void(std::string_view)>& fn) const {
    const re2::StringPiece input(text.data(), text.size());
    re2::StringPiece m[2];
    size_t pos = 0;
    while (pos < text.size()) {
      // Anchored first: with these patterns the next match nearly always
      // starts where the last one ended, and an anchored search is cheaper.
      if (!split_.Match(input, pos, text.size(), RE2::ANCHOR_START, m, 2) &&
          !split_.Match(input, pos, text.size(), RE2::UNANCHORED, m, 2)) {
        fn(text.substr(pos));
        return;
      }
      const size_t start = static_cast<size_t>(m[0].data() - text.data());
      size_t end = start + m[0].size();
      if (start > pos) fn(text.substr(pos, start - pos));
      if (m[1].data() != nullptr) end = WhitespaceRunEnd(text, start, end);
      if (end == start) end = start + 1;  // no known pattern matches empty; never loop
      fn(text.substr(start, end - start));
      pos = end;
    }
  }

  // The BPE of one pre-token: its bytes as alphabet symbols, then the
  // lowest-ranked adjacent pair merged first (the leftmost among equal
  // ranks), until no pair has a merge. A heap of candidate pairs keeps this
  // O(n log n); an entry whose pair has changed since it was pushed is
  // skipped when the pair there no longer merges into the same token, as HF
  // does.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
    if (word.empty()) return;
    if (d_.ignore_merges) {
      std::string mapped;
      for (char c : word) mapped += alphabet_[static_cast<unsigned char>(c)];
      if (const auto it = d_.vocab.find(mapped); it != d_.vocab.end()) {
        ids->push_back(it->second);
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int prev, next;  // -1: none
      bool gone;
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    const auto add = [&](int32_t id) { sym.push_back({id, static_cast<int>(sym.size()) - 1, -1, false}); };
    bool unk_pending = false;  // bytes outside the vocab: unk_token, fused if fuse_unk, else dropped
    for (char c : word) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
      if (id >= 0) {
        if (unk_pending) add(d_.unk_id);
        unk_pending = false;
        add(id);
      } else if (d_.unk_id >= 0) {
        if (unk_pending && !d_.fuse_unk) add(d_.unk_id);
        unk_pending = true;
      }
    }
    if (unk_pending) add(d_.unk_id);
    for (size_t i = 0; i + 1 < sym.size(); ++i) sym[i].next = static_cast<int>(i + 1);

    struct Candidate {
      uint32_t rank;
      int pos;  // the left symbol
      int32_t id;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<Candidate> heap;
    const auto push = [&](int left) {
      if (left < 0 || sym[left].next < 0) return;
      const auto it = d_.merges.find(PairKey(sym[left].id, sym[sym[left].next].id));
      if (it == d_.merges.end()) return;
      heap.push_back({it->second.rank, left, it->second.id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) push(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = sym[top.pos];
      if (left.gone || left.next < 0) continue;
      const auto it = d_.merges.find(PairKey(left.id, sym[left.next].id));
      if (it == d_.merges.end() || it->second.id != top.id) continue;  // stale
      Symbol& right = sym[left.next];
      right.gone = true;
      left.id = top.id;
      left.next = right.next;
      if (right.next >= 0) sym[right.next].prev = top.pos;
      push(left.prev);
      push(top.pos);
    }
    for (const Symbol& s : sym) {
      if (!s.gone) ids->push_back(s.id);
    }
  }

  const BpeData d_;
  const RE2 split_;
  const std::array<std::string, 256> alphabet_;
  std::array<int32_t, 256> byte_ids_;  // the vocab id of each byte's symbol, -1 if none
};

// ---------------------------------------------------------------------------
// Reading tokenizer.json. Every refusal is one line:
// "<file>: <field>: <what was found or expected>".
// ---------------------------------------------------------------------------

absl::Status FieldError(const std::string& file, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, ": ", what));
}

absl::StatusOr<Json> ReadJson(const std::string& path) {
  QF_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON (at byte ", e.byte, ")"));
  }
}

// A JSON value or token as a message shows it: JSON-escaped (one line) and
// cut at 80 characters.
std::string Shown(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}
std::string Quoted(const std::string& token) { return Shown(Json(token)); }

const Json* Member(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}
bool HasType(const Json& obj, const char* type) {
  const Json* t = Member(obj, "type");
  return t != nullptr && t->is_string() && t->get_ref<const std::string&>() == type;
}
bool IsNull(const Json* j) { return j == nullptr || j->is_null(); }
bool IsFalse(const Json* j) { return j == nullptr || (j->is_boolean() && !j->get<bool>()); }
bool IsBool(const Json* j) { return j == nullptr || j->is_boolean(); }
bool IsNullOrEmpty(const Json* j) { return IsNull(j) || (j->is_string() && j->get_ref<const std::string&>().empty()); }
bool IsNullOrString(const Json* j) { return IsNull(j) || j->is_string(); }

// An option of a JSON object that must hold one of the values we implement.
struct OptionRule {
  const char* key;
  bool (*ok)(const Json*);  // gets nullptr when the key is absent
  const char* expected;
};

absl::Status CheckOptions(const std::string& file, const std::string& prefix, const Json& obj,
                          std::initializer_list<OptionRule> rules) {
  for (const OptionRule& r : rules) {
    if (!r.ok(Member(obj, r.key))) {
      const Json* got = Member(obj, r.key);
      return FieldError(file, prefix + r.key,
                        absl::StrCat("got ", got == nullptr ? "nothing" : Shown(*got), ", expected ", r.expected));
    }
  }
  return absl::OkStatus();
}

// `obj[key]` of the given kind, else an error naming prefix + key.
absl::StatusOr<const Json*> Require(const std::string& file, const std::string& prefix, const Json& obj,
                                    const char* key, Json::value_t kind, const char* kind_name) {
  const Json* j = Member(obj, key);
  if (j == nullptr) return FieldError(file, prefix + key, absl::StrCat("missing (expected ", kind_name, ")"));
  const bool same = j->type() == kind || (kind == Json::value_t::number_integer && j->is_number_integer());
  if (!same) return FieldError(file, prefix + key, absl::StrCat("expected ", kind_name, ", got ", j->type_name()));
  return j;
}

absl::Status ReadVocab(const std::string& file, const Json& model, BpeData* d) {
  QF_ASSIGN_OR_RETURN(const Json* vocab, Require(file, "model.", model, "vocab", Json::value_t::object, "an object"));
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_unsigned() || id.get<uint64_t>() >= uint64_t{std::numeric_limits<int32_t>::max()}) {
      return FieldError(file, "model.vocab", absl::StrCat(Quoted(token), ": id ", Shown(id), " is not an id"));
    }
    d->vocab.emplace(token, static_cast<int32_t>(id.get<uint64_t>()));
  }
  return absl::OkStatus();
}

// merges[i] as GGUF writes it: "a b" as given; ["a", "b"] joined by a space,
// a space inside a or b written U+0120 (GPT-2's byte symbol for a space), as
// llama.cpp's converter joins it.
std::string GgufMerge(const Json& m, const std::string& a, const std::string& b) {
  if (m.is_string()) return m.get<std::string>();
  const auto spelled = [](const std::string& s) { return absl::StrReplaceAll(s, {{" ", "\xC4\xA0"}}); };  // U+0120
  return absl::StrCat(spelled(a), " ", spelled(b));
}

// The two halves of merges[i]: "a b" or ["a", "b"].
absl::StatusOr<std::pair<std::string, std::string>> MergePair(const std::string& file, const Json& m, size_t i) {
  if (m.is_string()) {
    const std::vector<std::string> parts = absl::StrSplit(m.get_ref<const std::string&>(), ' ');
    if (parts.size() == 2) return std::pair(parts[0], parts[1]);
  } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    return std::pair(m[0].get<std::string>(), m[1].get<std::string>());
  }
  return FieldError(file, absl::StrCat("model.merges[", i, "]"),
                    absl::StrCat("got ", Shown(m), ", expected \"A B\" or [\"A\", \"B\"]"));
}

absl::Status ReadMerges(const std::string& file, const Json& model, BpeData* d) {
  QF_ASSIGN_OR_RETURN(const Json* merges, Require(file, "model.", model, "merges", Json::value_t::array, "an array"));
  for (size_t i = 0; i < merges->size(); ++i) {
    QF_ASSIGN_OR_RETURN(const auto pair, MergePair(file, (*merges)[i], i));
    const auto& [a, b] = pair;
    int32_t ids[3];
    const std::string names[3] = {a, b, a + b};
    for (int k = 0; k < 3; ++k) {
      const auto it = d->vocab.find(names[k]);
      if (it == d->vocab.end()) {
        return FieldError(file, absl::StrCat("model.merges[", i, "]"),
                          absl::StrCat(Quoted(names[k]), " is not in model.vocab"));
      }
      ids[k] = it->second;
    }
    // A repeated pair takes its last rank, as HF's merge map is built.
    d->merges[PairKey(ids[0], ids[1])] = {static_cast<uint32_t>(i), ids[2]};
    d->merge_list.push_back(GgufMerge((*merges)[i], a, b));
  }
  return absl::OkStatus();
}

absl::Status ReadModel(const std::string& file, const Json& root, BpeData* d) {
  QF_ASSIGN_OR_RETURN(const Json* model, Require(file, "", root, "model", Json::value_t::object, "an object"));
  const Json* type = Member(*model, "type");
  if (!HasType(*model, "BPE")) {
    return FieldError(file, "model.type",
                      absl::StrCat("got ", type == nullptr ? "nothing" : Shown(*type),
                                   ", expected \"BPE\" (supported: byte-level BPE)"));
  }
  QF_RETURN_IF_ERROR(ReadVocab(file, *model, d));
  QF_RETURN_IF_ERROR(ReadMerges(file, *model, d));
  QF_RETURN_IF_ERROR(CheckOptions(file, "model.", *model,
                                  {{"dropout", IsNull, "null (dropout is for training)"},
                                   {"byte_fallback", IsFalse, "false (byte-level BPE needs no byte fallback)"},
                                   {"continuing_subword_prefix", IsNullOrEmpty, "null or \"\""},
                                   {"end_of_word_suffix", IsNullOrEmpty, "null or \"\""},
                                   {"ignore_merges", IsBool, "a boolean"},
                                   {"fuse_unk", IsBool, "a boolean"},
                                   {"unk_token", IsNullOrString, "null or a string"}}));
  const Json* ignore_merges = Member(*model, "ignore_merges");
  const Json* fuse_unk = Member(*model, "fuse_unk");
  d->ignore_merges = ignore_merges != nullptr && ignore_merges->get<bool>();
  d->fuse_unk = fuse_unk != nullptr && fuse_unk->get<bool>();
  if (const Json* unk = Member(*model, "unk_token"); !IsNull(unk)) {
    const auto it = d->vocab.find(unk->get<std::string>());
    if (it == d->vocab.end()) return FieldError(file, "model.unk_token", Shown(*unk) + " is not in model.vocab");
    d->unk_id = it->second;
  }
  return absl::OkStatus();
}

absl::Status ReadNormalizer(const std::string& file, const Json& root, BpeData* d) {
  const Json* n = Member(root, "normalizer");
  if (IsNull(n)) return absl::OkStatus();
  if (!HasType(*n, "NFC")) {
    return FieldError(file, "normalizer", absl::StrCat("got ", Shown(*n), ", expected null or {\"type\": \"NFC\"}"));
  }
  if (!kHaveNfc) {
    return FieldError(file, "normalizer", "NFC needs ICU, and this build has none (install libicu-dev and rebuild)");
  }
  d->nfc = true;
  return absl::OkStatus();
}

absl::Status CheckByteLevel(const std::string& file, const std::string& field, const Json& p, bool use_regex) {
  if (!HasType(p, "ByteLevel")) {
    return FieldError(file, field + ".type", "expected \"ByteLevel\" (supported: byte-level BPE)");
  }
  const Json* prefix = Member(p, "add_prefix_space");
  if (prefix == nullptr || !IsFalse(prefix)) {
    return FieldError(file, field + ".add_prefix_space", "expected false (a prefix space is not supported)");
  }
  const Json* regex = Member(p, "use_regex");  // HF's default: true
  if ((regex == nullptr ? true : regex->is_boolean() && regex->get<bool>()) != use_regex) {
    return FieldError(file, field + ".use_regex",
                      absl::StrCat("expected ", use_regex ? "true" : "false",
                                   use_regex ? " (a lone ByteLevel splits with GPT-2's pattern)"
                                             : " (the Split before it has split already)"));
  }
  return absl::OkStatus();
}

absl::Status CheckSplit(const std::string& file, const std::string& field, const Json& p, BpeData* d) {
  if (!HasType(p, "Split")) {
    return FieldError(file, field + ".type", "expected \"Split\" (then ByteLevel)");
  }
  const Json* pattern = Member(p, "pattern");
  const Json* regex = pattern == nullptr ? nullptr : Member(*pattern, "Regex");
  if (regex == nullptr || !regex->is_string()) {
    return FieldError(file, field + ".pattern.Regex", "missing (expected a regex pattern)");
  }
  for (int i = 0; i < static_cast<int>(std::size(kKnownPatterns)); ++i) {
    if (regex->get_ref<const std::string&>() == kKnownPatterns[i].hf) d->pattern = i;
  }
  if (d->pattern < 0) {
    return FieldError(file, field + ".pattern.Regex",
                      "unsupported split pattern (supported: the Llama 3, Qwen2 and GPT-2 patterns)");
  }
  return CheckOptions(file, field + ".", p,
                      {{"behavior", [](const Json* j) { return j != nullptr && *j == "Isolated"; }, "\"Isolated\""},
                       {"invert", [](const Json* j) { return j != nullptr && IsFalse(j); }, "false"}});
}

absl::Status ReadPreTokenizer(const std::string& file, const Json& root, BpeData* d) {
  const Json* p = Member(root, "pre_tokenizer");
  if (IsNull(p) || !p->is_object()) {
    return FieldError(file, "pre_tokenizer", "missing (expected Sequence[Split, ByteLevel] or ByteLevel)");
  }
  if (HasType(*p, "ByteLevel")) {
    d->pattern = kGpt2Pattern;
    return CheckByteLevel(file, "pre_tokenizer", *p, /*use_regex=*/true);
  }
  const Json* seq = Member(*p, "pretokenizers");
  if (!HasType(*p, "Sequence") || seq == nullptr || !seq->is_array() || seq->size() != 2) {
    return FieldError(file, "pre_tokenizer", "expected Sequence[Split, ByteLevel] or ByteLevel");
  }
  QF_RETURN_IF_ERROR(CheckSplit(file, "pre_tokenizer.pretokenizers[0]", (*seq)[0], d));
  return CheckByteLevel(file, "pre_tokenizer.pretokenizers[1]", (*seq)[1], /*use_regex=*/false);
}

// One entry of added_tokens.
struct AddedEntry {
  std::string content;
  int32_t id;
  bool special;
  bool normalized;  // matched after the normalizer
};

absl::Status ReadAddedTokens(const std::string& file, const Json& root, std::vector<AddedEntry>* added) {
  const Json* list = Member(root, "added_tokens");
  if (IsNull(list)) return absl::OkStatus();
  if (!list->is_array()) return FieldError(file, "added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    const Json& t = (*list)[i];
    if (!t.is_object()) return FieldError(file, field, "expected an object");
    QF_ASSIGN_OR_RETURN(const Json* content,
                        Require(file, field + ".", t, "content", Json::value_t::string, "a string"));
    QF_ASSIGN_OR_RETURN(const Json* id, Require(file, field + ".", t, "id", Json::value_t::number_integer, "an id"));
    if (content->get_ref<const std::string&>().empty()) return FieldError(file, field + ".content", "empty");
    if (!id->is_number_unsigned() || id->get<uint64_t>() >= uint64_t{std::numeric_limits<int32_t>::max()}) {
      return FieldError(file, field + ".id", Shown(*id) + " is not an id");
    }
    QF_RETURN_IF_ERROR(CheckOptions(file, field + ".", t,
                                    {{"single_word", IsFalse, "false"},
                                     {"lstrip", IsFalse, "false"},
                                     {"rstrip", IsFalse, "false"},
                                     {"special", IsBool, "a boolean"},
                                     {"normalized", IsBool, "a boolean"}}));
    for (size_t j = 0; j < added->size(); ++j) {
      if ((*added)[j].content == content->get_ref<const std::string&>()) {
        return FieldError(file, field + ".content", absl::StrCat(Shown(*content), " repeats added_tokens[", j, "]"));
      }
    }
    const Json* special = Member(t, "special");
    const Json* normalized = Member(t, "normalized");
    added->push_back({content->get<std::string>(), static_cast<int32_t>(id->get<uint64_t>()),
                      special != nullptr && special->get<bool>(),
                      normalized == nullptr || normalized->get<bool>()});  // HF's defaults
  }
  return absl::OkStatus();
}

// The two matchers; a normalized token is matched in its normalized form.
absl::Status BuildMatchers(const std::vector<AddedEntry>& added, BpeData* d) {
  for (const AddedEntry& a : added) {
    std::string text = a.content;
    if (a.normalized && d->nfc) {
      QF_ASSIGN_OR_RETURN(text, Nfc(text));
    }
    (a.normalized ? d->normalized_added : d->raw_added).Add(std::move(text), a.id);
  }
  return absl::OkStatus();
}

// d->tokens and d->types from model.vocab and the added tokens: every id in
// 0..N-1 once.
absl::Status AssignIds(const std::string& file, const std::vector<AddedEntry>& added, BpeData* d) {
  size_t n = d->vocab.size();
  for (const AddedEntry& a : added) n += d->vocab.count(a.content) ? 0 : 1;
  d->tokens.assign(n, std::string());
  d->types.assign(n, 1);
  std::vector<bool> taken(n, false);
  const auto place = [&](const std::string& field, const std::string& token, int32_t id) -> absl::Status {
    if (static_cast<size_t>(id) >= n) {
      return FieldError(file, field,
                        absl::StrCat(Quoted(token), " has id ", id, "; the ", n,
                                     " tokens of model.vocab and added_tokens need ids 0 to ", n - 1));
    }
    if (taken[id] && d->tokens[id] != token) {
      return FieldError(file, field,
                        absl::StrCat("id ", id, " is given to both ", Quoted(d->tokens[id]), " and ", Quoted(token)));
    }
    taken[id] = true;
    d->tokens[id] = token;
    return absl::OkStatus();
  };
  for (const auto& [token, id] : d->vocab) QF_RETURN_IF_ERROR(place("model.vocab", token, id));
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedEntry& a = added[i];
    const std::string field = absl::StrCat("added_tokens[", i, "].id");
    const auto in_vocab = d->vocab.find(a.content);
    if (in_vocab != d->vocab.end() && in_vocab->second != a.id) {
      return FieldError(file, field,
                        absl::StrCat(a.id, ", but model.vocab gives ", Quoted(a.content), " id ", in_vocab->second));
    }
    QF_RETURN_IF_ERROR(place(field, a.content, a.id));
    d->types[a.id] = a.special ? 3 : 4;  // sentencepiece's CONTROL and USER_DEFINED, as GGUF types them
  }
  // n tokens, each placed below n at an id no other token holds: all taken.
  return absl::OkStatus();
}

// bos_token / eos_token of tokenizer_config.json, looked up among the tokens.
absl::StatusOr<int32_t> SpecialId(const std::string& config_path, const Json& config, const char* key,
                                  const std::string& json_path, const BpeData& d,
                                  const std::vector<AddedEntry>& added) {
  const Json* j = Member(config, key);
  if (IsNull(j)) return -1;
  const Json* content = j->is_object() ? Member(*j, "content") : j;
  if (IsNull(content) || !content->is_string()) {
    return FieldError(config_path, key, "expected null, a string or {\"content\": string}");
  }
  for (const AddedEntry& a : added) {
    if (a.content == content->get_ref<const std::string&>()) return a.id;
  }
  const auto it = d.vocab.find(content->get<std::string>());
  if (it != d.vocab.end()) return it->second;
  return FieldError(config_path, key, absl::StrCat(Shown(*content), " is not a token of ", json_path));
}

absl::Status ReadSpecialIds(const std::string& json_path, const std::vector<AddedEntry>& added, BpeData* d) {
  const std::string config_path = json_path.substr(0, json_path.rfind('/') + 1) + "tokenizer_config.json";
  if (!PathExists(config_path)) return absl::OkStatus();
  QF_ASSIGN_OR_RETURN(const Json config, ReadJson(config_path));
  if (!config.is_object()) return FieldError(config_path, "(top level)", "expected an object");
  QF_ASSIGN_OR_RETURN(d->bos_id, SpecialId(config_path, config, "bos_token", json_path, *d, added));
  QF_ASSIGN_OR_RETURN(d->eos_id, SpecialId(config_path, config, "eos_token", json_path, *d, added));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path) {
  QF_ASSIGN_OR_RETURN(const Json root, ReadJson(path));
  if (!root.is_object()) return FieldError(path, "(top level)", "expected an object");
  BpeData d;
  std::vector<AddedEntry> added;
  QF_RETURN_IF_ERROR(ReadModel(path, root, &d));
  QF_RETURN_IF_ERROR(ReadNormalizer(path, root, &d));
  QF_RETURN_IF_ERROR(ReadPreTokenizer(path, root, &d));
  QF_RETURN_IF_ERROR(ReadAddedTokens(path, root, &added));
  QF_RETURN_IF_ERROR(AssignIds(path, added, &d));
  QF_RETURN_IF_ERROR(BuildMatchers(added, &d));
  QF_RETURN_IF_ERROR(ReadSpecialIds(path, added, &d));
  auto tok = std::make_unique<BpeTokenizer>(path, std::move(d));
  QF_RETURN_IF_ERROR(tok->CheckPattern());
  return tok;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfBpeTokenizer(const std::string& json_path) {
  // The checks above test every type before reading a value; this is the
  // boundary that keeps any nlohmann exception they missed from escaping.
  try {
    return Load(json_path);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(json_path, ": unexpected JSON content: ", e.what()));
  }
}

}  // namespace qf::worker
