// WeightSource over a qforge artifact: decoder layers come from the packed
// tensors (unpacked one layer at a time by LoadedArtifact::Layer, dequantized
// by the same WeightsFromResult as a replay); embeddings, final norm and
// lm_head are read as they are.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/artifact.h"
#include "worker/engine/eval.h"
#include "worker/engine/weights.h"

namespace qf::worker {
namespace {

class ArtifactSource final : public WeightSource {
 public:
  ArtifactSource(std::shared_ptr<const storage::LoadedArtifact> art, std::unique_ptr<CheckpointWeights> plain,
                 at::Device dev)
      : art_(std::move(art)), plain_(std::move(plain)), dev_(dev) {}
  const storage::ModelConfig& config() const override { return plain_->config(); }
  absl::StatusOr<LayerWeights> Layer(int layer) const override {
    // Unpacked here, one layer at a time (storage::OpenArtifact).
    QF_ASSIGN_OR_RETURN(const kernels::LayerResult r, art_->Layer(layer));
    return WeightsFromResult(r, dev_);
  }
  absl::StatusOr<at::Tensor> Embedding() const override { return plain_->Embedding(); }
  absl::StatusOr<at::Tensor> FinalNorm() const override { return plain_->FinalNorm(); }
  absl::StatusOr<at::Tensor> LmHead() const override { return plain_->LmHead(); }

 private:
  std::shared_ptr<const storage::LoadedArtifact> art_;
  std::unique_ptr<CheckpointWeights> plain_;
  at::Device dev_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenArtifactSource(std::shared_ptr<const storage::LoadedArtifact> art,
                                                                 const at::Device& device) {
  QF_ASSIGN_OR_RETURN(auto plain, CheckpointWeights::Open(art->dir, device));
  return std::unique_ptr<WeightSource>(new ArtifactSource(std::move(art), std::move(plain), device));
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenArtifactSource(const std::string& dir, const at::Device& device) {
  QF_ASSIGN_OR_RETURN(storage::LoadedArtifact art, storage::OpenArtifact(dir));
  return OpenArtifactSource(std::make_shared<const storage::LoadedArtifact>(std::move(art)), device);
}

}  // namespace qf::worker
