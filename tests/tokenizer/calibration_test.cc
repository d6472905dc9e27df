// Calibration sampling and the eval protocol: determinism, windows taken from
// the real encoding, the Python-generated eval ids, and input errors.
#include "worker/calibration.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/spm_fixture.h"

namespace qf::worker {
namespace {

using ::qf::testing::SpmExpected;
using ::testing::AllOf;
using ::testing::HasSubstr;

class CalibrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::Load(qf::testing::ModelDir());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  // Writes `content` to a fresh file named `name` and returns its path.
  static std::string WriteTemp(const std::string& name, const std::string& content) {
    const std::string path = qf::testing::MakeTempDir("calib") + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(path, content).ok()) << path;
    return path;
  }
  static const Tokenizer& tok() { return *tok_; }
  static Tokenizer* tok_;
};
Tokenizer* CalibrationTest::tok_ = nullptr;

TEST_F(CalibrationTest, SameSeedSameTokensOtherSeedDifferent) {
  const CalibSpec spec{.path = qf::testing::CalibPath(), .samples = 8, .seqlen = 128, .seed = 0};
  auto a = BuildCalibrationTokens(tok(), spec);
  auto b = BuildCalibrationTokens(tok(), spec);
  CalibSpec other = spec;
  other.seed = 1;
  auto c = BuildCalibrationTokens(tok(), other);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
  EXPECT_EQ(a->size(), 8u * 128u);
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST_F(CalibrationTest, WindowsAreSubstringsOfTheEncodedText) {
  const CalibSpec spec{.path = qf::testing::CalibPath(), .samples = 16, .seqlen = 64, .seed = 7};
  auto calib = BuildCalibrationTokens(tok(), spec);
  ASSERT_TRUE(calib.ok()) << calib.status();
  auto text = LoadCalibrationText(spec.path);
  ASSERT_TRUE(text.ok()) << text.status();
  auto all = tok().Encode(*text);
  ASSERT_TRUE(all.ok()) << all.status();
  const std::vector<uint64_t> starts = SampleWindowStarts(spec.seed, spec.samples, all->size() - 64);
  ASSERT_EQ(calib->size(), 16u * 64u);
  for (int row = 0; row < spec.samples; ++row) {
    const auto first = calib->begin() + row * 64;
    // The row is the window at its sampled start (and therefore a substring).
    EXPECT_TRUE(std::equal(first, first + 64, all->begin() + starts[row])) << "row " << row;
    EXPECT_NE(std::search(all->begin(), all->end(), first, first + 64), all->end()) << "row " << row;
  }
}

TEST(SampleWindowStarts, StaysInRangeAndReachesBothEnds) {
  // max_start 1: the only starts are 0 and 1, and 200 draws hit both.
  const std::vector<uint64_t> starts = SampleWindowStarts(3, 200, 1);
  ASSERT_EQ(starts.size(), 200u);
  EXPECT_EQ(std::set<uint64_t>(starts.begin(), starts.end()), (std::set<uint64_t>{0, 1}));
  EXPECT_EQ(SampleWindowStarts(3, 5, 0), std::vector<uint64_t>(5, 0));
  // A range that is not a power of two, with a large max_start: rejection
  // must keep every value in [0, max_start].
  const uint64_t max_start = (uint64_t{1} << 63) + 12345;
  for (uint64_t s : SampleWindowStarts(9, 1000, max_start)) EXPECT_LE(s, max_start);
  EXPECT_EQ(SampleWindowStarts(9, 50, 70000), SampleWindowStarts(9, 50, 70000));
  EXPECT_NE(SampleWindowStarts(9, 50, 70000), SampleWindowStarts(10, 50, 70000));
}

TEST(SampleWindowStarts, IsRoughlyUniform) {
  // 10 buckets over [0, 9], 20000 draws: each near 2000 (5 sigma ~ 210).
  std::vector<int> counts(10, 0);
  for (uint64_t s : SampleWindowStarts(42, 20000, 9)) ++counts[s];
  for (int c : counts) EXPECT_NEAR(c, 2000, 250);
}

TEST_F(CalibrationTest, JsonlJoinsTextFields) {
  const std::string path = WriteTemp(
      "calib.jsonl", "{\"text\": \"first paragraph\"}\n\n{\"id\": 2, \"text\": \"second\"}\r\n");
  auto text = LoadCalibrationText(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "first paragraph\n\nsecond");
}

TEST_F(CalibrationTest, JsonlBadLineNamesFileAndLine) {
  const std::string path =
      WriteTemp("bad.jsonl", "{\"text\": \"ok\"}\n{\"content\": \"no text field\"}\n");
  auto text = LoadCalibrationText(path);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), AllOf(HasSubstr(path + ":2"), HasSubstr("\"text\"")));

  const std::string not_string = WriteTemp("num.jsonl", "{\"text\": 5}\n");
  EXPECT_THAT(LoadCalibrationText(not_string).status().message(), HasSubstr(not_string + ":1"));
  const std::string not_json = WriteTemp("broken.jsonl", "{\"text\": \"a\"}\n{\"text\": \n");
  auto broken = LoadCalibrationText(not_json);
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), HasSubstr(not_json + ":2"));
}

