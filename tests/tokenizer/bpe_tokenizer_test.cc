// HF tokenizer.json (byte-level BPE) against the Python tokenizers package
// (data/bpe_expected.json, written by gen_bpe_fixture.py from data/calib.txt
// and data/books-heldout.txt), Load's choice of file, the refusals of
// unsupported or broken files, and concurrent Encode.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/mutator.h"
#include "tests/tokenizer/spm_fixture.h"
#include "worker/calibration.h"
#include "worker/tokenizer.h"

namespace qf::worker {
namespace {

using ::qf::testing::MakeTempDir;
using ::qf::testing::SourcePath;
using ::testing::AllOf;
using ::testing::HasSubstr;
using Json = nlohmann::json;

const Json& Expected() {
  static const Json fixture = [] {
    const std::string path = SourcePath("tests/tokenizer/data/bpe_expected.json");
    absl::StatusOr<std::string> text = ReadFileToString(path);
    Json j = text.ok() ? Json::parse(*text, nullptr, false) : Json();
    if (!text.ok() || j.is_discarded()) {
      std::fprintf(stderr, "%s: missing or not JSON; rerun gen_bpe_fixture.py\n", path.c_str());
      std::abort();
    }
    return j;
  }();
  return fixture;
}

std::string FixtureDir(const std::string& name) { return SourcePath("tests/tokenizer/data/" + name); }

std::string ReadOrDie(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

std::unique_ptr<Tokenizer> LoadOrNull(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// A build without ICU refuses NFC (Qwen2's normalizer) by design.
bool BuiltWithoutNfc(const absl::Status& s) { return absl::StrContains(s.message(), "NFC needs ICU"); }

std::vector<int32_t> Ids(const Json& j) { return j.get<std::vector<int32_t>>(); }

// SHA-256 of ids as int32 little-endian, as the fixture records whole files.
std::string IdsSha256(const std::vector<int32_t>& ids) {
  return Sha256Hex(std::string_view(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t)));
}

TEST(BpeFixture, MatchesBundledText) {
  // A stale fixture would make every comparison below meaningless.
  absl::StatusOr<std::string> calib = Sha256FileHex(qf::testing::CalibPath());
  absl::StatusOr<std::string> heldout = Sha256FileHex(qf::testing::HeldoutPath());
  ASSERT_TRUE(calib.ok() && heldout.ok());
  EXPECT_EQ(*calib, Expected()["calib_sha256"].get<std::string>()) << "rerun tests/tokenizer/gen_bpe_fixture.py";
  EXPECT_EQ(*heldout, Expected()["heldout_sha256"].get<std::string>()) << "rerun tests/tokenizer/gen_bpe_fixture.py";
}

// One fixture per layout: Llama 3 (Split + ByteLevel, ignore_merges, added
// tokens after the vocab), GPT-2 (ByteLevel's own regex, a special token in
// the vocab, a non-special added token), Qwen2 (NFC, its own regex, no BOS).
class BpeParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(FixtureDir(GetParam()));
    if (BuiltWithoutNfc(tok.status())) GTEST_SKIP() << tok.status();
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok);
  }
  const Json& fx() const { return Expected()[GetParam()]; }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(BpeParity, Properties) {
  EXPECT_EQ(tok_->kind(), TokenizerKind::kHfBpe);
  EXPECT_EQ(tok_->model_path(), FixtureDir(GetParam()) + "/tokenizer.json");
  EXPECT_EQ(tok_->vocab_size(), fx()["vocab_size"].get<int32_t>());
  EXPECT_EQ(tok_->bos_id(), fx()["bos_id"].get<int32_t>());
  EXPECT_EQ(tok_->eos_id(), fx()["eos_id"].get<int32_t>());
}

TEST_P(BpeParity, EncodesEdgeCaseStringsLikePython) {
  for (const Json& item : fx()["strings"]) {
    const std::string text = item["text"];
    absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item["ids"])) << "text: \"" << text << "\"";
  }
}

TEST_P(BpeParity, EncodesHeldoutLinesLikePython) {
  const std::vector<std::string> lines = absl::StrSplit(ReadOrDie(qf::testing::HeldoutPath()), '\n');
  ASSERT_GE(fx()["heldout_lines"].size(), 200u);
  for (const Json& item : fx()["heldout_lines"]) {
    const size_t n = item["line"];
    ASSERT_LT(n, lines.size());
    absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(lines[n]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item["ids"])) << "line " << n << ": " << lines[n];
  }
}

