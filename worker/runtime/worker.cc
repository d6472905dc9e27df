#include "worker/runtime/worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cpu_budget.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storage/synthetic_model.h"
#include "worker/calibration.h"
#include "worker/runtime/verify_stage.h"
#include "worker/tokenizer.h"

namespace qf::worker {
namespace {

std::string NewIncarnation() {
  std::random_device rd;
  uint64_t x = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
               (static_cast<uint64_t>(::getpid()) << 16);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(x));
  return buf;
}

bool LeaseLost(const absl::Status& s) {
  return absl::IsAborted(s) || absl::IsNotFound(s) || absl::IsFailedPrecondition(s);
}

// Renews one lease every `interval_ms` on its own thread until destroyed.
// A refusal from the coordinator sets lost(); an unreachable coordinator does
// not (the lease may still be alive when it comes back).
class Renewer {
 public:
  Renewer(WorkClient* client, const proto::TaskAssignment& task, const std::string& worker_id, int interval_ms,
          const std::atomic<int>* layer)
      : thread_([=, this] { Loop(client, task, worker_id, interval_ms, layer); }) {}
  ~Renewer() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  const std::atomic<bool>& lost() const { return lost_; }
  void Pause() { paused_ = true; }

 private:
  void Loop(WorkClient* client, proto::TaskAssignment task, std::string worker_id, int interval_ms,
            const std::atomic<int>* layer) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(interval_ms));
      if (stop_ || paused_) continue;
      lock.unlock();
      absl::Status s = client->Renew(task, worker_id, layer->load());
      lock.lock();
      if (LeaseLost(s)) {
        QF_LOG(WARNING) << "job " << task.job_id() << " stage " << task.stage() << ": lease lost: " << s.message();
        lost_ = true;
        return;
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> paused_{false};
  std::atomic<bool> lost_{false};
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace

struct Worker::Held {
  std::string job_id;
  std::string spec;                  // serialized JobSpec the session was opened for
  std::unique_ptr<Session> session;
};

absl::StatusOr<std::vector<int32_t>> TokenizeCalibration(const proto::JobSpec& spec) {
  if (storage::IsSyntheticModel(spec.model_path())) {   // no tokenizer: synthetic ids from the job's seed
    QF_ASSIGN_OR_RETURN(storage::ModelConfig cfg, storage::LoadModelConfigOrSynthetic(spec.model_path()));
    return storage::SyntheticCalibrationTokens(cfg.vocab_size, spec.seed(), spec.samples(), spec.seqlen());
  }
  QF_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::Load(spec.model_path()));
  return BuildCalibrationTokens(*tok, CalibSpec{spec.calib_path(), spec.samples(), spec.seqlen(), spec.seed()});
}

absl::StatusOr<std::vector<std::string>> SplitDevices(const std::string& devices) {
  std::vector<std::string> out;
  std::string kind;  // the last "cpu" / "cuda" seen: a bare number continues it ("cuda:0,1")
  size_t pos = 0;
  while (pos <= devices.size()) {
    size_t comma = devices.find(',', pos);
    if (comma == std::string::npos) comma = devices.size();
    std::string d = devices.substr(pos, comma - pos);
    pos = comma + 1;
    if (d.empty()) return absl::InvalidArgumentError(absl::StrCat("'", devices, "': an empty device"));
    if (std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      if (kind != "cuda") return absl::InvalidArgumentError(absl::StrCat("'", devices, "': '", d, "' follows no cuda device"));
      d = "cuda:" + d;
    }
    kind = d.rfind("cuda", 0) == 0 ? "cuda" : d;
    out.push_back(d);
  }
  return out;
}

QuantParams ToQuantParams(const proto::JobSpec& spec) {
  QuantParams q;
  q.method = spec.method();
  q.bits = spec.bits();
  q.group_size = spec.group_size();
  q.sym = spec.sym();
  q.act_order = spec.act_order();
  q.static_groups = spec.static_groups();
  q.true_sequential = spec.true_sequential();
  q.damp_percent = spec.damp_percent();
  q.block_size = spec.block_size();
  q.awq_grid = spec.awq_grid();
  q.awq_duo_scaling = !spec.awq_paper_scales();
  q.awq_search_tokens = spec.awq_search_tokens();
  // GPTQ v1 stores zero - 1 unsigned: keep asymmetric zeros >= 1 (as qctl does).
  q.zero_at_least_one = spec.format() == "gptq" && !spec.sym();
  return q;
}

Worker::Worker(std::shared_ptr<grpc::Channel> channel, Engine* engine, WorkerOptions options)
    : client_(std::move(channel), options.client), engine_(engine), options_(std::move(options)),
      incarnation_(NewIncarnation()) {
  if (!options_.calibration) options_.calibration = TokenizeCalibration;
  if (!options_.handoff) {
    handoff_off_ = "hand-off disabled (--no-handoff)";
    return;
  }
  transport_ = options_.handoff_transport;
  if (!transport_) transport_ = MakeNcclTransport(engine_, options_.device);
  absl::StatusOr<std::string> key = transport_->DeviceKey();
  if (!key.ok()) {
    handoff_off_ = std::string(key.status().message());
    transport_.reset();
    return;
  }
  device_key_ = *key;
  offers_ = std::make_unique<OfferServer>(&client_, transport_.get(), options_.name);
}

Worker::~Worker() = default;

absl::Status Worker::EnsureRegistered() {
  if (!worker_id_.empty()) return absl::OkStatus();
  QF_ASSIGN_OR_RETURN(proto::RegisterReply reg,
                      client_.Register(options_.name, options_.device, incarnation_, device_key_));
  worker_id_ = reg.worker_id();
  renew_interval_ms_ = std::max(20, reg.renew_interval_ms());
  // The thread count beside what the process may use: one line an SRE can
  // check against the pod's CPU limit (common/cpu_budget.h).
  QF_LOG(INFO) << "worker " << worker_id_ << " registered (incarnation " << incarnation_ << ", lease ttl "
               << reg.lease_ttl_ms() << " ms, " << engine_->cpu_threads()
               << " CPU threads; usable: " << ReadCpuBudget().ToString() << ")";
  return absl::OkStatus();
}

absl::StatusOr<bool> Worker::RunOnce() {
  QF_RETURN_IF_ERROR(EnsureRegistered());
  auto task = client_.Lease(worker_id_, incarnation_, nullptr);
  if (absl::IsNotFound(task.status()) || absl::IsAborted(task.status())) {
    worker_id_.clear();  // the coordinator forgot us, or saw a newer us: register again
    return false;
  }
  QF_RETURN_IF_ERROR(task.status());
  if (!task->has_value()) return false;
  QF_RETURN_IF_ERROR(RunTask(**task));
  return true;
}

absl::Status Worker::Run(const std::atomic<bool>* stop) {
  stop_ = stop;
  while (!stop->load()) {
    QF_RETURN_IF_ERROR(EnsureRegistered());
    int retry_ms = 250;
    auto task = client_.Lease(worker_id_, incarnation_, &retry_ms);
    if (!task.ok()) {
      if (absl::IsNotFound(task.status()) || absl::IsAborted(task.status())) {
        worker_id_.clear();
      } else {
        QF_LOG(WARNING) << "lease: " << task.status();
        retry_ms = 1000;
      }
    } else if (task->has_value()) {
      QF_RETURN_IF_ERROR(RunTask(**task));
      continue;
    }
    for (int waited = 0; waited < retry_ms && !stop->load(); waited += 20)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  client_.Stop();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Session>> Worker::PrepareSession(const proto::TaskAssignment& task,
                                                                const std::atomic<bool>& lost) {
  const proto::JobSpec& spec = task.spec();
  const bool sequential = spec.mode() != proto::MODE_PARALLEL;
  const std::string spec_bytes = spec.SerializeAsString();
  if (sequential && held_ && held_->job_id == task.job_id() && held_->spec == spec_bytes &&
      held_->session->next_layer() == task.start_layer()) {
    stats_.sessions_reused++;
    std::unique_ptr<Session> s = std::move(held_->session);
    held_.reset();
    return s;
  }
  held_.reset();  // one session in memory at a time

  SessionSpec ss;
  ss.model_dir = spec.model_path();
  ss.device = options_.device;
  ss.host_activations = options_.host_activations;
  ss.quant = ToQuantParams(spec);
  if (spec.method() != "rtn") {  // as `qctl quantize`: RTN sees no calibration data
    ss.samples = spec.samples();
    ss.seqlen = spec.seqlen();
    QF_ASSIGN_OR_RETURN(ss.calib_tokens, options_.calibration(spec));
  }
  // Parallel: say at once that this stage will offer its end's activations,
  // so that the next stage's worker waits for them instead of replaying.
  const bool offering = !sequential && AnnounceOffer(task);
  QF_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, engine_->OpenSession(ss));
  const int replay_from = sequential ? 0 : task.first_layer();
  const bool received = !sequential && replay_from > 0 && ReceiveInput(task, session.get(), lost);
  for (int l = received ? replay_from : 0; l < replay_from; ++l) {
    if (lost || stopping()) return absl::AbortedError("lease lost or worker stopping while replaying");
    QF_RETURN_IF_ERROR(session->ForwardOriginalLayer(l));
    stats_.layers_replayed++;
  }
  // The session holds the FP16 activations at first_layer: the next stage's
  // input is a forward through this stage's original layers away. Computed
  // before this stage quantizes, so that the next stage starts early.
  if (offering) MakeOffer(task, session.get());
  for (int l = replay_from; l < task.start_layer(); ++l) {
    if (lost || stopping()) return absl::AbortedError("lease lost or worker stopping while replaying");
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, client_.FetchLayer(task.job_id(), l));
    QF_RETURN_IF_ERROR(session->ApplyLayer(r));
    stats_.layers_replayed++;
  }
  return session;
}

bool Worker::AnnounceOffer(const proto::TaskAssignment& task) {
  if (!transport_ || task.spec().method() == "rtn" || task.end_layer() >= task.num_layers()) return false;
  auto r = CallHandoff(&client_, proto::HANDOFF_OFFER, task, worker_id_, task.end_layer(), device_key_,
                       transport_->name());
  if (!r.ok()) {
    QF_LOG(WARNING) << "job " << task.job_id() << " stage " << task.stage() << ": no hand-off offer: " << r.status();
    return false;
  }
  if (r->state() == proto::HANDOFF_CLOSED) {
    QF_LOG(INFO) << "job " << task.job_id() << " stage " << task.stage() << ": no hand-off of layer "
                 << task.end_layer() << ": " << r->reason();
    return false;
  }
  return true;
}

void Worker::MakeOffer(const proto::TaskAssignment& task, Session* session) {
  const std::string what = absl::StrCat("job ", task.job_id(), " stage ", task.stage(), ": offer of layer ",
                                        task.end_layer());
  OfferServer::Offer o;
  o.task = task;
  o.boundary = task.end_layer();
  o.device_key = device_key_;
  auto withdraw = [&](const absl::Status& why) {
    QF_LOG(WARNING) << what << ": withdrawn: " << why;
    CallHandoff(&client_, proto::HANDOFF_WITHDRAW, task, worker_id_, o.boundary, device_key_, transport_->name())
        .status()
        .IgnoreError();
  };
  absl::StatusOr<std::unique_ptr<BoundaryActivations>> acts = session->ForwardOriginalCopy(o.boundary);
  if (!acts.ok()) return withdraw(acts.status());
  absl::StatusOr<std::string> id = transport_->NewLinkId();
  if (!id.ok()) return withdraw(id.status());
  auto r = CallHandoff(&client_, proto::HANDOFF_OFFER, task, worker_id_, o.boundary, device_key_, transport_->name(),
                       *id);
  if (!r.ok()) return withdraw(r.status());
  if (r->state() == proto::HANDOFF_CLOSED) {
    QF_LOG(INFO) << what << ": closed: " << r->reason();
    return;
  }
  o.link_id = *id;
  o.acts = *std::move(acts);
  stats_.handoffs_offered++;
  QF_LOG(INFO) << what << ": " << o.acts->bytes() / (1 << 20) << " MiB ready for the next stage's worker";
  offers_->Serve(std::move(o));
}

bool Worker::ReceiveInput(const proto::TaskAssignment& task, Session* session, const std::atomic<bool>& lost) {
  const int b = task.first_layer();
  const std::string what = absl::StrCat("job ", task.job_id(), " stage ", task.stage());
  auto replay = [&](const std::string& why) {
    QF_LOG(INFO) << what << ": input at layer " << b << " by replay of layers 0.." << b - 1 << ": " << why;
    return false;
  };
  if (task.spec().method() == "rtn") return false;  // no activations at all
  if (!transport_) return replay(handoff_off_);
  auto report = [&](bool ok, const std::string& message) {
    proto::HandoffRequest req = MakeHandoffRequest(proto::HANDOFF_REPORT, task, worker_id_, b);
    req.set_ok(ok);
    req.set_message(message);
    client_.Handoff(req).status().IgnoreError();  // informational: an event of the job
  };
  while (true) {
    if (lost || stopping()) return replay("the lease was lost or the worker is stopping");
    auto r = CallHandoff(&client_, proto::HANDOFF_JOIN, task, worker_id_, b, device_key_, transport_->name());
    if (!r.ok()) {
      report(false, absl::StrCat("replay: ", r.status().message()));
      return replay(std::string(r.status().message()));
    }
    if (r->state() == proto::HANDOFF_WAIT) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::max(10, r->retry_after_ms())));
      continue;
    }
    if (r->state() != proto::HANDOFF_PAIRED) {
      report(false, absl::StrCat("replay: ", r->reason()));
      return replay(r->reason());
    }
    const auto start = std::chrono::steady_clock::now();
    absl::Status s;
    {
      auto link = transport_->Connect(r->link_id(), 1, r->timeout_ms());
      s = link.ok() ? session->ReceiveActivations(b, link->get()) : link.status();
    }
    const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) {
      const std::string why = absl::StrCat("the transfer from ", r->peer(), " failed: ", s.message());
      report(false, absl::StrCat("replay: ", why));
      QF_LOG(WARNING) << what << ": " << why;
      return replay(why);
    }
    stats_.handoffs_received++;
    const std::string msg = absl::StrCat("received from ", r->peer(), " over ", transport_->name(), " in ", ms, " ms");
    QF_LOG(INFO) << what << ": input at layer " << b << " " << msg;
    report(true, msg);
    return true;
  }
}

