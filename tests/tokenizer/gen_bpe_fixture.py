#!/usr/bin/env python3
"""Writes the byte-level BPE fixtures of tests/tokenizer/data/: three small
HF tokenizer.json files trained with the Python `tokenizers` package on the
project's calibration text (plus SPACE_LINES), and bpe_expected.json, the ids
that package gives for them, so bpe_tokenizer_test can check our C++ path
without Python at test time.

  bpe-llama3/  Llama 3's layout: Split(Llama 3 regex, Isolated) + ByteLevel
               (use_regex false), ignore_merges true (and vocabulary entries
               that only it reaches), <|begin_of_text|> and <|end_of_text|>
               added after the trained vocabulary (not in it).
  bpe-gpt2/    GPT-2's layout: ByteLevel(use_regex true), <|endoftext|> in the
               trained vocabulary and added as special, plus non-special
               added tokens; tokenizer_config.json gives eos as an object.
  bpe-qwen2/   Qwen2's layout: NFC normalizer, Split(Qwen2 regex) + ByteLevel,
               no BOS (bos_token null), <|endoftext|> added, and one
               non-special added token written decomposed.

Run from the repository root after changing data/calib.txt,
data/books-heldout.txt or the strings below:

    .venv/bin/python tests/tokenizer/gen_bpe_fixture.py
"""
import collections
import hashlib
import json
import os
import struct

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, trainers

CALIB = "data/calib.txt"
HELDOUT = "data/books-heldout.txt"
OUT_DIR = "tests/tokenizer/data"
WHOLE_WORDS = 40  # bpe-llama3 vocabulary entries no merge builds (ignore_merges)
VOCAB_SIZE = 1500  # below tiny-llama's 8000 embeddings: the fixtures run through the model too

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Whitespace runs in every position, contractions, digit grouping, non-ASCII
# letters and symbols, Unicode spaces (\s in the HF regex engine), decomposed
# accents (NFC), special tokens inside text, and the empty string.
STRINGS = [
    "", " ", "   ", "hello   ", "  hello", "a   b", "a b", "x \n y", "\n", "\n\n\n", "\t\tfoo\t",
    "a\r\nb", "line one\n\n  line two\n", "end with newline and spaces\n   ", "  \n\n  x",
    "I'LL DON'T we've you'RE it's 'twas", "'s'S'\u017f",
    "1234567", "3.14159 and 1,000,000", "x1y22z333",
    "na\u00efve caf\u00e9", "\u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8", "\U0001F600\U0001F44D\U0001F3FD",
    "non\u00a0breaking\u00a0\u00a0space", "thin\u2009space\u2009\u2009x", "\u3000\u3000ideographic\u3000x",
    "a\u00a0", "\u2009", "\u00a0 \u00a0b", "a\u00a0\u00a0b", "a\u2009\u2009b", "a\u3000\u3000b",
    "a\u0085\u0085b", "a\u00a0\u00a0", "\u3000\u3000\u3000", "x\u2009\u2009\u2009\ny",
    "e\u0301te\u0301 A\u030a \u1100\u1161",
    "x<|end_of_text|>y", "<|begin_of_text|>Hello<|end_of_text|>", "hello  <|end_of_text|>  world",
    "<|end_of_text", "a<|endoftext|>b", "<|begin_of_text|><|begin_of_text|>",
    "say [[note]] twice[[note]]", "x[[note]]]y[[note]]]]", "ab<|endoftext|>", "ab<|x",
    "caf\u00e9! cafe\u0301!", "The quick brown fox jumps over the lazy dog.",
    "--- *** ... !!! ???", "\u00ab\u00a0Bonjour\u00a0\u00bb, dit-il.",
]
# Unicode whitespace runs, which the calibration text lacks, added to the
# training lines so the vocabularies hold tokens for them: then whether the
# regex treats U+00A0, U+2009, U+3000 and U+0085 as \s changes the ids.
SPACE_LINES = [f"word{sp * n}word" for sp in "\u00a0\u2009\u3000\u0085" for n in (1, 2, 3)] * 40
HELDOUT_LINES = 200
HELDOUT_BLOCK_CHARS = 4000
IGNORE_MERGES_LINES = 20


def ids_sha256(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_text(path):
    with open(path, "rb") as f:  # bytes decoded as is: no newline translation
        return f.read().decode("utf-8")


def train(pre_tokenizer, normalizer, trained_specials, calib):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=trained_specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(calib.split("\n") + SPACE_LINES, trainer)
    return tok


def with_model_fields(tok, **fields):
    j = json.loads(tok.to_str())
    j["model"].update(fields)
    return Tokenizer.from_str(json.dumps(j))


def split_then_bytes(pattern):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def with_whole_words(tok, text, count):
    """Appends to the vocabulary the `count` most frequent pre-tokens of `text`
    that it lacks, with no merge that builds them: as in Llama 3's vocabulary,
    only ignore_merges reaches them."""
    vocab = tok.get_vocab()
    freq = collections.Counter(p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text) if p not in vocab)
    j = json.loads(tok.to_str())
    for word, _ in freq.most_common(count):
        j["model"]["vocab"][word] = len(j["model"]["vocab"])
    return Tokenizer.from_str(json.dumps(j))


