// qctl quantize: the main job on one machine, in embedded mode: the same
// coordinator and worker code as a cluster, in this process, with the state in
// a local directory. Interrupted (Ctrl-C, kill -9), the same command resumes
// from the last committed layer and writes the same bytes.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status_macros.h"
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

// The optional verify stage (JobSpec.verify*): run here, after the job, on the
// same device and engine; the job is submitted without it (proto/job.proto).
struct VerifyFlags {
  bool verify = false;
  std::string text;
  int seqlen = 512;
  int max_chunks = 256;
  std::string dtype = "fp16";
};

absl::Status RunQuantize(const QuantizeOptions& o, const std::string& state_flag, bool keep_state,
                         const VerifyFlags& vf) {
  QF_RETURN_IF_ERROR(ValidateQuantizeOptions(o));
  if (vf.verify && !vf.text.empty() && !PathExists(vf.text)) {
    return absl::NotFoundError(absl::StrCat("--verify-text ", vf.text, ": no such file"));
  }
  if (vf.verify && !worker::IsVerifyDType(vf.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("--verify-dtype: '", vf.dtype, "', expected fp16 or bf16"));
  }
  proto::JobSpec spec = ToJobSpec(o);
  spec.set_verify(vf.verify);
  if (vf.verify) {
    if (!vf.text.empty()) spec.set_verify_text(std::filesystem::absolute(vf.text).lexically_normal().string());
    spec.set_verify_seqlen(vf.seqlen);
    spec.set_verify_max_chunks(vf.max_chunks);
    spec.set_verify_dtype(vf.dtype);
  }
  proto::JobSpec job = spec;   // what the coordinator runs: quantize + assemble
  job.clear_verify();
  job.clear_verify_text();
  job.clear_verify_seqlen();
  job.clear_verify_max_chunks();
  job.clear_verify_dtype();
  // Fail on an unwritable output before any work, not after it.
  QF_RETURN_IF_ERROR(CheckOutputWritable(o.out));
  const std::string state = state_flag.empty() ? DefaultStateDir(o.out) : state_flag;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(state).parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("--state ", state, ": cannot create its parent: ", ec.message()));
  coordinator::EmbeddedOptions eo;
  eo.state_dir = state;
  eo.device = o.device;
  std::unique_ptr<worker::Engine> engine;   // loaded here: the verify stage reuses it
  if (spec.verify()) {
    QF_ASSIGN_OR_RETURN(engine, worker::Engine::Load());
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
  // The committed layers are only needed to resume; the artifact holds them now.
  if (!keep_state) RemoveAll(state).IgnoreError();
  absl::Status verified = absl::OkStatus();
  if (spec.verify()) {
    VerifyCliOptions v;
    v.artifact = o.out;
    v.device = o.device;
    v.text = spec.verify_text();
    v.seqlen = spec.verify_seqlen();
    v.max_chunks = spec.verify_max_chunks();
    v.dtype = spec.verify_dtype().empty() ? "fp16" : spec.verify_dtype();
    v.print = !o.json;   // --json: one object on stdout; the report is in verify.json
    verified = RunVerifyStage(*engine, v);
  }
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
  auto vf = std::make_shared<VerifyFlags>();
  sub->add_flag("--verify", vf->verify, "Then run `qctl verify` on the artifact (same device); writes verify.json");
  sub->add_option("--verify-text", vf->text, "--verify: held-out text for the perplexity check (none: skipped)");
  sub->add_option("--verify-seqlen", vf->seqlen, "--verify: tokens per perplexity chunk")->capture_default_str();
  sub->add_option("--verify-max-chunks", vf->max_chunks, "--verify: perplexity over the first N chunks")
      ->capture_default_str();
  sub->add_option("--verify-dtype", vf->dtype, "--verify: the fused path's element type, fp16 | bf16")
      ->capture_default_str();
  return [o, state, keep, vf] { return RunQuantize(*o, *state, *keep, *vf); };
}

}  // namespace qf::qctl
