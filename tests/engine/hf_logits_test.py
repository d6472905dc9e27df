#!/usr/bin/env python3
"""Our layer forward against HF transformers on tiny-llama.

`qctl eval --logits-out` writes the logits of the first eval chunk (512 tokens,
[BOS] + the text's first tokens). transformers, loading the same checkpoint in
float32, runs the same ids; both compute in float32 from the same fp16 weights,
so they agree to float32 round-off accumulated over 4 layers. Tolerance: max
|diff| <= 1e-3 on logits of magnitude ~10, and identical argmax everywhere.

--as runs the same comparison on a checkpoint made from the model
(tests/interop/checkpoints.py): qwen2 (q/k/v biases, RoPE base 1e6; transformers
loads it as Qwen2ForCausalLM), qwen2-tied (the same with its head tied to the
input embeddings, as the small Qwen2 models ship), llama3-rope (Llama 3.1's
RoPE scaling with a 32-token original context, so that the 512-token chunk
runs through all three of its bands).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import checkpoints  # noqa: E402

MAX_ABS = 1e-3

# --as: the checkpoint made from --model.
MAKERS = {
    "qwen2": checkpoints.make_qwen2,
    "qwen2-tied": lambda model, out: checkpoints.make_qwen2(model, out, tie_embeddings=True),
    "llama3-rope": checkpoints.make_llama3_rope,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--as", dest="as_", choices=sorted(MAKERS), help="compare on this checkpoint made from --model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.as_:
            args.model = MAKERS[args.as_](args.model, f"{tmp}/{args.as_}")
        out = f"{tmp}/logits.safetensors"
        res = subprocess.run([args.qctl, "eval", "--model", args.model, "--text", args.text,
                              "--seqlen", "512", "--max-chunks", "2", "--json", "--logits-out", out],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return 1
        ours = load_file(out)
        tokens = ours["tokens"].long().unsqueeze(0)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            ref = model(tokens).logits[0]
    diff = (ref - ours["logits"]).abs().max().item()
    agree = (ref.argmax(-1) == ours["logits"].argmax(-1)).float().mean().item()
    print(json.dumps({"model": type(model).__name__, "rope": model.config.rope_parameters, "max_abs_diff": diff,
                      "argmax_agreement": agree, "tolerance": MAX_ABS}))
    if diff > MAX_ABS or agree < 1.0:
        print(f"FAIL: logits differ from transformers (max |diff| {diff:.3g} > {MAX_ABS} or argmax {agree:.4f} < 1)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