absl::Status Worker::Abandon(const std::string& what, std::string_view why) {
  QF_LOG(WARNING) << what << ": dropped: " << why;
  stats_.tasks_abandoned++;
  return absl::OkStatus();
}

absl::Status Worker::GiveBack(const proto::TaskAssignment& task, const std::string& what) {
  QF_LOG(WARNING) << what << ": worker stopping; giving the stage back";
  stats_.tasks_released++;
  absl::Status s = client_.Release(task, worker_id_, absl::StrCat("worker ", options_.name, " stopping"));
  if (!s.ok()) QF_LOG(WARNING) << what << ": Release: " << s << " (the lease expires instead)";
  return absl::OkStatus();
}

absl::Status Worker::FailTask(const proto::TaskAssignment& task, const std::string& what, const absl::Status& error,
                              std::optional<bool> permanent) {
  QF_LOG(ERROR) << what << ": " << error;
  stats_.tasks_failed++;
  absl::Status s = client_.Fail(task, worker_id_, error, permanent);
  if (!s.ok()) QF_LOG(WARNING) << what << ": reporting the failure: " << s;
  return absl::OkStatus();
}

absl::Status Worker::RunVerifyTask(const proto::TaskAssignment& task) {
  const std::string what = absl::StrCat("job ", task.job_id(), " verify stage (attempt ", task.attempt_id(), ")");
  const VerifyStageOptions o = VerifyStageOptionsOf(task.spec(), options_.device);
  QF_LOG(INFO) << what << ": " << o.artifact << " on " << o.device << (o.text.empty() ? "" : ", perplexity on ")
               << o.text;
  std::atomic<int> layer{task.end_layer()};
  Renewer renewer(&client_, task, worker_id_, renew_interval_ms_, &layer);
  for (int waited = 0; waited < options_.verify_delay_ms && !renewer.lost() && !stopping(); waited += 20)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  absl::StatusOr<VerifyReport> report = [&]() -> absl::StatusOr<VerifyReport> {
    QF_ASSIGN_OR_RETURN(VerifySpec spec, MakeVerifySpec(o));
    spec.stop = [&] { return renewer.lost() || stopping(); };
    if (spec.stop()) return absl::CancelledError("verify: not started");
    return engine_->Verify(spec, [&](const std::string& stage, int done, int total) {
      if (done == total) QF_LOG(INFO) << what << ": " << stage << " " << done << "/" << total;
    });
  }();
  if (renewer.lost()) return Abandon(what, "lease lost");
  if (absl::IsCancelled(report.status()) && stopping()) return GiveBack(task, what);
  if (!report.ok()) {
    const absl::Status& e = report.status();
    // The artifact disagrees with its manifest, or the engine refuses it: the
    // same everywhere. Anything else (a worker that does not see out_dir) may
    // pass on another worker.
    const bool permanent = absl::IsDataLoss(e) || absl::IsInvalidArgument(e) || absl::IsUnimplemented(e);
    return FailTask(task, what, absl::Status(e.code(), absl::StrCat("verify: ", e.message())), permanent);
  }
  absl::StatusOr<proto::CompleteReply> done = client_.Complete(task, worker_id_, VerifyReportJson(*report).dump(2));
  if (!done.ok()) {
    if (LeaseLost(done.status()) || absl::IsUnavailable(done.status())) return Abandon(what, std::string(done.status().message()));
    return FailTask(task, what, done.status());
  }
  stats_.verifies_completed++;
  QF_LOG(INFO) << what << ": " << report->verdict << (report->failure.empty() ? "" : ": ") << report->failure;
  return absl::OkStatus();
}

