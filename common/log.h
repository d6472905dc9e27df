// File: common/log.h
//
// Minimal leveled logging to stderr, one line per call. Long-running commands
// print progress through qctl's progress bar; this is for warnings and events.
//
//   QF_LOG(WARNING) << "layer " << i << ": Cholesky failed, damp -> " << damp;
#pragma once

#include <sstream>
#include <string>

namespace qf {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Default kInfo; QF_LOG_LEVEL=debug|info|warning|error.
LogLevel MinLogLevel();
void SetMinLogLevel(LogLevel level);
void EmitLogLine(LogLevel level, const std::string& line);

class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage() { if (level_ >= MinLogLevel()) EmitLogLine(level_, os_.str()); }
  std::ostream& stream() { return os_; }

 private:
  LogLevel level_;
  std::ostringstream os_;
};

}  // namespace qf

#define QF_LOG_LEVEL_DEBUG ::qf::LogLevel::kDebug
#define QF_LOG_LEVEL_INFO ::qf::LogLevel::kInfo
#define QF_LOG_LEVEL_WARNING ::qf::LogLevel::kWarning
#define QF_LOG_LEVEL_ERROR ::qf::LogLevel::kError
#define QF_LOG(sev) ::qf::LogMessage(QF_LOG_LEVEL_##sev).stream()
