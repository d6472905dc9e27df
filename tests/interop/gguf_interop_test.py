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
    sentencepiece does with the artifact's tokenizer.model, or, for the cases
    whose tiny-llama carries a byte-level BPE fixture tokenizer.json instead
    (tests/tokenizer/data/bpe-llama3, bpe-gpt2, bpe-qwen2), as the tokenizers package does
    with that file; for those gguf also reads the file's "gpt2" vocabulary back
    (tokens, token types, merges, pre-tokenizer, BOS/EOS), which must equal
    tokenizer.json's;
  - if llama-cpp-python is installed, llama.cpp itself loads the file and runs
    the tokens (looser bounds: it rounds activations to 8 bits in its
    quantized dot products), and for the BPE cases its tokenizer encodes the
    held-out lines as the tokenizers package does.

The Qwen2 case quantizes a Qwen2 checkpoint made from tiny-llama
(checkpoints.py: q/k/v biases, RoPE base 1e6) with the Qwen2 fixture
tokenizer (NFC normalizer, no BOS): llama.cpp's `qwen2` architecture, biases
and all.

Exit 77 (ctest: skipped) when gguf or transformers is missing in this Python.
"""
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import checkpoints
import qctl_runs

SKIP = 77

# name, qctl quantize flags, the GGUF block type of the linears, the tokenizer: None keeps
# tiny-llama's sentencepiece tokenizer.model; a fixture of BPE_FIXTURES replaces it with that
# byte-level BPE tokenizer.json and tokenizer_config.json.
CASES = [
    ("gptq-4bit-g128-sym", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--sym"], "Q4_0", None),
    ("awq-4bit-g128", ["--method", "awq", "--format", "awq", "--bits", "4", "--group-size", "128"], "Q4_1", None),
    ("gptq-8bit-g32-sym", ["--method", "gptq", "--bits", "8", "--group-size", "32", "--sym"], "Q8_0", None),
    ("gptq-4bit-g128-sym-bpe-llama3", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--sym"], "Q4_0",
     "bpe-llama3"),
    ("rtn-4bit-g128-sym-bpe-gpt2", ["--method", "rtn", "--bits", "4", "--group-size", "128", "--sym"], "Q4_0",
     "bpe-gpt2"),
    ("qwen2-gptq-4bit-g128-sym-bpe-qwen2", ["--method", "gptq", "--bits", "4", "--group-size", "128", "--sym"],
     "Q4_0", "bpe-qwen2"),
]
BPE_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer", "data")
# tokenizer.ggml.pre of each fixture, as llama.cpp names its split pattern.
BPE_PRE = {"bpe-llama3": "llama-bpe", "bpe-gpt2": "gpt-2", "bpe-qwen2": "qwen2"}
ATOL, MIN_ARGMAX = 2e-2, 0.99
LLAMA_CPP_ATOL, LLAMA_CPP_MIN_ARGMAX = 0.5, 0.9


def compare(name, consumer, out, ref, atol, min_argmax):
    diff = (out - ref).abs()
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    ok = diff.max().item() <= atol and agree >= min_argmax
    print(f"[{name}] {consumer}: max|diff|={diff.max().item():.3e} mean|diff|={diff.mean().item():.3e} "
          f"argmax agreement={agree:.4f} -> {'PASS' if ok else 'FAIL'} (atol {atol}, argmax >= {min_argmax})")
    return ok


def model_with_bpe(model, fixture, tmp):
    """A copy of model whose tokenizer.model is replaced by the BPE fixture's files."""
    out = os.path.join(tmp, f"model-{fixture}")
    os.makedirs(out)
    for f in os.listdir(model):
        if f != "tokenizer.model":
            shutil.copy(os.path.join(model, f), out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(BPE_FIXTURES, fixture, f), out)
    return out


def held_out_lines(text):
    with open(text, encoding="utf-8") as f:
        return [l.strip() for l in f.read().splitlines() if l.strip()][:200]


def check_spm_tokenizer(name, art, tok, text):
    """transformers' tokenizer from the file encodes as sentencepiece does with tokenizer.model."""
    import sentencepiece
    spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(art, "tokenizer.model"))
    lines = held_out_lines(text)
    bad = [l for l in lines if tok.encode(l, add_special_tokens=False) != spm.encode(l)]
    print(f"[{name}] tokenizer: {len(lines) - len(bad)} of {len(lines)} lines encode as sentencepiece does")
    return not bad


