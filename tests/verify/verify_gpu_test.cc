// qctl verify --device cuda (label gpu): the CUDA kernel on tiny-llama's own
// linears, throughput rows against cuBLAS FP16 and perplexity through the
// fused path. Every test skips itself when qctl finds no CUDA device.
#include "tests/verify/verify_test_util.h"

namespace qf::verify_test {
namespace {

using ::testing::HasSubstr;

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Artifacts);

class VerifyGpuTest : public VerifyTestBase {
 protected:
  // Runs qctl verify on the GPU; false (and the test skips) without one.
  bool VerifyOnGpu(const std::string& art, const std::string& extra, RunResult* r) {
    *r = Run("verify " + art + " --device cuda --iters 10 " + extra);
    return !(r->code == 1 && ErrorLine(*r).find("device 'cuda'") != std::string::npos);
  }
};

#define VERIFY_ON_GPU(art, extra, r) \
  if (!VerifyOnGpu(art, extra, &r)) GTEST_SKIP() << "no CUDA device: " << r.err

void ExpectGpuPass(const nlohmann::json& j) {
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["verdict"], "passed") << j.dump(2);
  EXPECT_THAT(j["device"].get<std::string>(), HasSubstr("cuda:0"));
  EXPECT_EQ(j["linear_checks"]["ok"], 28) << j["linear_checks"].dump(2);
  const nlohmann::json& t = j["throughput"];
  ASSERT_TRUE(t["measured"].get<bool>()) << t.dump();
  // tiny-llama: (K, N) = (256, 256) q/o, (256, 128) k/v, (256, 768) gate/up, (768, 256) down; 4 M each.
  ASSERT_EQ(t["shapes"].size(), 16u) << t.dump(2);
  for (const auto& s : t["shapes"]) {
    EXPECT_GT(s["fused_us"].get<double>(), 0) << s.dump();
    EXPECT_GT(s["cublas_us"].get<double>(), 0) << s.dump();
    EXPECT_NE(s["variant"], "unsupported") << s.dump();
  }
}

TEST_F(VerifyGpuTest, GptqArtifactPassesOnTheGpu) {
  const std::string art = CopyArtifact("gptq", tmp_);
  RunResult r;
  VERIFY_ON_GPU(art, "--text " + kText + " --seqlen 512 --max-chunks 8", r);
  ASSERT_EQ(r.code, 0) << r.err;
  std::printf("%s", r.out.c_str());   // the table, for the log
  nlohmann::json j = ReadJson(art + "/verify.json");
  ExpectGpuPass(j);
  EXPECT_TRUE(j["perplexity"]["passed"].get<bool>()) << j["perplexity"].dump();
}

// bf16: the tiled kernel's bf16 variants on tiny-llama's linears (n <= 768
// is below the decode and wgmma rows), against cuBLAS BF16, and perplexity
// through them.
TEST_F(VerifyGpuTest, Bf16PassesOnTheGpu) {
  const std::string art = CopyArtifact("gptq", tmp_);
  RunResult r;
  VERIFY_ON_GPU(art, "--dtype bf16 --text " + kText + " --seqlen 512 --max-chunks 8", r);
  ASSERT_EQ(r.code, 0) << r.err;
  std::printf("%s", r.out.c_str());
  nlohmann::json j = ReadJson(art + "/verify.json");
  ExpectGpuPass(j);
  EXPECT_EQ(j["dtype"], "bf16");
  EXPECT_THAT(j["throughput"]["baseline"].get<std::string>(), HasSubstr("cuBLAS BF16"));
  for (const auto& s : j["throughput"]["shapes"]) {
    EXPECT_EQ(s["variant"].get<std::string>().rfind("bf16_", 0), 0u) << s.dump();
  }
  EXPECT_TRUE(j["perplexity"]["passed"].get<bool>()) << j["perplexity"].dump();
}

TEST_F(VerifyGpuTest, AwqAndActOrderArtifactsPassOnTheGpu) {
  for (const char* name : {"awq", "gptq_act_sym"}) {
    SCOPED_TRACE(name);
    const std::string art = CopyArtifact(name, tmp_);
    RunResult r;
    VERIFY_ON_GPU(art, "--text " + kText + " --seqlen 256 --max-chunks 4", r);
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = ReadJson(art + "/verify.json");
    ExpectGpuPass(j);
    EXPECT_TRUE(j["perplexity"]["passed"].get<bool>()) << j["perplexity"].dump();
  }
}

TEST_F(VerifyGpuTest, ThreeBitIsUnsupportedOnTheGpu) {
  const std::string art = CopyArtifact("rtn3", tmp_);
  RunResult r;
  VERIFY_ON_GPU(art, "", r);
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = ReadJson(art + "/verify.json");
  EXPECT_EQ(j["verdict"], "unsupported");
  EXPECT_FALSE(j["throughput"]["measured"].get<bool>());
}

}  // namespace
}  // namespace qf::verify_test
