#include "worker/runtime/handoff.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace qf::worker {
namespace {

class NcclTransport final : public HandoffTransport {
 public:
  NcclTransport(Engine* engine, std::string device) : engine_(engine), device_(std::move(device)) {}
  std::string name() const override { return "nccl"; }
  absl::StatusOr<std::string> DeviceKey() override {
    QF_ASSIGN_OR_RETURN(std::string key, engine_->DeviceKey(device_));
    // The engine must also be able to start NCCL: ask for an id once (this
    // loads libnccl; the id itself is thrown away).
    QF_RETURN_IF_ERROR(engine_->NcclUniqueId().status());
    return key;
  }
  absl::StatusOr<std::string> NewLinkId() override { return engine_->NcclUniqueId(); }
  absl::StatusOr<std::unique_ptr<ActivationLink>> Connect(const std::string& link_id, int rank,
                                                          int timeout_ms) override {
    NcclLinkSpec spec;
    spec.unique_id = link_id;
    spec.rank = rank;
    spec.device = device_;
    spec.timeout_ms = timeout_ms;
    return engine_->ConnectNccl(spec);
  }

 private:
  Engine* engine_;
  std::string device_;
};

class LoopbackTransport final : public HandoffTransport {
 public:
  LoopbackTransport(std::string key, LoopbackFaults faults) : key_(std::move(key)), faults_(faults) {}
  std::string name() const override { return "loopback"; }
  absl::StatusOr<std::string> DeviceKey() override { return key_; }
  absl::StatusOr<std::string> NewLinkId() override { return NewLoopbackId(); }
  absl::StatusOr<std::unique_ptr<ActivationLink>> Connect(const std::string& link_id, int rank,
                                                          int timeout_ms) override {
    return ConnectLoopback(link_id, rank, timeout_ms, rank == 0 ? faults_ : LoopbackFaults{});
  }

 private:
  std::string key_;
  LoopbackFaults faults_;
};

}  // namespace

std::unique_ptr<HandoffTransport> MakeNcclTransport(Engine* engine, const std::string& device) {
  return std::make_unique<NcclTransport>(engine, device);
}

std::unique_ptr<HandoffTransport> MakeLoopbackTransport(const std::string& device_key, LoopbackFaults faults) {
  return std::make_unique<LoopbackTransport>(device_key, faults);
}

proto::HandoffRequest MakeHandoffRequest(proto::HandoffOp op, const proto::TaskAssignment& task,
                                         const std::string& worker_id, int boundary) {
  proto::HandoffRequest req;
  req.set_op(op);
  req.set_job_id(task.job_id());
  req.set_attempt_id(task.attempt_id());
  req.set_worker_id(worker_id);
  req.set_boundary_layer(boundary);
  return req;
}

absl::StatusOr<proto::HandoffReply> CallHandoff(WorkClient* client, proto::HandoffOp op,
                                                const proto::TaskAssignment& task, const std::string& worker_id,
                                                int boundary, const std::string& device_key,
                                                const std::string& transport, const std::string& link_id) {
  proto::HandoffRequest req = MakeHandoffRequest(op, task, worker_id, boundary);
  req.set_device_key(device_key);
  req.set_transport(transport);
  req.set_link_id(link_id);
  return client->Handoff(req);
}

OfferServer::OfferServer(WorkClient* client, HandoffTransport* transport, std::string worker_id)
    : client_(client), transport_(transport), worker_id_(std::move(worker_id)), thread_([this] { Loop(); }) {}

OfferServer::~OfferServer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OfferServer::Serve(Offer offer) {
  {
    std::lock_guard<std::mutex> l(mu_);
    next_ = std::make_unique<Offer>(std::move(offer));
  }
  cv_.notify_all();
}

void OfferServer::Withdraw(Offer& o) {
  auto r = CallHandoff(client_, proto::HANDOFF_WITHDRAW, o.task, worker_id_, o.boundary, o.device_key,
                       transport_->name());
  if (!r.ok()) QF_LOG(DEBUG) << "withdrawing the offer of layer " << o.boundary << ": " << r.status();
}

void OfferServer::Loop() {
  std::unique_ptr<Offer> cur;
  int retry_ms = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait_for(lock, std::chrono::milliseconds(retry_ms), [&] { return stop_ || next_ != nullptr || (cur && retry_ms == 0); });
    if (stop_ || next_ != nullptr) {
      std::unique_ptr<Offer> next = std::move(next_);
      const bool stopping = stop_;
      lock.unlock();
      if (cur) Withdraw(*cur);  // a newer offer, or shutting down: the older one goes
      cur = std::move(next);
      if (stopping) {
        if (cur) Withdraw(*cur);
        return;
      }
      lock.lock();
      retry_ms = 0;
      continue;
    }
    if (!cur) {
      retry_ms = 1 << 20;  // idle until Serve or stop
      continue;
    }
    lock.unlock();
    const std::string what = absl::StrCat("job ", cur->task.job_id(), ": activations at layer ", cur->boundary);
    auto r = CallHandoff(client_, proto::HANDOFF_POLL, cur->task, worker_id_, cur->boundary, cur->device_key,
                         transport_->name());
    retry_ms = 0;
    if (!r.ok()) {
      if (absl::IsAborted(r.status()) || absl::IsNotFound(r.status()) || absl::IsInvalidArgument(r.status()) ||
          absl::IsFailedPrecondition(r.status())) {
        QF_LOG(INFO) << what << ": offer dropped: " << r.status().message();
        cur.reset();
      } else {
        retry_ms = 1000;  // the coordinator is unreachable: the offer may still be good
      }
    } else if (r->state() == proto::HANDOFF_WAIT) {
      retry_ms = std::max(10, r->retry_after_ms());
    } else if (r->state() == proto::HANDOFF_CLOSED) {
      QF_LOG(INFO) << what << ": offer closed: " << r->reason();
      cur.reset();
    } else if (r->state() == proto::HANDOFF_PAIRED) {
      const auto start = std::chrono::steady_clock::now();
      absl::Status s;
      auto link = transport_->Connect(cur->link_id, 0, r->timeout_ms());
      if (!link.ok()) {
        s = link.status();
      } else {
        s = cur->acts->Send(link->get());
      }
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (s.ok()) {
        sent_++;
        QF_LOG(INFO) << what << " sent to " << r->peer() << " over " << transport_->name() << ": "
                     << cur->acts->bytes() / (1 << 20) << " MiB in " << static_cast<int64_t>(ms) << " ms";
      } else {
        QF_LOG(WARNING) << what << ": sending to " << r->peer() << " failed (it replays): " << s;
      }
      cur.reset();  // one transfer per offer; the link (torn down above) is gone with the scope
    }
    lock.lock();
  }
}

}  // namespace qf::worker
