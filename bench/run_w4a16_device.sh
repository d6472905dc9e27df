#!/usr/bin/env bash
# Runs the W4A16 GPU tests and the benchmark on the GPU machine in one go and
# leaves the logs in $OUT. Uses prebuilt binaries from .w4a16bin/ when they
# load there (build them anywhere with CUDA 13: targets w4a16_gpu_test,
# w4a16_bf16_gpu_test, w4a16_ref_test, w4a16_bench), else configures and
# builds them into /tmp/b. W4A16_BF16_BENCH=1 adds the bf16 table
# (w4a16_bench --dtype=bf16, same arguments) in bench_bf16.log.
#
#   source .devdeps/activate && bash bench/run_w4a16_device.sh [w4a16_bench args]
#   QF_PTXAS=path/to/ptxas bash bench/run_w4a16_device.sh ...   # build with a newer ptxas
#   W4A16_SETTLE_AB=250:4 bash bench/run_w4a16_device.sh --iters=30
#       # then 4 more table processes, alternating --settle-ms=0 and
#       # --settle-ms=250, the SM clock and power sampled every 50 ms
#       # (settle_ab/: one log per process, clocks.csv, the targets line of each)
set -u -o pipefail
OUT=${OUT:-/tmp/w4a16_out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
BIN=.w4a16bin
if [ ! -x $BIN/w4a16_gpu_test ] || [ ! -x $BIN/w4a16_bf16_gpu_test ] ||
  ldd $BIN/w4a16_gpu_test $BIN/w4a16_bf16_gpu_test $BIN/w4a16_bench | grep -q "not found"; then
  echo "building on this machine"
  BIN=/tmp/b/bin
  flags=(-G Ninja -DQF_PYTHON=/opt/torch/.venv/bin/python -DQF_CUDA=ON -DQF_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES=90a)
  # QF_PTXAS=<ptxas binary>: assemble with it (cmake/QfPtxas.cmake; the machine
  # has no network, so bring the one scripts/fetch-ptxas.sh fetched).
  [ -n "${QF_PTXAS:-}" ] && flags+=(-DQF_PTXAS="$QF_PTXAS")
  cmake -S . -B /tmp/b "${flags[@]}" -DQF_SERVICES=OFF >"$OUT/configure.log" 2>&1 ||
    cmake -S . -B /tmp/b "${flags[@]}" -DQF_SERVICES=ON >>"$OUT/configure.log" 2>&1 ||
    { tail -40 "$OUT/configure.log"; exit 1; }
  cmake --build /tmp/b -j16 --target w4a16_gpu_test w4a16_bf16_gpu_test w4a16_ref_test w4a16_bench \
    >"$OUT/build.log" 2>&1 ||
    { grep -E "error" -A5 "$OUT/build.log" | head -60; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu \
  --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
# The benchmark first: its table is the result that matters most.
timeout 330 "$BIN/w4a16_bench" "$@" >"$OUT/bench.log" 2>&1
echo "w4a16_bench rc=$?"
sed -n '/^sweep/q;p' "$OUT/bench.log"
"$BIN/w4a16_ref_test" >"$OUT/ref_test.log" 2>&1
echo "w4a16_ref_test rc=$? ($(grep -c '^\[       OK' "$OUT/ref_test.log") ok)"
# The forced-variant sweep runs in its own process: a variant that faults
# cannot take the other tests down with it.
timeout 240 "$BIN/w4a16_gpu_test" --gtest_filter="${W4A16_GTEST_FILTER:--*AcrossMAndVariants*}" >"$OUT/gpu_test.log" 2>&1
rc=$?
timeout 120 "$BIN/w4a16_gpu_test" --gtest_filter='*AcrossMAndVariants*' >>"$OUT/gpu_test.log" 2>&1
rc2=$?
echo "w4a16_gpu_test rc=$rc (variant sweep rc=$rc2)"
grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) |Failure|RelErr|Which is|forced|m=" "$OUT/gpu_test.log" | head -50
timeout 240 "$BIN/w4a16_bf16_gpu_test" >"$OUT/bf16_gpu_test.log" 2>&1
echo "w4a16_bf16_gpu_test rc=$?"
grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) |Failure|RelErr|Which is|forced|m=" "$OUT/bf16_gpu_test.log" | head -30
if [ "${W4A16_BF16_BENCH:-0}" = 1 ]; then
  timeout 330 "$BIN/w4a16_bench" --dtype=bf16 "$@" >"$OUT/bench_bf16.log" 2>&1
  echo "w4a16_bench --dtype=bf16 rc=$?"
  sed -n '/^sweep/q;p' "$OUT/bench_bf16.log"
