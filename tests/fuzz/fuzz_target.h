// File: tests/fuzz/fuzz_target.h
//
// What every fuzz target here shares. A target is one libFuzzer entry point,
// LLVMFuzzerTestOneInput, built twice (tests/fuzz/CMakeLists.txt):
//   - <name>_fuzz, with clang's libFuzzer, ASan and UBSan (scripts/fuzz.sh);
//   - <name>_replay, with any compiler and replay_main.cc, which feeds it every
//     file of its corpus; ctest runs it on the checked-in seeds and on every
//     input a fuzzing run has found, so a fixed crash stays fixed.
// A target aborts (QF_FUZZ_CHECK) when the code under test breaks its
// contract: a crash, a refusal that is not one line naming the input's file,
// or an accepted input that violates what the API promises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace qf::fuzz {

#define QF_FUZZ_CHECK(cond, ...)                                           \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

// A directory of this process's own under $TMPDIR (or /tmp), made once; the
// targets write each input there under the file name the API expects.
const std::string& ScratchDir();

// Writes `bytes` to ScratchDir()/name and returns the path.
std::string WriteScratch(const std::string& name, std::string_view bytes);

// Where a target stores what it read only to make the read happen.
extern volatile unsigned g_sink;

// Counts the inputs the code under test accepted (replay_main.cc prints it
// and can require a minimum, so that the seeds keep reaching the checks that
// only accepted inputs get).
void NoteAccepted();
int AcceptedCount();

// Calls write(DIR) once per process when the environment variable `env` names
// a directory: how a target writes its own seeds into corpus/<name>/.
template <class F>
void WriteSeedsOnce(const char* env, F write) {
  static const bool written = [&] {
    if (const char* dir = std::getenv(env)) write(std::string(dir));
    return true;
  }();
  (void)written;
}

// The error contract of every loader here: one line that names `path`.
inline void CheckRefusal(const absl::Status& s, const std::string& path) {
  const std::string msg(s.message());
  QF_FUZZ_CHECK(msg.find('\n') == std::string::npos, "refusal spans lines: %s", msg.c_str());
  QF_FUZZ_CHECK(msg.find(path) != std::string::npos, "refusal does not name %s: %s", path.c_str(), msg.c_str());
}

}  // namespace qf::fuzz
