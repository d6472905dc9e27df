// The scheduler's state machine against a real RocksDB store in a temp dir,
// with a fake clock (leases expire when the test says so).
#include "coordinator/scheduler.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>

#include "coordinator/layer_codec.h"
#include "storage/state/keys.h"
#include "tests/coordinator/fake_engine.h"
#include "tests/coordinator/scheduler_fixture.h"
#include "tests/mutator.h"
#include "tests/proto_mutator.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::_;

class SchedulerTest : public qf::testing::SchedulerFixture {
 protected:
  // A one-stage job on `model`, leased to worker "a", its first `layers` layers
  // committed, then cancelled.
  std::string CancelledAfter(const std::string& model, int layers) {
    proto::JobSpec spec = Spec(4);
    spec.set_model_path(model);
    std::string job = SubmitOk(spec);
    Register("a");
    proto::TaskAssignment t = LeaseOk("a");
    for (int layer = 0; layer < layers; ++layer) EXPECT_THAT(Commit(t, layer), IsOk());
    EXPECT_THAT(sched_->Cancel(job, "").status(), IsOk());
    return job;
  }
};

TEST_F(SchedulerTest, SequentialJobRunsToSuccessWithAffinity) {
  std::string job = SubmitOk(Spec(2));
  Register("a");
  Register("b");
  proto::TaskAssignment s0 = LeaseOk("a");
  EXPECT_EQ(s0.job_id(), job);
  EXPECT_EQ(s0.stage(), 0);
  EXPECT_EQ(s0.first_layer(), 0);
  EXPECT_EQ(s0.end_layer(), 2);
  EXPECT_EQ(s0.start_layer(), 0);
  EXPECT_EQ(s0.num_layers(), 4);
  EXPECT_FALSE(TryLease("b").has_value());  // stage 1 is blocked behind stage 0
  QF_ASSERT_OK(Commit(s0, 0));
  QF_ASSERT_OK(Commit(s0, 1));
  QF_ASSERT_OK_AND_ASSIGN(proto::CompleteReply c0, CompleteTask(s0, "a"));
  EXPECT_FALSE(c0.job_done());

  // Stage 1 waits for "a", which holds its input activations.
  EXPECT_FALSE(TryLease("b").has_value());
  proto::TaskAssignment s1 = LeaseOk("a");
  EXPECT_EQ(s1.stage(), 1);
  EXPECT_EQ(s1.start_layer(), 2);
  EXPECT_GT(s1.attempt_id(), s0.attempt_id());
  QF_ASSERT_OK(Commit(s1, 2));
  QF_ASSERT_OK(Commit(s1, 3));
  QF_ASSERT_OK_AND_ASSIGN(proto::CompleteReply c1, CompleteTask(s1, "a"));
  EXPECT_TRUE(c1.job_done());

  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_ASSEMBLING);
  EXPECT_EQ(st.layers_committed(), 4);
  EXPECT_EQ(sched_->TakeJobsToAssemble(), std::vector<std::string>{job});
  EXPECT_TRUE(sched_->TakeJobsToAssemble().empty());  // taken once
  QF_ASSERT_OK_AND_ASSIGN(AssemblyInput in, sched_->LoadAssemblyInput(job));
  ASSERT_TRUE(in.layer);
  for (int i = 0; i < 4; ++i) {
    QF_ASSERT_OK_AND_ASSIGN(kernels::LayerResult r, in.layer(i));
    EXPECT_EQ(r.layer, i);
    EXPECT_EQ(qf::testing::HashLayer(r), qf::testing::HashLayer(FakeLayer(s0.spec(), i)));
  }
  EXPECT_FALSE(in.layer(4).ok());   // past the last committed layer
  EXPECT_EQ(in.stage_layers, 2);
  QF_ASSERT_OK(sched_->FinishAssembly(job, absl::OkStatus()));
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
  EXPECT_EQ(st.artifact_dir(), st.spec().out_dir());
  EXPECT_EQ(EventKinds(job),
            (std::vector<proto::EventKind>{proto::EVENT_SUBMITTED, proto::EVENT_STAGE_LEASED,
                                           proto::EVENT_LAYER_COMMITTED, proto::EVENT_LAYER_COMMITTED,
                                           proto::EVENT_STAGE_DONE, proto::EVENT_STAGE_LEASED,
                                           proto::EVENT_LAYER_COMMITTED, proto::EVENT_LAYER_COMMITTED,
                                           proto::EVENT_STAGE_DONE, proto::EVENT_ASSEMBLING,
                                           proto::EVENT_SUCCEEDED}));
}

