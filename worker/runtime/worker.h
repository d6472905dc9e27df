// File: worker/runtime/worker.h
//
// The worker loop behind `qworker`: register, lease a stage, rebuild its input
// activations, quantize its layers one by one (streaming each to the
// coordinator as soon as it is done), complete, repeat. A background thread
// renews the lease while the engine computes; a lost lease (expired,
// cancelled) makes the worker drop the task at the next layer boundary; a
// worker asked to stop (SIGTERM: a pod drained) gives it back there with
// Release, so another worker takes it over at once.
//
// Input of stage [first, end) starting at `start` (the first uncommitted layer):
//   sequential: the session it kept from the previous stage (affinity), if its
//               activations sit at `start`; otherwise a fresh session replayed
//               through committed layers 0..start-1 (Session::ApplyLayer);
//   parallel:   a fresh session at the FP16 activations of layer `first`,
//               received from the worker of the previous stage (handoff.h:
//               NCCL, GPU to GPU) or else moved through the FP16 layers
//               0..first-1 (ForwardOriginalLayer, the logged fallback); then
//               committed layers first..start-1. A stage that is not the last
//               offers the FP16 activations at its end to the next stage's
//               worker before it quantizes (so that worker starts early).
// ApplyLayer reproduces QuantizeLayer's activations bit for bit, so a stage
// that moves between workers gives the same bytes as an uninterrupted run.
//
// The verify stage (TaskAssignment.verify, JobSpec.verify): no layers; the
// engine checks the artifact at spec.out_dir on this worker's device
// (Engine::Verify, verify_stage.h) while the lease is renewed, and Complete
// carries the report. Errors that another try cannot fix (DataLoss: the
// artifact disagrees with its manifest; InvalidArgument) fail it for good;
// others (NotFound: this worker does not see out_dir) let another worker try.
//
//   WorkerOptions o;  o.name = "gpu0";  o.device = "cuda:0";
//   QF_ASSIGN_OR_RETURN(auto engine, Engine::Load());
//   Worker w(channel, engine.get(), o);
//   std::atomic<bool> stop{false};
//   QF_RETURN_IF_ERROR(w.Run(&stop));
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "proto/work.pb.h"
#include "worker/engine/engine_host.h"
#include "worker/runtime/handoff.h"
#include "worker/runtime/work_client.h"

namespace qf::worker {

// Calibration ids (samples * seqlen, row-major) for a job spec.
using CalibrationFn = std::function<absl::StatusOr<std::vector<int32_t>>(const proto::JobSpec&)>;
// The default: the model's tokenizer + BuildCalibrationTokens (worker/calibration.h).
absl::StatusOr<std::vector<int32_t>> TokenizeCalibration(const proto::JobSpec& spec);

// The engine's parameters for a job spec, mirroring `qctl quantize`.
QuantParams ToQuantParams(const proto::JobSpec& spec);

// "cuda:0,1" / "cuda:0,cuda:1" / "cpu,cpu" -> one device string per worker
// loop. InvalidArgument for an empty entry.
absl::StatusOr<std::vector<std::string>> SplitDevices(const std::string& devices);

struct WorkerOptions {
  std::string name;                 // registered name, [A-Za-z0-9._-]{1,64}
  std::string device = "cpu";       // "cpu" | "cuda" | "cuda:N"
  bool host_activations = false;    // SessionSpec::host_activations (CUDA, small GPUs)
  WorkClientOptions client;
  CalibrationFn calibration;        // empty: TokenizeCalibration
  // Test hook: after computing this layer, stop renewing and sleep this long
  // before sending it (the lease expires; the coordinator must refuse it).
  int stall_after_layer = -1;
  int stall_ms = 0;
  // Test hook: sleep this long before computing each layer (slows a run down
  // enough to kill a process mid-stage).
  int layer_delay_ms = 0;
  // Test hook: the verify stage sleeps this long (renewing) before it starts.
  int verify_delay_ms = 0;
  // Parallel mode: hand activations to / take them from the workers of the
  // neighbouring stages (handoff.h) instead of replaying. false: always replay.
  bool handoff = true;
  // The hand-off's transport; empty: NCCL through the engine (a CUDA device
  // in a CUDA build; anything else replays, saying why). Tests: a loopback.
  std::shared_ptr<HandoffTransport> handoff_transport;
};

struct WorkerStats {
  std::atomic<int> tasks_completed{0};
  std::atomic<int> tasks_abandoned{0};   // lease lost
  std::atomic<int> tasks_released{0};    // given back unfinished: the worker is stopping
  std::atomic<int> tasks_failed{0};      // reported with Fail
  std::atomic<int> layers_committed{0};
  std::atomic<int> layers_replayed{0};   // ApplyLayer / ForwardOriginalLayer calls
  std::atomic<int> sessions_reused{0};   // stages started from the kept session
  std::atomic<int> handoffs_received{0}; // parallel stages whose input arrived from a peer
  std::atomic<int> handoffs_offered{0};  // boundary activations computed and offered
  std::atomic<int> verifies_completed{0};  // verify stages reported (any verdict)
};

class Worker {
 public:
  // `engine` must outlive the worker.
  Worker(std::shared_ptr<grpc::Channel> channel, Engine* engine, WorkerOptions options);
  ~Worker();