TEST_P(BpeParity, EncodesWholeFilesLikePython) {
  // Calibration and eval encode whole files: newlines, paragraph breaks and
  // everything else in them, 2.7 MB in all.
  for (const auto& [key, path] :
       {std::pair("calib_all", qf::testing::CalibPath()), std::pair("heldout_all", qf::testing::HeldoutPath())}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(ReadOrDie(path));
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->size(), fx()[key]["count"].get<size_t>()) << key;
    EXPECT_EQ(IdsSha256(*ids), fx()[key]["sha256"].get<std::string>()) << key;
  }
}

TEST_P(BpeParity, PiecesAreTheTokensInIdOrder) {
  absl::StatusOr<std::vector<Tokenizer::Piece>> pieces = tok_->Pieces();
  ASSERT_TRUE(pieces.ok()) << pieces.status();
  ASSERT_EQ(static_cast<int32_t>(pieces->size()), tok_->vocab_size());
  const Json file = Json::parse(ReadOrDie(tok_->model_path()));
  for (const auto& [token, id] : file["model"]["vocab"].items()) {
    ASSERT_EQ((*pieces)[id.get<size_t>()].text, token);
  }
  for (const Json& added : file["added_tokens"]) {
    const Tokenizer::Piece& p = (*pieces)[added["id"].get<size_t>()];
    EXPECT_EQ(p.text, added["content"].get<std::string>());
    EXPECT_EQ(p.type, added["special"].get<bool>() ? 3 : 4) << p.text;
    EXPECT_EQ(p.score, 0.f);
  }
}

// NOTE: Encode's contract: several threads at once, one loaded Tokenizer.
TEST_P(BpeParity, EncodeFromFourThreadsAtOnceGivesTheSameIds) {
  const std::string text = ReadOrDie(qf::testing::HeldoutPath());
  const Json& block = fx()["heldout_block"];
  const std::string prefix = text.substr(0, block["bytes"].get<size_t>());
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(prefix);
        if (!ids.ok() || (rep > 0 && *ids != got[t])) {
          got[t].clear();
          return;
        }
        got[t] = *ids;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(got[t], Ids(block["ids"])) << "thread " << t;
}

TEST_P(BpeParity, EncodesBytesThatAreNotUtf8WithoutError) {
  // HF never sees invalid UTF-8 (Python str); we must not crash on it and
  // must still cover every byte with ids of the vocabulary.
  absl::StatusOr<std::vector<int32_t>> ids = tok_->Encode(std::string("ab\xff\xfe\0cd \xe6\x97 x\xc3", 13));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_FALSE(ids->empty());
  for (int32_t id : *ids) EXPECT_TRUE(id >= 0 && id < tok_->vocab_size()) << id;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BpeParity, ::testing::Values("bpe-llama3", "bpe-gpt2", "bpe-qwen2"),
                         [](const auto& info) { return info.param.substr(4); });

// ---------------------------------------------------------------------------
// Files written to a temp dir: Load's dispatch, ignore_merges, refusals.
// ---------------------------------------------------------------------------

// A temp model dir holding `json` as tokenizer.json (and, when given,
// `config` as tokenizer_config.json). Returns the dir.
std::string WriteModelDir(const std::string& name, const std::string& json, const std::string& config = "") {
  const std::string dir = MakeTempDir(name);
  EXPECT_TRUE(WriteFileAtomic(dir + "/tokenizer.json", json).ok());
  if (!config.empty()) {
    EXPECT_TRUE(WriteFileAtomic(dir + "/tokenizer_config.json", config).ok());
  }
  return dir;
}

Json FixtureJson(const std::string& name) { return Json::parse(ReadOrDie(FixtureDir(name) + "/tokenizer.json")); }

TEST(BpeLoad, TokenizerModelWinsWhenBothFilesExist) {
  const std::string dir = WriteModelDir("both", ReadOrDie(FixtureDir("bpe-llama3") + "/tokenizer.json"));
  ASSERT_TRUE(CopyFile(qf::testing::ModelDir() + "/tokenizer.model", dir + "/tokenizer.model").ok());
  auto tok = LoadOrNull(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ(tok->model_path(), dir + "/tokenizer.model");
  EXPECT_EQ(tok->vocab_size(), 8000);
}

TEST(BpeLoad, TokenizerJsonAloneIsBpeWithoutBosOrEosWhenNoConfig) {
  const std::string dir = WriteModelDir("json_only", ReadOrDie(FixtureDir("bpe-llama3") + "/tokenizer.json"));
  auto tok = LoadOrNull(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->kind(), TokenizerKind::kHfBpe);
  EXPECT_EQ(tok->model_path(), dir + "/tokenizer.json");
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), -1);
  EXPECT_EQ(tok->vocab_size(), Expected()["bpe-llama3"]["vocab_size"].get<int32_t>());
}

