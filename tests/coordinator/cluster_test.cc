// End to end in one process: the real Coordinator (RocksDB, gRPC services over
// an in-process channel, assembler) with Worker threads over a FakeEngine.
// Artifacts are compared byte for byte with a single uninterrupted run.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "coordinator/embedded.h"
#include "nlohmann/json.hpp"
#include "tests/coordinator/cluster_fixture.h"
#include "tests/coordinator/full_disk_env.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::_;

class ClusterTest : public qf::testing::ClusterFixture {
 protected:
  // Polls until `pred(status)` holds (or 20 s pass).
  template <typename Pred>
  proto::JobStatus WaitFor(const std::string& job, Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    proto::JobStatus st;
    while (std::chrono::steady_clock::now() < deadline) {
      auto s = client_->Get(job);
      if (s.ok()) {
        st = *s;
        if (pred(st)) return st;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "timed out waiting on " << job << ", state " << proto::JobState_Name(st.state());
    return st;
  }

  // Starts a coordinator whose leases outlive the test (a minute) and submits
  // `spec` with max_attempts 1 to it: a stage that moved to another worker
  // then neither waited for its lease to expire nor counted a failure.
  // The job id ("" on error).
  std::string SubmitWithLongLeases(proto::JobSpec spec) {
    SchedulerOptions so;
    so.lease_ttl_ms = 60000;
    StartCoordinator(so);
    spec.set_max_attempts(1);
    auto submitted = client_->Submit(spec);
    EXPECT_THAT(submitted, IsOk());
    return submitted.ok() ? submitted->job_id() : "";
  }
};

TEST_F(ClusterTest, SequentialStagesMoveBetweenWorkersAndBytesMatch) {
  SchedulerOptions so;
  so.affinity_grace_ms = 0;  // any idle worker may take the next stage: forces replays
  StartCoordinator(so);
  worker::Worker* w0 = StartWorker("w0");
  worker::Worker* w1 = StartWorker("w1");
  worker::Worker* w2 = StartWorker("w2");
  proto::JobStatus done = RunToEnd(Spec(1));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.layers_committed(), 4);
  qf::testing::ExpectSameTree(Reference(Spec(1)), done.artifact_dir());
  EXPECT_EQ(w0->stats().tasks_completed + w1->stats().tasks_completed + w2->stats().tasks_completed, 4);
  // Watch saw the whole story, in order, ending with success.
  std::vector<proto::EventKind> kinds = Kinds();
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.front(), proto::EVENT_SUBMITTED);
  EXPECT_EQ(kinds.back(), proto::EVENT_SUCCEEDED);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), proto::EVENT_LAYER_COMMITTED), 4);
  EXPECT_EQ(updates_.back().status().state(), proto::JOB_SUCCEEDED);
  for (size_t i = 1; i < updates_.size(); ++i) EXPECT_EQ(updates_[i].event().seq(), updates_[i - 1].event().seq() + 1);
}

TEST_F(ClusterTest, AffinityKeepsTheSessionWithoutReplay) {
  StartCoordinator();  // default grace: the next stage waits for its worker
  worker::Worker* w0 = StartWorker("w0");
  proto::JobStatus done = RunToEnd(Spec(1));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(w0->stats().sessions_reused, 3);  // stages 1..3 started from the kept session
  EXPECT_EQ(w0->stats().layers_replayed, 0);
  qf::testing::ExpectSameTree(Reference(Spec(4)), done.artifact_dir());  // same bytes as one 4-layer stage
}

TEST_F(ClusterTest, ParallelStagesMatchTheirReference) {
  StartCoordinator();
  StartWorker("w0");
  StartWorker("w1");
  StartWorker("w2");
  proto::JobSpec spec = Spec(2, proto::MODE_PARALLEL);
  proto::JobStatus done = RunToEnd(spec);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  qf::testing::ExpectSameTree(Reference(spec), done.artifact_dir());
}

TEST_F(ClusterTest, CorruptedChunkIsRejectedAndResent) {
  StartCoordinator();
  worker::WorkerOptions o;
  o.client.corrupt_layer_once = 2;
  o.client.chunk_bytes = 16 << 10;  // several chunks per layer
  StartWorker("w0", o);
  proto::JobStatus done = RunToEnd(Spec(4));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  qf::testing::ExpectSameTree(Reference(Spec(4)), done.artifact_dir());
  auto rejected = std::find_if(updates_.begin(), updates_.end(), [](const proto::WatchUpdate& u) {
    return u.event().kind() == proto::EVENT_LAYER_REJECTED;
  });
  ASSERT_NE(rejected, updates_.end());
  EXPECT_EQ(rejected->event().layer(), 2);
  EXPECT_THAT(rejected->event().message(), HasSubstr("sha256 mismatch"));
}

