#include "worker/runtime/work_client.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/grpc_util.h"
#include "coordinator/layer_codec.h"
#include "grpcpp/client_context.h"

namespace qf::worker {
namespace {

using coordinator::FromGrpcStatus;

bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
}

void SetDeadline(grpc::ClientContext* ctx, int timeout_ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

}  // namespace

WorkClient::WorkClient(std::shared_ptr<grpc::Channel> channel, WorkClientOptions options)
    : stub_(proto::WorkService::NewStub(channel)), options_(options) {}

absl::Status WorkClient::Retry(const std::string& what, const std::function<absl::Status()>& call) {
  const auto start = std::chrono::steady_clock::now();
  int backoff_ms = 100;
  while (true) {
    absl::Status s = call();
    if (!Retryable(s) || stopping_) return s;
    if (std::chrono::steady_clock::now() - start > std::chrono::milliseconds(options_.retry_window_ms))
      return absl::UnavailableError(absl::StrCat(what, ": coordinator unreachable for ", options_.retry_window_ms,
                                                 " ms: ", s.message()));
    QF_LOG(DEBUG) << what << ": " << s << "; retrying in " << backoff_ms << " ms";
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(backoff_ms * 2, 2000);
  }
}

absl::StatusOr<proto::RegisterReply> WorkClient::Register(const std::string& name, const std::string& device,
                                                          const std::string& incarnation,
                                                          const std::string& device_key) {
  proto::RegisterRequest req;
  req.set_name(name);
  req.set_device(device);
  req.set_incarnation(incarnation);
  req.set_device_key(device_key);
  proto::RegisterReply reply;
  QF_RETURN_IF_ERROR(Retry("Register", [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    return FromGrpcStatus(stub_->Register(&ctx, req, &reply));
  }));
  return reply;
}

absl::StatusOr<std::optional<proto::TaskAssignment>> WorkClient::Lease(const std::string& worker_id,
                                                                       const std::string& incarnation,
                                                                       int* retry_after_ms) {
  proto::LeaseRequest req;
  req.set_worker_id(worker_id);
  req.set_incarnation(incarnation);
  proto::LeaseReply reply;
  QF_RETURN_IF_ERROR(Retry("Lease", [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    return FromGrpcStatus(stub_->Lease(&ctx, req, &reply));
  }));
  if (retry_after_ms != nullptr) *retry_after_ms = reply.retry_after_ms();
  if (!reply.has_task()) return std::optional<proto::TaskAssignment>();
  return std::optional<proto::TaskAssignment>(reply.task());
}

absl::Status WorkClient::Renew(const proto::TaskAssignment& task, const std::string& worker_id, int layer) {
  proto::RenewRequest req;
  req.set_attempt_id(task.attempt_id());
  req.set_worker_id(worker_id);
  req.set_layer(layer);
  // One try: the renewer calls again soon, and must notice a lost lease quickly.
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::max(1000, task.lease_ttl_ms() / 3));
  proto::RenewReply reply;
  return FromGrpcStatus(stub_->Renew(&ctx, req, &reply));
}

absl::StatusOr<proto::PutLayerReply> WorkClient::SendLayerOnce(const proto::TaskAssignment& task, int layer,
                                                               const std::string& bytes, bool corrupt) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  proto::PutLayerReply reply;
  std::unique_ptr<grpc::ClientWriter<proto::LayerChunk>> writer = stub_->PutLayer(&ctx, &reply);
  std::vector<proto::LayerChunk> chunks = coordinator::SplitLayer(bytes, options_.chunk_bytes);
  for (proto::LayerChunk& c : chunks) {
    c.set_attempt_id(task.attempt_id());
    c.set_job_id(task.job_id());
    c.set_layer(layer);
    if (corrupt && c.index() == 0 && !c.data().empty()) (*c.mutable_data())[0] ^= 0x5a;  // after the checksum
    if (!writer->Write(c)) break;  // the server ended the call early: Finish() says why
  }
  writer->WritesDone();
  absl::Status s = FromGrpcStatus(writer->Finish());
  if (!s.ok()) return s;
  return reply;
}

