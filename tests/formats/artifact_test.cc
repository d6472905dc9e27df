// Tests of storage/artifact.h on the bundled tiny-llama: layer results made
// by round-to-nearest of the real weights (artifact_fixture.h), written, read
// back bit-exact; config files; determinism; failure leaves nothing behind;
// corruption is caught by the manifest.

#include "storage/artifact.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "common/fs.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/ref/pack.h"
#include "tests/formats/artifact_fixture.h"
#include "tests/formats/test_linear.h"
#include "tests/mutator.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

namespace fs = std::filesystem;
using kernels::DenseTensor;
using kernels::LayerResult;
using kernels::QuantizedLinear;
using kernels::testing::ExpectSameLinear;
using ::testing::HasSubstr;

using testing::Fixture;
using testing::kModel;
using testing::Load;
using testing::MakeLayers;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

QuantSpec Gptq4() {
  return QuantSpec{.method = "rtn", .bits = 4, .group_size = 64, .sym = false, .desc_act = false,
                   .damp_percent = 0.01, .static_groups = false, .true_sequential = true, .format = "gptq"};
}

void ExpectRoundTrip(const QuantSpec& spec) {
  SCOPED_TRACE(QuantSpecToJson(spec).dump());
  Fixture f = Load();
  std::vector<LayerResult> layers = MakeLayers(f, spec);
  TempDir tmp;
  const std::string out = tmp.Path("art");
  absl::Status s = WriteArtifact(kModel, f.cfg, spec, layers, out, {{"job", "test"}});
  ASSERT_TRUE(s.ok()) << s;
  absl::StatusOr<LoadedArtifact> a = ReadArtifact(out);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(QuantSpecToJson(a->spec), QuantSpecToJson(spec));
  EXPECT_EQ(a->config.num_hidden_layers, f.cfg.num_hidden_layers);
  ASSERT_EQ(a->layers.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(a->layers[i].layer, static_cast<int>(i));
    ASSERT_EQ(a->layers[i].linears.size(), layers[i].linears.size());
    for (size_t j = 0; j < layers[i].linears.size(); ++j) ExpectSameLinear(a->layers[i].linears[j], layers[i].linears[j]);
    EXPECT_EQ(a->layers[i].errors, layers[i].errors);
    ASSERT_EQ(a->layers[i].dense.size(), 2u);
    for (size_t j = 0; j < 2; ++j) {
      EXPECT_EQ(a->layers[i].dense[j].name, layers[i].dense[j].name);
      EXPECT_EQ(a->layers[i].dense[j].dtype, "F16");
      EXPECT_EQ(a->layers[i].dense[j].shape, layers[i].dense[j].shape);
      EXPECT_TRUE(a->layers[i].dense[j].data == layers[i].dense[j].data) << layers[i].dense[j].name;
    }
  }
  // Tensors outside the layers are the source's, byte for byte.
  EXPECT_THAT(a->other_tensors, ::testing::ElementsAre("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"));
  for (const std::string& name : a->other_tensors) {
    absl::StatusOr<const TensorView*> mine = a->Get(name);
    absl::StatusOr<const TensorView*> theirs = f.src->Get(name);
    ASSERT_TRUE(mine.ok() && theirs.ok()) << name;
    EXPECT_EQ((*mine)->dtype, (*theirs)->dtype);
    EXPECT_EQ((*mine)->shape, (*theirs)->shape);
    EXPECT_TRUE((*mine)->data == (*theirs)->data) << name;
  }
  EXPECT_FALSE(a->checkpoint->Has("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(a->checkpoint->Has("model.layers.0.self_attn.q_proj.g_idx"), spec.format == "gptq");
  // The stored codes reproduce the real weights to within one step (half a
  // step inside the range; the rounded zero can push an extreme one step out).
  const QuantizedLinear& q = a->layers[2].linears[6];   // mlp.down_proj
  absl::StatusOr<const TensorView*> w = f.src->Get("model.layers.2.mlp.down_proj.weight");
  ASSERT_TRUE(w.ok());
  const std::vector<float> deq = kernels::DequantizeRef(q);
  ASSERT_EQ(deq.size(), static_cast<size_t>(q.out_features * q.in_features));
  for (int64_t o = 0; o < q.out_features; ++o) {
    for (int64_t i = 0; i < q.in_features; ++i) {
      uint16_t h;
      std::memcpy(&h, (*w)->data.data() + 2 * (o * q.in_features + i), 2);
      const float step = HalfToFloat(q.scales[q.g_idx[i] * q.out_features + o]);
      ASSERT_LE(std::fabs(deq[o * q.in_features + i] - HalfToFloat(h)), step * 1.01f + 1e-6f)
          << "o=" << o << " i=" << i;
    }
  }
}

TEST(Artifact, RoundTripGptq4BitGroup64) { ExpectRoundTrip(Gptq4()); }

TEST(Artifact, RoundTripGptq3BitActOrderSym) {
  QuantSpec spec = Gptq4();
  spec.method = "gptq";
  spec.bits = 3;
  spec.group_size = 128;
  spec.sym = true;
  spec.desc_act = true;
  ExpectRoundTrip(spec);
}

TEST(Artifact, RoundTripGptq8BitPerRow) {
  QuantSpec spec = Gptq4();
  spec.bits = 8;
  spec.group_size = -1;
  ExpectRoundTrip(spec);
}

TEST(Artifact, RoundTripAwq) {
  QuantSpec spec = Gptq4();
  spec.method = "awq";
  spec.format = "awq";
  spec.group_size = 128;
  ExpectRoundTrip(spec);
}

// OpenArtifact unpacks nothing; Layer(i) unpacks one layer, the same as
// ReadArtifact's layers[i].
TEST(Artifact, OpenArtifactUnpacksOneLayerAtATime) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  const std::vector<LayerResult> layers = MakeLayers(f, spec);
  TempDir tmp;
  const std::string out = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, out, nullptr).ok());
  absl::StatusOr<LoadedArtifact> open = OpenArtifact(out);
  ASSERT_TRUE(open.ok()) << open.status();
  ASSERT_EQ(open->layers.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_TRUE(open->layers[i].linears.empty());
    absl::StatusOr<LayerResult> one = open->Layer(static_cast<int>(i));
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(one->layer, static_cast<int>(i));
    ASSERT_EQ(one->linears.size(), layers[i].linears.size());
    for (size_t j = 0; j < layers[i].linears.size(); ++j) ExpectSameLinear(one->linears[j], layers[i].linears[j]);
    EXPECT_EQ(one->errors, layers[i].errors);
    EXPECT_EQ(one->dense.size(), 2u);
  }
  EXPECT_TRUE(open->layers[0].linears.empty());   // nothing was kept
  for (int bad : {-1, static_cast<int>(layers.size())}) {
    absl::StatusOr<LayerResult> r = open->Layer(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(out));
  }
  // ReadArtifact's layers come back from Layer() as they are.
  absl::StatusOr<LoadedArtifact> read = ReadArtifact(out);
  ASSERT_TRUE(read.ok()) << read.status();
  absl::StatusOr<LayerResult> again = read->Layer(1);
  ASSERT_TRUE(again.ok());
  for (size_t j = 0; j < layers[1].linears.size(); ++j) ExpectSameLinear(again->linears[j], layers[1].linears[j]);
}

