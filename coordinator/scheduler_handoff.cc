// The activation hand-off rendezvous of parallel mode (proto/work.proto,
// HandoffOp): pairs the worker that offers the FP16 activations at a stage
// boundary with the worker that leased the stage starting there, and relays
// the sender's opaque link id (an NCCL unique id). Nothing here is durable
// except the REPORT's event: see HandoffOffer in scheduler.h.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/scheduler_internal.h"

namespace qf::coordinator {
namespace {

int ClampMs(int64_t ms) { return static_cast<int>(std::clamp<int64_t>(ms, 0, 1 << 30)); }

proto::HandoffReply Closed(const std::string& reason) {
  proto::HandoffReply r;
  r.set_state(proto::HANDOFF_CLOSED);
  r.set_reason(reason);
  return r;
}

}  // namespace

absl::StatusOr<proto::HandoffReply> Scheduler::Handoff(const proto::HandoffRequest& request) {
  const proto::HandoffOp op = request.op();
  const int b = request.boundary_layer();
  if (op < proto::HANDOFF_OFFER || op > proto::HANDOFF_REPORT)
    return absl::InvalidArgumentError(absl::StrCat("HandoffRequest.op: ", static_cast<int>(op), " is not an operation"));
  const bool needs_key = op == proto::HANDOFF_OFFER || op == proto::HANDOFF_JOIN;
  if (needs_key && request.device_key().empty())
    return absl::InvalidArgumentError("HandoffRequest.device_key: empty (a worker that cannot hand off does not ask)");
  if (op == proto::HANDOFF_OFFER && request.link_id().size() > 4096)
    return absl::InvalidArgumentError(absl::StrCat("HandoffRequest.link_id: ", request.link_id().size(),
                                                   " bytes, expected at most 4096"));

  std::unique_lock<std::mutex> lock(mu_);
  Txn txn;
  txn.now = clock_->NowMs();
  Job* job = FindJob(request.job_id());
  if (job == nullptr) return NoSuchJob(request.job_id());
  if (job->rec.spec().mode() != proto::MODE_PARALLEL)
    return absl::FailedPreconditionError(absl::StrCat("job ", request.job_id(), ": sequential; no hand-off"));
  // The receiving stage: the one whose first layer is the boundary.
  int r = -1;
  for (const proto::TaskRecord& t : job->tasks) {
    if (t.first_layer() == b && t.stage() > 0 && !t.verify()) r = t.stage();
  }
  if (r < 0)
    return absl::InvalidArgumentError(absl::StrCat("HandoffRequest.boundary_layer: ", b,
                                                   " is not the first layer of a stage > 0 of job ", request.job_id()));
  const auto key = std::make_pair(request.job_id(), b);
  auto learn_key = [&](const std::string& worker) {
    auto w = workers_.find(worker);
    if (w == workers_.end()) return;
    w->second.device_key = request.device_key();
    w->second.device_key_known = true;
    w->second.last_seen_ms = txn.now;
  };
  // The live lease of `attempt` on `stage`, or why not.
  auto lease_on = [&](int stage) -> absl::Status {
    auto live = LiveLease(request.attempt_id(), request.worker_id(), txn);
    if (!live.ok()) return live.status();
    if (live->first != job || live->second->stage() != stage)
      return absl::InvalidArgumentError(absl::StrCat("HandoffRequest: attempt ", request.attempt_id(),
                                                     " does not hold stage ", stage, " of job ", request.job_id()));
    return absl::OkStatus();
  };
  // Every answer goes through here: LiveLease may have expired leases into txn.
  auto finish = [&](absl::StatusOr<proto::HandoffReply> reply) -> absl::StatusOr<proto::HandoffReply> {
    QF_RETURN_IF_ERROR(Finish(txn, lock));
    return reply;
  };
  const bool running = job->rec.state() == proto::JOB_RUNNING;
  const std::string not_running = absl::StrCat("job is ", proto::JobState_Name(job->rec.state()));

  switch (op) {
    case proto::HANDOFF_OFFER: {
      auto it = offers_.find(key);
      if (it != offers_.end() && it->second.attempt_id == request.attempt_id()) {
        HandoffOffer& o = it->second;  // the same sender again: announce retried, or the activations are ready
        if (!o.declined.empty()) return finish(Closed(o.declined));
        if (!request.link_id().empty() && o.link_id.empty()) {
          o.link_id = request.link_id();
          o.transport = request.transport();
        }
        learn_key(o.worker);
        proto::HandoffReply reply;
        reply.set_state(proto::HANDOFF_WAIT);
        reply.set_retry_after_ms(options_.handoff_poll_ms);
        return finish(reply);
      }
      if (absl::Status s = lease_on(r - 1); !s.ok()) return finish(s);
      learn_key(request.worker_id());
      if (!running) return finish(Closed(not_running));
      if (job->tasks[r].state() == proto::TASK_DONE) return finish(Closed(absl::StrCat("stage ", r, " is done")));
      if (it != offers_.end() && it->second.declined.empty() && !it->second.link_id.empty() &&
          it->second.receiver_attempt == 0 && WorkerAlive(it->second.worker)) {
        // The same bits are on offer already (the activations do not depend on the attempt).
        return finish(Closed(absl::StrCat("worker ", it->second.worker, " (attempt ", it->second.attempt_id,
                                          ") offers the activations at layer ", b, " already")));
      }
      HandoffOffer o;
      o.attempt_id = request.attempt_id();
      o.worker = request.worker_id();
      o.device_key = request.device_key();
      o.transport = request.transport();
      o.link_id = request.link_id();
      o.created_ms = txn.now;
      // Someone must be able to take them: another live worker on another device.
      int others = 0, same_device = 0;
      for (const auto& [name, w] : workers_) {
        if (name == request.worker_id() || w.last_seen_ms + options_.lease_ttl_ms <= txn.now) continue;
        if (w.device_key_known && w.device_key.empty()) continue;  // a CPU worker or one without NCCL
        ++others;
        if (w.device_key == request.device_key()) ++same_device;
      }
      if (others == 0) {
        o.declined = "no other live worker that can receive (a GPU with NCCL)";
      } else if (others == same_device) {
        o.declined = absl::StrCat("every other live worker is on the same device (", request.device_key(), ")");
      }
      const std::string declined = o.declined;
      offers_[key] = std::move(o);  // supersedes an older attempt's offer
      if (!declined.empty()) return finish(Closed(declined));
      proto::HandoffReply reply;
      reply.set_state(proto::HANDOFF_WAIT);
      reply.set_retry_after_ms(options_.handoff_poll_ms);
      return finish(reply);
    }

    case proto::HANDOFF_POLL:
    case proto::HANDOFF_WITHDRAW: {
      auto it = offers_.find(key);
      if (it == offers_.end()) return finish(Closed("no offer (withdrawn, taken or dropped)"));
      HandoffOffer& o = it->second;
      if (o.attempt_id != request.attempt_id())
        return finish(absl::AbortedError(absl::StrCat("offer of layer ", b, " of job ", request.job_id(), " belongs to attempt ",
                                               o.attempt_id, ", not ", request.attempt_id())));
      if (op == proto::HANDOFF_WITHDRAW) {
        offers_.erase(it);
        return finish(Closed("withdrawn"));
      }
      if (!o.declined.empty()) {
        std::string why = o.declined;
        return finish(Closed(why));
      }
      if (auto w = workers_.find(o.worker); w != workers_.end()) w->second.last_seen_ms = txn.now;
      if (o.receiver_attempt != 0) {
        proto::HandoffReply reply;
        reply.set_state(proto::HANDOFF_PAIRED);
        reply.set_rank(0);
        reply.set_peer(o.receiver);
        reply.set_timeout_ms(ClampMs(o.pair_deadline_ms - txn.now));
        offers_.erase(it);  // one transfer per offer
        if (reply.timeout_ms() <= 0) return finish(Closed("the pairing expired before the sender asked"));
        return finish(reply);
      }
      std::string why;
      if (!running) {
        why = not_running;
      } else if (job->tasks[r].state() == proto::TASK_DONE) {
        why = absl::StrCat("stage ", r, " is done");
      } else if (txn.now - o.created_ms > options_.handoff_offer_ttl_ms) {
        why = absl::StrCat("nobody took the offer within ", options_.handoff_offer_ttl_ms, " ms");
      }
      if (!why.empty()) {
        offers_.erase(it);
        return finish(Closed(why));
      }
      proto::HandoffReply reply;
      reply.set_state(proto::HANDOFF_WAIT);
      reply.set_retry_after_ms(options_.handoff_poll_ms);
      return finish(reply);
    }

    case proto::HANDOFF_JOIN: {
      if (absl::Status s = lease_on(r); !s.ok()) return finish(s);
      learn_key(request.worker_id());
      auto it = offers_.find(key);
      if (it != offers_.end() && it->second.receiver_attempt != 0) {
        const HandoffOffer& o = it->second;
        if (o.receiver_attempt != request.attempt_id())
          return finish(Closed(absl::StrCat("the offer was taken by attempt ", o.receiver_attempt)));
        proto::HandoffReply reply;  // a retried JOIN: the same pairing
        reply.set_state(proto::HANDOFF_PAIRED);
        reply.set_rank(1);
        reply.set_link_id(o.link_id);
        reply.set_peer(o.worker);
        reply.set_timeout_ms(ClampMs(o.pair_deadline_ms - txn.now));
        if (reply.timeout_ms() <= 0) return finish(Closed("the pairing expired"));
        return finish(reply);
      }
      if (!running) return finish(Closed(not_running));
      HandoffJoin& j = joins_[key];
      if (j.attempt_id != request.attempt_id()) j = HandoffJoin{request.attempt_id(), txn.now};
      const int64_t wait_left = j.since_ms + options_.handoff_wait_ms - txn.now;
      auto close = [&](const std::string& why) {
        joins_.erase(key);
        return finish(Closed(why));
      };
      auto wait = [&]() {
        proto::HandoffReply reply;
        reply.set_state(proto::HANDOFF_WAIT);
        reply.set_retry_after_ms(options_.handoff_poll_ms);
        reply.set_timeout_ms(ClampMs(wait_left));
        return finish(reply);
      };
      if (it != offers_.end()) {
        HandoffOffer& o = it->second;
        if (!o.declined.empty()) return close(absl::StrCat("worker ", o.worker, " offers nothing: ", o.declined));
        if (o.device_key == request.device_key())
          return close(absl::StrCat("the sender ", o.worker, " is on the same device (", o.device_key, ")"));
        if (o.transport != request.transport())
          return close(absl::StrCat("the sender ", o.worker, " uses transport '", o.transport, "', this worker '",
                                    request.transport(), "'"));
        if (!o.link_id.empty()) {
          o.receiver_attempt = request.attempt_id();
          o.receiver = request.worker_id();
          o.pair_deadline_ms = txn.now + options_.handoff_transfer_ms;
          joins_.erase(key);
          proto::HandoffReply reply;
          reply.set_state(proto::HANDOFF_PAIRED);
          reply.set_rank(1);
          reply.set_link_id(o.link_id);
          reply.set_peer(o.worker);
          reply.set_timeout_ms(options_.handoff_transfer_ms);
          return finish(reply);
        }
        if (!WorkerAlive(o.worker)) return close(absl::StrCat("the sender ", o.worker, " is gone"));
        if (wait_left <= 0) return close(absl::StrCat("no peer within the rendezvous deadline (", options_.handoff_wait_ms, " ms)"));
        return wait();  // announced, computing
      }
      // Nothing announced yet: worth waiting only while a worker that can send holds stage r-1.
      const proto::TaskRecord& pred = job->tasks[r - 1];
      if (pred.state() != proto::TASK_LEASED)
        return close(absl::StrCat("stage ", r - 1, " is ", proto::TaskState_Name(pred.state()), " and offers nothing"));
      if (pred.worker() == request.worker_id()) return close(absl::StrCat("stage ", r - 1, " is this worker's"));
      if (!WorkerAlive(pred.worker())) return close(absl::StrCat("the worker of stage ", r - 1, " is gone"));
      auto pw = workers_.find(pred.worker());
      if (pw != workers_.end() && pw->second.device_key_known) {
        if (pw->second.device_key.empty())
          return close(absl::StrCat("the worker of stage ", r - 1, " (", pred.worker(), ") cannot hand off"));
        if (pw->second.device_key == request.device_key())
          return close(absl::StrCat("the worker of stage ", r - 1, " (", pred.worker(), ") is on the same device (",
                                    request.device_key(), ")"));
      }
      if (wait_left <= 0) return close(absl::StrCat("no peer within the rendezvous deadline (", options_.handoff_wait_ms, " ms)"));
      return wait();
    }

    case proto::HANDOFF_REPORT: {
      if (absl::Status s = lease_on(r); !s.ok()) return finish(s);
      joins_.erase(key);
      AddEvent(txn, *job, proto::EVENT_HANDOFF, r, b, request.worker_id(),
               request.message().empty() ? (request.ok() ? "received" : "replay") : request.message());
      return finish(proto::HandoffReply());
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("HandoffRequest.op: unknown");
}

}  // namespace qf::coordinator
