// File: storage/safetensors.h
//
// Reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors#format):
//   [u64 little-endian N][N bytes of JSON header][data]
//   header: {"__metadata__": {str: str}, NAME: {"dtype": D, "shape": [..],
//            "data_offsets": [begin, end]}, ...}, offsets relative to data start.
//
// The reader maps the file read-only and validates strictly before handing out
// any byte: header length inside the file, valid JSON object, known dtype,
// numel x dtype size == end - begin, every range inside the data area, no two
// tensors overlapping. Errors name the file and the tensor.
//
//   QF_ASSIGN_OR_RETURN(auto f, qf::storage::SafetensorsFile::Open("model.safetensors"));
//   QF_ASSIGN_OR_RETURN(const qf::storage::TensorView* t, f->Get("lm_head.weight"));
//   // t->data.size() == t->nbytes(); bytes stay valid while `f` lives.
//
//   std::vector<qf::storage::OwnedTensor> out = ...;
//   QF_RETURN_IF_ERROR(qf::storage::WriteSharded(dir, out, /*max_shard_bytes=*/2 << 30, {}));
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qf::storage {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F16" <-> DType::kF16, etc. (the spellings of the safetensors spec).
absl::StatusOr<DType> ParseDType(std::string_view s);
std::string_view DTypeName(DType d);
size_t DTypeSize(DType d);

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string_view data;   // points into the mapping; size == numel * DTypeSize(dtype)
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // InvalidArgument / DataLoss naming `path` (and the tensor) for any violation
  // listed above; NotFound if the file is missing.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensor names in file order of their data offsets.
  const std::vector<std::string>& names() const { return names_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(std::string_view name) const;
  // NotFound naming the file and the tensor.
  absl::StatusOr<const TensorView*> Get(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` ("weight_map": tensor -> shard file).
class Checkpoint {
 public:
  // NotFound if the directory holds neither; errors of any shard propagate.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;      // sorted
  bool Has(std::string_view name) const;
  // NotFound: "<dir>: tensor 'NAME' not found (expected in ...)".
  absl::StatusOr<const TensorView*> Get(std::string_view name) const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> where_;
};

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string data;        // size must equal numel * DTypeSize(dtype)
};

// Writes one file, tensors laid out in name order, header keys sorted (the same
// input always gives the same bytes). Header padded with spaces to 8 bytes.
absl::Status WriteFile(const std::string& path, const std::vector<OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

// Writes `model.safetensors` when everything fits in max_shard_bytes, otherwise
// `model-00001-of-0000N.safetensors` ... plus `model.safetensors.index.json`
// ({"metadata": {"total_size": bytes}, "weight_map": {...}}). Tensors are
// assigned to shards in name order. Returns the file names written.
absl::StatusOr<std::vector<std::string>> WriteSharded(
    const std::string& dir, const std::vector<OwnedTensor>& tensors, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata);

// fp16/bf16 <-> fp32 conversion helpers (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);

}  // namespace qf::storage
