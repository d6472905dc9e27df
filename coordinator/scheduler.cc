// The job side of the scheduler: loading, submit/cancel/resume, status,
// events, assembly bookkeeping and the shared transaction helpers. The worker
// side (leases, commits) is in scheduler_work.cc.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "coordinator/layer_codec.h"
#include "coordinator/planner.h"
#include "coordinator/scheduler_internal.h"
#include "storage/artifact.h"
#include "storage/inputs_digest.h"
#include "storage/synthetic_model.h"

// protobuf up to 3.21 logs through its own stubs; LogSilencer quiets them.
#if __has_include(<google/protobuf/stubs/logging.h>)
#include <google/protobuf/stubs/logging.h>
#define QF_PROTOBUF_LOG_SILENCER 1
#endif

namespace qf::coordinator {

using storage::StateFamily;

bool IsTerminal(proto::JobState s) {
  return s == proto::JOB_SUCCEEDED || s == proto::JOB_FAILED || s == proto::JOB_CANCELLED;
}

bool IsLeasable(proto::JobState s) {
  return s == proto::JOB_QUEUED || s == proto::JOB_RUNNING || s == proto::JOB_VERIFYING;
}

// The id comes from a client: shown escaped, so the refusal stays one line.
absl::Status NoSuchJob(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job ", EscapeForError(job_id), ": no such job"));
}

namespace {

// Parses a stored record. For a string field holding invalid UTF-8, protobuf
// prints its own "[libprotobuf ERROR ...]" line before it fails; the caller's
// refusal already names the record, family and type on one line, so that
// second line is silenced (protobuf <= 3.21; newer versions log through absl).
template <class M>
bool ParseRecord(M& m, std::string_view v) {
#ifdef QF_PROTOBUF_LOG_SILENCER
  google::protobuf::LogSilencer quiet;
#endif
  return m.ParseFromArray(v.data(), static_cast<int>(v.size()));
}

std::string JobIdFor(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "job-%06llu", static_cast<unsigned long long>(n));
  return buf;
}

// The job's inputs as they are now (the calibration text only where it is read).
absl::StatusOr<std::vector<storage::InputDigest>> DigestInputs(const proto::JobSpec& spec) {
  return storage::DigestJobInputs(spec.model_path(), spec.method() == "rtn" ? "" : spec.calib_path());
}

// Empty when `now` is what the job was submitted with (or the job's record
// holds no digests: it was never planned); else why not, ending in
// kInputsChanged.
std::string InputsChange(const proto::JobRecord& rec, const std::vector<storage::InputDigest>& now) {
  if (rec.inputs().empty()) return "";
  std::vector<storage::InputDigest> then;
  for (const proto::InputDigest& d : rec.inputs()) then.push_back({d.path(), d.sha256()});
  std::string change = storage::FirstInputChange(then, now);
  return change.empty() ? change : absl::StrCat(change, " ", kInputsChanged);
}

void RecordInputs(const std::vector<storage::InputDigest>& inputs, proto::JobRecord* rec) {
  rec->clear_inputs();
  for (const storage::InputDigest& d : inputs) {
    proto::InputDigest* r = rec->add_inputs();
    r->set_path(d.path);
    r->set_sha256(d.sha256);
  }
}

uint64_t ParseU64(std::string_view v) {
  uint64_t x = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    x = x * 10 + static_cast<uint64_t>(c - '0');
  }
  return x;
}

}  // namespace

Scheduler::Scheduler(storage::StateStore* store, const Clock* clock, SchedulerOptions options)
    : store_(store), clock_(clock), options_(options) {}

Scheduler::~Scheduler() = default;

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(storage::StateStore* store, const Clock* clock,
                                                             SchedulerOptions options) {
  std::unique_ptr<Scheduler> s(new Scheduler(store, clock, options));
  QF_RETURN_IF_ERROR(s->Load());
  return s;
}

