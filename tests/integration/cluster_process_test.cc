// Multi-process tests on loopback: a real qcoordinator and real qworker
// processes (with the libtorch engine) quantize tiny-llama; artifacts are
// compared byte for byte with `qctl quantize` (sequential) and with embedded
// mode (parallel). Faults: kill -9 of a worker and of the coordinator (mid-job
// and mid-assembly), cancel + resume, a corrupted chunk, a worker that commits
// after its lease expired.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"
#include "coordinator/embedded.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"
#include "proto/health.grpc.pb.h"
#include "tests/coordinator/cluster_fixture.h"
#include "tests/integration/subprocess.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::qf::testing::Subprocess;
using ::testing::HasSubstr;

const std::string kBin = std::string(QF_BINARY_DIR) + "/bin";
const std::string kModel = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";
const std::string kCalib = std::string(QF_SOURCE_DIR) + "/data/calib.txt";
constexpr int kSamples = 16, kSeqlen = 128;

bool Exists(const std::string& p) { return ::access(p.c_str(), X_OK) == 0; }

class ClusterProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!Exists(kBin + "/qctl") || !Exists(kBin + "/qworker") || !Exists(kBin + "/qcoordinator")) return;
    suite_tmp_ = new qf::testing::TempDir();
    reference_ = suite_tmp_->Path("qctl-reference");
    Subprocess qctl({kBin + "/qctl", "quantize", "--model", kModel, "--method", "gptq", "--bits", "4", "--group-size",
                     "128", "--calib", kCalib, "--samples", std::to_string(kSamples), "--seqlen",
                     std::to_string(kSeqlen), "--seed", "0", "--out", reference_},
                    suite_tmp_->Path("qctl.log"));
    int status = qctl.Wait();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      reference_error_ = qctl.Log();
      reference_.clear();
    }
  }
  static void TearDownTestSuite() {
    delete suite_tmp_;
    suite_tmp_ = nullptr;
  }

  void SetUp() override {
    if (suite_tmp_ == nullptr) GTEST_SKIP() << "qctl/qworker/qcoordinator not built";
    ASSERT_FALSE(reference_.empty()) << "qctl quantize failed:\n" << reference_error_;
  }

  proto::JobSpec Spec(int stage_layers, proto::Mode mode = proto::MODE_SEQUENTIAL) {
    proto::JobSpec s;
    s.set_model_path(kModel);
    s.set_method("gptq");
    s.set_bits(4);
    s.set_group_size(128);
    s.set_calib_path(kCalib);
    s.set_samples(kSamples);
    s.set_seqlen(kSeqlen);
    s.set_seed(0);
    s.set_out_dir(tmp_.Path("artifact-" + std::to_string(jobs_++)));
    s.set_stage_layers(stage_layers);
    s.set_mode(mode);
    return s;
  }

  void StartCoordinator(std::vector<std::string> extra = {}, int lease_ttl_ms = 1500) {
    std::vector<std::string> argv = {kBin + "/qcoordinator",  "--listen", "127.0.0.1:" + std::to_string(port_),
                                     "--state",               tmp_.Path("state"), "--lease-ttl-ms",
                                     std::to_string(lease_ttl_ms),
                                     "--renew-interval-ms",   "300", "--affinity-grace-ms", "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    coordinator_ = std::make_unique<Subprocess>(argv, tmp_.Path("coordinator.log"));
    std::string line = coordinator_->WaitForLine("listening on", 20000);
    ASSERT_FALSE(line.empty()) << coordinator_->Log();
    if (port_ == 0) {
      port_ = std::stoi(line.substr(line.find(" port ") + 6));
      client_ = JobClient::Connect("127.0.0.1:" + std::to_string(port_));
    }
  }

  Subprocess* StartWorker(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {kBin + "/qworker", "--coordinator", "127.0.0.1:" + std::to_string(port_),
                                     "--name", name, "--device", "cpu"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_.push_back(std::make_unique<Subprocess>(argv, tmp_.Path(name + ".log")));
    return workers_.back().get();
  }

  // Watches the job to its end, calling on_event for every event.
  proto::JobStatus WatchToEnd(const std::string& job,
                              const std::function<void(const proto::JobEvent&)>& on_event = nullptr) {
    auto done = client_->Watch(job, [&](const proto::WatchUpdate& u) {
      events_.push_back(u.event());
      if (on_event) on_event(u.event());
    });
    EXPECT_THAT(done, IsOk());
    return done.ok() ? *done : proto::JobStatus();
  }

  std::string Submit(const proto::JobSpec& spec) {
    auto r = client_->Submit(spec);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? r->job_id() : "";
  }

  bool SawEvent(proto::EventKind kind, const std::string& text = "") const {
    for (const auto& e : events_) {
      if (e.kind() == kind && e.message().find(text) != std::string::npos) return true;
    }
    return false;
  }

  // `spec` run in embedded mode (one process) gives the same artifact bytes as `done`.
  void ExpectSameAsEmbedded(const proto::JobSpec& spec, const proto::JobStatus& done) {
    proto::JobSpec embedded_spec = spec;
    embedded_spec.set_out_dir(tmp_.Path("embedded-parallel"));
    EmbeddedOptions eo;
    eo.state_dir = tmp_.Path("embedded-state");
    auto embedded = RunEmbedded(embedded_spec, eo);
    ASSERT_THAT(embedded, IsOk());
    qf::testing::ExpectSameTree(embedded->artifact_dir(), done.artifact_dir());
  }

  std::string DebugLogs() const {
    std::string out = coordinator_ ? "--- coordinator\n" + coordinator_->Log() : "";
    for (const auto& w : workers_) out += "--- worker\n" + w->Log();
    return out;
  }

  static qf::testing::TempDir* suite_tmp_;
  static std::string reference_;
  static std::string reference_error_;
  qf::testing::TempDir tmp_;
  int port_ = 0;
  int jobs_ = 0;
  std::unique_ptr<Subprocess> coordinator_;
  std::vector<std::unique_ptr<Subprocess>> workers_;
  std::unique_ptr<JobClient> client_;
  std::vector<proto::JobEvent> events_;
};

qf::testing::TempDir* ClusterProcessTest::suite_tmp_ = nullptr;
std::string ClusterProcessTest::reference_;
std::string ClusterProcessTest::reference_error_;

// The standard health service over TCP, as Kubernetes' grpc probe calls it:
// SERVING once the coordinator has loaded its state and listens, NOT_FOUND
// for a service it does not have; SIGTERM still ends it cleanly.
TEST_F(ClusterProcessTest, HealthServiceAnswersTheProbe) {
  StartCoordinator();
  using grpc::health::v1::Health;
  using grpc::health::v1::HealthCheckRequest;
  using grpc::health::v1::HealthCheckResponse;
  auto stub = Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
  auto check = [&](const std::string& service, HealthCheckResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    HealthCheckRequest req;
    req.set_service(service);
    return stub->Check(&ctx, req, out);
  };
  HealthCheckResponse r;
  grpc::Status s = check("", &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.status(), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("qforge.NoSuchService", &r).error_code(), grpc::StatusCode::NOT_FOUND);

  coordinator_->Kill(SIGTERM);
  EXPECT_EQ(coordinator_->Wait(), 0) << DebugLogs();
}

TEST_F(ClusterProcessTest, SequentialOnThreeWorkersMatchesQctlQuantize) {
  StartCoordinator();
  for (const char* w : {"w0", "w1", "w2"}) StartWorker(w);
  proto::JobStatus done = WatchToEnd(Submit(Spec(1)));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

TEST_F(ClusterProcessTest, ParallelOnThreeWorkersMatchesEmbeddedMode) {
  StartCoordinator();
  for (const char* w : {"w0", "w1", "w2"}) StartWorker(w);
  proto::JobSpec spec = Spec(2, proto::MODE_PARALLEL);
  proto::JobStatus done = WatchToEnd(Submit(spec));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();

  ExpectSameAsEmbedded(spec, done);
  // Parallel stages start from FP16 activations: not the sequential result.
  EXPECT_NE(qf::testing::ReadTree(reference_)["model.safetensors"],
            qf::testing::ReadTree(done.artifact_dir())["model.safetensors"]);
}

// One qworker process, two worker loops (--device cpu,cpu): both register and
// take stages; CPU loops cannot hand activations off, so they replay (saying
// why) and the bytes are embedded mode's.
TEST_F(ClusterProcessTest, OneProcessWithTwoDeviceLoops) {
  StartCoordinator();
  workers_.push_back(std::make_unique<Subprocess>(
      std::vector<std::string>{kBin + "/qworker", "--coordinator", "127.0.0.1:" + std::to_string(port_), "--name",
                               "pair", "--device", "cpu,cpu", "--fault-layer-delay-ms", "300"},
      tmp_.Path("pair.log")));
  Subprocess* w = workers_.back().get();
  proto::JobSpec spec = Spec(2, proto::MODE_PARALLEL);
  proto::JobStatus done = WatchToEnd(Submit(spec));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_TRUE(SawEvent(proto::EVENT_STAGE_LEASED)) << DebugLogs();
  bool by0 = false, by1 = false;
  for (const auto& e : events_) {
    if (e.kind() != proto::EVENT_STAGE_LEASED) continue;
    by0 |= e.worker() == "pair-0";
    by1 |= e.worker() == "pair-1";
  }
  EXPECT_TRUE(by0 && by1) << DebugLogs();
  EXPECT_FALSE(w->WaitForLine("by replay of layers 0..1: the device is the CPU", 5000).empty()) << w->Log();
  ExpectSameAsEmbedded(spec, done);
}

TEST_F(ClusterProcessTest, KillNineOfAWorkerMidStage) {
  StartCoordinator();
  std::vector<Subprocess*> ws;
  for (const char* w : {"w0", "w1", "w2"}) ws.push_back(StartWorker(w, {"--fault-layer-delay-ms", "600"}));
  bool killed = false;
  std::string victim;
  proto::JobStatus done = WatchToEnd(Submit(Spec(2)), [&](const proto::JobEvent& e) {
    // The worker that just committed the first layer of a stage is now inside its second.
    if (!killed && e.kind() == proto::EVENT_LAYER_COMMITTED && e.layer() == 0) {
      victim = e.worker();
      ws[victim.back() - '0']->Kill(SIGKILL);
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_TRUE(SawEvent(proto::EVENT_LEASE_EXPIRED, victim)) << "the killed worker's lease was never expired";
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

TEST_F(ClusterProcessTest, KillNineOfTheCoordinatorMidJob) {
  StartCoordinator();
  for (const char* w : {"w0", "w1", "w2"}) StartWorker(w, {"--fault-layer-delay-ms", "400"});
  const std::string job = Submit(Spec(1));
  bool restarted = false;
  proto::JobStatus done = WatchToEnd(job, [&](const proto::JobEvent& e) {
    if (!restarted && e.kind() == proto::EVENT_LAYER_COMMITTED) {
      coordinator_->Kill(SIGKILL);
      coordinator_->Wait();
      StartCoordinator();  // same port, same state dir; Watch reconnects
      restarted = true;
    }
  });
  ASSERT_TRUE(restarted);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_THAT(coordinator_->Log(), HasSubstr("state loaded"));
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

// Killed while it writes the artifact: the restarted coordinator assembles
// again from the committed layers, the artifact is the reference's, and the
// killed run's staging directory (partial shards) is gone.
TEST_F(ClusterProcessTest, KillNineOfTheCoordinatorMidAssembly) {
  StartCoordinator({"--fault-assemble-layer-delay-ms", "800"});
  StartWorker("w0");
  StartWorker("w1");
  const proto::JobSpec spec = Spec(2);
  const std::string job = Submit(spec);
  const std::string parent = std::filesystem::path(spec.out_dir()).parent_path().string();
  const std::string staging_prefix = "." + std::filesystem::path(spec.out_dir()).filename().string() + ".staging-";
  auto staging_dirs = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(parent))
      n += e.path().filename().string().rfind(staging_prefix, 0) == 0;
    return n;
  };
  bool restarted = false;
  int staging_when_killed = 0;
  proto::JobStatus done = WatchToEnd(job, [&](const proto::JobEvent& e) {
    if (!restarted && e.kind() == proto::EVENT_ASSEMBLING) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1200));   // inside layer 1 of 4
      staging_when_killed = staging_dirs();
      coordinator_->Kill(SIGKILL);
      coordinator_->Wait();
      StartCoordinator();
      restarted = true;
    }
  });
  ASSERT_TRUE(restarted);
  EXPECT_EQ(staging_when_killed, 1);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
  EXPECT_EQ(staging_dirs(), 0);
}

// The verify stage on real workers (the engine's CPU twin of the fused
// kernel): the worker that leased it is killed mid-stage, its lease expires,
// the other worker verifies the artifact; the report sits next to the
// artifact, whose files are the reference's.
TEST_F(ClusterProcessTest, VerifyStageSurvivesAKillNineOfItsWorker) {
  StartCoordinator();
  std::vector<Subprocess*> ws;
  for (const char* w : {"w0", "w1"}) ws.push_back(StartWorker(w, {"--fault-verify-delay-ms", "2500"}));
  proto::JobSpec spec = Spec(2);
  spec.set_verify(true);
  spec.set_verify_text(std::string(QF_SOURCE_DIR) + "/data/books-heldout.txt");
  spec.set_verify_seqlen(64);
  spec.set_verify_max_chunks(4);
  std::string victim;
  proto::JobStatus done = WatchToEnd(Submit(spec), [&](const proto::JobEvent& e) {
    if (victim.empty() && e.kind() == proto::EVENT_STAGE_LEASED && e.message().find("verify") != std::string::npos) {
      victim = e.worker();
      ws[victim.back() - '0']->Kill(SIGKILL);
    }
  });
  ASSERT_FALSE(victim.empty()) << "no verify lease seen" << DebugLogs();
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_TRUE(SawEvent(proto::EVENT_LEASE_EXPIRED, victim)) << "the killed worker's lease was never expired";
  EXPECT_TRUE(SawEvent(proto::EVENT_VERIFIED, "passed"));
  EXPECT_EQ(done.verify_verdict(), "passed");

  std::map<std::string, std::string> tree = qf::testing::ReadTree(done.artifact_dir());
  ASSERT_EQ(tree.count("verify.json"), 1u);
  const nlohmann::json report = nlohmann::json::parse(tree["verify.json"]);
  EXPECT_EQ(report["verdict"], "passed");
  EXPECT_EQ(report["linear_checks"]["ok"], 28);
  EXPECT_EQ(report["linear_checks"]["failed"], 0);
  EXPECT_LT(report["linear_checks"]["max_rel_err"].get<double>(), 2e-3);
  EXPECT_EQ(report["perplexity"]["measured"], true);
  EXPECT_EQ(report["perplexity"]["chunks"], 4);
  EXPECT_EQ(report["perplexity"]["passed"], true);
  tree.erase("verify.json");
  EXPECT_EQ(tree, qf::testing::ReadTree(reference_));
}

// SIGTERM (a pod drained, a node upgraded) of the worker running a stage:
// it gives the stage back at its next layer boundary (the verify stage: at
// once), exits 0, and the next worker takes it over without waiting for the
// lease to expire. The lease TTL here is a minute, longer than the whole
// test may take, and max_attempts 1: a counted failure would fail the job.
TEST_F(ClusterProcessTest, SigtermOfAWorkerGivesItsStageBack) {
  StartCoordinator({}, 60000);
  const std::vector<std::string> slow = {"--fault-layer-delay-ms", "400", "--fault-verify-delay-ms", "60000"};
  Subprocess* running = StartWorker("w0", slow);
  proto::JobSpec spec = Spec(4);
  spec.set_max_attempts(1);
  spec.set_verify(true);
  std::vector<std::string> victims;
  std::vector<int> exit_codes;
  const auto t0 = std::chrono::steady_clock::now();
  proto::JobStatus done = WatchToEnd(Submit(spec), [&](const proto::JobEvent& e) {
    const bool in_layer_stage = e.kind() == proto::EVENT_LAYER_COMMITTED && victims.empty();
    const bool in_verify_stage =
        e.kind() == proto::EVENT_STAGE_LEASED && e.message().find("verify") != std::string::npos && victims.size() == 1;
    if (!in_layer_stage && !in_verify_stage) return;
    victims.push_back(e.worker());
    running->Kill(SIGTERM);
    exit_codes.push_back(running->Wait());
    // The layer stage's successor is slow again (so that its verify stage can
    // be stopped too); the verify stage's is not.
    running = in_layer_stage ? StartWorker("w1", slow) : StartWorker("w2");
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_EQ(victims, (std::vector<std::string>{"w0", "w1"}));
  EXPECT_EQ(exit_codes, (std::vector<int>{0, 0}));
  EXPECT_TRUE(SawEvent(proto::EVENT_STAGE_RELEASED, "worker w0 stopping"));
  EXPECT_TRUE(SawEvent(proto::EVENT_STAGE_RELEASED, "worker w1 stopping"));
  EXPECT_FALSE(SawEvent(proto::EVENT_LEASE_EXPIRED));
  EXPECT_FALSE(SawEvent(proto::EVENT_STAGE_FAILED));
  EXPECT_LT(seconds, 45) << "a stage waited for its lease to expire";
  EXPECT_EQ(done.verify_verdict(), "passed");
  std::map<std::string, std::string> tree = qf::testing::ReadTree(done.artifact_dir());
  EXPECT_EQ(tree.erase("verify.json"), 1u);
  EXPECT_EQ(tree, qf::testing::ReadTree(reference_));
}

TEST_F(ClusterProcessTest, CancelThenResume) {
  StartCoordinator();
  StartWorker("w0", {"--fault-layer-delay-ms", "300"});
  StartWorker("w1", {"--fault-layer-delay-ms", "300"});
  const std::string job = Submit(Spec(1));
  bool cancelled = false;
  proto::JobStatus mid = WatchToEnd(job, [&](const proto::JobEvent& e) {
    if (!cancelled && e.kind() == proto::EVENT_LAYER_COMMITTED) {
      EXPECT_THAT(client_->Cancel(job, "test cancel"), IsOk());
      cancelled = true;
    }
  });
  ASSERT_EQ(mid.state(), proto::JOB_CANCELLED);
  EXPECT_LT(mid.layers_committed(), 4);
  auto resumed = client_->Resume(job);
  ASSERT_THAT(resumed, IsOk());
  proto::JobStatus done = WatchToEnd(job);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

TEST_F(ClusterProcessTest, CorruptedChunkIsRejectedAndResent) {
  StartCoordinator();
  StartWorker("w0", {"--fault-corrupt-layer", "1", "--chunk-bytes", "65536"});
  proto::JobStatus done = WatchToEnd(Submit(Spec(4)));
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_TRUE(SawEvent(proto::EVENT_LAYER_REJECTED, "sha256 mismatch"));
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

TEST_F(ClusterProcessTest, WorkerWithAnExpiredLeaseCannotCommitLate) {
  StartCoordinator();
  Subprocess* late = StartWorker("late", {"--fault-stall-after-layer", "0", "--fault-stall-ms", "5000"});
  const std::string job = Submit(Spec(4));
  bool healthy_started = false;
  proto::JobStatus done = WatchToEnd(job, [&](const proto::JobEvent& e) {
    if (!healthy_started && e.kind() == proto::EVENT_STAGE_LEASED && e.worker() == "late") {
      StartWorker("healthy");
      healthy_started = true;
    }
  });
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason() << DebugLogs();
  EXPECT_TRUE(SawEvent(proto::EVENT_LEASE_EXPIRED, "late"));
  EXPECT_FALSE(late->WaitForLine("refused", 15000).empty()) << late->Log();
  qf::testing::ExpectSameTree(reference_, done.artifact_dir());
}

TEST_F(ClusterProcessTest, BadInputIsRefusedWithANamedReason) {
  StartCoordinator();
  proto::JobSpec bad = Spec(1);
  bad.set_bits(5);
  EXPECT_THAT(client_->Submit(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.bits")));
  EXPECT_THAT(client_->Get("job-777777"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-777777")));
  proto::JobSpec missing = Spec(1);
  missing.set_model_path(tmp_.Path("no-such-model"));
  StartWorker("w0");
  const std::string job = Submit(missing);
  proto::JobStatus done = WatchToEnd(job);
  EXPECT_EQ(done.state(), proto::JOB_FAILED);
  EXPECT_THAT(done.reason(), HasSubstr(tmp_.Path("no-such-model")));
  EXPECT_FALSE(SawEvent(proto::EVENT_STAGE_LEASED));
}

}  // namespace
}  // namespace qf::coordinator

namespace qf::coordinator {
namespace {

// qctl as a cluster client: submit prints a job id, watch prints one plain
// line per event (stdout is not a terminal here) and exits 0 when the job
// succeeds, status -o json is machine-readable, an unknown job is NOT_FOUND.
TEST_F(ClusterProcessTest, QctlSubmitWatchStatusAndUnknownJob) {
  StartCoordinator();
  StartWorker("w0", {"--fault-layer-delay-ms", "200"});
  const std::string target = "127.0.0.1:" + std::to_string(port_);
  const std::string out = tmp_.Path("qctl-artifact");
  Subprocess submit({kBin + "/qctl", "submit", "--coordinator", target, "--model", kModel, "--method", "gptq",
                     "--bits", "4", "--group-size", "128", "--calib", kCalib, "--samples", std::to_string(kSamples),
                     "--seqlen", std::to_string(kSeqlen), "--seed", "0", "--stage-layers", "2", "--out", out},
                    tmp_.Path("submit.log"));
  int st = submit.Wait();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << submit.Log();
  std::string job = submit.Log();
  while (!job.empty() && (job.back() == '\n' || job.back() == ' ')) job.pop_back();
  job = job.substr(job.rfind('\n') + 1);
  ASSERT_THAT(job, ::testing::StartsWith("job-"));

  Subprocess watch({kBin + "/qctl", "watch", job, "--coordinator", target}, tmp_.Path("watch.log"));
  st = watch.Wait();
  const std::string log = watch.Log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << log << DebugLogs();
  EXPECT_THAT(log, HasSubstr("LAYER_COMMITTED stage 0 layer 0"));
  EXPECT_THAT(log, HasSubstr("LAYER_COMMITTED stage 1 layer 3"));
  EXPECT_THAT(log, HasSubstr("layers 4/4"));
  EXPECT_THAT(log, HasSubstr("SUCCEEDED"));
  // Same bytes as qctl quantize.
  qf::testing::ExpectSameTree(reference_, out);

  Subprocess status({kBin + "/qctl", "status", job, "--coordinator", target, "-o", "json"}, tmp_.Path("status.log"));
  st = status.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << status.Log();
  EXPECT_THAT(status.Log(), HasSubstr("\"state\":\"JOB_SUCCEEDED\""));

  Subprocess unknown({kBin + "/qctl", "status", "job-999999", "--coordinator", target}, tmp_.Path("unknown.log"));
  st = unknown.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << unknown.Log();
  EXPECT_THAT(unknown.Log(), HasSubstr("qctl: error:"));
  EXPECT_THAT(unknown.Log(), HasSubstr("job-999999"));
}

// qctl submit --verify: the stage's flags reach the worker through the spec,
// watch shows it, status prints its verdict; a bad flag value is one line
// naming the JobSpec field, and no job.
TEST_F(ClusterProcessTest, QctlSubmitWithVerify) {
  StartCoordinator();
  StartWorker("w0");
  const std::string target = "127.0.0.1:" + std::to_string(port_);
  const std::string out = tmp_.Path("qctl-verified");
  auto submit_argv = [&](const std::string& dtype) {
    return std::vector<std::string>{kBin + "/qctl", "submit", "--coordinator", target, "--model", kModel,
                                    "--method", "rtn", "--out", out, "--stage-layers", "4", "--verify",
                                    "--verify-dtype", dtype};
  };
  Subprocess bad(submit_argv("fp8"), tmp_.Path("submit-bad.log"));
  int st = bad.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << bad.Log();
  EXPECT_THAT(bad.Log(), HasSubstr("JobSpec.verify_dtype: expected fp16 or bf16"));

  Subprocess submit(submit_argv("bf16"), tmp_.Path("submit.log"));
  st = submit.Wait();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << submit.Log();
  std::string job = submit.Log();
  while (!job.empty() && (job.back() == '\n' || job.back() == ' ')) job.pop_back();
  job = job.substr(job.rfind('\n') + 1);
  ASSERT_EQ(job, "job-000001");   // the refused submit made no job

  Subprocess watch({kBin + "/qctl", "watch", job, "--coordinator", target}, tmp_.Path("watch.log"));
  st = watch.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << watch.Log() << DebugLogs();
  EXPECT_THAT(watch.Log(), HasSubstr("VERIFYING stage 1"));
  EXPECT_THAT(watch.Log(), HasSubstr("VERIFIED stage 1"));

  Subprocess status({kBin + "/qctl", "status", job, "--coordinator", target}, tmp_.Path("status.log"));
  st = status.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << status.Log();
  EXPECT_THAT(status.Log(), HasSubstr("stage 1  verify  TASK_DONE"));
  EXPECT_THAT(status.Log(), HasSubstr("verify: passed (" + out + "/verify.json)"));
  const nlohmann::json report = nlohmann::json::parse(qf::testing::ReadTree(out)["verify.json"]);
  EXPECT_EQ(report["dtype"], "bf16");
  EXPECT_EQ(report["linear_checks"]["ok"], 28);
}

// A worker whose coordinator never answers gives up after its retry window
// with one line that names the address and the call, and exit status 1.
TEST(WorkerProcessTest, UnreachableCoordinatorIsOneLineNamingTheAddress) {
  if (!Exists(kBin + "/qworker")) GTEST_SKIP() << "qworker not built";
  qf::testing::TempDir tmp;
  Subprocess w({kBin + "/qworker", "--coordinator", "127.0.0.1:1", "--device", "cpu", "--name", "w0",
                "--retry-window-ms", "300"},
               tmp.Path("w0.log"));
  const int status = w.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::string log = w.Log();
  while (!log.empty() && log.back() == '\n') log.pop_back();
  EXPECT_EQ(log.find('\n'), std::string::npos) << log;
  EXPECT_THAT(log, ::testing::StartsWith("qworker: --coordinator 127.0.0.1:1: Register: coordinator unreachable"));
}

}  // namespace
}  // namespace qf::coordinator
