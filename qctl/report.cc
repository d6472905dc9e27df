#include <cstdio>
#include <string>

#include "absl/strings/str_replace.h"
#include "qctl/commands.h"

namespace qf::qctl {

int ReportStatus(const absl::Status& s) {
  if (s.ok()) return 0;
  std::string msg = absl::StrReplaceAll(s.message(), {{"\n", " "}});
  std::fprintf(stderr, "qctl: error: %s\n", msg.c_str());
  // `watch` of a cancelled job: its own exit status.
  return s.code() == absl::StatusCode::kCancelled ? 3 : 1;
}

}  // namespace qf::qctl