absl::Status Scheduler::Load() {
  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  absl::Status parse_error;
  // Names the record, so that whoever restores it knows which one: the
  // family and the key (task and lease keys hold big-endian numbers, hence
  // the escaping).
  auto corrupt = [&](StateFamily family, std::string_view key, const google::protobuf::Message& as) {
    parse_error = absl::DataLossError(absl::StrCat(store_->dir(), ": record \"", EscapeForError(key), "\" of family ",
                                                   std::string(storage::StateFamilyName(family)), " does not parse as ",
                                                   as.GetTypeName()));
    return false;
  };
  QF_RETURN_IF_ERROR(store_->Scan(StateFamily::kMeta, "", [&](std::string_view k, std::string_view v) {
    if (k == storage::kMetaNextJob) next_job_ = std::max<uint64_t>(1, ParseU64(v));
    if (k == storage::kMetaNextAttempt) next_attempt_ = std::max<uint64_t>(1, ParseU64(v));
    if (k.substr(0, storage::kWorkerPrefix.size()) == storage::kWorkerPrefix) {
      Worker w;
      if (!ParseRecord(w.record, v)) return corrupt(StateFamily::kMeta, k, w.record);
      workers_[w.record.name()] = w;
    }
    return true;
  }));
  QF_RETURN_IF_ERROR(store_->Scan(StateFamily::kJobs, "", [&](std::string_view k, std::string_view v) {
    auto job = std::make_unique<Job>();
    if (!ParseRecord(job->rec, v)) return corrupt(StateFamily::kJobs, k, job->rec);
    if (!job->rec.request_id().empty()) request_ids_[job->rec.request_id()] = job->rec.job_id();
    jobs_[job->rec.job_id()] = std::move(job);
    return true;
  }));
  QF_RETURN_IF_ERROR(store_->Scan(StateFamily::kTasks, "", [&](std::string_view k, std::string_view v) {
    proto::TaskRecord t;
    if (!ParseRecord(t, v)) return corrupt(StateFamily::kTasks, k, t);
    Job* job = FindJob(t.job_id());
    if (job != nullptr && t.stage() == static_cast<int>(job->tasks.size())) job->tasks.push_back(std::move(t));
    return true;
  }));
  QF_RETURN_IF_ERROR(store_->Scan(StateFamily::kLeases, "", [&](std::string_view k, std::string_view v) {
    proto::LeaseRecord l;
    if (!ParseRecord(l, v)) return corrupt(StateFamily::kLeases, k, l);
    Job* job = FindJob(l.job_id());
    bool live = job != nullptr && l.stage() >= 0 && l.stage() < static_cast<int>(job->tasks.size()) &&
                job->tasks[l.stage()].state() == proto::TASK_LEASED &&
                job->tasks[l.stage()].attempt_id() == l.attempt_id();
    if (live) {
      leases_[l.attempt_id()] = LeaseRef{l.job_id(), l.stage()};
      // Written by an earlier process on its own clock: had the wall clock
      // stepped back since, the lease of a worker that died with it would
      // outlive it by the step. No lease runs longer than one ttl from here.
      proto::TaskRecord& t = job->tasks[l.stage()];
      if (t.deadline_ms() > txn.now + options_.lease_ttl_ms) {
        t.set_deadline_ms(txn.now + options_.lease_ttl_ms);
        MarkTask(txn, *job, l.stage());
      }
    } else {
      txn.batch.Delete(StateFamily::kLeases, std::string(k));
    }
    return true;
  }));
  QF_RETURN_IF_ERROR(parse_error);

  for (auto& [id, job] : jobs_) {
    for (proto::TaskRecord& t : job->tasks) {
      if (t.state() == proto::TASK_LEASED && leases_.count(t.attempt_id()) == 0) {
        t.set_state(proto::TASK_QUEUED);  // its lease record is gone: hand it out again
        t.set_queued_ms(txn.now);
        MarkTask(txn, *job, t.stage());
      }
    }
    proto::JobState st = job->rec.state();
    if (IsTerminal(st)) continue;
    auto cfg = storage::LoadModelConfigOrSynthetic(job->rec.spec().model_path());
    auto now = cfg.ok() ? DigestInputs(job->rec.spec()) : cfg.status();
    if (!now.ok()) {
      StopJob(txn, *job, proto::JOB_FAILED,
              absl::StrCat("model unreadable at coordinator start: ", now.status().message()));
      continue;
    }
    if (std::string change = InputsChange(job->rec, *now); !change.empty()) {
      StopJob(txn, *job, proto::JOB_FAILED, change);  // going on would mix two models' layers
      continue;
    }
    job->config = std::make_shared<const storage::ModelConfig>(*std::move(cfg));
    if (IsLeasable(st))
      active_.emplace(-job->rec.spec().priority(), job->rec.submit_seq(), id);
    if (st == proto::JOB_ASSEMBLING) txn.assembly = true;
  }
  ExpireLocked(txn);
  QF_LOG(INFO) << "state loaded from " << store_->dir() << ": " << jobs_.size() << " jobs, " << leases_.size()
               << " live leases";
  return Finish(txn, lock);
}

