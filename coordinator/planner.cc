#include "coordinator/planner.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "common/verify_vocab.h"
#include "storage/synthetic_model.h"

namespace qf::coordinator {
namespace {

absl::Status FieldError(const std::string& field, const std::string& expected, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat("JobSpec.", field, ": expected ", expected, ", got ", got));
}

absl::Status CheckRange(const std::string& field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) return FieldError(field, absl::StrCat("a value in [", lo, ", ", hi, "]"), absl::StrCat(v));
  return absl::OkStatus();
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", EscapeForError(s), "\""); }

// The verify stage's fields: only with verify, and in range (the worker's
// engine takes the same dtypes: common/verify_vocab.h).
absl::Status ValidateVerifyFields(const proto::JobSpec& spec) {
  if (!spec.verify()) {
    if (!spec.verify_text().empty()) return FieldError("verify_text", "empty without verify", Quoted(spec.verify_text()));
    if (!spec.verify_dtype().empty()) return FieldError("verify_dtype", "empty without verify", Quoted(spec.verify_dtype()));
    if (spec.verify_seqlen() != 0 || spec.verify_max_chunks() != 0)
      return FieldError(spec.verify_seqlen() != 0 ? "verify_seqlen" : "verify_max_chunks", "0 without verify",
                        absl::StrCat(spec.verify_seqlen() != 0 ? spec.verify_seqlen() : spec.verify_max_chunks()));
    return absl::OkStatus();
  }
  if (!IsVerifyDType(spec.verify_dtype()))
    return FieldError("verify_dtype", OneOf(kVerifyDTypes), Quoted(spec.verify_dtype()));
  QF_RETURN_IF_ERROR(CheckRange("verify_seqlen", spec.verify_seqlen(), 2, 1 << 20));
  return CheckRange("verify_max_chunks", spec.verify_max_chunks(), 1, 1 << 20);
}

}  // namespace

void ApplySpecDefaults(proto::JobSpec* spec) {
  if (spec->bits() == 0) spec->set_bits(4);
  if (spec->group_size() == 0) spec->set_group_size(128);
  if (spec->damp_percent() == 0) spec->set_damp_percent(0.01);
  if (!spec->has_true_sequential()) spec->set_true_sequential(true);
  if (spec->block_size() == 0) spec->set_block_size(128);
  if (spec->awq_grid() == 0) spec->set_awq_grid(20);
  if (spec->awq_search_tokens() == 0) spec->set_awq_search_tokens(65536);
  if (spec->samples() == 0) spec->set_samples(128);
  if (spec->seqlen() == 0) spec->set_seqlen(512);
  if (spec->format().empty()) spec->set_format(spec->method() == "awq" ? "awq" : "gptq");
  if (spec->mode() == proto::MODE_UNSPECIFIED) spec->set_mode(proto::MODE_SEQUENTIAL);
  if (spec->max_attempts() == 0) spec->set_max_attempts(3);
  if (spec->verify()) {
    if (spec->verify_seqlen() == 0) spec->set_verify_seqlen(512);
    if (spec->verify_max_chunks() == 0) spec->set_verify_max_chunks(256);
    if (spec->verify_dtype().empty()) spec->set_verify_dtype("fp16");
  }
}

