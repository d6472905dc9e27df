// File: coordinator/assembler.h
//
// The assemble stage: once every layer of a job is committed, the artifact is
// written with storage::WriteArtifact exactly as `qctl quantize` writes it
// (same QuantSpec, same provenance), through a staging dir renamed into place.
// The provenance holds only what determines the bytes of the result (no
// timestamps, host names or job ids), so a distributed run, an embedded run
// and a resumed run of one spec give byte-identical artifacts.
//
//   QF_ASSIGN_OR_RETURN(AssemblyInput in, scheduler->LoadAssemblyInput(job_id));
//   absl::Status s = AssembleArtifact(in);
//   QF_RETURN_IF_ERROR(scheduler->FinishAssembly(job_id, s));
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/scheduler.h"
#include "nlohmann/json.hpp"
#include "proto/job.pb.h"

namespace qf::coordinator {

// What went in, exactly as `qctl quantize` records it: {"tool", "method",
// "bits", "group_size", "act_order", "sym", "static_groups",
// "true_sequential", "damp_percent", "awq_duo_scaling" (awq only), "calibration": {"file" (basename),
// "sha256", "samples", "seqlen", "seed"} (not for rtn)}, plus "mode" and
// "stage_layers" in parallel mode, where they change the result.
// NotFound if the calibration file cannot be read.
absl::StatusOr<nlohmann::json> ArtifactProvenance(const proto::JobSpec& spec, int stage_layers);

// WriteArtifact(spec.model_path, config, ToQuantSpec(spec), layers, spec.out_dir, provenance).
absl::Status AssembleArtifact(const AssemblyInput& input);

using AssembleFn = std::function<absl::Status(const AssemblyInput&)>;

}  // namespace qf::coordinator