def build(calib, heldout):
    llama3 = train(split_then_bytes(LLAMA3_PATTERN), None, [], calib)
    llama3 = with_whole_words(llama3, heldout, WHOLE_WORDS)
    llama3 = with_model_fields(llama3, ignore_merges=True)
    llama3.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])

    gpt2 = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), None,
                 ["<|endoftext|>"], calib)
    # Non-special (normalized) added tokens: one a prefix of another (the
    # longest match wins), one overlapping a special token (special tokens,
    # not normalized, are cut out first).
    gpt2.add_tokens([AddedToken(t, special=False) for t in ("[[note]]", "[[note]]]", "ab<|")])

    qwen2 = train(split_then_bytes(QWEN2_PATTERN), normalizers.NFC(), [], calib)
    qwen2.add_special_tokens(["<|endoftext|>"])
    qwen2.add_tokens([AddedToken("cafe\u0301!", special=False)])  # matched in its NFC form
    return {
        "bpe-llama3": (llama3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}),
        "bpe-gpt2": (gpt2, {"bos_token": "<|endoftext|>",
                            "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>",
                                          "lstrip": False, "rstrip": False}}),
        "bpe-qwen2": (qwen2, {"bos_token": None, "eos_token": "<|endoftext|>"}),
    }


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def expected_for(tok, config, heldout, calib):
    lines = heldout.split("\n")
    numbered = [n for n, line in enumerate(lines) if line.strip()]
    picked = numbered[::max(1, len(numbered) // HELDOUT_LINES)][:HELDOUT_LINES]
    vocab = tok.get_vocab(with_added_tokens=True)

    def token_id(t):
        t = t["content"] if isinstance(t, dict) else t
        return -1 if t is None else vocab[t]

    out = {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "bos_id": token_id(config["bos_token"]),
        "eos_id": token_id(config["eos_token"]),
        "strings": [{"text": s, "ids": encode(tok, s)} for s in STRINGS],
        # Line n of the held-out file (split on "\n", counted from 0).
        "heldout_lines": [{"line": n, "ids": encode(tok, lines[n])} for n in picked],
        "heldout_block": {"chars": HELDOUT_BLOCK_CHARS,
                          "bytes": len(heldout[:HELDOUT_BLOCK_CHARS].encode("utf-8")),
                          "ids": encode(tok, heldout[:HELDOUT_BLOCK_CHARS])},
    }
    # Whole files, as calibration and eval encode them: count + SHA-256 of the
    # ids as int32 little-endian.
    for key, text in (("calib_all", calib), ("heldout_all", heldout)):
        ids = encode(tok, text)
        out[key] = {"count": len(ids), "sha256": ids_sha256(ids)}
    return out


def ignore_merges_effect(tok, heldout, picked_lines):
    """Held-out lines whose ids change when ignore_merges is off (the first
    IGNORE_MERGES_LINES): proof the fixture exercises the flag."""
    off = with_model_fields(tok, ignore_merges=False)
    lines = heldout.split("\n")
    out = []
    for n in picked_lines:
        if encode(off, lines[n]) != encode(tok, lines[n]):
            out.append({"line": n, "ids": encode(off, lines[n])})
    return out[:IGNORE_MERGES_LINES]


def main():
    calib = read_text(CALIB)
    heldout = read_text(HELDOUT)
    fixture = {"calib_sha256": sha256_file(CALIB), "heldout_sha256": sha256_file(HELDOUT)}
    for name, (tok, config) in build(calib, heldout).items():
        d = os.path.join(OUT_DIR, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
            f.write("\n")
        # Reloaded from the written file: the ids are those of the bytes we ship.
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        fixture[name] = expected_for(tok, config, heldout, calib)
    llama3 = Tokenizer.from_file(os.path.join(OUT_DIR, "bpe-llama3", "tokenizer.json"))
    picked = [l["line"] for l in fixture["bpe-llama3"]["heldout_lines"]]
    fixture["bpe-llama3"]["without_ignore_merges"] = ignore_merges_effect(llama3, heldout, picked)
    assert fixture["bpe-llama3"]["without_ignore_merges"], "ignore_merges changes nothing here"
    with open(os.path.join(OUT_DIR, "bpe_expected.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=None, separators=(",", ":"), ensure_ascii=True)
        f.write("\n")


if __name__ == "__main__":
    main()
