// The parallel-mode activation hand-off on the CPU: the coordinator's
// rendezvous (pairing, ranks, id relay, deadlines, fencing) against a
// FakeClock, and whole jobs of in-process workers that hand their fake
// activations over loopback links (worker/engine/loopback_link.h), with a
// sender that dies mid-transfer and a receiver that times out: every path
// ends in an artifact byte-identical to a single worker's.
#include <algorithm>
#include <chrono>
#include <thread>

#include "tests/coordinator/cluster_fixture.h"
#include "tests/coordinator/scheduler_fixture.h"
#include "worker/runtime/handoff.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class HandoffRendezvousTest : public qf::testing::SchedulerFixture {
 protected:
  void RegisterOn(const std::string& name, const std::string& key) {
    proto::RegisterRequest req;
    req.set_name(name);
    req.set_incarnation("boot");
    req.set_device("cuda:0");
    req.set_device_key(key);
    ASSERT_THAT(sched_->Register(req), IsOk());
  }
  absl::StatusOr<proto::HandoffReply> Call(proto::HandoffOp op, const proto::TaskAssignment& t,
                                           const std::string& worker, int boundary, const std::string& key,
                                           const std::string& link_id = "") {
    proto::HandoffRequest req;
    req.set_op(op);
    req.set_job_id(t.job_id());
    req.set_attempt_id(t.attempt_id());
    req.set_worker_id(worker);
    req.set_boundary_layer(boundary);
    req.set_device_key(key);
    req.set_transport("nccl");
    req.set_link_id(link_id);
    return sched_->Handoff(req);
  }
};

TEST_F(HandoffRendezvousTest, PairsSenderAndReceiverAndRelaysTheId) {
  const std::string job = SubmitOk(Spec(2, proto::MODE_PARALLEL));  // stages [0,2) [2,4)
  RegisterOn("a", "host/gpu0");
  RegisterOn("b", "host/gpu1");
  proto::TaskAssignment ta = LeaseOk("a"), tb = LeaseOk("b");
  ASSERT_EQ(ta.stage(), 0);
  ASSERT_EQ(tb.stage(), 1);
  // The receiver comes first: stage 0 is held by a worker on another GPU, so it waits.
  auto r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->state(), proto::HANDOFF_WAIT);
  EXPECT_EQ(r->timeout_ms(), options_.handoff_wait_ms);
  // Announce, then publish the id.
  r = Call(proto::HANDOFF_OFFER, ta, "a", 2, "host/gpu0");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->state(), proto::HANDOFF_WAIT);
  EXPECT_EQ(Call(proto::HANDOFF_POLL, ta, "a", 2, "host/gpu0")->state(), proto::HANDOFF_WAIT);
  EXPECT_EQ(Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1")->state(), proto::HANDOFF_WAIT);
  const std::string id(128, '\x7f');
  ASSERT_EQ(Call(proto::HANDOFF_OFFER, ta, "a", 2, "host/gpu0", id)->state(), proto::HANDOFF_WAIT);
  clock_.AdvanceMs(10);
  r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->state(), proto::HANDOFF_PAIRED);
  EXPECT_EQ(r->rank(), 1);
  EXPECT_EQ(r->link_id(), id);
  EXPECT_EQ(r->peer(), "a");
  EXPECT_EQ(r->timeout_ms(), options_.handoff_transfer_ms);
  clock_.AdvanceMs(30);
  // A retried JOIN gets the same pairing, with the time that is left.
  r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_EQ(r->state(), proto::HANDOFF_PAIRED);
  EXPECT_EQ(r->link_id(), id);
  EXPECT_EQ(r->timeout_ms(), options_.handoff_transfer_ms - 30);
  r = Call(proto::HANDOFF_POLL, ta, "a", 2, "host/gpu0");
  ASSERT_EQ(r->state(), proto::HANDOFF_PAIRED);
  EXPECT_EQ(r->rank(), 0);
  EXPECT_EQ(r->peer(), "b");
  EXPECT_EQ(r->timeout_ms(), options_.handoff_transfer_ms - 30);  // the same deadline on both sides
  EXPECT_EQ(Call(proto::HANDOFF_POLL, ta, "a", 2, "host/gpu0")->state(), proto::HANDOFF_CLOSED);  // one transfer
  proto::HandoffRequest report;
  report.set_op(proto::HANDOFF_REPORT);
  report.set_job_id(job);
  report.set_attempt_id(tb.attempt_id());
  report.set_worker_id("b");
  report.set_boundary_layer(2);
  report.set_ok(true);
  report.set_message("received from a over nccl in 12 ms");
  ASSERT_THAT(sched_->Handoff(report), IsOk());
  auto events = sched_->Events(job, 0, 0);
  ASSERT_THAT(events, IsOk());
  EXPECT_EQ(events->back().kind(), proto::EVENT_HANDOFF);
  EXPECT_EQ(events->back().stage(), 1);
  EXPECT_EQ(events->back().layer(), 2);
  EXPECT_THAT(events->back().message(), HasSubstr("received from a"));
}

