// File: tests/fuzz/fuzz_target.cc
#include "tests/fuzz/fuzz_target.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace qf::fuzz {

const std::string& ScratchDir() {
  // Never destroyed: the atexit handler below is registered while this is
  // being initialized, so it runs after the destructor of a static string.
  static const std::string* const dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    const std::filesystem::path p = std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
                                    ("qf-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return new std::string(p.string());
  }();
  return *dir;
}

std::string WriteScratch(const std::string& name, std::string_view bytes) {
  const std::string path = ScratchDir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  QF_FUZZ_CHECK(out.good(), "cannot write %s", path.c_str());
  return path;
}

volatile unsigned g_sink = 0;

namespace {
int accepted = 0;
}  // namespace

void NoteAccepted() { ++accepted; }
int AcceptedCount() { return accepted; }

}  // namespace qf::fuzz
