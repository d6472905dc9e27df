#!/usr/bin/env python3
"""End to end: `qctl export --gguf` files load in independent GGUF readers.

For each row of CASES: `qctl quantize` writes an artifact of tiny-llama,
`qctl eval --logits-out` records the logits our engine computes with it, and
`qctl export --gguf` writes the GGUF file twice (the two must be identical).
Then, with code that is not ours:
  - gguf (llama.cpp's Python package) reads the file: every decoder linear
    must be of the case's block type;
  - transformers loads it (`from_pretrained(gguf_file=...)`: gguf's
    dequantization, transformers' own undoing of the q/k row order) and runs
    the tokens: logits within --atol of ours, argmax agreeing;
  - transformers' tokenizer built from the file's vocabulary encodes text as
    sentencepiece does with the artifact's tokenizer.model;
  - if llama-cpp-python is installed, llama.cpp itself loads the file and runs
    the tokens (looser bounds: it rounds activations to 8 bits in its
    quantized dot products).

Exit 77 (ctest: skipped) when gguf or transformers is missing in this Python.
"""
import importlib.metadata
import importlib.util
import os
import sys
import tempfile

import qctl_runs

SKIP = 77

# name, qctl quantize flags, the GGUF block type of the linears.
CASES = [
    ("gptq-4bit-g128-sym", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--sym"], "Q4_0"),
    ("awq-4bit-g128", ["--method", "awq", "--format", "awq", "--bits", "4", "--group-size", "128"], "Q4_1"),
    ("gptq-8bit-g32-sym", ["--method", "gptq", "--bits", "8", "--group-size", "32", "--sym"], "Q8_0"),
]
ATOL, MIN_ARGMAX = 2e-2, 0.99
LLAMA_CPP_ATOL, LLAMA_CPP_MIN_ARGMAX = 0.5, 0.9


def compare(name, consumer, out, ref, atol, min_argmax):
    diff = (out - ref).abs()
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    ok = diff.max().item() <= atol and agree >= min_argmax
    print(f"[{name}] {consumer}: max|diff|={diff.max().item():.3e} mean|diff|={diff.mean().item():.3e} "
          f"argmax agreement={agree:.4f} -> {'PASS' if ok else 'FAIL'} (atol {atol}, argmax >= {min_argmax})")
    return ok


def check_case(name, art, gguf_path, block_type, logits_path, text):
    import gguf
    import torch
    from safetensors.torch import load_file
    import sentencepiece
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reader = gguf.GGUFReader(gguf_path)
    linears = [t for t in reader.tensors if t.name.startswith("blk.") and "norm" not in t.name]
    types = sorted({t.tensor_type.name for t in linears})
    if len(linears) != 7 * 4 or types != [block_type]:
        print(f"[{name}] gguf: {len(linears)} linears of types {types}, expected 28 of {block_type}: FAIL")
        return False
    print(f"[{name}] gguf {importlib.metadata.version('gguf')}: {len(reader.tensors)} tensors, linears {block_type}")

    ref = load_file(logits_path)
    tokens, ref_logits = ref["tokens"].long(), ref["logits"]
    folder, file = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(tokens[None]).logits[0].float()
    ok = compare(name, "transformers", out, ref_logits, ATOL, MIN_ARGMAX)

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(art, "tokenizer.model"))
    with open(text, encoding="utf-8") as f:
        lines = [l.strip() for l in f.read().splitlines() if l.strip()][:200]
    bad = [l for l in lines if tok.encode(l, add_special_tokens=False) != spm.encode(l)]
    print(f"[{name}] tokenizer: {len(lines) - len(bad)} of {len(lines)} lines encode as sentencepiece does")
    ok = ok and not bad

    if importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp
        llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=len(tokens), logits_all=True, verbose=False)
        llm.eval(tokens.tolist())
        out = torch.tensor(llm.scores[: len(tokens)], dtype=torch.float32)
        ok = compare(name, f"llama.cpp {llama_cpp.__version__}", out, ref_logits, LLAMA_CPP_ATOL,
                     LLAMA_CPP_MIN_ARGMAX) and ok
    return ok


def main():
    args = qctl_runs.parse_args()
    missing = [m for m in ("gguf", "transformers", "sentencepiece") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed in {sys.executable}")
        return SKIP
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags, block_type in CASES:
            art, logits = f"{tmp}/{name}", f"{tmp}/{name}.logits.safetensors"
            first, second = f"{tmp}/{name}.gguf", f"{tmp}/{name}-again.gguf"
            ok = qctl_runs.quantize_and_eval(args, art, logits, flags)
            ok = ok and all(qctl_runs.run([args.qctl, "export", art, "--gguf", f]).returncode == 0 for f in (first, second))
            if ok:
                with open(first, "rb") as a, open(second, "rb") as b:
                    same = a.read() == b.read()
                print(f"[{name}] two exports {'identical' if same else 'DIFFER'}")
                ok = same and check_case(name, art, first, block_type, logits, args.text)
            if not ok:
                failed.append(name)
    print(f"{len(CASES) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
