// TorchSession's side of the activation hand-off (activation_link.h): the
// sender's copy moved through the original layers, and the receiver's
// adoption of what arrives. Both go through the code of ForwardOriginalLayer
// (TorchSession::AdvanceTensor), so a stage that received its input computes
// the same bits as one that replayed layers 0..first-1.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/session.h"
#include "worker/engine/torch_util.h"

#if defined(QF_WITH_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

namespace qf::worker {
namespace {

int64_t DTypeCode(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default: return 0;
  }
}

std::string DeviceName(const at::Device& d) {
  return d.is_cuda() ? absl::StrCat("cuda:", static_cast<int>(d.index() < 0 ? 0 : d.index())) : "cpu";
}

ActivationHeader HeaderOf(const at::Tensor& acts, int layer) {
  ActivationHeader h;
  h.layer = layer;
  h.samples = acts.size(0);
  h.seqlen = acts.size(1);
  h.hidden = acts.size(2);
  h.dtype = DTypeCode(acts.scalar_type());
  h.bytes = acts.numel() * static_cast<int64_t>(acts.element_size());
  return h;
}

// Work queued on the current stream is finished: another thread (another
// stream) may read what it wrote.
void SyncDevice(const at::Device& d) {
#if defined(QF_WITH_CUDA)
  if (d.is_cuda()) c10::cuda::getCurrentCUDAStream(d.index()).synchronize();
#endif
}

class TorchBoundary final : public BoundaryActivations {
 public:
  // `acts` may sit in host memory (SessionSpec::host_activations); `dev` is
  // the session's compute device.
  TorchBoundary(at::Tensor acts, int layer, at::Device dev) : acts_(std::move(acts)), layer_(layer), dev_(dev) {}
  int layer() const override { return layer_; }
  int64_t bytes() const override { return acts_.numel() * static_cast<int64_t>(acts_.element_size()); }

  absl::Status Send(ActivationLink* link) override {
    const ActivationHeader h = HeaderOf(acts_, layer_);
    QF_RETURN_IF_ERROR(link->Send(&h, sizeof(h), "cpu"));
    // Where the link wants the bytes: the GPU for NCCL, the host for the loopback.
    const at::Device where = link->device_memory() && dev_.is_cuda() ? dev_ : at::Device(at::kCPU);
    at::Tensor t = acts_;
    if (t.device() != where) {
      QF_ASSIGN_OR_RETURN(t, TorchCall([&] {
        at::Tensor moved = acts_.to(where).contiguous();
        SyncDevice(dev_);
        return moved;
      }, absl::StrCat("layer ", layer_, ": activations to ", DeviceName(where))));
    }
    return link->Send(t.data_ptr(), static_cast<size_t>(h.bytes), DeviceName(where));
  }

 private:
  at::Tensor acts_;  // contiguous [samples, seqlen, hidden] in the compute dtype
  int layer_;
  at::Device dev_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BoundaryActivations>> TorchSession::ForwardOriginalCopy(int end_layer) {
  QF_RETURN_IF_ERROR(broken_);
  if (!acts_.defined()) return absl::FailedPreconditionError(absl::StrCat(spec_.quant.method, ": no activations to hand off"));
  if (end_layer <= next_ || end_layer > num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("hand-off to layer ", end_layer, ": the session is at layer ", next_,
                                                   " of ", num_layers()));
  }
  QF_ASSIGN_OR_RETURN(at::Tensor copy, TorchCall([&] { return acts_.clone(at::MemoryFormat::Contiguous); },
                                                 absl::StrCat("layer ", next_, ": copy of the activations")));
  for (int l = next_; l < end_layer; ++l) {
    QF_ASSIGN_OR_RETURN(LayerWeights lw, model_->Layer(l));
    QF_RETURN_IF_ERROR(AdvanceTensor(copy, lw, l));
  }
  QF_RETURN_IF_ERROR(TorchCallStatus([&] {
    SyncDevice(dev_);  // Send may run on another thread, on another stream
    return absl::OkStatus();
  }, "hand-off: device synchronize"));
  return std::unique_ptr<BoundaryActivations>(new TorchBoundary(std::move(copy), end_layer, dev_));
}

absl::Status TorchSession::ReceiveActivations(int layer, ActivationLink* link) {
  QF_RETURN_IF_ERROR(broken_);
  if (!acts_.defined()) return absl::FailedPreconditionError(absl::StrCat(spec_.quant.method, ": takes no activations"));
  if (layer < 0 || layer >= num_layers())
    return absl::InvalidArgumentError(absl::StrCat("hand-off at layer ", layer, ": the model has ", num_layers()));
  ActivationHeader got;
  QF_RETURN_IF_ERROR(link->Recv(&got, sizeof(got), "cpu"));
  const ActivationHeader want = HeaderOf(acts_, layer);
  if (std::memcmp(&got, &want, sizeof(got)) != 0) {
    return absl::DataLossError(absl::StrCat(
        "hand-off header: got layer ", got.layer, " [", got.samples, ", ", got.seqlen, ", ", got.hidden, "] dtype ",
        got.dtype, " (", got.bytes, " bytes, magic ", got.magic == ActivationHeader::kMagic ? "ok" : "bad",
        "), expected layer ", want.layer, " [", want.samples, ", ", want.seqlen, ", ", want.hidden, "] dtype ",
        want.dtype));
  }
  // Received where the link delivers (the GPU for NCCL, the host for the
  // loopback), then moved to where the session keeps its activations.
  const at::Device where = link->device_memory() && dev_.is_cuda() ? dev_ : at::Device(at::kCPU);
  QF_ASSIGN_OR_RETURN(at::Tensor in, TorchCall([&] {
    at::Tensor t = at::empty(acts_.sizes(), acts_.options().device(where).pinned_memory(false));
    SyncDevice(dev_);  // the allocation's stream is idle before the link's stream writes into it
    return t;
  }, absl::StrCat("layer ", layer, ": hand-off buffer")));
  QF_RETURN_IF_ERROR(link->Recv(in.data_ptr(), static_cast<size_t>(want.bytes), DeviceName(where)));
  if (in.device() != acts_.device()) {
    QF_ASSIGN_OR_RETURN(in, TorchCall([&] {
      at::Tensor t = in.to(acts_.device());
      if (acts_.is_pinned()) t = t.pin_memory();
      SyncDevice(dev_);
      return t;
    }, absl::StrCat("layer ", layer, ": hand-off to ", DeviceName(acts_.device()))));
  }
  acts_ = std::move(in);
  next_ = layer;
  return absl::OkStatus();
}

}  // namespace qf::worker