// The Llama 3 fixture has vocabulary entries that no merge builds (as Llama
// 3's own has): with ignore_merges off, the lines that use them split
// differently, and exactly as Python splits them then.
TEST(BpeLoad, IgnoreMergesTakesVocabularyWordsWhole) {
  Json j = FixtureJson("bpe-llama3");
  j["model"]["ignore_merges"] = false;
  auto tok = LoadOrNull(WriteModelDir("merges_on", j.dump()));
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> lines = absl::StrSplit(ReadOrDie(qf::testing::HeldoutPath()), '\n');
  const Json& changed = Expected()["bpe-llama3"]["without_ignore_merges"];
  ASSERT_GE(changed.size(), 5u);
  for (const Json& item : changed) {
    const std::string& line = lines[item["line"].get<size_t>()];
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(line);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item["ids"])) << line;
  }
}

// The fixtures list merges as ["a", "b"] pairs (tokenizers >= 0.20); older
// files, Llama 3's among them, as "a b" strings.
TEST(BpeLoad, MergesAsStringsLoadLikeMergesAsPairs) {
  Json j = FixtureJson("bpe-llama3");
  ASSERT_TRUE(j["model"]["merges"][0].is_array());
  for (Json& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  auto tok = LoadOrNull(WriteModelDir("strings", j.dump()));
  ASSERT_NE(tok, nullptr);
  for (const Json& item : Expected()["bpe-llama3"]["strings"]) {
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(item["text"].get<std::string>());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item["ids"])) << item["text"];
  }
}

// One broken or unsupported tokenizer.json: how to break the fixture, and
// the JSON field the refusal must name.
struct BadJson {
  const char* name;
  const char* fixture;
  std::function<void(Json&)> edit;
  const char* field;
};

