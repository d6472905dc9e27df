// qctl as a user runs it. Every bad input gets exit status 1 and exactly one
// line "qctl: error: ..." naming what is wrong, and leaves no artifact.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSrc = QF_SOURCE_DIR;
const std::string kModel = kSrc + "/models/tiny-llama";
const std::string kCalib = kSrc + "/data/calib.txt";

struct RunResult {
  int code;
  std::string out;
  std::string err;
};

std::string ReadAll(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

class QctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qctl_test.XXXXXX";
    tmp_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  RunResult Qctl(const std::string& args) {
    std::string out = tmp_ + "/stdout", err = tmp_ + "/stderr";
    std::string cmd = std::string(QCTL_BIN) + " " + args + " >" + out + " 2>" + err;
    int rc = std::system(cmd.c_str());
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadAll(out), ReadAll(err)};
  }

  // A private copy of tiny-llama that a test may damage.
  std::string CopyModel() {
    std::string dir = tmp_ + "/model";
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kModel)) {
      fs::copy_file(e.path(), dir + "/" + e.path().filename().string(), fs::copy_options::overwrite_existing);
    }
    return dir;
  }

  // A private copy of tiny-llama whose tokenizer is an HF tokenizer.json from
  // tests/tokenizer/data/<fixture> (byte-level BPE) instead of tokenizer.model.
  std::string CopyModelWithBpeTokenizer(const std::string& fixture) {
    std::string dir = CopyModel();
    fs::remove(dir + "/tokenizer.model");
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(kSrc + "/tests/tokenizer/data/" + fixture + "/" + f, dir + "/" + f,
                    fs::copy_options::overwrite_existing);
    }
    return dir;
  }

  // Rewrites the safetensors header of `file` through `edit`; data unchanged.
  void EditHeader(const std::string& file, const std::function<void(nlohmann::json&)>& edit) {
    std::string bytes = ReadAll(file);
    uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
    edit(h);
    std::string hs = h.dump();
    while (hs.size() % 8) hs.push_back(' ');
    uint64_t m = hs.size();
    std::string out(reinterpret_cast<const char*>(&m), 8);
    WriteAll(file, out + hs + bytes.substr(8 + n));
  }

  // Defaults for method/bits/group size unless `extra` sets them.
  std::string QuantizeArgs(const std::string& model, const std::string& out, const std::string& extra = "") {
    std::string args = "quantize --model " + model + " --calib " + kCalib +
                       " --samples 4 --seqlen 64 --seed 1 --out " + out + " " + extra;
    if (extra.find("--method") == std::string::npos) args += " --method gptq";
    if (extra.find("--bits") == std::string::npos) args += " --bits 4";
    if (extra.find("--group-size") == std::string::npos) args += " --group-size 128";
    return args;
  }

  void ExpectOneLineError(const RunResult& r, const std::string& needle) {
    EXPECT_EQ(r.code, 1) << r.err;
    // Exactly one line, our prefix, the needle (plus, at most, progress lines
    // that precede it on a non-TTY stderr).
    std::string last = r.err;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    size_t nl = last.rfind('\n');
    std::string line = nl == std::string::npos ? last : last.substr(nl + 1);
    EXPECT_THAT(line, ::testing::StartsWith("qctl: error: ")) << r.err;
    EXPECT_THAT(line, HasSubstr(needle)) << r.err;
    EXPECT_EQ(r.err.find("qctl: error:"), r.err.rfind("qctl: error:")) << "more than one error line:\n" << r.err;
  }

  void ExpectNoArtifact(const std::string& out) {
    EXPECT_FALSE(fs::exists(out)) << out;
    for (const auto& e : fs::directory_iterator(fs::path(out).parent_path())) {
      EXPECT_EQ(e.path().filename().string().find(".staging"), std::string::npos) << e.path();
    }
  }

  std::string tmp_;
};

