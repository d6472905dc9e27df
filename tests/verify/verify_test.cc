// qctl verify on the CPU (the fused kernel's reference twin): passing
// artifacts write verify.json; corruption and unsupported artifacts are
// reported as the contract of qctl/verify_report.h says.
#include <cstdio>
#include <cstring>

#include "common/sha256.h"
#include "tests/verify/verify_test_util.h"

namespace qf::verify_test {
namespace {

using ::testing::HasSubstr;

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Artifacts);

class VerifyTest : public VerifyTestBase {};

void ExpectPassedReport(const nlohmann::json& j, const std::string& format, const std::string& dtype = "fp16",
                        double threshold = 2e-3) {
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["verdict"], "passed") << j.dump(2);
  EXPECT_TRUE(j["failure"].is_null());
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["dtype"], dtype);
  EXPECT_EQ(j["quantization"]["format"], format);
  EXPECT_EQ(j["quantization"]["bits"], 4);
  const nlohmann::json& c = j["linear_checks"];
  EXPECT_EQ(c["ms"], nlohmann::json({1, 16, 64}));
  EXPECT_EQ(c["ok"], 28);   // 4 layers x 7 linears
  EXPECT_EQ(c["failed"], 0);
  EXPECT_EQ(c["unsupported"], 0);
  ASSERT_EQ(c["linears"].size(), 28u);
  EXPECT_EQ(c["linears"][0]["tensor"], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(c["linears"][6]["tensor"], "model.layers.0.mlp.down_proj");
  EXPECT_EQ(c["linears"][6]["k"], 768);
  EXPECT_EQ(c["linears"][6]["n"], 256);
  for (const auto& l : c["linears"]) {
    EXPECT_EQ(l["status"], "ok") << l.dump();
    EXPECT_LE(l["max_rel_err"].get<double>(), l["threshold"].get<double>()) << l.dump();
    EXPECT_EQ(l["threshold"].get<double>(), threshold);
  }
  EXPECT_FALSE(j["throughput"]["measured"].get<bool>());
  EXPECT_EQ(j["throughput"]["note"], "not measured: no CUDA device");
}

