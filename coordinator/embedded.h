// File: coordinator/embedded.h
//
// Embedded mode (`qctl quantize`): the coordinator and one worker in this
// process, talking over an in-process gRPC channel, with the state in a local
// directory. The job's Submit idempotency key is derived from the spec, so
// running the same spec again with the same state dir finds the same job:
//   - interrupted (Ctrl-C, kill -9) or failed/cancelled: it resumes from the
//     last committed layer, and the artifact is byte-identical;
//   - succeeded, artifact still there: returns at once;
//   - succeeded, artifact gone: runs again as a new job.
//
//   EmbeddedOptions o;
//   o.state_dir = "out/.qforge-state";
//   o.on_update = [](const proto::WatchUpdate& u) { ... progress bar ... };
//   QF_ASSIGN_OR_RETURN(proto::JobStatus done, RunEmbedded(spec, o));
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "worker/engine/engine_host.h"
#include "worker/runtime/worker.h"

namespace qf::coordinator {

struct EmbeddedOptions {
  std::string state_dir;                    // RocksDB state; reuse it to resume
  std::string device = "cpu";               // the worker's device
  bool host_activations = false;            // WorkerOptions::host_activations
  std::function<void(const proto::WatchUpdate&)> on_update;  // progress; may be empty
  worker::Engine* engine = nullptr;         // empty: worker::Engine::Load(cpu_threads)
  int cpu_threads = 0;                      // for that Load; 0: common/cpu_budget.h
  worker::CalibrationFn calibration;        // empty: the model's tokenizer
  int lease_ttl_ms = 60000;                 // one process: only a hung engine expires its lease
};

// Runs `spec` to the end. Returns the final status of a job that succeeded;
// an error carrying the job's reason (Internal, naming the job) if it failed;
// INVALID_ARGUMENT for a bad spec; the state store's errors (Unavailable if
// another process holds the state dir).
absl::StatusOr<proto::JobStatus> RunEmbedded(const proto::JobSpec& spec, const EmbeddedOptions& options);

// The idempotency key RunEmbedded submits `spec` under.
std::string EmbeddedRequestId(const proto::JobSpec& spec);

}  // namespace qf::coordinator