TEST_F(QctlTest, TruncatedSafetensors) {
  std::string m = CopyModel();
  std::string f = m + "/model.safetensors";
  fs::resize_file(f, fs::file_size(f) / 2);
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(m, out)), "model.safetensors");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, CorruptedHeader) {
  std::string m = CopyModel();
  std::string f = m + "/model.safetensors";
  std::string bytes = ReadAll(f);
  for (int i = 8; i < 40; ++i) bytes[i] = '\x7f';
  WriteAll(f, bytes);
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(m, out)), "model.safetensors");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, HeaderPointingOutsideTheFile) {
  std::string m = CopyModel();
  EditHeader(m + "/model.safetensors", [](nlohmann::json& h) {
    h["model.layers.1.mlp.up_proj.weight"]["data_offsets"][1] = uint64_t{1} << 40;
  });
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(m, out)), "model.layers.1.mlp.up_proj.weight");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, MissingTensor) {
  std::string m = CopyModel();
  EditHeader(m + "/model.safetensors", [](nlohmann::json& h) { h.erase("model.layers.2.self_attn.k_proj.weight"); });
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(m, out)), "model.layers.2.self_attn.k_proj.weight");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, NanWeights) {
  std::string m = CopyModel();
  std::string f = m + "/model.safetensors";
  std::string bytes = ReadAll(f);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  uint64_t off = h["model.layers.3.mlp.down_proj.weight"]["data_offsets"][0].get<uint64_t>() + 8 + n;
  bytes[off + 10] = '\x00';  // fp16 0x7e00: NaN
  bytes[off + 11] = '\x7e';
  WriteAll(f, bytes);
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(m, out)), "model.layers.3.mlp.down_proj.weight");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, UnsupportedModelType) {
  std::string m = CopyModel();
  nlohmann::json cfg = nlohmann::json::parse(ReadAll(m + "/config.json"));
  cfg["model_type"] = "gpt2";
  WriteAll(m + "/config.json", cfg.dump());
  std::string out = tmp_ + "/art";
  RunResult r = Qctl(QuantizeArgs(m, out));
  ExpectOneLineError(r, "model_type 'gpt2'");
  EXPECT_THAT(r.err, HasSubstr("config.json"));
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, GroupSizeThatDoesNotDivide) {
  std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, out, "--group-size 96")), "does not divide");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, EmptyCalibrationFile) {
  std::string calib = tmp_ + "/empty.txt";
  WriteAll(calib, "\n  \n");
  std::string out = tmp_ + "/art";
  std::string args = "quantize --model " + kModel + " --method gptq --calib " + calib +
                     " --samples 4 --seqlen 64 --out " + out;
  ExpectOneLineError(Qctl(args), "empty.txt");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, UnwritableOutputDirectory) {
  std::string file = tmp_ + "/a-file";
  WriteAll(file, "x");
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, file + "/art")), "a-file");
  if (geteuid() != 0) {  // root ignores permission bits
    std::string ro = tmp_ + "/readonly";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    ExpectOneLineError(Qctl(QuantizeArgs(kModel, ro + "/art")), "readonly");
  }
}

TEST_F(QctlTest, AwqFormatRejectsThreeBits) {
  std::string out = tmp_ + "/art";
  std::string args = "quantize --model " + kModel + " --method awq --bits 3 --group-size 128 --calib " + kCalib +
                     " --samples 4 --seqlen 64 --format awq --out " + out;
  ExpectOneLineError(Qctl(args), "--format awq");
}

