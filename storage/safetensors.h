// File: storage/safetensors.h
//
// Reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors#format):
//   [u64 little-endian N][N bytes of JSON header][data]
//   header: {"__metadata__": {str: str}, NAME: {"dtype": D, "shape": [..],
//            "data_offsets": [begin, end]}, ...}, offsets relative to data start.
//
// The reader maps the file read-only and validates strictly before handing out
// any byte: header length inside the file (and at most kMaxHeaderBytes), valid
// JSON object without duplicate keys, known dtype, non-negative dims,
// numel x dtype size == end - begin, begin <= end, every range inside the data
// area, no two tensors overlapping, `__metadata__` a str -> str object. Every
// error is one line naming the file and, where there is one, the tensor.
// Nothing is copied: TensorView::data points into the mapping.
//
//   QF_ASSIGN_OR_RETURN(auto f, qf::storage::SafetensorsFile::Open("model.safetensors"));
//   QF_ASSIGN_OR_RETURN(const qf::storage::TensorView* t, f->Get("lm_head.weight"));
//   // t->data.size() == t->nbytes(); bytes stay valid while `f` lives.
//
//   std::vector<qf::storage::OwnedTensor> out = ...;
//   QF_RETURN_IF_ERROR(qf::storage::WriteSharded(dir, out, /*max_shard_bytes=*/2 << 30, {}).status());
//
// NOTE: a SafetensorsFile / Checkpoint is immutable after Open, so concurrent
// readers from several threads are safe.
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

// Every dtype of the safetensors spec. New values are only ever appended.
enum class DType {
  kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool,
  kU64, kU32, kU16, kF8E4M3, kF8E5M2,
};

// "F16" <-> DType::kF16, etc. (the spellings of the safetensors spec:
// F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL U64 U32 U16 F8_E4M3 F8_E5M2).
// InvalidArgument listing the known spellings for anything else.
absl::StatusOr<DType> ParseDType(std::string_view s);
std::string_view DTypeName(DType d);
size_t DTypeSize(DType d);

// Headers longer than this are rejected as corrupt (the reference
// implementation uses the same bound).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  // Points into the mapping; size == numel * DTypeSize(dtype). Aligned to the
  // element size only if the writer aligned it (our writer pads the header to
  // 8 bytes, so data starts 8-aligned): memcpy rather than cast when unsure.
  std::string_view data;
  int64_t numel() const;
  size_t nbytes() const { return data.size(); }
};

// Where the tensor data of the safetensors file at `path` starts (8 + the
// header length), from its first 8 bytes and its size. InvalidArgument for a
// header over kMaxHeaderBytes, DataLoss for one past the end; both name `path`.
absl::StatusOr<uint64_t> SafetensorsDataOffset(const char first8[8], uint64_t file_size, const std::string& path);

class SafetensorsFile {
 public:
  // NotFound if the file is missing; InvalidArgument for a directory, a header
  // that is not a JSON object, unknown dtypes, bad shapes, sizes or overlaps;
  // DataLoss for truncation (file < 8 bytes, header or tensor data past EOF).
  // Messages name `path` (and the tensor).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensor names in file order of their data offsets (ties by name).
  const std::vector<std::string>& names() const { return names_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(std::string_view name) const;
  // NotFound naming the file and the tensor.
  absl::StatusOr<const TensorView*> Get(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(std::string_view header, std::string_view data_area);

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` ("weight_map": tensor -> shard file). When
// both exist the single file wins (as in transformers).
// Read access to a set of named tensors: a checkpoint directory, or a
// synthetic model (storage/synthetic_model.h) for the artifact writer.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> names() const = 0;      // sorted
  // NotFound naming the source and the tensor.
  virtual absl::StatusOr<const TensorView*> Get(std::string_view name) const = 0;
};

class Checkpoint final : public TensorSource {
 public:
  // NotFound if the directory holds neither file. A malformed index, a shard
  // name that is not a plain file name, a shard that fails to open, or a tensor
  // the index maps to a shard that lacks it: an error naming the index (and the
  // shard and tensor). Tensors present in a shard but absent from the
  // weight_map are not exposed.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const override;      // sorted
  bool Has(std::string_view name) const;
  // NotFound: "<dir>: tensor 'NAME' not found (expected in ...)".
  absl::StatusOr<const TensorView*> Get(std::string_view name) const override;
  // The file holding `name` (for messages and per-shard scheduling), or
  // nullptr when the checkpoint has no such tensor.
  const SafetensorsFile* FileOf(std::string_view name) const;

 private:
  std::string dir_;
  std::string source_;   // "model.safetensors" or "model.safetensors.index.json"
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> where_;
};

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string data;        // size must equal numel * DTypeSize(dtype)
};

// A tensor to write whose bytes are in memory (`data`) or in an open file
// (`fd` >= 0: `size` bytes at `offset`, copied by the kernel where it can).
// The bytes must stay valid, and the file open, until the write returns.
// `release`: the range is punched out of `fd` once copied (a spill file whose
// bytes are needed once; file systems without hole punching keep them).
struct TensorRef {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string_view data;
  int fd = -1;
  uint64_t offset = 0;
  uint64_t size = 0;
  bool release = false;

  uint64_t bytes() const { return fd >= 0 ? size : data.size(); }
};
TensorRef RefOf(const OwnedTensor& t);

// Writes one file via a temp name + rename, tensors laid out contiguously in
// name order, header keys sorted (the same input always gives the same bytes),
// header padded with spaces to a multiple of 8. `__metadata__` is omitted when
// `metadata` is empty. InvalidArgument naming the tensor for an empty or
// duplicate name, the reserved name `__metadata__`, a negative dim, or a data
// size that does not match the shape; I/O errors name the path.
absl::Status WriteFile(const std::string& path, const std::vector<OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

// Writes `model.safetensors` when the total data size is <= max_shard_bytes,
// otherwise `model-00001-of-0000N.safetensors` ... plus
// `model.safetensors.index.json` ({"metadata": {"total_size": bytes},
// "weight_map": {...}}, keys sorted). Tensors are assigned to shards greedily
// in name order; a tensor bigger than max_shard_bytes gets a shard of its own.
// `metadata` goes into every shard. Creates `dir` if missing; expects it to
// hold no older checkpoint (write into a StagingDir). Returns the file names
// written (shards first, then the index).
absl::StatusOr<std::vector<std::string>> WriteSharded(
    const std::string& dir, const std::vector<OwnedTensor>& tensors, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata);

// The same files, bytes and errors for tensors whose bytes live elsewhere.
absl::StatusOr<std::vector<std::string>> WriteSharded(
    const std::string& dir, const std::vector<TensorRef>& tensors, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata);

// IEEE fp16 / bfloat16 <-> fp32. Narrowing rounds to nearest, ties to even;
// overflow gives +-Inf, NaN stays NaN (quiet, sign kept), fp16 subnormals are
// produced and read exactly.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);
// The element at `p` (little-endian, any alignment) of an F16, BF16 or F32
// tensor as float; `d` must be one of those three.
float FloatElement(DType d, const char* p);

// The flat index of the first NaN or Inf of a floating-point view, read from
// its bits (no conversion, no temporary), or -1 when every element is finite
// and for integer and bool dtypes, which have none. F8_E4M3 has no Inf; its
// NaN is the all-ones pattern.
int64_t FirstNonFinite(const TensorView& v);

}  // namespace qf::storage
