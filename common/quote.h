// File: common/quote.h
//
// An outside value (a flag, a field of an RPC, a name read from a file) shown
// inside a one-line error message: C-escaped, so that a newline or a control
// byte cannot split the line or forge another, and cut after `max` bytes, so
// that a megabyte of garbage does not become a megabyte of log.
//
//   return absl::InvalidArgumentError(absl::StrCat("JobSpec.method: expected gptq, got \"",
//                                                  qf::EscapeForError(spec.method()), "\""));
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace qf {

inline std::string EscapeForError(std::string_view s, size_t max = 160) {
  const absl::string_view shown(s.data(), std::min(s.size(), max));
  return s.size() > max ? absl::StrCat(absl::CHexEscape(shown), "... (", s.size(), " bytes)") : absl::CHexEscape(shown);
}

}  // namespace qf