TEST_F(ClusterTest, LateWorkerCannotCommitAfterItsLeaseExpired) {
  SchedulerOptions so;
  so.lease_ttl_ms = 300;
  so.renew_interval_ms = 50;
  so.affinity_grace_ms = 0;
  StartCoordinator(so);
  worker::WorkerOptions slow;
  slow.stall_after_layer = 1;  // computes layer 1, then goes quiet past its lease
  slow.stall_ms = 1200;
  worker::Worker* late = StartWorker("late", slow);
  proto::JobSpec spec = Spec(4);
  auto submitted = client_->Submit(spec);
  ASSERT_THAT(submitted, IsOk());
  // Let "late" take the stage before a healthy worker exists.
  WaitFor(submitted->job_id(), [](const proto::JobStatus& s) { return s.layers_committed() >= 1; });
  StartWorker("healthy");
  auto done = client_->Watch(submitted->job_id(), [&](const proto::WatchUpdate& u) { updates_.push_back(u); });
  ASSERT_THAT(done, IsOk());
  ASSERT_EQ(done->state(), proto::JOB_SUCCEEDED) << done->reason();
  // Give the late worker time to wake up and be refused.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (late->stats().tasks_abandoned == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GE(late->stats().tasks_abandoned, 1);
  EXPECT_THAT(Kinds(), Contains(proto::EVENT_LEASE_EXPIRED));
  qf::testing::ExpectSameTree(Reference(spec), done->artifact_dir());
}

TEST_F(ClusterTest, CancelThenResumeGivesTheSameBytes) {
  StartCoordinator();
  qf::testing::FakeEngineOptions slow;
  slow.layer_delay_ms = 150;
  StartWorker("w0", {}, slow);
  proto::JobSpec spec = Spec(4);
  auto submitted = client_->Submit(spec);
  ASSERT_THAT(submitted, IsOk());
  const std::string job = submitted->job_id();
  WaitFor(job, [](const proto::JobStatus& s) { return s.layers_committed() >= 2; });
  auto cancelled = client_->Cancel(job, "operator said so");
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(cancelled->state(), proto::JOB_CANCELLED);
  EXPECT_EQ(cancelled->reason(), "operator said so");
  auto watched = client_->Watch(job, [](const proto::WatchUpdate&) {});  // ends: the job is terminal
  ASSERT_THAT(watched, IsOk());
  EXPECT_EQ(watched->state(), proto::JOB_CANCELLED);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the worker notices at its next layer
  auto resumed = client_->Resume(job);
  ASSERT_THAT(resumed, IsOk());
  EXPECT_EQ(resumed->state(), proto::JOB_RUNNING);
  auto done = client_->Watch(job, [](const proto::WatchUpdate&) {});
  ASSERT_THAT(done, IsOk());
  ASSERT_EQ(done->state(), proto::JOB_SUCCEEDED) << done->reason();
  qf::testing::ExpectSameTree(Reference(spec), done->artifact_dir());
}

TEST_F(ClusterTest, ClientSeesTheCoordinatorsErrors) {
  StartCoordinator();
  proto::JobSpec bad = Spec(1);
  bad.set_group_size(100);
  EXPECT_THAT(client_->Submit(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.group_size")));
  EXPECT_THAT(client_->Get("job-999999"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-999999")));
  EXPECT_THAT(client_->Watch("job-999999", [](const proto::WatchUpdate&) {}),
              StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(client_->Logs("job-999999"), StatusIs(absl::StatusCode::kNotFound, _));
  proto::JobSpec missing = Spec(1);
  missing.set_model_path(tmp_.Path("gone"));
  auto r = client_->Submit(missing);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status().state(), proto::JOB_FAILED);
  EXPECT_THAT(r->status().reason(), HasSubstr(tmp_.Path("gone")));
  auto logs = client_->Logs(r->job_id());
  ASSERT_THAT(logs, IsOk());
  ASSERT_EQ(logs->size(), 2u);
  EXPECT_EQ(logs->back().kind(), proto::EVENT_FAILED);
  auto list = client_->List({proto::JOB_FAILED});
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->size(), 1u);
}

TEST_F(ClusterTest, WrongShapedLayerIsRejectedOverTheWire) {
  StartCoordinator();
  auto submitted = client_->Submit(Spec(4));
  ASSERT_THAT(submitted, IsOk());
  worker::WorkClient wc(coordinator_->InProcessChannel(), {});
  ASSERT_THAT(wc.Register("bad", "cpu", "1"), IsOk());
  auto task = wc.Lease("bad", "1", nullptr);
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  auto cfg = storage::LoadModelConfig(TinyModel());
  ASSERT_THAT(cfg, IsOk());
  kernels::LayerResult r = qf::testing::MakeFakeLayer(*cfg, worker::ToQuantParams((*task)->spec()), 0, 1);
  r.linears[6].out_features = 128;  // mlp.down_proj should be [256 x 768]
  r.linears[6].codes.resize(128 * 768);
  r.linears[6].scales.resize(6 * 128);
  r.linears[6].zeros.resize(6 * 128);
  EXPECT_THAT(wc.PutLayer(**task, r), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr("mlp.down_proj"), HasSubstr("expected 256, got 128"))));
  auto st = client_->Get(submitted->job_id());
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->layers_committed(), 0);
  auto logs = client_->Logs(submitted->job_id());
  ASSERT_THAT(logs, IsOk());
  EXPECT_EQ(logs->back().kind(), proto::EVENT_LAYER_REJECTED);
  EXPECT_THAT(wc.FetchLayer(submitted->job_id(), 0), StatusIs(absl::StatusCode::kNotFound, _));
}