const std::vector<BadJson>& BadJsonCases() {
  static const std::vector<BadJson> cases = {
      {"model_type_wordpiece", "bpe-llama3", [](Json& j) { j["model"]["type"] = "WordPiece"; }, "model.type"},
      {"model_type_unigram", "bpe-llama3", [](Json& j) { j["model"]["type"] = "Unigram"; }, "model.type"},
      {"model_type_missing", "bpe-llama3", [](Json& j) { j["model"].erase("type"); }, "model.type"},
      {"vocab_missing", "bpe-llama3", [](Json& j) { j["model"].erase("vocab"); }, "model.vocab"},
      {"vocab_array", "bpe-llama3", [](Json& j) { j["model"]["vocab"] = Json::array(); }, "model.vocab"},
      {"vocab_id_string", "bpe-llama3", [](Json& j) { j["model"]["vocab"]["a"] = "7"; }, "model.vocab"},
      {"vocab_id_negative", "bpe-llama3", [](Json& j) { j["model"]["vocab"]["a"] = -1; }, "model.vocab"},
      {"vocab_id_duplicated", "bpe-llama3", [](Json& j) { j["model"]["vocab"]["a"] = j["model"]["vocab"]["b"]; },
       "model.vocab"},
      {"vocab_id_gap", "bpe-llama3", [](Json& j) { j["model"]["vocab"]["zzzz"] = 100000; }, "model.vocab"},
      {"merges_object", "bpe-llama3", [](Json& j) { j["model"]["merges"] = Json::object(); }, "model.merges"},
      {"merge_unknown_token", "bpe-llama3", [](Json& j) { j["model"]["merges"][3] = "foo bar"; }, "model.merges[3]"},
      {"merge_three_parts", "bpe-llama3", [](Json& j) { j["model"]["merges"][0] = "a b c"; }, "model.merges[0]"},
      {"merge_one_token", "bpe-llama3", [](Json& j) { j["model"]["merges"][2] = {"a"}; }, "model.merges[2]"},
      {"merge_result_unknown", "bpe-llama3", [](Json& j) { j["model"]["merges"][5] = "x q"; }, "model.merges[5]"},
      {"byte_fallback", "bpe-llama3", [](Json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
      {"dropout", "bpe-llama3", [](Json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"word_suffix", "bpe-llama3", [](Json& j) { j["model"]["end_of_word_suffix"] = "</w>"; },
       "model.end_of_word_suffix"},
      {"unk_not_in_vocab", "bpe-llama3", [](Json& j) { j["model"]["unk_token"] = "<unk>"; }, "model.unk_token"},
      {"normalizer_lowercase", "bpe-llama3",
       [](Json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "normalizer"},
      {"unknown_regex", "bpe-llama3",
       [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+|\\s+"; },
       "pre_tokenizer.pretokenizers[0].pattern.Regex"},
      {"split_on_string", "bpe-llama3",
       [](Json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}};
       },
       "pre_tokenizer.pretokenizers[0].pattern.Regex"},
      {"split_removed", "bpe-llama3", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "pre_tokenizer.pretokenizers[0].behavior"},
      {"split_inverted", "bpe-llama3", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; },
       "pre_tokenizer.pretokenizers[0].invert"},
      {"prefix_space", "bpe-llama3", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
       "pre_tokenizer.pretokenizers[1].add_prefix_space"},
      {"bytelevel_regex_after_split", "bpe-llama3",
       [](Json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; },
       "pre_tokenizer.pretokenizers[1].use_regex"},
      {"pre_tokenizer_whitespace", "bpe-llama3",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer"},
      {"pre_tokenizer_null", "bpe-llama3", [](Json& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer"},
      {"gpt2_prefix_space", "bpe-gpt2", [](Json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; },
       "pre_tokenizer.add_prefix_space"},
      {"gpt2_no_regex", "bpe-gpt2", [](Json& j) { j["pre_tokenizer"]["use_regex"] = false; },
       "pre_tokenizer.use_regex"},
      {"added_lstrip", "bpe-llama3", [](Json& j) { j["added_tokens"][0]["lstrip"] = true; }, "added_tokens[0].lstrip"},
      {"added_content_number", "bpe-llama3", [](Json& j) { j["added_tokens"][1]["content"] = 5; },
       "added_tokens[1].content"},
      {"added_repeated", "bpe-llama3",
       [](Json& j) { j["added_tokens"][1]["content"] = j["added_tokens"][0]["content"]; }, "added_tokens[1].content"},
      {"added_id_of_vocab_token", "bpe-llama3", [](Json& j) { j["added_tokens"][0]["id"] = 7; }, "added_tokens[0].id"},
      {"added_in_vocab_other_id", "bpe-gpt2", [](Json& j) { j["added_tokens"][0]["id"] = 1500; }, "added_tokens[0].id"},
  };
  return cases;
}

TEST(BpeLoad, UnsupportedOrBrokenFilesAreInvalidArgumentNamingFileAndField) {
  for (const BadJson& c : BadJsonCases()) {
    Json j = FixtureJson(c.fixture);
    c.edit(j);
    const std::string dir = WriteModelDir(c.name, j.dump());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
    ASSERT_FALSE(tok.ok()) << c.name;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << tok.status();
    EXPECT_THAT(std::string(tok.status().message()),
                AllOf(HasSubstr(dir + "/tokenizer.json: "), HasSubstr(std::string(c.field) + ": ")))
        << c.name;
    EXPECT_EQ(std::string(tok.status().message()).find('\n'), std::string::npos) << c.name;
  }
}

TEST(BpeLoad, UnknownRegexMessageSaysWhatIsSupported) {
  Json j = FixtureJson("bpe-llama3");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{L}+";
  const std::string dir = WriteModelDir("regex", j.dump());
  EXPECT_EQ(Tokenizer::Load(dir).status().message(),
            dir +
                "/tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported split pattern "
                "(supported: the Llama 3, Qwen2 and GPT-2 patterns)");
}

TEST(BpeLoad, TruncatedOrNonObjectJsonIsInvalidArgumentNamingTheFile) {
  const std::string text = ReadOrDie(FixtureDir("bpe-llama3") + "/tokenizer.json");
  for (const std::string& broken : {text.substr(0, text.size() / 2), std::string("[1, 2]"), std::string("")}) {
    const std::string dir = WriteModelDir("truncated", broken);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
    ASSERT_FALSE(tok.ok());
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
    EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.json: "));
  }
}

TEST(BpeLoad, BadTokenizerConfigIsInvalidArgumentNamingItsFileAndField) {
  const std::string json = ReadOrDie(FixtureDir("bpe-llama3") + "/tokenizer.json");
  const struct {
    const char* config;
    const char* field;
  } cases[] = {
      {R"({"bos_token": "<s>"})", "bos_token: "},
      {R"({"eos_token": {"content": 3}})", "eos_token: "},
      {R"({"bos_token": )", "not valid JSON"},
  };
  for (const auto& c : cases) {
    const std::string dir = WriteModelDir("config", json, c.config);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
    ASSERT_FALSE(tok.ok()) << c.config;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
    EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer_config.json: " + c.field));
  }
}

// A damaged tokenizer.json (bytes edited, dropped, repeated): refused naming
// the file, or loaded and encoding within its vocabulary. Nothing throws or
// crashes.
TEST(BpeLoad, MutatedFilesAreRefusedOrEncodeInRange) {
  const std::string original = ReadOrDie(FixtureDir("bpe-llama3") + "/tokenizer.json");
  const std::string dir = MakeTempDir("mutated");
  const std::string path = dir + "/tokenizer.json";
  qf::testing::Mutator mut(17);
  int refused = 0;
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, i % 2 ? mut.Mutate(original) : mut.MutateBytes(original)).ok());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
    if (!tok.ok()) {
      ++refused;
      qf::testing::ExpectRefusalNames(tok.status(), path, i);
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> ids =
        (*tok)->Encode("The quick brown fox, 1234 \xc3\xa9t\xc3\xa9.<|end_of_text|>");
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < (*tok)->vocab_size()) << "mutant " << i << ": id " << id;
  }
  EXPECT_GT(refused, 0);
}

// ---------------------------------------------------------------------------
// Calibration and the eval protocol on a BPE tokenizer.
// ---------------------------------------------------------------------------

TEST(BpeCalibration, EvalStartsWithBosAndFollowsTheEncoding) {
  auto tok = LoadOrNull(FixtureDir("bpe-llama3"));
  ASSERT_NE(tok, nullptr);
  absl::StatusOr<std::vector<int32_t>> eval = BuildEvalTokens(*tok, qf::testing::HeldoutPath(), 128, 4);
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_EQ(eval->size(), 4u * 128u);
  EXPECT_EQ((*eval)[0], tok->bos_id());
  const std::vector<int32_t> block = Ids(Expected()["bpe-llama3"]["heldout_block"]["ids"]);
  ASSERT_GE(block.size(), eval->size());
  EXPECT_TRUE(std::equal(eval->begin() + 1, eval->end(), block.begin()));
}

TEST(BpeCalibration, CalibrationWindowsComeFromTheEncoding) {
  auto tok = LoadOrNull(FixtureDir("bpe-gpt2"));
  ASSERT_NE(tok, nullptr);
  const CalibSpec spec{.path = qf::testing::CalibPath(), .samples = 8, .seqlen = 64, .seed = 3};
  absl::StatusOr<std::vector<int32_t>> calib = BuildCalibrationTokens(*tok, spec);
  ASSERT_TRUE(calib.ok()) << calib.status();
  absl::StatusOr<std::vector<int32_t>> all = tok->Encode(ReadOrDie(spec.path));
  ASSERT_TRUE(all.ok());
  const std::vector<uint64_t> starts = SampleWindowStarts(spec.seed, spec.samples, all->size() - 64);
  for (int row = 0; row < spec.samples; ++row) {
    EXPECT_TRUE(std::equal(calib->begin() + row * 64, calib->begin() + (row + 1) * 64, all->begin() + starts[row]));
  }
}

// Without a BOS (Qwen2) the eval chunks are the file's own encoding from its
// first token; with one (Llama 3) they start with it and run one token short.
TEST(BpeCalibration, EvalChunksStartWithBosOnlyWhenTheTokenizerHasOne) {
  for (const char* fixture : {"bpe-qwen2", "bpe-llama3"}) {
    SCOPED_TRACE(fixture);
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(FixtureDir(fixture));
    if (BuiltWithoutNfc(loaded.status())) continue;
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const std::unique_ptr<Tokenizer> tok = std::move(*loaded);
    absl::StatusOr<std::vector<int32_t>> eval = BuildEvalTokens(*tok, qf::testing::HeldoutPath(), 128, 4);
    ASSERT_TRUE(eval.ok()) << eval.status();
    ASSERT_EQ(eval->size(), 4u * 128);
    absl::StatusOr<std::vector<int32_t>> all = tok->Encode(ReadOrDie(qf::testing::HeldoutPath()));
    ASSERT_TRUE(all.ok());
    const bool bos = tok->bos_id() >= 0;
    EXPECT_EQ(bos, std::string(fixture) == "bpe-llama3");
    if (bos) EXPECT_EQ(eval->front(), tok->bos_id());
    EXPECT_TRUE(std::equal(eval->begin() + (bos ? 1 : 0), eval->end(), all->begin()));
    // Too little text for one chunk names the file and the count.
    absl::StatusOr<std::vector<int32_t>> none = BuildEvalTokens(*tok, qf::testing::HeldoutPath(), 1 << 20, 1);
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.status().message(),
                AllOf(HasSubstr(qf::testing::HeldoutPath()),
                      HasSubstr(absl::StrCat(all->size() + (bos ? 1 : 0), " tokens", bos ? " (BOS included)" : "",
                                             " make no chunk of seqlen 1048576"))));
  }
}

}  // namespace
}  // namespace qf::worker