// The coordinator restarted over state records that parse but hold nonsense
// (a bug in an older version, a hand edit, bit rot under the checksums): one
// job, task, lease or worker record mutated field by field. Loading either
// refuses on one line naming the state directory, or gives a scheduler whose
// reads, leases and expiry run without crashing.
TEST_F(SchedulerTest, MutatedStateRecordsLoadOrAreRefusedNamingTheStore) {
  const std::string job = SubmitOk(Spec(2));
  Register("a");
  const proto::TaskAssignment s0 = LeaseOk("a");
  QF_ASSERT_OK(Commit(s0, 0));
  struct Record { storage::StateFamily family; std::string key, value; };
  std::vector<Record> records;
  for (storage::StateFamily f : {storage::StateFamily::kJobs, storage::StateFamily::kTasks,
                                 storage::StateFamily::kLeases, storage::StateFamily::kMeta}) {
    QF_ASSERT_OK(store_->Scan(f, f == storage::StateFamily::kMeta ? storage::kWorkerPrefix : "",
                              [&](std::string_view k, std::string_view v) {
                                records.push_back({f, std::string(k), std::string(v)});
                                return true;
                              }));
  }
  ASSERT_EQ(records.size(), 5u);  // job, two tasks, the lease, worker "a"
  const auto message_for = [](storage::StateFamily f) -> std::unique_ptr<google::protobuf::Message> {
    switch (f) {
      case storage::StateFamily::kJobs: return std::make_unique<proto::JobRecord>();
      case storage::StateFamily::kTasks: return std::make_unique<proto::TaskRecord>();
      case storage::StateFamily::kLeases: return std::make_unique<proto::LeaseRecord>();
      default: return std::make_unique<proto::WorkerRecord>();
    }
  };
  const auto originals = [&] {
    storage::StateBatch b;
    for (const Record& r : records) b.Put(r.family, r.key, r.value);
    return b;
  };
  std::mt19937 rng(2026);
  for (int i = 0; i < 300; ++i) {
    storage::StateBatch b = originals();
    const Record& r = records[rng() % records.size()];
    std::unique_ptr<google::protobuf::Message> m = message_for(r.family);
    ASSERT_TRUE(m->ParseFromString(r.value));
    qf::testing::MutateMessageUpTo3(m.get(), rng);
    b.Put(r.family, r.key, m->SerializeAsString());
    QF_ASSERT_OK(store_->Commit(std::move(b)));
    sched_.reset();
    auto s = Scheduler::Create(store_.get(), &clock_, options_);
    if (!s.ok()) {
      qf::testing::ExpectRefusalNames(s.status(), store_->dir(), i);
      continue;
    }
    sched_ = *std::move(s);
    (void)sched_->GetJob(job);
    (void)sched_->ListJobs(proto::ListRequest());
    proto::LeaseRequest req;
    req.set_worker_id("b");
    req.set_incarnation("boot");
    (void)sched_->Lease(req);
    clock_.AdvanceMs(options_.lease_ttl_ms + 1);
    (void)sched_->ExpireLeases();
  }
  // Restored, the state loads and the job is where it was.
  QF_ASSERT_OK(store_->Commit(originals()));
  sched_.reset();
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_GE(st.layers_committed(), 1);
}

// A record that does not parse at all stops the restart with one line that
// names the state directory, the record's family and key (escaped: task and
// lease keys end in big-endian numbers) and the message it should hold, so
// the operator knows which record to restore. Its event log names the event.
TEST_F(SchedulerTest, UnparsableRecordsAreNamedByFamilyAndKey) {
  const std::string job = SubmitOk(Spec(2));
  Register("a");
  const proto::TaskAssignment t = LeaseOk("a");
  struct Case {
    storage::StateFamily family;
    std::string key, expect_key, expect_type;
  };
  const Case cases[] = {
      {storage::StateFamily::kJobs, job, job, "qf.proto.JobRecord"},
      {storage::StateFamily::kTasks, storage::TaskKey(job, 1), job + "/\\x00\\x00\\x00\\x01", "qf.proto.TaskRecord"},
      {storage::StateFamily::kLeases, storage::LeaseKey(t.attempt_id()), "\\x00", "qf.proto.LeaseRecord"},
      {storage::StateFamily::kMeta, storage::WorkerKey("a"), "worker/a", "qf.proto.WorkerRecord"},
  };
  for (const Case& c : cases) {
    QF_ASSERT_OK_AND_ASSIGN(std::optional<std::string> original, store_->Get(c.family, c.key));
    ASSERT_TRUE(original.has_value()) << c.key;
    storage::StateBatch bad;
    bad.Put(c.family, c.key, "\xff\xff not a record");
    QF_ASSERT_OK(store_->Commit(std::move(bad)));
    sched_.reset();
    auto s = Scheduler::Create(store_.get(), &clock_, options_);
    ASSERT_FALSE(s.ok()) << c.expect_type;
    EXPECT_THAT(s.status(), StatusIs(absl::StatusCode::kDataLoss,
                                     AllOf(HasSubstr(store_->dir()), HasSubstr(c.expect_key),
                                           HasSubstr(std::string(storage::StateFamilyName(c.family))), HasSubstr(c.expect_type))));
    EXPECT_EQ(std::string(s.status().message()).find('\n'), std::string::npos);
    storage::StateBatch restore;
    restore.Put(c.family, c.key, *original);
    QF_ASSERT_OK(store_->Commit(std::move(restore)));
  }
  // A string field with invalid UTF-8 (job_id = "\xff\xfe"): the same one-line refusal, and no
  // second line of protobuf's own on stderr.
  {
    QF_ASSERT_OK_AND_ASSIGN(std::optional<std::string> original, store_->Get(storage::StateFamily::kJobs, job));
    storage::StateBatch bad;
    bad.Put(storage::StateFamily::kJobs, job, std::string("\x0a\x02\xff\xfe", 4));
    QF_ASSERT_OK(store_->Commit(std::move(bad)));
    sched_.reset();
    ::testing::internal::CaptureStderr();
    auto s = Scheduler::Create(store_.get(), &clock_, options_);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_THAT(s.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("qf.proto.JobRecord")));
    EXPECT_EQ(err.find("libprotobuf"), std::string::npos) << err;
    storage::StateBatch restore;
    restore.Put(storage::StateFamily::kJobs, job, *original);
    QF_ASSERT_OK(store_->Commit(std::move(restore)));
  }
  Reopen();
  storage::StateBatch bad_event;
  bad_event.Put(storage::StateFamily::kEvents, storage::EventKey(job, 2), "\xff\xff");
  QF_ASSERT_OK(store_->Commit(std::move(bad_event)));
  EXPECT_THAT(sched_->Events(job, 0, 0),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(store_->dir()), HasSubstr("event 2 of job " + job), HasSubstr("qf.proto.JobEvent"))));
}

