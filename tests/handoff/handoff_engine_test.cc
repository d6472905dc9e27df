// The engine's side of the hand-off on the CPU, through the dlopen'ed module
// and the loopback link (tests/handoff/CMakeLists.txt).
#include "tests/handoff/handoff_test_util.h"

namespace qf::worker {
namespace {

using testing::HandOver;
using testing::ReplayedLayer;
using testing::TinySpec;
using ::testing::HasSubstr;

class HandoffEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto e = Engine::Load();
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static Engine* engine_;
};
Engine* HandoffEngineTest::engine_ = nullptr;

auto Loopback(const std::string& id, LoopbackFaults faults = {}) {
  return [=](int rank) { return ConnectLoopback(id, rank, 10000, rank == 0 ? faults : LoopbackFaults{}); };
}

TEST_F(HandoffEngineTest, ReceivedInputQuantizesLikeAReplay) {
  for (const char* method : {"gptq", "awq"}) {
    SCOPED_TRACE(method);
    SessionSpec spec = TinySpec("cpu", method);
    if (std::string(method) == "awq") {
      spec.quant.awq_grid = 2;
      spec.quant.awq_search_tokens = 32;
    }
    auto receiver = engine_->OpenSession(spec);
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    absl::Status sent;
    // The sender's stage is [1, 3): it sits at layer 1 and hands layer 3's input over.
    ASSERT_TRUE(HandOver(engine_, spec, 1, 3, receiver->get(), Loopback(NewLoopbackId()), &sent).ok());
    ASSERT_TRUE(sent.ok()) << sent;
    EXPECT_EQ((*receiver)->next_layer(), 3);
    auto r = (*receiver)->QuantizeLayer(3, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    testing::ExpectSameResult(*r, ReplayedLayer(engine_, spec, 3));
  }
}

TEST_F(HandoffEngineTest, ASenderDyingMidTransferLeavesTheSessionForTheReplay) {
  SessionSpec spec = TinySpec("cpu");
  auto receiver = engine_->OpenSession(spec);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  LoopbackFaults dies;
  dies.fail_after_bytes = 64 + 1000;
  absl::Status sent;
  absl::Status got = HandOver(engine_, spec, 0, 2, receiver->get(), Loopback(NewLoopbackId(), dies), &sent);
  EXPECT_TRUE(absl::IsUnavailable(got)) << got;
  EXPECT_THAT(std::string(got.message()), HasSubstr("failed after 1064 bytes"));
  EXPECT_TRUE(absl::IsAborted(sent)) << sent;
  EXPECT_EQ((*receiver)->next_layer(), 0);  // unchanged: replay on it
  for (int l = 0; l < 2; ++l) ASSERT_TRUE((*receiver)->ForwardOriginalLayer(l).ok());
  auto r = (*receiver)->QuantizeLayer(2, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  testing::ExpectSameResult(*r, ReplayedLayer(engine_, spec, 2));
}

TEST_F(HandoffEngineTest, AMismatchedHeaderIsDataLossAndNoPeerIsADeadline) {
  SessionSpec spec = TinySpec("cpu");
  SessionSpec other = spec;
  other.seqlen = 16;
  other.calib_tokens.resize(other.samples * other.seqlen);
  auto receiver = engine_->OpenSession(spec);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  absl::Status sent;
  absl::Status got = HandOver(engine_, other, 0, 1, receiver->get(), Loopback(NewLoopbackId()), &sent);
  EXPECT_TRUE(absl::IsDataLoss(got)) << got;
  EXPECT_THAT(std::string(got.message()), HasSubstr("expected layer 1 [4, 32, "));
  EXPECT_EQ((*receiver)->next_layer(), 0);
  auto alone = ConnectLoopback(NewLoopbackId(), 1, 100);
  EXPECT_TRUE(absl::IsDeadlineExceeded(alone.status())) << alone.status();
  // RTN has no activations to hand off.
  auto rtn = engine_->OpenSession(TinySpec("cpu", "rtn"));
  ASSERT_TRUE(rtn.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition((*rtn)->ForwardOriginalCopy(1).status()));
  // A CPU engine has no NCCL peer to offer.
  EXPECT_TRUE(absl::IsUnavailable(engine_->DeviceKey("cpu").status()));
}

}  // namespace
}  // namespace qf::worker
