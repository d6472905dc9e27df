#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace qf {
namespace {

LogLevel LevelFromEnv() {
  const char* v = std::getenv("QF_LOG_LEVEL");
  if (v == nullptr) return LogLevel::kInfo;
  struct Entry { const char* name; LogLevel level; };
  static constexpr Entry kLevels[] = {{"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo},
                                      {"warning", LogLevel::kWarning}, {"error", LogLevel::kError}};
  for (const Entry& e : kLevels) if (std::strcmp(v, e.name) == 0) return e.level;
  return LogLevel::kInfo;
}

std::atomic<int>& MinLevel() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnv())};
  return level;
}

}  // namespace

LogLevel MinLogLevel() { return static_cast<LogLevel>(MinLevel().load()); }
void SetMinLogLevel(LogLevel level) { MinLevel().store(static_cast<int>(level)); }

void EmitLogLine(LogLevel level, const std::string& line) {
  static constexpr const char* kTags[] = {"debug", "info", "warning", "error"};
  static std::mutex mu;  // keeps lines from different threads whole
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "qforge: %s: %s\n", kTags[static_cast<int>(level)], line.c_str());
}

}  // namespace qf
