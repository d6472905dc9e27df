#include "coordinator/planner.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/coordinator/test_util.h"
#include "tests/mutator.h"
#include "tests/proto_mutator.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

proto::JobSpec TinySpec() {
  proto::JobSpec s;
  s.set_model_path(std::string(QF_SOURCE_DIR) + "/models/tiny-llama");
  s.set_method("gptq");
  s.set_calib_path(std::string(QF_SOURCE_DIR) + "/data/calib.txt");
  s.set_out_dir("/tmp/qf-planner-test-out");
  ApplySpecDefaults(&s);
  return s;
}

TEST(PlannerTest, DefaultsAreFilledAndValid) {
  proto::JobSpec s = TinySpec();
  EXPECT_EQ(s.bits(), 4);
  EXPECT_EQ(s.group_size(), 128);
  EXPECT_EQ(s.samples(), 128);
  EXPECT_EQ(s.seqlen(), 512);
  EXPECT_EQ(s.format(), "gptq");
  EXPECT_EQ(s.mode(), proto::MODE_SEQUENTIAL);
  EXPECT_TRUE(s.true_sequential());
  EXPECT_THAT(ValidateJobSpec(s), IsOk());
  proto::JobSpec awq = TinySpec();
  awq.set_method("awq");
  awq.clear_format();
  ApplySpecDefaults(&awq);
  EXPECT_EQ(awq.format(), "awq");
}

// One malformed or out-of-range field per row; the error must name it.
TEST(PlannerTest, BadFieldsAreNamed) {
  struct Case {
    const char* field;
    void (*mutate)(proto::JobSpec*);
  };
  const Case cases[] = {
      {"model_path", [](proto::JobSpec* s) { s->clear_model_path(); }},
      {"method", [](proto::JobSpec* s) { s->set_method("squeeze"); }},
      {"bits", [](proto::JobSpec* s) { s->set_bits(5); }},
      {"group_size", [](proto::JobSpec* s) { s->set_group_size(-7); }},
      {"group_size", [](proto::JobSpec* s) { s->set_group_size(100); }},
      {"damp_percent", [](proto::JobSpec* s) { s->set_damp_percent(1.5); }},
      {"act_order", [](proto::JobSpec* s) { s->set_method("rtn"); s->set_act_order(true); }},
      {"block_size", [](proto::JobSpec* s) { s->set_block_size(-1); }},
      {"awq_paper_scales", [](proto::JobSpec* s) { s->set_awq_paper_scales(true); }},
      {"awq_grid", [](proto::JobSpec* s) { s->set_awq_grid(5000); }},
      {"calib_path", [](proto::JobSpec* s) { s->clear_calib_path(); }},
      {"samples", [](proto::JobSpec* s) { s->set_samples(-3); }},
      {"seqlen", [](proto::JobSpec* s) { s->set_seqlen(1); }},
      {"format", [](proto::JobSpec* s) { s->set_format("gguf"); }},
      {"bits", [](proto::JobSpec* s) { s->set_format("awq"); s->set_bits(3); }},
      {"sym", [](proto::JobSpec* s) { s->set_format("awq"); s->set_sym(true); }},
      {"out_dir", [](proto::JobSpec* s) { s->clear_out_dir(); }},
      {"mode", [](proto::JobSpec* s) { s->set_mode(static_cast<proto::Mode>(7)); }},
      {"stage_layers", [](proto::JobSpec* s) { s->set_stage_layers(-1); }},
      {"priority", [](proto::JobSpec* s) { s->set_priority(101); }},
      {"max_attempts", [](proto::JobSpec* s) { s->set_max_attempts(-2); }},
  };
  for (const Case& c : cases) {
    proto::JobSpec s = TinySpec();
    c.mutate(&s);
    EXPECT_THAT(ValidateJobSpec(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr(std::string("JobSpec.") + c.field)))
        << c.field;
  }
}