// The command line itself is input: an unknown flag, a value outside its
// set, a --verify-* option without --verify, a missing subcommand all get the
// same one line and exit 1, and nothing runs.
TEST_F(QctlTest, CommandLineErrorsAreOneLine) {
  const std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, out, "--verify-text " + kCalib)), "--verify-text requires --verify");
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, out, "--verify-dtype bf16")), "--verify-dtype requires --verify");
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, out, "--no-such-flag")), "--no-such-flag");
  ExpectOneLineError(Qctl("submit --model " + kModel + " --out " + out + " --mode diagonal --coordinator 127.0.0.1:1"),
                     "diagonal");
  ExpectOneLineError(Qctl(""), "subcommand");
  ExpectOneLineError(Qctl("quantise --model " + kModel), "quantise: not a qctl command (expected one of quantize, eval");
  ExpectNoArtifact(out);
  // A directory of the user's is refused before any quantization, and kept.
  const std::string mine = tmp_ + "/mine";
  std::filesystem::create_directories(mine);
  std::ofstream(mine + "/notes.txt") << "mine";
  ExpectOneLineError(Qctl(QuantizeArgs(kModel, mine, "")), "--out " + mine + ": exists, is not empty and is not a qforge artifact");
  EXPECT_TRUE(std::filesystem::exists(mine + "/notes.txt"));
  EXPECT_FALSE(std::filesystem::exists(tmp_ + "/.mine.qforge-state"));
  // A state inside the artifact would be replaced with it: refused before it exists.
  for (const std::string& state : {out, out + "/state", out + "/./x/.."}) {
    ExpectOneLineError(Qctl(QuantizeArgs(kModel, out, "--state " + state)), "--state " + state + ": inside --out " + out);
    ExpectNoArtifact(out);
  }
  EXPECT_EQ(Qctl("quantize --help").code, 0);
}

// qctl export --gguf: what llama.cpp's blocks cannot hold, a directory that
// is no artifact, a path that cannot be written: one line, exit 1, no file.
TEST_F(QctlTest, ExportErrorsAreOneLineAndLeaveNoFile) {
  const std::string act = tmp_ + "/act", three = tmp_ + "/three", gguf = tmp_ + "/m.gguf";
  ASSERT_EQ(Qctl(QuantizeArgs(kModel, act, "--act-order --sym")).code, 0);
  ASSERT_EQ(Qctl(QuantizeArgs(kModel, three, "--bits 3")).code, 0);
  ExpectOneLineError(Qctl("export " + act + " --gguf " + gguf), "self_attn.q_proj: input channel");
  ExpectOneLineError(Qctl("export " + three + " --gguf " + gguf), "self_attn.q_proj: bits 3");
  ExpectOneLineError(Qctl("export " + kModel + " --gguf " + gguf), "qforge-manifest.json");
  EXPECT_FALSE(fs::exists(gguf));
  const std::string four = tmp_ + "/four";
  ASSERT_EQ(Qctl(QuantizeArgs(kModel, four)).code, 0);
  ExpectOneLineError(Qctl("export " + four + " --gguf " + tmp_ + "/no/such/dir/m.gguf"), "no/such/dir/m.gguf");
  const RunResult ok = Qctl("export " + four + " --gguf " + gguf);
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("wrote " + gguf));
  EXPECT_EQ(ReadAll(gguf).substr(0, 4), "GGUF");
}

// A coordinator that cannot be reached: the line names the call and the
// address, not only gRPC's "failed to connect to all addresses".
TEST_F(QctlTest, UnreachableCoordinatorIsNamedWithTheCall) {
  const std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl("submit --model " + kModel + " --out " + out + " --coordinator 127.0.0.1:1"),
                     "JobService.Submit to 127.0.0.1:1: ");
  ExpectOneLineError(Qctl("status job-000001 --coordinator 127.0.0.1:1"), "JobService.Get to 127.0.0.1:1: ");
  ExpectOneLineError(Qctl("logs job-000001 --coordinator 127.0.0.1:1"), "JobService.Logs to 127.0.0.1:1: ");
  ExpectNoArtifact(out);
}