fi
# Disassembly of the weight-streaming kernels, when the toolkit has cuobjdump:
# instruction mix of the main loop (the numbers kernels/MEASUREMENTS.md quotes).
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$BIN/w4a16_bench" 2>/dev/null |
    awk '/Function : .*W4A16StreamKernel/{keep=1} /Function : /&&!/W4A16StreamKernel/{keep=0} keep' >"$OUT/sass_stream.txt"
  echo "sass: $(grep -c HMMA "$OUT/sass_stream.txt") HMMA, $(grep -c LDGSTS "$OUT/sass_stream.txt") LDGSTS in $(wc -l <"$OUT/sass_stream.txt") lines"
fi
# Optional profiles on the o projection (clocks left alone): W4A16_NCU="M[:VARIANT] ...".
if [ -n "${W4A16_NCU:-}" ] && command -v ncu >/dev/null; then
  for spec in ${W4A16_NCU}; do
    m=${spec%%:*}; v=${spec#*:}; [ "$v" = "$spec" ] && v=""
    sections=(--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy
      --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats)
    [ "${W4A16_NCU_FULL:-0}" = 1 ] && sections=(--set full --print-details all)
    for attempt in 1 2; do
      timeout 120 ncu --clock-control none --kernel-name regex:W4A16 --launch-skip 2 --launch-count 1 "${sections[@]}" \
        "$BIN/w4a16_bench" --shapes=o --ms=$m --iters=2 --warmup=1 ${v:+--variant=$v} >"$OUT/ncu_m${m}_${v:-auto}.txt" 2>&1
      rc=$?
      [ $rc = 0 ] && break
      sections=(--set full)  # older ncu: no --print-details
    done
    echo "ncu m=$m ${v:-auto} rc=$rc"
  done
fi
# The settle A/B (W4A16_SETTLE_AB=MS[:PROCESSES]): whole table processes, the
# plain ones and the --settle-ms ones alternating, so that both see the same
# drift of the card; nvidia-smi samples the clocks beside them.
if [ -n "${W4A16_SETTLE_AB:-}" ]; then
  ms=${W4A16_SETTLE_AB%%:*}; procs=${W4A16_SETTLE_AB#*:}; [ "$procs" = "$W4A16_SETTLE_AB" ] && procs=4
  mkdir -p "$OUT/settle_ab"
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv,noheader -lms 50 >"$OUT/settle_ab/clocks.csv" 2>&1 &
  smi=$!
  for i in $(seq 1 "$procs"); do
    if [ $((i % 2)) = 1 ]; then extra=(--settle-ms=0); tag=plain; else extra=(--settle-ms="$ms"); tag=settle$ms; fi
    log="$OUT/settle_ab/$i-$tag.log"
    echo "# $(date +%T.%N) start" >"$log"
    timeout 300 "$BIN/w4a16_bench" "$@" "${extra[@]}" >>"$log" 2>&1
    rc=$?
    echo "# $(date +%T.%N) end rc=$rc" >>"$log"
    echo "settle A/B $i ($tag): rc=$rc, $(grep -m1 '^targets' "$log" || echo 'no targets line')"
  done
  kill "$smi" 2>/dev/null
fi
