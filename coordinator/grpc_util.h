// File: coordinator/grpc_util.h
//
// absl::Status <-> grpc::Status. The codes are the same numbers (both follow
// google/rpc/code.proto), so the mapping is a cast; the message travels as is.
//
//   return ToGrpcStatus(scheduler->Cancel(id, reason).status());
//   absl::Status s = FromGrpcStatus(stub->Get(&ctx, req, &reply));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/handler_pool.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"

namespace qf::coordinator {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// A unary callback handler's whole body: runs `fn` (returning StatusOr<T>) on
// `pool`, copies the value into `reply` and finishes the call with its status.
// `fn` may use the request: gRPC keeps it alive until Finish.
template <typename T, typename Fn>
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, T* reply, HandlerPool* pool, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  pool->Post([reactor, reply, fn = std::forward<Fn>(fn)]() mutable {
    absl::StatusOr<T> result = fn();
    if (result.ok()) *reply = *std::move(result);
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

}  // namespace qf::coordinator
