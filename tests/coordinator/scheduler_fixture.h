// File: tests/coordinator/scheduler_fixture.h
//
// A Scheduler over a RocksDB store in a temp dir with a FakeClock, plus
// one-line helpers for the worker-side calls, for scheduler and service tests.
//
//   class MyTest : public qf::testing::SchedulerFixture {};
//   TEST_F(MyTest, X) {
//     std::string job = SubmitOk(Spec(/*stage_layers=*/2));
//     Register("a");
//     proto::TaskAssignment t = LeaseOk("a");
//     QF_ASSERT_OK(Commit(t, 0));
//   }
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/layer_codec.h"
#include "coordinator/planner.h"
#include "coordinator/scheduler.h"
#include "storage/state_store.h"
#include "tests/coordinator/fake_engine.h"
#include "tests/coordinator/quant_params_of.h"
#include "tests/coordinator/test_util.h"

namespace qf::testing {

class SchedulerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.lease_ttl_ms = 10000;
    options_.renew_interval_ms = 2000;
    options_.affinity_grace_ms = 3000;
    Open();
    auto cfg = storage::LoadModelConfig(TinyModel());
    ASSERT_THAT(cfg, IsOk());
    cfg_ = *cfg;
  }

  static std::string TinyModel() { return std::string(QF_SOURCE_DIR) + "/models/tiny-llama"; }
  static std::string Calib() { return std::string(QF_SOURCE_DIR) + "/data/calib.txt"; }

  void Open() {
    auto store = storage::StateStore::Open(tmp_.Path("state"));
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
    auto s = coordinator::Scheduler::Create(store_.get(), &clock_, options_);
    ASSERT_THAT(s, IsOk());
    sched_ = *std::move(s);
  }
  void Reopen() {
    sched_.reset();
    store_.reset();
    Open();
  }

  proto::JobSpec Spec(int stage_layers, proto::Mode mode = proto::MODE_SEQUENTIAL) {
    proto::JobSpec s;
    s.set_model_path(TinyModel());
    s.set_method("gptq");
    s.set_calib_path(Calib());
    s.set_samples(4);
    s.set_seqlen(32);
    s.set_out_dir(tmp_.Path("artifact"));
    s.set_stage_layers(stage_layers);
    s.set_mode(mode);
    return s;
  }

  std::string SubmitOk(const proto::JobSpec& spec) {
    proto::SubmitRequest req;
    *req.mutable_spec() = spec;
    auto r = sched_->Submit(req);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? r->job_id() : "";
  }

  void Register(const std::string& name, const std::string& incarnation = "boot", const std::string& device = "cpu") {
    proto::RegisterRequest req;
    req.set_name(name);
    req.set_incarnation(incarnation);
    req.set_device(device);
    ASSERT_THAT(sched_->Register(req), IsOk());
  }

  std::optional<proto::TaskAssignment> TryLease(const std::string& worker, const std::string& incarnation = "boot") {
    proto::LeaseRequest req;
    req.set_worker_id(worker);
    req.set_incarnation(incarnation);
    auto r = sched_->Lease(req);
    EXPECT_THAT(r, IsOk());
    if (!r.ok() || !r->has_task()) return std::nullopt;
    return r->task();
  }

  proto::TaskAssignment LeaseOk(const std::string& worker, const std::string& incarnation = "boot") {
    auto t = TryLease(worker, incarnation);
    EXPECT_TRUE(t.has_value()) << worker << " got no task";
    return t.value_or(proto::TaskAssignment());
  }

  kernels::LayerResult FakeLayer(const proto::JobSpec& spec, int layer) {
    return MakeFakeLayer(cfg_, QuantParamsOf(spec), layer, 1000 + layer);
  }

  absl::StatusOr<proto::PutLayerReply> CommitBytes(const proto::TaskAssignment& t, int layer,
                                                   const std::string& bytes) {
    proto::LayerChunk header;
    header.set_attempt_id(t.attempt_id());
    header.set_job_id(t.job_id());
    header.set_layer(layer);
    return sched_->CommitLayer(header, bytes);
  }

  absl::StatusOr<proto::PutLayerReply> Commit(const proto::TaskAssignment& t, int layer) {
    return CommitBytes(t, layer, coordinator::LayerToProto(FakeLayer(t.spec(), layer)).SerializeAsString());
  }

  absl::StatusOr<proto::RenewReply> Renew(const proto::TaskAssignment& t, const std::string& worker) {
    proto::RenewRequest req;
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    return sched_->Renew(req);
  }

  absl::StatusOr<proto::CompleteReply> CompleteTask(const proto::TaskAssignment& t, const std::string& worker) {
    proto::CompleteRequest req;
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    return sched_->Complete(req);
  }

  absl::StatusOr<proto::FailReply> FailTask(const proto::TaskAssignment& t, const std::string& worker,
                                            const std::string& error, bool permanent) {
    proto::FailRequest req;
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    req.set_error(error);
    req.set_permanent(permanent);
    return sched_->Fail(req);
  }

  absl::StatusOr<proto::ReleaseReply> Release(const proto::TaskAssignment& t, const std::string& worker,
                                              const std::string& reason) {
    proto::ReleaseRequest req;
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    req.set_reason(reason);
    return sched_->Release(req);
  }
  std::vector<proto::EventKind> EventKinds(const std::string& job) {
    std::vector<proto::EventKind> kinds;
    auto events = sched_->Events(job, 0, 0);
    EXPECT_THAT(events, IsOk());
    if (events.ok()) {
      for (const auto& e : *events) kinds.push_back(e.kind());
    }
    return kinds;
  }

  TempDir tmp_;
  coordinator::FakeClock clock_;
  coordinator::SchedulerOptions options_;
  std::unique_ptr<storage::StateStore> store_;
  std::unique_ptr<coordinator::Scheduler> sched_;
  storage::ModelConfig cfg_;
};

}  // namespace qf::testing
