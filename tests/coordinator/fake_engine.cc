#include "tests/coordinator/fake_engine.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "storage/artifact.h"

namespace qf::testing {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

struct Rng {
  uint64_t s;
  uint64_t Next() {
    s += 0x9e3779b97f4a7c15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

template <typename T>
uint64_t HashVec(uint64_t h, const std::vector<T>& v) {
  for (const T& x : v) h = Mix(h, static_cast<uint64_t>(x));
  return h;
}

class Boundary final : public worker::BoundaryActivations {
 public:
  Boundary(uint64_t state, int layer) : state_(state), layer_(layer) {}
  int layer() const override { return layer_; }
  int64_t bytes() const override { return 8; }
  absl::Status Send(worker::ActivationLink* link) override {
    worker::ActivationHeader h;
    h.layer = layer_;
    h.bytes = 8;
    if (absl::Status s = link->Send(&h, sizeof(h), "cpu"); !s.ok()) return s;
    return link->Send(&state_, sizeof(state_), "cpu");
  }

 private:
  uint64_t state_;
  int layer_;
};

class FakeSession final : public worker::Session {
 public:
  FakeSession(storage::ModelConfig cfg, worker::SessionSpec spec, FakeEngineOptions options,
              FakeEngineStats* stats)
      : cfg_(std::move(cfg)), spec_(std::move(spec)), options_(options), stats_(stats) {
    state_ = Mix(0x1234, spec_.samples);
    state_ = Mix(state_, spec_.seqlen);
    state_ = HashVec(state_, spec_.calib_tokens);
  }
  int num_layers() const override { return static_cast<int>(cfg_.num_hidden_layers); }
  int next_layer() const override { return next_; }

  absl::StatusOr<kernels::LayerResult> QuantizeLayer(int layer, const worker::LayerProgressFn& progress) override {
    if (layer != next_)
      return absl::FailedPreconditionError(absl::StrCat("fake session at layer ", next_, ", asked for ", layer));
    if (options_.layer_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.layer_delay_ms));
    if (layer == options_.fail_layer) {
      return options_.fail_permanent ? absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": NaN weights"))
                                     : absl::InternalError(absl::StrCat("layer ", layer, ": transient failure"));
    }
    if (progress) progress("linears", 7, 7);
    kernels::LayerResult r = MakeFakeLayer(cfg_, spec_.quant, layer, state_);
    state_ = Mix(state_, HashLayer(r));
    ++next_;
    stats_->quantized++;
    return r;
  }

  absl::Status ApplyLayer(const kernels::LayerResult& result) override {
    if (result.layer != next_)
      return absl::FailedPreconditionError(absl::StrCat("fake session at layer ", next_, ", got result of layer ", result.layer));
    state_ = Mix(state_, HashLayer(result));
    ++next_;
    stats_->applied++;
    return absl::OkStatus();
  }

  absl::Status ForwardOriginalLayer(int layer) override {
    if (layer != next_) return absl::FailedPreconditionError("fake session: forward out of order");
    state_ = Original(state_, layer);
    ++next_;
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<worker::BoundaryActivations>> ForwardOriginalCopy(int end_layer) override {
    if (end_layer <= next_ || end_layer > num_layers()) return absl::InvalidArgumentError("fake session: bad end layer");
    uint64_t s = state_;
    for (int l = next_; l < end_layer; ++l) s = Original(s, l);
    return std::unique_ptr<worker::BoundaryActivations>(new Boundary(s, end_layer));
  }

  absl::Status ReceiveActivations(int layer, worker::ActivationLink* link) override {
    worker::ActivationHeader h;
    if (absl::Status st = link->Recv(&h, sizeof(h), "cpu"); !st.ok()) return st;
    if (h.magic != worker::ActivationHeader::kMagic || h.layer != layer || h.bytes != 8)
      return absl::DataLossError(absl::StrCat("fake session: header for layer ", h.layer, ", expected ", layer));
    uint64_t s = 0;
    if (absl::Status st = link->Recv(&s, sizeof(s), "cpu"); !st.ok()) return st;
    state_ = s;
    next_ = layer;
    stats_->received++;
    return absl::OkStatus();
  }

 private:
  // The FP16 layer `layer` applied to the hash (ForwardOriginalLayer, and a copy's).
  uint64_t Original(uint64_t s, int layer) {
    if (options_.forward_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.forward_delay_ms));
    stats_->forwarded++;
    return Mix(s, 0xf0f0 + layer);
  }

  storage::ModelConfig cfg_;
  worker::SessionSpec spec_;
  FakeEngineOptions options_;
  FakeEngineStats* stats_;
  uint64_t state_ = 0;
  int next_ = 0;
};

}  // namespace

