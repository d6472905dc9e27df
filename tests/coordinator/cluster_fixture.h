// File: tests/coordinator/cluster_fixture.h
//
// An in-process cluster for end-to-end tests: a Coordinator (state in a temp
// dir, services on an in-process channel) and worker threads running the real
// Worker loop over a FakeEngine, plus the reference a single uninterrupted
// run gives, to compare artifacts byte for byte.
//
//   class MyTest : public qf::testing::ClusterFixture {};
//   TEST_F(MyTest, X) {
//     StartCoordinator();
//     StartWorker("w0");
//     proto::JobStatus done = RunToEnd(Spec(1));
//     ExpectSameTree(Reference(Spec(1)), done.artifact_dir());
//   }
#pragma once

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/assembler.h"
#include "coordinator/client.h"
#include "coordinator/planner.h"
#include "coordinator/server.h"
#include "storage/artifact.h"
#include "tests/coordinator/fake_engine.h"
#include "tests/coordinator/test_util.h"
#include "worker/runtime/worker.h"

namespace qf::testing {

// Deterministic stand-in for the tokenizer: the ids depend on the spec only.
inline absl::StatusOr<std::vector<int32_t>> FakeCalibration(const proto::JobSpec& spec) {
  std::vector<int32_t> ids(static_cast<size_t>(spec.samples()) * spec.seqlen());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 2654435761u + spec.seed()) % 8000);
  return ids;
}

// Every regular file under `dir`, by relative path, with its bytes.
inline std::map<std::string, std::string> ReadTree(const std::string& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out[std::filesystem::relative(it->path(), dir).string()] = ss.str();
  }
  return out;
}

inline void ExpectSameTree(const std::string& expected_dir, const std::string& actual_dir) {
  auto expected = ReadTree(expected_dir), actual = ReadTree(actual_dir);
  ASSERT_FALSE(expected.empty()) << expected_dir << " is empty";
  std::vector<std::string> names_e, names_a;
  for (auto& [k, v] : expected) names_e.push_back(k);
  for (auto& [k, v] : actual) names_a.push_back(k);
  ASSERT_EQ(names_e, names_a);
  for (auto& [name, bytes] : expected) EXPECT_TRUE(bytes == actual[name]) << name << " differs";
}

class ClusterFixture : public ::testing::Test {
 protected:
  void TearDown() override {
    StopWorkers();
    if (coordinator_) coordinator_->Shutdown();
  }

  static std::string TinyModel() { return std::string(QF_SOURCE_DIR) + "/models/tiny-llama"; }

  proto::JobSpec Spec(int stage_layers, proto::Mode mode = proto::MODE_SEQUENTIAL, const std::string& out = "") {
    proto::JobSpec s;
    s.set_model_path(TinyModel());
    s.set_method("gptq");
    s.set_calib_path(std::string(QF_SOURCE_DIR) + "/data/calib.txt");
    s.set_samples(4);
    s.set_seqlen(16);
    s.set_seed(7);
    s.set_out_dir(out.empty() ? tmp_.Path("artifact") : out);
    s.set_stage_layers(stage_layers);
    s.set_mode(mode);
    return s;
  }

  void StartCoordinator(coordinator::SchedulerOptions so = {}) {
    coordinator::CoordinatorOptions o;
    o.state_dir = tmp_.Path("state");
    o.scheduler = so;
    o.maintenance_interval_ms = 20;
    auto c = coordinator::Coordinator::Start(o);
    ASSERT_THAT(c, IsOk());
    coordinator_ = *std::move(c);
    client_ = std::make_unique<coordinator::JobClient>(coordinator_->InProcessChannel());
  }

  // A worker thread over its own FakeEngine.
  worker::Worker* StartWorker(const std::string& name, worker::WorkerOptions o = {},
                              FakeEngineOptions engine_options = {}) {
    o.name = name;
    o.calibration = FakeCalibration;
    o.client.retry_window_ms = 5000;
    auto node = std::make_unique<Node>();
    node->engine = std::make_unique<FakeEngine>(engine_options);
    node->worker = std::make_unique<worker::Worker>(coordinator_->InProcessChannel(), node->engine.get(), o);
    Node* n = node.get();
    n->thread = std::thread([n] { n->status = n->worker->Run(&n->stop); });
    nodes_.push_back(std::move(node));
    return n->worker.get();
  }

  void StopWorkers() {
    for (auto& n : nodes_) n->stop = true;
    for (auto& n : nodes_) {
      if (n->thread.joinable()) n->thread.join();
    }
  }

  std::vector<proto::WatchUpdate> updates_;
  proto::JobStatus RunToEnd(const proto::JobSpec& spec) {
    auto submitted = client_->Submit(spec);
    EXPECT_THAT(submitted, IsOk());
    if (!submitted.ok()) return {};
    auto done = client_->Watch(submitted->job_id(), [&](const proto::WatchUpdate& u) { updates_.push_back(u); });
    EXPECT_THAT(done, IsOk());
    return done.ok() ? *done : proto::JobStatus();
  }

  // What one uninterrupted run writes: one session through every layer
  // (sequential), or per stage a session moved through the FP16 layers first
  // (parallel).
  std::string Reference(proto::JobSpec spec) {
    coordinator::ApplySpecDefaults(&spec);
    const std::string out = tmp_.Path(absl::StrCat("reference-", ref_count_++));
    auto cfg = storage::LoadModelConfig(spec.model_path());
    EXPECT_THAT(cfg, IsOk());
    FakeEngine engine;
    worker::SessionSpec ss;
    ss.model_dir = spec.model_path();
    ss.quant = worker::ToQuantParams(spec);
    ss.samples = spec.samples();
    ss.seqlen = spec.seqlen();
    ss.calib_tokens = *FakeCalibration(spec);
    const int n = static_cast<int>(cfg->num_hidden_layers);
    const int k = coordinator::ResolveStageLayers(spec, *cfg, 1);
    std::vector<kernels::LayerResult> layers;
    std::unique_ptr<worker::Session> session;
    for (int l = 0; l < n; ++l) {
      bool new_stage = spec.mode() == proto::MODE_PARALLEL ? l % k == 0 : l == 0;
      if (new_stage) {
        session = *engine.OpenSession(ss);
        for (int f = 0; f < l; ++f) EXPECT_THAT(session->ForwardOriginalLayer(f), IsOk());
      }
      layers.push_back(*session->QuantizeLayer(l, nullptr));
    }
    auto provenance = coordinator::ArtifactProvenance(spec, k);
    EXPECT_THAT(provenance, IsOk());
    EXPECT_THAT(storage::WriteArtifact(spec.model_path(), *cfg, coordinator::ToQuantSpec(spec), layers, out,
                                       *provenance),
                IsOk());
    return out;
  }

  std::vector<proto::EventKind> Kinds() const {
    std::vector<proto::EventKind> k;
    for (const auto& u : updates_) k.push_back(u.event().kind());
    return k;
  }

  struct Node {
    std::unique_ptr<FakeEngine> engine;
    std::unique_ptr<worker::Worker> worker;
    std::atomic<bool> stop{false};
    absl::Status status;
    std::thread thread;
  };

  TempDir tmp_;
  std::unique_ptr<coordinator::Coordinator> coordinator_;
  std::unique_ptr<coordinator::JobClient> client_;
  std::vector<std::unique_ptr<Node>> nodes_;
  int ref_count_ = 0;
};

}  // namespace qf::testing
