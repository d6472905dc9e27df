// File: worker/engine/loopback_link.h
//
// An in-process ActivationLink through host memory: the two ends of a
// hand-off that name the same id meet in a process-wide registry. It stands in
// for NCCL where there is none (CPU tests of the protocol, the pairing, the
// timeouts and a peer that dies mid-transfer) and behaves like it: Connect
// blocks until both ranks joined, every call is bounded by the deadline.
//
//   std::string id = NewLoopbackId();
//   // thread A                                   // thread B
//   auto a = ConnectLoopback(id, 0, 5000);        auto b = ConnectLoopback(id, 1, 5000);
//   (*a)->Send(buf, n, "cpu");                    (*b)->Recv(out, n, "cpu");
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/activation_link.h"

namespace qf::worker {

struct LoopbackFaults {
  // Rank 0 sends only this many bytes (header included) in all, then fails
  // as a sender that died mid-transfer would; -1: no fault.
  int64_t fail_after_bytes = -1;
};

// A fresh id, unique in this process.
std::string NewLoopbackId();

// Rank 0 sends, rank 1 receives. DeadlineExceeded when the peer does not join
// within timeout_ms (which also bounds every later call).
absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectLoopback(const std::string& id, int rank, int timeout_ms,
                                                                LoopbackFaults faults = {});

}  // namespace qf::worker