TEST_F(CalibrationTest, EmptyCalibrationTextIsAnError) {
  for (const auto& [name, content] : std::vector<std::pair<std::string, std::string>>{
           {"empty.txt", ""}, {"blank.txt", " \n\t\n"}, {"blank.jsonl", "{\"text\": \"  \"}\n"}}) {
    const std::string path = WriteTemp(name, content);
    auto text = LoadCalibrationText(path);
    ASSERT_FALSE(text.ok()) << name;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(text.status().message(), path + ": calibration text is empty");
  }
}

TEST_F(CalibrationTest, UnsupportedExtensionAndMissingFile) {
  const std::string csv = WriteTemp("calib.csv", "a,b\n");
  EXPECT_EQ(LoadCalibrationText(csv).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(LoadCalibrationText(csv).status().message(), HasSubstr(csv));
  const std::string missing = qf::testing::MakeTempDir("missing") + "/nope.txt";
  EXPECT_EQ(LoadCalibrationText(missing).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CalibrationTest, BadSpecNamesTheField) {
  CalibSpec spec{.path = qf::testing::CalibPath(), .samples = 0, .seqlen = 128, .seed = 0};
  auto r = BuildCalibrationTokens(tok(), spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("samples"));
  spec.samples = 4;
  spec.seqlen = -1;
  r = BuildCalibrationTokens(tok(), spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("seqlen"));
  spec.samples = 1 << 20;
  spec.seqlen = 1 << 20;
  r = BuildCalibrationTokens(tok(), spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("limit"));
}

TEST_F(CalibrationTest, TooFewTokensGivesTheCounts) {
  const std::string path = WriteTemp("short.txt", "Just a short sentence.");
  auto n = tok().Encode("Just a short sentence.");
  ASSERT_TRUE(n.ok());
  const int seqlen = static_cast<int>(n->size());  // needs n + 1
  auto r = BuildCalibrationTokens(tok(), {.path = path, .samples = 2, .seqlen = seqlen, .seed = 0});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr(path), HasSubstr(std::to_string(n->size()) + " tokens"),
                    HasSubstr(std::to_string(seqlen + 1))));
  // One token fewer per window fits, with exactly two possible starts.
  auto ok = BuildCalibrationTokens(tok(), {.path = path, .samples = 2, .seqlen = seqlen - 1, .seed = 0});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 2u * (seqlen - 1));
}

TEST_F(CalibrationTest, EvalTokensMatchPythonProtocol) {
  const auto& fx = SpmExpected()["eval"];
  const int seqlen = fx["seqlen"];
  const int chunks = fx["chunks"];
  auto eval = BuildEvalTokens(tok(), qf::testing::HeldoutPath(), seqlen, chunks);
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_EQ(eval->size(), 131072u);
  EXPECT_EQ((*eval)[0], tok().bos_id());
  const auto first = fx["first_ids"].get<std::vector<int32_t>>();
  const auto last = fx["last_ids"].get<std::vector<int32_t>>();
  EXPECT_TRUE(std::equal(first.begin(), first.end(), eval->begin()));
  EXPECT_TRUE(std::equal(last.begin(), last.end(), eval->end() - last.size()));
  // Exact equality with Python's ([bos] + sp.encode(text))[:131072], by hash.
  const std::string_view bytes(reinterpret_cast<const char*>(eval->data()),
                               eval->size() * sizeof(int32_t));
  EXPECT_EQ(Sha256Hex(bytes), fx["prefix_sha256"].get<std::string>());
}

TEST_F(CalibrationTest, EvalKeepsAllChunksWhenMaxIsLarger) {
  // A text of a known token count: floor((1 + n) / seqlen) chunks, no more.
  const std::string text = "It was a dark and stormy night; the rain fell in torrents.\n";
  std::string content;
  for (int i = 0; i < 20; ++i) content += text;
  const std::string path = WriteTemp("eval.txt", content);
  auto ids = tok().Encode(content);
  ASSERT_TRUE(ids.ok());
  const size_t n = ids->size() + 1;
  auto eval = BuildEvalTokens(tok(), path, 16, 1000000);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->size(), n / 16 * 16);
  EXPECT_EQ((*eval)[0], tok().bos_id());
  EXPECT_TRUE(std::equal(eval->begin() + 1, eval->end(), ids->begin()));
}

TEST_F(CalibrationTest, EvalErrors) {
  const std::string path = WriteTemp("tiny.txt", "Too short.");
  auto r = BuildEvalTokens(tok(), path, 4096, 8);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), AllOf(HasSubstr(path), HasSubstr("4096")));
  EXPECT_THAT(BuildEvalTokens(tok(), path, 0, 8).status().message(), HasSubstr("seqlen"));
  EXPECT_THAT(BuildEvalTokens(tok(), path, 4, 0).status().message(), HasSubstr("max_chunks"));
  EXPECT_EQ(BuildEvalTokens(tok(), path + ".missing", 4, 1).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qf::worker
