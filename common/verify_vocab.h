// File: common/verify_vocab.h
//
// The words of the verify stage that cross a process boundary, in one list:
// the engine (worker/engine/verify.cc) writes the verdict into verify.json,
// the coordinator (ParseVerifyReport) and qctl read it back; the planner and
// qctl check a job's verify dtype before any quantization, the engine runs
// it. The coordinator does not link the engine, so this header is the only
// place both see.
//
//   if (!qf::IsVerifyVerdict(v)) return bad("a verdict of " + qf::OneOf(qf::kVerifyVerdicts));
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

namespace qf {

// "passed": nothing failed and at least one linear was checked; "failed": a
// linear or the perplexity check failed (verify.json's "failure" says which);
// "unsupported": the fused kernel takes none of the artifact's linears.
inline constexpr std::string_view kVerdictPassed = "passed";
inline constexpr std::string_view kVerdictFailed = "failed";
inline constexpr std::string_view kVerdictUnsupported = "unsupported";
inline constexpr std::array<std::string_view, 3> kVerifyVerdicts = {kVerdictPassed, kVerdictFailed,
                                                                    kVerdictUnsupported};

// The fused path's element types (VerifySpec::dtype, JobSpec.verify_dtype).
inline constexpr std::array<std::string_view, 2> kVerifyDTypes = {"fp16", "bf16"};

inline bool IsVerifyVerdict(std::string_view v) {
  return std::find(kVerifyVerdicts.begin(), kVerifyVerdicts.end(), v) != kVerifyVerdicts.end();
}
inline bool IsVerifyDType(std::string_view d) {
  return std::find(kVerifyDTypes.begin(), kVerifyDTypes.end(), d) != kVerifyDTypes.end();
}

// "passed, failed or unsupported" / "fp16 or bf16": for error messages.
template <size_t N>
std::string OneOf(const std::array<std::string_view, N>& words) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += words[i];
  }
  return out;
}

}  // namespace qf
