#!/usr/bin/env python3
"""Writes tests/tokenizer/spm_expected.json: what the Python sentencepiece
package gives for the bundled tiny-llama tokenizer, so tokenizer_test can
check our C++ path against it without Python at test time.

Run from the repository root after changing models/tiny-llama/tokenizer.model,
data/books-heldout.txt or the strings below:

    .venv/bin/python tests/tokenizer/gen_spm_fixture.py
"""
import hashlib
import json
import struct

import sentencepiece as spm

MODEL = "models/tiny-llama/tokenizer.model"
HELDOUT = "data/books-heldout.txt"
OUT = "tests/tokenizer/spm_expected.json"

# Plain prose, whitespace runs, control-like text, numbers, non-ASCII that the
# vocabulary lacks (byte fallback), and the empty string.
STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " leading space and trailing space ",
    "multiple   spaces\n\nnew lines\tand a tab",
    "<s> looks like BOS but is text </s>",
    "1234567.89 + 42 = ?",
    "na\u00efve caf\u00e9 \u2014 \u6771\u4eac \U0001F642",
]
PREFIX_CHARS = 2000
EVAL_SEQLEN = 512
EVAL_CHUNKS = 256


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    sp = spm.SentencePieceProcessor(model_file=MODEL)
    # Decoded from bytes (no newline translation): the text exactly as read.
    with open(HELDOUT, "rb") as f:
        heldout = f.read().decode("utf-8")
    prefix = heldout[:PREFIX_CHARS]
    eval_ids = [sp.bos_id()] + sp.encode(heldout)
    eval_prefix = eval_ids[: EVAL_SEQLEN * EVAL_CHUNKS]
    fixture = {
        "model_sha256": sha256_file(MODEL),
        "heldout_sha256": sha256_file(HELDOUT),
        "bos_id": sp.bos_id(),
        "vocab_size": sp.vocab_size(),
        "strings": [{"text": s, "ids": sp.encode(s)} for s in STRINGS],
        "heldout_prefix": {
            "chars": PREFIX_CHARS,
            "bytes": len(prefix.encode("utf-8")),
            "ids": sp.encode(prefix),
        },
        "eval": {
            "seqlen": EVAL_SEQLEN,
            "chunks": EVAL_CHUNKS,
            "total_ids_with_bos": len(eval_ids),
            "first_ids": eval_prefix[:32],
            "last_ids": eval_prefix[-32:],
            # SHA-256 of the kept ids as int32 little-endian.
            "prefix_sha256": hashlib.sha256(
                struct.pack("<%di" % len(eval_prefix), *eval_prefix)).hexdigest(),
        },
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=True)
        f.write("\n")


if __name__ == "__main__":
    main()
