// File: bench/w4a16_bench_options.cc
#include "bench/w4a16_bench_options.h"

#include <charconv>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "CLI/CLI.hpp"

namespace qf::bench {

bool ParseKxN(const std::string& text, int64_t* k, int64_t* n) {
  const size_t x = text.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == text.size()) return false;
  const auto whole = [](std::string_view digits, int64_t* out) {
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *out);
    return ec == std::errc() && end == digits.data() + digits.size() && *out > 0 && *out <= (int64_t{1} << 20);
  };
  const std::string_view t = text;
  return whole(t.substr(0, x), k) && whole(t.substr(x + 1), n) && *k % 128 == 0 && *n % 64 == 0;
}

int ParseW4A16BenchOptions(int argc, char** argv, const std::vector<std::string>& shape_names,
                           W4A16BenchOptions* options) {
  W4A16BenchOptions& o = *options;
  CLI::App app{"w4a16_bench: the fused W4A16 GEMM against cuBLAS on the Llama-70B projection shapes"};
  app.add_option("--iters", o.iters, "timed calls (replays) per row; medians over them")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", o.warmup, "untimed calls before them")->check(CLI::Range(0, 100000));
  app.add_option("--ms", o.ms, "rows of A, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  const CLI::Validator kxn(
      [](std::string& v) {
        int64_t k = 0, n = 0;
        return ParseKxN(v, &k, &n) ? std::string() : "expected KxN with K % 128 == 0 and N % 64 == 0, got " + v;
      },
      "KxN");
  app.add_option("--shapes", o.shapes, "shapes, comma-separated: named ones or KxN (K % 128 == 0, N % 64 == 0)")
      ->delimiter(',')
      ->check(CLI::IsMember(shape_names) | kxn);
  // A bare --sweep leaves one empty filter, dropped below.
  CLI::Option* sweep_opt =
      app.add_option("--sweep", o.sweep_filter,
                     "also time every variant that takes a row; =SUBSTR,... those whose name contains one, "
                     "=NAME exactly")
          ->expected(0, 1 << 20)
          ->delimiter(',');
  app.add_option("--variant", o.variant, "run this variant instead of the selection table's");
  app.add_flag("--grids", o.grids, "every grid of the swept streaming and decode variants; whole-tile, even-split and stream-K grids of the others")->needs(sweep_opt);
  app.add_option("--settle-ms", o.settle_ms,
                 "idle milliseconds before every timed measurement of the table (power-cap recovery; 0: none)")
      ->check(CLI::Range(0, 10000));
  app.add_option("--sweep-settle-ms", o.sweep_settle_ms, "the same for the sweep's measurements")
      ->check(CLI::Range(0, 10000));
  app.add_flag("--pull", o.pull, "split decode grids reduce by pulling (the push reduction's A/B)");
  std::string dtype = "fp16";
  app.add_option("--dtype", dtype, "activation type")->check(CLI::IsMember({"fp16", "bf16"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.bf16 = dtype == "bf16";
  o.sweep = sweep_opt->count() > 0;
  std::erase(o.sweep_filter, std::string());
  return -1;
}

}  // namespace qf::bench
