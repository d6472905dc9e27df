// File: worker/runtime/work_client.h
//
// The worker's side of WorkService: one method per RPC, each retried while
// the coordinator is unreachable (UNAVAILABLE / DEADLINE_EXCEEDED, e.g. it is
// restarting) for up to retry_window_ms with backoff. Every other status is
// returned as the coordinator gave it; ABORTED means "drop the task".
//
//   WorkClient client(channel, {});
//   QF_ASSIGN_OR_RETURN(proto::RegisterReply reg, client.Register("gpu0", "cuda:0", incarnation));
//   QF_ASSIGN_OR_RETURN(auto task, client.Lease(reg.worker_id(), incarnation));   // nullopt: nothing to do
//   QF_RETURN_IF_ERROR(client.PutLayer(*task, result));   // re-sends a layer the coordinator found corrupted
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "kernels/quant_types.h"
#include "proto/work.grpc.pb.h"

namespace qf::worker {

struct WorkClientOptions {
  int rpc_timeout_ms = 60000;      // per attempt of a call (PutLayer: per layer)
  int retry_window_ms = 120000;    // keep retrying an unreachable coordinator this long
  size_t chunk_bytes = size_t{1} << 20;
  int resend_attempts = 3;         // a layer rejected with DATA_LOSS is sent again up to this often
  // Test hook: corrupt one byte of the first chunk of this layer, on its first send only.
  int corrupt_layer_once = -1;
};

class WorkClient {
 public:
  WorkClient(std::shared_ptr<grpc::Channel> channel, WorkClientOptions options);

  absl::StatusOr<proto::RegisterReply> Register(const std::string& name, const std::string& device,
                                                const std::string& incarnation, const std::string& device_key = "");
  // nullopt when the coordinator has nothing; *retry_after_ms says when to ask again.
  absl::StatusOr<std::optional<proto::TaskAssignment>> Lease(const std::string& worker_id,
                                                             const std::string& incarnation, int* retry_after_ms);
  absl::Status Renew(const proto::TaskAssignment& task, const std::string& worker_id, int layer);
  // Streams `result` as checksummed chunks and waits for the commit.
  absl::StatusOr<proto::PutLayerReply> PutLayer(const proto::TaskAssignment& task,
                                                const kernels::LayerResult& result);
  // `verify_report`: the verify stage's verify.json object (empty otherwise).
  absl::StatusOr<proto::CompleteReply> Complete(const proto::TaskAssignment& task, const std::string& worker_id,
                                                const std::string& verify_report = "");
  // `permanent` unset: InvalidArgument and Unimplemented errors are (another
  // worker would fail the same way), others are not.
  absl::Status Fail(const proto::TaskAssignment& task, const std::string& worker_id, const absl::Status& error,
                    std::optional<bool> permanent = std::nullopt);
  // Gives the stage back unfinished (the worker is stopping). One try, no
  // retries: a worker that is shutting down must not wait out the retry
  // window; if this fails the lease simply expires.
  absl::Status Release(const proto::TaskAssignment& task, const std::string& worker_id, const std::string& reason);
  // A committed layer, verified chunk by chunk.
  absl::StatusOr<kernels::LayerResult> FetchLayer(const std::string& job_id, int layer);
  // One step of the parallel-mode activation hand-off (worker/runtime/handoff.h).
  absl::StatusOr<proto::HandoffReply> Handoff(const proto::HandoffRequest& request);

  // Makes retry loops give up promptly (worker shutting down).
  void Stop() { stopping_ = true; }

 private:
  absl::Status Retry(const std::string& what, const std::function<absl::Status()>& call);
  absl::StatusOr<proto::PutLayerReply> SendLayerOnce(const proto::TaskAssignment& task, int layer,
                                                     const std::string& bytes, bool corrupt);

  std::unique_ptr<proto::WorkService::Stub> stub_;
  WorkClientOptions options_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> corrupted_{false};
};

}  // namespace qf::worker
