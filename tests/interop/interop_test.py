#!/usr/bin/env python3
"""End to end: qforge artifacts load in HF transformers and give our logits.

For each row of CASES: `qctl quantize` writes an artifact of tiny-llama,
`qctl eval --logits-out` records the logits our engine computes with it, and
check_artifact.py loads the artifact through transformers + gptqmodel (their
unpacking, not ours) and compares. Any failing case fails the test. The
qwen2- case quantizes a Qwen2 checkpoint made from tiny-llama
(checkpoints.py: q/k/v biases, RoPE base 1e6), which transformers loads
as a GPTQ Qwen2ForCausalLM, biases from the artifact; the llama3rope- case
tiny-llama with Llama 3.1's RoPE scaling (checkpoints.py), whose config the
artifact must carry for transformers to compute the same rotations.

--case NAME runs one row: ctest runs each row as its own test,
interop_transformers.NAME, so that the rows spread over the CPUs.

Exit 77 (ctest: skipped) when gptqmodel / optimum are not installed in this
Python, so a machine without the interop packages still runs everything else.
"""
import importlib.util
import os
import sys
import tempfile

import checkpoints
import qctl_runs

SKIP = 77

# name, qctl quantize flags. Kept to layouts whose zero points are >= 1 in
# practice at these settings (GPTQ v1 cannot store a zero of 0 for other
# readers: kernels/ref/pack.h).
CASES = [
    ("gptq-4bit-g128-actorder-sym", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--act-order", "--sym"]),
    ("gptq-3bit-g128", ["--method", "gptq", "--bits", "3", "--group-size", "128"]),
    ("awq-4bit-g128", ["--method", "awq", "--format", "awq", "--bits", "4", "--group-size", "128"]),
    ("qwen2-gptq-4bit-g128-sym", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--sym"]),
    ("llama3rope-gptq-4bit-g128", ["--method", "gptq", "--bits", "4", "--group-size", "128"]),
]


def main():
    args = qctl_runs.parse_args([name for name, _ in CASES])
    missing = [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed in {sys.executable}")
        return SKIP
    check = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_artifact.py")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in CASES:
            if name not in args.cases:
                continue
            art, logits = f"{tmp}/{name}", f"{tmp}/{name}.logits.safetensors"
            ok = qctl_runs.quantize_and_eval(args, art, logits, flags, checkpoints.for_case(name, args.model, tmp))
            if ok:
                res = qctl_runs.run([sys.executable, check, art, "--logits", logits])
                keep = ("consumer:", "gptq ", "awq ", "PASS", "FAIL")
                print(f"[{name}] " + " | ".join(l for l in res.stdout.splitlines() if l.startswith(keep)))
                ok = res.returncode == 0
            if not ok:
                failed.append(name)
    print(f"{len(args.cases) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
