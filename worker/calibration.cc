#include "worker/calibration.h"

#include <algorithm>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace qf::worker {
namespace {

// "text" of every non-blank line, joined with "\n\n".
absl::StatusOr<std::string> JoinJsonlText(const std::string& path, const std::string& content) {
  std::string out;
  bool first = true;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr,
                                                  /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": not valid JSON (expected one object per line)"));
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected an object with a string \"text\" field"));
    }
    if (!first) out += "\n\n";
    out += j["text"].get_ref<const std::string&>();
    first = false;
  }
  return out;
}

absl::Status CheckPositive(const char* field, int value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be > 0, got ", value));
}

}  // namespace

absl::StatusOr<std::string> LoadCalibrationText(const std::string& path) {
  const bool is_txt = absl::EndsWithIgnoreCase(path, ".txt");
  const bool is_jsonl = absl::EndsWithIgnoreCase(path, ".jsonl");
  if (!is_txt && !is_jsonl) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unsupported calibration file type; expected .txt or .jsonl"));
  }
  QF_ASSIGN_OR_RETURN(std::string content, ReadFileToString(path));
  std::string text;
  if (is_txt) {
    text = std::move(content);
  } else {
    QF_ASSIGN_OR_RETURN(text, JoinJsonlText(path, content));
  }
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": calibration text is empty"));
  }
  return text;
}

std::vector<uint64_t> SampleWindowStarts(uint64_t seed, int samples, uint64_t max_start) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> starts;
  starts.reserve(static_cast<size_t>(std::max(samples, 0)));
  const uint64_t range = max_start + 1;  // 0 means the full 2^64 range
  // 2^64 mod range, in 64-bit arithmetic: (2^64 - range) mod range.
  const uint64_t reject_below = range == 0 ? 0 : (0 - range) % range;
  for (int i = 0; i < samples; ++i) {
    uint64_t x = rng();
    while (x < reject_below) x = rng();
    starts.push_back(range == 0 ? x : x % range);
  }
  return starts;
}

absl::StatusOr<std::vector<int32_t>> BuildCalibrationTokens(const Tokenizer& tokenizer,
                                                            const CalibSpec& spec) {
  QF_RETURN_IF_ERROR(CheckPositive("calibration samples", spec.samples));
  QF_RETURN_IF_ERROR(CheckPositive("calibration seqlen", spec.seqlen));
  const int64_t total = int64_t{spec.samples} * spec.seqlen;
  if (total > kMaxCalibrationTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration samples * seqlen = ", spec.samples, " * ", spec.seqlen, " = ", total,
        " tokens, above the limit of ", kMaxCalibrationTokens));
  }
  QF_ASSIGN_OR_RETURN(const std::string text, LoadCalibrationText(spec.path));
  QF_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tokenizer.Encode(text));
  const uint64_t n = ids.size();
  const uint64_t seqlen = static_cast<uint64_t>(spec.seqlen);
  if (n < seqlen + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.path, ": calibration text has ", n, " tokens; seqlen ", seqlen, " needs at least ",
        seqlen + 1));
  }
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(total));
  for (uint64_t start : SampleWindowStarts(spec.seed, spec.samples, n - seqlen)) {
    out.insert(out.end(), ids.begin() + start, ids.begin() + start + seqlen);
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> BuildEvalTokens(const Tokenizer& tokenizer,
                                                     const std::string& path, int seqlen,
                                                     int max_chunks) {
  QF_RETURN_IF_ERROR(CheckPositive("eval seqlen", seqlen));
  QF_RETURN_IF_ERROR(CheckPositive("eval max_chunks", max_chunks));
  QF_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  QF_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tokenizer.Encode(text));
  // A tokenizer without BOS (Qwen2's tokenizer.json) scores the text from its
  // first token, as its own encoding of the file gives it.
  const bool bos = tokenizer.bos_id() >= 0;
  const size_t n = ids.size() + (bos ? 1 : 0);
  const size_t chunks = std::min(static_cast<size_t>(max_chunks), n / static_cast<size_t>(seqlen));
  if (chunks == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", n, " tokens", bos ? " (BOS included)" : "",
                                                   " make no chunk of seqlen ", seqlen));
  }
  std::vector<int32_t> out;
  out.reserve(chunks * static_cast<size_t>(seqlen));
  if (bos) out.push_back(tokenizer.bos_id());
  out.insert(out.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(chunks * seqlen - out.size()));
  return out;
}

}  // namespace qf::worker
