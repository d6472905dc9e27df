// File: bench/w4a16_bench_options.cc
#include "bench/w4a16_bench_options.h"

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace qf::bench {

int ParseW4A16BenchOptions(int argc, char** argv, const std::vector<std::string>& shape_names,
                           W4A16BenchOptions* options) {
  W4A16BenchOptions& o = *options;
  CLI::App app{"w4a16_bench: the fused W4A16 GEMM against cuBLAS on the Llama-70B projection shapes"};
  app.add_option("--iters", o.iters, "timed calls (replays) per row; medians over them")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", o.warmup, "untimed calls before them")->check(CLI::Range(0, 100000));
  app.add_option("--ms", o.ms, "rows of A, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--shapes", o.shapes, "shapes, comma-separated")->delimiter(',')->check(CLI::IsMember(shape_names));
  // A bare --sweep leaves one empty filter, dropped below.
  CLI::Option* sweep_opt =
      app.add_option("--sweep", o.sweep_filter,
                     "also time every variant that takes a row; =SUBSTR,... those whose name contains one, "
                     "=NAME exactly")
          ->expected(0, 1 << 20)
          ->delimiter(',');
  app.add_option("--variant", o.variant, "run this variant instead of the selection table's");
  app.add_flag("--grids", o.grids, "every grid of the swept streaming and decode variants")->needs(sweep_opt);
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