absl::Status Worker::RunTask(const proto::TaskAssignment& task) {
  if (task.verify()) return RunVerifyTask(task);
  const std::string what = absl::StrCat("job ", task.job_id(), " stage ", task.stage(), " (attempt ",
                                        task.attempt_id(), ")");
  QF_LOG(INFO) << what << ": layers " << task.start_layer() << ".." << task.end_layer() - 1;
  std::atomic<int> layer{task.start_layer()};
  Renewer renewer(&client_, task, worker_id_, renew_interval_ms_, &layer);
  auto abandon = [&](std::string_view why) { return Abandon(what, why); };
  auto fail = [&](const absl::Status& error) { return FailTask(task, what, error); };

  absl::StatusOr<std::unique_ptr<Session>> session = PrepareSession(task, renewer.lost());
  if (!session.ok()) {
    if (renewer.lost()) return abandon(std::string(session.status().message()));
    if (stopping()) return GiveBack(task, what);
    if (absl::IsAborted(session.status())) return abandon(std::string(session.status().message()));
    return fail(session.status());
  }
  for (int l = task.start_layer(); l < task.end_layer(); ++l) {
    if (renewer.lost()) return abandon("lease lost");
    if (stopping()) return GiveBack(task, what);
    layer = l;
    if (options_.layer_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.layer_delay_ms));
    absl::StatusOr<kernels::LayerResult> r = (*session)->QuantizeLayer(l, nullptr);
    if (!r.ok()) return fail(r.status());
    if (l == options_.stall_after_layer) {
      options_.stall_after_layer = -1;  // once
      renewer.Pause();
      QF_LOG(WARNING) << what << ": test hook: stalling " << options_.stall_ms << " ms before sending layer " << l;
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.stall_ms));
    }
    absl::StatusOr<proto::PutLayerReply> put = client_.PutLayer(task, *r);
    if (!put.ok()) {
      if (LeaseLost(put.status())) return abandon(absl::StrCat("layer ", l, " refused: ", put.status().message()));
      if (absl::IsUnavailable(put.status())) return abandon(std::string(put.status().message()));
      return fail(put.status());
    }
    stats_.layers_committed++;
  }
  absl::StatusOr<proto::CompleteReply> done = client_.Complete(task, worker_id_);
  if (!done.ok()) {
    if (LeaseLost(done.status()) || absl::IsUnavailable(done.status()))
      return abandon(std::string(done.status().message()));
    return fail(done.status());
  }
  stats_.tasks_completed++;
  if (task.spec().mode() != proto::MODE_PARALLEL && task.end_layer() < task.num_layers()) {
    held_ = std::make_unique<Held>();  // keep the activations for the next stage (affinity)
    held_->job_id = task.job_id();
    held_->spec = task.spec().SerializeAsString();
    held_->session = *std::move(session);
  }
  QF_LOG(INFO) << what << ": done" << (done->job_done() ? "; every layer of the job is committed" : "");
  return absl::OkStatus();
}

}  // namespace qf::worker
