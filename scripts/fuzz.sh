#!/usr/bin/env bash
# scripts/fuzz.sh: build the fuzz targets of tests/fuzz with clang's libFuzzer,
# ASan and UBSan (build-fuzz/) and run each for SECONDS (default 60).
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh 600 safetensors  # one target, 10 minutes
#
# Each target starts from its seeds (checked in) and a working corpus in
# build-fuzz/corpus/<name>/ that grows across runs. An input that breaks a
# contract (a crash, a sanitizer report, a refusal that is not one line naming
# the file, an accepted input the API should have refused) is saved as
# build-fuzz/crashes/<name>-crash-<sha1>; copy it into tests/fuzz/found/<name>/
# with the fix, and the <name>_replay ctest keeps it fixed. Exit 1 if any target
# found one. Needs scripts/setup.sh's packages and .venv (run it first).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${QF_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
SECS=${1:-60}
shift || true
ALL=(safetensors checkpoint_index model_config packed_linear artifact layer_result job_spec chunk_stream state_records bpe_tokenizer bpe_encode calibration_text)
TARGETS=("${@:-${ALL[@]}}")

log() { echo "fuzz: $*" >&2; }

if ! command -v clang++ >/dev/null; then
  echo "fuzz: error: clang++ not found: install Debian's clang (libFuzzer ships with it)" >&2
  exit 1
fi
# Configured every time (seconds): the flags below are the build's, whatever
# an earlier version of this script left in the cache. QF_SERVICES for the
# layer_result target (Protobuf); only the fuzz targets are built.
[[ -f $BUILD/build.ninja ]] || log "configuring $BUILD (clang, libFuzzer, ASan + UBSan)"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQF_FUZZ=ON \
  -DQF_CUDA=OFF -DQF_SERVICES=ON -DQF_BENCH=OFF -DQF_PYTHON="$ROOT/.venv/bin/python" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]/%/_fuzz}"

mkdir -p "$BUILD/crashes"
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$BUILD/corpus/$t" "$BUILD/seeds/$t"
  # libFuzzer takes corpus directories: seed files are copied into one.
  seeds=("$BUILD/seeds/$t")
  while read -r s; do
    if [[ -d $s ]]; then
      seeds+=("$s")
    elif [[ -f $s ]]; then  # named after its directory too: the fixtures share file names
      cp "$s" "$BUILD/seeds/$t/$(basename "$(dirname "$s")")-$(basename "$s")"
    fi
  done < "$BUILD/fuzz/$t.seeds"
  log "$t: ${SECS} s"
  # The seeds go in as read-only corpus directories or files; new inputs land
  # in the first directory. -rss_limit_mb and -timeout: a parser that
  # allocates or loops without bound is a finding too.
  if ! "$BUILD/bin/${t}_fuzz" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$BUILD/crashes/$t-" "$BUILD/corpus/$t" "${seeds[@]}" 2> "$BUILD/$t.log"; then
    failed+=("$t")
    log "$t: FOUND an input that breaks a contract ($BUILD/$t.log, $BUILD/crashes/)"
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)|cov: " "$BUILD/$t.log" | tail -3 >&2 || true
done
if ((${#failed[@]})); then
  log "targets with findings: ${failed[*]}"
  exit 1
fi
log "no findings in ${TARGETS[*]} (${SECS} s each)"
