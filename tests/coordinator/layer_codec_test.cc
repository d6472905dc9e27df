#include "coordinator/layer_codec.h"

#include <random>

#include "coordinator/planner.h"
#include "kernels/ref/pack.h"
#include "storage/model_config.h"
#include "tests/coordinator/fake_engine.h"
#include "tests/coordinator/test_util.h"
#include "tests/mutator.h"
#include "tests/proto_mutator.h"

namespace qf::coordinator {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

storage::ModelConfig TinyConfig() {
  auto cfg = storage::LoadModelConfig(std::string(QF_SOURCE_DIR) + "/models/tiny-llama");
  EXPECT_THAT(cfg, IsOk());
  return *cfg;
}

proto::JobSpec SpecFor(const worker::QuantParams& q) {
  proto::JobSpec s;
  s.set_method(q.method);
  s.set_bits(q.bits);
  s.set_group_size(q.group_size);
  s.set_sym(q.sym);
  s.set_act_order(q.act_order);
  return s;
}

TEST(LayerCodecTest, PackBitsRoundTripsEveryWidth) {
  for (int bits : {2, 3, 4, 8}) {
    std::vector<uint8_t> v(1001);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i * 37 + 11) & ((1u << bits) - 1));
    std::string packed = PackBits(v, bits);
    EXPECT_EQ(packed.size(), (v.size() * bits + 7) / 8) << bits;
    auto back = UnpackBits(packed, bits, static_cast<int64_t>(v.size()));
    ASSERT_THAT(back, IsOk());
    EXPECT_EQ(*back, v) << bits;
  }
  // 4-bit: low nibble first.
  EXPECT_EQ(PackBits({0x1, 0xf}, 4), std::string("\xf1", 1));
  EXPECT_THAT(UnpackBits("abc", 4, 8), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 4 bytes")));
}

// The stream format, bit by bit, as first written: value i occupies bits
// [i*bits, (i+1)*bits) of the output, least significant bit first.
std::string PackBitsByDefinition(const std::vector<uint8_t>& values, int bits) {
  std::string out((values.size() * bits + 7) / 8, '\0');
  uint64_t bitpos = 0;
  for (uint8_t v : values) {
    const uint32_t x = v & ((1u << bits) - 1);
    for (int b = 0; b < bits; ++b, ++bitpos) {
      if (x & (1u << b)) out[bitpos >> 3] = static_cast<char>(out[bitpos >> 3] | (1 << (bitpos & 7)));
    }
  }
  return out;
}

TEST(LayerCodecTest, PackBitsMatchesTheBitByBitDefinition) {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{15}, size_t{16}, size_t{4099}}) {
      std::vector<uint8_t> v(count);
      for (uint8_t& x : v) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        x = static_cast<uint8_t>(state >> 56);   // high bits above `bits` too: PackBits masks them
      }
      const std::string packed = PackBits(v, bits);
      ASSERT_EQ(packed, PackBitsByDefinition(v, bits)) << bits << " bits, " << count << " values";
      auto back = UnpackBits(packed, bits, static_cast<int64_t>(count));
      ASSERT_THAT(back, IsOk());
      for (size_t i = 0; i < count; ++i) ASSERT_EQ((*back)[i], v[i] & ((1u << bits) - 1)) << bits << " bits, value " << i;
    }
  }
}

