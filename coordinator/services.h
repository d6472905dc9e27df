// File: coordinator/services.h
//
// The gRPC callback services. They only translate proto <-> Scheduler calls
// and drive the streams; every decision is the Scheduler's.
//
//   HandlerPool pool(32);
//   JobServiceImpl jobs(scheduler, &pool);   WorkServiceImpl work(scheduler, &pool);
//   grpc::ServerBuilder b;  b.RegisterService(&jobs);  b.RegisterService(&work);
//
// NOTE: unary handlers and layer commits run on a HandlerPool and block there
// until their state change is durable (grouped fsyncs); streams are reactors.
#pragma once

#include "coordinator/handler_pool.h"
#include "coordinator/scheduler.h"
#include "proto/job.grpc.pb.h"
#include "proto/work.grpc.pb.h"

namespace qf::coordinator {

class JobServiceImpl final : public proto::JobService::CallbackService {
 public:
  JobServiceImpl(Scheduler* scheduler, HandlerPool* pool) : scheduler_(scheduler), pool_(pool) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx, const proto::SubmitRequest* request,
                                   proto::SubmitReply* reply) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const proto::GetRequest* request,
                                proto::JobStatus* reply) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const proto::ListRequest* request,
                                 proto::ListReply* reply) override;
  grpc::ServerWriteReactor<proto::WatchUpdate>* Watch(grpc::CallbackServerContext* ctx,
                                                      const proto::WatchRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx, const proto::CancelRequest* request,
                                   proto::JobStatus* reply) override;
  grpc::ServerUnaryReactor* Resume(grpc::CallbackServerContext* ctx, const proto::ResumeRequest* request,
                                   proto::JobStatus* reply) override;
  grpc::ServerUnaryReactor* Logs(grpc::CallbackServerContext* ctx, const proto::LogsRequest* request,
                                 proto::LogsReply* reply) override;

 private:
  Scheduler* scheduler_;
  HandlerPool* pool_;
};

class WorkServiceImpl final : public proto::WorkService::CallbackService {
 public:
  WorkServiceImpl(Scheduler* scheduler, HandlerPool* pool) : scheduler_(scheduler), pool_(pool) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const proto::RegisterRequest* request,
                                     proto::RegisterReply* reply) override;
  grpc::ServerUnaryReactor* Lease(grpc::CallbackServerContext* ctx, const proto::LeaseRequest* request,
                                  proto::LeaseReply* reply) override;
  grpc::ServerUnaryReactor* Renew(grpc::CallbackServerContext* ctx, const proto::RenewRequest* request,
                                  proto::RenewReply* reply) override;
  grpc::ServerReadReactor<proto::LayerChunk>* PutLayer(grpc::CallbackServerContext* ctx,
                                                       proto::PutLayerReply* reply) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx, const proto::CompleteRequest* request,
                                     proto::CompleteReply* reply) override;
  grpc::ServerUnaryReactor* Fail(grpc::CallbackServerContext* ctx, const proto::FailRequest* request,
                                 proto::FailReply* reply) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const proto::ReleaseRequest* request,
                                    proto::ReleaseReply* reply) override;
  grpc::ServerWriteReactor<proto::LayerChunk>* FetchLayer(grpc::CallbackServerContext* ctx,
                                                          const proto::FetchLayerRequest* request) override;
  grpc::ServerUnaryReactor* Handoff(grpc::CallbackServerContext* ctx, const proto::HandoffRequest* request,
                                    proto::HandoffReply* reply) override;

 private:
  Scheduler* scheduler_;
  HandlerPool* pool_;
};

}  // namespace qf::coordinator
