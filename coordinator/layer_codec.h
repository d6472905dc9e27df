// File: coordinator/layer_codec.h
//
// A decoder layer's result on the wire and on disk:
//   kernels::LayerResult  <->  proto::LayerResultProto (codes/zeros bit-packed)
//   serialized bytes      <->  proto::LayerChunk stream (SHA-256 per chunk)
// plus ValidateLayer, the coordinator's check of a result against the model's
// config before it commits anything. Used by the coordinator and qworker.
//
//   std::string bytes = LayerToProto(result).SerializeAsString();
//   for (proto::LayerChunk& c : SplitLayer(bytes, 1 << 20)) { c.set_attempt_id(a); ... send ... }
//   // receiving side:
//   ChunkJoiner joiner;
//   for (each chunk) QF_RETURN_IF_ERROR(joiner.Add(chunk));   // DataLoss on a bad checksum
//   QF_ASSIGN_OR_RETURN(std::string bytes, joiner.Finish());
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant_types.h"
#include "proto/job.pb.h"
#include "proto/work.pb.h"
#include "storage/model_config.h"

namespace qf::coordinator {

// `values` (each < 2^bits) packed LSB-first at `bits` bits each.
std::string PackBits(const std::vector<uint8_t>& values, int bits);
// The inverse. InvalidArgument if `packed` is not ceil(count*bits/8) bytes.
absl::StatusOr<std::vector<uint8_t>> UnpackBits(std::string_view packed, int bits, int64_t count);

proto::LayerResultProto LayerToProto(const kernels::LayerResult& result);
// InvalidArgument naming the layer and tensor when a byte size disagrees with
// the declared shape.
absl::StatusOr<kernels::LayerResult> LayerFromProto(const proto::LayerResultProto& layer);

// Checks a worker's result for `layer` against the model and spec before it
// is committed. InvalidArgument "layer L: <tensor>: expected ..., got ..." for:
// a wrong layer index; a linear missing, repeated or unknown; out/in features
// other than config.json's; bits / group_size / sym / act_order other than the
// spec's; a wrong group count; packed sizes or g_idx entries that do not match;
// a dense tensor whose dtype/shape/bytes disagree (norms must be [hidden]);
// and what the assembler's packing would refuse later (kernels::ValidateGroupValues):
// a non-finite fp16 scale, a zero other than 2^(bits-1) in a symmetric job, a
// g_idx entry other than k / group_size without act-order.
absl::Status ValidateLayer(const proto::LayerResultProto& result, int layer,
                           const storage::ModelConfig& cfg, const proto::JobSpec& spec);

inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;
inline constexpr size_t kMaxChunkBytes = size_t{4} << 20;
inline constexpr uint64_t kMaxLayerBytes = uint64_t{2} << 30;

// Slices `bytes` into chunks of at most `chunk_bytes` (at least one chunk,
// empty data for an empty layer), filling index/count/total_bytes/data/sha256.
std::vector<proto::LayerChunk> SplitLayer(const std::string& bytes, size_t chunk_bytes);

// Reassembles one layer from its chunks, checking each as it arrives.
class ChunkJoiner {
 public:
  // DataLoss "chunk i/n of layer L: sha256 mismatch" for a corrupted chunk;
  // InvalidArgument for chunks out of order, inconsistent headers (attempt,
  // job, layer, count, total) or sizes beyond the limits above.
  absl::Status Add(const proto::LayerChunk& chunk);
  // The whole layer. InvalidArgument if chunks are missing or the size differs
  // from total_bytes.
  absl::StatusOr<std::string> Finish();
  bool started() const { return next_ > 0; }
  const proto::LayerChunk& header() const { return header_; }  // first chunk, without data

 private:
  proto::LayerChunk header_;
  uint32_t next_ = 0;
  std::string data_;
};

}  // namespace qf::coordinator