TEST(LayerCodecTest, LayerRoundTripsThroughProto) {
  storage::ModelConfig cfg = TinyConfig();
  worker::QuantParams q;
  q.bits = 3;
  q.group_size = 64;
  q.act_order = true;
  kernels::LayerResult r = qf::testing::MakeFakeLayer(cfg, q, 2, 99);
  r.linears[1].bias.assign(r.linears[1].out_features, 0x3c00);
  proto::LayerResultProto p = LayerToProto(r);
  auto back = LayerFromProto(p);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->layer, 2);
  ASSERT_EQ(back->linears.size(), r.linears.size());
  for (size_t i = 0; i < r.linears.size(); ++i) {
    EXPECT_EQ(back->linears[i].codes, r.linears[i].codes);
    EXPECT_EQ(back->linears[i].scales, r.linears[i].scales);
    EXPECT_EQ(back->linears[i].zeros, r.linears[i].zeros);
    EXPECT_EQ(back->linears[i].g_idx, r.linears[i].g_idx);
    EXPECT_EQ(back->linears[i].bias, r.linears[i].bias);
  }
  EXPECT_EQ(qf::testing::HashLayer(*back), qf::testing::HashLayer(r));
  EXPECT_EQ(back->errors, r.errors);
  // Codes travel bit-packed: 3 bits per weight.
  EXPECT_EQ(p.linears(0).codes().size(), (r.linears[0].codes.size() * 3 + 7) / 8);
}

TEST(LayerCodecTest, ValidateLayerAcceptsTheModelShapes) {
  storage::ModelConfig cfg = TinyConfig();
  worker::QuantParams q;
  proto::LayerResultProto p = LayerToProto(qf::testing::MakeFakeLayer(cfg, q, 1, 5));
  EXPECT_THAT(ValidateLayer(p, 1, cfg, SpecFor(q)), IsOk());
}

TEST(LayerCodecTest, ValidateLayerRejectsWrongShapes) {
  storage::ModelConfig cfg = TinyConfig();
  worker::QuantParams q;
  const proto::JobSpec spec = SpecFor(q);
  const proto::LayerResultProto good = LayerToProto(qf::testing::MakeFakeLayer(cfg, q, 1, 5));
  struct Case {
    const char* expect;
    void (*mutate)(proto::LayerResultProto*);
  };
  const Case cases[] = {
      {"layer index", [](proto::LayerResultProto* p) { p->set_layer(2); }},
      {"self_attn.k_proj: out_features", [](proto::LayerResultProto* p) { p->mutable_linears(1)->set_out_features(256); }},
      {"mlp.down_proj: in_features", [](proto::LayerResultProto* p) { p->mutable_linears(6)->set_in_features(256); }},
      {"codes bytes", [](proto::LayerResultProto* p) { p->mutable_linears(0)->mutable_codes()->pop_back(); }},
      {"bits", [](proto::LayerResultProto* p) { p->mutable_linears(2)->set_bits(8); }},
      {"g_idx[3]", [](proto::LayerResultProto* p) { p->mutable_linears(3)->set_g_idx(3, 99); }},
      {"mlp.up_proj: missing", [](proto::LayerResultProto* p) { p->mutable_linears()->DeleteSubrange(5, 1); }},
      {"sent twice", [](proto::LayerResultProto* p) { *p->add_linears() = p->linears(0); }},
      {"not a linear", [](proto::LayerResultProto* p) { p->mutable_linears(0)->set_name("self_attn.x_proj"); }},
      {"input_layernorm.weight: shape", [](proto::LayerResultProto* p) {
         p->mutable_dense(0)->set_shape(0, 128);
         p->mutable_dense(0)->mutable_data()->resize(256);
       }},
      {"data bytes", [](proto::LayerResultProto* p) { p->mutable_dense(1)->mutable_data()->append("xx"); }},
      // Values the assembler's packing refuses (ValidateQuantizedLinear), so
      // refused before they are committed: an fp16 Inf scale, a NaN one, and
      // a group index in range but not k / group_size without act-order.
      {"self_attn.q_proj: scales[0, 3]: expected a finite fp16 value, got 0x7c00", [](proto::LayerResultProto* p) {
         std::string* sc = p->mutable_linears(0)->mutable_scales();
         (*sc)[6] = 0x00;
         (*sc)[7] = 0x7c;
       }},
      {"mlp.gate_proj: scales[1, 0]: expected a finite fp16 value, got 0xfe00", [](proto::LayerResultProto* p) {
         const int64_t out = p->linears(4).out_features();
         std::string* sc = p->mutable_linears(4)->mutable_scales();
         (*sc)[2 * out] = 0x00;
         (*sc)[2 * out + 1] = static_cast<char>(0xfe);
       }},
      {"self_attn.o_proj: g_idx[0] = 1, expected 0 = k / group_size (desc_act is off)",
       [](proto::LayerResultProto* p) { p->mutable_linears(3)->set_g_idx(0, 1); }},
      // Names come from the worker: a newline in one stays escaped, so the
      // refusal is still one line.
      {"layer 1: self_attn.q_proj\\n: not a linear",
       [](proto::LayerResultProto* p) { p->mutable_linears(0)->set_name("self_attn.q_proj\n"); }},
      {"expected a module path, got \"\\nx\"", [](proto::LayerResultProto* p) { p->mutable_dense(0)->set_name("\nx"); }},
  };
  for (const Case& c : cases) {
    proto::LayerResultProto p = good;
    c.mutate(&p);
    const absl::Status v = ValidateLayer(p, 1, cfg, spec);
    EXPECT_THAT(v, StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("layer 1"), HasSubstr(c.expect))))
        << c.expect;
    EXPECT_EQ(std::string(v.message()).find('\n'), std::string::npos) << v;
  }
}