TEST_F(ClusterTest, WorkerFailuresFailTheJobWithTheLastError) {
  StartCoordinator();
  qf::testing::FakeEngineOptions broken;
  broken.fail_layer = 1;
  StartWorker("w0", {}, broken);
  proto::JobStatus done = RunToEnd(Spec(4));
  EXPECT_EQ(done.state(), proto::JOB_FAILED);
  EXPECT_THAT(done.reason(), AllOf(HasSubstr("failed 3 times"), HasSubstr("layer 1: transient failure")));
}

// The verify stage on a worker: after assembly, a worker (here the one that
// quantized) checks the artifact it can read at out_dir; the coordinator
// writes its report next to the artifact, whose own files are unchanged.
TEST_F(ClusterTest, VerifyStageRunsOnAWorkerAfterAssembly) {
  StartCoordinator();
  worker::Worker* w = StartWorker("w0");
  proto::JobSpec spec = Spec(2);
  spec.set_verify(true);
  spec.set_verify_dtype("bf16");
  proto::JobStatus done = RunToEnd(spec);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.verify_verdict(), "passed");
  EXPECT_EQ(done.verify_report(), spec.out_dir() + "/verify.json");
  // The worker counts the stage once Complete has answered, which the watch may beat.
  for (int i = 0; i < 500 && w->stats().verifies_completed == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(w->stats().verifies_completed, 1);
  EXPECT_THAT(Kinds(), Contains(proto::EVENT_VERIFYING));
  EXPECT_THAT(Kinds(), Contains(proto::EVENT_VERIFIED));

  std::map<std::string, std::string> tree = qf::testing::ReadTree(spec.out_dir());
  ASSERT_EQ(tree.count("verify.json"), 1u);
  const nlohmann::json report = nlohmann::json::parse(tree["verify.json"]);
  EXPECT_EQ(report["verdict"], "passed");
  EXPECT_EQ(report["artifact"], spec.out_dir());
  EXPECT_EQ(report["dtype"], "bf16");   // the job's verify settings reached the engine
  EXPECT_EQ(report["device"], "cpu");
  tree.erase("verify.json");
  spec.set_verify(false);
  spec.clear_verify_dtype();
  EXPECT_EQ(tree, qf::testing::ReadTree(Reference(spec)));
}

TEST_F(ClusterTest, FailedVerifyFailsTheJobAndKeepsTheArtifact) {
  StartCoordinator();
  StartWorker("w0", {}, {.verify_verdict = "failed"});
  proto::JobSpec spec = Spec(4);
  spec.set_verify(true);
  proto::JobStatus done = RunToEnd(spec);
  EXPECT_EQ(done.state(), proto::JOB_FAILED);
  EXPECT_THAT(done.reason(), AllOf(HasSubstr("verify: model.layers.0.self_attn.q_proj: max rel. error"),
                                   HasSubstr("the artifact stays")));
  EXPECT_EQ(done.verify_verdict(), "failed");
  EXPECT_TRUE(std::filesystem::exists(spec.out_dir() + "/qforge-manifest.json"));
  EXPECT_TRUE(std::filesystem::exists(spec.out_dir() + "/verify.json"));
}

