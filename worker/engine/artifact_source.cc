// WeightSource over a qforge artifact: decoder layers come from the packed
// tensors (unpacked by storage::ReadArtifact, dequantized by the same
// WeightsFromResult as a replay); embeddings, final norm and lm_head are read
// as they are.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/artifact.h"
#include "worker/engine/eval.h"
#include "worker/engine/weights.h"

namespace qf::worker {
namespace {

class ArtifactSource final : public WeightSource {
 public:
  ArtifactSource(storage::LoadedArtifact art, std::unique_ptr<CheckpointWeights> plain, at::Device dev)
      : art_(std::move(art)), plain_(std::move(plain)), dev_(dev) {}
  const storage::ModelConfig& config() const override { return plain_->config(); }
  absl::StatusOr<LayerWeights> Layer(int layer) const override {
    if (layer < 0 || layer >= static_cast<int>(art_.layers.size())) {
      return absl::OutOfRangeError(absl::StrCat(art_.dir, ": layer ", layer, " not in the artifact"));
    }
    return WeightsFromResult(art_.layers[layer], dev_);
  }
  absl::StatusOr<at::Tensor> Embedding() const override { return plain_->Embedding(); }
  absl::StatusOr<at::Tensor> FinalNorm() const override { return plain_->FinalNorm(); }
  absl::StatusOr<at::Tensor> LmHead() const override { return plain_->LmHead(); }

 private:
  storage::LoadedArtifact art_;
  std::unique_ptr<CheckpointWeights> plain_;
  at::Device dev_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenArtifactSource(const std::string& dir, const at::Device& device) {
  QF_ASSIGN_OR_RETURN(storage::LoadedArtifact art, storage::ReadArtifact(dir));
  QF_ASSIGN_OR_RETURN(auto plain, CheckpointWeights::Open(dir, device));
  return std::unique_ptr<WeightSource>(new ArtifactSource(std::move(art), std::move(plain), device));
}

}  // namespace qf::worker