TEST_F(SchedulerTest, AffinityGivesWayAfterGraceOrWhenTheWorkerIsGone) {
  SubmitOk(Spec(2));
  Register("a");
  Register("b");
  proto::TaskAssignment s0 = LeaseOk("a");
  QF_ASSERT_OK(Commit(s0, 0));
  QF_ASSERT_OK(Commit(s0, 1));
  QF_ASSERT_OK(CompleteTask(s0, "a").status());
  EXPECT_FALSE(TryLease("b").has_value());
  clock_.AdvanceMs(options_.affinity_grace_ms + 1);
  auto s1 = TryLease("b");
  ASSERT_TRUE(s1.has_value());
  EXPECT_EQ(s1->stage(), 1);
  EXPECT_EQ(s1->start_layer(), 2);  // "b" rebuilds the input by replaying layers 0-1
}

TEST_F(SchedulerTest, ParallelStagesAreLeasedAtOnce) {
  SubmitOk(Spec(1, proto::MODE_PARALLEL));
  std::set<int> stages;
  for (const char* w : {"w0", "w1", "w2", "w3"}) {
    Register(w);
    stages.insert(LeaseOk(w).stage());
  }
  EXPECT_EQ(stages, (std::set<int>{0, 1, 2, 3}));
  Register("w4");
  EXPECT_FALSE(TryLease("w4").has_value());
}

TEST_F(SchedulerTest, ExpiredLeaseIsRequeuedAndTheLateWorkerCannotCommit) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  Register("b");
  proto::TaskAssignment a = LeaseOk("a");
  QF_ASSERT_OK(Commit(a, 0));
  clock_.AdvanceMs(options_.lease_ttl_ms + 1);
  QF_ASSERT_OK_AND_ASSIGN(int expired, sched_->ExpireLeases());
  EXPECT_EQ(expired, 1);

  // "a" wakes up late: every RPC of its attempt is refused, nothing lands.
  EXPECT_THAT(Commit(a, 1), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));
  EXPECT_THAT(sched_->FetchLayer(job, 1), StatusIs(absl::StatusCode::kNotFound, HasSubstr("layer 1")));
  EXPECT_THAT(Renew(a, "a"), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));
  EXPECT_THAT(CompleteTask(a, "a"), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));

  proto::TaskAssignment b = LeaseOk("b");
  EXPECT_EQ(b.start_layer(), 1);  // layer 0 stays committed
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.stages(0).failures(), 1);
  EXPECT_THAT(st.stages(0).last_error(), HasSubstr("expired"));
  EXPECT_EQ(st.layers_committed(), 1);
  // The lease is judged at the call, even before the sweep runs.
  clock_.AdvanceMs(options_.lease_ttl_ms + 1);
  EXPECT_THAT(Commit(b, 1), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));
}

TEST_F(SchedulerTest, RenewKeepsTheLeaseAlive) {
  SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment a = LeaseOk("a");
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMs(options_.lease_ttl_ms - 100);
    QF_ASSERT_OK(Renew(a, "a").status());
    QF_ASSERT_OK_AND_ASSIGN(int expired, sched_->ExpireLeases());
    EXPECT_EQ(expired, 0);
  }
  EXPECT_THAT(Renew(a, "someone-else"), StatusIs(absl::StatusCode::kAborted, HasSubstr("leased to a")));
}

TEST_F(SchedulerTest, FailuresExhaustAttemptsWithTheLastError) {
  proto::JobSpec spec = Spec(4);
  spec.set_max_attempts(2);
  std::string job = SubmitOk(spec);
  Register("a");
  proto::TaskAssignment t1 = LeaseOk("a");
  QF_ASSERT_OK_AND_ASSIGN(proto::FailReply f1, FailTask(t1, "a", "oom on layer 0", false));
  EXPECT_FALSE(f1.job_failed());
  proto::TaskAssignment t2 = LeaseOk("a");
  QF_ASSERT_OK_AND_ASSIGN(proto::FailReply f2, FailTask(t2, "a", "cuda error on layer 0", false));
  EXPECT_TRUE(f2.job_failed());
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), AllOf(HasSubstr("failed 2 times"), HasSubstr("cuda error on layer 0")));
  EXPECT_FALSE(TryLease("a").has_value());
}

TEST_F(SchedulerTest, PermanentFailureFailsTheJobAtOnce) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  QF_ASSERT_OK(FailTask(t, "a", "layer 0: NaN in weights", true).status());
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), HasSubstr("NaN in weights"));
}

// A worker that is stopping gives its stage back: queued at once for anyone,
// committed layers kept, no failure counted; a stale or foreign Release
// changes nothing.
TEST_F(SchedulerTest, ReleasedStageIsQueuedAtOnceWithoutAFailure) {
  proto::JobSpec spec = Spec(4);
  spec.set_max_attempts(1);   // a counted failure would fail the job
  std::string job = SubmitOk(spec);
  Register("a");
  Register("b");
  proto::TaskAssignment a = LeaseOk("a");
  QF_ASSERT_OK(Commit(a, 0));
  EXPECT_FALSE(TryLease("b").has_value());
  QF_ASSERT_OK(Release(a, "b", "not mine").status());   // not b's lease: nothing happens
  EXPECT_FALSE(TryLease("b").has_value());
  QF_ASSERT_OK(Release(a, "a", "worker a stopping").status());
  QF_ASSERT_OK(Release(a, "a", "worker a stopping").status());   // retried: still OK
  EXPECT_THAT(Commit(a, 1), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));

  proto::TaskAssignment b = LeaseOk("b");   // no clock advance: no expiry involved
  EXPECT_EQ(b.start_layer(), 1);
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);
  EXPECT_EQ(st.stages(0).failures(), 0);
  EXPECT_EQ(st.layers_committed(), 1);
  const std::vector<proto::EventKind> kinds = EventKinds(job);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), proto::EVENT_STAGE_RELEASED), 1);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), proto::EVENT_STAGE_FAILED), 0);
  for (int l = 1; l < 4; ++l) QF_ASSERT_OK(Commit(b, l));
  QF_ASSERT_OK(CompleteTask(b, "b").status());
}

