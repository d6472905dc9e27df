#include "worker/engine/loopback_link.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace qf::worker {
namespace {

using Clock = std::chrono::steady_clock;

struct Pipe {
  std::mutex mu;
  std::condition_variable cv;
  int joined = 0;
  std::string buffer;      // sent, not yet received
  bool sender_gone = false;
  bool receiver_gone = false;
  std::string failure;     // set by a failing sender
};

std::mutex registry_mu;
std::map<std::string, std::weak_ptr<Pipe>>& Registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<Pipe>>();
  return *r;
}

class LoopbackLink final : public ActivationLink {
 public:
  LoopbackLink(std::shared_ptr<Pipe> pipe, int rank, Clock::time_point deadline, LoopbackFaults faults)
      : pipe_(std::move(pipe)), rank_(rank), deadline_(deadline), faults_(faults) {}
  ~LoopbackLink() override {
    std::lock_guard<std::mutex> l(pipe_->mu);
    (rank_ == 0 ? pipe_->sender_gone : pipe_->receiver_gone) = true;
    pipe_->cv.notify_all();
  }
  std::string kind() const override { return "loopback"; }
  bool device_memory() const override { return false; }

  absl::Status Send(const void* data, size_t bytes, const std::string& device) override {
    if (rank_ != 0) return absl::FailedPreconditionError("loopback: rank 1 receives only");
    if (device != "cpu") return absl::InvalidArgumentError(absl::StrCat("loopback: host memory only, got ", device));
    std::lock_guard<std::mutex> l(pipe_->mu);
    if (pipe_->receiver_gone) return absl::UnavailableError("loopback: the receiver is gone");
    size_t n = bytes;
    const bool fail = faults_.fail_after_bytes >= 0 && sent_ + static_cast<int64_t>(bytes) > faults_.fail_after_bytes;
    if (fail) n = static_cast<size_t>(std::max<int64_t>(0, faults_.fail_after_bytes - sent_));
    pipe_->buffer.append(static_cast<const char*>(data), n);
    sent_ += static_cast<int64_t>(n);
    if (fail) pipe_->failure = absl::StrCat("the sender failed after ", sent_, " bytes (injected fault)");
    pipe_->cv.notify_all();
    if (fail) return absl::AbortedError(absl::StrCat("loopback: ", pipe_->failure));
    return absl::OkStatus();
  }

  absl::Status Recv(void* data, size_t bytes, const std::string& device) override {
    if (rank_ != 1) return absl::FailedPreconditionError("loopback: rank 0 sends only");
    if (device != "cpu") return absl::InvalidArgumentError(absl::StrCat("loopback: host memory only, got ", device));
    std::unique_lock<std::mutex> l(pipe_->mu);
    bool ready = pipe_->cv.wait_until(l, deadline_, [&] {
      return pipe_->buffer.size() >= bytes || !pipe_->failure.empty() || pipe_->sender_gone;
    });
    if (pipe_->buffer.size() >= bytes) {
      std::memcpy(data, pipe_->buffer.data(), bytes);
      pipe_->buffer.erase(0, bytes);
      return absl::OkStatus();
    }
    if (!ready) return absl::DeadlineExceededError(absl::StrCat("loopback: ", bytes, " bytes did not arrive in time"));
    if (!pipe_->failure.empty()) return absl::UnavailableError(absl::StrCat("loopback: ", pipe_->failure));
    return absl::UnavailableError("loopback: the sender closed the link mid-transfer");
  }

 private:
  std::shared_ptr<Pipe> pipe_;
  int rank_;
  Clock::time_point deadline_;
  LoopbackFaults faults_;
  int64_t sent_ = 0;
};

}  // namespace

std::string NewLoopbackId() {
  static std::atomic<uint64_t> next{1};
  return absl::StrCat("loopback-", next.fetch_add(1));
}

absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectLoopback(const std::string& id, int rank, int timeout_ms,
                                                                LoopbackFaults faults) {
  if (rank != 0 && rank != 1) return absl::InvalidArgumentError(absl::StrCat("loopback: rank ", rank, ", expected 0 or 1"));
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::shared_ptr<Pipe> pipe;
  {
    std::lock_guard<std::mutex> l(registry_mu);
    std::weak_ptr<Pipe>& slot = Registry()[id];
    pipe = slot.lock();
    if (!pipe) {
      pipe = std::make_shared<Pipe>();
      slot = pipe;
    }
  }
  std::unique_lock<std::mutex> l(pipe->mu);
  ++pipe->joined;
  pipe->cv.notify_all();
  bool both = pipe->cv.wait_until(l, deadline, [&] { return pipe->joined >= 2; });
  l.unlock();
  if (!both) {
    std::lock_guard<std::mutex> rl(registry_mu);
    Registry().erase(id);
    return absl::DeadlineExceededError(absl::StrCat("loopback ", id, ": rank ", 1 - rank, " did not join within ",
                                                    timeout_ms, " ms"));
  }
  {
    std::lock_guard<std::mutex> rl(registry_mu);
    Registry().erase(id);  // both ends hold the pipe; the id is spent
  }
  return std::unique_ptr<ActivationLink>(new LoopbackLink(std::move(pipe), rank, deadline, faults));
}

}  // namespace qf::worker
