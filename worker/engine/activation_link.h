// File: worker/engine/activation_link.h
//
// The activation hand-off of parallel mode, engine side (plain C++, no torch;
// included by engine_host.h). The worker of stage k-1 moves a copy of its
// FP16 input through the original weights of its layers before it quantizes
// them (Session::ForwardOriginalCopy) and sends the result over an
// ActivationLink to the worker of stage k, which takes it as its input
// (Session::ReceiveActivations) instead of replaying layers 0..first-1. The
// bits are ForwardOriginalLayer's: the copy goes through the same code.
//
//   // sender                                              // receiver
//   auto acts = session->ForwardOriginalCopy(end);         auto link = engine->ConnectNccl({id, 1, ...});
//   auto link = engine->ConnectNccl({id, 0, ...});         session->ReceiveActivations(end, link.get());
//   (*acts)->Send(link.get());
//
// Links: NCCL between two GPUs (the engine's, CUDA builds: Engine::ConnectNccl)
// and an in-process loopback through host memory (loopback_link.h, tests).
// Wire format of one hand-off: a 64-byte header (ActivationHeader), then the
// activations' bytes, row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"

namespace qf::worker {

// A point-to-point pipe between the two ends of one hand-off. Calls block
// until the bytes went through, the link's deadline passed (DeadlineExceeded)
// or the peer failed (Unavailable / Aborted, naming what happened); after an
// error the link is unusable.
class ActivationLink {
 public:
  virtual ~ActivationLink() = default;
  virtual std::string kind() const = 0;            // "nccl" | "loopback"
  // Whether Send/Recv take device memory ("cuda:N" buffers) or only host memory.
  virtual bool device_memory() const = 0;
  // `device` is where `data` lives: "cpu" or "cuda:N".
  virtual absl::Status Send(const void* data, size_t bytes, const std::string& device) = 0;
  virtual absl::Status Recv(void* data, size_t bytes, const std::string& device) = 0;
};

// What travels first: both ends check that they agree on what follows.
struct ActivationHeader {
  static constexpr uint64_t kMagic = 0x31664f444e414851ull;  // "QHANDOf1"
  uint64_t magic = kMagic;
  int64_t layer = 0;        // the layer whose input the activations are
  int64_t samples = 0, seqlen = 0, hidden = 0;
  int64_t dtype = 0;        // 0 float32, 1 float16, 2 bfloat16
  int64_t bytes = 0;        // of the data that follows
  int64_t reserved = 0;
};
static_assert(sizeof(ActivationHeader) == 64, "the header is 64 bytes on the wire");

// FP16-model activations at a stage boundary, held by the engine (device
// memory on a GPU) until they are sent. Independent of the session that made
// them: the session goes on quantizing meanwhile.
// NOTE: Send may run on another thread than the one that made them.
class BoundaryActivations {
 public:
  virtual ~BoundaryActivations() = default;
  virtual int layer() const = 0;                   // the layer whose input they are
  virtual int64_t bytes() const = 0;
  virtual absl::Status Send(ActivationLink* link) = 0;
};

// One end of an NCCL pair (Engine::ConnectNccl).
struct NcclLinkSpec {
  std::string unique_id;     // ncclUniqueId bytes (Engine::NcclUniqueId of the rank-0 side)
  int rank = 0;              // 0 sends, 1 receives
  std::string device;        // "cuda:N"
  int timeout_ms = 60000;    // set-up and every transfer must finish within this (from Connect)
};

}  // namespace qf::worker