  // Registers, then leases and runs tasks until *stop is set (checked between
  // tasks, between layers and inside the verify stage: the task in hand is
  // given back) or registration fails for good.
  absl::Status Run(const std::atomic<bool>* stop);
  // Registers if needed and runs at most one task. Returns whether it got one.
  absl::StatusOr<bool> RunOnce();

  const WorkerStats& stats() const { return stats_; }
  const std::string& incarnation() const { return incarnation_; }

 private:
  struct Held;
  absl::Status EnsureRegistered();
  absl::Status RunTask(const proto::TaskAssignment& task);
  absl::Status RunVerifyTask(const proto::TaskAssignment& task);
  // How a task ends without completing (all return OK: the loop goes on).
  // Abandon: the lease is gone; nothing is reported.
  // GiveBack: the worker is stopping; the stage goes back with Release, so
  //   another worker starts it at once instead of after the lease's TTL.
  // FailTask: reported with Fail (`permanent` as WorkClient::Fail).
  absl::Status Abandon(const std::string& what, std::string_view why);
  absl::Status GiveBack(const proto::TaskAssignment& task, const std::string& what);
  bool stopping() const { return stop_ != nullptr && stop_->load(); }
  absl::Status FailTask(const proto::TaskAssignment& task, const std::string& what, const absl::Status& error,
                        std::optional<bool> permanent = std::nullopt);
  absl::StatusOr<std::unique_ptr<Session>> PrepareSession(const proto::TaskAssignment& task,
                                                          const std::atomic<bool>& lost);
  // Hand-off (handoff.h). Whether `session` received its input at
  // task.first_layer(); false (replay) with the reason logged otherwise.
  bool ReceiveInput(const proto::TaskAssignment& task, Session* session, const std::atomic<bool>& lost);
  // Whether the stage announced an offer (the coordinator found a receiver possible).
  bool AnnounceOffer(const proto::TaskAssignment& task);
  void MakeOffer(const proto::TaskAssignment& task, Session* session);

  WorkClient client_;
  Engine* engine_;
  WorkerOptions options_;
  std::string incarnation_;
  std::string worker_id_;
  int renew_interval_ms_ = 1000;
  std::unique_ptr<Held> held_;      // the session kept after a sequential stage
  std::shared_ptr<HandoffTransport> transport_;   // null: no hand-off (handoff_off_ says why)
  std::string handoff_off_;
  std::string device_key_;
  std::unique_ptr<OfferServer> offers_;           // after client_: withdraws through it
  WorkerStats stats_;
  const std::atomic<bool>* stop_ = nullptr;
};

}  // namespace qf::worker
