// File: coordinator/scheduler.h
//
// The job state machine and lease scheduler: the coordinator's only owner of
// state. Every change (submit, lease, renew, layer commit, complete, fail,
// expiry, cancel, resume, assembly) is applied to memory under one mutex and
// queued as one StateBatch in the same critical section; the call returns
// after that batch is durable (synced WAL), so nothing is acknowledged that a
// crash could lose, and disk order equals memory order. Create() reloads
// everything from the store and expires stale leases.
//
//   job:  QUEUED -> RUNNING -> ASSEMBLING [-> VERIFYING] -> SUCCEEDED
//           \________\___________\____________\-> FAILED / CANCELLED --Resume--> QUEUED|RUNNING|ASSEMBLING
//   task: BLOCKED -> QUEUED -> LEASED -> DONE      (sequential: stage k+1 unblocks on k's DONE)
//                      ^---------/  expiry, Fail (failures < max_attempts), Release
//   The verify stage (JobSpec.verify) is one more task after the layer
//   stages, with no layers: BLOCKED until the artifact is assembled, then
//   leased like the others; its Complete carries the report, written to
//   <out_dir>/verify.json, and a "failed" verdict fails the job. Resume
//   assembles again and verifies again.
//
//   FakeClock clock;
//   QF_ASSIGN_OR_RETURN(auto s, Scheduler::Create(store.get(), &clock, {}));
//   QF_ASSIGN_OR_RETURN(proto::SubmitReply r, s->Submit(req));
//   QF_ASSIGN_OR_RETURN(proto::RegisterReply w, s->Register(reg));
//   QF_ASSIGN_OR_RETURN(proto::LeaseReply l, s->Lease(lease_req));   // l.task().attempt_id()
//
// Status codes: InvalidArgument (bad spec/request, wrong tensor shapes),
// NotFound (unknown job, worker or layer), Aborted (the attempt no longer
// holds a lease: the worker must drop the task), FailedPrecondition (a
// transition the state does not allow), DataLoss (a payload that does not
// parse), and the store's errors.
// NOTE: every public method is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/clock.h"
#include "kernels/quant_types.h"
#include "proto/job.pb.h"
#include "proto/state.pb.h"
#include "proto/work.pb.h"
#include "storage/model_config.h"
#include "storage/state_store.h"

namespace qf::coordinator {

// Ends the reason a job cannot go on because its model or calibration text
// changed since it was submitted (RunEmbedded adds how to start over).
inline constexpr char kInputsChanged[] = "since the job was submitted";

struct SchedulerOptions {
  int lease_ttl_ms = 15000;          // a lease lives this long after Lease/Renew/commit
  int renew_interval_ms = 3000;      // told to workers; < lease_ttl_ms / 2
  int affinity_grace_ms = 5000;      // a sequential job's next stage waits this long for its previous worker
  int default_stage_layers = 1;      // --stage-layers, for specs that leave it 0
  int idle_retry_ms = 250;           // told to workers that got no task
  // Activation hand-off (parallel mode, scheduler_handoff.cc).
  int handoff_wait_ms = 60000;       // a receiver waits this long for its sender's offer, then replays
  int handoff_transfer_ms = 60000;   // a paired transfer (NCCL set-up included) must end within this
  int handoff_offer_ttl_ms = 600000; // an offer nobody took is dropped after this
  int handoff_poll_ms = 50;          // retry_after_ms of a WAIT
};

// What the assembler needs for one job.
struct AssemblyInput {
  proto::JobRecord job;
  std::shared_ptr<const storage::ModelConfig> config;
  // Layer i's committed result, read from the state store when asked: the
  // assembler packs one layer at a time (storage::LayerSource). Valid while
  // the scheduler lives.
  std::function<absl::StatusOr<kernels::LayerResult>(int layer)> layer;
  int stage_layers = 0;                       // layers per stage as planned (the first stage's size)
};

class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(storage::StateStore* store, const Clock* clock,
                                                           SchedulerOptions options);
  ~Scheduler();

  // OK while the state store takes writes; its sticky write failure after.
  absl::Status StoreHealth() const { return store_->health(); }