absl::Status Scheduler::Finish(Txn& txn, std::unique_lock<std::mutex>& lock) {
  if (txn.empty()) {
    lock.unlock();
    return absl::OkStatus();
  }
  for (const std::string& id : txn.dirty_jobs) {
    Job* job = FindJob(id);
    job->rec.set_updated_ms(txn.now);
    txn.batch.Put(StateFamily::kJobs, id, job->rec.SerializeAsString());
  }
  for (const auto& [id, stage] : txn.dirty_tasks) {
    txn.batch.Put(StateFamily::kTasks, storage::TaskKey(id, stage),
                  FindJob(id)->tasks[stage].SerializeAsString());
  }
  uint64_t ticket = store_->Enqueue(std::move(txn.batch));
  lock.unlock();
  if (absl::Status durable = store_->WaitDurable(ticket); !durable.ok()) {
    NotifyEveryone();
    return durable;
  }
  Notify(txn.evented, txn.assembly);
  return absl::OkStatus();
}

void Scheduler::NotifyEveryone() {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> l(sub_mu_);
    for (auto& [id, sub] : subs_) wake.push_back(sub.second);
  }
  for (auto& fn : wake) fn();
}

void Scheduler::Notify(const std::set<std::string>& job_ids, bool assembly) {
  if (!job_ids.empty()) {
    std::vector<std::function<void()>> wake;
    {
      std::lock_guard<std::mutex> l(sub_mu_);
      for (auto& [id, sub] : subs_) {
        if (job_ids.count(sub.first)) wake.push_back(sub.second);
      }
    }
    for (auto& fn : wake) fn();  // outside the lock: a listener may finish its stream
  }
  if (assembly) {
    std::function<void()> wake;
    {
      std::lock_guard<std::mutex> l(sub_mu_);
      wake = assembly_wakeup_;
    }
    if (wake) wake();
  }
}