TEST(Artifact, ConfigFilesTokenizerAndManifest) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  TempDir tmp;
  const std::string out = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, {{"job", "j1"}}).ok());
  EXPECT_THAT(ListDir(out), ::testing::ElementsAre("config.json", "generation_config.json", "model.safetensors",
                                                   "qforge-manifest.json", "quantize_config.json",
                                                   "tokenizer.model", "tokenizer_config.json"));
  for (const char* f2 : {"tokenizer.model", "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_EQ(ReadBytes(out + "/" + f2), ReadBytes(kModel + "/" + f2)) << f2;
  }
  const nlohmann::json config = nlohmann::json::parse(ReadBytes(out + "/config.json"));
  nlohmann::json source = f.cfg.raw;
  source["quantization_config"] = config["quantization_config"];
  EXPECT_EQ(config, source);   // everything else is the source config
  const nlohmann::json& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], 64);
  EXPECT_EQ(qc["desc_act"], false);
  EXPECT_EQ(qc["sym"], false);
  EXPECT_EQ(qc["checkpoint_format"], "gptq");
  const nlohmann::json qcfg = nlohmann::json::parse(ReadBytes(out + "/quantize_config.json"));
  EXPECT_EQ(qcfg["bits"], 4);
  EXPECT_EQ(qcfg["model_file_base_name"], "model");

  const nlohmann::json m = nlohmann::json::parse(ReadBytes(out + "/qforge-manifest.json"));
  EXPECT_EQ(m["format_version"], 1);
  EXPECT_EQ(m["provenance"], nlohmann::json({{"job", "j1"}}));
  EXPECT_EQ(m["quantization"], QuantSpecToJson(spec));
  std::vector<std::string> listed;
  for (const auto& [name, e] : m["files"].items()) {
    listed.push_back(name);
    absl::StatusOr<std::string> sha = Sha256FileHex(out + "/" + name);
    ASSERT_TRUE(sha.ok());
    EXPECT_EQ(e["sha256"], *sha) << name;
    EXPECT_EQ(e["bytes"], fs::file_size(out + "/" + name)) << name;
  }
  std::vector<std::string> all = ListDir(out);
  all.erase(std::find(all.begin(), all.end(), "qforge-manifest.json"));
  EXPECT_EQ(listed, all);
}