TEST_F(VerifyTest, GptqArtifactPassesWritesReportAndStaysReadable) {
  const std::string art = CopyArtifact("gptq", tmp_);
  RunResult r = Run("verify " + art + " --text " + kText + " --seqlen 128 --max-chunks 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("verdict     passed"));
  EXPECT_THAT(r.out, HasSubstr("throughput  not measured: no CUDA device"));
  nlohmann::json j = ReadJson(art + "/verify.json");
  ExpectPassedReport(j, "gptq");
  const nlohmann::json& p = j["perplexity"];
  ASSERT_TRUE(p["measured"].get<bool>()) << p.dump();
  EXPECT_EQ(p["chunks"], 2);
  EXPECT_EQ(p["seqlen"], 128);
  EXPECT_TRUE(p["passed"].get<bool>());
  EXPECT_LE(p["rel_diff"].get<double>(), p["tolerance"].get<double>());
  EXPECT_EQ(p["tolerance"].get<double>(), 1e-3);
  // The dequantized path is `qctl eval`'s, on the same tokens; and the
  // artifact still reads (verify.json is outside the manifest).
  RunResult e = Run("eval --model " + art + " --text " + kText + " --seqlen 128 --max-chunks 2 --json");
  ASSERT_EQ(e.code, 0) << e.err;
  nlohmann::json ej = nlohmann::json::parse(e.out);
  EXPECT_DOUBLE_EQ(ej["ppl"].get<double>(), p["dequant"].get<double>());
}

// --dtype bf16: activations, scales and outputs in bf16, against the bf16
// threshold; the linears' errors are the larger ones of bf16's 8 significant
// bits (so the type really changed), and perplexity still matches the
// dequantized path.
TEST_F(VerifyTest, Bf16PathPassesWithItsOwnThreshold) {
  const std::string art = CopyArtifact("gptq", tmp_);
  RunResult fp16 = Run("verify " + art + " --json");
  ASSERT_EQ(fp16.code, 0) << fp16.err;
  RunResult r = Run("verify " + art + " --dtype bf16 --text " + kText + " --seqlen 128 --max-chunks 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ExpectPassedReport(j, "gptq", "bf16", 1.5e-2);
  const double bf16_err = j["linear_checks"]["max_rel_err"].get<double>();
  const double fp16_err = nlohmann::json::parse(fp16.out)["linear_checks"]["max_rel_err"].get<double>();
  EXPECT_GT(bf16_err, 4 * fp16_err);
  EXPECT_TRUE(j["perplexity"]["passed"].get<bool>()) << j["perplexity"].dump();
  EXPECT_EQ(j["perplexity"]["tolerance"].get<double>(), 5e-3);
  std::printf("bf16: max rel. error %.3e (fp16 %.3e), ppl rel. diff %.3e\n", bf16_err, fp16_err,
              j["perplexity"]["rel_diff"].get<double>());
  ExpectOneLineError(Run("verify " + art + " --dtype fp8"), "dtype: 'fp8', expected fp16 or bf16");
}

TEST_F(VerifyTest, AwqArtifactPassesWithJsonOutput) {
  const std::string art = CopyArtifact("awq", tmp_);
  RunResult r = Run("verify " + art + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json printed = nlohmann::json::parse(r.out, nullptr, false);
  ExpectPassedReport(printed, "awq");
  EXPECT_EQ(printed, ReadJson(art + "/verify.json"));
  EXPECT_FALSE(printed["perplexity"]["measured"].get<bool>());
  EXPECT_EQ(printed["perplexity"]["note"], "not measured: no text given");
}

TEST_F(VerifyTest, ActOrderSymmetricArtifactPasses) {
  const std::string art = CopyArtifact("gptq_act_sym", tmp_);
  RunResult r = Run("verify " + art + " --text " + kText + " --seqlen 64 --max-chunks 2");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = ReadJson(art + "/verify.json");
  ExpectPassedReport(j, "gptq");
  EXPECT_TRUE(j["quantization"]["desc_act"].get<bool>());
  EXPECT_TRUE(j["quantization"]["sym"].get<bool>());
  EXPECT_TRUE(j["perplexity"]["passed"].get<bool>()) << j["perplexity"].dump();
}

TEST_F(VerifyTest, ThreeBitLinearsAreUnsupportedNotAnError) {
  const std::string art = CopyArtifact("rtn3", tmp_);
  RunResult r = Run("verify " + art + " --text " + kText + " --seqlen 64 --max-chunks 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("verdict     unsupported"));
  nlohmann::json j = ReadJson(art + "/verify.json");
  EXPECT_EQ(j["verdict"], "unsupported");
  EXPECT_EQ(j["linear_checks"]["unsupported"], 28);
  for (const auto& l : j["linear_checks"]["linears"]) {
    EXPECT_EQ(l["status"], "unsupported");
    EXPECT_THAT(l["detail"].get<std::string>(), HasSubstr("bits 3"));
    EXPECT_FALSE(l.contains("max_rel_err"));
  }
  EXPECT_FALSE(j["perplexity"]["measured"].get<bool>());
  EXPECT_THAT(j["perplexity"]["note"].get<std::string>(), HasSubstr("unsupported by the fused kernel"));
}

// Byte offset in model.safetensors of the first scale of `tensor`.
size_t FirstScaleOffset(const std::string& file, const std::string& tensor) {
  const std::string bytes = ReadAll(file);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h[tensor]["dtype"], "F16");
  return 8 + n + h[tensor]["data_offsets"][0].get<size_t>();
}

// One scale becomes 65504 (the largest fp16): finite, so the artifact reads,
// but the layer's output no longer fits the kernel's fp16.
void PoisonScale(const std::string& art, const std::string& tensor) {
  const std::string file = art + "/model.safetensors";
  std::string bytes = ReadAll(file);
  const size_t at = FirstScaleOffset(file, tensor);
  bytes[at] = static_cast<char>(0xFF);
  bytes[at + 1] = static_cast<char>(0x7B);
  WriteAll(file, bytes);
}

TEST_F(VerifyTest, CorruptedWeightsAreCaughtByTheManifestFirst) {
  const std::string art = CopyArtifact("gptq", tmp_);
  PoisonScale(art, "model.layers.1.mlp.up_proj.scales");
  RunResult r = Run("verify " + art);
  ExpectOneLineError(r, "model.safetensors: sha256");
  EXPECT_FALSE(fs::exists(art + "/verify.json"));
}

TEST_F(VerifyTest, CorruptedScaleBehindARewrittenManifestFailsNamingTheTensor) {
  const std::string art = CopyArtifact("gptq", tmp_);
  PoisonScale(art, "model.layers.1.mlp.up_proj.scales");
  // Someone "fixed" the manifest: only the GEMM check can tell now.
  const std::string mpath = art + "/qforge-manifest.json";
  nlohmann::json m = ReadJson(mpath);
  auto sha = Sha256FileHex(art + "/model.safetensors");
  ASSERT_TRUE(sha.ok());
  m["files"]["model.safetensors"]["sha256"] = *sha;
  WriteAll(mpath, m.dump(2) + "\n");

  RunResult r = Run("verify " + art);
  ExpectOneLineError(r, "model.layers.1.mlp.up_proj: fused W4A16 GEMM");
  EXPECT_THAT(ErrorLine(r), HasSubstr("not finite"));
  EXPECT_THAT(r.out, HasSubstr("verdict     failed"));
  nlohmann::json j = ReadJson(art + "/verify.json");
  EXPECT_EQ(j["verdict"], "failed");
  EXPECT_EQ(j["linear_checks"]["failed"], 1);
  EXPECT_EQ(j["linear_checks"]["ok"], 27);
  for (const auto& l : j["linear_checks"]["linears"]) {
    if (l["tensor"] == "model.layers.1.mlp.up_proj") {
      EXPECT_EQ(l["status"], "fail");
      EXPECT_TRUE(l["max_rel_err"].is_null());   // inf
    } else {
      EXPECT_EQ(l["status"], "ok") << l.dump();
    }
  }
}

TEST_F(VerifyTest, BadInputsGetOneLineErrors) {
  ExpectOneLineError(Run("verify " + tmp_ + "/nope"), tmp_ + "/nope: no such artifact directory");
  // A checkpoint is not an artifact; nothing is written into it.
  ExpectOneLineError(Run("verify " + kModel), "qforge-manifest.json: missing");
  EXPECT_FALSE(fs::exists(kModel + "/verify.json"));
  const std::string art = CopyArtifact("gptq", tmp_);
  ExpectOneLineError(Run("verify " + art + " --device tpu"), "device 'tpu'");
  ExpectOneLineError(Run("verify " + art + " --text " + tmp_ + "/missing.txt"), "missing.txt");
  ExpectOneLineError(Run("verify " + art + " --iters 0"), "iters");
  EXPECT_FALSE(fs::exists(art + "/verify.json"));
}

TEST_F(VerifyTest, QuantizeWithVerifyRunsTheStageAfterTheArtifact) {
  const std::string out = tmp_ + "/art";
  const std::string base = "quantize --model " + kModel + " --method rtn --bits 4 --group-size 128 --keep-state --json --out " + out;
  // A bad verify flag fails before any work: nothing is quantized.
  ExpectOneLineError(Run(base + " --verify --verify-dtype fp8"), "--verify-dtype: 'fp8', expected fp16 or bf16");
  EXPECT_FALSE(fs::exists(out));
  RunResult r =
      Run(base + " --verify --verify-dtype bf16 --verify-text " + kText + " --verify-seqlen 64 --verify-max-chunks 1");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json q = nlohmann::json::parse(r.out, nullptr, false);   // one object: the quantize summary
  ASSERT_TRUE(q.is_object()) << r.out;
  EXPECT_EQ(q["verify"], out + "/verify.json");
  nlohmann::json j = ReadJson(out + "/verify.json");
  EXPECT_EQ(j["verdict"], "passed");
  EXPECT_EQ(j["dtype"], "bf16");
  EXPECT_TRUE(j["perplexity"]["passed"].get<bool>());
  // --verify is no part of the job: the same state finds the same (finished) job without it.
  RunResult again = Run(base);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["job"], q["job"]);
}

// A verify stage that fails after the artifact is written keeps the job's
// state: the same command (corrected) finds the finished job and only
// verifies; the state goes once verify passes.
TEST_F(VerifyTest, QuantizeKeepsItsStateUntilVerifyPasses) {
  const std::string out = tmp_ + "/art-kept";
  const std::string state = tmp_ + "/.art-kept.qforge-state";
  const std::string base = "quantize --model " + kModel + " --method rtn --bits 4 --group-size 128 --json --out " + out +
                           " --verify --verify-seqlen 64 --verify-max-chunks 1";
  // A directory passes the flag's existence check and fails when the stage reads it.
  RunResult failed = Run(base + " --verify-text " + tmp_);
  ExpectOneLineError(failed, tmp_);
  EXPECT_TRUE(fs::exists(out + "/qforge-manifest.json"));
  EXPECT_TRUE(fs::exists(state)) << "the state went before the verify stage passed";
  const std::string job = nlohmann::json::parse(failed.out.substr(0, failed.out.find('\n')))["job"];

  RunResult r = Run(base + " --verify-text " + kText);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["job"], job);   // the finished job: nothing quantized again
  EXPECT_EQ(ReadJson(out + "/verify.json")["verdict"], "passed");
  EXPECT_FALSE(fs::exists(state));
}

}  // namespace
}  // namespace qf::verify_test