Scheduler::Job* Scheduler::FindJob(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

void Scheduler::AddEvent(Txn& txn, Job& job, proto::EventKind kind, int stage, int layer,
                         const std::string& worker, const std::string& message) {
  proto::JobEvent e;
  e.set_job_id(job.rec.job_id());
  e.set_seq(job.rec.last_event_seq() + 1);
  e.set_time_ms(txn.now);
  e.set_kind(kind);
  e.set_stage(stage);
  e.set_layer(layer);
  e.set_worker(worker);
  e.set_message(message);
  job.rec.set_last_event_seq(e.seq());
  txn.batch.Put(StateFamily::kEvents, storage::EventKey(e.job_id(), e.seq()), e.SerializeAsString());
  txn.dirty_jobs.insert(job.rec.job_id());
  txn.evented.insert(job.rec.job_id());
}

void Scheduler::MarkTask(Txn& txn, Job& job, int stage) {
  txn.dirty_tasks.emplace(job.rec.job_id(), stage);
}

void Scheduler::SetJobState(Txn& txn, Job& job, proto::JobState state, const std::string& reason) {
  const std::string& id = job.rec.job_id();
  job.rec.set_state(state);
  job.rec.set_reason(reason);
  job.rec.set_finished_ms(IsTerminal(state) ? txn.now : 0);
  auto key = std::make_tuple(-job.rec.spec().priority(), job.rec.submit_seq(), id);
  if (IsLeasable(state)) {
    active_.insert(key);
  } else {
    active_.erase(key);
  }
  if (state == proto::JOB_ASSEMBLING) txn.assembly = true;
  txn.dirty_jobs.insert(id);
}

void Scheduler::PlanTasks(Job& job) {
  const proto::JobSpec& spec = job.rec.spec();
  int k = ResolveStageLayers(spec, *job.config, options_.default_stage_layers);
  std::vector<StagePlan> plan = PlanStages(static_cast<int>(job.config->num_hidden_layers), k);
  job.rec.set_num_layers(static_cast<int>(job.config->num_hidden_layers));
  job.rec.set_num_stages(static_cast<int>(plan.size()));
  job.tasks.clear();
  for (size_t i = 0; i < plan.size(); ++i) {
    proto::TaskRecord t;
    t.set_job_id(job.rec.job_id());
    t.set_stage(static_cast<int>(i));
    t.set_first_layer(plan[i].first_layer);
    t.set_end_layer(plan[i].end_layer);
    t.set_state(proto::TASK_BLOCKED);
    job.tasks.push_back(std::move(t));
  }
  if (spec.verify()) {  // the last task: queued by FinishAssembly once the artifact exists
    proto::TaskRecord t;
    t.set_job_id(job.rec.job_id());
    t.set_stage(static_cast<int>(plan.size()));
    t.set_first_layer(job.rec.num_layers());
    t.set_end_layer(job.rec.num_layers());
    t.set_state(proto::TASK_BLOCKED);
    t.set_verify(true);
    job.tasks.push_back(std::move(t));
  }
}

bool Scheduler::LayersDone(const Job& job) {
  return std::all_of(job.tasks.begin(), job.tasks.end(),
                     [](const proto::TaskRecord& t) { return t.verify() || t.state() == proto::TASK_DONE; });
}

proto::TaskRecord* Scheduler::VerifyTask(Job& job) {
  return !job.tasks.empty() && job.tasks.back().verify() ? &job.tasks.back() : nullptr;
}

// Sequential: the first stage not DONE is QUEUED, later ones BLOCKED.
// Parallel: every stage not DONE is QUEUED. Leased stages are left alone, and
// so is the verify stage (FinishAssembly queues it).
void Scheduler::QueueRunnableTasks(Txn& txn, Job& job) {
  const bool sequential = job.rec.spec().mode() != proto::MODE_PARALLEL;
  bool runnable = true;
  for (proto::TaskRecord& t : job.tasks) {
    if (t.state() == proto::TASK_DONE || t.verify()) continue;
    if (t.state() != proto::TASK_LEASED) {
      proto::TaskState want = runnable ? proto::TASK_QUEUED : proto::TASK_BLOCKED;
      if (t.state() != want) {
        t.set_state(want);
        if (want == proto::TASK_QUEUED) t.set_queued_ms(txn.now);
        MarkTask(txn, job, t.stage());
      }
    }
    if (sequential) runnable = false;
  }
}

proto::JobStatus Scheduler::MakeStatus(const Job& job) const {
  proto::JobStatus s;
  const proto::JobRecord& r = job.rec;
  s.set_job_id(r.job_id());
  *s.mutable_spec() = r.spec();
  s.set_state(r.state());
  s.set_reason(r.reason());
  s.set_layers_total(r.num_layers());
  s.set_submitted_ms(r.submitted_ms());
  s.set_started_ms(r.started_ms());
  s.set_finished_ms(r.finished_ms());
  s.set_updated_ms(r.updated_ms());
  if (r.state() == proto::JOB_SUCCEEDED) s.set_artifact_dir(r.spec().out_dir());
  if (!r.verify_verdict().empty()) {
    s.set_verify_verdict(r.verify_verdict());
    s.set_verify_report(absl::StrCat(r.spec().out_dir(), "/", storage::kVerifyReportName));
  }
  int committed = 0;
  for (const proto::TaskRecord& t : job.tasks) {
    proto::StageStatus* st = s.add_stages();
    st->set_stage(t.stage());
    st->set_first_layer(t.first_layer());
    st->set_end_layer(t.end_layer());
    st->set_state(t.state());
    st->set_layers_committed(t.layers_committed());
    st->set_failures(t.failures());
    if (t.state() == proto::TASK_LEASED) st->set_worker(t.worker());
    st->set_last_error(t.last_error());
    st->set_started_ms(t.started_ms());
    st->set_verify(t.verify());
    committed += t.layers_committed();
  }
  s.set_layers_committed(committed);
  return s;
}

absl::StatusOr<proto::SubmitReply> Scheduler::Submit(const proto::SubmitRequest& request) {
  proto::JobSpec spec = request.spec();
  ApplySpecDefaults(&spec);
  QF_RETURN_IF_ERROR(ValidateJobSpec(spec));
  if (request.request_id().size() > 128)
    return absl::InvalidArgumentError("SubmitRequest.request_id: expected at most 128 bytes");
  auto existing = [&]() -> std::optional<proto::SubmitReply> {
    auto it = request_ids_.find(request.request_id());
    if (request.request_id().empty() || it == request_ids_.end()) return std::nullopt;
    proto::SubmitReply reply;
    reply.set_job_id(it->second);
    reply.set_existing(true);
    *reply.mutable_status() = MakeStatus(*FindJob(it->second));
    return reply;
  };
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto r = existing()) return *r;
  }
  // File-system checks outside the lock: they may be slow (network mounts).
  absl::StatusOr<storage::ModelConfig> cfg = CheckJobInputs(spec);
  absl::StatusOr<std::vector<storage::InputDigest>> inputs =
      cfg.ok() ? DigestInputs(spec) : absl::StatusOr<std::vector<storage::InputDigest>>(cfg.status());
  if (!inputs.ok()) cfg = inputs.status();

  std::unique_lock<std::mutex> lock(mu_);
  if (auto r = existing()) return *r;
  Txn txn;
  txn.now = clock_->NowMs();
  const uint64_t seq = next_job_++;
  auto owned = std::make_unique<Job>();
  Job& job = *owned;
  job.rec.set_job_id(JobIdFor(seq));
  *job.rec.mutable_spec() = spec;
  job.rec.set_submit_seq(seq);
  job.rec.set_submitted_ms(txn.now);
  job.rec.set_request_id(request.request_id());
  jobs_[job.rec.job_id()] = std::move(owned);
  if (!request.request_id().empty()) request_ids_[request.request_id()] = job.rec.job_id();
  txn.batch.Put(StateFamily::kMeta, std::string(storage::kMetaNextJob), absl::StrCat(next_job_));
  if (cfg.ok()) {
    job.config = std::make_shared<const storage::ModelConfig>(*std::move(cfg));
    RecordInputs(*inputs, &job.rec);
    PlanTasks(job);
    QueueRunnableTasks(txn, job);
    for (const proto::TaskRecord& t : job.tasks) MarkTask(txn, job, t.stage());
    SetJobState(txn, job, proto::JOB_QUEUED, "");
    AddEvent(txn, job, proto::EVENT_SUBMITTED, -1, -1, "",
             absl::StrCat(job.rec.num_layers(), " layers in ", job.rec.num_stages(), " stages (",
                          spec.mode() == proto::MODE_PARALLEL ? "parallel" : "sequential", ")"));
  } else {
    AddEvent(txn, job, proto::EVENT_SUBMITTED, -1, -1, "", "model check failed");
    StopJob(txn, job, proto::JOB_FAILED, std::string(cfg.status().message()));
  }
  proto::SubmitReply reply;
  reply.set_job_id(job.rec.job_id());
  *reply.mutable_status() = MakeStatus(job);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return reply;
}

