// File: tests/coordinator/test_util.h
//
// Shared helpers of the coordinator tests: a temp dir removed at the end of the
// test, and Status matchers in the shape of Abseil's status_matchers.h (not in
// Debian's Abseil 20220623).
//
//   qf::testing::TempDir dir;
//   EXPECT_THAT(store->Get(...).status(), qf::testing::IsOk());
//   EXPECT_THAT(Submit(bad), qf::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bits")));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf::testing {

// The storage tests' temp dir (made at construction, removed with what it
// holds at destruction): tmp.Path("name") names a file in it.
using TempDir = storage::testing::TempDir;

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) { return s.status(); }

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s.ToString();
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

}  // namespace qf::testing

#define QF_ASSERT_OK(expr) ASSERT_THAT((expr), ::qf::testing::IsOk())
#define QF_EXPECT_OK(expr) EXPECT_THAT((expr), ::qf::testing::IsOk())
#define QF_ASSERT_OK_AND_ASSIGN(lhs, expr)                                    \
  auto QF_STATUS_CONCAT_(qf_test_so_, __LINE__) = (expr);                      \
  ASSERT_THAT(QF_STATUS_CONCAT_(qf_test_so_, __LINE__).status(), ::qf::testing::IsOk()); \
  lhs = std::move(QF_STATUS_CONCAT_(qf_test_so_, __LINE__)).value()