// A worker whose engine cannot verify: transient errors are retried up to
// max_attempts, errors no retry can fix (the artifact disagrees with its
// manifest: DataLoss) fail the job at once.
TEST_F(ClusterTest, VerifyErrorsAreRetriedUnlessPermanent) {
  StartCoordinator();
  StartWorker("w0", {}, {.verify_error = absl::StatusCode::kUnavailable});
  proto::JobSpec spec = Spec(4);
  spec.set_verify(true);
  proto::JobStatus done = RunToEnd(spec);
  EXPECT_EQ(done.state(), proto::JOB_FAILED);
  EXPECT_THAT(done.reason(), AllOf(HasSubstr("stage 1 (verify) failed 3 times"), HasSubstr("fake verify error")));
  StopWorkers();
  nodes_.clear();

  StartWorker("w1", {}, {.verify_error = absl::StatusCode::kDataLoss});
  spec.set_out_dir(tmp_.Path("artifact-2"));
  done = RunToEnd(spec);
  EXPECT_EQ(done.state(), proto::JOB_FAILED);
  EXPECT_THAT(done.reason(), AllOf(HasSubstr("failed 1 time (permanent error)"), HasSubstr("fake verify error")));
}

// A worker asked to stop (SIGTERM: a pod drained) gives its stage back with
// Release: the next worker starts it at once, not after the lease's TTL
// (a minute here, longer than the test's wait), and no attempt is counted.
TEST_F(ClusterTest, StoppingWorkerGivesItsLayerStageBack) {
  proto::JobSpec spec = Spec(4);
  const std::string job = SubmitWithLongLeases(spec);
  ASSERT_FALSE(job.empty());
  StartWorker("w0", {}, {.layer_delay_ms = 100});
  WaitFor(job, [](const proto::JobStatus& s) { return s.layers_committed() >= 2; });
  nodes_[0]->stop = true;
  nodes_[0]->thread.join();
  ASSERT_THAT(nodes_[0]->status, IsOk());
  EXPECT_EQ(nodes_[0]->worker->stats().tasks_released, 1);
  worker::Worker* w1 = StartWorker("w1");
  proto::JobStatus done = WaitFor(job, [](const proto::JobStatus& s) { return s.state() == proto::JOB_SUCCEEDED; });
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.stages(0).failures(), 0);
  EXPECT_EQ(w1->stats().tasks_completed, 1);
  EXPECT_LE(w1->stats().layers_committed, 2);   // w0's committed layers stay
  auto events = client_->Logs(job);
  ASSERT_THAT(events, IsOk());
  std::vector<proto::EventKind> kinds;
  for (const auto& e : *events) kinds.push_back(e.kind());
  EXPECT_THAT(kinds, Contains(proto::EVENT_STAGE_RELEASED));
  EXPECT_THAT(kinds, ::testing::Not(Contains(proto::EVENT_LEASE_EXPIRED)));
  qf::testing::ExpectSameTree(Reference(spec), done.artifact_dir());
}