absl::StatusOr<proto::JobStatus> Scheduler::GetJob(const std::string& job_id) const {
  std::lock_guard<std::mutex> l(mu_);
  Job* job = FindJob(job_id);
  if (job == nullptr) return NoSuchJob(job_id);
  return MakeStatus(*job);
}

std::vector<proto::JobStatus> Scheduler::ListJobs(const proto::ListRequest& request) const {
  std::set<int> states(request.states().begin(), request.states().end());
  std::vector<proto::JobStatus> out;
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {  // job ids sort by submit order
    if (!states.empty() && states.count(it->second->rec.state()) == 0) continue;
    out.push_back(MakeStatus(*it->second));
    if (request.limit() > 0 && static_cast<int>(out.size()) >= request.limit()) break;
  }
  return out;
}

void Scheduler::StopJob(Txn& txn, Job& job, proto::JobState state, const std::string& reason) {
  for (proto::TaskRecord& t : job.tasks) {
    if (t.state() == proto::TASK_DONE) continue;
    if (t.state() == proto::TASK_LEASED) ReleaseLease(txn, job, t);
    t.set_state(proto::TASK_STOPPED);
    MarkTask(txn, job, t.stage());
  }
  SetJobState(txn, job, state, reason);
  AddEvent(txn, job, state == proto::JOB_CANCELLED ? proto::EVENT_CANCELLED : proto::EVENT_FAILED, -1, -1, "",
           reason);
}