TEST(Artifact, AwqConfigFiles) {
  Fixture f = Load();
  QuantSpec spec = Gptq4();
  spec.format = "awq";
  spec.group_size = 128;
  TempDir tmp;
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), tmp.Path("a"), nullptr).ok());
  const nlohmann::json qc = nlohmann::json::parse(ReadBytes(tmp.Path("a/config.json")))["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "awq");
  EXPECT_EQ(qc["version"], "gemm");
  EXPECT_EQ(qc["zero_point"], true);
  EXPECT_EQ(qc["group_size"], 128);
  EXPECT_EQ(nlohmann::json::parse(ReadBytes(tmp.Path("a/quantize_config.json"))),
            nlohmann::json({{"zero_point", true}, {"q_group_size", 128}, {"w_bit", 4}, {"version", "GEMM"}}));
}

TEST(Artifact, TwoWritesAreByteIdentical) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  const std::vector<LayerResult> layers = MakeLayers(f, spec);
  TempDir tmp;
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, tmp.Path("a"), {{"run", 1}}).ok());
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, tmp.Path("b"), {{"run", 1}}).ok());
  ASSERT_EQ(ListDir(tmp.Path("a")), ListDir(tmp.Path("b")));
  for (const std::string& name : ListDir(tmp.Path("a"))) {
    EXPECT_TRUE(ReadBytes(tmp.Path("a/" + name)) == ReadBytes(tmp.Path("b/" + name))) << name;
  }
  // Overwriting an earlier artifact gives the same bytes again.
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, tmp.Path("a"), {{"run", 1}}).ok());
  EXPECT_EQ(ReadBytes(tmp.Path("a/model.safetensors")), ReadBytes(tmp.Path("b/model.safetensors")));
}

// The packed layers reach the shards through a spill file, the source's own
// tensors straight from its mapping: the file still has the layout the writer
// gives the same tensors held in memory (name order, no gaps, the same
// header); the round-trip tests above check each tensor's bytes.
TEST(Artifact, ShardIsTheInMemoryWriteOfItsTensors) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  TempDir tmp;
  const std::string out = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, nullptr).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<OwnedTensor> all;
  for (const std::string& name : (*file)->names()) {
    const TensorView* v = *(*file)->Get(name);
    all.push_back(OwnedTensor{name, v->dtype, v->shape, std::string(v->data)});
  }
  EXPECT_GT(all.size(), 7u * f.cfg.num_hidden_layers * 4);   // qweight, qzeros, scales, g_idx per linear
  ASSERT_TRUE(WriteFile(tmp.Path("again.safetensors"), all, {{"format", "pt"}}).ok());
  EXPECT_TRUE(ReadBytes(tmp.Path("again.safetensors")) == ReadBytes(out + "/model.safetensors"));
}

TEST(Artifact, UnwritableOutputLeavesNothing) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  const std::vector<LayerResult> layers = MakeLayers(f, spec);
  TempDir tmp;
  std::ofstream(tmp.Path("file")) << "x";
  absl::Status s = WriteArtifact(kModel, f.cfg, spec, layers, tmp.Path("file/art"), nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("file"));
  EXPECT_THAT(ListDir(tmp.path()), ::testing::ElementsAre("file"));

  // A directory that is not an artifact is never overwritten.
  fs::create_directories(tmp.Path("user"));
  std::ofstream(tmp.Path("user/notes.txt")) << "mine";
  s = WriteArtifact(kModel, f.cfg, spec, layers, tmp.Path("user"), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(ListDir(tmp.Path("user")), ::testing::ElementsAre("notes.txt"));
}

