// File: worker/runtime/verify_stage.h
//
// The verify stage's inputs and report, shared by the two places that run it:
// `qctl verify` / `qctl quantize --verify` (qctl/verify_report.h, in the
// caller's process) and a cluster worker that leased a job's verify stage
// (worker.h; the coordinator writes the report it sends to verify.json).
//
//   VerifyStageOptions o = VerifyStageOptionsOf(task.spec(), "cuda:0");
//   QF_ASSIGN_OR_RETURN(VerifySpec spec, MakeVerifySpec(o));     // tokenizes o.text
//   QF_ASSIGN_OR_RETURN(VerifyReport r, engine->Verify(spec, progress));
//   std::string json = VerifyReportJson(r).dump(2);
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "proto/job.pb.h"
#include "worker/engine/engine_host.h"

namespace qf::worker {

struct VerifyStageOptions {
  std::string artifact;
  std::string device = "cpu";
  std::string text;            // empty: no perplexity check
  int seqlen = 512;
  int max_chunks = 256;
  int iters = 40;
  std::string dtype = "fp16";  // the fused path's element type: fp16 | bf16
};

// A job's verify settings (JobSpec.verify_*, defaults for zero values) on
// `device`, for the artifact at spec.out_dir.
VerifyStageOptions VerifyStageOptionsOf(const proto::JobSpec& spec, const std::string& device);

// The engine's spec: NotFound for a missing artifact directory or text; the
// tokenizer's errors (the artifact's own tokenizer files tokenize the text).
absl::StatusOr<VerifySpec> MakeVerifySpec(const VerifyStageOptions& o);

// The linear checks' tally: "unsupported" linears are counted apart and have
// no error; max_rel_err is the largest (inf/NaN win) over the checked ones.
struct VerifyCounts {
  int ok = 0, failed = 0, unsupported = 0;
  double max_rel_err = 0;
  double threshold = 0;        // the checked linears' (one per dtype)
};
VerifyCounts CountVerifyLinears(const VerifyReport& r);

// verify.json's object.
nlohmann::json VerifyReportJson(const VerifyReport& r);

}  // namespace qf::worker
