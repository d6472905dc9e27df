// File: qctl/progress.h
//
// Progress of a long command: a redrawn bar with ETA on a terminal, plain
// lines otherwise (logs, CI, pipes). Writes to stderr so stdout stays clean
// for results (`-o json`).
//
//   ProgressReporter bar("quantize", /*total=*/num_layers);
//   bar.Update(3, "layer 3/80 mlp.down_proj");
//   bar.Finish("done");
#pragma once

#include <chrono>
#include <string>

namespace qf::qctl {

class ProgressReporter {
 public:
  ProgressReporter(std::string label, int total);
  // `done` units of `total` finished; `detail` says what is being worked on.
  void Update(int done, const std::string& detail);
  void Finish(const std::string& summary);
  double ElapsedSeconds() const;
  static std::string FormatDuration(double seconds);

 private:
  std::string label_;
  int total_;
  bool tty_;
  int last_line_done_ = -1;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qf::qctl
