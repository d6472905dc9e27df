#include "qctl/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qf::qctl {

ProgressReporter::ProgressReporter(std::string label, int total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

double ProgressReporter::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string ProgressReporter::FormatDuration(double s) {
  if (s < 0) return "?";
  if (s < 60) return absl::StrFormat("%.1fs", s);
  int m = static_cast<int>(s) / 60;
  if (m < 60) return absl::StrFormat("%dm%02ds", m, static_cast<int>(s) % 60);
  return absl::StrFormat("%dh%02dm", m / 60, m % 60);
}

void ProgressReporter::Update(int done, const std::string& detail) {
  const double elapsed = ElapsedSeconds();
  const double eta = done > 0 ? elapsed / done * (total_ - done) : -1;
  if (tty_) {
    constexpr int kWidth = 24;
    int filled = total_ > 0 ? done * kWidth / total_ : 0;
    std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %d/%d %s  elapsed %s  ETA %s", label_.c_str(), bar.c_str(), done, total_,
                 detail.c_str(), FormatDuration(elapsed).c_str(), done > 0 ? FormatDuration(eta).c_str() : "?");
    std::fflush(stderr);
  } else if (done != last_line_done_) {
    // One line per finished unit keeps logs short.
    std::fprintf(stderr, "%s: %d/%d %s (elapsed %s, ETA %s)\n", label_.c_str(), done, total_, detail.c_str(),
                 FormatDuration(elapsed).c_str(), done > 0 ? FormatDuration(eta).c_str() : "?");
    last_line_done_ = done;
  }
}

void ProgressReporter::Finish(const std::string& summary) {
  if (tty_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s: %s in %s\n", label_.c_str(), summary.c_str(), FormatDuration(ElapsedSeconds()).c_str());
}

}  // namespace qf::qctl
