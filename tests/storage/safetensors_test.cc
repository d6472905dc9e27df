// Single-file safetensors reading and writing: round trips, byte layout and
// determinism, and one table row per malformed-input rule of the reader.
#include "storage/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"

namespace qf::storage {
namespace {

using ::qf::storage::testing::ExpectError;
using ::qf::storage::testing::RawSafetensors;
using ::qf::storage::testing::ReadBytes;
using ::qf::storage::testing::TempDir;
using ::qf::storage::testing::WriteBytes;
using ::testing::ElementsAre;

// Deterministic, position-dependent bytes so that swapped or shifted tensors are caught.
std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed * 31 + i * 7 + (i >> 8));
  return s;
}

OwnedTensor Make(std::string name, DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  OwnedTensor t{std::move(name), dtype, std::move(shape), ""};
  t.data = Pattern(static_cast<size_t>(numel) * DTypeSize(dtype), seed);
  return t;
}

std::vector<OwnedTensor> MixedTensors() {
  // Deliberately not in name order: the writer sorts.
  return {Make("w.f32", DType::kF32, {3, 5}, 1),    Make("a.f16", DType::kF16, {7}, 2),
          Make("m.bf16", DType::kBF16, {2, 2, 3}, 3), Make("q.i32", DType::kI32, {4, 1}, 4),
          Make("b.u8", DType::kU8, {9}, 5),          Make("c.bool", DType::kBool, {2}, 6),
          Make("d.i64", DType::kI64, {}, 7),         Make("e.empty", DType::kF16, {0, 4}, 8),
          Make("f.f64", DType::kF64, {1}, 9)};
}

TEST(DTypeTest, NamesAndSizesRoundTrip) {
  for (std::string_view name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "U32",
                                "U16", "F8_E4M3", "F8_E5M2"}) {
    absl::StatusOr<DType> d = ParseDType(name);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(DTypeName(*d), name);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  ExpectError(ParseDType("F128").status(), absl::StatusCode::kInvalidArgument, {"F128", "BF16"});
}

class RoundTripTest : public ::testing::TestWithParam<bool> {};

TEST_P(RoundTripTest, WriteThenReadGivesSameTensorsAndMetadata) {
  TempDir tmp;
  const std::string path = tmp.Path("x.safetensors");
  std::map<std::string, std::string> metadata;
  if (GetParam()) metadata = {{"format", "pt"}, {"quant_method", "gptq"}};
  const std::vector<OwnedTensor> in = MixedTensors();
  ASSERT_TRUE(WriteFile(path, in, metadata).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata(), metadata);
  // Laid out in name order, so offset order is name order.
  EXPECT_THAT((*f)->names(), ElementsAre("a.f16", "b.u8", "c.bool", "d.i64", "e.empty", "f.f64", "m.bf16", "q.i32",
                                         "w.f32"));
  for (const OwnedTensor& t : in) {
    SCOPED_TRACE(t.name);
    absl::StatusOr<const TensorView*> v = (*f)->Get(t.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ((*v)->name, t.name);
    EXPECT_EQ((*v)->dtype, t.dtype);
    EXPECT_EQ((*v)->shape, t.shape);
    EXPECT_EQ((*v)->data, t.data);
    EXPECT_EQ((*v)->nbytes(), t.data.size());
  }
  EXPECT_EQ((*f)->Get("d.i64").value()->numel(), 1);   // scalar
  EXPECT_EQ((*f)->Get("e.empty").value()->numel(), 0);
  // The first tensor starts right after the padded header: 8-aligned in the page-aligned map.
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->Get("a.f16").value()->data.data()) % 8, 0u);
  EXPECT_FALSE((*f)->Has("nope"));
  ExpectError((*f)->Get("nope").status(), absl::StatusCode::kNotFound, {"x.safetensors", "'nope'"});
}

INSTANTIATE_TEST_SUITE_P(Metadata, RoundTripTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithMetadata" : "EmptyMetadata"; });

TEST(WriterTest, ExactBytesForOneTensor) {
  TempDir tmp;
  OwnedTensor t{"a", DType::kF32, {1}, std::string("\x01\x02\x03\x04", 4)};
  ASSERT_TRUE(WriteFile(tmp.Path("one.safetensors"), {t}, {{"k", "v"}}).ok());
  // Keys sorted at every level, compact JSON, spaces up to a multiple of 8.
  std::string header = R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  EXPECT_EQ(ReadBytes(tmp.Path("one.safetensors")), RawSafetensors(header, t.data));
}

TEST(WriterTest, SameInputAnyOrderGivesSameBytes) {
  TempDir tmp;
  std::vector<OwnedTensor> in = MixedTensors();
  ASSERT_TRUE(WriteFile(tmp.Path("1.safetensors"), in, {{"format", "pt"}}).ok());
  std::reverse(in.begin(), in.end());
  ASSERT_TRUE(WriteFile(tmp.Path("2.safetensors"), in, {{"format", "pt"}}).ok());
  const std::string a = ReadBytes(tmp.Path("1.safetensors"));
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, ReadBytes(tmp.Path("2.safetensors")));
  uint64_t header_len = 0;
  std::memcpy(&header_len, a.data(), 8);   // little-endian host
  EXPECT_EQ(header_len % 8, 0u);
  // Contiguous offsets: nothing between or after the tensors.
  size_t payload = 0;
  for (const OwnedTensor& t : in) payload += t.data.size();
  EXPECT_EQ(a.size(), 8 + header_len + payload);
  // No temp files left behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 2u);
}

