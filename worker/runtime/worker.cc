#include "worker/runtime/worker.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "worker/calibration.h"
#include "storage/synthetic_model.h"
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
}

Worker::~Worker() = default;

absl::Status Worker::EnsureRegistered() {
  if (!worker_id_.empty()) return absl::OkStatus();
  QF_ASSIGN_OR_RETURN(proto::RegisterReply reg, client_.Register(options_.name, options_.device, incarnation_));
  worker_id_ = reg.worker_id();
  renew_interval_ms_ = std::max(20, reg.renew_interval_ms());
  QF_LOG(INFO) << "worker " << worker_id_ << " registered (incarnation " << incarnation_ << ", lease ttl "
               << reg.lease_ttl_ms() << " ms)";
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
  QF_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, engine_->OpenSession(ss));
  const int replay_from = sequential ? 0 : task.first_layer();
  for (int l = 0; l < replay_from; ++l) {
    if (lost) return absl::AbortedError("lease lost while replaying");
    QF_RETURN_IF_ERROR(session->ForwardOriginalLayer(l));
    stats_.layers_replayed++;
  }
  for (int l = replay_from; l < task.start_layer(); ++l) {
    if (lost) return absl::AbortedError("lease lost while replaying");
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, client_.FetchLayer(task.job_id(), l));
    QF_RETURN_IF_ERROR(session->ApplyLayer(r));
    stats_.layers_replayed++;
  }
  return session;
}

absl::Status Worker::RunTask(const proto::TaskAssignment& task) {
  const std::string what = absl::StrCat("job ", task.job_id(), " stage ", task.stage(), " (attempt ",
                                        task.attempt_id(), ")");
  QF_LOG(INFO) << what << ": layers " << task.start_layer() << ".." << task.end_layer() - 1;
  std::atomic<int> layer{task.start_layer()};
  Renewer renewer(&client_, task, worker_id_, renew_interval_ms_, &layer);
  auto abandon = [&](const std::string& why) {
    QF_LOG(WARNING) << what << ": dropped: " << why;
    stats_.tasks_abandoned++;
    return absl::OkStatus();
  };
  auto fail = [&](const absl::Status& error) {
    QF_LOG(ERROR) << what << ": " << error;
    stats_.tasks_failed++;
    absl::Status s = client_.Fail(task, worker_id_, error);
    if (!s.ok()) QF_LOG(WARNING) << what << ": reporting the failure: " << s;
    return absl::OkStatus();
  };

  absl::StatusOr<std::unique_ptr<Session>> session = PrepareSession(task, renewer.lost());
  if (!session.ok()) {
    if (renewer.lost() || absl::IsAborted(session.status())) return abandon(std::string(session.status().message()));
    return fail(session.status());
  }
  for (int l = task.start_layer(); l < task.end_layer(); ++l) {
    if (renewer.lost()) return abandon("lease lost");
    if (stop_ != nullptr && stop_->load()) return abandon("worker stopping");
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
