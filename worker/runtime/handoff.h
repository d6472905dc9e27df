// File: worker/runtime/handoff.h
//
// The worker's side of the parallel-mode activation hand-off (the protocol:
// proto/work.proto, HandoffOp; the engine's side: worker/engine/activation_link.h).
//
//   sender (stage k-1 = [first, b)):  Announce at the task's start; once its
//     session sits at `first` with FP16 activations, ForwardOriginalCopy(b) on
//     a copy, a fresh link id, publish, and an OfferServer thread keeps the
//     copy and polls until a receiver is paired, sends it, drops it; the
//     stage's quantization runs meanwhile.
//   receiver (stage k = [b, end)):  ReceiveInput joins until paired, closed
//     or the rendezvous deadline, then receives into its fresh session.
// Every failure (no transport, no peer, a timeout, a transfer error) leaves
// the receiver's session as it was and returns the reason: the worker then
// replays layers 0..b-1, which gives the same bits.
//
//   auto transport = MakeNcclTransport(engine, "cuda:0");   // tests: MakeLoopbackTransport("gpu-a")
//   OfferServer server(&client, transport.get(), "w0");
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/work.pb.h"
#include "worker/engine/engine_host.h"
#include "worker/engine/loopback_link.h"
#include "worker/runtime/work_client.h"

namespace qf::worker {

// How a worker moves activations to a peer.
class HandoffTransport {
 public:
  virtual ~HandoffTransport() = default;
  virtual std::string name() const = 0;   // "nccl" | "loopback": both ends must agree
  // The worker's device as the coordinator compares it; an error says why
  // this worker cannot hand off (it then neither offers nor joins).
  virtual absl::StatusOr<std::string> DeviceKey() = 0;
  // A fresh link id (the sender's; relayed to the receiver).
  virtual absl::StatusOr<std::string> NewLinkId() = 0;
  // One end of the link of `link_id`; rank 0 sends, rank 1 receives.
  virtual absl::StatusOr<std::unique_ptr<ActivationLink>> Connect(const std::string& link_id, int rank,
                                                                  int timeout_ms) = 0;
};

// NCCL through the engine (Engine::NcclUniqueId / ConnectNccl / DeviceKey).
std::unique_ptr<HandoffTransport> MakeNcclTransport(Engine* engine, const std::string& device);
// In-process, through host memory (tests): `device_key` stands for the GPU.
std::unique_ptr<HandoffTransport> MakeLoopbackTransport(const std::string& device_key, LoopbackFaults faults = {});

// The fields every Handoff request of a task carries: op, job, attempt,
// worker and boundary layer.
proto::HandoffRequest MakeHandoffRequest(proto::HandoffOp op, const proto::TaskAssignment& task,
                                         const std::string& worker_id, int boundary);

// One Handoff RPC (client side helper).
absl::StatusOr<proto::HandoffReply> CallHandoff(WorkClient* client, proto::HandoffOp op,
                                                const proto::TaskAssignment& task, const std::string& worker_id,
                                                int boundary, const std::string& device_key,
                                                const std::string& transport, const std::string& link_id = "");

// Keeps at most one sender's offer alive on its own thread: polls the
// coordinator until a receiver is paired, sends, drops the activations.
// A newer offer withdraws the older one. NOTE: thread-safe.
class OfferServer {
 public:
  struct Offer {
    proto::TaskAssignment task;      // the stage that made it (job, attempt)
    int boundary = 0;
    std::string device_key;
    std::string link_id;             // published with the offer
    std::unique_ptr<BoundaryActivations> acts;
  };
  OfferServer(WorkClient* client, HandoffTransport* transport, std::string worker_id);
  ~OfferServer();  // withdraws what it holds
  void Serve(Offer offer);
  int sent() const { return sent_; }

 private:
  void Loop();
  void Withdraw(Offer& o);

  WorkClient* client_;
  HandoffTransport* transport_;
  const std::string worker_id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<Offer> next_;      // waiting to replace the current one
  bool stop_ = false;
  std::atomic<int> sent_{0};
  std::thread thread_;               // last: starts after the members above exist
};

}  // namespace qf::worker
