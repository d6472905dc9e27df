// File: tests/fuzz/calibration_text_fuzz.cc
//
// The calibration file a user names with --calib (worker/calibration.h,
// LoadCalibrationText). The input's first byte picks the extension (even:
// .jsonl, odd: .txt), the rest is the file. A refusal is one line naming the
// file; accepted text is not blank, a .txt comes back unchanged, and a .jsonl
// gives at most as many bytes as the file holds (every line that counts is a
// JSON object of at least 11 bytes and adds its "text" value, unescaped, and
// two bytes of separator).
#include <string>

#include "absl/strings/ascii.h"
#include "tests/fuzz/fuzz_target.h"
#include "worker/calibration.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool jsonl = data[0] % 2 == 0;
  const std::string content(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string path = qf::fuzz::WriteScratch(jsonl ? "calib.jsonl" : "calib.txt", content);
  auto text = qf::worker::LoadCalibrationText(path);
  if (!text.ok()) {
    qf::fuzz::CheckRefusal(text.status(), path);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  QF_FUZZ_CHECK(!absl::StripAsciiWhitespace(*text).empty(), "accepted blank text (%zu bytes)", text->size());
  if (jsonl) {
    QF_FUZZ_CHECK(text->size() <= content.size(), "%zu bytes of text from a %zu-byte file", text->size(),
                  content.size());
  } else {
    QF_FUZZ_CHECK(*text == content, "a .txt came back changed");
  }
  return 0;
}