TEST(Artifact, FailureHalfWayLeavesNothing) {
  // A model dir whose tokenizer.json is a directory: the copy fails after the
  // shards are written.
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  TempDir tmp;
  const std::string model = tmp.Path("model");
  fs::create_directories(model + "/tokenizer.json");
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.model"}) {
    fs::create_symlink(kModel + "/" + name, model + "/" + name);
  }
  const std::string parent = tmp.Path("out");
  fs::create_directories(parent);
  absl::Status s = WriteArtifact(model, f.cfg, spec, MakeLayers(f, spec), parent + "/art", nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokenizer.json"));
  EXPECT_TRUE(ListDir(parent).empty()) << ListDir(parent).front();
}

// A file system that fills up (here: RLIMIT_FSIZE, in a child process) while
// the spill file grows, or while a shard is copied out of it: a one-line error
// naming the file, no staging directory left, and the artifact already at the
// output untouched.
TEST(Artifact, FullDiskMidWriteLeavesTheEarlierArtifact) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  const std::vector<LayerResult> layers = MakeLayers(f, spec);
  TempDir tmp;
  const std::string out = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, layers, out, {{"run", 1}}).ok());
  const std::string manifest = ReadBytes(out + "/qforge-manifest.json");
  const std::string shard = ReadBytes(out + "/model.safetensors");
  uint64_t packed = 0;   // what the spill file holds: every layer tensor
  {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(out + "/model.safetensors");
    ASSERT_TRUE(file.ok());
    for (const std::string& name : (*file)->names())
      if (name.rfind("model.layers.", 0) == 0) packed += (*(*file)->Get(name))->data.size();
  }
  ASSERT_LT(packed, shard.size());

  struct Case {
    uint64_t max_file_bytes;
    const char* fails_in;
  } cases[] = {{packed / 3, ".packed-layers"}, {(packed + shard.size()) / 2, "model.safetensors"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fails_in);
    const std::string msg_file = tmp.Path("message.txt");
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::signal(SIGXFSZ, SIG_IGN);   // writes past the limit fail with EFBIG instead
      const struct rlimit lim = {c.max_file_bytes, c.max_file_bytes};
      ::setrlimit(RLIMIT_FSIZE, &lim);
      const absl::Status st = WriteArtifact(kModel, f.cfg, spec, layers, out, {{"run", 2}});
      std::ofstream(msg_file) << st.message();
      ::_exit(st.ok() ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1);
    const std::string msg = ReadBytes(msg_file);
    EXPECT_THAT(msg, HasSubstr(c.fails_in));
    EXPECT_THAT(msg, HasSubstr("File too large"));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    fs::remove(msg_file);
    EXPECT_THAT(ListDir(tmp.path()), ::testing::ElementsAre("art"));
    EXPECT_EQ(ReadBytes(out + "/qforge-manifest.json"), manifest);
    EXPECT_TRUE(ReadBytes(out + "/model.safetensors") == shard);
  }
}

TEST(Artifact, CorruptedShardIsDataLoss) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  TempDir tmp;
  const std::string out = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, nullptr).ok());
  ASSERT_TRUE(ReadArtifact(out).ok());
  {
    std::fstream io(out + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(-100, std::ios::end);
    io.put('\x5a');
  }
  absl::StatusOr<LoadedArtifact> a = ReadArtifact(out);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss) << a.status();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("sha256"));

  // A truncated tokenizer file, and an unlisted shard, are caught too.
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, nullptr).ok());
  fs::resize_file(out + "/tokenizer.model", 10);
  a = ReadArtifact(out);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss) << a.status();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("tokenizer.model"));

  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, nullptr).ok());
  fs::copy_file(out + "/model.safetensors", out + "/extra.safetensors");
  a = ReadArtifact(out);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss) << a.status();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("extra.safetensors"));

  // A listed digest is quoted when a file does not match it, so one that is
  // not 64 lowercase hex digits (here with a newline) is refused first, on one
  // line naming the manifest and the entry.
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, spec, MakeLayers(f, spec), out, nullptr).ok());
  {
    nlohmann::json m = nlohmann::json::parse(ReadBytes(out + "/qforge-manifest.json"));
    m["files"]["config.json"]["sha256"] = "0123\nforged";
    WriteBytes(out + "/qforge-manifest.json", m.dump());
  }
  a = ReadArtifact(out);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss) << a.status();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("qforge-manifest.json: entry 'config.json'"));
  EXPECT_EQ(std::string(a.status().message()).find('\n'), std::string::npos) << a.status();

  fs::remove(out + "/qforge-manifest.json");
  EXPECT_EQ(ReadArtifact(out).status().code(), absl::StatusCode::kNotFound);
}