// Tensors whose bytes sit in a file (the artifact writer's spill) give the
// same shards as the same tensors in memory, whichever way the bytes are copied.
TEST(WriterTest, FileBackedTensorsGiveTheSameShards) {
  TempDir tmp;
  const std::vector<OwnedTensor> in = MixedTensors();
  ASSERT_TRUE(WriteSharded(tmp.Path("mem"), in, /*max_shard_bytes=*/64, {{"format", "pt"}}).ok());

  // Every other tensor goes to a side file, in reverse order, behind a gap.
  const std::string side = tmp.Path("side.bin");
  std::string bytes(13, 'x');
  std::vector<TensorRef> refs;
  for (size_t i = in.size(); i-- > 0;) {
    refs.push_back(RefOf(in[i]));
    if (i % 2 == 1) continue;
    refs.back().offset = bytes.size();
    refs.back().size = in[i].data.size();
    refs.back().release = (i % 4 == 0);
    bytes += in[i].data;
  }
  WriteBytes(side, bytes);
  const int fd = ::open(side.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (TensorRef& r : refs) {
    if (r.size > 0 || r.offset > 0) {
      r.fd = fd;
      r.data = {};
    }
  }
  absl::StatusOr<std::vector<std::string>> files = WriteSharded(tmp.Path("file"), refs, 64, {{"format", "pt"}});
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_GT(files->size(), 2u);   // sharded, plus the index
  for (const std::string& f : *files) {
    EXPECT_EQ(ReadBytes(tmp.Path("file/" + f)), ReadBytes(tmp.Path("mem/" + f))) << f;
  }

  // A file shorter than a ref says so, naming the tensor; nothing is left.
  for (TensorRef& r : refs) {
    if (r.fd >= 0 && r.size > 0) r.offset = bytes.size() - r.size / 2;
  }
  absl::StatusOr<std::vector<std::string>> short_read = WriteSharded(tmp.Path("short"), refs, 64, {});
  ::close(fd);
  EXPECT_EQ(short_read.status().code(), absl::StatusCode::kDataLoss) << short_read.status();
  EXPECT_THAT(std::string(short_read.status().message()), ::testing::HasSubstr("bytes short"));
  EXPECT_THAT(std::string(short_read.status().message()), ::testing::HasSubstr("tensor '"));
  size_t left = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.Path("short"))) left += e.is_regular_file();
  EXPECT_EQ(left, 0u);
}

