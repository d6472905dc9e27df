"""What the interop scripts share: the command line they take and the qctl
runs that make an artifact of tiny-llama and record our engine's logits on it.

    args = qctl_runs.parse_args([name for name, *_ in CASES])
    for name in args.cases: ...
    ok = qctl_runs.quantize_and_eval(args, art, logits, ["--method", "gptq", "--bits", "4"])
"""
import argparse
import subprocess
import sys


def parse_args(case_names):
    """The shared flags, plus --case NAME (repeatable; default: every case, in order) and
    --list-cases, which prints the names one per line and exits (CMake makes a test of each)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--list-cases", action="store_true", help="print the case names and exit")
    ap.add_argument("--case", action="append", choices=case_names, help="run only this case (repeatable)")
    for flag in ("--qctl", "--model", "--calib", "--text"):
        ap.add_argument(flag)
    args = ap.parse_args()
    if args.list_cases:
        print("\n".join(case_names))
        sys.exit(0)
    missing = [f"--{f}" for f in ("qctl", "model", "calib", "text") if getattr(args, f) is None]
    if missing:
        ap.error(f"the following arguments are required: {', '.join(missing)}")
    args.cases = [n for n in case_names if n in args.case] if args.case else list(case_names)
    return args


def run(cmd):
    """Runs cmd; on failure prints it with the tail of its output. Returns the CompletedProcess."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"FAILED ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-2000:]}{res.stderr[-4000:]}", file=sys.stderr)
    return res


def quantize_and_eval(args, art, logits, flags, model=None):
    """`qctl quantize` (16 x 128 calibration tokens) of model (default: args.model) into art, then
    `qctl eval --logits-out logits` over the first 128-token chunk of the text. True when both succeed."""
    return (run([args.qctl, "quantize", "--model", model or args.model, "--calib", args.calib, "--samples", "16",
                 "--seqlen", "128", "--out", art] + flags).returncode == 0 and
            run([args.qctl, "eval", "--model", art, "--text", args.text, "--seqlen", "128", "--max-chunks", "1",
                 "--logits-out", logits]).returncode == 0)