absl::Status ValidateJobSpec(const proto::JobSpec& spec) {
  if (spec.model_path().empty()) return FieldError("model_path", "a model directory", "\"\"");
  QF_RETURN_IF_ERROR(ValidateVerifyFields(spec));
  const std::string& m = spec.method();
  if (m != "gptq" && m != "awq" && m != "rtn") return FieldError("method", "one of gptq, awq, rtn", Quoted(m));
  int b = spec.bits();
  if (b != 2 && b != 3 && b != 4 && b != 8) return FieldError("bits", "2, 3, 4 or 8", absl::StrCat(b));
  int g = spec.group_size();
  if (g != -1 && (g < 8 || g % 8 != 0 || g > (1 << 20)))
    return FieldError("group_size", "-1 or a positive multiple of 8", absl::StrCat(g));
  if (!(spec.damp_percent() > 0 && spec.damp_percent() < 1))
    return FieldError("damp_percent", "a value in (0, 1)", absl::StrCat(spec.damp_percent()));
  if (spec.act_order() && m != "gptq") return FieldError("act_order", absl::StrCat("false for method ", m), "true");
  if (spec.static_groups() && m != "gptq")
    return FieldError("static_groups", absl::StrCat("false for method ", m), "true");
  if (spec.awq_paper_scales() && m != "awq")
    return FieldError("awq_paper_scales", absl::StrCat("false for method ", m), "true");
  QF_RETURN_IF_ERROR(CheckRange("block_size", spec.block_size(), 1, 4096));
  QF_RETURN_IF_ERROR(CheckRange("awq_grid", spec.awq_grid(), 1, 1000));
  if (spec.awq_search_tokens() < 1 || spec.awq_search_tokens() > (int64_t{1} << 28))
    return FieldError("awq_search_tokens", "a value in [1, 2^28]", absl::StrCat(spec.awq_search_tokens()));
  if (spec.calib_path().empty() && m != "rtn" && !storage::IsSyntheticModel(spec.model_path()))
    return FieldError("calib_path", absl::StrCat("a .txt or .jsonl file for method ", m), "\"\"");
  QF_RETURN_IF_ERROR(CheckRange("samples", spec.samples(), 1, 65536));
  QF_RETURN_IF_ERROR(CheckRange("seqlen", spec.seqlen(), 2, 1 << 20));
  if (int64_t{spec.samples()} * spec.seqlen() > (int64_t{1} << 28))
    return FieldError("samples", "samples * seqlen <= 2^28 tokens",
                      absl::StrCat(spec.samples(), " * ", spec.seqlen()));
  const std::string& f = spec.format();
  if (f != "gptq" && f != "awq") return FieldError("format", "gptq or awq", Quoted(f));
  if (f == "awq" && b != 4) return FieldError("bits", "4 for format awq", absl::StrCat(b));
  if (f == "awq" && g == -1) return FieldError("group_size", "a positive group size for format awq", "-1");
  if (f == "awq" && spec.act_order()) return FieldError("act_order", "false for format awq", "true");
  if (f == "awq" && spec.sym()) return FieldError("sym", "false for format awq (it stores zero points)", "true");
  if (spec.out_dir().empty()) return FieldError("out_dir", "an artifact directory", "\"\"");
  if (spec.mode() != proto::MODE_SEQUENTIAL && spec.mode() != proto::MODE_PARALLEL)
    return FieldError("mode", "sequential or parallel", absl::StrCat(static_cast<int>(spec.mode())));
  QF_RETURN_IF_ERROR(CheckRange("stage_layers", spec.stage_layers(), 0, 1 << 20));
  QF_RETURN_IF_ERROR(CheckRange("priority", spec.priority(), -100, 100));
  QF_RETURN_IF_ERROR(CheckRange("max_attempts", spec.max_attempts(), 1, 100));
  // The writer's own rules, so nothing is accepted that assembly would refuse.
  absl::Status s = storage::ValidateQuantSpec(ToQuantSpec(spec));
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("JobSpec: ", s.message()));
  return absl::OkStatus();
}

