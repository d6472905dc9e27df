// File: tests/integration/subprocess.h
//
// Child processes for the multi-process tests: fork + execv with stdout and
// stderr going to a log file, kill with any signal (SIGKILL included), wait,
// and scan the log for a line.
//
//   Subprocess c({bin + "/qcoordinator", "--listen", "127.0.0.1:0", "--state", dir}, log);
//   std::string line = c.WaitForLine("listening on", 10000);
//   c.Kill(SIGKILL);
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace qf::testing {

class Subprocess {
 public:
  Subprocess(const std::vector<std::string>& argv, const std::string& log_path) : log_path_(log_path) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Subprocess() {
    if (running()) {
      Kill(SIGKILL);
    }
    Wait();
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !reaped_; }
  void Kill(int sig) {
    if (running()) ::kill(pid_, sig);
  }
  // Exit status (as from waitpid), or -1 if already reaped / never started.
  int Wait() {
    if (!running()) return -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // The first log line containing `needle`, waiting up to timeout_ms; "" if none.
  std::string WaitForLine(const std::string& needle, int timeout_ms) const {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      std::istringstream lines(Log());
      for (std::string line; std::getline(lines, line);) {
        if (line.find(needle) != std::string::npos) return line;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "";
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

}  // namespace qf::testing
