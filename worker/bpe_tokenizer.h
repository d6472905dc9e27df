// File: worker/bpe_tokenizer.h
//
// The HF `tokenizer.json` Tokenizer (worker/tokenizer.h): byte-level BPE as
// Llama 3, Qwen2 and GPT-2 ship it, in plain C++ (nlohmann-json, RE2 for the
// pre-tokenizer regex, ICU for NFC). Callers use Tokenizer::Load; this header
// is for tokenizer.cc and says which files load.
//
// Encode follows HF tokenizers' encode(text, add_special_tokens=False):
//   1. added tokens (<|begin_of_text|>, ...) are cut out of the text first,
//      leftmost-longest, and never split; those with "normalized": true are
//      matched after the normalizer, the others before it;
//   2. the normalizer (none, or NFC);
//   3. the pre-tokenizer regex splits each remaining span into pre-tokens;
//   4. each pre-token's bytes map to GPT-2's byte alphabet and are merged by
//      merge rank (or, with "ignore_merges", taken whole when in the vocab).
// post_processor, decoder, truncation and padding are not read: Encode gives
// the ids of the whole text, with nothing added.
//
// Accepted (anything else is refused, see LoadHfBpeTokenizer):
//   model          type "BPE"; vocab {token: id}; merges ["a b", ...] or
//                  [["a", "b"], ...]; ignore_merges, fuse_unk any; unk_token
//                  null or a vocab token; dropout null; byte_fallback false;
//                  continuing_subword_prefix / end_of_word_suffix null or "".
//   normalizer     null or {"type": "NFC"}.
//   pre_tokenizer  Sequence[Split{Regex: the Llama 3 or Qwen2 pattern,
//                  behavior "Isolated", invert false}, ByteLevel{
//                  add_prefix_space false, use_regex false}], or ByteLevel{
//                  add_prefix_space false, use_regex true} (GPT-2).
//   added_tokens   single_word, lstrip, rstrip false.
// The ids of model.vocab and added_tokens together must run 0..N-1, each
// once (an added token that is also in the vocab keeps its vocab id).
// bos_id / eos_id come from tokenizer_config.json beside the file
// (bos_token / eos_token: a string or {"content": ...}); -1 when that file,
// the field or its value is absent or null.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/tokenizer.h"

namespace qf::worker {

// Loads `json_path` (a tokenizer.json) and its directory's
// tokenizer_config.json.
// NotFound / I/O errors of reading `json_path`.
// InvalidArgument, one line naming the file and the JSON field: not valid
//   JSON; a field of the wrong type, missing, or asking for something outside
//   the subset above (e.g. "<file>: pre_tokenizer.pretokenizers[0].pattern.
//   Regex: unsupported split pattern (...)"); a merge naming a token that is
//   not in the vocab; ids duplicated or not contiguous; a bos_token /
//   eos_token that names no token.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfBpeTokenizer(const std::string& json_path);

}  // namespace qf::worker
