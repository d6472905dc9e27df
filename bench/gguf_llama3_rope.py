#!/usr/bin/env python3
"""llama.cpp against our engine on Llama 3.1's RoPE scaling (rope_type llama3).

tiny-llama relabelled with llama3 RoPE scaling (tests/interop/checkpoints.py:
factor 8, low 1, high 4, and original_max_position_embeddings 32, so that the
scaling reaches most of tiny-llama's 32 frequency pairs within a 128-token
chunk) and the unscaled
tiny-llama are each quantized (GPTQ 4-bit g128 sym), evaluated with
`qctl eval --logits-out` and exported with `qctl export --gguf`. llama.cpp
(llama-cpp-python, on PYTHONPATH) runs the llama3 file, whose scaling it takes
from the rope_freqs.weight tensor only: its logits must match our engine's with
the llama3 scaling (as closely as on the unscaled files of
tests/interop/gguf_interop_test.py) and not the unscaled ones.

    PYTHONPATH=<llama-cpp-python site-packages> .venv/bin/python bench/gguf_llama3_rope.py build/bin/qctl
"""
import os
import subprocess
import sys
import tempfile

import llama_cpp
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
import checkpoints  # noqa: E402


def run(*cmd):
    res = subprocess.run(list(cmd), capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{res.stderr[-2000:]}")


def main():
    qctl = sys.argv[1] if len(sys.argv) > 1 else "build/bin/qctl"
    with tempfile.TemporaryDirectory() as tmp:
        scaled = checkpoints.make_llama3_rope("models/tiny-llama", f"{tmp}/llama3-rope")
        logits = {}
        for name, model in (("llama3", scaled), ("default", "models/tiny-llama")):
            art = f"{tmp}/art-{name}"
            run(qctl, "quantize", "--model", model, "--calib", "data/calib.txt", "--samples", "16", "--seqlen", "128",
                "--out", art, "--method", "gptq", "--bits", "4", "--group-size", "128", "--sym")
            run(qctl, "eval", "--model", art, "--text", "data/books-heldout.txt", "--seqlen", "128", "--max-chunks",
                "1", "--logits-out", f"{tmp}/{name}.safetensors")
            run(qctl, "export", art, "--gguf", f"{tmp}/{name}.gguf")
            logits[name] = load_file(f"{tmp}/{name}.safetensors")
        tokens = logits["llama3"]["tokens"].long()
        llm = llama_cpp.Llama(model_path=f"{tmp}/llama3.gguf", n_ctx=len(tokens), logits_all=True, verbose=False)
        llm.eval(tokens.tolist())
        ours = torch.tensor(llm.scores[: len(tokens)], dtype=torch.float32)
        for name in ("llama3", "default"):
            ref = logits[name]["logits"]
            diff = (ours - ref).abs()
            agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
            print(f"llama.cpp {llama_cpp.__version__} on the llama3-RoPE file against our engine with {name} RoPE: "
                  f"max|diff| {diff.max():.3f}, mean {diff.mean():.4f}, argmax agreement {agree:.4f}")


if __name__ == "__main__":
    main()