TEST_F(SchedulerTest, CancelReleasesLeasesAndResumeContinuesFromTheLastCommittedLayer) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  QF_ASSERT_OK(Commit(t, 0));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->Cancel(job, ""));
  EXPECT_EQ(st.state(), proto::JOB_CANCELLED);
  EXPECT_EQ(st.reason(), "cancelled by user");
  EXPECT_THAT(Renew(t, "a"), StatusIs(absl::StatusCode::kAborted, HasSubstr("holds no lease")));
  EXPECT_THAT(Commit(t, 1), StatusIs(absl::StatusCode::kAborted, _));
  EXPECT_FALSE(TryLease("a").has_value());
  QF_EXPECT_OK(sched_->Cancel(job, "again"));  // a cancelled job: no-op

  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);
  proto::TaskAssignment r = LeaseOk("a");
  EXPECT_EQ(r.start_layer(), 1);
  EXPECT_NE(r.attempt_id(), t.attempt_id());
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.stages(0).failures(), 0);
}

// An assembly that fails (the artifact's disk full) fails the job but keeps
// every committed layer: resume goes straight back to assembly and leases
// nothing, so no layer is quantized twice.
TEST_F(SchedulerTest, ResumeAfterAFailedAssemblyAssemblesAgainWithoutLeasing) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  for (int layer = 0; layer < 4; ++layer) QF_ASSERT_OK(Commit(t, layer));
  QF_ASSERT_OK(CompleteTask(t, "a").status());
  EXPECT_EQ(sched_->TakeJobsToAssemble(), std::vector<std::string>{job});
  QF_ASSERT_OK(sched_->FinishAssembly(job, absl::ResourceExhaustedError("out/.packed-layers: write failed")));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), HasSubstr("write failed"));

  Reopen();  // what a second `qctl quantize` finds
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_ASSEMBLING);
  EXPECT_EQ(st.layers_committed(), 4);
  EXPECT_FALSE(TryLease("a").has_value());
  EXPECT_EQ(sched_->TakeJobsToAssemble(), std::vector<std::string>{job});
  QF_ASSERT_OK(sched_->FinishAssembly(job, absl::OkStatus()));
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
}

// A cancelled job outlives a coordinator restart with its progress: the new
// coordinator loads it without its model, and resume reads the model again
// but keeps the stages' committed layers. If the model's depth changed in
// between, resume refuses rather than mix two plans, naming the config.
TEST_F(SchedulerTest, ResumeAfterARestartContinuesFromTheLastCommittedLayer) {
  namespace fs = std::filesystem;
  const std::string model = tmp_.Path("model");
  fs::create_directories(model);
  for (const fs::directory_entry& e : fs::directory_iterator(TinyModel()))
    fs::create_symlink(e.path(), fs::path(model) / e.path().filename());
  const std::string job = CancelledAfter(model, 2);

  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);
  EXPECT_EQ(st.layers_committed(), 2);
  proto::TaskAssignment r = LeaseOk("a");
  EXPECT_EQ(r.start_layer(), 2);
  QF_ASSERT_OK(sched_->Cancel(job, "").status());

  // The same directory, now with a config.json that says 2 layers.
  std::ifstream in(fs::path(TinyModel()) / "config.json");
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string four = "\"num_hidden_layers\": 4";
  const size_t at = config.find(four);
  ASSERT_NE(at, std::string::npos);
  config.replace(at, four.size(), "\"num_hidden_layers\": 2");
  fs::remove(fs::path(model) / "config.json");
  std::ofstream(fs::path(model) / "config.json") << config;
  Reopen();
  EXPECT_THAT(sched_->Resume(job), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            AllOf(HasSubstr(job), HasSubstr(model + "/config.json"))));
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_CANCELLED);
  EXPECT_EQ(st.layers_committed(), 2);
}

// A new revision of the checkpoint pulled into the job's model directory
// mid-job: resuming would write an artifact of two models' layers. Resume
// refuses naming the file, a restarted coordinator fails the running job, and
// with the original weights back the job goes on from its committed layers.
TEST_F(SchedulerTest, ChangedInputsAreNotResumed) {
  namespace fs = std::filesystem;
  const std::string model = tmp_.Path("model");
  fs::copy(TinyModel(), model);
  const std::string shard = model + "/model.safetensors";
  const std::string job = CancelledAfter(model, 1);

  const auto flip = [&] {  // a byte of the first tensor's data
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    unsigned char len[8];
    f.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
    f.seekg(static_cast<std::streamoff>(8 + n + 10));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 1);
    f.seekp(static_cast<std::streamoff>(8 + n + 10));
    f.write(&c, 1);
  };
  flip();
  EXPECT_THAT(sched_->Resume(job), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            AllOf(HasSubstr(job), HasSubstr(shard + " changed " + kInputsChanged))));
  flip();
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);

  flip();  // while it runs, and the coordinator restarts
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), HasSubstr(shard + " changed " + kInputsChanged));
  EXPECT_FALSE(TryLease("a").has_value());
  flip();
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Resume(job));
  EXPECT_EQ(st.layers_committed(), 1);
  EXPECT_EQ(LeaseOk("a").start_layer(), 1);
}