// Three times, on 1, 3 and 5 CPU threads: the thread count follows the
// machine and the pod's CPU limit (common/cpu_budget.h). On 3 threads a
// Cholesky factorization had other bits than on 1 (torch_util.h,
// SingleThreadedOnCpu); on 5, ATen's silu (decoder.h, SwiGlu). 8 windows of
// 128 tokens: 4 of 64 did not show those differences.
TEST_F(QctlTest, SameCommandTwiceWritesIdenticalBytes) {
  for (const char* method : {"gptq", "awq"}) {
    SCOPED_TRACE(method);
    std::string a = tmp_ + "/a-" + method, b = tmp_ + "/b-" + method;
    std::string extra = std::string("--method ") + method + (std::string(method) == "awq" ? " --format awq" : " --act-order");
    auto args = [&](const std::string& out, int threads) {
      return "quantize --model " + kModel + " --calib " + kCalib + " --samples 8 --seqlen 128 --seed 1 --bits 4" +
             " --group-size 128 --out " + out + " " + extra + " --cpu-threads " + std::to_string(threads);
    };
    RunResult ra = Qctl(args(a, 1));
    ASSERT_EQ(ra.code, 0) << ra.err;
    int files = 0;
    for (int threads : {3, 5}) {
      const std::string other = b + "-" + std::to_string(threads);
      RunResult rb = Qctl(args(other, threads));
      ASSERT_EQ(rb.code, 0) << rb.err;
      for (const auto& e : fs::directory_iterator(a)) {
        std::string name = e.path().filename().string();
        EXPECT_EQ(ReadAll(e.path().string()), ReadAll(other + "/" + name)) << name << " on " << threads << " threads";
        ++files;
      }
    }
    EXPECT_GE(files, 10);
    // The manifest names every file with its sha256.
    nlohmann::json man = nlohmann::json::parse(ReadAll(a + "/qforge-manifest.json"));
    EXPECT_TRUE(man["files"].contains("model.safetensors"));
  }
}

// A synthetic model goes through the same job as a checkpoint: config from
// the preset, synthetic calibration ids, an artifact whose non-layer tensors
// are the generator's and whose layers are quantized; the same bytes twice.
TEST_F(QctlTest, SyntheticModelQuantizesToADeterministicArtifact) {
  const std::string model = "'synthetic:llama-tiny?layers=2&seed=3'";
  const std::string args = " --method gptq --bits 4 --group-size 64 --samples 4 --seqlen 32 --seed 1 --out ";
  RunResult ra = Qctl("quantize --model " + model + args + tmp_ + "/a");
  ASSERT_EQ(ra.code, 0) << ra.err;
  RunResult rb = Qctl("quantize --model " + model + args + tmp_ + "/b");
  ASSERT_EQ(rb.code, 0) << rb.err;
  for (const char* f : {"model.safetensors", "config.json", "qforge-manifest.json"}) {
    EXPECT_EQ(ReadAll(tmp_ + "/a/" + f), ReadAll(tmp_ + "/b/" + f)) << f;
  }
  nlohmann::json cfg = nlohmann::json::parse(ReadAll(tmp_ + "/a/config.json"));
  EXPECT_EQ(cfg["num_hidden_layers"], 2);
  EXPECT_EQ(cfg["hidden_size"], 256);
  EXPECT_EQ(cfg["quantization_config"]["bits"], 4);
  nlohmann::json man = nlohmann::json::parse(ReadAll(tmp_ + "/a/qforge-manifest.json"));
  EXPECT_EQ(man["provenance"]["calibration"]["synthetic_tokens"], true);
  EXPECT_EQ(man["layer_errors"].size(), 2u);
  // Every tensor a loader needs: embeddings, final norm, lm_head, both
  // layers' norms and packed linears.
  const std::string st = ReadAll(tmp_ + "/a/model.safetensors");
  uint64_t n;
  std::memcpy(&n, st.data(), 8);
  nlohmann::json h = nlohmann::json::parse(st.substr(8, n));
  for (const char* t : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                        "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
                        "model.layers.0.mlp.down_proj.qweight", "model.layers.1.self_attn.q_proj.scales"}) {
    EXPECT_TRUE(h.contains(t)) << t;
  }
  EXPECT_FALSE(h.contains("model.layers.0.mlp.down_proj.weight"));
  EXPECT_EQ(h["lm_head.weight"]["shape"], nlohmann::json({2048, 256}));
  // Another seed is another model.
  ASSERT_EQ(Qctl("quantize --model 'synthetic:llama-tiny?layers=2&seed=4'" + args + tmp_ + "/c").code, 0);
  EXPECT_NE(ReadAll(tmp_ + "/a/model.safetensors"), ReadAll(tmp_ + "/c/model.safetensors"));
}