absl::StatusOr<proto::PutLayerReply> WorkClient::PutLayer(const proto::TaskAssignment& task,
                                                          const kernels::LayerResult& result) {
  const std::string bytes = coordinator::LayerToProto(result).SerializeAsString();
  absl::StatusOr<proto::PutLayerReply> reply;
  for (int attempt = 0; attempt <= options_.resend_attempts; ++attempt) {
    bool corrupt = result.layer == options_.corrupt_layer_once && !corrupted_.exchange(true);
    absl::Status s = Retry(absl::StrCat("PutLayer ", result.layer), [&] {
      reply = SendLayerOnce(task, result.layer, bytes, corrupt);
      return reply.status();
    });
    if (!absl::IsDataLoss(s)) return reply;
    QF_LOG(WARNING) << "layer " << result.layer << " rejected in transit (" << s.message() << "); sending again";
  }
  return reply;
}

absl::StatusOr<proto::CompleteReply> WorkClient::Complete(const proto::TaskAssignment& task,
                                                          const std::string& worker_id,
                                                          const std::string& verify_report) {
  proto::CompleteRequest req;
  req.set_attempt_id(task.attempt_id());
  req.set_worker_id(worker_id);
  req.set_verify_report(verify_report);
  proto::CompleteReply reply;
  QF_RETURN_IF_ERROR(Retry("Complete", [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    return FromGrpcStatus(stub_->Complete(&ctx, req, &reply));
  }));
  return reply;
}

absl::Status WorkClient::Fail(const proto::TaskAssignment& task, const std::string& worker_id,
                              const absl::Status& error, std::optional<bool> permanent) {
  proto::FailRequest req;
  req.set_attempt_id(task.attempt_id());
  req.set_worker_id(worker_id);
  req.set_error(std::string(error.message()));
  // Bad weights or a spec that cannot fit the model fail the same way everywhere.
  req.set_permanent(permanent.value_or(absl::IsInvalidArgument(error) || absl::IsUnimplemented(error)));
  proto::FailReply reply;
  return Retry("Fail", [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    return FromGrpcStatus(stub_->Fail(&ctx, req, &reply));
  });
}

absl::Status WorkClient::Release(const proto::TaskAssignment& task, const std::string& worker_id,
                                 const std::string& reason) {
  proto::ReleaseRequest req;
  req.set_attempt_id(task.attempt_id());
  req.set_worker_id(worker_id);
  req.set_reason(reason);
  proto::ReleaseReply reply;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout_ms);
  return FromGrpcStatus(stub_->Release(&ctx, req, &reply));
}

absl::StatusOr<kernels::LayerResult> WorkClient::FetchLayer(const std::string& job_id, int layer) {
  proto::FetchLayerRequest req;
  req.set_job_id(job_id);
  req.set_layer(layer);
  std::string bytes;
  QF_RETURN_IF_ERROR(Retry(absl::StrCat("FetchLayer ", layer), [&]() -> absl::Status {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    auto reader = stub_->FetchLayer(&ctx, req);
    coordinator::ChunkJoiner joiner;
    proto::LayerChunk chunk;
    absl::Status chunk_status;
    while (reader->Read(&chunk)) {
      if (chunk_status.ok()) chunk_status = joiner.Add(chunk);
    }
    QF_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
    QF_RETURN_IF_ERROR(chunk_status);
    QF_ASSIGN_OR_RETURN(bytes, joiner.Finish());
    return absl::OkStatus();
  }));
  proto::LayerResultProto p;
  if (!p.ParseFromString(bytes))
    return absl::DataLossError(absl::StrCat("job ", job_id, ": fetched layer ", layer, " does not parse"));
  return coordinator::LayerFromProto(p);
}

absl::StatusOr<proto::HandoffReply> WorkClient::Handoff(const proto::HandoffRequest& request) {
  proto::HandoffReply reply;
  QF_RETURN_IF_ERROR(Retry("Handoff", [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.rpc_timeout_ms);
    return FromGrpcStatus(stub_->Handoff(&ctx, request, &reply));
  }));
  return reply;
}

}  // namespace qf::worker
