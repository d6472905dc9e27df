#include "coordinator/embedded.h"

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "coordinator/client.h"
#include "coordinator/planner.h"
#include "coordinator/server.h"
#include "storage/artifact.h"

namespace qf::coordinator {

std::string EmbeddedRequestId(const proto::JobSpec& spec) {
  proto::JobSpec s = spec;
  ApplySpecDefaults(&s);
  std::string bytes;
  s.SerializeToString(&bytes);  // one binary, no map fields: deterministic
  return absl::StrCat("embedded-", Sha256Hex(bytes).substr(0, 32));
}

absl::StatusOr<proto::JobStatus> RunEmbedded(const proto::JobSpec& spec, const EmbeddedOptions& options) {
  std::unique_ptr<worker::Engine> loaded;
  worker::Engine* engine = options.engine;
  if (engine == nullptr) {
    QF_ASSIGN_OR_RETURN(loaded, worker::Engine::Load(options.cpu_threads));
    engine = loaded.get();
  }
  CoordinatorOptions co;
  co.state_dir = options.state_dir;
  co.scheduler.lease_ttl_ms = options.lease_ttl_ms;
  co.scheduler.renew_interval_ms = std::max(50, options.lease_ttl_ms / 6);
  co.scheduler.default_stage_layers = 1 << 20;  // one stage: the worker keeps its activations throughout
  QF_ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, Coordinator::Start(co));
  JobClient client(coordinator->InProcessChannel());

  std::string request_id = EmbeddedRequestId(spec);
  QF_ASSIGN_OR_RETURN(proto::SubmitReply submitted, client.Submit(spec, request_id));
  proto::JobState state = submitted.status().state();
  if (state == proto::JOB_SUCCEEDED &&
      !PathExists(absl::StrCat(submitted.status().spec().out_dir(), "/", storage::kManifestName))) {
    // Done before, but the artifact was removed since: quantize again.
    QF_ASSIGN_OR_RETURN(submitted, client.Submit(spec, absl::StrCat(request_id, "/after-", submitted.job_id())));
    state = submitted.status().state();
  }
  if (state == proto::JOB_SUCCEEDED) return submitted.status();
  const std::string job_id = submitted.job_id();
  if (state == proto::JOB_FAILED || state == proto::JOB_CANCELLED) {
    auto resumed = client.Resume(job_id);
    // Inputs changed since its layers were committed: say how to start over.
    if (!resumed.ok() && absl::StrContains(resumed.status().message(), kInputsChanged)) {
      return absl::FailedPreconditionError(absl::StrCat(
          resumed.status().message(), " (its state is in ", options.state_dir,
          "; remove that directory to quantize the inputs as they are now)"));
    }
    // A job that failed at submit (model unreadable) cannot resume: report why.
    if (!resumed.ok()) return absl::InternalError(absl::StrCat("job ", job_id, ": ", submitted.status().reason()));
  }

  worker::WorkerOptions wo;
  wo.name = "embedded";
  wo.device = options.device;
  wo.host_activations = options.host_activations;
  wo.calibration = options.calibration;
  worker::Worker w(coordinator->InProcessChannel(), engine, wo);
  std::atomic<bool> stop{false};
  absl::Status worker_status;
  std::thread worker_thread([&] { worker_status = w.Run(&stop); });

  auto noop = [](const proto::WatchUpdate&) {};
  absl::StatusOr<proto::JobStatus> final_status =
      client.Watch(job_id, options.on_update ? options.on_update : noop);
  stop = true;
  worker_thread.join();
  coordinator->Shutdown();
  QF_RETURN_IF_ERROR(final_status.status());
  if (final_status->state() != proto::JOB_SUCCEEDED) {
    // Say what survived: after a full disk at assembly, the whole quantization.
    const int kept = final_status->layers_committed();
    return absl::InternalError(absl::StrCat(
        "job ", job_id, " ", proto::JobState_Name(final_status->state()), ": ", final_status->reason(),
        kept > 0 ? absl::StrCat(" (", kept, " committed layers kept in ", options.state_dir,
                                "; the same command resumes from them)")
                 : ""));
  }
  if (!worker_status.ok()) return worker_status;
  return final_status;
}

}  // namespace qf::coordinator
