#include <deque>
#include <mutex>

#include "coordinator/grpc_util.h"
#include "coordinator/services.h"

namespace qf::coordinator {
namespace {

bool IsTerminalEvent(proto::EventKind k) {
  return k == proto::EVENT_SUCCEEDED || k == proto::EVENT_FAILED || k == proto::EVENT_CANCELLED;
}

// Streams a job's events (history after `after_seq`, then live ones) with the
// job's status after each; ends after a terminal event while the job is in a
// terminal state. Woken by the scheduler after each durable batch of the job.
//
// The state lives in a shared Core so that a scheduler wake-up racing with the
// end of the stream never touches a deleted reactor. StartWrite/Finish are
// called outside Core::mu, because Finish may run OnDone inline.
class WatchReactor final : public grpc::ServerWriteReactor<proto::WatchUpdate> {
 public:
  WatchReactor(Scheduler* scheduler, const proto::WatchRequest& request) : core_(std::make_shared<Core>()) {
    core_->scheduler = scheduler;
    core_->reactor = this;
    core_->job_id = request.job_id();
    core_->last_seq = request.after_seq();
    auto status = scheduler->GetJob(core_->job_id);
    if (!status.ok()) {
      core_->finished = true;
      Finish(ToGrpcStatus(status.status()));
      return;
    }
    if (core_->last_seq > 0) {  // resuming mid-history: learn whether the last seen event ended the job
      auto prev = scheduler->Events(core_->job_id, core_->last_seq - 1, 1);
      if (prev.ok() && !prev->empty()) core_->last_kind = prev->front().kind();
    }
    std::weak_ptr<Core> weak = core_;
    sub_ = scheduler->Subscribe(core_->job_id, [weak] {
      if (auto core = weak.lock()) Pump(core);
    });
    Pump(core_);
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> l(core_->mu);
      core_->writing = false;
      if (ok) core_->writes++;
    }
    if (!ok) {
      EndStream(core_, grpc::Status(grpc::StatusCode::CANCELLED, "watch stream broken"));
      return;
    }
    Pump(core_);
  }

  void OnCancel() override { EndStream(core_, grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled")); }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> l(core_->mu);
      core_->reactor = nullptr;
    }
    if (sub_ != 0) core_->scheduler->Unsubscribe(sub_);
    delete this;
  }

 private:
  struct Core {
    Scheduler* scheduler = nullptr;
    std::mutex mu;
    WatchReactor* reactor = nullptr;    // null once OnDone ran
    std::string job_id;
    uint64_t last_seq = 0;
    proto::EventKind last_kind = proto::EVENT_KIND_UNSPECIFIED;
    std::deque<proto::WatchUpdate> queue;
    proto::WatchUpdate current;         // the message being written
    bool writing = false;
    bool finished = false;
    uint64_t writes = 0;
  };

  // Ends the stream unless a write is in flight (OnWriteDone then ends it).
  static void EndStream(const std::shared_ptr<Core>& core, const grpc::Status& status) {
    WatchReactor* r = nullptr;
    {
      std::lock_guard<std::mutex> l(core->mu);
      if (core->finished || core->reactor == nullptr) return;
      if (core->writing) {
        core->queue.clear();
        return;
      }
      core->finished = true;
      r = core->reactor;
    }
    r->Finish(status);
  }

  static void Pump(const std::shared_ptr<Core>& core) {
    WatchReactor* r = nullptr;
    bool finish = false;
    grpc::Status finish_status;
    {
      std::lock_guard<std::mutex> l(core->mu);
      if (core->writing || core->finished || core->reactor == nullptr) return;
      r = core->reactor;
      if (core->queue.empty()) {
        // A failed store records nothing more: this job will never end, so
        // the watcher hears why now (the scheduler wakes every watcher then).
        // Status first: the events read after it are at least as new as it.
        absl::Status health = core->scheduler->StoreHealth();
        auto status = health.ok() ? core->scheduler->GetJob(core->job_id) : absl::StatusOr<proto::JobStatus>(health);
        auto events = status.ok() ? core->scheduler->Events(core->job_id, core->last_seq, 256)
                                  : absl::StatusOr<std::vector<proto::JobEvent>>(status.status());
        if (!events.ok()) {
          finish = true;
          finish_status = ToGrpcStatus(events.status());
        } else {
          for (proto::JobEvent& e : *events) {
            proto::WatchUpdate u;
            *u.mutable_event() = std::move(e);
            *u.mutable_status() = *status;
            core->queue.push_back(std::move(u));
          }
          if (core->queue.empty()) {
            if (!IsTerminal(status->state()) || !IsTerminalEvent(core->last_kind)) return;  // wait for a wake-up
            finish = true;
            finish_status = grpc::Status::OK;
          }
        }
      }
      if (finish) {
        core->finished = true;
      } else {
        core->current = std::move(core->queue.front());
        core->queue.pop_front();
        core->last_seq = core->current.event().seq();
        core->last_kind = core->current.event().kind();
        core->writing = true;
      }
    }
    if (finish) {
      r->Finish(finish_status);
    } else {
      r->StartWrite(&core->current);
    }
  }

  std::shared_ptr<Core> core_;
  uint64_t sub_ = 0;
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::Submit(grpc::CallbackServerContext* ctx,
                                                 const proto::SubmitRequest* request, proto::SubmitReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Submit(*request); });
}

grpc::ServerUnaryReactor* JobServiceImpl::Get(grpc::CallbackServerContext* ctx, const proto::GetRequest* request,
                                              proto::JobStatus* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->GetJob(request->job_id()); });
}

grpc::ServerUnaryReactor* JobServiceImpl::List(grpc::CallbackServerContext* ctx, const proto::ListRequest* request,
                                               proto::ListReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this]() -> absl::StatusOr<proto::ListReply> {
    proto::ListReply r;
    for (proto::JobStatus& s : scheduler_->ListJobs(*request)) *r.add_jobs() = std::move(s);
    return r;
  });
}

grpc::ServerWriteReactor<proto::WatchUpdate>* JobServiceImpl::Watch(grpc::CallbackServerContext* ctx,
                                                                    const proto::WatchRequest* request) {
  return new WatchReactor(scheduler_, *request);
}

grpc::ServerUnaryReactor* JobServiceImpl::Cancel(grpc::CallbackServerContext* ctx,
                                                 const proto::CancelRequest* request, proto::JobStatus* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Cancel(request->job_id(), request->reason()); });
}

grpc::ServerUnaryReactor* JobServiceImpl::Resume(grpc::CallbackServerContext* ctx,
                                                 const proto::ResumeRequest* request, proto::JobStatus* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Resume(request->job_id()); });
}

grpc::ServerUnaryReactor* JobServiceImpl::Logs(grpc::CallbackServerContext* ctx, const proto::LogsRequest* request,
                                               proto::LogsReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this]() -> absl::StatusOr<proto::LogsReply> {
    auto events = scheduler_->Events(request->job_id(), request->after_seq(), request->limit());
    if (!events.ok()) return events.status();
    proto::LogsReply r;
    for (proto::JobEvent& e : *events) *r.add_events() = std::move(e);
    return r;
  });
}

}  // namespace qf::coordinator
