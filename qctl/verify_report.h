// File: qctl/verify_report.h
//
// The verify stage as qctl runs it, for `qctl verify ARTIFACT` and for
// `qctl quantize --verify` (the last stage of an embedded job): tokens for
// the optional perplexity check, Engine::Verify with a progress bar, the
// report written to ARTIFACT/verify.json (atomically; the file is a report
// about the artifact, written after it, so it is outside qforge-manifest.json
// and storage::ReadArtifact ignores it), and the printed table or JSON.
//
//   VerifyCliOptions v;  v.artifact = "out/tiny-gptq";  v.device = "cuda";
//   QF_RETURN_IF_ERROR(RunVerifyStage(*engine, v));   // FailedPrecondition naming the tensor when it fails
#pragma once

#include <string>

#include "absl/status/status.h"
#include "storage/artifact.h"
#include "worker/engine/engine_host.h"
#include "worker/runtime/verify_stage.h"

namespace qf::qctl {

using storage::kVerifyReportName;

struct VerifyCliOptions : worker::VerifyStageOptions {
  bool json = false;       // print verify.json's object instead of the table
  bool print = true;       // false: only verify.json (and the error, if it failed)
  int cpu_threads = 0;     // the engine's CPU threads; 0: common/cpu_budget.h
};

// The printed table (verify.json's object: worker::VerifyReportJson).
std::string VerifyReportTable(const worker::VerifyReport& r);

// Runs the stage. Errors: NotFound for a missing artifact directory, the
// engine's (not an artifact, DataLoss from the manifest check, bad device);
// after the report is written and printed, FailedPrecondition
// "<artifact>: <tensor>: <what was expected>" when the verdict is "failed".
// "unsupported" (no linear the kernel takes) is not an error.
absl::Status RunVerifyStage(worker::Engine& engine, const VerifyCliOptions& o);

}  // namespace qf::qctl
