#!/usr/bin/env bash
# bench/engine_bench.sh: the GPU engine's measurements (issue 4) on one GPU, in
# one command: GPU tests, the 70B layer benchmark with the textbook
# comparison, tiny-llama GPU/CPU agreement and GPU determinism, and the
# 80-layer synthetic:llama-70b run. Logs and JSON go to $OUT (default
# out/engine_bench); the last lines printed are a summary.
#
#   bench/engine_bench.sh [BUILD_DIR] [STEPS]        STEPS: comma list of
#       tests,layer,awq,tiny,synth,e2e (default tests,layer,tiny)
#
# BUILD_DIR must hold a CUDA build (-DQF_CUDA=ON) of qctl, qf_engine,
# qf_spm_plugin, gptq_layer_bench and engine_gpu_test; when it holds none,
# one is configured and built there first. On a machine whose libtorch lives
# elsewhere than at build time, its lib directory is put on LD_LIBRARY_PATH.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
STEPS=${2:-tests,layer,tiny}
OUT=${OUT:-$ROOT/out/engine_bench}
PY=${QF_PYTHON:-$(command -v python3)}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
has() { [[ ",$STEPS," == *",$1,"* ]]; }

TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
# libtorch and the CUDA runtime of its wheel (nvidia/cu13/lib), wherever they are here.
if [[ -n "$TORCH_LIB" ]]; then
  export LD_LIBRARY_PATH="$TORCH_LIB:$(dirname "$(dirname "$TORCH_LIB")")/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# Tests find the bundled model through the source path they were built with
# (QF_SOURCE_DIR); a carried build sees another checkout path.
SRC_AT_BUILD=${QF_SOURCE_AT_BUILD:-$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null)}
if [[ -n "$SRC_AT_BUILD" && ! -e "$SRC_AT_BUILD" ]]; then
  mkdir -p "$(dirname "$SRC_AT_BUILD")" && ln -s "$ROOT" "$SRC_AT_BUILD"
fi

if [[ ! -x "$BUILD/bin/gptq_layer_bench" ]]; then
  note "no build at $BUILD: configuring one"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DQF_PYTHON="$PY" -DQF_CUDA=ON -DQF_TESTS=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/configure.log" 2>&1 || { note "configure failed"; tail -20 "$OUT/configure.log"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" --target qctl qf_engine qf_spm_plugin gptq_layer_bench engine_gpu_test \
        > "$OUT/build.log" 2>&1 || { note "build failed"; grep -m5 -A5 error "$OUT/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"

if has tests; then
  "$BUILD/bin/engine_gpu_test" 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |^tiny-llama|FAILED  \]" 
  note "gpu tests: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/gpu_tests.log" | tr '\n' ' ')"
fi

if has layer; then
  # LAYER_TEXTBOOK=0 skips the textbook comparison (~15 s).
  "$BUILD/bin/gptq_layer_bench" --model 'synthetic:llama-70b?layers=3' --layers 3 \
      $([[ "${LAYER_TEXTBOOK:-1}" == 1 ]] && echo --textbook) --json "$OUT/layer.json" 2>&1 | tee "$OUT/layer.log"
  note "layer bench: $(grep -E '^mean' "$OUT/layer.log")"
  note "$(grep -E '^ratio' "$OUT/layer.log")"
fi