def expected_gpt2_vocab(art, n_vocab):
    """tokens, token types, merges, BOS and EOS ids of a gpt2 GGUF vocabulary, from the artifact's
    tokenizer.json and tokenizer_config.json as llama.cpp's converter writes them; and the added
    tokens that tokenizer.json's normalizer (Qwen2's NFC) rewrites."""
    with open(os.path.join(art, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    normalized = {a["content"] for a in j["added_tokens"] if j.get("normalizer") and a.get("normalized")}
    tokens = {i: t for t, i in j["model"]["vocab"].items()}
    types = {i: 1 for i in tokens}
    for a in j["added_tokens"]:
        tokens[a["id"]], types[a["id"]] = a["content"], 3 if a["special"] else 4
    n = len(tokens)
    tokens = [tokens[i] for i in range(n)] + [f"[PAD{i}]" for i in range(n, n_vocab)]
    types = [types[i] for i in range(n)] + [5] * (n_vocab - n)
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    with open(os.path.join(art, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    ids = [None if config.get(k) is None else
           tokens.index(config[k] if isinstance(config[k], str) else config[k]["content"])
           for k in ("bos_token", "eos_token")]
    return tokens, types, merges, ids, normalized


def check_bpe_tokenizer(name, art, reader, tok, fixture, text):
    """The file's gpt2 vocabulary, read back with gguf, is tokenizer.json's; transformers' tokenizer
    from the file encodes as the tokenizers package does with tokenizer.json."""
    import tokenizers

    def field(key):
        f = reader.get_field(key)
        return None if f is None else f.contents()

    tokens = field("tokenizer.ggml.tokens")
    want_tokens, want_types, want_merges, want_ids, normalized = expected_gpt2_vocab(art, len(tokens))
    got = {"model": field("tokenizer.ggml.model"), "pre": field("tokenizer.ggml.pre"), "tokens": tokens,
           "types": field("tokenizer.ggml.token_type"), "merges": field("tokenizer.ggml.merges"),
           "scores": field("tokenizer.ggml.scores"),
           "ids": [field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")]}
    want = {"model": "gpt2", "pre": BPE_PRE[fixture], "tokens": want_tokens, "types": want_types,
            "merges": want_merges, "scores": None, "ids": want_ids}
    differ = [k for k in want if got[k] != want[k]]
    print(f"[{name}] gguf vocabulary: {len(tokens)} tokens, {len(got['merges'] or [])} merges, pre "
          f"{got['pre']!r}: {'differs in ' + ', '.join(differ) if differ else 'as tokenizer.json'}")

    # llama.cpp's llama-bpe pre-tokenizer type takes a pre-token that is in the vocabulary whole
    # (tokenizers' ignore_merges, which Llama 3's tokenizer.json sets); the GGUF format has no key
    # for it and transformers' GGUF tokenizer builder leaves it off, so it is set here as llama.cpp does.
    ref = tokenizers.Tokenizer.from_file(os.path.join(art, "tokenizer.json"))
    added = [t for t, kind in zip(want_tokens, want_types) if kind in (3, 4)]
    # An added token that tokenizer.json's normalizer (Qwen2's NFC) rewrites matches only normalized
    # text there; GGUF consumers do not normalize (the export's NFC caveat), so it is left out.
    if normalized:
        print(f"[{name}] left out of the added-token line: {sorted(normalized)!r} (normalized by tokenizer.json)")
    lines = held_out_lines(text) + [" and ".join(t for t in added if t not in normalized)]  # they stay whole
    encode = lambda l: tok.encode(l, add_special_tokens=False)
    as_built = sum(encode(l) == ref.encode(l, add_special_tokens=False).ids for l in lines)
    tok.backend_tokenizer.model.ignore_merges = BPE_PRE[fixture] == "llama-bpe"
    bad = [l for l in lines if encode(l) != ref.encode(l, add_special_tokens=False).ids]
    print(f"[{name}] tokenizer: {len(lines) - len(bad)} of {len(lines)} lines encode as tokenizers does with "
          f"tokenizer.json ({as_built} before ignore_merges was set as llama.cpp sets it)")
    return not differ and not bad


def check_case(name, art, gguf_path, block_type, logits_path, text, fixture):
    import gguf
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reader = gguf.GGUFReader(gguf_path)
    linears = [t for t in reader.tensors
               if t.name.startswith("blk.") and t.name.endswith(".weight") and "norm" not in t.name]
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
    if fixture is None:
        ok = check_spm_tokenizer(name, art, tok, text) and ok
    else:
        ok = check_bpe_tokenizer(name, art, reader, tok, fixture, text) and ok

    if importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp
        llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=len(tokens), logits_all=True, verbose=False)
        llm.eval(tokens.tolist())
        out = torch.tensor(llm.scores[: len(tokens)], dtype=torch.float32)
        ok = compare(name, f"llama.cpp {llama_cpp.__version__}", out, ref_logits, LLAMA_CPP_ATOL,
                     LLAMA_CPP_MIN_ARGMAX) and ok
        if fixture is not None:
            ok = check_llama_cpp_bpe(name, art, llm, text) and ok
    return ok


def check_llama_cpp_bpe(name, art, llm, text):
    """llama.cpp's own tokenizer, built from the file's gpt2 vocabulary and pre-tokenizer name,
    encodes as the tokenizers package does with tokenizer.json."""
    import tokenizers
    ref = tokenizers.Tokenizer.from_file(os.path.join(art, "tokenizer.json"))
    lines = held_out_lines(text)
    bad = [l for l in lines
           if llm.tokenize(l.encode("utf-8"), add_bos=False, special=True) != ref.encode(l, add_special_tokens=False).ids]
    print(f"[{name}] llama.cpp tokenizer: {len(lines) - len(bad)} of {len(lines)} lines encode as tokenizers does")
    return not bad


def main():
    args = qctl_runs.parse_args([name for name, *_ in CASES])
    missing = [m for m in ("gguf", "transformers", "sentencepiece") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed in {sys.executable}")
        return SKIP
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags, block_type, fixture in CASES:
            if name not in args.cases:
                continue
            art, logits = f"{tmp}/{name}", f"{tmp}/{name}.logits.safetensors"
            first, second = f"{tmp}/{name}.gguf", f"{tmp}/{name}-again.gguf"
            model = checkpoints.for_case(name, args.model, tmp)
            model = model if fixture is None else model_with_bpe(model, fixture, tmp)
            ok = qctl_runs.quantize_and_eval(args, art, logits, flags, model)
            ok = ok and all(qctl_runs.run([args.qctl, "export", art, "--gguf", f]).returncode == 0 for f in (first, second))
            if ok:
                with open(first, "rb") as a, open(second, "rb") as b:
                    same = a.read() == b.read()
                print(f"[{name}] two exports {'identical' if same else 'DIFFER'}")
                ok = same and check_case(name, art, first, block_type, logits, args.text, fixture)
            if not ok:
                failed.append(name)
    print(f"{len(args.cases) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
