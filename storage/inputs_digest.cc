#include "storage/inputs_digest.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "storage/safetensors.h"
#include "storage/synthetic_model.h"

namespace qf::storage {
namespace {

namespace fs = std::filesystem;

// Read whole: small files whose every byte matters.
constexpr const char* kWholeFiles[] = {"config.json", "model.safetensors.index.json", "tokenizer.model",
                                       "tokenizer.json", "tokenizer_config.json"};
constexpr uint64_t kSample = 64 << 10;

absl::StatusOr<std::string> ReadAt(std::ifstream& in, const std::string& path, uint64_t offset, uint64_t n) {
  std::string buf(n, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in.read(buf.data(), static_cast<std::streamsize>(n)))
    return absl::DataLossError(absl::StrCat(path, ": short read of ", n, " bytes at ", offset));
  return buf;
}

absl::StatusOr<std::string> ShardDigest(const std::string& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  if (size < 8) return absl::DataLossError(absl::StrCat(path, ": ", size, " bytes, expected a safetensors header"));
  absl::StatusOr<std::string> len = ReadAt(in, path, 0, 8);
  if (!len.ok()) return len.status();
  absl::StatusOr<uint64_t> data_offset = SafetensorsDataOffset(len->data(), size, path);
  if (!data_offset.ok()) return data_offset.status();
  const uint64_t data = *data_offset;
  const uint64_t head = std::min(kSample, size - data);
  const uint64_t tail_at = std::max(data, size - std::min(kSample, size - data));
  std::string bytes = absl::StrCat(size, "\n");
  for (auto [offset, n] : {std::pair{uint64_t{0}, data + head}, std::pair{tail_at, size - tail_at}}) {
    absl::StatusOr<std::string> part = ReadAt(in, path, offset, n);
    if (!part.ok()) return part.status();
    bytes += *part;
  }
  return Sha256Hex(bytes);
}

}  // namespace

absl::StatusOr<std::vector<InputDigest>> DigestJobInputs(const std::string& model_path, const std::string& calib_path) {
  std::vector<InputDigest> out;
  if (!IsSyntheticModel(model_path)) {
    for (const char* name : kWholeFiles) {
      const std::string path = (fs::path(model_path) / name).string();
      if (!PathExists(path)) continue;
      absl::StatusOr<std::string> d = Sha256FileHex(path);
      if (!d.ok()) return d.status();
      out.push_back({path, *d});
    }
    std::vector<std::string> shards;
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(model_path, ec)) {
      if (e.path().extension() == ".safetensors") shards.push_back(e.path().string());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(model_path, ": cannot list: ", ec.message()));
    std::sort(shards.begin(), shards.end());
    for (const std::string& path : shards) {
      absl::StatusOr<std::string> d = ShardDigest(path);
      if (!d.ok()) return d.status();
      out.push_back({path, *d});
    }
  }
  if (!calib_path.empty()) {
    absl::StatusOr<std::string> d = Sha256FileHex(calib_path);
    if (!d.ok()) return d.status();
    out.push_back({calib_path, *d});
  }
  return out;
}

std::string FirstInputChange(const std::vector<InputDigest>& recorded, const std::vector<InputDigest>& now) {
  std::map<std::string, std::string> current;
  for (const InputDigest& d : now) current[d.path] = d.sha256;
  for (const InputDigest& d : recorded) {
    auto it = current.find(d.path);
    if (it == current.end()) return absl::StrCat(d.path, " is gone");
    if (it->second != d.sha256) return absl::StrCat(d.path, " changed");
    current.erase(it);
  }
  if (!current.empty()) return absl::StrCat(current.begin()->first, " is new");
  return "";
}

}  // namespace qf::storage
