"""What the interop scripts share: the command line they take and the qctl
runs that make an artifact of tiny-llama and record our engine's logits on it.

    args = qctl_runs.parse_args()
    ok = qctl_runs.quantize_and_eval(args, art, logits, ["--method", "gptq", "--bits", "4"])
"""
import argparse
import subprocess
import sys


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--text", required=True)
    return ap.parse_args()


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
