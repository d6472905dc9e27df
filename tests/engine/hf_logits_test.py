#!/usr/bin/env python3
"""Our layer forward against HF transformers on tiny-llama.

`qctl eval --logits-out` writes the logits of the first eval chunk (512 tokens,
[BOS] + the text's first tokens). transformers, loading the same checkpoint in
float32, runs the same ids; both compute in float32 from the same fp16 weights,
so they agree to float32 round-off accumulated over 4 layers. Tolerance: max
|diff| <= 1e-3 on logits of magnitude ~10, and identical argmax everywhere.

--as-qwen2 runs the same comparison on a Qwen2 checkpoint made from the model
(tests/interop/qwen2_checkpoint.py: q/k/v biases, RoPE base 1e6), which
transformers loads as Qwen2ForCausalLM; --tie-embeddings makes it tie its head
to the input embeddings, as the small Qwen2 models do.
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
import qwen2_checkpoint  # noqa: E402

MAX_ABS = 1e-3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--as-qwen2", action="store_true", help="compare on a Qwen2 checkpoint made from --model")
    ap.add_argument("--tie-embeddings", action="store_true", help="with --as-qwen2: no lm_head, tied embeddings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.as_qwen2:
            args.model = qwen2_checkpoint.make_qwen2(args.model, f"{tmp}/qwen2", args.tie_embeddings)
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
    print(json.dumps({"model": type(model).__name__, "max_abs_diff": diff, "argmax_agreement": agree,
                      "tolerance": MAX_ABS}))
    if diff > MAX_ABS or agree < 1.0:
        print(f"FAIL: logits differ from transformers (max |diff| {diff:.3g} > {MAX_ABS} or argmax {agree:.4f} < 1)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
