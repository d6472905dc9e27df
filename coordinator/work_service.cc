#include <vector>

#include "coordinator/grpc_util.h"
#include "coordinator/layer_codec.h"
#include "coordinator/services.h"

namespace qf::coordinator {
namespace {

// Receives one layer's chunks, verifying each checksum as it arrives; commits
// after the client half-closes. A bad chunk ends the call with DATA_LOSS at
// once (the worker re-sends the whole layer on a new stream).
class PutLayerReactor final : public grpc::ServerReadReactor<proto::LayerChunk> {
 public:
  PutLayerReactor(Scheduler* scheduler, HandlerPool* pool, proto::PutLayerReply* reply)
      : scheduler_(scheduler), pool_(pool), reply_(reply) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (done_) return;
    if (ok) {
      absl::Status s = joiner_.Add(chunk_);
      if (!s.ok()) {
        scheduler_->RecordRejectedLayer(chunk_, s);  // names attempt, job and layer like every chunk
        End(ToGrpcStatus(s));
        return;
      }
      StartRead(&chunk_);
      return;
    }
    absl::StatusOr<std::string> bytes = joiner_.Finish();
    if (!bytes.ok()) {
      End(ToGrpcStatus(bytes.status()));
      return;
    }
    done_ = true;
    pool_->Post([this, bytes = *std::move(bytes)] {  // blocks until durable: off gRPC's threads
      absl::StatusOr<proto::PutLayerReply> r = scheduler_->CommitLayer(joiner_.header(), bytes);
      if (r.ok()) *reply_ = *r;
      Finish(ToGrpcStatus(r.status()));
    });
  }

  void OnCancel() override {}
  void OnDone() override { delete this; }

 private:
  void End(const grpc::Status& s) {
    done_ = true;
    Finish(s);
  }

  Scheduler* scheduler_;
  HandlerPool* pool_;
  proto::PutLayerReply* reply_;
  proto::LayerChunk chunk_;
  ChunkJoiner joiner_;
  bool done_ = false;   // reads stop after Finish; only touched on the read path
};

// Streams a committed layer back as checksummed chunks.
class FetchLayerReactor final : public grpc::ServerWriteReactor<proto::LayerChunk> {
 public:
  FetchLayerReactor(Scheduler* scheduler, const proto::FetchLayerRequest& request) {
    absl::StatusOr<std::string> bytes = scheduler->FetchLayer(request.job_id(), request.layer());
    if (!bytes.ok()) {
      Finish(ToGrpcStatus(bytes.status()));
      return;
    }
    chunks_ = SplitLayer(*bytes, kDefaultChunkBytes);
    for (proto::LayerChunk& c : chunks_) {
      c.set_job_id(request.job_id());
      c.set_layer(request.layer());
    }
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "fetch stream broken"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (next_ == chunks_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    StartWrite(&chunks_[next_++]);
  }

  std::vector<proto::LayerChunk> chunks_;
  size_t next_ = 0;
};

}  // namespace

grpc::ServerUnaryReactor* WorkServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                    const proto::RegisterRequest* request,
                                                    proto::RegisterReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Register(*request); });
}

grpc::ServerUnaryReactor* WorkServiceImpl::Lease(grpc::CallbackServerContext* ctx,
                                                 const proto::LeaseRequest* request, proto::LeaseReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Lease(*request); });
}

grpc::ServerUnaryReactor* WorkServiceImpl::Renew(grpc::CallbackServerContext* ctx,
                                                 const proto::RenewRequest* request, proto::RenewReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Renew(*request); });
}

grpc::ServerReadReactor<proto::LayerChunk>* WorkServiceImpl::PutLayer(grpc::CallbackServerContext* ctx,
                                                                      proto::PutLayerReply* reply) {
  return new PutLayerReactor(scheduler_, pool_, reply);
}

grpc::ServerUnaryReactor* WorkServiceImpl::Complete(grpc::CallbackServerContext* ctx,
                                                    const proto::CompleteRequest* request,
                                                    proto::CompleteReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Complete(*request); });
}

grpc::ServerUnaryReactor* WorkServiceImpl::Fail(grpc::CallbackServerContext* ctx,
                                                const proto::FailRequest* request, proto::FailReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Fail(*request); });
}

grpc::ServerUnaryReactor* WorkServiceImpl::Release(grpc::CallbackServerContext* ctx,
                                                   const proto::ReleaseRequest* request, proto::ReleaseReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Release(*request); });
}

grpc::ServerWriteReactor<proto::LayerChunk>* WorkServiceImpl::FetchLayer(grpc::CallbackServerContext* ctx,
                                                                         const proto::FetchLayerRequest* request) {
  return new FetchLayerReactor(scheduler_, *request);
}

grpc::ServerUnaryReactor* WorkServiceImpl::Handoff(grpc::CallbackServerContext* ctx,
                                                   const proto::HandoffRequest* request, proto::HandoffReply* reply) {
  return FinishUnary(ctx, reply, pool_, [=, this] { return scheduler_->Handoff(*request); });
}

}  // namespace qf::coordinator