TEST_F(SchedulerTest, JobsAreLeasedByPriorityThenSubmitOrder) {
  std::string j1 = SubmitOk(Spec(4));
  std::string j2 = SubmitOk(Spec(4));
  proto::JobSpec urgent = Spec(4);
  urgent.set_priority(5);
  std::string j3 = SubmitOk(urgent);
  Register("a");
  EXPECT_EQ(LeaseOk("a").job_id(), j3);
  EXPECT_EQ(LeaseOk("a").job_id(), j1);
  EXPECT_EQ(LeaseOk("a").job_id(), j2);
}

TEST_F(SchedulerTest, WrongShapeIsRejectedAndNothingCommitted) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  proto::LayerResultProto bad = LayerToProto(FakeLayer(t.spec(), 0));
  bad.mutable_linears(0)->set_out_features(128);
  EXPECT_THAT(CommitBytes(t, 0, bad.SerializeAsString()),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("self_attn.q_proj"), HasSubstr("out_features"))));
  EXPECT_THAT(CommitBytes(t, 0, "not a proto \xff\xff"), StatusIs(absl::StatusCode::kDataLoss, _));
  EXPECT_THAT(sched_->FetchLayer(job, 0), StatusIs(absl::StatusCode::kNotFound, _));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.layers_committed(), 0);
  std::vector<proto::EventKind> kinds = EventKinds(job);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), proto::EVENT_LAYER_REJECTED), 2);
  // Out-of-order and out-of-stage layers are refused too.
  EXPECT_THAT(Commit(t, 1), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expected layer 0")));
  QF_ASSERT_OK(Commit(t, 0));
  EXPECT_THAT(CompleteTask(t, "a"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("only 1 layers")));
}

TEST_F(SchedulerTest, UnreadableModelFailsTheJobBeforeAnyLease) {
  proto::JobSpec spec = Spec(1);
  spec.set_model_path(tmp_.Path("no-such-model"));
  proto::SubmitRequest req;
  *req.mutable_spec() = spec;
  QF_ASSERT_OK_AND_ASSIGN(proto::SubmitReply r, sched_->Submit(req));
  EXPECT_EQ(r.status().state(), proto::JOB_FAILED);
  EXPECT_THAT(r.status().reason(), HasSubstr(tmp_.Path("no-such-model")));
  Register("a");
  EXPECT_FALSE(TryLease("a").has_value());
  EXPECT_EQ(EventKinds(r.job_id()), (std::vector<proto::EventKind>{proto::EVENT_SUBMITTED, proto::EVENT_FAILED}));

  // The model shows up: resume plans the job and digests its inputs then.
  std::filesystem::copy(TinyModel(), tmp_.Path("no-such-model"));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->Resume(r.job_id()));
  EXPECT_EQ(st.state(), proto::JOB_QUEUED);
  QF_ASSERT_OK(sched_->Cancel(r.job_id(), "").status());
  std::ofstream(tmp_.Path("no-such-model/config.json"), std::ios::app) << "\n";
  EXPECT_THAT(sched_->Resume(r.job_id()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("config.json changed")));
}

