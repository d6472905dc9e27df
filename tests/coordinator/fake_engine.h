// File: tests/coordinator/fake_engine.h
//
// Test doubles for the numeric engine (worker/engine/engine_host.h), so the
// coordinator and worker runtime are tested without libtorch:
//   MakeFakeLayer: a LayerResult with the shapes config.json asks for and
//     pseudo-random contents derived from a seed.
//   FakeEngine / FakeSession: a session whose "activations" are a 64-bit
//     hash chain. QuantizeLayer(i) derives layer i's result from the current
//     hash, then folds the result in; ApplyLayer folds a given result in;
//     ForwardOriginalLayer folds in the layer index. So a result depends on
//     every layer before it exactly as the real engine's do: a wrong replay
//     gives different bytes. The hand-off (ForwardOriginalCopy /
//     ReceiveActivations) moves that hash over the link like the real
//     engine's activations: a 64-byte ActivationHeader, then 8 bytes.
//
//   Verify: checks that the artifact directory holds a manifest and returns a
//     report with the configured verdict (or error), after a delay.
//
//   FakeEngine engine({.layer_delay_ms = 50});
//   auto session = engine.OpenSession(spec);
//   auto r = (*session)->QuantizeLayer(0, nullptr);
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "kernels/quant_types.h"
#include "storage/model_config.h"
#include "worker/engine/engine_host.h"

namespace qf::testing {

// Layer `layer` of a model with config `cfg` quantized with `q`, contents
// from `seed`.
kernels::LayerResult MakeFakeLayer(const storage::ModelConfig& cfg, const worker::QuantParams& q, int layer,
                                   uint64_t seed);
// FNV-1a style digest of everything in a result.
uint64_t HashLayer(const kernels::LayerResult& r);

struct FakeEngineOptions {
  int layer_delay_ms = 0;            // QuantizeLayer sleeps this long (to make room for kills / expiry)
  int fail_layer = -1;               // QuantizeLayer of this layer fails ...
  bool fail_permanent = false;       // ... with InvalidArgument (permanent) or Internal
  int forward_delay_ms = 0;          // ForwardOriginalLayer (and a copy's layers) sleep this long
  std::string verify_verdict = "passed";   // Verify's verdict: passed | failed | unsupported
  absl::StatusCode verify_error = absl::StatusCode::kOk;   // non-OK: Verify fails with this code
  int verify_delay_ms = 0;           // Verify takes this long, polling VerifySpec::stop
};

struct FakeEngineStats {
  std::atomic<int> sessions{0};       // OpenSession calls
  std::atomic<int> quantized{0};      // QuantizeLayer calls
  std::atomic<int> applied{0};        // ApplyLayer calls
  std::atomic<int> forwarded{0};      // ForwardOriginalLayer calls (a copy's layers included)
  std::atomic<int> received{0};       // ReceiveActivations that succeeded
  std::atomic<int> verified{0};       // Verify calls
};

class FakeEngine final : public worker::Engine {
 public:
  explicit FakeEngine(FakeEngineOptions options = {}) : options_(options) {}
  absl::StatusOr<std::unique_ptr<worker::Session>> OpenSession(const worker::SessionSpec& spec) override;
  absl::StatusOr<worker::EvalResult> Evaluate(const worker::EvalSpec&, const worker::EvalProgressFn&) override {
    return absl::UnimplementedError("fake engine: no eval");
  }
  absl::StatusOr<worker::VerifyReport> Verify(const worker::VerifySpec& spec,
                                              const worker::VerifyProgressFn& progress) override;
  FakeEngineStats& stats() { return stats_; }

 private:
  FakeEngineOptions options_;
  FakeEngineStats stats_;
};

}  // namespace qf::testing
