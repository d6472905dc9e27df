#!/usr/bin/env python3
"""The README's W4A16 table, made from w4a16_bench logs.

Reads every table process in the given logs (a process starts at its
"device:" line), keeps the settled ones (a "settle:" line with a non-zero
table pause) of the asked activation type that hold all 20 cells of the
70B table (a sweep's own table pass over a few shapes is left out), and
prints one markdown row per shape: speedup and roofline ranges over the
processes, our decode-loop time, and in how many processes the cell met
its target, then the sentences that carry the met counts. --check README.md
exits 1 unless the README holds those rows verbatim and those sentences (line
breaks aside), so the table there is always the logs' (ctest:
w4a16_readme_table).

  bench/w4a16_table.py bench/results/w4a16_h100_settle_ab.log ...
  bench/w4a16_table.py --check README.md LOG...
"""
import argparse
import re
import sys

SHAPES = [("qkv", "8192 x 10240"), ("o", "8192 x 8192"), ("gate_up", "8192 x 57344"), ("down", "28672 x 8192")]
MS = [1, 4, 16, 64, 256]
COUNT = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def processes(path):
    """Yields {"settled", "dtype", "cells": {(shape, m): cell}} per table process of one log."""
    cur = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("device:"):
                if cur is not None:
                    yield cur
                cur = {"settled": False, "dtype": "fp16", "cells": {}}
                continue
            if cur is None:
                continue
            settle = re.match(r"settle: the device idles (\d+) ms before every timed measurement", line)
            if settle:
                cur["settled"] = int(settle.group(1)) > 0
            weights = re.match(r"weights: .*?(fp16|bf16) activations", line)
            if weights:
                cur["dtype"] = weights.group(1)
            if line.startswith("sweep:"):  # the sweep's rows are not the table's
                yield cur
                cur = None
                continue
            f_ = [x.strip() for x in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(f_) == 17 and f_[2].isdigit():
                cur["cells"][(f_[0], int(f_[2]))] = {
                    "us": float(f_[7]),
                    "speedup": float(f_[10].rstrip("x")),
                    "roofline": int(f_[12].rstrip("%")),
                    "met": f_[16] == "met",
                }
    if cur is not None:
        yield cur


def span(values, fmt):
    lo, hi = fmt % min(values), fmt % max(values)
    return lo if lo == hi else f"{lo}-{hi}"


def rows(procs):
    out = []
    for shape, kn in SHAPES:
        cells = []
        for m in MS:
            v = [p["cells"][(shape, m)] for p in procs]
            met = sum(c["met"] for c in v)
            body = span([c["speedup"] for c in v], "%.2f") + "x"
            if m <= 16:
                body += ", " + span([c["roofline"] for c in v], "%d") + "%"
            body += " (" + span([c["us"] for c in v], "%.1f") + " us"
            if met == len(v):
                cells.append(f"**{body}): met**")
            elif met == 0:
                cells.append(body + ")")
            else:
                cells.append(f"{body}; met in {COUNT.get(met, str(met))})")
        out.append(f"| {shape} {kn} | " + " | ".join(cells) + " |")
    return out


def prose(procs):
    """The README's sentences around the table that carry numbers: the met counts per process."""
    met = [sum(c["met"] for c in p["cells"].values()) for p in procs]
    listed = ", ".join(map(str, met[:-1])) + " and " + str(met[-1]) if len(met) > 1 else str(met[0])
    n = COUNT.get(len(met), str(len(met)))
    lo, hi = min(met), max(met)
    rng = str(lo) if lo == hi else f"{lo} to {hi}"
    return [f"Met: **{listed}** of the 20 in the {n} processes.", f"{rng} of 20 targets met in settled tables"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--check", metavar="README", help="exit 1 unless this file holds the rows")
    a = ap.parse_args()
    procs = []
    for path in a.logs:
        try:
            found = list(processes(path))
        except OSError as e:
            sys.exit(f"w4a16_table: {path}: {e.strerror}")
        procs += [p for p in found if p["settled"] and p["dtype"] == a.dtype
                  and all((s, m) in p["cells"] for s, _ in SHAPES for m in MS)]
    if not procs:
        sys.exit(f"w4a16_table: no settled {a.dtype} table with all 20 cells in {', '.join(a.logs)}")
    table = rows(procs)
    met = ", ".join(str(sum(c["met"] for c in p["cells"].values())) for p in procs)
    if a.check:
        with open(a.check, encoding="utf-8") as f:
            text = f.read()
        missing = [r for r in table if r not in text]
        for r in missing:
            print(f"w4a16_table: {a.check} lacks the row the logs give: {r}", file=sys.stderr)
        # The sentences need not sit on one line of the file: compare with line breaks as spaces.
        flat = " ".join(text.split())
        for sentence in prose(procs):
            if sentence not in flat:
                print(f"w4a16_table: {a.check} lacks the text the logs give: {sentence}", file=sys.stderr)
                missing.append(sentence)
        if missing:
            return 1
        print(f"w4a16_table: {a.check} holds the table of {len(procs)} processes (targets met: {met})")
        return 0
    print("| shape (K x N) | M=1 | M=4 | M=16 | M=64 | M=256 |\n| --- | --- | --- | --- | --- | --- |")
    print("\n".join(table))
    print("\n" + "\n".join(prose(procs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