// A symmetric job's layer with one zero other than 2^(bits-1): the packing
// would refuse it at assembly, so ValidateLayer does at commit.
TEST(LayerCodecTest, ValidateLayerRefusesAsymmetricZerosInASymmetricJob) {
  storage::ModelConfig cfg = TinyConfig();
  worker::QuantParams q;
  q.sym = true;
  proto::LayerResultProto p = LayerToProto(qf::testing::MakeFakeLayer(cfg, q, 1, 5));
  ASSERT_THAT(ValidateLayer(p, 1, cfg, SpecFor(q)), IsOk());
  std::string* zeros = p.mutable_linears(2)->mutable_zeros();
  (*zeros)[0] = static_cast<char>((*zeros)[0] ^ 0x01);  // 4 bits: zero [0, 0] 8 -> 9
  EXPECT_THAT(ValidateLayer(p, 1, cfg, SpecFor(q)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("layer 1: self_attn.v_proj: zeros[0, 0]: expected 8 (symmetric), got 9")));
}

// A worker's result, corrupted (ChunkJoiner's checksums catch damage on the
// wire; a buggy or hostile worker gets past them), field by field and byte by
// byte: ValidateLayer refuses it naming the layer, or else it decodes.
// Nothing crashes, throws, or allocates what a size field claims.
TEST(LayerCodecTest, MutatedResultsAreRefusedOrDecode) {
  storage::ModelConfig cfg = TinyConfig();
  worker::QuantParams q;
  const proto::JobSpec spec = SpecFor(q);
  const proto::LayerResultProto good = LayerToProto(qf::testing::MakeFakeLayer(cfg, q, 1, 5));
  const std::string good_bytes = good.SerializeAsString();
  std::mt19937 rng(1205);
  qf::testing::Mutator bytes(1205);
  int refused = 0, tried = 0;
  for (int i = 0; i < 4000; ++i) {
    proto::LayerResultProto p;
    if (i % 2 == 0) {
      p = good;
      qf::testing::MutateMessageUpTo3(&p, rng);
    } else if (!p.ParseFromString(bytes.MutateBytes(good_bytes))) {
      continue;
    }
    ++tried;
    const absl::Status v = ValidateLayer(p, 1, cfg, spec);
    if (!v.ok()) {
      ++refused;
      EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument) << "mutant " << i << ": " << v;
      qf::testing::ExpectRefusalNames(v, "layer 1", i);
      continue;
    }
    // What ValidateLayer lets through must be what the assembler can pack.
    auto decoded = LayerFromProto(p);
    ASSERT_THAT(decoded.status(), IsOk()) << "mutant " << i;
    for (const kernels::QuantizedLinear& l : decoded->linears)
      EXPECT_THAT(kernels::ValidateQuantizedLinear(l), IsOk()) << "mutant " << i;
  }
  // The field edits nearly all break something ValidateLayer checks; most
  // byte edits land in the codes, which stay valid codes.
  EXPECT_GT(tried, 2500);
  EXPECT_GT(refused, 1000);
}