kernels::LayerResult MakeFakeLayer(const storage::ModelConfig& cfg, const worker::QuantParams& q, int layer,
                                   uint64_t seed) {
  Rng rng{Mix(seed, layer)};
  const int64_t qd = cfg.num_attention_heads * cfg.head_dim, kv = cfg.num_key_value_heads * cfg.head_dim;
  const struct { const char* name; int64_t out, in; } shapes[] = {
      {"self_attn.q_proj", qd, cfg.hidden_size},          {"self_attn.k_proj", kv, cfg.hidden_size},
      {"self_attn.v_proj", kv, cfg.hidden_size},          {"self_attn.o_proj", cfg.hidden_size, qd},
      {"mlp.gate_proj", cfg.intermediate_size, cfg.hidden_size},
      {"mlp.up_proj", cfg.intermediate_size, cfg.hidden_size},
      {"mlp.down_proj", cfg.hidden_size, cfg.intermediate_size}};
  const bool desc_act = q.act_order && q.group_size != -1 && !q.static_groups;
  kernels::LayerResult r;
  r.layer = layer;
  for (const auto& s : shapes) {
    kernels::QuantizedLinear l;
    l.name = s.name;
    l.bits = q.bits;
    l.group_size = q.group_size;
    l.sym = q.sym;
    l.desc_act = desc_act;
    l.out_features = s.out;
    l.in_features = s.in;
    l.num_groups = q.group_size == -1 ? 1 : s.in / q.group_size;
    const uint32_t maxq = (1u << q.bits) - 1;
    l.codes.resize(s.out * s.in);
    for (auto& c : l.codes) c = static_cast<uint8_t>(rng.Next() & maxq);
    l.scales.resize(l.num_groups * s.out);
    for (auto& sc : l.scales) sc = static_cast<uint16_t>(0x2000 + (rng.Next() & 0x3ff));  // small positive halves
    l.zeros.resize(l.num_groups * s.out);
    for (auto& z : l.zeros) z = q.sym ? static_cast<uint8_t>(1u << (q.bits - 1)) : static_cast<uint8_t>(1 + rng.Next() % maxq);
    l.g_idx.resize(s.in);
    for (int64_t i = 0; i < s.in; ++i) l.g_idx[i] = q.group_size == -1 ? 0 : static_cast<int32_t>(i / q.group_size);
    if (desc_act) {  // a permutation of the groups' members, as act-order produces
      for (int64_t i = s.in - 1; i > 0; --i) std::swap(l.g_idx[i], l.g_idx[rng.Next() % (i + 1)]);
    }
    r.linears.push_back(std::move(l));
    r.errors.push_back(static_cast<double>(rng.Next() % 1000) / 1000.0);
  }
  for (const char* norm : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
    kernels::DenseTensor d{norm, "F16", {cfg.hidden_size}, std::string(cfg.hidden_size * 2, '\0')};
    for (int64_t i = 0; i < cfg.hidden_size; ++i) {
      uint16_t h = static_cast<uint16_t>(0x3c00 + (rng.Next() & 0xff));  // about 1.0
      d.data[2 * i] = static_cast<char>(h & 0xff);
      d.data[2 * i + 1] = static_cast<char>(h >> 8);
    }
    r.dense.push_back(std::move(d));
  }
  return r;
}

uint64_t HashLayer(const kernels::LayerResult& r) {
  uint64_t h = Mix(0xabc, r.layer);
  for (const auto& l : r.linears) {
    h = HashVec(h, l.codes);
    h = HashVec(h, l.scales);
    h = HashVec(h, l.zeros);
    h = HashVec(h, l.g_idx);
  }
  for (const auto& d : r.dense) h = HashVec(h, std::vector<char>(d.data.begin(), d.data.end()));
  return h;
}

absl::StatusOr<std::unique_ptr<worker::Session>> FakeEngine::OpenSession(const worker::SessionSpec& spec) {
  auto cfg = storage::LoadModelConfig(spec.model_dir);
  if (!cfg.ok()) return cfg.status();
  stats_.sessions++;
  return std::unique_ptr<worker::Session>(new FakeSession(*std::move(cfg), spec, options_, &stats_));
}

absl::StatusOr<worker::VerifyReport> FakeEngine::Verify(const worker::VerifySpec& spec,
                                                        const worker::VerifyProgressFn& progress) {
  stats_.verified++;
  // The delay stands for the real check's minutes: spec.stop is polled as the
  // engine polls it between linears.
  for (int waited = 0; waited < options_.verify_delay_ms; waited += 5) {
    if (spec.stop && spec.stop()) return absl::CancelledError("verify: stopped at fake linear");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (options_.verify_error != absl::StatusCode::kOk)
    return absl::Status(options_.verify_error, absl::StrCat(spec.artifact_dir, ": fake verify error"));
  if (!std::filesystem::exists(spec.artifact_dir + "/" + storage::kManifestName))
    return absl::NotFoundError(absl::StrCat(spec.artifact_dir, ": no ", storage::kManifestName));
  worker::VerifyReport r;
  r.artifact_dir = spec.artifact_dir;
  r.device = spec.device;
  r.dtype = spec.dtype;
  r.verdict = options_.verify_verdict;
  worker::VerifyLinear l;
  l.tensor = "model.layers.0.self_attn.q_proj";
  l.status = r.verdict == "failed" ? "fail" : r.verdict == "unsupported" ? "unsupported" : "ok";
  l.max_rel_err = r.verdict == "failed" ? 0.5 : 1e-4;
  l.threshold = 2e-3;
  if (r.verdict == "failed") r.failure = "model.layers.0.self_attn.q_proj: max rel. error 5.0e-01 > 2e-03";
  r.linears.push_back(l);
  if (progress) progress("linears", 1, 1);
  return r;
}

}  // namespace qf::testing