// The same for the verify stage, which has no layer boundary: the engine
// polls the worker's stop between its checks (VerifySpec::stop).
TEST_F(ClusterTest, StoppingWorkerGivesTheVerifyStageBack) {
  proto::JobSpec spec = Spec(4);
  spec.set_verify(true);
  const std::string job = SubmitWithLongLeases(spec);
  ASSERT_FALSE(job.empty());
  StartWorker("w0", {}, {.verify_delay_ms = 120000});
  WaitFor(job, [](const proto::JobStatus& s) { return s.state() == proto::JOB_VERIFYING; });
  while (nodes_[0]->engine->stats().verified == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto t0 = std::chrono::steady_clock::now();
  nodes_[0]->stop = true;
  nodes_[0]->thread.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(nodes_[0]->worker->stats().tasks_released, 1);
  worker::Worker* w1 = StartWorker("w1");
  proto::JobStatus done = WaitFor(job, [](const proto::JobStatus& s) { return s.state() == proto::JOB_SUCCEEDED; });
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.verify_verdict(), "passed");
  for (int i = 0; i < 500 && w1->stats().verifies_completed == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(w1->stats().verifies_completed, 1);
  EXPECT_EQ(nodes_[0]->worker->stats().verifies_completed, 0);
}

// Embedded mode picks up an interrupted run from its last committed layer.
TEST_F(ClusterTest, EmbeddedResumesAnInterruptedRun) {
  proto::JobSpec spec = Spec(0);
  const std::string state = tmp_.Path("embedded-state");
  {  // the "interrupted" run: two layers committed, then everything stops
    CoordinatorOptions o;
    o.state_dir = state;
    o.scheduler.default_stage_layers = 1 << 20;
    auto c = Coordinator::Start(o);
    ASSERT_THAT(c, IsOk());
    JobClient client((*c)->InProcessChannel());
    auto r = client.Submit(spec, EmbeddedRequestId(spec));
    ASSERT_THAT(r, IsOk());
    qf::testing::FakeEngine engine({.layer_delay_ms = 100});
    worker::WorkerOptions wo;
    wo.name = "embedded";
    wo.calibration = qf::testing::FakeCalibration;
    worker::Worker w((*c)->InProcessChannel(), &engine, wo);
    std::atomic<bool> stop{false};
    std::thread t([&] { w.Run(&stop).IgnoreError(); });
    while (w.stats().layers_committed < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop = true;
    t.join();
    (*c)->Shutdown();
  }
  qf::testing::FakeEngine engine;
  EmbeddedOptions eo;
  eo.state_dir = state;
  eo.engine = &engine;
  eo.calibration = qf::testing::FakeCalibration;
  int committed = 0;
  eo.on_update = [&](const proto::WatchUpdate& u) { committed = u.status().layers_committed(); };
  auto done = RunEmbedded(spec, eo);
  ASSERT_THAT(done, IsOk());
  EXPECT_EQ(committed, 4);
  EXPECT_GE(engine.stats().applied, 2);   // replayed the committed layers ...
  EXPECT_LE(engine.stats().quantized, 2); // ... and quantized only the rest
  qf::testing::ExpectSameTree(Reference(spec), done->artifact_dir());

  // Again: already done, nothing recomputed.
  qf::testing::FakeEngine idle;
  eo.engine = &idle;
  auto again = RunEmbedded(spec, eo);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->job_id(), done->job_id());
  EXPECT_EQ(idle.stats().sessions, 0);
}

// The state disk fills mid-job: the coordinator reports the store's failure
// once, the job's watcher is told why instead of waiting for ever, and the
// same command run again (room made) resumes from what was committed and
// writes the bytes of an uninterrupted run.
TEST_F(ClusterTest, FullStateDiskEndsTheWatchAndTheSameCommandResumes) {
  proto::JobSpec spec = Spec(0);
  const std::string state = tmp_.Path("embedded-state");
  qf::testing::FullDiskEnv disk;
  {
    CoordinatorOptions o;
    o.state_dir = state;
    o.scheduler.default_stage_layers = 1 << 20;
    o.store_env = disk.env.get();
    std::atomic<int> reported{0};
    o.on_store_failure = [&](const absl::Status& s) {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(state)));
      ++reported;
    };
    auto c = Coordinator::Start(o);
    ASSERT_THAT(c, IsOk());
    JobClient client((*c)->InProcessChannel());
    auto r = client.Submit(spec, EmbeddedRequestId(spec));
    ASSERT_THAT(r, IsOk());
    qf::testing::FakeEngine engine;
    worker::WorkerOptions wo;
    wo.name = "embedded";
    wo.calibration = qf::testing::FakeCalibration;
    worker::Worker w((*c)->InProcessChannel(), &engine, wo);
    disk.fs->set_budget(600 << 10);  // about one layer's results
    std::atomic<bool> stop{false};
    std::thread t([&] { w.Run(&stop).IgnoreError(); });
    auto watch = std::async(std::launch::async,
                            [&] { return client.Watch(r->job_id(), [](const proto::WatchUpdate&) {}); });
    if (watch.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << "the watch did not end when the state store failed";
      (*c)->Shutdown();  // ends the stream
    }
    auto watched = watch.get();
    stop = true;
    t.join();
    EXPECT_TRUE(disk.fs->refused());
    EXPECT_THAT(watched, StatusIs(absl::StatusCode::kResourceExhausted,
                                  AllOf(HasSubstr(state), HasSubstr("No space left on device"))));
    for (int i = 0; i < 100 && reported == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    (*c)->Shutdown();
    EXPECT_EQ(reported, 1);
  }
  qf::testing::FakeEngine engine;
  EmbeddedOptions eo;
  eo.state_dir = state;
  eo.engine = &engine;
  eo.calibration = qf::testing::FakeCalibration;
  auto done = RunEmbedded(spec, eo);
  ASSERT_THAT(done, IsOk());
  EXPECT_GE(engine.stats().applied, 1);     // replayed what was committed before the disk filled ...
  EXPECT_LT(engine.stats().quantized, 4);  // ... and did not quantize it again
  qf::testing::ExpectSameTree(Reference(spec), done->artifact_dir());
}

}  // namespace
}  // namespace qf::coordinator