TEST_F(HandoffRendezvousTest, ReceiverGivesUpAtTheRendezvousDeadline) {
  options_.handoff_wait_ms = 3000;
  Reopen();
  SubmitOk(Spec(2, proto::MODE_PARALLEL));
  RegisterOn("a", "host/gpu0");
  RegisterOn("b", "host/gpu1");
  proto::TaskAssignment ta = LeaseOk("a"), tb = LeaseOk("b");
  ASSERT_EQ(Call(proto::HANDOFF_OFFER, ta, "a", 2, "host/gpu0")->state(), proto::HANDOFF_WAIT);
  auto r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_EQ(r->state(), proto::HANDOFF_WAIT);
  clock_.AdvanceMs(2000);
  r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_EQ(r->state(), proto::HANDOFF_WAIT);
  EXPECT_EQ(r->timeout_ms(), 1000);
  clock_.AdvanceMs(1001);
  r = Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1");
  ASSERT_EQ(r->state(), proto::HANDOFF_CLOSED);
  EXPECT_THAT(r->reason(), HasSubstr("rendezvous deadline"));
}

TEST_F(HandoffRendezvousTest, NoPeerSameDeviceAndCpuWorkersAreTold) {
  SubmitOk(Spec(1, proto::MODE_PARALLEL));  // 4 stages
  RegisterOn("a", "host/gpu0");
  proto::TaskAssignment ta = LeaseOk("a");
  auto r = Call(proto::HANDOFF_OFFER, ta, "a", 1, "host/gpu0");
  ASSERT_EQ(r->state(), proto::HANDOFF_CLOSED);  // alone: nobody could take them
  EXPECT_THAT(r->reason(), HasSubstr("no other live worker"));

  RegisterOn("b", "host/gpu0");  // the same GPU
  proto::TaskAssignment tb = LeaseOk("b");
  ASSERT_EQ(tb.stage(), 1);
  r = Call(proto::HANDOFF_OFFER, tb, "b", 2, "host/gpu0");
  ASSERT_EQ(r->state(), proto::HANDOFF_CLOSED);
  EXPECT_THAT(r->reason(), HasSubstr("same device"));
  r = Call(proto::HANDOFF_JOIN, tb, "b", 1, "host/gpu0");  // a declined to offer layer 1
  ASSERT_EQ(r->state(), proto::HANDOFF_CLOSED);
  EXPECT_THAT(r->reason(), HasSubstr("offers nothing"));

  Register("cpu");  // a CPU worker: no device key
  proto::TaskAssignment tc = LeaseOk("cpu");
  ASSERT_EQ(tc.stage(), 2);
  RegisterOn("d", "host/gpu1");
  proto::TaskAssignment td = LeaseOk("d");
  ASSERT_EQ(td.stage(), 3);
  r = Call(proto::HANDOFF_JOIN, td, "d", 3, "host/gpu1");
  ASSERT_EQ(r->state(), proto::HANDOFF_CLOSED);
  EXPECT_THAT(r->reason(), HasSubstr("cannot hand off"));
}

