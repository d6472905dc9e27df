// qctl quantize: the main job on one machine, in embedded mode: the same
// coordinator and worker code as a cluster, in this process, with the state in
// a local directory. Interrupted (Ctrl-C, kill -9), the same command resumes
// from the last committed layer and writes the same bytes.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "common/verify_vocab.h"
#include "coordinator/embedded.h"
#include "nlohmann/json.hpp"
#include "qctl/commands.h"
#include "qctl/progress.h"
#include "qctl/quantize_options.h"
#include "qctl/verify_report.h"

namespace qf::qctl {
namespace {

// Next to the artifact, hidden: `out/.tiny-gptq.qforge-state`.
std::string DefaultStateDir(const std::string& out) {
  std::filesystem::path p = std::filesystem::absolute(out).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return (p.parent_path() / ("." + p.filename().string() + ".qforge-state")).string();
}

// The optional verify stage (JobSpec.verify*) runs here, after the job, on the
// same device and engine; the job is submitted without it, so that the same
// state resumes with or without --verify.
absl::Status RunQuantize(const QuantizeOptions& o, const std::string& state_flag, bool keep_state) {
  QF_RETURN_IF_ERROR(ValidateQuantizeOptions(o));
  if (o.verify && !o.verify_text.empty() && !PathExists(o.verify_text)) {
    return absl::NotFoundError(absl::StrCat("--verify-text ", o.verify_text, ": no such file"));
  }
  if (o.verify && !IsVerifyDType(o.verify_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--verify-dtype: '", o.verify_dtype, "', expected ", OneOf(kVerifyDTypes)));
  }
  const proto::JobSpec spec = ToJobSpec(o);
  proto::JobSpec job = spec;   // what the coordinator runs: quantize + assemble
  job.clear_verify();
  job.clear_verify_text();
  job.clear_verify_seqlen();
  job.clear_verify_max_chunks();
  job.clear_verify_dtype();
  // Fail on an unwritable output before any work, not after it.
  QF_RETURN_IF_ERROR(CheckOutputWritable(o.out));
  const std::string state = state_flag.empty() ? DefaultStateDir(o.out) : state_flag;
  // The artifact's rename replaces --out whole: a state inside it would go too.
  const std::filesystem::path rel = std::filesystem::absolute(state).lexically_normal().lexically_relative(
      std::filesystem::absolute(o.out).lexically_normal());
  if (!rel.empty() && *rel.begin() != "..") {
    return absl::InvalidArgumentError(absl::StrCat("--state ", state, ": inside --out ", o.out,
                                                   ", which the artifact replaces; expected a directory outside it"));
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(state).parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("--state ", state, ": cannot create its parent: ", ec.message()));
  coordinator::EmbeddedOptions eo;
  eo.state_dir = state;
  eo.device = o.device;
  eo.cpu_threads = o.cpu_threads;
  std::unique_ptr<worker::Engine> engine;   // loaded here: the verify stage reuses it
  if (spec.verify()) {
    QF_ASSIGN_OR_RETURN(engine, worker::Engine::Load(o.cpu_threads));
    eo.engine = engine.get();
  }
  eo.host_activations = o.host_activations;
  std::unique_ptr<ProgressReporter> bar;
  eo.on_update = [&](const proto::WatchUpdate& u) {
    const proto::JobStatus& s = u.status();
    if (!bar && s.layers_total() > 0) bar = std::make_unique<ProgressReporter>("quantize", s.layers_total());
    if (!bar) return;
    std::string what = proto::EventKind_Name(u.event().kind());
    if (u.event().kind() == proto::EVENT_LAYER_COMMITTED) what = absl::StrCat("layer ", u.event().layer() + 1, " committed");
    if (u.event().kind() == proto::EVENT_ASSEMBLING) what = "writing artifact";
    bar->Update(s.layers_committed(), what);
  };
  QF_ASSIGN_OR_RETURN(proto::JobStatus done, coordinator::RunEmbedded(job, eo));
  double secs = bar ? bar->ElapsedSeconds() : 0;
  if (bar) bar->Finish(absl::StrCat("wrote ", o.out));
  absl::Status verified = absl::OkStatus();
  if (spec.verify()) {
    VerifyCliOptions v{worker::VerifyStageOptionsOf(spec, o.device)};
    v.artifact = o.out;   // as given (the report and messages name it so)
    v.print = !o.json;    // --json: one object on stdout; the report is in verify.json
    verified = RunVerifyStage(*engine, v);
  }
  // The committed layers are only needed to resume; the artifact holds them
  // now. Kept while the verify stage has not passed: the same command then
  // finds the finished job and only verifies again (a verify killed or failed
  // on a 70B artifact must not cost the quantization).
  if (!keep_state && verified.ok()) RemoveAll(state).IgnoreError();
  if (o.json) {
    nlohmann::json j = {{"artifact", o.out}, {"job", done.job_id()}, {"method", o.method}, {"bits", o.bits},
                        {"group_size", o.group_size}, {"layers", done.layers_total()}, {"seconds", secs}};
    if (spec.verify()) j["verify"] = absl::StrCat(o.out, "/", kVerifyReportName);
    std::printf("%s\n", j.dump().c_str());
  }
  return verified;
}

}  // namespace

CommandFn SetupQuantize(CLI::App* sub) {
  auto o = std::make_shared<QuantizeOptions>();
  auto state = std::make_shared<std::string>();
  auto keep = std::make_shared<bool>(false);
  AddQuantizeFlags(sub, o.get());
  sub->add_option("--state", *state, "State directory (default: .<out>.qforge-state next to --out); reuse to resume");
  sub->add_flag("--keep-state", *keep, "Keep the state directory after success");
  sub->add_flag("--json", o->json, "Print a JSON summary on stdout");
  AddVerifyFlags(sub, o.get(), "same device");
  AddCpuThreadsFlag(sub, &o->cpu_threads);  // not on submit: a cluster's workers take qworker's
  return [o, state, keep] { return RunQuantize(*o, *state, *keep); };
}

}  // namespace qf::qctl
