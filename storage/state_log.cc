#include "storage/state_log.h"

#include <sys/stat.h>
#include <sys/time.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <thread>

namespace qf::storage {
namespace {

class StateLog final : public rocksdb::Logger {
 public:
  explicit StateLog(std::FILE* file) : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL), file_(file) {}
  ~StateLog() override {
    if (file_ != nullptr) std::fclose(file_);
  }

  using rocksdb::Logger::Logv;  // the leveled form prefixes the level and calls the one below
  void Logv(const char* format, va_list ap) override {
    if (file_ == nullptr) return;
    char line[2048];
    const int n = std::vsnprintf(line, sizeof(line), format, ap);
    if (n < 0) return;
    timeval tv;
    gettimeofday(&tv, nullptr);
    std::tm tm;
    localtime_r(&tv.tv_sec, &tm);
    std::lock_guard<std::mutex> lock(mu_);
    // Return values ignored on purpose: a line the disk refuses is dropped.
    std::fprintf(file_, "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %zx %s\n", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long>(tv.tv_usec),
                 std::hash<std::thread::id>()(std::this_thread::get_id()) & 0xffffff, line);
    std::fflush(file_);
    std::clearerr(file_);
  }

  void Flush() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (file_ != nullptr) std::fflush(file_);
  }

 private:
  std::mutex mu_;
  std::FILE* file_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> OpenStateLog(const std::string& dir, uint64_t rotate_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);  // DB::Open reports a directory it cannot make
  const fs::path log = fs::path(dir) / "LOG";
  struct stat st;
  if (::stat(log.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) > rotate_bytes)
    fs::rename(log, fs::path(dir) / "LOG.old", ec);
  return std::make_shared<StateLog>(std::fopen(log.c_str(), "ae"));
}

}  // namespace qf::storage
