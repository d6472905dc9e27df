// File: common/status_macros.h
//
// QF_RETURN_IF_ERROR / QF_ASSIGN_OR_RETURN: the call-site shape of Abseil's
// status_macros.h (upstream only from LTS 20260526; Debian 12 ships 20220623).
//
//   absl::StatusOr<Header> ParseHeader(std::string_view path);
//   absl::Status Load(std::string_view path) {
//     QF_ASSIGN_OR_RETURN(Header h, ParseHeader(path));
//     QF_RETURN_IF_ERROR(Validate(h));
//     return absl::OkStatus();
//   }
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QF_STATUS_CONCAT_INNER_(a, b) a##b
#define QF_STATUS_CONCAT_(a, b) QF_STATUS_CONCAT_INNER_(a, b)

#define QF_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::absl::Status qf_status_ = (expr);              \
    if (!qf_status_.ok()) return qf_status_;         \
  } while (0)

#define QF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)    \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#define QF_ASSIGN_OR_RETURN(lhs, expr) \
  QF_ASSIGN_OR_RETURN_IMPL_(QF_STATUS_CONCAT_(qf_statusor_, __LINE__), lhs, expr)