TEST_F(SchedulerTest, BadRequestsAndUnknownIds) {
  proto::SubmitRequest req;
  *req.mutable_spec() = Spec(1);
  req.mutable_spec()->set_bits(9);
  EXPECT_THAT(sched_->Submit(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.bits")));
  EXPECT_TRUE(sched_->ListJobs({}).empty());  // nothing stored
  EXPECT_THAT(sched_->GetJob("job-424242"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-424242")));
  EXPECT_THAT(sched_->Cancel("job-424242", ""), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(sched_->Resume("job-424242"), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(sched_->Events("job-424242", 0, 0), StatusIs(absl::StatusCode::kNotFound, _));
  proto::RegisterRequest bad_name;
  bad_name.set_name("bad name/with slash");
  EXPECT_THAT(sched_->Register(bad_name), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RegisterRequest.name")));
  proto::LeaseRequest unknown;
  unknown.set_worker_id("ghost");
  EXPECT_THAT(sched_->Lease(unknown), StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));
  // Ids from a client are shown escaped: a newline cannot split the refusal.
  EXPECT_THAT(sched_->GetJob("job-1\nFAKE"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job job-1\\nFAKE: no such job")));
  unknown.set_worker_id("ghost\r\n");
  EXPECT_THAT(sched_->Lease(unknown), StatusIs(absl::StatusCode::kNotFound, HasSubstr("worker ghost\\r\\n: not registered")));
  req.mutable_spec()->set_bits(4);
  req.mutable_spec()->set_method(std::string(400, '\n'));
  const absl::Status long_method = sched_->Submit(req).status();
  EXPECT_THAT(long_method, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("... (400 bytes)")));
  EXPECT_EQ(std::string(long_method.message()).find('\n'), std::string::npos) << long_method;
}

TEST_F(SchedulerTest, RetriedCallsAreIdempotent) {
  proto::SubmitRequest req;
  *req.mutable_spec() = Spec(4);
  req.set_request_id("client-key-1");
  QF_ASSERT_OK_AND_ASSIGN(proto::SubmitReply first, sched_->Submit(req));
  QF_ASSERT_OK_AND_ASSIGN(proto::SubmitReply again, sched_->Submit(req));
  EXPECT_EQ(first.job_id(), again.job_id());
  EXPECT_FALSE(first.existing());
  EXPECT_TRUE(again.existing());
  EXPECT_EQ(sched_->ListJobs({}).size(), 1u);

  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  for (int layer = 0; layer < 4; ++layer) QF_ASSERT_OK(Commit(t, layer));
  QF_ASSERT_OK_AND_ASSIGN(proto::PutLayerReply dup, Commit(t, 2));
  EXPECT_TRUE(dup.duplicate());
  QF_ASSERT_OK(CompleteTask(t, "a").status());
  QF_ASSERT_OK_AND_ASSIGN(proto::CompleteReply c, CompleteTask(t, "a"));  // lease gone, answered as before
  EXPECT_TRUE(c.job_done());
  QF_ASSERT_OK_AND_ASSIGN(proto::PutLayerReply late_dup, Commit(t, 3));  // after the lease ended
  EXPECT_TRUE(late_dup.duplicate());
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(first.job_id()));
  EXPECT_EQ(st.layers_committed(), 4);
}

TEST_F(SchedulerTest, ReRegisteringWorkerReleasesItsLeases) {
  std::string job = SubmitOk(Spec(4));
  Register("a", "boot-1");
  proto::TaskAssignment t = LeaseOk("a", "boot-1");
  Register("a", "boot-2");  // the process restarted
  EXPECT_THAT(Renew(t, "a"), StatusIs(absl::StatusCode::kAborted, _));
  proto::TaskAssignment again = LeaseOk("a", "boot-2");
  EXPECT_EQ(again.stage(), 0);
  proto::LeaseRequest stale;
  stale.set_worker_id("a");
  stale.set_incarnation("boot-1");
  EXPECT_THAT(sched_->Lease(stale), StatusIs(absl::StatusCode::kAborted, HasSubstr("stale incarnation")));
}

TEST_F(SchedulerTest, RestartReloadsStateAndExpiresStaleLeases) {
  std::string job = SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  QF_ASSERT_OK(Commit(t, 0));
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);
  EXPECT_EQ(st.layers_committed(), 1);
  EXPECT_EQ(st.stages(0).state(), proto::TASK_LEASED);
  QF_ASSERT_OK(Renew(t, "a").status());  // a live lease survives the restart
  QF_ASSERT_OK(Commit(t, 1));

  clock_.AdvanceMs(options_.lease_ttl_ms + 1);  // down for longer than a lease
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.stages(0).state(), proto::TASK_QUEUED);
  EXPECT_EQ(st.stages(0).failures(), 1);
  EXPECT_THAT(Commit(t, 2), StatusIs(absl::StatusCode::kAborted, _));
  Register("b");
  proto::TaskAssignment b = LeaseOk("b");
  EXPECT_EQ(b.start_layer(), 2);
  EXPECT_GT(b.attempt_id(), t.attempt_id());  // attempt ids never repeat across restarts
  std::string next = SubmitOk(Spec(4));
  EXPECT_GT(next, job);  // nor do job ids
}

TEST_F(SchedulerTest, ALeaseLoadedAfterTheWallClockSteppedBackLastsOneTtl) {
  SubmitOk(Spec(4));
  Register("a");
  proto::TaskAssignment t = LeaseOk("a");
  // The coordinator dies with the lease live; its successor starts on a clock
  // ten hours behind (an NTP step, a host with a wrong RTC). The dead worker's
  // deadline, written on the old clock, is ten hours away on the new one.
  clock_.AdvanceMs(-10LL * 3600 * 1000);
  Reopen();
  clock_.AdvanceMs(options_.lease_ttl_ms - 1);
  QF_ASSERT_OK_AND_ASSIGN(int expired, sched_->ExpireLeases());
  EXPECT_EQ(expired, 0);
  clock_.AdvanceMs(2);
  QF_ASSERT_OK_AND_ASSIGN(expired, sched_->ExpireLeases());
  EXPECT_EQ(expired, 1);
  Register("b");
  EXPECT_EQ(LeaseOk("b").start_layer(), 0);
}

TEST(RealClockTest, AStepOfTheWallClockDoesNotMoveIt) {
  static std::atomic<int64_t> wall{1'700'000'000'000}, steady{5'000};
  RealClock clock([] { return wall.load(); }, [] { return steady.load(); });
  EXPECT_EQ(clock.NowMs(), 1'700'000'000'000);
  steady += 250;
  EXPECT_EQ(clock.NowMs(), 1'700'000'000'250);
  wall += 3'600'000;  // forward an hour: leases would all expire
  steady += 10;
  EXPECT_EQ(clock.NowMs(), 1'700'000'000'260);
  wall -= 7'200'000;  // back two: a dead worker's lease would outlive it
  steady += 10;
  EXPECT_EQ(clock.NowMs(), 1'700'000'000'270);
  RealClock real;  // the default sources: wall time, then steady
  EXPECT_NEAR(static_cast<double>(real.NowMs()), static_cast<double>(RealClock::SystemMs()), 1000.0);
}

// ---- The verify stage (JobSpec.verify) ----

class SchedulerVerifyTest : public SchedulerTest {
 protected:
  proto::JobSpec VerifySpec(int max_attempts = 3) {
    proto::JobSpec s = Spec(4);
    s.set_verify(true);
    s.set_max_attempts(max_attempts);
    return s;
  }
  // Runs the one layer stage and the assembly: the job is then VERIFYING.
  std::string ToVerifying(const proto::JobSpec& spec) {
    std::filesystem::create_directories(spec.out_dir());
    std::string job = SubmitOk(spec);
    Register("q");
    proto::TaskAssignment t = LeaseOk("q");
    EXPECT_FALSE(t.verify());
    auto st = sched_->GetJob(job);
    EXPECT_TRUE(st.ok() && st->stages_size() == 2 && st->stages(1).state() == proto::TASK_BLOCKED);
    for (int l = 0; l < 4; ++l) EXPECT_THAT(Commit(t, l), IsOk());
    auto done = CompleteTask(t, "q");
    EXPECT_THAT(done, IsOk());
    EXPECT_TRUE(done.ok() && done->job_done());
    EXPECT_FALSE(TryLease("q").has_value()) << "the verify stage waits for the artifact";
    EXPECT_EQ(sched_->TakeJobsToAssemble(), std::vector<std::string>{job});
    EXPECT_THAT(sched_->FinishAssembly(job, absl::OkStatus()), IsOk());
    return job;
  }
  absl::StatusOr<proto::CompleteReply> Report(const proto::TaskAssignment& t, const std::string& worker,
                                              const std::string& json) {
    proto::CompleteRequest req;
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    req.set_verify_report(json);
    return sched_->Complete(req);
  }
  static std::string ReadReport(const proto::JobSpec& spec) {
    std::ifstream in(spec.out_dir() + "/verify.json", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static constexpr const char* kPassed = R"({"verdict": "passed", "failure": null, "linear_checks": {"ok": 28}})";
  static constexpr const char* kFailed =
      R"({"verdict": "failed", "failure": "model.layers.2.mlp.down_proj: max rel. error 3.1e-01 > 2e-03"})";
};

TEST_F(SchedulerVerifyTest, RunsAfterAssemblyAndWritesItsReport) {
  const proto::JobSpec spec = VerifySpec();
  const std::string job = ToVerifying(spec);
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_VERIFYING);
  EXPECT_TRUE(st.artifact_dir().empty());   // not a result before it is verified
  ASSERT_EQ(st.stages_size(), 2);
  EXPECT_TRUE(st.stages(1).verify());
  EXPECT_EQ(st.stages(1).first_layer(), 4);
  EXPECT_EQ(st.stages(1).end_layer(), 4);
  EXPECT_EQ(st.stages(1).state(), proto::TASK_QUEUED);

  Register("v");
  proto::TaskAssignment v = LeaseOk("v");
  EXPECT_TRUE(v.verify());
  EXPECT_EQ(v.stage(), 1);
  EXPECT_EQ(v.start_layer(), 4);
  EXPECT_EQ(v.end_layer(), 4);
  EXPECT_EQ(v.spec().out_dir(), spec.out_dir());
  EXPECT_EQ(v.spec().verify_dtype(), "fp16");   // defaults filled in for the worker
  EXPECT_THAT(Commit(v, 3), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("LayerChunk.layer")));

  // Malformed reports are refused, naming the field; the lease stays.
  for (const char* bad : {"", "[1, 2]", "{\"verdict\": \"maybe\"}", "{\"verdict\": \"failed\"}", "{not json"}) {
    EXPECT_THAT(Report(v, "v", bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("CompleteRequest.verify_report")))
        << bad;
  }
  QF_ASSERT_OK(Renew(v, "v"));
  EXPECT_TRUE(ReadReport(spec).empty());

  QF_ASSERT_OK_AND_ASSIGN(proto::CompleteReply done, Report(v, "v", kPassed));
  EXPECT_TRUE(done.job_done());
  EXPECT_EQ(ReadReport(spec), std::string(kPassed) + "\n");
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
  EXPECT_EQ(st.artifact_dir(), spec.out_dir());
  EXPECT_EQ(st.verify_verdict(), "passed");
  EXPECT_EQ(st.verify_report(), spec.out_dir() + "/verify.json");
  EXPECT_EQ(st.stages(1).state(), proto::TASK_DONE);
  const std::vector<proto::EventKind> kinds = EventKinds(job);
  ASSERT_GE(kinds.size(), 5u);
  EXPECT_EQ(std::vector<proto::EventKind>(kinds.end() - 5, kinds.end()),
            (std::vector<proto::EventKind>{proto::EVENT_ASSEMBLING, proto::EVENT_VERIFYING,
                                           proto::EVENT_STAGE_LEASED, proto::EVENT_VERIFIED,
                                           proto::EVENT_SUCCEEDED}));
  // A retried Complete is answered as the first one; a restart keeps it all.
  QF_ASSERT_OK_AND_ASSIGN(done, Report(v, "v", kPassed));
  EXPECT_TRUE(done.job_done());
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
  EXPECT_EQ(st.verify_verdict(), "passed");
}

TEST_F(SchedulerVerifyTest, LayerStagesTakeNoReport) {
  std::string job = SubmitOk(VerifySpec());
  Register("q");
  proto::TaskAssignment t = LeaseOk("q");
  for (int l = 0; l < 4; ++l) QF_ASSERT_OK(Commit(t, l));
  EXPECT_THAT(Report(t, "q", kPassed), StatusIs(absl::StatusCode::kInvalidArgument,
                                                AllOf(HasSubstr("CompleteRequest.verify_report"), HasSubstr("stage 0"))));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_RUNNING);
}

TEST_F(SchedulerVerifyTest, FailedVerdictFailsTheJobAndResumeVerifiesAgain) {
  const proto::JobSpec spec = VerifySpec();
  const std::string job = ToVerifying(spec);
  Register("v");
  proto::TaskAssignment v = LeaseOk("v");
  QF_ASSERT_OK(Report(v, "v", kFailed));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), AllOf(HasSubstr("verify: model.layers.2.mlp.down_proj: max rel. error"),
                                 HasSubstr(spec.out_dir() + "/verify.json")));
  EXPECT_EQ(st.verify_verdict(), "failed");
  EXPECT_EQ(ReadReport(spec), std::string(kFailed) + "\n");   // the report stays for whoever looks

  // Resume assembles again (same bytes) and verifies again.
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_ASSEMBLING);
  EXPECT_TRUE(st.verify_verdict().empty());
  EXPECT_EQ(st.stages(1).state(), proto::TASK_BLOCKED);
  EXPECT_FALSE(TryLease("v").has_value());
  EXPECT_EQ(sched_->TakeJobsToAssemble(), std::vector<std::string>{job});
  QF_ASSERT_OK(sched_->FinishAssembly(job, absl::OkStatus()));
  proto::TaskAssignment again = LeaseOk("v");
  EXPECT_TRUE(again.verify());
  EXPECT_GT(again.attempt_id(), v.attempt_id());
  QF_ASSERT_OK(Report(again, "v", kPassed));
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
  EXPECT_EQ(st.verify_verdict(), "passed");
}

TEST_F(SchedulerVerifyTest, ExpiredLeaseIsRetriedAndWorkerErrorsExhaustAttempts) {
  const proto::JobSpec spec = VerifySpec(/*max_attempts=*/2);
  const std::string job = ToVerifying(spec);
  Register("a");
  Register("b");
  proto::TaskAssignment a = LeaseOk("a");
  clock_.AdvanceMs(options_.lease_ttl_ms + 1);
  QF_ASSERT_OK_AND_ASSIGN(int expired, sched_->ExpireLeases());
  EXPECT_EQ(expired, 1);
  // The late worker's report is refused before anything is written.
  EXPECT_THAT(Report(a, "a", kPassed), StatusIs(absl::StatusCode::kAborted, _));
  EXPECT_TRUE(ReadReport(spec).empty());
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_VERIFYING);
  EXPECT_EQ(st.stages(1).failures(), 1);

  proto::TaskAssignment b = LeaseOk("b");
  EXPECT_TRUE(b.verify());
  QF_ASSERT_OK_AND_ASSIGN(proto::FailReply f,
                          FailTask(b, "b", "verify: /artifacts/x: no such artifact directory", false));
  EXPECT_TRUE(f.job_failed());
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_FAILED);
  EXPECT_THAT(st.reason(), AllOf(HasSubstr("stage 1 (verify) failed 2 times"),
                                 HasSubstr("no such artifact directory")));
}