TEST(WriterTest, RejectsBadInputNamingTheTensor) {
  TempDir tmp;
  const std::string path = tmp.Path("w.safetensors");
  struct Case { const char* what; std::vector<OwnedTensor> tensors; const char* fragment; };
  const Case cases[] = {
      {"size mismatch", {{"t", DType::kF32, {2}, "abc"}}, "'t'"},
      {"negative dim", {{"t", DType::kF32, {-1}, ""}}, "'t'"},
      {"duplicate", {{"t", DType::kU8, {1}, "a"}, {"t", DType::kU8, {1}, "b"}}, "given twice"},
      {"reserved name", {{"__metadata__", DType::kU8, {1}, "a"}}, "__metadata__"},
      {"empty name", {{"", DType::kU8, {1}, "a"}}, "invalid name"},
      {"not utf-8", {{"bad\xff", DType::kU8, {1}, "a"}}, "UTF-8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ExpectError(WriteFile(path, c.tensors, {}), absl::StatusCode::kInvalidArgument, {"w.safetensors", c.fragment});
    EXPECT_FALSE(std::filesystem::exists(path));
  }
}

// One row per validation rule. Each header is written verbatim with `data`.
struct BadFile {
  const char* what;
  std::string bytes;
  absl::StatusCode code;
  std::vector<std::string> fragments;
};

std::vector<BadFile> BadFiles() {
  const std::string d16 = Pattern(16, 1);
  return {
      {"shorter than 8 bytes", "abc", absl::StatusCode::kDataLoss, {"3 bytes"}},
      {"empty file", "", absl::StatusCode::kDataLoss, {"0 bytes"}},
      {"header length past EOF", testing::LengthPrefix(1000) + "{}", absl::StatusCode::kDataLoss,
       {"header length 1000", "10-byte file"}},
      {"absurd header length", testing::LengthPrefix(uint64_t{1} << 40) + "{}", absl::StatusCode::kInvalidArgument,
       {"exceeds the limit"}},
      {"header not JSON", RawSafetensors("{\"w\": nope", ""), absl::StatusCode::kInvalidArgument, {"not valid JSON"}},
      {"header not an object", RawSafetensors("[1, 2]", ""), absl::StatusCode::kInvalidArgument,
       {"array", "expected an object"}},
      {"entry not an object", RawSafetensors(R"({"w": 3})", ""), absl::StatusCode::kInvalidArgument, {"'w'"}},
      {"unknown dtype",
       RawSafetensors(R"({"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 16]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "unknown dtype 'F128'"}},
      {"missing dtype", RawSafetensors(R"({"w": {"shape": [2], "data_offsets": [0, 16]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "'dtype'"}},
      {"negative dim", RawSafetensors(R"({"w": {"dtype": "U8", "shape": [-2, -8], "data_offsets": [0, 16]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "negative"}},
      {"fractional dim", RawSafetensors(R"({"w": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "1.5"}},
      {"dtype size mismatch",
       RawSafetensors(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "needs 12 bytes", "[0, 16]"}},
      {"begin > end", RawSafetensors(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "begin > end"}},
      {"negative offset", RawSafetensors(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "data_offsets"}},
      {"one offset", RawSafetensors(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [4]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "[begin, end]"}},
      {"range past data area",
       RawSafetensors(R"({"model.layers.0.mlp.up_proj.weight": {"dtype": "F16", "shape": [8],)"
                      R"( "data_offsets": [8, 24]}})", d16),
       absl::StatusCode::kDataLoss, {"'model.layers.0.mlp.up_proj.weight'", "[8, 24]", "data area size 16"}},
      {"overlapping tensors",
       RawSafetensors(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
                      R"( "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'b'", "overlap", "'a'"}},
      {"overlap hidden by file order",
       RawSafetensors(R"({"z": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                      R"( "a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}})", d16),
       absl::StatusCode::kInvalidArgument, {"overlap", "'a'", "'z'"}},
      {"duplicate tensor name",
       RawSafetensors(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                      R"( "w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})", d16),
       absl::StatusCode::kInvalidArgument, {"'w'", "twice"}},
      {"metadata not str->str", RawSafetensors(R"({"__metadata__": {"format": 1}})", ""),
       absl::StatusCode::kInvalidArgument, {"__metadata__['format']", "expected a string"}},
      {"metadata not an object", RawSafetensors(R"({"__metadata__": "pt"})", ""),
       absl::StatusCode::kInvalidArgument, {"__metadata__", "expected an object"}},
  };
}

TEST(ReaderTest, EveryMalformedFileIsRefusedWithFileAndTensorNamed) {
  TempDir tmp;
  for (const BadFile& c : BadFiles()) {
    SCOPED_TRACE(c.what);
    const std::string path = tmp.Path("bad.safetensors");
    WriteBytes(path, c.bytes);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok());
    ExpectError(f.status(), c.code, {path});
    for (const std::string& frag : c.fragments) EXPECT_THAT(std::string(f.status().message()), ::testing::HasSubstr(frag));
  }
}

TEST(ReaderTest, TruncatedFileIsDataLossNamingTheLastTensor) {
  TempDir tmp;
  const std::string path = tmp.Path("t.safetensors");
  ASSERT_TRUE(WriteFile(path, MixedTensors(), {}).ok());
  std::string bytes = ReadBytes(path);
  ASSERT_TRUE(SafetensorsFile::Open(path).ok());
  WriteBytes(path, bytes.substr(0, bytes.size() - 3));
  ExpectError(SafetensorsFile::Open(path).status(), absl::StatusCode::kDataLoss,
              {"t.safetensors", "'w.f32'", "end past data area"});
}

TEST(ReaderTest, AcceptsEmptyHeaderAndTrailingGap) {
  // The spec allows an empty object; gaps between tensors are odd but harmless.
  TempDir tmp;
  WriteBytes(tmp.Path("e.safetensors"), RawSafetensors("{}      ", ""));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> e = SafetensorsFile::Open(tmp.Path("e.safetensors"));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->names().empty());
  WriteBytes(tmp.Path("g.safetensors"),
             RawSafetensors(R"({"b": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]},)"
                            R"( "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})",
                            "ab....cd.."));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> g = SafetensorsFile::Open(tmp.Path("g.safetensors"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT((*g)->names(), ElementsAre("a", "b"));
  EXPECT_EQ((*g)->Get("b").value()->data, "cd");
}

TEST(ReaderTest, MissingFileIsNotFoundAndDirectoryIsInvalid) {
  TempDir tmp;
  ExpectError(SafetensorsFile::Open(tmp.Path("none.safetensors")).status(), absl::StatusCode::kNotFound,
              {"none.safetensors"});
  ExpectError(SafetensorsFile::Open(tmp.path()).status(), absl::StatusCode::kInvalidArgument, {tmp.path()});
}

}  // namespace
}  // namespace qf::storage
