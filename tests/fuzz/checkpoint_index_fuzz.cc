// File: tests/fuzz/checkpoint_index_fuzz.cc
//
// Checkpoint::Open on a directory whose `model.safetensors.index.json` is
// arbitrary bytes, beside two real shards written once per process (tensors
// `a`, `b` in model-00001-of-00002.safetensors, `c` in model-00002-...). The
// index is untrusted: it names which files are opened. A refusal is one line
// naming the index; an accepted index exposes exactly its weight_map, every
// tensor resolving from the shard that holds it, and nothing outside the
// directory is opened (shard names are plain file names, so a name like
// "../model-00002-of-00002.safetensors" must be refused even where it exists).
#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "storage/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using qf::storage::DType;
using qf::storage::OwnedTensor;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";

// What the directory's shards hold: written from this table once, and what
// an accepted index is checked against.
struct ShardTensor {
  const char* name;
  const char* shard;
  std::vector<int64_t> shape;
  char fill;
};
const std::vector<ShardTensor>& Tensors() {
  static const auto* const t =
      new std::vector<ShardTensor>{{"a", kShard1, {2, 3}, 1}, {"b", kShard1, {4, 1}, 2}, {"c", kShard2, {1, 5}, 3}};
  return *t;
}

OwnedTensor F16(const char* name, std::vector<int64_t> shape, char fill) {
  const int64_t numel = shape[0] * shape[1];
  return OwnedTensor{name, DType::kF16, std::move(shape), std::string(static_cast<size_t>(numel * 2), fill)};
}

// The checkpoint directory, made once: its shards, and a copy of shard 2 one
// level up, where only a name that escapes the directory could reach it.
const std::string& CheckpointDir() {
  static const std::string* const dir = [] {
    const std::string parent = qf::fuzz::ScratchDir();
    auto* d = new std::string(parent + "/ckpt");
    std::error_code ec;
    std::filesystem::create_directories(*d, ec);
    QF_FUZZ_CHECK(!ec, "cannot make %s", d->c_str());
    const std::map<std::string, std::string> none;
    std::map<std::string, std::vector<OwnedTensor>> shards;
    for (const ShardTensor& t : Tensors()) shards[t.shard].push_back(F16(t.name, t.shape, t.fill));
    for (const auto& [shard, tensors] : shards)
      QF_FUZZ_CHECK(qf::storage::WriteFile(*d + "/" + shard, tensors, none).ok(), "cannot write %s", shard.c_str());
    QF_FUZZ_CHECK(qf::storage::WriteFile(parent + "/" + kShard2, {F16("escaped", {1, 1}, 4)}, none).ok(),
                  "cannot write the decoy shard");
    return d;
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = CheckpointDir();
  const std::string index =
      qf::fuzz::WriteScratch("ckpt/model.safetensors.index.json", {reinterpret_cast<const char*>(data), size});
  auto ck = qf::storage::Checkpoint::Open(dir);
  if (!ck.ok()) {
    qf::fuzz::CheckRefusal(ck.status(), index);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  unsigned sum = 0;
  for (const std::string& name : (*ck)->names()) {
    const auto held = std::find_if(Tensors().begin(), Tensors().end(),
                                   [&](const ShardTensor& t) { return name == t.name; });
    QF_FUZZ_CHECK(held != Tensors().end(), "accepted tensor '%s' that no shard in the directory holds", name.c_str());
    QF_FUZZ_CHECK((*ck)->Has(name) && (*ck)->FileOf(name) != nullptr, "%s: listed but not held", name.c_str());
    auto t = (*ck)->Get(name);
    QF_FUZZ_CHECK(t.ok(), "listed tensor %s does not resolve", name.c_str());
    QF_FUZZ_CHECK((*t)->shape == held->shape, "%s: shape differs from its shard's", name.c_str());
    QF_FUZZ_CHECK((*t)->nbytes() == static_cast<size_t>((*t)->numel()) * 2, "%s: %zu bytes", name.c_str(),
                  (*t)->nbytes());
    sum += static_cast<unsigned char>((*t)->data.front()) + static_cast<unsigned char>((*t)->data.back());
  }
  auto missing = (*ck)->Get("\x01 no such tensor");
  QF_FUZZ_CHECK(!missing.ok() && (*ck)->FileOf("\x01 no such tensor") == nullptr, "a missing tensor resolved");
  QF_FUZZ_CHECK(missing.status().message().find(dir) != std::string::npos, "not-found does not name %s", dir.c_str());
  qf::fuzz::g_sink = sum;
  return 0;
}
