// w4a16_bench's command line (bench/w4a16_bench_options.h): values reach the
// options, bad ones are refused with a nonzero exit instead of being ignored
// or looping (the hand-written parser spun forever on --ms=abc).
#include "bench/w4a16_bench_options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qf::bench {
namespace {

const std::vector<std::string> kShapes = {"qkv", "o", "gate_up", "down"};

int Parse(std::vector<std::string> args, W4A16BenchOptions* o) {
  args.insert(args.begin(), "w4a16_bench");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseW4A16BenchOptions(static_cast<int>(argv.size()), argv.data(), kShapes, o);
}

TEST(W4A16BenchOptionsTest, ValuesReachTheOptions) {
  W4A16BenchOptions o;
  ASSERT_EQ(Parse({"--iters=30", "--ms=64,256", "--shapes=qkv,down", "--sweep=wg_t64,=dec_m8_s16", "--grids",
                   "--dtype=bf16", "--variant=wg_t256_n128_s6_d2", "--pull", "--settle-ms=300", "--sweep-settle-ms=40"},
                  &o),
            -1);
  EXPECT_EQ(o.iters, 30);
  EXPECT_EQ(o.warmup, 5);
  EXPECT_EQ(o.ms, (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(o.shapes, (std::vector<std::string>{"qkv", "down"}));
  EXPECT_TRUE(o.sweep);
  EXPECT_EQ(o.sweep_filter, (std::vector<std::string>{"wg_t64", "=dec_m8_s16"}));
  EXPECT_TRUE(o.grids);
  EXPECT_TRUE(o.bf16);
  EXPECT_EQ(o.variant, "wg_t256_n128_s6_d2");
  EXPECT_TRUE(o.pull);
  EXPECT_EQ(o.settle_ms, 300);
  EXPECT_EQ(o.sweep_settle_ms, 40);

  W4A16BenchOptions d;
  ASSERT_EQ(Parse({"--sweep"}, &d), -1);
  EXPECT_TRUE(d.sweep);
  EXPECT_TRUE(d.sweep_filter.empty()) << "a bare --sweep times every variant";
  EXPECT_EQ(d.ms, (std::vector<int64_t>{1, 4, 16, 64, 256}));
  EXPECT_FALSE(d.bf16);
  EXPECT_FALSE(d.pull);
  EXPECT_EQ(d.settle_ms, 250) << "the table settles unless told not to";
  EXPECT_EQ(d.sweep_settle_ms, 0) << "the sweep does not unless asked";
}

TEST(W4A16BenchOptionsTest, ShapesTakeKxNPairs) {
  W4A16BenchOptions o;
  ASSERT_EQ(Parse({"--shapes=o,768x256,256x128"}, &o), -1);
  EXPECT_EQ(o.shapes, (std::vector<std::string>{"o", "768x256", "256x128"}));
  int64_t k = 0, n = 0;
  ASSERT_TRUE(ParseKxN("768x256", &k, &n));
  EXPECT_EQ(k, 768);
  EXPECT_EQ(n, 256);
  for (const char* bad : {"o", "768x", "x256", "768x256x1", "-128x64", "768x100", "100x256", "0x64", "1e3x64",
                          "768 x 256", "99999999999999999999x64"}) {
    EXPECT_FALSE(ParseKxN(bad, &k, &n)) << bad;
  }
}

TEST(W4A16BenchOptionsTest, BadValuesAreRefused) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--ms=abc"}, {"--ms=0"}, {"--iters=0"}, {"--shapes=ffn"}, {"--shapes=768x100"}, {"--shapes=o,12x"},
           {"--dtype=fp8"}, {"--grids"}, {"--bogus"}, {"--settle-ms=-1"}, {"--settle-ms=x"}, {"--sweep-settle-ms=-5"}}) {
    SCOPED_TRACE(bad[0]);
    W4A16BenchOptions o;
    EXPECT_GT(Parse(bad, &o), 0);
  }
}

}  // namespace
}  // namespace qf::bench
