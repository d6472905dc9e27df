#include "coordinator/assembler.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "coordinator/planner.h"
#include "storage/artifact.h"
#include "storage/synthetic_model.h"

namespace qf::coordinator {

absl::StatusOr<nlohmann::json> ArtifactProvenance(const proto::JobSpec& spec, int stage_layers) {
  // Field for field what `qctl quantize` records (qctl/quantize_options.cc).
  nlohmann::json p = {{"tool", "qforge"},
                      {"method", spec.method()},
                      {"bits", spec.bits()},
                      {"group_size", spec.group_size()},
                      {"act_order", spec.act_order()},
                      {"sym", spec.sym()},
                      {"static_groups", spec.static_groups()},
                      {"true_sequential", spec.true_sequential()},
                      {"damp_percent", spec.damp_percent()}};
  if (spec.method() == "awq") {
    p["awq_duo_scaling"] = !spec.awq_paper_scales();
    p["awq_search_tokens"] = spec.awq_search_tokens();
  }
  if (spec.method() != "rtn" && storage::IsSyntheticModel(spec.model_path())) {
    p["calibration"] = {{"synthetic_tokens", true},
                        {"samples", spec.samples()},
                        {"seqlen", spec.seqlen()},
                        {"seed", spec.seed()}};
  } else if (spec.method() != "rtn") {
    QF_ASSIGN_OR_RETURN(std::string calib_sha, Sha256FileHex(spec.calib_path()));
    p["calibration"] = {{"file", std::filesystem::path(spec.calib_path()).filename().string()},
                        {"sha256", calib_sha},
                        {"samples", spec.samples()},
                        {"seqlen", spec.seqlen()},
                        {"seed", spec.seed()}};
  }
  // Parallel results depend on where the stages start from FP16 activations;
  // sequential results do not depend on the stage cut at all.
  if (spec.mode() == proto::MODE_PARALLEL) {
    p["mode"] = "parallel";
    p["stage_layers"] = stage_layers;
  }
  return p;
}

absl::Status AssembleArtifact(const AssemblyInput& input) {
  const proto::JobSpec& spec = input.job.spec();
  if (input.config == nullptr)
    return absl::FailedPreconditionError(absl::StrCat("job ", input.job.job_id(), ": no model config"));
  QF_ASSIGN_OR_RETURN(nlohmann::json provenance, ArtifactProvenance(spec, input.stage_layers));
  return storage::WriteArtifact(spec.model_path(), *input.config, ToQuantSpec(spec), input.layer, spec.out_dir(),
                                provenance);
}

}  // namespace qf::coordinator