  // ---- JobService ----
  absl::StatusOr<proto::SubmitReply> Submit(const proto::SubmitRequest& request);
  absl::StatusOr<proto::JobStatus> GetJob(const std::string& job_id) const;
  std::vector<proto::JobStatus> ListJobs(const proto::ListRequest& request) const;
  absl::StatusOr<proto::JobStatus> Cancel(const std::string& job_id, const std::string& reason);
  absl::StatusOr<proto::JobStatus> Resume(const std::string& job_id);
  // Durable events with seq > after_seq, at most `limit` (0 = all).
  absl::StatusOr<std::vector<proto::JobEvent>> Events(const std::string& job_id, uint64_t after_seq,
                                                      int limit) const;

  // ---- WorkService ----
  absl::StatusOr<proto::RegisterReply> Register(const proto::RegisterRequest& request);
  absl::StatusOr<proto::LeaseReply> Lease(const proto::LeaseRequest& request);
  absl::StatusOr<proto::RenewReply> Renew(const proto::RenewRequest& request);
  // `header` is the first chunk of the stream (attempt, job, layer); `bytes`
  // the reassembled, checksum-verified LayerResultProto.
  absl::StatusOr<proto::PutLayerReply> CommitLayer(const proto::LayerChunk& header, const std::string& bytes);
  // Of the verify stage: request.verify_report is verify.json's object
  // (InvalidArgument naming the field otherwise); it is written to
  // <out_dir>/verify.json before the stage is recorded done (Internal naming
  // the path when that fails: the worker reports it with Fail).
  absl::StatusOr<proto::CompleteReply> Complete(const proto::CompleteRequest& request);
  absl::StatusOr<proto::FailReply> Fail(const proto::FailRequest& request);
  // The worker gives the stage back unfinished (it is stopping): queued again
  // at once, no failure counted, committed layers kept; OK when the lease is
  // gone already.
  absl::StatusOr<proto::ReleaseReply> Release(const proto::ReleaseRequest& request);
  // Records a layer stream refused before it reached CommitLayer (a bad chunk)
  // as an EVENT_LAYER_REJECTED of the job, if `header`'s lease is live.
  void RecordRejectedLayer(const proto::LayerChunk& header, const absl::Status& why);
  // The committed LayerResultProto bytes of `layer`.
  absl::StatusOr<std::string> FetchLayer(const std::string& job_id, int layer) const;
  // Parallel mode: the activation hand-off rendezvous (proto/work.proto,
  // HandoffOp). Aborted for a stale attempt; InvalidArgument for a boundary
  // that is not one; FailedPrecondition for a sequential job.
  absl::StatusOr<proto::HandoffReply> Handoff(const proto::HandoffRequest& request);

  // ---- maintenance ----
  // Expires every lease whose deadline has passed; returns how many.
  absl::StatusOr<int> ExpireLeases();
  // Jobs in ASSEMBLING that nobody is assembling yet; marks them taken.
  std::vector<std::string> TakeJobsToAssemble();
  absl::StatusOr<AssemblyInput> LoadAssemblyInput(const std::string& job_id) const;
  // Ends an assembly: SUCCEEDED if `result` is OK, else FAILED with its message.
  absl::Status FinishAssembly(const std::string& job_id, const absl::Status& result);
  // Called (outside locks) whenever a job enters ASSEMBLING.
  void SetAssemblyWakeup(std::function<void()> wakeup);

  // ---- watch support ----
  // `listener` runs after each durable batch that added events to the job.
  // NOTE: listeners run on the committing thread, outside every scheduler
  // lock, and may still be running (or start once more) just after
  // Unsubscribe returns: they must own what they touch (capture a shared_ptr).
  uint64_t Subscribe(const std::string& job_id, std::function<void()> listener);
  void Unsubscribe(uint64_t id);

  const SchedulerOptions& options() const { return options_; }

 private:
  struct Job;
  struct Txn;
  Scheduler(storage::StateStore* store, const Clock* clock, SchedulerOptions options);

  absl::Status Load();
  absl::Status Finish(Txn& txn, std::unique_lock<std::mutex>& lock);
  void Notify(const std::set<std::string>& job_ids, bool assembly);
  void NotifyEveryone();  // the store failed: every watcher should see it

