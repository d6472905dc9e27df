// Tokenizer against the Python sentencepiece package (spm_expected.json), its
// error contracts, and the plugin's isolation from libprotobuf.
#include "worker/tokenizer.h"

#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "common/fs.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/wrappers.pb.h"
#include "gtest/gtest.h"
#include "tests/mutator.h"
#include "tests/tokenizer/spm_fixture.h"

namespace qf::worker {
namespace {

using ::qf::testing::SpmExpected;
using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> LoadTinyLlama() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(qf::testing::ModelDir());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(SpmFixture, MatchesBundledFiles) {
  // A stale fixture would make every comparison below meaningless.
  const auto& fx = SpmExpected();
  absl::StatusOr<std::string> model = Sha256FileHex(qf::testing::ModelDir() + "/tokenizer.model");
  absl::StatusOr<std::string> heldout = Sha256FileHex(qf::testing::HeldoutPath());
  ASSERT_TRUE(model.ok() && heldout.ok());
  EXPECT_EQ(*model, fx["model_sha256"].get<std::string>()) << "rerun tests/tokenizer/gen_spm_fixture.py";
  EXPECT_EQ(*heldout, fx["heldout_sha256"].get<std::string>()) << "rerun tests/tokenizer/gen_spm_fixture.py";
}

TEST(Tokenizer, ModelProperties) {
  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), SpmExpected()["bos_id"].get<int32_t>());
  EXPECT_EQ(tok->vocab_size(), SpmExpected()["vocab_size"].get<int32_t>());
  EXPECT_EQ(tok->model_path(), qf::testing::ModelDir() + "/tokenizer.model");
  EXPECT_EQ(tok->kind(), TokenizerKind::kSentencePiece);
}

// The vocabulary as GGUF stores it (qctl export): pieces, scores and types as
// sentencepiece's Python package reports them for tiny-llama's model.
TEST(Tokenizer, PiecesAreTheModelsInIdOrder) {
  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  absl::StatusOr<std::vector<Tokenizer::Piece>> pieces = tok->Pieces();
  ASSERT_TRUE(pieces.ok()) << pieces.status();
  ASSERT_EQ(static_cast<int32_t>(pieces->size()), tok->vocab_size());
  const auto piece = [&](int id) { return std::tuple((*pieces)[id].text, (*pieces)[id].score, (*pieces)[id].type); };
  EXPECT_EQ(piece(0), std::tuple(std::string("<unk>"), 0.f, 2));   // unknown
  EXPECT_EQ(piece(1), std::tuple(std::string("<s>"), 0.f, 3));     // control
  EXPECT_EQ(piece(3), std::tuple(std::string("<0x00>"), 0.f, 6));  // byte
  EXPECT_EQ(piece(300), std::tuple(std::string("at"), -41.f, 1));
  EXPECT_EQ(piece(7999), std::tuple(std::string("Q"), -7740.f, 1));
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST(Tokenizer, EncodesStringsLikePython) {
  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  for (const auto& item : SpmExpected()["strings"]) {
    const std::string text = item["text"];
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, item["ids"].get<std::vector<int32_t>>()) << "text: \"" << text << "\"";
  }
}

TEST(Tokenizer, EncodesHeldoutPrefixLikePython) {
  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  const auto& prefix = SpmExpected()["heldout_prefix"];
  absl::StatusOr<std::string> text = ReadFileToString(qf::testing::HeldoutPath());
  ASSERT_TRUE(text.ok()) << text.status();
  // The fixture counts 2000 code points; the byte length it records is where
  // that prefix ends in the UTF-8 file.
  const size_t bytes = prefix["bytes"].get<size_t>();
  ASSERT_GE(text->size(), bytes);
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(std::string_view(*text).substr(0, bytes));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 100u);
  EXPECT_EQ(*ids, prefix["ids"].get<std::vector<int32_t>>());
}

TEST(Tokenizer, EncodesBytesThatAreNotUtf8WithoutError) {
  // Untrusted text must not crash the plugin; sentencepiece maps invalid
  // UTF-8 to pieces of its own (byte fallback / unk).
  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(std::string("ab\xff\xfe\0cd", 7));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_FALSE(ids->empty());
  for (int32_t id : *ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tok->vocab_size());
  }
}

TEST(Tokenizer, MissingTokenizerIsNotFoundNamingBothPaths) {
  const std::string dir = qf::testing::MakeTempDir("no_tokenizer");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.model"));
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.json"));
}

// A tokenizer.json alone is read as HF BPE (bpe_tokenizer_test.cc); this one
// has no vocabulary.
TEST(Tokenizer, TokenizerJsonWithoutVocabIsInvalidArgumentNamingTheField) {
  const std::string dir = qf::testing::MakeTempDir("json_only");
  ASSERT_TRUE(WriteFileAtomic(dir + "/tokenizer.json", R"({"model": {"type": "BPE"}})").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.json: model.vocab: missing"));
}

TEST(Tokenizer, CorruptModelIsInvalidArgumentNotACrash) {
  const std::string dir = qf::testing::MakeTempDir("corrupt");
  ASSERT_TRUE(WriteFileAtomic(dir + "/tokenizer.model", "this is not a sentencepiece model").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.model"));
}

// A damaged tokenizer.model (bytes set, flipped, dropped, repeated): refused
// naming the file, or loaded and then encoding without error or ids outside
// its vocabulary. Nothing crashes the process.
TEST(Tokenizer, MutatedModelsAreRefusedOrEncodeInRange) {
  const std::string model = std::string(QF_SOURCE_DIR) + "/models/tiny-llama/tokenizer.model";
  absl::StatusOr<std::string> original = ReadFileToString(model);
  ASSERT_TRUE(original.ok()) << original.status();
  const std::string dir = qf::testing::MakeTempDir("mutated");
  const std::string path = dir + "/tokenizer.model";
  qf::testing::Mutator mut(31);
  int refused = 0;
  for (int i = 0; i < 400; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, mut.MutateBytes(*original)).ok());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir);
    if (!tok.ok()) {
      ++refused;
      qf::testing::ExpectRefusalNames(tok.status(), path, i);
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode("The quick brown fox, 1234 \xc3\xa9t\xc3\xa9.");
    if (!ids.ok()) continue;
    for (int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < (*tok)->vocab_size()) << "mutant " << i << ": id " << id;
  }
  EXPECT_GT(refused, 0);
}

// The reason the plugin exists: libsentencepiece's embedded protobuf 3.14 and
// this binary's libprotobuf 3.21 must not meet in one symbol scope.
TEST(TokenizerPlugin, EncodesInAProcessThatUsesLibprotobuf) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  google::protobuf::StringValue msg;
  msg.set_value("Hello world");
  std::string wire;
  ASSERT_TRUE(msg.SerializeToString(&wire));

  auto tok = LoadTinyLlama();
  ASSERT_NE(tok, nullptr);
  google::protobuf::StringValue back;
  ASSERT_TRUE(back.ParseFromString(wire));  // libprotobuf still works after the load
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(back.value());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, SpmExpected()["strings"][0]["ids"].get<std::vector<int32_t>>());

  // Protobuf calls from this binary resolve to libprotobuf, and sentencepiece
  // (with its protobuf copy) stayed out of the global scope.
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&google::protobuf::ShutdownProtobufLibrary), &info), 0);
  EXPECT_THAT(std::string(info.dli_fname), HasSubstr("libprotobuf"));
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"), nullptr);
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "qf_spm_encode"), nullptr);
}

}  // namespace
}  // namespace qf::worker