absl::StatusOr<storage::ModelConfig> CheckJobInputs(const proto::JobSpec& spec) {
  const std::string& dir = spec.model_path();
  const bool synthetic = storage::IsSyntheticModel(dir);
  if (synthetic) {
    // Generated on the workers' devices; calibration ids come from the job's seed.
    absl::StatusOr<storage::SyntheticSpec> s = storage::ParseSyntheticModel(dir);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("JobSpec.model_path: ", s.status().message()));
    if (!spec.calib_path().empty())
      return FieldError("calib_path", "empty for a synthetic model (it has no tokenizer)", Quoted(spec.calib_path()));
    if (!spec.verify_text().empty())
      return FieldError("verify_text", "empty for a synthetic model (it has no tokenizer)", Quoted(spec.verify_text()));
  } else if (!IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat("JobSpec.model_path: ", dir, ": no such model directory"));
  }
  QF_ASSIGN_OR_RETURN(storage::ModelConfig cfg, storage::LoadModelConfigOrSynthetic(dir));
  // Where assembly will write: refused now, not after the whole quantization.
  if (absl::Status out = CheckReplaceable(spec.out_dir()); !out.ok())
    return absl::FailedPreconditionError(absl::StrCat("JobSpec.out_dir: ", out.message()));
  if (!synthetic && !PathExists(dir + "/model.safetensors") && !PathExists(dir + "/model.safetensors.index.json"))
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors or model.safetensors.index.json (expected an HF safetensors checkpoint)"));
  if (!synthetic && spec.method() != "rtn" && !PathExists(spec.calib_path()))
    return absl::NotFoundError(absl::StrCat("JobSpec.calib_path: ", spec.calib_path(), ": no such file"));
  if (spec.verify() && !spec.verify_text().empty() && !PathExists(spec.verify_text()))
    return absl::NotFoundError(absl::StrCat("JobSpec.verify_text: ", spec.verify_text(), ": no such file"));
  const std::string config = synthetic ? dir : dir + "/config.json";
  if (spec.group_size() > 0) {
    const struct { const char* linear; int64_t in; } inputs[] = {
        {"self_attn.q_proj", cfg.hidden_size},
        {"self_attn.o_proj", cfg.num_attention_heads * cfg.head_dim},
        {"mlp.down_proj", cfg.intermediate_size}};
    for (const auto& in : inputs) {
      if (in.in % spec.group_size() != 0)
        return absl::InvalidArgumentError(absl::StrCat(
            "JobSpec.group_size: ", spec.group_size(), " does not divide the input features of ", in.linear,
            " (", in.in, ") of ", config));
    }
  }
  if (spec.method() != "rtn" && spec.seqlen() > cfg.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("JobSpec.seqlen: ", spec.seqlen(),
                                                   " exceeds max_position_embeddings ",
                                                   cfg.max_position_embeddings, " of ", config));
  if (spec.verify() && !spec.verify_text().empty() && spec.verify_seqlen() > cfg.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("JobSpec.verify_seqlen: ", spec.verify_seqlen(),
                                                   " exceeds max_position_embeddings ",
                                                   cfg.max_position_embeddings, " of ", config));
  if (spec.stage_layers() > cfg.num_hidden_layers)
    return absl::InvalidArgumentError(absl::StrCat("JobSpec.stage_layers: ", spec.stage_layers(),
                                                   " exceeds num_hidden_layers ", cfg.num_hidden_layers,
                                                   " of ", config));
  return cfg;
}

int ResolveStageLayers(const proto::JobSpec& spec, const storage::ModelConfig& cfg, int default_stage_layers) {
  if (spec.stage_layers() > 0) return spec.stage_layers();
  int64_t k = std::min<int64_t>(std::max(default_stage_layers, 1), cfg.num_hidden_layers);
  return static_cast<int>(std::max<int64_t>(k, 1));
}

std::vector<StagePlan> PlanStages(int num_layers, int stage_layers) {
  std::vector<StagePlan> stages;
  if (stage_layers < 1) stage_layers = 1;
  for (int first = 0; first < num_layers; first += stage_layers)
    stages.push_back(StagePlan{first, std::min(first + stage_layers, num_layers)});
  return stages;
}

bool DescAct(const proto::JobSpec& spec) {
  return spec.act_order() && spec.group_size() != -1 && !spec.static_groups();
}

storage::QuantSpec ToQuantSpec(const proto::JobSpec& spec) {
  storage::QuantSpec q;
  q.method = spec.method();
  q.bits = spec.bits();
  q.group_size = spec.group_size();
  q.sym = spec.sym();
  q.desc_act = DescAct(spec);
  q.damp_percent = spec.damp_percent();
  q.static_groups = spec.static_groups();
  q.true_sequential = spec.true_sequential();
  q.format = spec.format();
  return q;
}

}  // namespace qf::coordinator
