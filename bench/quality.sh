#!/usr/bin/env bash
# bench/quality.sh: quality of every method on tiny-llama, the README's table.
# Calibration 128 x 512 from data/calib.txt (seed 0); eval on
# data/books-heldout.txt, 512 tokens x 256 chunks. FP16 is measured in the
# same run and every row prints its delta against it.
#   bench/quality.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/build}/bin
OUT=${2:-$ROOT/out/quality}
MODEL=$ROOT/models/tiny-llama
TEXT=$ROOT/data/books-heldout.txt
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

evaluate() {  # NAME DIR QUANT_JSON
  local e
  e=$("$BIN/qctl" eval --model "$2" --text "$TEXT" --seqlen 512 --max-chunks 256 --json 2>/dev/null)
  echo "{\"name\": \"$1\", \"eval\": $e, \"quant\": ${3:-null}}" >> "$RESULTS"
}

evaluate fp16 "$MODEL" null
# name | method | bits | extra flags | format
CONFIGS=(
  "rtn-w4|rtn|4||gptq"
  "gptq-w4|gptq|4||gptq"
  "gptq-w4-actorder|gptq|4|--act-order|gptq"
  "awq-w4|awq|4||awq"
  "rtn-w3|rtn|3||gptq"
  "gptq-w3|gptq|3||gptq"
  "awq-w3|awq|3||gptq"
)
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name method bits extra format <<< "$c"
  q=$("$BIN/qctl" quantize --model "$MODEL" --method "$method" --bits "$bits" --group-size 128 $extra \
        --calib "$ROOT/data/calib.txt" --samples 128 --seqlen 512 --seed 0 \
        --format "$format" --out "$OUT/$name" --json 2>/dev/null)
  evaluate "$name" "$OUT/$name" "$q"
done

"$ROOT/.venv/bin/python" - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fp16 = rows[0]["eval"]["ppl"]
print(f"{'method':<10} {'bits':>4} {'flags':<10} {'ppl':>8} {'delta':>8} {'quantize':>10}")
print(f"{'fp16':<10} {16:>4} {'':<10} {fp16:>8.2f} {'':>8} {'':>10}")
for r in rows[1:]:
    q, e = r["quant"], r["eval"]
    flags = "act-order" if "actorder" in r["name"] else ""
    print(f"{q['method']:<10} {q['bits']:>4} {flags:<10} {e['ppl']:>8.2f} {e['ppl'] - fp16:>+8.2f} {q['seconds']:>9.1f}s")
print(f"\ntiny-llama, group size 128, calib 128x512 (seed 0), books-heldout 512 x {rows[0]['eval']['chunks']} chunks")
PY
