// File: worker/calibration.h
//
// Token batches for calibration (GPTQ/AWQ statistics) and for the perplexity
// eval, built on the host from text files. Both are pure functions of their
// inputs: the same file, tokenizer and spec give the same ids on every
// platform (no std::uniform_int_distribution, whose mapping is
// implementation-defined).
//
//   QF_ASSIGN_OR_RETURN(auto tok, Tokenizer::Load("models/tiny-llama"));
//   CalibSpec spec{.path = "data/calib.txt", .samples = 128, .seqlen = 2048, .seed = 0};
//   QF_ASSIGN_OR_RETURN(std::vector<int32_t> calib, BuildCalibrationTokens(*tok, spec));
//   // calib: 128 rows x 2048 ids, row-major
//   QF_ASSIGN_OR_RETURN(std::vector<int32_t> eval,
//                       BuildEvalTokens(*tok, "data/books-heldout.txt", 2048, 40));
//   // eval: chunks x 2048 ids; eval[0] is BOS
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer.h"

namespace qf::worker {

// Upper bound on samples * seqlen (1 GiB of ids): a larger request is a typo,
// not a calibration set.
inline constexpr int64_t kMaxCalibrationTokens = int64_t{1} << 28;

// The calibration text of a file, chosen by extension (case-insensitive):
//   .txt   the whole file, unchanged;
//   .jsonl one JSON object per line; the string "text" field of every line,
//          joined with "\n\n". Blank lines are skipped.
// NotFound: no such file. InvalidArgument: another extension; a .jsonl line
// that is not JSON or has no string "text" field ("<path>:<line>: ...");
// text that is empty or only whitespace ("<path>: calibration text is empty").
absl::StatusOr<std::string> LoadCalibrationText(const std::string& path);

struct CalibSpec {
  std::string path;  // .txt or .jsonl, see LoadCalibrationText
  int samples = 0;   // number of windows (rows)
  int seqlen = 0;    // tokens per window
  uint64_t seed = 0;
};

// `samples` windows of `seqlen` consecutive ids from the encoding of the whole
// calibration text (no BOS added), start positions from SampleWindowStarts
// (windows may overlap, as in the GPTQ reference). Returns samples * seqlen
// ids, row-major.
// InvalidArgument: samples or seqlen <= 0 or their product above
// kMaxCalibrationTokens (the message names the field); fewer than seqlen + 1
// tokens in the text (the message gives both counts); errors of
// LoadCalibrationText.
absl::StatusOr<std::vector<int32_t>> BuildCalibrationTokens(const Tokenizer& tokenizer,
                                                            const CalibSpec& spec);

// `samples` start positions, each uniform in [0, max_start], drawn from
// std::mt19937_64(seed), whose output sequence the C++ standard fixes. Each
// position maps one 64-bit draw x to [0, R), R = max_start + 1, by rejection:
// draws with x < (2^64 mod R) are discarded, then x mod R is taken. The kept
// draws number a multiple of R, so the result is unbiased and the mapping is
// the same on every platform. Requires samples >= 0.
std::vector<uint64_t> SampleWindowStarts(uint64_t seed, int samples, uint64_t max_start);

// The eval protocol, exactly: tokens = [BOS] + the encoding of the whole file
// (bytes as read, no normalisation of ours), without the BOS for a tokenizer
// that has none (Qwen2's); cut into non-overlapping chunks of seqlen; keep the
// first min(max_chunks, floor(n / seqlen)) chunks. Returns chunks * seqlen
// ids, row-major.
// InvalidArgument: seqlen or max_chunks <= 0 (naming the field); zero chunks
// (the message gives the token count and seqlen).
// NotFound: no such file.
absl::StatusOr<std::vector<int32_t>> BuildEvalTokens(const Tokenizer& tokenizer,
                                                     const std::string& path, int seqlen,
                                                     int max_chunks);

}  // namespace qf::worker
