#!/usr/bin/env bash
# bench/cluster_verify_gpu.sh: a cluster job with the verify stage on a GPU.
# Starts a local qcoordinator and one qworker per entry of DEVICES, submits
# MODEL (GPTQ w4 g128) with `qctl submit --verify`, watches it to the end and
# prints what the worker's verify stage reported (verify.json next to the
# artifact): the linear checks, the fused kernel against cuBLAS on the model's
# own shapes, perplexity through the fused path when VERIFY_TEXT is set.
# KILL_VERIFIER=1 kills -9 the worker that leases the verify stage (needs two
# DEVICES entries): the other one must verify.
#
#   bench/cluster_verify_gpu.sh [BUILD_DIR]     env: OUT (default out/cluster_verify),
#       MODEL (models/tiny-llama), CALIB (data/calib.txt; none for synthetic:),
#       SAMPLES (32), SEQLEN (256), VERIFY_TEXT, VERIFY_DTYPE (fp16),
#       DEVICES ("cuda:0"; ";"-separated, one worker each), KILL_VERIFIER (0)
#
# BUILD_DIR: a CUDA build (-DQF_CUDA=ON, services on) with qcoordinator, qworker,
# qctl and qf_engine.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
OUT=${OUT:-$ROOT/out/cluster_verify}
MODEL=${MODEL:-$ROOT/models/tiny-llama}
CALIB=${CALIB-$ROOT/data/calib.txt}
SAMPLES=${SAMPLES:-32}
SEQLEN=${SEQLEN:-256}
VERIFY_TEXT=${VERIFY_TEXT:-}
VERIFY_DTYPE=${VERIFY_DTYPE:-fp16}
DEVICES=${DEVICES:-cuda:0}
KILL_VERIFIER=${KILL_VERIFIER:-0}
BIN=$BUILD/bin
PY=${QF_PYTHON:-$(command -v python3)}
rm -rf "$OUT"; mkdir -p "$OUT/logs"
SUMMARY=$OUT/summary.txt
note() { echo "$*" | tee -a "$SUMMARY"; }
for b in qcoordinator qworker qctl; do
  [[ -x "$BIN/$b" ]] || { note "missing $BIN/$b (cmake -DQF_CUDA=ON ...; ninja qcoordinator qworker qctl qf_engine)"; exit 1; }
done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee -a "$SUMMARY"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

"$BIN/qcoordinator" --listen 127.0.0.1:0 --state "$OUT/state" --lease-ttl-ms 20000 --renew-interval-ms 2000 \
    > "$OUT/logs/coordinator.log" 2>&1 &
PIDS+=($!)
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$OUT/logs/coordinator.log" | head -1)
  [[ -n "$port" ]] && break; sleep 0.1
done
[[ -n "$port" ]] || { note "coordinator did not start"; cat "$OUT/logs/coordinator.log"; exit 1; }
TARGET=127.0.0.1:$port
declare -A WPID
i=0
IFS=';' read -ra devs <<< "$DEVICES"
for d in "${devs[@]}"; do
  "$BIN/qworker" --coordinator "$TARGET" --name "w$i" --device "$d" > "$OUT/logs/worker$i.log" 2>&1 &
  WPID[w$i]=$!; PIDS+=($!); i=$((i + 1))
done

args=(--model "$MODEL" --method gptq --bits 4 --group-size 128 --seed 0 --out "$OUT/artifact"
      --verify --verify-dtype "$VERIFY_DTYPE")
[[ "$MODEL" == synthetic:* ]] || args+=(--calib "$CALIB" --samples "$SAMPLES" --seqlen "$SEQLEN")
[[ "$MODEL" == synthetic:* ]] && args+=(--samples "$SAMPLES" --seqlen "$SEQLEN")
[[ -n "$VERIFY_TEXT" ]] && args+=(--verify-text "$VERIFY_TEXT" --verify-seqlen 512 --verify-max-chunks 64)
t0=$(date +%s.%N)
job=$("$BIN/qctl" submit --coordinator "$TARGET" "${args[@]}" 2> "$OUT/logs/submit.err" | tail -1)
[[ "$job" == job-* ]] || { note "submit failed: $(cat "$OUT/logs/submit.err")"; exit 1; }
killed=""
"$BIN/qctl" watch "$job" --coordinator "$TARGET" 2>&1 | while IFS= read -r line; do
  echo "$line" >> "$OUT/logs/watch.log"
  if [[ "$KILL_VERIFIER" == 1 && -z "$killed" && "$line" == *"STAGE_LEASED"*": attempt "*", verify"* ]]; then
    victim=$(sed -n 's/.* worker \(w[0-9]*\) .*/\1/p' <<< "$line")
    kill -9 "${WPID[$victim]}" && killed=$victim && echo "killed $victim (it had leased the verify stage)" >> "$OUT/logs/watch.log"
  fi
done
t1=$(date +%s.%N)
"$BIN/qctl" status "$job" --coordinator "$TARGET" > "$OUT/logs/status.txt" 2>&1
"$BIN/qctl" logs "$job" --coordinator "$TARGET" > "$OUT/logs/events.txt" 2>&1
note "model $MODEL, devices $DEVICES, verify dtype $VERIFY_DTYPE: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
grep -E "killed|LEASE_EXPIRED|VERIFYING|VERIFIED|SUCCEEDED|FAILED" "$OUT/logs/watch.log" | tee -a "$SUMMARY"
tee -a "$SUMMARY" < "$OUT/logs/status.txt"
[[ -f "$OUT/artifact/verify.json" ]] || { note "no verify.json"; exit 1; }
"$PY" - "$OUT/artifact/verify.json" <<'PY' | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
c = r["linear_checks"]
print(f"verdict {r['verdict']} on {r['device']} ({r['dtype']}): {c['ok']} ok, {c['failed']} failed, "
      f"{c['unsupported']} unsupported, max rel err {c['max_rel_err']}")
t = r["throughput"]
if t.get("measured"):
    for s in t["shapes"]:
        if "speedup" in s:
            print(f"  K {s['k']:6} N {s['n']:6} M {s['m']:4}  fused {s['fused_us']:8.1f} us  cuBLAS {s['cublas_us']:8.1f} us"
                  f"  {s['speedup']:5.2f}x  {s['variant']}  ({s['linears']})")
else:
    print("  throughput:", t.get("note"))
p = r["perplexity"]
print("  perplexity:", f"fused {p['fused']:.4f} vs dequantized {p['dequant']:.4f}, rel diff {p['rel_diff']:.1e}"
      if p.get("measured") else p.get("note"))
PY
