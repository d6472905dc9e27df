// Host-path cost of one decoder layer result, stage by stage, on a synthetic
// Llama-8B- or 70B-shaped LayerResult (4-bit codes, group size 128):
//
//   encode   LayerToProto + SerializeAsString              (worker)
//   split    SplitLayer: chunk copies + sha256 per chunk   (worker)
//   join     ChunkJoiner: sha256 check per chunk + concat  (coordinator)
//   check    ParseFromString + ValidateLayer               (coordinator)
//   commit   sha256 of the layer + one synced StateStore batch into `results`
//   read     Get + CommittedLayer parse + sha256 check     (assembler)
//   decode   ParseFromString + LayerFromProto              (assembler)
//   pack     PackGptqV1 / PackAwqGemm of the 7 linears, one thread
//
// The bit packing and format packing stages also run the implementations they
// replaced (kept here verbatim as baselines) in the same run, check that the
// bytes are identical, and print the speed-up.
//
//   build/bin/host_path_bench [--shape 8b|70b] [--state DIR] [--reps N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "bench/synthetic_layer.h"
#include "common/sha256.h"
#include "coordinator/layer_codec.h"
#include "kernels/ref/pack.h"
#include "proto/state.pb.h"
#include "storage/state/keys.h"
#include "storage/state_store.h"
#include "storage/synthetic_model.h"

