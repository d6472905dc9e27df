#!/usr/bin/env bash
# scripts/demo.sh: the main job on the bundled tiny model, embedded mode.
# Sets up and builds (scripts/setup.sh), quantizes models/tiny-llama with GPTQ
# 4-bit group 128 (calibration 128 x 512 from data/calib.txt), evaluates the
# FP16 model and the artifact on data/books-heldout.txt (512 tokens x 256
# chunks), and prints the table.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
BIN=${QF_BUILD_DIR:-$ROOT/build}/bin
OUT=${QF_DEMO_OUT:-$ROOT/out}
MODEL=$ROOT/models/tiny-llama
mkdir -p "$OUT"

quant=$("$BIN/qctl" quantize --model "$MODEL" --method gptq --bits 4 --group-size 128 \
  --calib "$ROOT/data/calib.txt" --samples 128 --seqlen 512 --seed 0 \
  --format gptq --out "$OUT/tiny-llama-gptq-w4g128" --json)

fp16=$("$BIN/qctl" eval --model "$MODEL" --text "$ROOT/data/books-heldout.txt" --seqlen 512 --max-chunks 256 --json)
q=$("$BIN/qctl" eval --model "$OUT/tiny-llama-gptq-w4g128" --text "$ROOT/data/books-heldout.txt" --seqlen 512 --max-chunks 256 --json)

"$ROOT/.venv/bin/python" - "$fp16" "$q" "$quant" <<'PY'
import json, sys
fp16, q, quant = (json.loads(a) for a in sys.argv[1:4])
qtime = quant['seconds']
print()
print(f"{'model':<28} {'ppl':>8} {'delta':>8} {'quantize':>10}")
print(f"{'tiny-llama fp16':<28} {fp16['ppl']:>8.2f} {'':>8} {'':>10}")
d = q['ppl'] - fp16['ppl']
print(f"{'gptq w4 g128':<28} {q['ppl']:>8.2f} {d:>+8.2f} {qtime:>9.1f}s")
print(f"\nbooks-heldout, seqlen 512, {q['chunks']} chunks, {q['tokens']} predicted tokens")
PY
