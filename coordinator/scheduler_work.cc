// The worker side of the scheduler: registration, leases, renewals, layer
// commits, completion, failures and lease expiry.
#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/quote.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/verify_vocab.h"
#include "coordinator/layer_codec.h"
#include "coordinator/scheduler_internal.h"
#include "nlohmann/json.hpp"
#include "storage/artifact.h"

namespace qf::coordinator {

using storage::StateFamily;

namespace {

bool ValidWorkerName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool IsCudaDevice(const std::string& device) { return device.rfind("cuda", 0) == 0; }

std::string StageName(const proto::TaskRecord& t) {
  if (t.verify()) return absl::StrCat("stage ", t.stage(), " (verify)");
  return absl::StrCat("stage ", t.stage(), " (layers ", t.first_layer(), "-", t.end_layer() - 1, ")");
}

constexpr size_t kMaxVerifyReportBytes = size_t{8} << 20;

// A verify stage's report: verify.json's object with a known verdict (and,
// when failed, the failure). What the job records of it.
struct VerifyOutcome {
  std::string verdict, failure;
};
absl::StatusOr<VerifyOutcome> ParseVerifyReport(const std::string& report) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("CompleteRequest.verify_report: expected ", what));
  };
  if (report.empty()) return bad("verify.json's object for the verify stage, got nothing");
  if (report.size() > kMaxVerifyReportBytes) return bad(absl::StrCat("at most 8 MiB, got ", report.size(), " bytes"));
  const nlohmann::json j = nlohmann::json::parse(report, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad("a JSON object");
  const auto v = j.find("verdict");
  if (v == j.end() || !v->is_string() || !IsVerifyVerdict(v->get<std::string>()))
    return bad(absl::StrCat("a \"verdict\" of ", OneOf(kVerifyVerdicts)));
  VerifyOutcome out{v->get<std::string>(), ""};
  if (const auto f = j.find("failure"); f != j.end() && f->is_string()) out.failure = f->get<std::string>();
  if (out.verdict == kVerdictFailed && out.failure.empty()) return bad("a \"failure\" with the \"failed\" verdict");
  return out;
}

absl::Status LeaseGone(uint64_t attempt_id) {
  return absl::AbortedError(absl::StrCat("attempt ", attempt_id,
                                         " holds no lease (expired, cancelled or finished); nothing was changed"));
}

}  // namespace

bool Scheduler::WorkerAlive(const std::string& name) const {
  auto it = workers_.find(name);
  return it != workers_.end() && it->second.last_seen_ms + options_.lease_ttl_ms > clock_->NowMs();
}

void Scheduler::ReleaseLease(Txn& txn, Job& job, proto::TaskRecord& task) {
  leases_.erase(task.attempt_id());
  txn.batch.Delete(StateFamily::kLeases, storage::LeaseKey(task.attempt_id()));
  task.set_worker("");
  task.set_deadline_ms(0);
  MarkTask(txn, job, task.stage());
}

void Scheduler::FailAttempt(Txn& txn, Job& job, proto::TaskRecord& task, const std::string& error,
                            bool permanent, proto::EventKind kind) {
  const std::string worker = task.worker();
  ReleaseLease(txn, job, task);
  task.set_failures(task.failures() + 1);
  task.set_last_error(error);
  AddEvent(txn, job, kind, task.stage(), -1, worker, error);
  if (permanent || task.failures() >= job.rec.spec().max_attempts()) {
    StopJob(txn, job, proto::JOB_FAILED,
            absl::StrCat(StageName(task), " failed ", task.failures(), permanent ? " time (permanent error)" : " times",
                         "; last error: ", error));
    return;
  }
  Requeue(txn, task);
}

void Scheduler::Requeue(Txn& txn, proto::TaskRecord& task) {
  task.set_state(proto::TASK_QUEUED);
  task.set_queued_ms(txn.now);
  task.set_preferred_worker("");   // any worker: the one it had is gone or failed
}