absl::StatusOr<proto::JobStatus> Scheduler::Cancel(const std::string& job_id, const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  Job* job = FindJob(job_id);
  if (job == nullptr) return NoSuchJob(job_id);
  proto::JobState st = job->rec.state();
  if (st == proto::JOB_CANCELLED) return MakeStatus(*job);
  if (!IsLeasable(st))
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, ": cannot cancel a job in state ", proto::JobState_Name(st)));
  Txn txn;
  txn.now = clock_->NowMs();
  StopJob(txn, *job, proto::JOB_CANCELLED, reason.empty() ? "cancelled by user" : reason);
  proto::JobStatus status = MakeStatus(*job);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return status;
}

absl::StatusOr<proto::JobStatus> Scheduler::Resume(const std::string& job_id) {
  proto::JobRecord rec;
  bool needs_config = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    Job* job = FindJob(job_id);
    if (job == nullptr) return NoSuchJob(job_id);
    rec = job->rec;
    needs_config = job->config == nullptr;
  }
  const proto::JobSpec& spec = rec.spec();
  // A job held without its model (it failed at submit, or ended before this
  // coordinator started) reads it again. Every job is checked against the
  // inputs it was submitted with: its committed layers came from those.
  absl::StatusOr<storage::ModelConfig> cfg = needs_config ? CheckJobInputs(spec) : storage::ModelConfig();
  auto now = cfg.ok() ? DigestInputs(spec) : cfg.status();
  if (!now.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, ": cannot resume: ", now.status().message()));
  }
  if (std::string change = InputsChange(rec, *now); !change.empty())
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, ": cannot resume: ", change));

  std::unique_lock<std::mutex> lock(mu_);
  Job* job = FindJob(job_id);
  proto::JobState st = job->rec.state();
  if (st == proto::JOB_SUCCEEDED)
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, ": already succeeded"));
  if (st != proto::JOB_FAILED && st != proto::JOB_CANCELLED) return MakeStatus(*job);
  Txn txn;
  txn.now = clock_->NowMs();
  if (job->config == nullptr) {
    // Two kinds of job come here: one that failed at submit (no tasks yet:
    // plan it now), and one that ended while a coordinator ran and was loaded
    // by a later one (terminal jobs are loaded without their model). The
    // second keeps its tasks, whose committed layers are the point of resuming.
    if (!job->tasks.empty() && static_cast<int64_t>(cfg->num_hidden_layers) != job->rec.num_layers()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, ": cannot resume: ", spec.model_path(), ": config.json num_hidden_layers is ",
          cfg->num_hidden_layers, ", the job was planned for ", job->rec.num_layers()));
    }
    job->config = std::make_shared<const storage::ModelConfig>(*std::move(cfg));
    if (job->tasks.empty()) {
      RecordInputs(*now, &job->rec);
      PlanTasks(*job);
      for (const proto::TaskRecord& t : job->tasks) MarkTask(txn, *job, t.stage());
    }
  }
  bool any_progress = false;
  for (proto::TaskRecord& t : job->tasks) {
    t.set_failures(0);
    t.set_last_error("");
    t.set_preferred_worker("");
    if (t.verify()) t.set_state(proto::TASK_BLOCKED);  // runs again on the artifact assembled again
    MarkTask(txn, *job, t.stage());
    any_progress = any_progress || t.layers_committed() > 0;
  }
  job->rec.clear_verify_verdict();
  const bool all_done = LayersDone(*job);
  QueueRunnableTasks(txn, *job);
  SetJobState(txn, *job, all_done ? proto::JOB_ASSEMBLING : any_progress ? proto::JOB_RUNNING : proto::JOB_QUEUED,
              "");
  AddEvent(txn, *job, proto::EVENT_RESUMED, -1, -1, "",
           absl::StrCat("from ", job->rec.state() == proto::JOB_ASSEMBLING ? "assembly" : "last committed layer"));
  if (all_done) AddEvent(txn, *job, proto::EVENT_ASSEMBLING, -1, -1, "", "");
  proto::JobStatus status = MakeStatus(*job);
  QF_RETURN_IF_ERROR(Finish(txn, lock));
  return status;
}