  Job* FindJob(const std::string& job_id) const;
  proto::JobStatus MakeStatus(const Job& job) const;
  void AddEvent(Txn& txn, Job& job, proto::EventKind kind, int stage, int layer, const std::string& worker,
                const std::string& message);
  void MarkTask(Txn& txn, Job& job, int stage);
  void SetJobState(Txn& txn, Job& job, proto::JobState state, const std::string& reason);
  void PlanTasks(Job& job);
  // Every layer stage is DONE (the verify stage aside).
  static bool LayersDone(const Job& job);
  static proto::TaskRecord* VerifyTask(Job& job);  // null without JobSpec.verify
  absl::StatusOr<proto::CompleteReply> CompleteVerify(const proto::CompleteRequest& request,
                                                     const std::string& out_dir);
  void QueueRunnableTasks(Txn& txn, Job& job);
  void ReleaseLease(Txn& txn, Job& job, proto::TaskRecord& task);
  // A released or failed task back to QUEUED for any worker (after ReleaseLease).
  void Requeue(Txn& txn, proto::TaskRecord& task);
  void FailAttempt(Txn& txn, Job& job, proto::TaskRecord& task, const std::string& error, bool permanent,
                   proto::EventKind kind);
  void StopJob(Txn& txn, Job& job, proto::JobState state, const std::string& reason);
  void ExpireLocked(Txn& txn);
  bool WorkerAlive(const std::string& name) const;
  proto::TaskRecord* FindTaskByAttempt(uint64_t attempt_id, Job** job_out) const;
  absl::StatusOr<std::pair<Job*, proto::TaskRecord*>> LiveLease(uint64_t attempt_id, const std::string& worker,
                                                                Txn& txn);

  storage::StateStore* const store_;
  const Clock* const clock_;
  const SchedulerOptions options_;

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::map<std::string, std::string> request_ids_;               // Submit idempotency key -> job id
  std::set<std::tuple<int, uint64_t, std::string>> active_;       // (-priority, submit_seq, job id), QUEUED/RUNNING
  struct LeaseRef {
    std::string job_id;
    int stage;
  };
  std::map<uint64_t, LeaseRef> leases_;                           // attempt id -> task
  struct Worker {
    proto::WorkerRecord record;
    int64_t last_seen_ms = 0;
    std::string device_key;          // from Register/Handoff, memory only ("" = cannot hand off)
    bool device_key_known = false;   // false after a coordinator restart until the worker says
  };
  std::map<std::string, Worker> workers_;
  // Hand-off rendezvous, keyed by (job id, boundary layer). Memory only, on
  // purpose: it is ephemeral, and losing it (a coordinator restart) only
  // means that receivers replay layers 0..b-1, which gives the same bits.
  struct HandoffOffer {
    uint64_t attempt_id = 0;         // the sender's attempt (its lease may have ended since)
    std::string worker, device_key, transport;
    std::string link_id;             // empty until the activations are ready
    std::string declined;            // non-empty: the sender will offer nothing, and why
    int64_t created_ms = 0;
    uint64_t receiver_attempt = 0;   // 0 until paired
    std::string receiver;
    int64_t pair_deadline_ms = 0;
  };
  struct HandoffJoin {
    uint64_t attempt_id = 0;
    int64_t since_ms = 0;            // first JOIN of this attempt: the rendezvous deadline counts from here
  };
  std::map<std::pair<std::string, int>, HandoffOffer> offers_;
  std::map<std::pair<std::string, int>, HandoffJoin> joins_;
  uint64_t next_job_ = 1;
  uint64_t next_attempt_ = 1;

  std::mutex sub_mu_;
  uint64_t next_sub_ = 1;
  std::map<uint64_t, std::pair<std::string, std::function<void()>>> subs_;
  std::function<void()> assembly_wakeup_;
};

bool IsTerminal(proto::JobState state);
// QUEUED, RUNNING, VERIFYING: a job with tasks to lease (cancellable).
bool IsLeasable(proto::JobState state);

}  // namespace qf::coordinator