namespace {

using namespace qf;
using Clock = std::chrono::steady_clock;

double Seconds(const std::function<void()>& fn, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

void Row(const char* stage, double s, double bytes) {
  std::printf("%-34s %9.3f s %9.2f GB/s\n", stage, s, bytes / s / 1e9);
}

// ---- baselines: the implementations before the host-path work ----
std::string OldPackBits(const std::vector<uint8_t>& values, int bits) {
  std::string out((values.size() * bits + 7) / 8, '\0');
  const uint32_t mask = (1u << bits) - 1;
  uint64_t bitpos = 0;
  for (uint8_t v : values) {
    uint32_t x = v & mask;
    for (int b = 0; b < bits; ++b, ++bitpos) {
      if (x & (1u << b)) out[bitpos >> 3] = static_cast<char>(out[bitpos >> 3] | (1 << (bitpos & 7)));
    }
  }
  return out;
}

std::vector<uint8_t> OldUnpackBits(std::string_view packed, int bits, int64_t count) {
  std::vector<uint8_t> out(count);
  uint64_t bitpos = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t x = 0;
    for (int b = 0; b < bits; ++b, ++bitpos) x |= ((static_cast<uint8_t>(packed[bitpos >> 3]) >> (bitpos & 7)) & 1u) << b;
    out[i] = static_cast<uint8_t>(x);
  }
  return out;
}

void PutStream(uint32_t* base, int64_t stride, int64_t index, int bits, uint32_t value) {
  const int64_t bit = index * bits;
  const int64_t word = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  base[word * stride] |= value << shift;
  if (shift + bits > 32) base[(word + 1) * stride] |= value >> (32 - shift);
}

std::vector<uint32_t> OldGptqQweight(const kernels::QuantizedLinear& q) {
  const int64_t n = q.out_features, k = q.in_features;
  std::vector<uint32_t> qweight(static_cast<size_t>(k * q.bits / 32 * n), 0u);
  for (int64_t o = 0; o < n; ++o) {
    const uint8_t* row = &q.codes[o * k];
    for (int64_t i = 0; i < k; ++i) PutStream(&qweight[o], n, i, q.bits, row[i]);
  }
  return qweight;
}

std::vector<uint32_t> OldAwqQweight(const kernels::QuantizedLinear& q) {
  const int64_t n = q.out_features, k = q.in_features, cols = n / 8;
  std::vector<uint32_t> qweight(static_cast<size_t>(k * cols), 0u);
  for (int64_t c = 0; c < cols; ++c) {
    for (int nib = 0; nib < 8; ++nib) {
      const uint8_t* row = &q.codes[(c * 8 + kernels::kAwqOrder[nib]) * k];
      for (int64_t i = 0; i < k; ++i) qweight[i * cols + c] |= uint32_t{row[i]} << (4 * nib);
    }
  }
  return qweight;
}

bool SameWords(const std::vector<uint32_t>& w, const storage::OwnedTensor& t) {
  return t.data.size() == w.size() * 4 && std::memcmp(t.data.data(), w.data(), t.data.size()) == 0;
}

int Fail(const char* what) {
  std::fprintf(stderr, "host_path_bench: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "8b", state_dir = "/tmp/host_path_bench.state";
  int reps = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--shape") shape = argv[i + 1];
    else if (a == "--state") state_dir = argv[i + 1];
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else return Fail("usage: host_path_bench [--shape 8b|70b] [--state DIR] [--reps N]");
  }
  auto cfg = storage::LoadModelConfigOrSynthetic("synthetic:llama-" + shape);
  if (!cfg.ok()) return Fail("--shape: expected 8b or 70b");
  proto::JobSpec spec;
  spec.set_method("rtn");
  spec.set_bits(4);
  spec.set_group_size(128);

  const kernels::LayerResult layer = bench::MakeSyntheticLayer(*cfg, 0);
  double codes = 0;
  for (const auto& l : layer.linears) codes += static_cast<double>(l.codes.size());
  std::printf("synthetic:llama-%s layer: %.3g codes (4-bit, g128), best of %d\n\n", shape.c_str(), codes, reps);

  // ---- bit packing: new vs baseline ----
  std::printf("%-34s %11s %14s\n", "stage", "time", "throughput");
  const kernels::QuantizedLinear& big = layer.linears[4];   // gate_proj
  std::string packed_new, packed_old;
  const double t_pack_old = Seconds([&] { packed_old = OldPackBits(big.codes, 4); }, reps);
  const double t_pack_new = Seconds([&] { packed_new = coordinator::PackBits(big.codes, 4); }, reps);
  if (packed_new != packed_old) return Fail("PackBits differs from the baseline");
  std::vector<uint8_t> un_new, un_old;
  const int64_t nbig = static_cast<int64_t>(big.codes.size());
  const double t_un_old = Seconds([&] { un_old = OldUnpackBits(packed_old, 4, nbig); }, reps);
  const double t_un_new = Seconds([&] { un_new = *coordinator::UnpackBits(packed_new, 4, nbig); }, reps);
  if (un_new != un_old || un_new != big.codes) return Fail("UnpackBits differs from the baseline");
  Row("PackBits gate_proj, baseline", t_pack_old, static_cast<double>(nbig));
  Row("PackBits gate_proj", t_pack_new, static_cast<double>(nbig));
  Row("UnpackBits gate_proj, baseline", t_un_old, static_cast<double>(nbig));
  Row("UnpackBits gate_proj", t_un_new, static_cast<double>(nbig));

  // ---- the layer's path ----
  std::string bytes;
  const double t_encode = Seconds([&] { bytes = coordinator::LayerToProto(layer).SerializeAsString(); }, reps);
  const double lb = static_cast<double>(bytes.size());
  std::vector<proto::LayerChunk> chunks;
  const double t_split = Seconds([&] { chunks = coordinator::SplitLayer(bytes, coordinator::kDefaultChunkBytes); }, reps);
  std::string joined;
  const double t_join = Seconds([&] {
    coordinator::ChunkJoiner j;
    for (const auto& c : chunks) (void)j.Add(c);
    joined = *j.Finish();
  }, reps);
  if (joined != bytes) return Fail("joined bytes differ");
  proto::LayerResultProto parsed;
  absl::Status valid;
  const double t_check = Seconds([&] {
    parsed.ParseFromString(joined);
    valid = coordinator::ValidateLayer(parsed, 0, *cfg, spec);
  }, reps);
  if (!valid.ok()) return Fail(std::string(valid.message()).c_str());

  std::filesystem::remove_all(state_dir);
  auto store = storage::StateStore::Open(state_dir, storage::StateStoreOptions{});
  if (!store.ok()) return Fail(std::string(store.status().message()).c_str());
  int layer_no = 0;
  const double t_commit = Seconds([&] {
    proto::CommittedLayer c;
    c.set_attempt_id(1);
    c.set_sha256(Sha256Hex(joined));
    c.set_result(joined);
    storage::StateBatch b;
    b.Put(storage::StateFamily::kResults, storage::ResultKey("job-bench", layer_no++), c.SerializeAsString());
    absl::Status s = (*store)->WaitDurable((*store)->Enqueue(std::move(b)));
    if (!s.ok()) std::fprintf(stderr, "commit: %s\n", std::string(s.message()).c_str());
  }, reps);
  std::string result;
  const double t_read = Seconds([&] {
    auto v = (*store)->Get(storage::StateFamily::kResults, storage::ResultKey("job-bench", 0));
    proto::CommittedLayer c;
    if (!v.ok() || !v->has_value() || !c.ParseFromString(**v) || Sha256Hex(c.result()) != c.sha256()) std::abort();
    result = std::move(*c.mutable_result());
  }, reps);
  kernels::LayerResult back;
  const double t_decode = Seconds([&] {
    proto::LayerResultProto p;
    p.ParseFromString(result);
    back = *coordinator::LayerFromProto(p);
  }, reps);
  for (size_t j = 0; j < layer.linears.size(); ++j) {
    if (back.linears[j].codes != layer.linears[j].codes || back.linears[j].zeros != layer.linears[j].zeros)
      return Fail("decoded layer differs");
  }

  // ---- format packing: new vs baseline, all 7 linears, one thread ----
  double t_gptq_old = 0, t_gptq = 0, t_awq_old = 0, t_awq = 0;
  for (const auto& l : back.linears) {
    std::vector<uint32_t> old_w;
    absl::StatusOr<kernels::PackedLinear> p;
    t_gptq_old += Seconds([&] { old_w = OldGptqQweight(l); }, reps);
    t_gptq += Seconds([&] { p = kernels::PackGptqV1(l); }, reps);
    if (!p.ok() || !SameWords(old_w, p->qweight)) return Fail("GPTQ qweight differs from the baseline");
    t_awq_old += Seconds([&] { old_w = OldAwqQweight(l); }, reps);
    t_awq += Seconds([&] { p = kernels::PackAwqGemm(l); }, reps);
    if (!p.ok() || !SameWords(old_w, p->qweight)) return Fail("AWQ qweight differs from the baseline");
  }

  std::printf("\nper layer (%.3g serialized bytes):\n", lb);
  Row("encode (LayerToProto+serialize)", t_encode, lb);
  Row("split (chunks + sha256)", t_split, lb);
  Row("join (sha256 check + concat)", t_join, lb);
  Row("check (parse + ValidateLayer)", t_check, lb);
  Row("commit (sha256 + synced batch)", t_commit, lb);
  Row("read (get + parse + sha256)", t_read, lb);
  Row("decode (parse + LayerFromProto)", t_decode, lb);
  Row("pack GPTQ v1 qweight, baseline", t_gptq_old, codes);
  Row("pack GPTQ v1 (all tensors)", t_gptq, codes);
  Row("pack AWQ GEMM qweight, baseline", t_awq_old, codes);
  Row("pack AWQ GEMM (all tensors)", t_awq, codes);
  const double total = t_encode + t_split + t_join + t_check + t_commit + t_read + t_decode + t_gptq;
  std::printf("\ntotal host path per layer (GPTQ format): %.3f s\n", total);
  std::printf("speed-ups in this run: PackBits %.1fx, UnpackBits %.1fx, GPTQ qweight %.1fx, AWQ qweight %.1fx\n",
              t_pack_old / t_pack_new, t_un_old / t_un_new, t_gptq_old / t_gptq, t_awq_old / t_awq);
  store->reset();
  std::filesystem::remove_all(state_dir);
  return 0;
}
