// File: worker/engine/nccl_link.h
//
// The NCCL ActivationLink of the hand-off (CUDA builds where nccl.h was found:
// QF_WITH_NCCL). libnccl is dlopen'ed at first use (the torch wheel's
// libnccl.so.2, already loaded by libtorch_cuda), so an engine without it
// still loads and the worker falls back to replay with the loader's message.
// NCCL_NVLS_ENABLE is forced to 0 before NCCL's first call (NVLink multicast
// stays off). Each hand-off is one 2-rank communicator, created non-blocking
// and torn down with ncclCommAbort on any error or when the deadline passes,
// so a dead peer never hangs a worker.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/activation_link.h"

namespace qf::worker {

absl::StatusOr<std::string> NcclUniqueIdBytes();
absl::StatusOr<std::unique_ptr<ActivationLink>> ConnectNcclLink(const NcclLinkSpec& spec);
// "<hostname>/<PCI bus id>" of CUDA device `index`.
absl::StatusOr<std::string> CudaDeviceKey(int index);

}  // namespace qf::worker
