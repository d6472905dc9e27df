// Command line of w4a16_bench (bench/w4a16_bench.cu), parsed by CLI11 in a
// host-compiled file: the benchmark itself is a CUDA translation unit, and
// nvcc's front end need not see CLI11.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qf::bench {

struct W4A16BenchOptions {
  int iters = 50;
  int warmup = 5;
  std::vector<int64_t> ms = {1, 4, 16, 64, 256};
  std::vector<std::string> shapes;        // empty: every named shape; names or "KxN"
  bool sweep = false;
  std::vector<std::string> sweep_filter;  // empty: every variant; "=NAME": that one
  std::string variant;                    // empty: the selection table's
  bool grids = false;
  bool bf16 = false;
  bool pull = false;  // W4A16GemmArgs::stream_plan.pull
  // Idle milliseconds before every timed measurement. Long, heavy rows
  // (M = 256, gate_up) drive the H100 into its software power cap, and the
  // SM clock then stays low (1050-1100 MHz against 1980) into the next rows.
  // A pause lets it recover, so no row is timed in the previous one's wake.
  // Measured (bench/results/w4a16_h100_settle_ab.log): without it cuBLAS's
  // decode loop, timed right after ours, ran gate_up at M = 256 in 455-460 us
  // against 383-391 settled, so the table's default settles; the sweep's
  // hundreds of rows do not unless asked (--sweep-settle-ms).
  int settle_ms = 250;
  int sweep_settle_ms = 0;
};

// "KxN" (decimal, both positive, K a multiple of 128 for the bench's group
// size, N of 64) -> *k, *n; false for anything else (a named shape).
bool ParseKxN(const std::string& text, int64_t* k, int64_t* n);

// Parses argv into *options. Returns -1 to go on, else the exit code (0
// after --help; nonzero, with a one-line message on stderr, for an unknown
// option or a bad value).
int ParseW4A16BenchOptions(int argc, char** argv, const std::vector<std::string>& shape_names,
                           W4A16BenchOptions* options);

}  // namespace qf::bench