absl::StatusOr<std::vector<proto::JobEvent>> Scheduler::Events(const std::string& job_id, uint64_t after_seq,
                                                               int limit) const {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (FindJob(job_id) == nullptr) return NoSuchJob(job_id);
  }
  std::vector<proto::JobEvent> out;
  absl::Status parse = absl::OkStatus();
  QF_RETURN_IF_ERROR(store_->Scan(
      StateFamily::kEvents, storage::JobPrefix(job_id),
      [&](std::string_view k, std::string_view v) {
        proto::JobEvent e;
        if (!ParseRecord(e, v)) {
          parse = absl::DataLossError(absl::StrCat(store_->dir(), ": event ", storage::ReadBigEndianSuffix(k, 8),
                                                   " of job ", job_id, " does not parse as ", e.GetTypeName()));
          return false;
        }
        out.push_back(std::move(e));
        return limit <= 0 || static_cast<int>(out.size()) < limit;
      },
      storage::EventKey(job_id, after_seq + 1)));
  QF_RETURN_IF_ERROR(parse);
  return out;
}

std::vector<std::string> Scheduler::TakeJobsToAssemble() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  for (auto& [id, job] : jobs_) {
    if (job->rec.state() == proto::JOB_ASSEMBLING && !job->assembling) {
      job->assembling = true;
      out.push_back(id);
    }
  }
  return out;
}

absl::StatusOr<AssemblyInput> Scheduler::LoadAssemblyInput(const std::string& job_id) const {
  AssemblyInput in;
  {
    std::lock_guard<std::mutex> l(mu_);
    Job* job = FindJob(job_id);
    if (job == nullptr) return NoSuchJob(job_id);
    in.job = job->rec;
    in.config = job->config;
    if (!job->tasks.empty()) in.stage_layers = job->tasks[0].end_layer() - job->tasks[0].first_layer();
  }
  in.layer = [this, job_id](int layer) -> absl::StatusOr<kernels::LayerResult> {
    QF_ASSIGN_OR_RETURN(std::string bytes, FetchLayer(job_id, layer));
    proto::LayerResultProto p;
    if (!p.ParseFromString(bytes))
      return absl::DataLossError(absl::StrCat("job ", job_id, ": committed layer ", layer, " does not parse"));
    return LayerFromProto(p);
  };
  return in;
}

absl::Status Scheduler::FinishAssembly(const std::string& job_id, const absl::Status& result) {
  std::unique_lock<std::mutex> lock(mu_);
  Job* job = FindJob(job_id);
  if (job == nullptr) return NoSuchJob(job_id);
  job->assembling = false;
  if (job->rec.state() != proto::JOB_ASSEMBLING) return absl::OkStatus();
  Txn txn;
  txn.now = clock_->NowMs();
  proto::TaskRecord* verify = VerifyTask(*job);
  if (result.ok() && verify != nullptr) {
    verify->set_state(proto::TASK_QUEUED);
    verify->set_queued_ms(txn.now);
    MarkTask(txn, *job, verify->stage());
    SetJobState(txn, *job, proto::JOB_VERIFYING, "");
    AddEvent(txn, *job, proto::EVENT_VERIFYING, verify->stage(), -1, "", job->rec.spec().out_dir());
  } else if (result.ok()) {
    SetJobState(txn, *job, proto::JOB_SUCCEEDED, "");
    AddEvent(txn, *job, proto::EVENT_SUCCEEDED, -1, -1, "", job->rec.spec().out_dir());
  } else {
    StopJob(txn, *job, proto::JOB_FAILED, absl::StrCat("assemble: ", result.message()));
  }
  return Finish(txn, lock);
}

void Scheduler::SetAssemblyWakeup(std::function<void()> wakeup) {
  std::lock_guard<std::mutex> l(sub_mu_);
  assembly_wakeup_ = std::move(wakeup);
}

uint64_t Scheduler::Subscribe(const std::string& job_id, std::function<void()> listener) {
  std::lock_guard<std::mutex> l(sub_mu_);
  uint64_t id = next_sub_++;
  subs_[id] = {job_id, std::move(listener)};
  return id;
}

void Scheduler::Unsubscribe(uint64_t id) {
  std::lock_guard<std::mutex> l(sub_mu_);
  subs_.erase(id);
}

}  // namespace qf::coordinator
