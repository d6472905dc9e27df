#!/usr/bin/env python3
"""Checks a qforge artifact with an independent consumer: HF transformers.

The artifact directory is loaded with `AutoModelForCausalLM.from_pretrained`,
which reads config.json's quantization_config and hands the packed tensors to
gptqmodel's own CPU modules (GPTQ v1: `TorchLinear`, which converts v1 zeros
to its v2 form; AWQ GEMM: `AwqTorchLinear`). Those modules unpack and
dequantize with their code, not ours. The model then runs the token ids
stored in FILE, and its logits are compared with the ones qforge computed.

FILE is a safetensors file with
    tokens  int32   [T]          token ids, run as one sequence
    logits  float32 [T, vocab]   what qforge's engine computed for them
as written by `qctl eval --model ARTIFACT --logits-out FILE`.

Pass: max |logits diff| <= --atol (default 2e-2) and argmax agreement >=
--min-argmax (default 0.99). The consumer runs in float32 on the CPU, so most
of the allowed difference is for fp16 rounding inside the consumer's dequant
and for the reference engine's own arithmetic.

Exit status: 0 pass, 1 mismatch, 2 bad input or missing consumer packages.

Needs, in the Python that runs it: torch, transformers, safetensors, plus
gptqmodel and optimum (and their small pure-Python dependencies).

    .venv/bin/python tests/interop/check_artifact.py out/tiny-gptq --logits out/tiny.logits.safetensors
"""

import argparse
import json
import os
import sys

EXIT_MISMATCH = 1
EXIT_SETUP = 2

# gptqmodel's pure-torch CPU kernels: no JIT build of a C++ extension at load.
BACKENDS = {"gptq": "torch", "awq": "torch_awq"}


def fail_setup(msg):
    print(f"check_artifact: {msg}", file=sys.stderr)
    sys.exit(EXIT_SETUP)


def read_quantization_config(art):
    path = os.path.join(art, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail_setup(f"{path}: cannot read: {e}")
    qc = cfg.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") not in BACKENDS:
        fail_setup(f"{path}: quantization_config.quant_method must be one of {sorted(BACKENDS)}")
    return cfg, qc


def read_reference(path, torch):
    from safetensors.torch import load_file

    try:
        ref = load_file(path)
    except Exception as e:  # safetensors raises several types for bad files
        fail_setup(f"{path}: cannot read safetensors: {e}")
    tokens, logits = ref.get("tokens"), ref.get("logits")
    if tokens is None or tokens.dtype != torch.int32 or tokens.dim() != 1 or tokens.numel() == 0:
        fail_setup(f"{path}: tensor 'tokens' must be int32 [T] with T > 0")
    if logits is None or logits.dtype != torch.float32 or tuple(logits.shape[:1]) != (tokens.numel(),) \
            or logits.dim() != 2:
        fail_setup(f"{path}: tensor 'logits' must be float32 [{tokens.numel()}, vocab]")
    return tokens.long(), logits


def load_consumer_model(art, qc, num_layers, torch):
    try:
        import gptqmodel  # noqa: F401  (transformers dispatches to it)
        import optimum  # noqa: F401
        from transformers import AutoModelForCausalLM, AwqConfig, GPTQConfig
    except ImportError as e:
        fail_setup(f"consumer packages missing ({e}); install gptqmodel and optimum (see the setup script)")
    method = qc["quant_method"]
    # Only the loading attributes (backend) of this config are used; the rest
    # comes from the artifact's config.json.
    override = (AwqConfig if method == "awq" else GPTQConfig)(bits=qc.get("bits", 4), backend=BACKENDS[method])
    model = AutoModelForCausalLM.from_pretrained(art, device_map="cpu", dtype=torch.float32,
                                                 quantization_config=override).eval()
    # Every decoder linear must be the consumer's quantized module, else the
    # comparison would say nothing about our packing.
    quantized = [n for n, m in model.named_modules() if type(m).__module__.startswith("gptqmodel.")]
    if len(quantized) != 7 * num_layers:
        fail_setup(f"{art}: expected {7 * num_layers} gptqmodel linears, the loaded model has {len(quantized)}")
    print(f"consumer: transformers + gptqmodel {gptqmodel.__version__}, "
          f"{type(model.model.layers[0].self_attn.q_proj).__name__} x {len(quantized)}")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="artifact directory written by qforge")
    ap.add_argument("--logits", required=True, help="safetensors with 'tokens' int32 [T] and 'logits' f32 [T, V]")
    ap.add_argument("--atol", type=float, default=2e-2, help="max allowed |logits diff| (default 2e-2)")
    ap.add_argument("--min-argmax", type=float, default=0.99,
                    help="min fraction of positions with the same argmax (default 0.99)")
    args = ap.parse_args()

    import torch

    cfg, qc = read_quantization_config(args.artifact)
    tokens, ref = read_reference(args.logits, torch)
    if ref.shape[1] != cfg.get("vocab_size"):
        fail_setup(f"{args.logits}: logits have {ref.shape[1]} columns, config.json vocab_size is {cfg.get('vocab_size')}")
    model = load_consumer_model(args.artifact, qc, cfg["num_hidden_layers"], torch)
    with torch.no_grad():
        out = model(tokens[None]).logits[0].float()
    diff = (out - ref).abs()
    max_diff = diff.max().item()
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    where = divmod(int(diff.argmax().item()), ref.shape[1])
    print(f"{qc['quant_method']} {qc.get('bits')}-bit g{qc.get('group_size')}: T={tokens.numel()} "
          f"max|diff|={max_diff:.3e} (pos {where[0]}, token {where[1]}) mean|diff|={diff.mean().item():.3e} "
          f"argmax agreement={agree:.4f}")
    ok = max_diff <= args.atol and agree >= args.min_argmax
    print(f"{'PASS' if ok else 'FAIL'}: tolerance atol={args.atol}, argmax >= {args.min_argmax}")
    return 0 if ok else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