TEST(Artifact, RejectsInconsistentInput) {
  Fixture f = Load();
  const QuantSpec spec = Gptq4();
  TempDir tmp;
  const std::string out = tmp.Path("art");
  auto expect = [&](const QuantSpec& sp, const std::vector<LayerResult>& layers,
                    std::initializer_list<std::string_view> parts) {
    absl::Status s = WriteArtifact(kModel, f.cfg, sp, layers, out, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    for (std::string_view p : parts) EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(p)));
    EXPECT_FALSE(PathExists(out));
    // The staging directory (and the spill file in it) went with the error.
    EXPECT_TRUE(ListDir(tmp.path()).empty()) << ListDir(tmp.path()).front();
  };
  const std::vector<LayerResult> good = MakeLayers(f, spec);

  std::vector<LayerResult> layers = good;
  layers.pop_back();
  expect(spec, layers, {"layer 3", "no layer result"});
  layers = good;
  layers[1].layer = 0;
  expect(spec, layers, {"layer 0", "more than one"});
  layers = good;
  layers[2].linears.erase(layers[2].linears.begin() + 4);
  expect(spec, layers, {"layer 2", "mlp.gate_proj", "missing"});
  layers = good;
  layers[2].linears[0].name = "self_attn.qkv_proj";
  expect(spec, layers, {"layer 2", "self_attn.qkv_proj"});
  QuantSpec other = spec;
  other.group_size = 128;
  expect(other, good, {"layer 0", "group_size", "spec"});
  layers = good;
  layers[1].dense[0].data.pop_back();
  expect(spec, layers, {"layer 1", "input_layernorm.weight", "bytes"});
  layers = good;
  layers[1].dense[0].name = "self_attn.q_proj.bias";
  expect(spec, layers, {"layer 1", "self_attn.q_proj.bias", "QuantizedLinear::bias"});
  layers = good;
  layers[3].linears[1].codes[0] = 99;
  expect(spec, layers, {"layer 3", "self_attn.k_proj", "codes"});
  layers = good;
  layers[3].errors.pop_back();
  expect(spec, layers, {"layer 3", "errors"});
  other = spec;
  other.format = "awq";
  other.bits = 3;
  expect(other, good, {"bits", "awq"});
  other = spec;
  other.damp_percent = 0;
  expect(other, good, {"damp_percent"});
  other = spec;
  other.method = "squeeze";
  expect(other, good, {"method", "squeeze"});
}

// An artifact's own JSON files (config.json, quantize_config.json, the
// manifest, whose hashes cover the shards but not itself), mutated: each
// mutant is refused naming the artifact, or opens and then gives every layer
// or such an error. Nothing crashes or throws.
TEST(ArtifactTest, MutatedArtifactJsonIsRefusedNamingTheArtifact) {
  TempDir tmp;
  Fixture f = Load();
  const std::string art = tmp.Path("art");
  ASSERT_TRUE(WriteArtifact(kModel, f.cfg, Gptq4(), MakeLayers(f, Gptq4()), art, nullptr).ok());
  for (const char* file : {"config.json", "quantize_config.json", "qforge-manifest.json"}) {
    SCOPED_TRACE(file);
    const std::string path = art + "/" + file;
    const std::string original = ReadBytes(path);
    qf::testing::Mutator mut(11);
    int refused = 0;
    for (int i = 0; i < 300; ++i) {
      WriteBytes(path, mut.Mutate(original));
      absl::StatusOr<LoadedArtifact> a = OpenArtifact(art);
      if (!a.ok()) {
        ++refused;
        qf::testing::ExpectRefusalNames(a.status(), art, i);
        continue;
      }
      for (int l = 0; l < a->config.num_hidden_layers; ++l) {
        qf::testing::ExpectRefusalNames(a->Layer(l).status(), art, i);
      }
    }
    EXPECT_GT(refused, 100);
    WriteBytes(path, original);
  }
  EXPECT_TRUE(OpenArtifact(art).ok());
}

}  // namespace
}  // namespace qf::storage