// The verify stage's fields: defaults only with verify, values in range,
// none of them without it (a stray one would be silently ignored).
TEST(PlannerTest, VerifyFieldsAreChecked) {
  proto::JobSpec v = TinySpec();
  v.set_verify(true);
  ApplySpecDefaults(&v);
  EXPECT_EQ(v.verify_seqlen(), 512);
  EXPECT_EQ(v.verify_max_chunks(), 256);
  EXPECT_EQ(v.verify_dtype(), "fp16");
  EXPECT_THAT(ValidateJobSpec(v), IsOk());
  EXPECT_TRUE(TinySpec().verify_dtype().empty());  // no defaults without verify

  struct Case {
    const char* field;
    bool verify;
    void (*mutate)(proto::JobSpec*);
  };
  const Case cases[] = {
      {"verify_dtype", true, [](proto::JobSpec* s) { s->set_verify_dtype("fp8"); }},
      {"verify_seqlen", true, [](proto::JobSpec* s) { s->set_verify_seqlen(1); }},
      {"verify_max_chunks", true, [](proto::JobSpec* s) { s->set_verify_max_chunks(-4); }},
      {"verify_text", false, [](proto::JobSpec* s) { s->set_verify_text("/data/books.txt"); }},
      {"verify_dtype", false, [](proto::JobSpec* s) { s->set_verify_dtype("bf16"); }},
      {"verify_seqlen", false, [](proto::JobSpec* s) { s->set_verify_seqlen(128); }},
      {"verify_max_chunks", false, [](proto::JobSpec* s) { s->set_verify_max_chunks(8); }},
  };
  for (const Case& c : cases) {
    proto::JobSpec s = TinySpec();
    s.set_verify(c.verify);
    ApplySpecDefaults(&s);
    c.mutate(&s);
    EXPECT_THAT(ValidateJobSpec(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr(std::string("JobSpec.") + c.field)))
        << c.field << (c.verify ? " with verify" : " without verify");
  }

  proto::JobSpec text = v;
  text.set_verify_text("/nonexistent/heldout.txt");
  EXPECT_THAT(CheckJobInputs(text), StatusIs(absl::StatusCode::kNotFound,
                                             AllOf(HasSubstr("JobSpec.verify_text"), HasSubstr("/nonexistent/heldout.txt"))));
  text.set_verify_text(std::string(QF_SOURCE_DIR) + "/data/calib.txt");
  EXPECT_THAT(CheckJobInputs(text), IsOk());
  text.set_verify_seqlen(4096);  // tiny-llama: max_position_embeddings 2048
  EXPECT_THAT(CheckJobInputs(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.verify_seqlen")));

  proto::JobSpec synthetic = v;
  synthetic.set_model_path("synthetic:llama-tiny");
  synthetic.clear_calib_path();
  EXPECT_THAT(CheckJobInputs(synthetic), IsOk());
  synthetic.set_verify_text(std::string(QF_SOURCE_DIR) + "/data/calib.txt");
  EXPECT_THAT(CheckJobInputs(synthetic), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.verify_text")));
}

TEST(PlannerTest, RtnNeedsNoCalibration) {
  proto::JobSpec s = TinySpec();
  s.set_method("rtn");
  s.clear_calib_path();
  EXPECT_THAT(ValidateJobSpec(s), IsOk());
  EXPECT_THAT(CheckJobInputs(s), IsOk());
}

TEST(PlannerTest, ChecksInputsAgainstTheModel) {
  proto::JobSpec s = TinySpec();
  auto cfg = CheckJobInputs(s);
  ASSERT_THAT(cfg, IsOk());
  EXPECT_EQ(cfg->num_hidden_layers, 4);

  proto::JobSpec missing = TinySpec();
  missing.set_model_path("/nonexistent/model-dir");
  EXPECT_THAT(CheckJobInputs(missing), StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/model-dir")));

  proto::JobSpec no_calib = TinySpec();
  no_calib.set_calib_path("/nonexistent/calib.txt");
  EXPECT_THAT(CheckJobInputs(no_calib), StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/calib.txt")));

  proto::JobSpec groups = TinySpec();
  groups.set_group_size(512);  // hidden 256 is not a multiple of 512
  EXPECT_THAT(CheckJobInputs(groups), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr("JobSpec.group_size"), HasSubstr("config.json"))));

  proto::JobSpec stages = TinySpec();
  stages.set_stage_layers(5);
  EXPECT_THAT(CheckJobInputs(stages), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.stage_layers")));

  proto::JobSpec seq = TinySpec();
  seq.set_seqlen(4096);
  EXPECT_THAT(CheckJobInputs(seq), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JobSpec.seqlen")));

  // An --out that assembly would refuse to replace is refused at submit.
  qf::testing::TempDir tmp;
  proto::JobSpec user_dir = TinySpec();
  user_dir.set_out_dir(tmp.Path("notes"));
  std::filesystem::create_directories(tmp.Path("notes"));
  std::ofstream(tmp.Path("notes/todo.txt")) << "mine";
  EXPECT_THAT(CheckJobInputs(user_dir), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 AllOf(HasSubstr("JobSpec.out_dir"), HasSubstr(tmp.Path("notes")),
                                                       HasSubstr("not a qforge artifact"))));
  std::ofstream(tmp.Path("notes/qforge-manifest.json")) << "{}";  // an earlier artifact: replaced
  EXPECT_THAT(CheckJobInputs(user_dir), IsOk());
  proto::JobSpec file = TinySpec();
  file.set_out_dir(tmp.Path("notes/todo.txt"));
  EXPECT_THAT(CheckJobInputs(file), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a directory")));
}

TEST(PlannerTest, PlansContiguousStages) {
  auto ranges = [](const std::vector<StagePlan>& p) {
    std::vector<std::pair<int, int>> out;
    for (const StagePlan& s : p) out.emplace_back(s.first_layer, s.end_layer);
    return out;
  };
  using V = std::vector<std::pair<int, int>>;
  EXPECT_EQ(ranges(PlanStages(4, 1)), (V{{0, 1}, {1, 2}, {2, 3}, {3, 4}}));
  EXPECT_EQ(ranges(PlanStages(4, 2)), (V{{0, 2}, {2, 4}}));
  EXPECT_EQ(ranges(PlanStages(5, 2)), (V{{0, 2}, {2, 4}, {4, 5}}));
  EXPECT_EQ(ranges(PlanStages(3, 8)), (V{{0, 3}}));

  proto::JobSpec s = TinySpec();
  storage::ModelConfig cfg;
  cfg.num_hidden_layers = 4;
  EXPECT_EQ(ResolveStageLayers(s, cfg, 16), 4);  // the default is clamped to the model
  s.set_stage_layers(3);
  EXPECT_EQ(ResolveStageLayers(s, cfg, 16), 3);
}

TEST(PlannerTest, QuantSpecFollowsTheEngineRules) {
  proto::JobSpec s = TinySpec();
  s.set_act_order(true);
  EXPECT_TRUE(ToQuantSpec(s).desc_act);
  s.set_static_groups(true);
  EXPECT_FALSE(ToQuantSpec(s).desc_act);  // static groups keep g_idx monotone
  s.set_static_groups(false);
  s.set_group_size(-1);
  EXPECT_FALSE(ToQuantSpec(s).desc_act);
}

// Submitted specs, mutated field by field as a client could send them: either
// refused naming a JobSpec field, or accepted, and then what the planner
// derives from them holds: the quantization spec the artifact writer checks is
// valid, the model inputs are checked or named, the stages cover every layer.
TEST(PlannerTest, MutatedSpecsAreRefusedByFieldOrPlanCleanly) {
  const proto::JobSpec good = TinySpec();
  std::mt19937 rng(42);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    proto::JobSpec s = good;
    qf::testing::MutateMessageUpTo3(&s, rng);
    ApplySpecDefaults(&s);
    const absl::Status v = ValidateJobSpec(s);
    if (!v.ok()) {
      ++refused;
      EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument) << "mutant " << i << ": " << v;
      qf::testing::ExpectRefusalNames(v, "JobSpec.", i);
      continue;
    }
    EXPECT_THAT(storage::ValidateQuantSpec(ToQuantSpec(s)), IsOk()) << "mutant " << i << ": " << s.ShortDebugString();
    absl::StatusOr<storage::ModelConfig> cfg = CheckJobInputs(s);
    if (!cfg.ok()) continue;
    const int stage = ResolveStageLayers(s, *cfg, 4);
    ASSERT_GE(stage, 1) << "mutant " << i;
    int covered = 0;
    for (const StagePlan& p : PlanStages(static_cast<int>(cfg->num_hidden_layers), stage)) {
      EXPECT_EQ(p.first_layer, covered) << "mutant " << i;
      covered = p.end_layer;
    }
    EXPECT_EQ(covered, cfg->num_hidden_layers) << "mutant " << i;
  }
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace qf::coordinator