TEST_F(QctlTest, SyntheticModelBadInput) {
  const std::string out = tmp_ + "/art";
  ExpectOneLineError(Qctl("quantize --model synthetic:llama-7b --samples 4 --seqlen 32 --out " + out),
                     "unknown synthetic preset 'llama-7b'");
  ExpectNoArtifact(out);
  ExpectOneLineError(Qctl("quantize --model 'synthetic:llama-tiny?layers=0' --samples 4 --seqlen 32 --out " + out),
                     "layers '0'");
  ExpectOneLineError(Qctl("quantize --model synthetic:llama-tiny --calib " + kCalib + " --samples 4 --seqlen 32 --out " + out),
                     "--calib");
  ExpectOneLineError(Qctl("quantize --model synthetic:llama-tiny --group-size 96 --samples 4 --seqlen 32 --out " + out),
                     "does not divide");
  ExpectNoArtifact(out);
}

TEST_F(QctlTest, EvalOfArtifactIsCloseToFp16AndReportsJson) {
  std::string art = tmp_ + "/art";
  ASSERT_EQ(Qctl(QuantizeArgs(kModel, art, "--method rtn --bits 8")).code, 0);
  std::string text = kSrc + "/data/books-heldout.txt";
  RunResult fp = Qctl("eval --model " + kModel + " --text " + text + " --seqlen 128 --max-chunks 8 --json");
  RunResult q8 = Qctl("eval --model " + art + " --text " + text + " --seqlen 128 --max-chunks 8 --json");
  ASSERT_EQ(fp.code, 0) << fp.err;
  ASSERT_EQ(q8.code, 0) << q8.err;
  auto jf = nlohmann::json::parse(fp.out), jq = nlohmann::json::parse(q8.out);
  EXPECT_EQ(jf["tokens"].get<int>(), 8 * 127);
  double pf = jf["ppl"].get<double>(), pq = jq["ppl"].get<double>();
  EXPECT_GT(pf, 1.0);
  EXPECT_NE(pf, pq);                  // the artifact really is a different model
  EXPECT_NEAR(pq / pf, 1.0, 0.01);    // 8-bit RTN loses < 1%
}

// The tokenizer keys of a GGUF file (tests/formats/gguf_test.cc reads the
// whole layout): string and u32 values, every array's size, and the arrays of
// strings or of i32.
struct GgufTokenizer {
  std::map<std::string, std::string> strings;
  std::map<std::string, uint64_t> array_sizes;
  std::map<std::string, std::vector<std::string>> string_arrays;
  std::map<std::string, std::vector<int32_t>> i32_arrays;
  std::map<std::string, uint32_t> u32s;
};
GgufTokenizer ReadGgufTokenizer(const std::string& path) {
  const std::string bytes = ReadAll(path);
  size_t p = 0;
  const auto take = [&](size_t n) {
    if (p + n > bytes.size()) throw std::runtime_error(path + ": truncated");
    p += n;
    return bytes.substr(p - n, n);
  };
  const auto num = [&](auto v) {
    std::memcpy(&v, take(sizeof(v)).data(), sizeof(v));
    return v;
  };
  const auto str = [&] { return take(num(uint64_t{})); };
  GgufTokenizer g;
  EXPECT_EQ(take(4), "GGUF");
  take(4 + 8);  // version, tensor count
  const uint64_t n_kv = num(uint64_t{});
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = str();
    const uint32_t type = num(uint32_t{});
    if (type == 8) {
      g.strings[key] = str();
    } else if (type == 4) {
      g.u32s[key] = num(uint32_t{});
    } else if (type == 9) {
      const uint32_t elem = num(uint32_t{});
      const uint64_t n = num(uint64_t{});
      g.array_sizes[key] = n;
      for (uint64_t j = 0; j < n; ++j) {
        if (elem == 8) {
          g.string_arrays[key].push_back(str());
        } else if (elem == 5) {
          g.i32_arrays[key].push_back(num(int32_t{}));
        } else {
          take(4);  // f32 (scores); the writer writes no other arrays
        }
      }
    } else {
      take(type == 7 ? 1 : 4);  // bool; f32
    }
  }
  return g;
}

