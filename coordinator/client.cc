#include "coordinator/client.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "coordinator/grpc_util.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace qf::coordinator {
namespace {

void SetDeadline(grpc::ClientContext* ctx, int timeout_ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

}  // namespace

std::unique_ptr<JobClient> JobClient::Connect(const std::string& target, ClientOptions options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto client = std::make_unique<JobClient>(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args), options);
  client->target_ = target;
  return client;
}

JobClient::JobClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)), stub_(proto::JobService::NewStub(channel_)), options_(options) {}

// gRPC's own text for a coordinator it cannot reach ("failed to connect to all
// addresses; ...", "Deadline Exceeded") names neither the call nor the
// address; those two codes get both in front. Statuses the coordinator
// returned pass unchanged.
absl::Status JobClient::RpcStatus(const char* rpc, const grpc::Status& s) const {
  absl::Status st = FromGrpcStatus(s);
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return st;
  }
  const std::string where = target_.empty() ? "" : absl::StrCat(" to ", target_);
  return absl::Status(st.code(), absl::StrCat("JobService.", rpc, where, ": ", st.message()));
}

absl::StatusOr<proto::SubmitReply> JobClient::Submit(const proto::JobSpec& spec, const std::string& request_id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::SubmitRequest req;
  *req.mutable_spec() = spec;
  req.set_request_id(request_id);
  proto::SubmitReply reply;
  absl::Status s = RpcStatus("Submit", stub_->Submit(&ctx, req, &reply));
  if (!s.ok()) return s;
  return reply;
}

absl::StatusOr<proto::JobStatus> JobClient::Get(const std::string& job_id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::GetRequest req;
  req.set_job_id(job_id);
  proto::JobStatus reply;
  absl::Status s = RpcStatus("Get", stub_->Get(&ctx, req, &reply));
  if (!s.ok()) return s;
  return reply;
}

absl::StatusOr<std::vector<proto::JobStatus>> JobClient::List(const std::vector<proto::JobState>& states,
                                                              int limit) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::ListRequest req;
  for (proto::JobState st : states) req.add_states(st);
  req.set_limit(limit);
  proto::ListReply reply;
  absl::Status s = RpcStatus("List", stub_->List(&ctx, req, &reply));
  if (!s.ok()) return s;
  return std::vector<proto::JobStatus>(reply.jobs().begin(), reply.jobs().end());
}

absl::StatusOr<proto::JobStatus> JobClient::Watch(const std::string& job_id,
                                                  const std::function<void(const proto::WatchUpdate&)>& on_update,
                                                  uint64_t after_seq) {
  auto unavailable_since = std::chrono::steady_clock::now();
  while (true) {
    grpc::ClientContext ctx;
    proto::WatchRequest req;
    req.set_job_id(job_id);
    req.set_after_seq(after_seq);
    auto reader = stub_->Watch(&ctx, req);
    proto::WatchUpdate update;
    while (reader->Read(&update)) {
      after_seq = update.event().seq();
      unavailable_since = std::chrono::steady_clock::now();
      on_update(update);
    }
    grpc::Status gs = reader->Finish();
    if (gs.ok()) return Get(job_id);
    if (gs.error_code() != grpc::StatusCode::UNAVAILABLE) return RpcStatus("Watch", gs);
    if (std::chrono::steady_clock::now() - unavailable_since > std::chrono::milliseconds(options_.reconnect_window_ms))
      return RpcStatus("Watch", gs);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

absl::StatusOr<proto::JobStatus> JobClient::Cancel(const std::string& job_id, const std::string& reason) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::CancelRequest req;
  req.set_job_id(job_id);
  req.set_reason(reason);
  proto::JobStatus reply;
  absl::Status s = RpcStatus("Cancel", stub_->Cancel(&ctx, req, &reply));
  if (!s.ok()) return s;
  return reply;
}

absl::StatusOr<proto::JobStatus> JobClient::Resume(const std::string& job_id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::ResumeRequest req;
  req.set_job_id(job_id);
  proto::JobStatus reply;
  absl::Status s = RpcStatus("Resume", stub_->Resume(&ctx, req, &reply));
  if (!s.ok()) return s;
  return reply;
}

absl::StatusOr<std::vector<proto::JobEvent>> JobClient::Logs(const std::string& job_id, uint64_t after_seq,
                                                             int limit) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::LogsRequest req;
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  req.set_limit(limit);
  proto::LogsReply reply;
  absl::Status s = RpcStatus("Logs", stub_->Logs(&ctx, req, &reply));
  if (!s.ok()) return s;
  return std::vector<proto::JobEvent>(reply.events().begin(), reply.events().end());
}

}  // namespace qf::coordinator
