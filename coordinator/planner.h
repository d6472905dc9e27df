// File: coordinator/planner.h
//
// JobSpec validation and planning, in two steps:
//   1. ValidateJobSpec: the spec alone (ranges, enums, required fields). A bad
//      spec is refused at Submit with InvalidArgument naming the field.
//   2. CheckJobInputs: the spec against the model (config.json, weights,
//      group size vs. every linear's input features, seqlen vs. positions)
//      and the calibration file. A failure here creates the job and fails it
//      at once, before anything is leased, with the path in the reason.
// Then PlanStages cuts the decoder layers into stages of `stage_layers`.
//
//   ApplySpecDefaults(&spec);
//   QF_RETURN_IF_ERROR(ValidateJobSpec(spec));
//   QF_ASSIGN_OR_RETURN(storage::ModelConfig cfg, CheckJobInputs(spec));
//   std::vector<StagePlan> stages = PlanStages(cfg.num_hidden_layers,
//                                              ResolveStageLayers(spec, cfg, 2));
//   // 4 layers, K=2 -> {[0,2), [2,4)}
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "storage/artifact.h"
#include "storage/model_config.h"

namespace qf::coordinator {

// Fills the zero values that mean "default" (bits 4, group_size 128, damp
// 0.01, block 128, awq grid 20, samples 128, seqlen 512, max_attempts 3,
// format by method, mode sequential, true_sequential on). calib_path is
// required for gptq/awq only (rtn uses no calibration). stage_layers stays
// 0 (= the coordinator's default, resolved against the model in planning).
void ApplySpecDefaults(proto::JobSpec* spec);

// InvalidArgument "JobSpec.<field>: expected ..., got ..." for the first bad
// field. Expects ApplySpecDefaults to have run.
absl::Status ValidateJobSpec(const proto::JobSpec& spec);

// Reads <model_path>/config.json and checks the weights and calibration file
// exist and the spec fits the model. Errors name the path or the field:
// NotFound for a missing model dir / config / weights / calibration file,
// InvalidArgument for a config we cannot use or a spec that does not fit it.
absl::StatusOr<storage::ModelConfig> CheckJobInputs(const proto::JobSpec& spec);

// spec.stage_layers if set, else min(default_stage_layers, layers); >= 1.
int ResolveStageLayers(const proto::JobSpec& spec, const storage::ModelConfig& cfg,
                       int default_stage_layers);

struct StagePlan {
  int first_layer = 0;  // inclusive
  int end_layer = 0;    // exclusive
};
// ceil(num_layers / stage_layers) contiguous stages; the last may be shorter.
std::vector<StagePlan> PlanStages(int num_layers, int stage_layers);

// Whether results carry a permuted g_idx (desc_act): act-order with real
// groups and without static groups, the engine's rule.
bool DescAct(const proto::JobSpec& spec);

// The artifact writer's view of the spec (storage/artifact.h).
storage::QuantSpec ToQuantSpec(const proto::JobSpec& spec);

}  // namespace qf::coordinator