TEST_F(HandoffRendezvousTest, StaleAttemptsAreFencedAndBadRequestsRefused) {
  SubmitOk(Spec(2, proto::MODE_PARALLEL));
  RegisterOn("a", "host/gpu0");
  RegisterOn("b", "host/gpu1");
  proto::TaskAssignment ta = LeaseOk("a"), tb = LeaseOk("b");
  ASSERT_EQ(Call(proto::HANDOFF_OFFER, ta, "a", 2, "host/gpu0")->state(), proto::HANDOFF_WAIT);
  // a's lease expires; c takes stage 0 again and offers: a's offer is superseded.
  clock_.AdvanceMs(options_.lease_ttl_ms + 1);
  ASSERT_THAT(sched_->ExpireLeases(), IsOk());
  RegisterOn("b", "host/gpu1");  // b is alive (its old lease is not)
  RegisterOn("c", "host/gpu2");
  proto::TaskAssignment tc = LeaseOk("c");
  ASSERT_EQ(tc.stage(), 0);
  ASSERT_EQ(Call(proto::HANDOFF_OFFER, tc, "c", 2, "host/gpu2")->state(), proto::HANDOFF_WAIT);
  EXPECT_THAT(Call(proto::HANDOFF_POLL, ta, "a", 2, "host/gpu0"), StatusIs(absl::StatusCode::kAborted, HasSubstr("belongs to attempt")));
  // b's lease expired too: its JOIN is refused.
  EXPECT_THAT(Call(proto::HANDOFF_JOIN, tb, "b", 2, "host/gpu1"), StatusIs(absl::StatusCode::kAborted, ::testing::_));
  // Bad requests.
  EXPECT_THAT(Call(proto::HANDOFF_JOIN, tc, "c", 1, "host/gpu2"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("boundary_layer")));
  EXPECT_THAT(Call(proto::HANDOFF_JOIN, tc, "c", 2, ""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device_key")));
  EXPECT_THAT(Call(proto::HANDOFF_JOIN, tc, "c", 2, "host/gpu2"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not hold stage 1")));
  const std::string seq = SubmitOk(Spec(2));
  proto::HandoffRequest req;
  req.set_op(proto::HANDOFF_JOIN);
  req.set_job_id(seq);
  req.set_boundary_layer(2);
  req.set_device_key("k");
  EXPECT_THAT(sched_->Handoff(req), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sequential")));
  // An unknown job is refused as every other scheduler call refuses it, escaped to one line.
  req.set_job_id("job-9\nFAKE");
  EXPECT_THAT(sched_->Handoff(req), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job job-9\\nFAKE: no such job")));
}

// ---- whole jobs: in-process workers over loopback links ----

class HandoffClusterTest : public qf::testing::ClusterFixture {
 protected:
  // Idle workers poll every 10 ms (not the default 250) and every layer takes
  // 100 ms: both workers hold stages, so hand-offs cross devices even when the
  // machine is loaded and one worker thread starts late.
  void StartCoordinator(coordinator::SchedulerOptions so = {}) {
    so.idle_retry_ms = 10;
    qf::testing::ClusterFixture::StartCoordinator(so);
  }
  worker::Worker* StartGpuWorker(const std::string& name, const std::string& key, worker::LoopbackFaults faults = {},
                                 qf::testing::FakeEngineOptions eo = {}) {
    worker::WorkerOptions o;
    o.handoff_transport = worker::MakeLoopbackTransport(key, faults);
    if (eo.layer_delay_ms == 0) eo.layer_delay_ms = 100;  // both workers get stages
    return StartWorker(name, o, eo);
  }
  std::vector<std::string> HandoffMessages() const {
    std::vector<std::string> m;
    for (const auto& u : updates_) {
      if (u.event().kind() == proto::EVENT_HANDOFF) m.push_back(u.event().message());
    }
    return m;
  }
};

TEST_F(HandoffClusterTest, TwoWorkersHandOffAndMatchOneWorker) {
  StartCoordinator();
  worker::Worker* w0 = StartGpuWorker("w0", "host/gpu0");
  worker::Worker* w1 = StartGpuWorker("w1", "host/gpu1");
  proto::JobSpec spec = Spec(1, proto::MODE_PARALLEL);  // 4 stages of 1 layer
  proto::JobStatus done = RunToEnd(spec);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  qf::testing::ExpectSameTree(Reference(spec), done.artifact_dir());
  EXPECT_GE(w0->stats().handoffs_received + w1->stats().handoffs_received, 1);
  std::vector<std::string> m = HandoffMessages();
  EXPECT_TRUE(std::any_of(m.begin(), m.end(), [](const std::string& s) { return s.find("received from") == 0; }))
      << ::testing::PrintToString(m);
  // Received stages skipped their replay: fewer forwards than 0+1+2+3 replayed layers.
  EXPECT_LT(w0->stats().layers_replayed + w1->stats().layers_replayed, 6);
}

TEST_F(HandoffClusterTest, SenderDyingMidTransferMeansReplayAndTheSameBytes) {
  StartCoordinator();
  worker::LoopbackFaults dies;
  dies.fail_after_bytes = 64 + 3;  // the header, then 3 of the 8 bytes
  worker::Worker* w0 = StartGpuWorker("w0", "host/gpu0", dies);
  worker::Worker* w1 = StartGpuWorker("w1", "host/gpu1", dies);
  proto::JobSpec spec = Spec(1, proto::MODE_PARALLEL);
  proto::JobStatus done = RunToEnd(spec);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  EXPECT_EQ(done.layers_committed(), 4);  // nothing lost
  qf::testing::ExpectSameTree(Reference(spec), done.artifact_dir());
  EXPECT_EQ(w0->stats().handoffs_received + w1->stats().handoffs_received, 0);
  std::vector<std::string> m = HandoffMessages();
  EXPECT_TRUE(std::any_of(m.begin(), m.end(), [](const std::string& s) {
    return s.find("replay: the transfer from") == 0 && s.find("failed") != std::string::npos;
  })) << ::testing::PrintToString(m);
}

TEST_F(HandoffClusterTest, ReceiverTimesOutThenReplays) {
  SchedulerOptions so;
  so.handoff_wait_ms = 150;
  StartCoordinator(so);
  qf::testing::FakeEngineOptions slow;
  slow.forward_delay_ms = 400;  // the sender's copy (2 layers) takes longer than the receiver waits
  StartGpuWorker("w0", "host/gpu0", {}, slow);
  StartGpuWorker("w1", "host/gpu1", {}, slow);
  auto submitted = client_->Submit(Spec(2, proto::MODE_PARALLEL));
  ASSERT_THAT(submitted, IsOk());
  auto done = client_->Watch(submitted->job_id(), [&](const proto::WatchUpdate& u) { updates_.push_back(u); });
  ASSERT_THAT(done, IsOk());
  ASSERT_EQ(done->state(), proto::JOB_SUCCEEDED) << done->reason();
  qf::testing::ExpectSameTree(Reference(Spec(2, proto::MODE_PARALLEL)), done->artifact_dir());
  std::vector<std::string> m = HandoffMessages();
  EXPECT_THAT(m, ::testing::Contains(HasSubstr("rendezvous deadline")));
}

TEST_F(HandoffClusterTest, WorkersWithoutATransportReplayWithoutEvents) {
  StartCoordinator();
  worker::Worker* w0 = StartWorker("w0");  // the fake engine has no NCCL: "no activation hand-off"
  worker::Worker* w1 = StartWorker("w1");
  proto::JobSpec spec = Spec(1, proto::MODE_PARALLEL);
  proto::JobStatus done = RunToEnd(spec);
  ASSERT_EQ(done.state(), proto::JOB_SUCCEEDED) << done.reason();
  qf::testing::ExpectSameTree(Reference(spec), done.artifact_dir());
  EXPECT_EQ(w0->stats().handoffs_offered + w1->stats().handoffs_offered, 0);
  EXPECT_TRUE(HandoffMessages().empty());
  EXPECT_EQ(w0->stats().layers_replayed + w1->stats().layers_replayed, 0 + 1 + 2 + 3);
}

TEST(SplitDevicesTest, OneLoopPerDevice) {
  EXPECT_THAT(*worker::SplitDevices("cuda:0,1"), ElementsAre("cuda:0", "cuda:1"));
  EXPECT_THAT(*worker::SplitDevices("cuda:0,cuda:3"), ElementsAre("cuda:0", "cuda:3"));
  EXPECT_THAT(*worker::SplitDevices("cpu,cpu"), ElementsAre("cpu", "cpu"));
  EXPECT_THAT(*worker::SplitDevices("cuda"), ElementsAre("cuda"));
  EXPECT_THAT(worker::SplitDevices("cuda:0,,1"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(worker::SplitDevices("cpu,1"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("follows no cuda")));
}

}  // namespace
}  // namespace qf::coordinator