if has tiny; then
  # name|method|bits|format|runs: runs on cpu / cuda / cuda2 (a second GPU
  # run, compared byte for byte with the first). Artifacts are all evaluated on
  # EVAL_DEVICE (the same eval for every row), with the fp16 model first.
  MODEL=$ROOT/models/tiny-llama
  TEXT=$ROOT/data/books-heldout.txt
  EVAL_DEVICE=${EVAL_DEVICE:-cpu}
  TINY_CONFIGS=${TINY_CONFIGS:-"gptq-w4|gptq|4|gptq|cpu,cuda,cuda2 gptq-w3|gptq|3|gptq|cpu,cuda,cuda2 awq-w4|awq|4|awq|cpu,cuda,cuda2 awq-w3|awq|3|gptq|cpu,cuda,cuda2"}
  T=${TINY_DIR:-$(mktemp -d)}
  mkdir -p "$T"
  ppl() { "$BUILD/bin/qctl" eval --model "$1" --text "$TEXT" --seqlen 512 --max-chunks 256 --device "$EVAL_DEVICE" \
            --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }
  note "tiny-llama fp16: ppl $(ppl "$MODEL") (eval on $EVAL_DEVICE, 256 x 512 tokens of books-heldout)"
  for c in $TINY_CONFIGS; do
    IFS='|' read -r name method bits format runs <<< "$c"
    line="tiny-llama $name:"
    for dev in ${runs//,/ }; do
      d=${dev%2}
      t0=$(date +%s.%N)
      if "$BUILD/bin/qctl" quantize --model "$MODEL" --method "$method" \
          --bits "$bits" --group-size 128 --calib "$ROOT/data/calib.txt" --samples 128 --seqlen 512 --seed 0 \
          --format "$format" --device "$d" --out "$T/$name-$dev" > "$OUT/tiny-$name-$dev.log" 2>&1; then
        secs=$("$PY" -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
        if [[ "$dev" == cuda2 ]]; then
          same=$(diff -r "$T/$name-cuda" "$T/$name-cuda2" >/dev/null 2>&1 && echo identical || echo DIFFERENT)
          line="$line | second GPU artifact $same"
        else
          line="$line | $dev ppl $(ppl "$T/$name-$dev") (quantize ${secs}s)"
        fi
      else
        line="$line | $dev quantize FAILED: $(tail -1 "$OUT/tiny-$name-$dev.log")"
      fi
    done
    note "$line"
  done
  [[ -z "${TINY_DIR:-}" ]] && rm -rf "$T"
fi

if has awq; then
  # AWQ on 70B layer shapes: layers 1..2 of a 3-layer synthetic model are the
  # steady state (layer 0 pays one-time costs), at the default search budget
  # and at half of it.
  # AWQ_PROFILE=1: the engine logs each layer's phase times (syncs at each phase).
  for st in ${AWQ_SEARCH_TOKENS:-65536 32768}; do
    QF_ENGINE_PROFILE=${AWQ_PROFILE:-} "$BUILD/bin/gptq_layer_bench" --mode e2e --method awq --awq-search-tokens "$st" \
        --model 'synthetic:llama-70b?layers=3' --json "$OUT/awq_$st.json" 2>&1 | tee "$OUT/awq_$st.log"
    note "awq layer (search tokens $st): $(grep -E '^layer +[12]:' "$OUT/awq_$st.log" | tr '\n' ' ')"
  done
fi

if has synth; then
  # qctl itself on a synthetic model: the embedded coordinator + worker, RocksDB
  # checkpoints, the artifact writer; SYNTH_MODEL layers of 70B shapes.
  S=${SYNTH_DIR:-/tmp/qf_synth}
  SM=${SYNTH_MODEL:-synthetic:llama-70b?layers=4}
  rm -rf "$S" "$(dirname "$S")/.$(basename "$S").qforge-state"
  t0=$(date +%s.%N)
  "$BUILD/bin/qctl" quantize --model "$SM" --method gptq --bits 4 --group-size 128 --samples 128 --seqlen 2048 \
      --device cuda --out "$S" > "$OUT/synth.log" 2>&1
  rc=$?
  secs=$("$PY" -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  note "qctl quantize --model '$SM' --device cuda: exit $rc in ${secs}s; artifact $(du -sh "$S" 2>/dev/null | cut -f1); $(tail -1 "$OUT/synth.log")"
  rm -rf "$S"
fi

if has e2e; then
  E=${E2E_DIR:-/tmp/qf_e2e}
  rm -rf "$E"
  "$BUILD/bin/gptq_layer_bench" --mode e2e --model synthetic:llama-70b --out "$E" --json "$OUT/e2e.json" 2>&1 |
      tee "$OUT/e2e.log"
  note "e2e: $(grep -E '^e2e total' "$OUT/e2e.log")"
  du -sh "$E" | tee -a "$SUMMARY"
  rm -rf "$E"
fi
echo "---- summary ($SUMMARY)"
cat "$SUMMARY"