// A layer's chunk stream with one chunk's fields mutated (as a faulty worker
// or a damaged stream would send it): the joiner refuses it naming the chunk
// or the layer, on one line, or joins exactly the bytes that were sent.
TEST(LayerCodecTest, MutatedChunkStreamsAreRefusedOrJoinTheSameBytes) {
  std::string bytes(10000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 13);
  std::vector<proto::LayerChunk> good = SplitLayer(bytes, 4096);
  for (proto::LayerChunk& c : good) {
    c.set_attempt_id(9);
    c.set_job_id("j1");
    c.set_layer(3);
  }
  std::mt19937 rng(77);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<proto::LayerChunk> chunks = good;
    qf::testing::MutateMessage(&chunks[rng() % chunks.size()], rng);
    ChunkJoiner joiner;
    absl::Status st;
    for (const proto::LayerChunk& c : chunks) {
      if (st = joiner.Add(c); !st.ok()) break;
    }
    absl::StatusOr<std::string> joined = st.ok() ? joiner.Finish() : absl::StatusOr<std::string>(st);
    if (!joined.ok()) {
      ++refused;
      qf::testing::ExpectRefusalNames(joined.status(), "layer", i);
      continue;
    }
    EXPECT_EQ(*joined, bytes) << "mutant " << i;
  }
  EXPECT_GT(refused, 1500);
}

TEST(LayerCodecTest, ChunksJoinAndCatchCorruption) {
  std::string bytes(10000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  std::vector<proto::LayerChunk> chunks = SplitLayer(bytes, 4096);
  ASSERT_EQ(chunks.size(), 3u);
  for (auto& c : chunks) {
    c.set_attempt_id(5);
    c.set_job_id("job-000001");
    c.set_layer(2);
  }
  {
    ChunkJoiner j;
    for (const auto& c : chunks) ASSERT_THAT(j.Add(c), IsOk());
    auto out = j.Finish();
    ASSERT_THAT(out, IsOk());
    EXPECT_EQ(*out, bytes);
    EXPECT_EQ(j.header().attempt_id(), 5u);
  }
  {
    ChunkJoiner j;
    ASSERT_THAT(j.Add(chunks[0]), IsOk());
    proto::LayerChunk bad = chunks[1];
    (*bad.mutable_data())[100] ^= 1;
    EXPECT_THAT(j.Add(bad), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 2/3 of layer 2: sha256 mismatch")));
  }
  {
    ChunkJoiner j;
    ASSERT_THAT(j.Add(chunks[0]), IsOk());
    EXPECT_THAT(j.Add(chunks[2]), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected chunk 2")));
  }
  {
    ChunkJoiner j;
    ASSERT_THAT(j.Add(chunks[0]), IsOk());
    EXPECT_THAT(j.Finish(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("received 1 of 3 chunks")));
  }
  {
    ChunkJoiner j;
    ASSERT_THAT(j.Add(chunks[0]), IsOk());
    proto::LayerChunk other = chunks[1];
    other.set_layer(3);
    EXPECT_THAT(j.Add(other), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header differs")));
  }
  {
    // A first chunk whose count cannot carry its total_bytes is refused at once.
    ChunkJoiner j;
    proto::LayerChunk lying = chunks[0];
    lying.set_count(1);
    lying.set_total_bytes(kMaxChunkBytes + 1);
    EXPECT_THAT(j.Add(lying), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("chunk 1/1 of layer 2: total_bytes 4194305 does not fit in 1 chunks")));
    EXPECT_FALSE(j.started());
  }
  EXPECT_EQ(SplitLayer("", 4096).size(), 1u);
}

}  // namespace
}  // namespace qf::coordinator
