// Engine behaviour through the dlopen'ed module: determinism, replay, and the
// errors a bad spec gets before any work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "worker/calibration.h"
#include "worker/engine/engine_host.h"
#include "worker/tokenizer.h"

namespace qf::worker {
namespace {

using ::testing::HasSubstr;

const std::string kModel = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";
const std::string kCalib = std::string(QF_SOURCE_DIR) + "/data/calib.txt";

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto e = Engine::Load();
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
    auto tok = Tokenizer::Load(kModel);
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto ids = BuildCalibrationTokens(**tok, {kCalib, 8, 64, 7});
    ASSERT_TRUE(ids.ok()) << ids.status();
    tokens_ = new std::vector<int32_t>(std::move(*ids));
  }

  SessionSpec Spec(const std::string& method, bool act_order = false) {
    SessionSpec s;
    s.model_dir = kModel;
    s.samples = 8;
    s.seqlen = 64;
    s.calib_tokens = *tokens_;
    s.quant.method = method;
    s.quant.act_order = act_order;
    return s;
  }

  static Engine* engine_;
  static std::vector<int32_t>* tokens_;
};
Engine* EngineTest::engine_ = nullptr;
std::vector<int32_t>* EngineTest::tokens_ = nullptr;

void ExpectSameResult(const kernels::LayerResult& a, const kernels::LayerResult& b) {
  ASSERT_EQ(a.linears.size(), b.linears.size());
  for (size_t i = 0; i < a.linears.size(); ++i) {
    SCOPED_TRACE(a.linears[i].name);
    EXPECT_EQ(a.linears[i].codes, b.linears[i].codes);
    EXPECT_EQ(a.linears[i].scales, b.linears[i].scales);
    EXPECT_EQ(a.linears[i].zeros, b.linears[i].zeros);
    EXPECT_EQ(a.linears[i].g_idx, b.linears[i].g_idx);
  }
  ASSERT_EQ(a.dense.size(), b.dense.size());
  for (size_t i = 0; i < a.dense.size(); ++i) EXPECT_EQ(a.dense[i].data, b.dense[i].data) << a.dense[i].name;
}

TEST_F(EngineTest, GptqReplayOfCommittedLayerGivesIdenticalNextLayer) {
  for (bool act_order : {false, true}) {
    SCOPED_TRACE(act_order ? "act-order" : "natural order");
    auto s1 = engine_->OpenSession(Spec("gptq", act_order));
    ASSERT_TRUE(s1.ok()) << s1.status();
    auto r0 = (*s1)->QuantizeLayer(0, nullptr);
    ASSERT_TRUE(r0.ok()) << r0.status();
    auto r1 = (*s1)->QuantizeLayer(1, nullptr);
    ASSERT_TRUE(r1.ok()) << r1.status();
    // A second worker that only has layer 0's committed result.
    auto s2 = engine_->OpenSession(Spec("gptq", act_order));
    ASSERT_TRUE(s2.ok());
    ASSERT_TRUE((*s2)->ApplyLayer(*r0).ok());
    auto r1b = (*s2)->QuantizeLayer(1, nullptr);
    ASSERT_TRUE(r1b.ok()) << r1b.status();
    ExpectSameResult(*r1, *r1b);
    if (act_order) {
      // desc_act really permutes: g_idx is not monotone somewhere.
      bool monotone = true;
      for (const auto& q : r0->linears)
        for (size_t i = 1; i < q.g_idx.size(); ++i) monotone &= q.g_idx[i - 1] <= q.g_idx[i];
      EXPECT_FALSE(monotone);
    }
  }
}

TEST_F(EngineTest, AwqIsDeterministicAndFoldsScalesIntoNorms) {
  auto a = engine_->OpenSession(Spec("awq"));
  auto b = engine_->OpenSession(Spec("awq"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto ra = (*a)->QuantizeLayer(0, nullptr);
  auto rb = (*b)->QuantizeLayer(0, nullptr);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  ExpectSameResult(*ra, *rb);
  // The AWQ norms differ from the checkpoint's (scales folded in); RTN keeps them.
  auto rtn = engine_->OpenSession(Spec("rtn"));
  ASSERT_TRUE(rtn.ok());
  auto rr = (*rtn)->QuantizeLayer(0, nullptr);
  ASSERT_TRUE(rr.ok());
  EXPECT_NE(ra->dense[0].data, rr->dense[0].data);
}

TEST_F(EngineTest, LayersMustBeQuantizedInOrder) {
  auto s = engine_->OpenSession(Spec("gptq"));
  ASSERT_TRUE(s.ok());
  auto r = (*s)->QuantizeLayer(2, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, BadSpecsFailBeforeAnyWork) {
  struct Case { const char* what; std::function<void(SessionSpec*)> edit; const char* expect; };
  const Case cases[] = {
      {"group size", [](SessionSpec* s) { s->quant.group_size = 100; }, "does not divide the 256 input features"},
      {"bits", [](SessionSpec* s) { s->quant.bits = 5; }, "bits 5"},
      {"method", [](SessionSpec* s) { s->quant.method = "squeeze"; }, "method 'squeeze'"},
      {"damp", [](SessionSpec* s) { s->quant.damp_percent = 0; }, "damp_percent"},
      {"token count", [](SessionSpec* s) { s->calib_tokens.pop_back(); }, "calib_tokens"},
      {"token range", [](SessionSpec* s) { s->calib_tokens[3] = 8000; }, "outside the vocabulary"},
      {"device", [](SessionSpec* s) { s->device = "tpu"; }, "device 'tpu'"},
      {"model", [](SessionSpec* s) { s->model_dir = "/nonexistent/model"; }, "/nonexistent/model"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SessionSpec s = Spec("gptq");
    c.edit(&s);
    auto r = engine_->OpenSession(s);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.expect));
  }
}

}  // namespace
}  // namespace qf::worker
