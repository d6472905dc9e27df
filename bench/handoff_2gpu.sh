#!/usr/bin/env bash
# bench/handoff_2gpu.sh: the parallel-mode activation hand-off on 2 GPUs.
# Quantizes synthetic:llama-70b?layers=16 (GPTQ w4 g128, 128 x 2048 tokens)
# in parallel mode three times against a local qcoordinator:
#   1. one worker (cuda:0): every stage replays layers 0..first-1 (today's path)
#   2. two workers (cuda:0, cuda:1), --no-handoff: replay on both
#   3. two workers (cuda:0, cuda:1), hand-off over NCCL
# and prints the wall times, the speedups of 3 (and 2) over 1, how many stages
# received their input (EVENT_HANDOFF "received from"), and whether the
# artifacts are byte-identical (target: 3 vs 1 >= 1.8x, identical).
#
#   bench/handoff_2gpu.sh [BUILD_DIR]      env: OUT (logs; default out/handoff_2gpu),
#       STAGE_LAYERS (default 2: 8 stages), SAMPLES (128), SEQLEN (2048), MODEL
#
# BUILD_DIR: a CUDA build (-DQF_CUDA=ON) with qcoordinator, qworker, qctl and
# qf_engine. Needs qctl/qcoordinator to accept `synthetic:` models.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
OUT=${OUT:-$ROOT/out/handoff_2gpu}
MODEL=${MODEL:-synthetic:llama-70b?layers=16}
STAGE_LAYERS=${STAGE_LAYERS:-2}
SAMPLES=${SAMPLES:-128}
SEQLEN=${SEQLEN:-2048}
BIN=$BUILD/bin
PY=${QF_PYTHON:-$(command -v python3)}
export NCCL_NVLS_ENABLE=0   # the engine forces it too; NVLink multicast stays off
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
if [[ -n "$TORCH_LIB" ]]; then
  export LD_LIBRARY_PATH="$TORCH_LIB:$(dirname "$(dirname "$TORCH_LIB")")/nvidia/cu13/lib:$(dirname "$(dirname "$TORCH_LIB")")/nvidia/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
for b in qcoordinator qworker qctl; do
  [[ -x "$BIN/$b" ]] || { note "missing $BIN/$b (build: cmake -DQF_CUDA=ON ...; ninja qcoordinator qworker qctl qf_engine)"; exit 1; }
done
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee -a "$SUMMARY"
if (( GPUS < 2 )); then note "blocked: $GPUS GPU(s) visible, this measurement needs 2"; exit 2; fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

# run NAME "WORKER ARGS;WORKER ARGS..." -> seconds on stdout, artifact in $OUT/NAME
run() {
  local name=$1 workers=$2 dir=$OUT/$1
  rm -rf "$dir" "$dir.state"; mkdir -p "$dir.logs"
  "$BIN/qcoordinator" --listen 127.0.0.1:0 --state "$dir.state" --lease-ttl-ms 120000 --renew-interval-ms 5000 \
      > "$dir.logs/coordinator.log" 2>&1 &
  local cpid=$!; PIDS+=($cpid)
  local port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$dir.logs/coordinator.log" | head -1)
    [[ -n "$port" ]] && break; sleep 0.1
  done
  [[ -n "$port" ]] || { note "$name: coordinator did not start"; cat "$dir.logs/coordinator.log" >&2; return 1; }
  local i=0 wpids=()
  IFS=';' read -ra specs <<< "$workers"
  for w in "${specs[@]}"; do
    # shellcheck disable=SC2086
    "$BIN/qworker" --coordinator "127.0.0.1:$port" --name "w$i" $w > "$dir.logs/worker$i.log" 2>&1 &
    wpids+=($!); PIDS+=($!); i=$((i + 1))
  done
  local t0 t1 job
  t0=$(date +%s.%N)
  job=$("$BIN/qctl" submit --coordinator "127.0.0.1:$port" --model "$MODEL" --method gptq --bits 4 --group-size 128 \
        --samples "$SAMPLES" --seqlen "$SEQLEN" --seed 0 --mode parallel --stage-layers "$STAGE_LAYERS" \
        --out "$dir" 2> "$dir.logs/submit.err" | tail -1)
  [[ "$job" == job-* ]] || { note "$name: submit failed: $(cat "$dir.logs/submit.err")"; return 1; }
  "$BIN/qctl" watch "$job" --coordinator "127.0.0.1:$port" > "$dir.logs/watch.log" 2>&1
  local rc=$?
  t1=$(date +%s.%N)
  "$BIN/qctl" logs "$job" --coordinator "127.0.0.1:$port" -o json > "$dir.logs/events.json" 2>/dev/null
  kill "${wpids[@]}" "$cpid" 2>/dev/null; wait "${wpids[@]}" "$cpid" 2>/dev/null
  [[ $rc == 0 ]] || { note "$name: job did not succeed (rc $rc): $(tail -3 "$dir.logs/watch.log")"; return 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }'
}

note "model $MODEL, parallel mode, stage layers $STAGE_LAYERS, $SAMPLES x $SEQLEN tokens"
T1=$(run one "--device cuda:0") || exit 1
note "1 worker (replay):             ${T1} s"
T2R=$(run two-replay "--device cuda:0 --no-handoff;--device cuda:1 --no-handoff") || exit 1
note "2 workers, --no-handoff:       ${T2R} s"
T2=$(run two "--device cuda:0;--device cuda:1") || exit 1
note "2 workers, NCCL hand-off:      ${T2} s"
RECEIVED=$(grep -o '"message":"received from[^"]*"' "$OUT/two.logs/events.json" | wc -l)
REPLAYED=$(grep -o '"message":"replay:[^"]*"' "$OUT/two.logs/events.json" | sort | uniq -c)
note "stages that received their input: $RECEIVED; replays: ${REPLAYED:-none}"
note "speedup 2 workers (hand-off) vs 1: $(awk -v a="$T1" -v b="$T2" 'BEGIN { printf "%.2f", a / b }')x (target >= 1.8x)"
note "speedup 2 workers (replay) vs 1:   $(awk -v a="$T1" -v b="$T2R" 'BEGIN { printf "%.2f", a / b }')x"
same=yes
for f in $(cd "$OUT/one" && find . -type f | sort); do
  cmp -s "$OUT/one/$f" "$OUT/two/$f" || { same=no; note "differs: $f"; }
  cmp -s "$OUT/one/$f" "$OUT/two-replay/$f" || { same=no; note "differs (replay run): $f"; }
done
[[ $(cd "$OUT/one" && find . -type f | wc -l) == $(cd "$OUT/two" && find . -type f | wc -l) ]] || same=no
note "artifacts byte-identical: $same"