// The stage times the fused kernel on a GPU: CPU workers leave it to a live
// GPU worker, and take it only when none is left.
TEST_F(SchedulerVerifyTest, GpuWorkersGetTheStageWhileOneIsAlive) {
  const std::string job = ToVerifying(VerifySpec());   // quantized by the CPU worker "q"
  Register("gpu", "boot", "cuda:0");
  EXPECT_FALSE(TryLease("q").has_value()) << "a CPU worker took the verify stage from a live GPU worker";
  clock_.AdvanceMs(options_.lease_ttl_ms + 1);          // "gpu" goes silent
  Register("q");                                        // "q" is still here
  proto::TaskAssignment v = LeaseOk("q");
  EXPECT_TRUE(v.verify());
  QF_ASSERT_OK(FailTask(v, "q", "verify: transient", false));
  Register("gpu", "boot", "cuda:0");                     // back: the retry is its
  EXPECT_FALSE(TryLease("q").has_value());
  proto::TaskAssignment g = LeaseOk("gpu");
  EXPECT_TRUE(g.verify());
  QF_ASSERT_OK(Report(g, "gpu", kPassed));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_SUCCEEDED);
}

TEST_F(SchedulerVerifyTest, UnwritableReportIsAnErrorNamingThePath) {
  const proto::JobSpec spec = VerifySpec();
  const std::string job = ToVerifying(spec);
  Register("v");
  proto::TaskAssignment v = LeaseOk("v");
  std::filesystem::remove_all(spec.out_dir());  // the artifact went away under the coordinator
  EXPECT_THAT(Report(v, "v", kPassed), StatusIs(absl::StatusCode::kInternal, HasSubstr(spec.out_dir() + "/verify.json")));
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_VERIFYING);   // the worker reports it with Fail; the lease is still held
  QF_ASSERT_OK(Renew(v, "v"));
}

TEST_F(SchedulerVerifyTest, RestartKeepsTheLeaseAndCancelStopsIt) {
  const proto::JobSpec spec = VerifySpec();
  const std::string job = ToVerifying(spec);
  Register("v");
  proto::TaskAssignment v = LeaseOk("v");
  Reopen();
  QF_ASSERT_OK_AND_ASSIGN(proto::JobStatus st, sched_->GetJob(job));
  EXPECT_EQ(st.state(), proto::JOB_VERIFYING);
  EXPECT_EQ(st.stages(1).state(), proto::TASK_LEASED);
  QF_ASSERT_OK(Renew(v, "v"));   // the lease survived the restart

  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Cancel(job, ""));
  EXPECT_EQ(st.state(), proto::JOB_CANCELLED);
  EXPECT_THAT(Report(v, "v", kPassed), StatusIs(absl::StatusCode::kAborted, _));
  QF_ASSERT_OK_AND_ASSIGN(st, sched_->Resume(job));
  EXPECT_EQ(st.state(), proto::JOB_ASSEMBLING);
}

}  // namespace
}  // namespace qf::coordinator
