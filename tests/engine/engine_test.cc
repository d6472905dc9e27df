// Engine behaviour through the dlopen'ed module: determinism, replay, and the
// errors a bad spec gets before any work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "storage/artifact.h"
#include "storage/model_config.h"
#include "storage/safetensors.h"
#include "tests/coordinator/test_util.h"
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

// A NaN in one checkpoint weight: the layers before it quantize, the layer
// that reads it is refused with the tensor and the element named.
TEST_F(EngineTest, NonFiniteWeightIsRefusedNamingTensorAndElement) {
  qf::testing::TempDir dir;
  for (const char* f : {"config.json", "tokenizer.model"}) {
    std::filesystem::copy_file(kModel + "/" + f, dir.Path(f));
  }
  auto src = storage::SafetensorsFile::Open(kModel + "/model.safetensors");
  ASSERT_TRUE(src.ok()) << src.status();
  const std::string poisoned = "model.layers.1.mlp.up_proj.weight";
  std::vector<storage::OwnedTensor> tensors;
  for (const std::string& name : (*src)->names()) {
    const storage::TensorView* v = *(*src)->Get(name);
    tensors.push_back({name, v->dtype, v->shape, std::string(v->data)});
    if (name != poisoned) continue;
    // A quiet NaN in the tensor's own dtype at element 777.
    const size_t w = storage::DTypeSize(v->dtype);
    const uint32_t nan = w == 4 ? 0x7fc00000u : v->dtype == storage::DType::kBF16 ? 0x7fc0u : 0x7e00u;
    std::memcpy(&tensors.back().data[777 * w], &nan, w);
  }
  ASSERT_TRUE(storage::WriteFile(dir.Path("model.safetensors"), tensors, (*src)->metadata()).ok());

  SessionSpec spec = Spec("gptq");
  spec.model_dir = dir.path();
  auto s = engine_->OpenSession(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->QuantizeLayer(0, nullptr).ok());
  auto r = (*s)->QuantizeLayer(1, nullptr);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'" + poisoned + "' element 777 (flat index) is NaN"));
}

// A worker asked to stop must not sit through a 70B artifact's verify stage:
// Evaluate and Verify poll their StopFn between units of work and return
// Cancelled, naming where they stopped.
TEST_F(EngineTest, EvaluateAndVerifyStopWhenAsked) {
  auto cfg = storage::LoadModelConfig(kModel);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EvalSpec es;
  es.model_dir = kModel;
  es.seqlen = 64;
  es.tokens = *tokens_;
  int polls = 0;
  es.stop = [&] { return ++polls == 2; };
  absl::StatusOr<EvalResult> e = engine_->Evaluate(es, nullptr);
  EXPECT_THAT(e.status(), qf::testing::StatusIs(absl::StatusCode::kCancelled, HasSubstr("stopped after layer 1")));
  EXPECT_EQ(polls, 2);

  // An RTN artifact of tiny-llama (4 layers x 7 linears).
  qf::testing::TempDir tmp;
  auto session = engine_->OpenSession(Spec("rtn"));
  ASSERT_TRUE(session.ok()) << session.status();
  std::vector<kernels::LayerResult> layers;
  for (int l = 0; l < cfg->num_hidden_layers; ++l) {
    auto r = (*session)->QuantizeLayer(l, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    layers.push_back(*std::move(r));
  }
  storage::QuantSpec qs;
  qs.method = "rtn";
  qs.sym = Spec("rtn").quant.sym;   // the session's defaults
  const std::string art = tmp.Path("rtn");
  const absl::Status written = storage::WriteArtifact(kModel, *cfg, qs, layers, art, nlohmann::json::object());
  ASSERT_TRUE(written.ok()) << written;

  VerifySpec vs;
  vs.artifact_dir = art;
  vs.check_ms = {1, 3};
  vs.seqlen = 64;
  vs.tokens = *tokens_;
  struct Case { int stop_at; const char* where; };
  // Polled after each linear's check and after each layer's forwards.
  const Case cases[] = {
      {3, "verify: stopped at model.layers.0.self_attn.v_proj"},
      {8, "verify: stopped at the end of layer 0"},
      {16 + 7, "verify: stopped at model.layers.2.mlp.down_proj"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.where);
    polls = 0;
    vs.stop = [&] { return ++polls == c.stop_at; };
    absl::StatusOr<VerifyReport> r = engine_->Verify(vs, nullptr);
    EXPECT_THAT(r.status(), qf::testing::StatusIs(absl::StatusCode::kCancelled, HasSubstr(c.where)));
    EXPECT_EQ(polls, c.stop_at);
  }
  vs.stop = [] { return false; };
  absl::StatusOr<VerifyReport> r = engine_->Verify(vs, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->verdict, "passed") << r->failure;
}

}  // namespace
}  // namespace qf::worker
