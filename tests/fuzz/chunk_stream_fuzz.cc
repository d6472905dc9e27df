// File: tests/fuzz/chunk_stream_fuzz.cc
//
// The coordinator's end of PutLayer (coordinator/layer_codec.h, ChunkJoiner):
// a stream of LayerChunk messages, each framed in the input as a 4-byte
// little-endian length and that many bytes of the serialized chunk (a frame
// that does not parse ends the stream, as a broken RPC would). The stream
// stops at the first refusal, as the service does. A refusal is one line that
// names the chunk or the layer; an accepted layer is exactly its chunks' data,
// in order, total_bytes long, each chunk's SHA-256 as sent.
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "coordinator/layer_codec.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

std::string Frame(const qf::proto::LayerChunk& c) {
  const std::string body = c.SerializeAsString();
  const uint32_t n = static_cast<uint32_t>(body.size());
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + body;
}

// The seeds: a 300-byte layer in one chunk, in three of 128 bytes, and an
// empty one (QF_FUZZ_WRITE_CHUNK_SEEDS=DIR).
void WriteSeeds(const std::string& dir) {
  std::string layer(300, '\0');
  for (size_t i = 0; i < layer.size(); ++i) layer[i] = static_cast<char>(i * 37 + 11);
  struct Seed {
    const char* file;
    std::string bytes;
    size_t chunk;
  };
  for (const Seed& s : {Seed{"one_chunk.bin", layer, 1 << 20}, Seed{"three_chunks.bin", layer, 128},
                        Seed{"empty_layer.bin", "", 128}}) {
    std::string framed;
    for (qf::proto::LayerChunk& c : qf::coordinator::SplitLayer(s.bytes, s.chunk)) {
      c.set_attempt_id(41);
      c.set_job_id("job-7");
      c.set_layer(3);
      framed += Frame(c);
    }
    std::ofstream(dir + "/" + s.file, std::ios::binary) << framed;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qf::fuzz::WriteSeedsOnce("QF_FUZZ_WRITE_CHUNK_SEEDS", WriteSeeds);
  qf::coordinator::ChunkJoiner joiner;
  std::string sent;  // the data of every chunk the joiner took
  uint32_t taken = 0;
  size_t at = 0;
  while (size - at >= 4) {
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(data[at + i]) << (8 * i);
    at += 4;
    if (n > size - at) break;
    qf::proto::LayerChunk chunk;
    const bool parsed = chunk.ParseFromArray(data + at, static_cast<int>(n));
    at += n;
    if (!parsed) break;
    const absl::Status s = joiner.Add(chunk);
    if (!s.ok()) {
      qf::fuzz::CheckRefusal(s, "chunk ");
      QF_FUZZ_CHECK(s.message().find(" of layer ") != absl::string_view::npos, "refusal names no layer: %s",
                    std::string(s.message()).c_str());
      return 0;
    }
    QF_FUZZ_CHECK(qf::Sha256Hex(chunk.data()) == chunk.sha256(), "took chunk %u with a wrong sha256", taken);
    sent += chunk.data();
    ++taken;
  }
  auto layer = joiner.Finish();
  if (!layer.ok()) {
    qf::fuzz::CheckRefusal(layer.status(), "layer");
    return 0;
  }
  qf::fuzz::NoteAccepted();
  QF_FUZZ_CHECK(*layer == sent, "the layer (%zu bytes) is not its chunks' data (%zu bytes)", layer->size(), sent.size());
  QF_FUZZ_CHECK(layer->size() == joiner.header().total_bytes(), "%zu bytes, total_bytes %llu", layer->size(),
                static_cast<unsigned long long>(joiner.header().total_bytes()));
  QF_FUZZ_CHECK(taken == joiner.header().count(), "%u chunks taken, count %u", taken, joiner.header().count());
  return 0;
}
