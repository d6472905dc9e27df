// File: tests/fuzz/replay_main.cc
//
// main() of the <name>_replay binaries: runs the target on every regular file
// named on the command line or found below a named directory, in sorted
// order. Exits 1 when it finds no input at all (a missing corpus must fail
// the test, not pass it empty) or when fewer than --min-accepted=N inputs were
// accepted (seeds that no longer reach the checks of accepted inputs); a
// broken contract aborts in the target.
#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> inputs;
  int min_accepted = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a(argv[i]);
    if (a.rfind("--min-accepted=", 0) == 0) {
      min_accepted = std::atoi(a.c_str() + 15);
      continue;
    }
    const fs::path arg(a);
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file()) inputs.push_back(e.path());
    } else if (fs::is_regular_file(arg, ec)) {
      inputs.push_back(arg);
    } else {
      std::fprintf(stderr, "replay: error: %s: no such file or directory\n", argv[i]);
      return 1;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: error: no inputs (usage: %s FILE_OR_DIR...)\n", argv[0]);
    return 1;
  }
  for (const fs::path& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  const int accepted = qf::fuzz::AcceptedCount();
  std::printf("replay: %zu inputs, %d accepted, every contract held\n", inputs.size(), accepted);
  if (accepted < min_accepted) {
    std::fprintf(stderr, "replay: error: %d inputs accepted, expected at least %d\n", accepted, min_accepted);
    return 1;
  }
  return 0;
}
