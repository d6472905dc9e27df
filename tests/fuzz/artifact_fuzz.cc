// File: tests/fuzz/artifact_fuzz.cc
//
// OpenArtifact and Layer() (storage/artifact.h), the reader behind qctl eval,
// verify and export, on artifacts whose model.safetensors header is anything:
// tensors renamed, dropped, added, reshaped, retyped or moved. The input is
// that JSON header; the data area stays the one our writer wrote, and the
// manifest is rewritten to the new file's size and sha256, as a writer with a
// bug would leave it (so the checksum does not stop the input at the door).
// The artifact is a one-layer Llama of hidden size 64 that this target writes
// once with WriteArtifact from a checkpoint it also writes (GPTQ, 4 bits,
// group size 32). An empty input stands for the writer's own header.
//
// An accepted artifact must give every layer its config promises (or refuse
// it on one line naming the directory), each linear passing the
// dequantization contract, and resolve every tensor it lists.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/sha256.h"
#include "kernels/ref/pack.h"
#include "nlohmann/json.hpp"
#include "storage/artifact.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/micro_model.h"

namespace {

using qf::storage::DType;
using qf::storage::OwnedTensor;

std::string ReadAll(const std::string& path) {
  auto bytes = qf::ReadFileToString(path);
  QF_FUZZ_CHECK(bytes.ok(), "%s", std::string(bytes.status().message()).c_str());
  return *std::move(bytes);
}

OwnedTensor Ones(const std::string& name, std::vector<int64_t> shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return OwnedTensor{name, DType::kF16, std::move(shape), qf::fuzz::HalfOnes(numel)};
}

struct Artifact {
  std::string dir;        // the artifact
  std::string header;     // its model.safetensors JSON header, as written
  std::string data_area;  // and the bytes after it
  nlohmann::json manifest;
};

// The source checkpoint and the artifact, written once per process.
Artifact Build() {
  namespace ks = qf::kernels;
  const std::string src = qf::fuzz::ScratchDir() + "/src", dir = qf::fuzz::ScratchDir() + "/art";
  std::filesystem::create_directories(src);
  std::ofstream(src + "/config.json") << qf::fuzz::MicroConfigJson();
  const qf::storage::ModelConfig cfg = qf::fuzz::MicroConfig();
  const ks::LayerResult layer = qf::fuzz::MicroLayer();
  // The source checkpoint: every tensor the artifact copies or replaces.
  std::vector<OwnedTensor> tensors = {Ones("model.embed_tokens.weight", {64, 64}), Ones("model.norm.weight", {64}),
                                      Ones("lm_head.weight", {64, 64}),
                                      Ones("model.layers.0.input_layernorm.weight", {64}),
                                      Ones("model.layers.0.post_attention_layernorm.weight", {64})};
  for (const ks::QuantizedLinear& q : layer.linears)
    tensors.push_back(Ones("model.layers.0." + q.name + ".weight", {q.out_features, q.in_features}));
  auto written = qf::storage::WriteSharded(src, tensors, uint64_t{1} << 30, {});
  QF_FUZZ_CHECK(written.ok(), "source: %s", std::string(written.status().message()).c_str());
  qf::storage::QuantSpec spec{.method = "rtn", .bits = 4, .group_size = 32, .sym = false, .desc_act = false,
                              .damp_percent = 0.01, .static_groups = false, .true_sequential = true,
                              .format = "gptq"};
  const absl::Status s = qf::storage::WriteArtifact(src, cfg, spec, std::vector<ks::LayerResult>{layer}, dir, {});
  QF_FUZZ_CHECK(s.ok(), "artifact: %s", std::string(s.message()).c_str());

  Artifact a;
  a.dir = dir;
  const std::string file = ReadAll(dir + "/model.safetensors");
  uint64_t len = 0;
  std::memcpy(&len, file.data(), 8);
  a.header = file.substr(8, len);
  a.data_area = file.substr(8 + len);
  a.manifest = nlohmann::json::parse(ReadAll(dir + "/qforge-manifest.json"));
  if (const char* seed = std::getenv("QF_FUZZ_WRITE_ARTIFACT_SEED")) std::ofstream(seed) << a.header;
  return a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Artifact art = Build();
  const std::string header = size == 0 ? art.header : std::string(reinterpret_cast<const char*>(data), size);
  std::string file(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(file.data(), &len, 8);
  file += header;
  file += art.data_area;
  nlohmann::json manifest = art.manifest;
  manifest["files"]["model.safetensors"] = {{"bytes", file.size()}, {"sha256", qf::Sha256Hex(file)}};
  {
    std::ofstream(art.dir + "/model.safetensors", std::ios::binary | std::ios::trunc) << file;
    std::ofstream(art.dir + "/qforge-manifest.json", std::ios::trunc) << manifest.dump(2);
  }
  auto a = qf::storage::OpenArtifact(art.dir);
  if (!a.ok()) {
    qf::fuzz::CheckRefusal(a.status(), art.dir);
    return 0;
  }
  QF_FUZZ_CHECK(static_cast<int64_t>(a->layers.size()) == a->config.num_hidden_layers, "%zu layers for %lld",
                a->layers.size(), static_cast<long long>(a->config.num_hidden_layers));
  bool all_layers = true;
  for (int l = 0; l < static_cast<int>(a->layers.size()); ++l) {
    auto layer = a->Layer(l);
    if (!layer.ok()) {
      qf::fuzz::CheckRefusal(layer.status(), art.dir);
      all_layers = false;
      continue;
    }
    QF_FUZZ_CHECK(layer->linears.size() == qf::storage::kLinearNames.size(), "layer %d: %zu linears", l,
                  layer->linears.size());
    for (const auto& q : layer->linears) {
      const absl::Status v = qf::kernels::ValidateQuantizedLinear(q);
      QF_FUZZ_CHECK(v.ok(), "layer %d: %s", l, std::string(v.message()).c_str());
    }
  }
  for (const std::string& name : a->other_tensors) QF_FUZZ_CHECK(a->Get(name).ok(), "%s does not resolve", name.c_str());
  if (all_layers) qf::fuzz::NoteAccepted();
  return 0;
}
