// File: tests/fuzz/job_spec_fuzz.cc
//
// What the coordinator does with a Submit before it creates a job
// (coordinator/planner.h): the bytes parsed as a JobSpec, ApplySpecDefaults,
// ValidateJobSpec, and for a synthetic model (the one kind of model_path that
// names no file) the model string and the stage plan. A refusal is one line
// that names the JobSpec field; an accepted spec plans into stages that cover
// every layer once, in order.
#include <fstream>
#include <string>

#include "coordinator/planner.h"
#include "storage/synthetic_model.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

// The seeds: the specs qctl submits for the three methods (QF_FUZZ_WRITE_JOBSPEC_SEEDS=DIR).
void WriteSeeds(const std::string& dir) {
  struct Seed {
    const char* file;
    const char* method;
    const char* model;
    const char* calib;
    bool act_order;
  };
  for (const Seed& s : {Seed{"gptq_act_order.pb", "gptq", "/models/tiny-llama", "/data/calib.txt", true},
                        Seed{"awq.pb", "awq", "/models/tiny-llama", "/data/calib.jsonl", false},
                        Seed{"rtn_synthetic.pb", "rtn", "synthetic:llama-70b?layers=5&seed=7", "", false}}) {
    qf::proto::JobSpec spec;
    spec.set_model_path(s.model);
    spec.set_method(s.method);
    spec.set_calib_path(s.calib);
    spec.set_act_order(s.act_order);
    spec.set_out_dir("/out/job");
    spec.set_stage_layers(2);
    std::ofstream(dir + "/" + s.file, std::ios::binary) << spec.SerializeAsString();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qf::fuzz::WriteSeedsOnce("QF_FUZZ_WRITE_JOBSPEC_SEEDS", WriteSeeds);
  qf::proto::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;  // the RPC layer refuses these
  qf::coordinator::ApplySpecDefaults(&spec);
  const absl::Status valid = qf::coordinator::ValidateJobSpec(spec);
  if (!valid.ok()) {
    qf::fuzz::CheckRefusal(valid, "JobSpec");
    return 0;
  }
  qf::fuzz::NoteAccepted();
  if (!qf::storage::IsSyntheticModel(spec.model_path())) return 0;  // CheckJobInputs reads the directory
  auto synthetic = qf::storage::ParseSyntheticModel(spec.model_path());
  if (!synthetic.ok()) {
    qf::fuzz::CheckRefusal(synthetic.status(), "model '");
    return 0;
  }
  const qf::storage::ModelConfig cfg = qf::storage::SyntheticConfig(*synthetic);
  const int per_stage = qf::coordinator::ResolveStageLayers(spec, cfg, 2);
  QF_FUZZ_CHECK(per_stage >= 1, "stage_layers resolved to %d", per_stage);
  int next = 0;
  for (const qf::coordinator::StagePlan& st : qf::coordinator::PlanStages(cfg.num_hidden_layers, per_stage)) {
    QF_FUZZ_CHECK(st.first_layer == next && st.end_layer > st.first_layer && st.end_layer - st.first_layer <= per_stage,
                  "stage [%d, %d) after layer %d, %d per stage", st.first_layer, st.end_layer, next, per_stage);
    next = st.end_layer;
  }
  QF_FUZZ_CHECK(next == cfg.num_hidden_layers, "stages end at %d of %lld layers", next,
                static_cast<long long>(cfg.num_hidden_layers));
  return 0;
}
