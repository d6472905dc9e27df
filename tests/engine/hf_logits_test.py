#!/usr/bin/env python3
"""Our layer forward against HF transformers on tiny-llama.

`qctl eval --logits-out` writes the logits of the first eval chunk (512 tokens,
[BOS] + the text's first tokens). transformers, loading the same checkpoint in
float32, runs the same ids; both compute in float32 from the same fp16 weights,
so they agree to float32 round-off accumulated over 4 layers. Tolerance: max
|diff| <= 1e-3 on logits of magnitude ~10, and identical argmax everywhere.

--as-qwen2 runs the same comparison on a Qwen2 checkpoint made from the model:
its weights, plus q/k/v projection biases (seeded normal, std 0.2, the one
tensor family a Qwen2 layer has beyond Llama's), model_type qwen2 and a RoPE
base of 1e6 as Qwen2 ships; transformers loads it as Qwen2ForCausalLM.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

MAX_ABS = 1e-3


def make_qwen2(llama_dir, out_dir):
    """A Qwen2 checkpoint: the Llama one's tensors and tokenizer, plus q/k/v biases."""
    out = Path(out_dir)
    out.mkdir()
    src = Path(llama_dir)
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    cfg = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        for proj, rows in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
            bias = torch.randn(rows, generator=gen) * 0.2
            tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = bias.to(torch.float16)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for key in ("attention_bias", "mlp_bias", "head_dim", "pretraining_tp"):
        cfg.pop(key, None)
    cfg.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
                "sliding_window": None, "max_window_layers": cfg["num_hidden_layers"],
                "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qctl", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--as-qwen2", action="store_true", help="compare on a Qwen2 checkpoint made from --model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.as_qwen2:
            args.model = make_qwen2(args.model, f"{tmp}/qwen2")
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
