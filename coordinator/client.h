// File: coordinator/client.h
//
// The client library of JobService, for `qctl submit/status/watch/list/
// cancel/resume/logs` and for embedded mode. Every call returns the
// coordinator's status unchanged (INVALID_ARGUMENT naming the field,
// NOT_FOUND for an unknown job, ...); UNAVAILABLE (DEADLINE_EXCEEDED) when it
// cannot be reached (in time), naming the call and, from Connect, the address:
// "JobService.Submit to 10.0.0.5:7070: failed to connect to all addresses; ...".
//
//   auto client = JobClient::Connect("127.0.0.1:7070");
//   QF_ASSIGN_OR_RETURN(proto::SubmitReply r, client->Submit(spec));
//   QF_ASSIGN_OR_RETURN(proto::JobStatus end, client->Watch(r.job_id(), [](const proto::WatchUpdate& u) {
//     std::printf("%s layers %d/%d\n", proto::EventKind_Name(u.event().kind()).c_str(),
//                 u.status().layers_committed(), u.status().layers_total());
//   }));
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "proto/job.grpc.pb.h"

namespace qf::coordinator {

struct ClientOptions {
  int rpc_timeout_ms = 30000;     // per unary call
  // Watch: how long to keep reconnecting (coordinator restarting) before
  // giving up with UNAVAILABLE.
  int reconnect_window_ms = 60000;
};

class JobClient {
 public:
  // `target`: "HOST:PORT" or "unix:/path". Connects lazily, on the first call.
  static std::unique_ptr<JobClient> Connect(const std::string& target, ClientOptions options = {});
  explicit JobClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  // `request_id` makes a retried Submit return the first job (see SubmitRequest).
  absl::StatusOr<proto::SubmitReply> Submit(const proto::JobSpec& spec, const std::string& request_id = "");
  absl::StatusOr<proto::JobStatus> Get(const std::string& job_id);
  // Most recent first; empty `states` = all.
  absl::StatusOr<std::vector<proto::JobStatus>> List(const std::vector<proto::JobState>& states = {},
                                                     int limit = 0);
  // Calls `on_update` for every event after `after_seq` until the job ends,
  // then returns its final status. Reconnects (from the last event seen) if
  // the coordinator restarts, within reconnect_window_ms.
  absl::StatusOr<proto::JobStatus> Watch(const std::string& job_id,
                                         const std::function<void(const proto::WatchUpdate&)>& on_update,
                                         uint64_t after_seq = 0);
  absl::StatusOr<proto::JobStatus> Cancel(const std::string& job_id, const std::string& reason = "");
  absl::StatusOr<proto::JobStatus> Resume(const std::string& job_id);
  absl::StatusOr<std::vector<proto::JobEvent>> Logs(const std::string& job_id, uint64_t after_seq = 0,
                                                    int limit = 0);

 private:
  absl::Status RpcStatus(const char* rpc, const grpc::Status& s) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<proto::JobService::Stub> stub_;
  ClientOptions options_;
  std::string target_;  // as given to Connect; empty for a channel built elsewhere
};

}  // namespace qf::coordinator