// A Llama 3-style BPE tokenizer (1542 ids, within tiny-llama's 8000): eval
// and quantize (calibration) run through it; the artifact keeps
// tokenizer.json, and GGUF export writes it as llama.cpp's "gpt2" tokenizer
// with the "llama-bpe" pre-tokenizer: the tokens in id order padded to the
// model's 8000, the merges, BOS/EOS, no scores; the same bytes twice.
TEST_F(QctlTest, BpeTokenizerEvalsQuantizesAndExportsToGguf) {
  const std::string m = CopyModelWithBpeTokenizer("bpe-llama3");
  const std::string text = kSrc + "/data/books-heldout.txt";
  const RunResult ev = Qctl("eval --model " + m + " --text " + text + " --seqlen 128 --max-chunks 4 --json");
  ASSERT_EQ(ev.code, 0) << ev.err;
  const auto j = nlohmann::json::parse(ev.out);
  EXPECT_EQ(j["tokens"].get<int>(), 4 * 127);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  const std::string art = tmp_ + "/art", gguf = tmp_ + "/m.gguf";
  const RunResult q = Qctl(QuantizeArgs(m, art));
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_TRUE(fs::exists(art + "/tokenizer.json"));
  const RunResult ex = Qctl("export " + art + " --gguf " + gguf);
  ASSERT_EQ(ex.code, 0) << ex.err;
  EXPECT_THAT(ex.out, HasSubstr("1542 pieces"));
  ASSERT_EQ(Qctl("export " + art + " --gguf " + gguf + ".again").code, 0);
  EXPECT_TRUE(ReadAll(gguf) == ReadAll(gguf + ".again"));

  const nlohmann::json fixture = nlohmann::json::parse(ReadAll(m + "/tokenizer.json"));
  std::vector<std::string> want(fixture["model"]["vocab"].size() + fixture["added_tokens"].size());
  for (const auto& [token, id] : fixture["model"]["vocab"].items()) want.at(id.get<size_t>()) = token;
  for (const auto& added : fixture["added_tokens"]) want.at(added["id"].get<size_t>()) = added["content"];
  ASSERT_EQ(want.size(), 1542u);
  const GgufTokenizer g = ReadGgufTokenizer(gguf);
  EXPECT_EQ(g.strings.at("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.strings.at("tokenizer.ggml.pre"), "llama-bpe");
  const std::vector<std::string>& tokens = g.string_arrays.at("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 8000u);  // config.json's vocab_size
  EXPECT_EQ(std::vector<std::string>(tokens.begin(), tokens.begin() + 1542), want);
  EXPECT_EQ(tokens[1542], "[PAD1542]");
  const std::vector<int32_t>& types = g.i32_arrays.at("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), 8000u);
  EXPECT_EQ(std::count(types.begin(), types.end(), 3), 2);  // <|begin_of_text|>, <|end_of_text|>
  EXPECT_EQ(types[1540], 3);
  EXPECT_EQ(std::count(types.begin(), types.begin() + 1540, 1), 1540);
  std::vector<std::string> want_merges;  // the fixture's are ["a", "b"] pairs
  for (const auto& pair : fixture["model"]["merges"]) {
    want_merges.push_back(pair[0].get<std::string>() + " " + pair[1].get<std::string>());
  }
  ASSERT_EQ(want_merges.size(), 1244u);
  EXPECT_EQ(g.string_arrays.at("tokenizer.ggml.merges"), want_merges);
  EXPECT_EQ(g.array_sizes.count("tokenizer.ggml.scores"), 0u);
  EXPECT_EQ(g.u32s.at("tokenizer.ggml.bos_token_id"), 1540u);  // <|begin_of_text|>
  EXPECT_EQ(g.u32s.at("tokenizer.ggml.eos_token_id"), 1541u);  // <|end_of_text|>
}

// A Qwen2-layout tokenizer.json on a llama model: it has no BOS, so eval
// scores every chunk from the text's first token (4 x 127 predicted tokens,
// as with a BOS). The GGUF export writes it as llama.cpp's converter writes
// Qwen2's: pre-tokenizer `qwen2`, no BOS added. An NFC normalizer beside
// another pattern (the Llama 3 one here) is refused on one line, leaving no
// file.
TEST_F(QctlTest, Qwen2TokenizerEvalsWithoutBosAndExportsToGguf) {
  const std::string m = CopyModelWithBpeTokenizer("bpe-qwen2");
  const RunResult ev = Qctl("eval --model " + m + " --text " + kSrc + "/data/books-heldout.txt" +
                            " --seqlen 128 --max-chunks 4 --json");
  if (ev.code != 0 && ev.err.find("NFC") != std::string::npos) GTEST_SKIP() << ev.err;  // built without ICU
  ASSERT_EQ(ev.code, 0) << ev.err;
  const auto j = nlohmann::json::parse(ev.out);
  EXPECT_EQ(j["tokens"].get<int>(), 4 * 127);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  const std::string art = tmp_ + "/art", gguf = tmp_ + "/m.gguf";
  ASSERT_EQ(Qctl(QuantizeArgs(m, art, "--method rtn")).code, 0);
  const RunResult ex = Qctl("export " + art + " --gguf " + gguf);
  ASSERT_EQ(ex.code, 0) << ex.err;
  const GgufTokenizer g = ReadGgufTokenizer(gguf);
  EXPECT_EQ(g.strings.at("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.strings.at("tokenizer.ggml.pre"), "qwen2");
  EXPECT_EQ(g.u32s.count("tokenizer.ggml.bos_token_id"), 0u);

  const std::string nfc = CopyModelWithBpeTokenizer("bpe-llama3");  // the same directory, rewritten
  nlohmann::json tj = nlohmann::json::parse(ReadAll(nfc + "/tokenizer.json"));
  tj["normalizer"] = {{"type", "NFC"}};
  WriteAll(nfc + "/tokenizer.json", tj.dump());
  const std::string art2 = tmp_ + "/art2", gguf2 = tmp_ + "/m2.gguf";
  ASSERT_EQ(Qctl(QuantizeArgs(nfc, art2, "--method rtn")).code, 0);
  ExpectOneLineError(Qctl("export " + art2 + " --gguf " + gguf2),
                     art2 + "/tokenizer.json: normalizer: NFC beside the Llama 3 split pattern, expected none");
  EXPECT_FALSE(fs::exists(gguf2));
}

// Token ids past the model's embeddings (a tokenizer.json of 8040 ids on a
// model of 8000): one error line, no crash.
TEST_F(QctlTest, BpeIdsBeyondTheEmbeddingsAreAnError) {
  const std::string m = CopyModelWithBpeTokenizer("bpe-llama3");
  nlohmann::json j = nlohmann::json::parse(ReadAll(m + "/tokenizer.json"));
  auto& vocab = j["model"]["vocab"];
  for (int i = 0; vocab.size() < 8040; ++i) vocab["\u0120filler" + std::to_string(i)] = vocab.size();
  for (auto& added : j["added_tokens"]) added["id"] = vocab.size() + (added["content"] == "<|end_of_text|>");
  WriteAll(m + "/tokenizer.json", j.dump());
  const std::string text = kSrc + "/data/books-heldout.txt";
  ExpectOneLineError(Qctl("eval --model " + m + " --text " + text + " --seqlen 128 --max-chunks 2"),
                     "tokens: id 8040 outside the vocabulary");
}

}  // namespace