void Scheduler::ExpireLocked(Txn& txn) {
  std::vector<uint64_t> expired;
  for (const auto& [attempt, ref] : leases_) {
    Job* job = FindJob(ref.job_id);
    if (job->tasks[ref.stage].deadline_ms() <= txn.now) expired.push_back(attempt);
  }
  for (uint64_t attempt : expired) {
    auto it = leases_.find(attempt);
    if (it == leases_.end()) continue;  // released by an earlier failure of the same job
    Job* job = FindJob(it->second.job_id);
    proto::TaskRecord& t = job->tasks[it->second.stage];
    FailAttempt(txn, *job, t,
                absl::StrCat("lease of worker ", t.worker(), " (attempt ", attempt, ") expired: no renewal for ",
                             options_.lease_ttl_ms, " ms"),
                false, proto::EVENT_LEASE_EXPIRED);
  }
}

absl::StatusOr<int> Scheduler::ExpireLeases() {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  size_t before = leases_.size();
  ExpireLocked(txn);
  int n = static_cast<int>(before - leases_.size());
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return n;
}

absl::StatusOr<proto::RegisterReply> Scheduler::Register(const proto::RegisterRequest& request) {
  if (!ValidWorkerName(request.name()))
    return absl::InvalidArgumentError(absl::StrCat("RegisterRequest.name: expected 1-64 of [A-Za-z0-9._-], got \"",
                                                   request.name(), "\""));
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  Worker& w = workers_[request.name()];
  w.device_key = request.device_key();
  w.device_key_known = true;
  if (w.record.incarnation() != request.incarnation()) {
    // Its hand-off offers went with it.
    std::erase_if(offers_, [&](const auto& o) { return o.second.worker == request.name(); });
    // A new process under an old name: the old one is gone, free its leases now.
    std::vector<uint64_t> held;
    for (const auto& [attempt, ref] : leases_) {
      if (FindJob(ref.job_id)->tasks[ref.stage].worker() == request.name()) held.push_back(attempt);
    }
    for (uint64_t attempt : held) {
      auto it = leases_.find(attempt);
      if (it == leases_.end()) continue;
      Job* job = FindJob(it->second.job_id);
      FailAttempt(txn, *job, job->tasks[it->second.stage],
                  absl::StrCat("worker ", request.name(), " restarted; its lease (attempt ", attempt, ") was released"),
                  false, proto::EVENT_LEASE_EXPIRED);
    }
    w.record.set_name(request.name());
    w.record.set_incarnation(request.incarnation());
    w.record.set_device(request.device());
    w.record.set_registered_ms(txn.now);
    txn.batch.Put(StateFamily::kMeta, storage::WorkerKey(request.name()), w.record.SerializeAsString());
  }
  w.last_seen_ms = txn.now;
  proto::RegisterReply reply;
  reply.set_worker_id(request.name());
  reply.set_lease_ttl_ms(options_.lease_ttl_ms);
  reply.set_renew_interval_ms(options_.renew_interval_ms);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

absl::StatusOr<proto::LeaseReply> Scheduler::Lease(const proto::LeaseRequest& request) {
  std::unique_lock<std::mutex> lock(mu_);
  auto wit = workers_.find(request.worker_id());
  if (wit == workers_.end())
    return absl::NotFoundError(absl::StrCat("worker ", EscapeForError(request.worker_id()), ": not registered"));
  if (wit->second.record.incarnation() != request.incarnation())
    return absl::AbortedError(absl::StrCat("worker ", EscapeForError(request.worker_id()), ": stale incarnation; register again"));
  Txn txn;
  txn.now = clock_->NowMs();
  wit->second.last_seen_ms = txn.now;
  ExpireLocked(txn);

  // The verify stage measures the fused kernel on a GPU: a CPU worker takes it
  // only while no live worker has one (then the CPU twin checks, untimed).
  const bool gpu_asks = IsCudaDevice(wit->second.record.device());
  const bool gpu_alive = gpu_asks || std::any_of(workers_.begin(), workers_.end(), [&](const auto& w) {
    return IsCudaDevice(w.second.record.device()) && WorkerAlive(w.first);
  });
  Job* chosen = nullptr;
  proto::TaskRecord* task = nullptr;
  for (const auto& key : active_) {
    Job* job = FindJob(std::get<2>(key));
    for (proto::TaskRecord& t : job->tasks) {
      if (t.state() != proto::TASK_QUEUED) continue;
      if (t.verify() && !gpu_asks && gpu_alive) continue;
      const std::string& pref = t.preferred_worker();
      bool reserved = !pref.empty() && pref != request.worker_id() &&
                      txn.now < t.queued_ms() + options_.affinity_grace_ms && WorkerAlive(pref);
      if (reserved) continue;
      chosen = job;
      task = &t;
      break;
    }
    if (task != nullptr) break;
  }
  proto::LeaseReply reply;
  if (task == nullptr) {
    reply.set_retry_after_ms(options_.idle_retry_ms);
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return reply;
  }
  const uint64_t attempt = next_attempt_++;
  txn.batch.Put(StateFamily::kMeta, std::string(storage::kMetaNextAttempt), absl::StrCat(next_attempt_));
  task->set_state(proto::TASK_LEASED);
  task->set_attempt_id(attempt);
  task->set_worker(request.worker_id());
  task->set_deadline_ms(txn.now + options_.lease_ttl_ms);
  if (task->started_ms() == 0) task->set_started_ms(txn.now);
  MarkTask(txn, *chosen, task->stage());
  leases_[attempt] = LeaseRef{chosen->rec.job_id(), task->stage()};
  proto::LeaseRecord lr;
  lr.set_attempt_id(attempt);
  lr.set_job_id(chosen->rec.job_id());
  lr.set_stage(task->stage());
  lr.set_worker(request.worker_id());
  lr.set_deadline_ms(task->deadline_ms());
  txn.batch.Put(StateFamily::kLeases, storage::LeaseKey(attempt), lr.SerializeAsString());
  if (chosen->rec.state() == proto::JOB_QUEUED) {
    SetJobState(txn, *chosen, proto::JOB_RUNNING, "");
    chosen->rec.set_started_ms(txn.now);
  }
  AddEvent(txn, *chosen, proto::EVENT_STAGE_LEASED, task->stage(), -1, request.worker_id(),
           task->verify() ? absl::StrCat("attempt ", attempt, ", verify")
                          : absl::StrCat("attempt ", attempt, ", from layer ",
                                         task->first_layer() + task->layers_committed()));

  proto::TaskAssignment* a = reply.mutable_task();
  a->set_job_id(chosen->rec.job_id());
  a->set_stage(task->stage());
  a->set_attempt_id(attempt);
  *a->mutable_spec() = chosen->rec.spec();
  a->set_first_layer(task->first_layer());
  a->set_end_layer(task->end_layer());
  a->set_start_layer(task->first_layer() + task->layers_committed());
  a->set_num_layers(chosen->rec.num_layers());
  a->set_lease_ttl_ms(options_.lease_ttl_ms);
  a->set_verify(task->verify());
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

// The live lease of `attempt_id` held by `worker` (any worker when empty). A
// lease past its deadline is expired on the spot (into `txn`) and reported gone.
absl::StatusOr<std::pair<Scheduler::Job*, proto::TaskRecord*>> Scheduler::LiveLease(uint64_t attempt_id,
                                                                                 const std::string& worker,
                                                                                 Txn& txn) {
  auto it = leases_.find(attempt_id);
  if (it == leases_.end()) return LeaseGone(attempt_id);
  Job* job = FindJob(it->second.job_id);
  proto::TaskRecord& t = job->tasks[it->second.stage];
  if (!worker.empty() && t.worker() != worker)
    return absl::AbortedError(absl::StrCat("attempt ", attempt_id, " is leased to ", t.worker(), ", not ", worker));
  if (t.deadline_ms() <= txn.now) {
    ExpireLocked(txn);
    return LeaseGone(attempt_id);
  }
  auto w = workers_.find(t.worker());
  if (w != workers_.end()) w->second.last_seen_ms = txn.now;
  return std::make_pair(job, &t);
}

absl::StatusOr<proto::RenewReply> Scheduler::Renew(const proto::RenewRequest& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
  if (!live.ok()) {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return live.status();
  }
  auto [job, task] = *live;
  task->set_deadline_ms(txn.now + options_.lease_ttl_ms);
  MarkTask(txn, *job, task->stage());
  proto::LeaseRecord lr;
  lr.set_attempt_id(request.attempt_id());
  lr.set_job_id(job->rec.job_id());
  lr.set_stage(task->stage());
  lr.set_worker(task->worker());
  lr.set_deadline_ms(task->deadline_ms());
  txn.batch.Put(StateFamily::kLeases, storage::LeaseKey(request.attempt_id()), lr.SerializeAsString());
  proto::RenewReply reply;
  reply.set_lease_ttl_ms(options_.lease_ttl_ms);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

absl::StatusOr<proto::PutLayerReply> Scheduler::CommitLayer(const proto::LayerChunk& header,
                                                            const std::string& bytes) {
  const uint64_t attempt = header.attempt_id();
  const int layer = header.layer();
  proto::PutLayerReply reply;
  reply.set_layer(layer);
  // A retried PutLayer whose first try was committed: answer as the first time.
  auto duplicate = [&]() -> absl::StatusOr<bool> {
    QF_ASSIGN_OR_RETURN(auto prev, store_->Get(StateFamily::kResults, storage::ResultKey(header.job_id(), layer)));
    if (!prev.has_value()) return false;
    proto::CommittedLayer c;
    return c.ParseFromString(*prev) && c.attempt_id() == attempt;
  };
  proto::JobSpec spec;
  std::shared_ptr<const storage::ModelConfig> cfg;
  {
    std::unique_lock<std::mutex> lock(mu_);
    Txn txn;
    txn.now = clock_->NowMs();
    auto live = LiveLease(attempt, "", txn);
    if (!live.ok()) {
      QF_RETURN_IF_ERROR(Finish(txn, lock));
      QF_ASSIGN_OR_RETURN(bool dup, duplicate());
      if (!dup) return live.status();
      reply.set_duplicate(true);
      return reply;
    }
    auto [job, task] = *live;
    if (job->rec.job_id() != header.job_id())
      return absl::InvalidArgumentError(
          absl::StrCat("LayerChunk.job_id: attempt ", attempt, " belongs to ", job->rec.job_id()));
    const int next = task->first_layer() + task->layers_committed();
    if (layer < task->first_layer() || layer >= task->end_layer())
      return absl::InvalidArgumentError(absl::StrCat("LayerChunk.layer: ", layer, " is outside ", StageName(*task)));
    if (layer < next) {
      reply.set_duplicate(true);
      reply.set_layers_committed(task->layers_committed());
      lock.unlock();
      QF_ASSIGN_OR_RETURN(bool dup, duplicate());
      if (dup) return reply;
      return absl::FailedPreconditionError(absl::StrCat("layer ", layer, " is already committed by another attempt"));
    }
    if (layer > next)
      return absl::FailedPreconditionError(absl::StrCat("layer ", layer, ": expected layer ", next, " next"));
    spec = job->rec.spec();
    cfg = job->config;
  }

  // Parse and check shapes without the lock: this is the expensive part.
  proto::LayerResultProto result;
  absl::Status check = result.ParseFromString(bytes)
                           ? ValidateLayer(result, layer, *cfg, spec)
                           : absl::DataLossError(absl::StrCat("layer ", layer, ": payload is not a LayerResultProto"));
  proto::CommittedLayer committed;
  if (check.ok()) {
    committed.set_attempt_id(attempt);
    committed.set_sha256(Sha256Hex(bytes));
    committed.set_result(bytes);
  }

  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  auto live = LiveLease(attempt, "", txn);
  if (!live.ok()) {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return live.status();
  }
  auto [job, task] = *live;
  if (!check.ok()) {
    AddEvent(txn, *job, proto::EVENT_LAYER_REJECTED, task->stage(), layer, task->worker(),
             std::string(check.message()));
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return check;
  }
  if (task->first_layer() + task->layers_committed() != layer)  // raced with a retry of the same layer
    return absl::FailedPreconditionError(absl::StrCat("layer ", layer, " was committed concurrently"));
  txn.batch.Put(StateFamily::kResults, storage::ResultKey(header.job_id(), layer), committed.SerializeAsString());
  task->set_layers_committed(task->layers_committed() + 1);
  task->set_deadline_ms(txn.now + options_.lease_ttl_ms);  // a commit is a sign of life
  MarkTask(txn, *job, task->stage());
  AddEvent(txn, *job, proto::EVENT_LAYER_COMMITTED, task->stage(), layer, task->worker(),
           absl::StrCat(bytes.size(), " bytes"));
  reply.set_layers_committed(task->layers_committed());
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

void Scheduler::RecordRejectedLayer(const proto::LayerChunk& header, const absl::Status& why) {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  auto live = LiveLease(header.attempt_id(), "", txn);
  if (live.ok() && live->first->rec.job_id() == header.job_id()) {
    AddEvent(txn, *live->first, proto::EVENT_LAYER_REJECTED, live->second->stage(), header.layer(),
             live->second->worker(), std::string(why.message()));
  }
  Finish(txn, lock).IgnoreError();  // best effort: the worker gets `why` either way
}

proto::TaskRecord* Scheduler::FindTaskByAttempt(uint64_t attempt_id, Job** job_out) const {
  for (const auto& [id, job] : jobs_) {
    for (proto::TaskRecord& t : job->tasks) {
      if (t.attempt_id() == attempt_id) {
        *job_out = job.get();
        return &t;
      }
    }
  }
  return nullptr;
}

absl::StatusOr<proto::CompleteReply> Scheduler::Complete(const proto::CompleteRequest& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  proto::CompleteReply reply;
  auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
  if (!live.ok()) {
    Job* job = nullptr;
    proto::TaskRecord* t = FindTaskByAttempt(request.attempt_id(), &job);
    bool already = t != nullptr && t->state() == proto::TASK_DONE;
    if (already)
      reply.set_job_done(t->verify() || job->rec.state() == proto::JOB_ASSEMBLING ||
                         job->rec.state() == proto::JOB_VERIFYING || job->rec.state() == proto::JOB_SUCCEEDED);
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    if (already) return reply;  // a retry of a Complete that went through
    return live.status();
  }
  auto [job, task] = *live;
  if (task->verify()) {
    const std::string out_dir = job->rec.spec().out_dir();
    QF_RETURN_IF_ERROR(Finish(txn, lock));  // writes what LiveLease may have expired
    return CompleteVerify(request, out_dir);
  }
  if (!request.verify_report().empty())
    return absl::InvalidArgumentError(absl::StrCat("CompleteRequest.verify_report: expected nothing for ",
                                                   StageName(*task), " (only the verify stage reports)"));
  if (task->layers_committed() != task->end_layer() - task->first_layer())
    return absl::FailedPreconditionError(absl::StrCat(StageName(*task), ": only ", task->layers_committed(),
                                                      " layers committed; commit every layer before Complete"));
  const std::string worker = task->worker();
  ReleaseLease(txn, *job, *task);
  task->set_state(proto::TASK_DONE);
  task->set_worker(worker);  // kept for the record; the lease is gone
  AddEvent(txn, *job, proto::EVENT_STAGE_DONE, task->stage(), -1, worker, "");
  const int next = task->stage() + 1;
  if (next < static_cast<int>(job->tasks.size()) && !job->tasks[next].verify() &&
      job->tasks[next].state() == proto::TASK_BLOCKED) {
    // Sequential: the worker holds stage `next`'s input activations; prefer it.
    job->tasks[next].set_preferred_worker(worker);
    QueueRunnableTasks(txn, *job);
  }
  if (LayersDone(*job)) {
    SetJobState(txn, *job, proto::JOB_ASSEMBLING, "");
    AddEvent(txn, *job, proto::EVENT_ASSEMBLING, -1, -1, "", "");
    reply.set_job_done(true);
  }
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

// The report is parsed and written outside the lock (a slow file system holds
// no other RPC); the lease is checked again before the stage is recorded. A
// lease lost in between leaves a verify.json that the next attempt overwrites
// with a report on the same bytes.
absl::StatusOr<proto::CompleteReply> Scheduler::CompleteVerify(const proto::CompleteRequest& request,
                                                               const std::string& out_dir) {
  QF_ASSIGN_OR_RETURN(VerifyOutcome outcome, ParseVerifyReport(request.verify_report()));
  const std::string path = absl::StrCat(out_dir, "/", storage::kVerifyReportName);
  std::string text = request.verify_report();
  if (text.back() != '\n') text += '\n';
  if (absl::Status s = WriteFileAtomic(path, text); !s.ok())
    return absl::InternalError(absl::StrCat("verify stage: writing the report: ", s.message()));

  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
  if (!live.ok()) {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return live.status();
  }
  auto [job, task] = *live;
  const std::string worker = task->worker();
  ReleaseLease(txn, *job, *task);
  task->set_state(proto::TASK_DONE);
  task->set_worker(worker);
  job->rec.set_verify_verdict(outcome.verdict);
  AddEvent(txn, *job, proto::EVENT_VERIFIED, task->stage(), -1, worker,
           outcome.verdict == kVerdictFailed ? absl::StrCat("failed: ", outcome.failure)
                                       : absl::StrCat(outcome.verdict, ": ", path));
  if (outcome.verdict == kVerdictFailed) {
    StopJob(txn, *job, proto::JOB_FAILED,
            absl::StrCat("verify: ", outcome.failure, " (report: ", path, "; the artifact stays)"));
  } else {
    SetJobState(txn, *job, proto::JOB_SUCCEEDED, "");
    AddEvent(txn, *job, proto::EVENT_SUCCEEDED, -1, -1, "", out_dir);
  }
  proto::CompleteReply reply;
  reply.set_job_done(true);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

absl::StatusOr<proto::FailReply> Scheduler::Fail(const proto::FailRequest& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  proto::FailReply reply;
  auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
  if (!live.ok()) {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return reply;  // the lease is gone already: nothing left to fail
  }
  auto [job, task] = *live;
  std::string error = request.error().empty() ? "worker reported a failure without a message" : request.error();
  FailAttempt(txn, *job, *task, error, request.permanent(), proto::EVENT_STAGE_FAILED);
  reply.set_job_failed(job->rec.state() == proto::JOB_FAILED);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

absl::StatusOr<proto::ReleaseReply> Scheduler::Release(const proto::ReleaseRequest& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
  if (!live.ok()) {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return proto::ReleaseReply();  // expired, failed or cancelled already: nothing to give back
  }
  auto [job, task] = *live;
  const std::string worker = task->worker();
  ReleaseLease(txn, *job, *task);
  Requeue(txn, *task);
  // The reason is the worker's words: one line of bounded size in the log.
  std::string reason = request.reason().empty() ? std::string("worker stopping") : request.reason().substr(0, 512);
  AddEvent(txn, *job, proto::EVENT_STAGE_RELEASED, task->stage(), -1, worker, reason);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return proto::ReleaseReply();
}

absl::StatusOr<std::string> Scheduler::FetchLayer(const std::string& job_id, int layer) const {
  QF_ASSIGN_OR_RETURN(auto value, store_->Get(StateFamily::kResults, storage::ResultKey(job_id, layer)));
  if (!value.has_value())
    return absl::NotFoundError(absl::StrCat("job ", EscapeForError(job_id), ": layer ", layer, " is not committed"));
  proto::CommittedLayer c;
  if (!c.ParseFromString(*value) || Sha256Hex(c.result()) != c.sha256())
    return absl::DataLossError(absl::StrCat("job ", job_id, ": committed layer ", layer, " fails its checksum"));
  return std::move(*c.mutable_result());
}

}  // namespace qf::coordinator
