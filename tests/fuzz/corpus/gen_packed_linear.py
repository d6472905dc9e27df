"""Writes the seeds of tests/fuzz/packed_linear_fuzz.cc: valid GPTQ v1 and AWQ
GEMM linears in that target's input format (see its header comment), packed
here independently of kernels/ref/pack.cc. Run from this directory:
    ../../../.venv/bin/python gen_packed_linear.py
"""
import struct

import numpy as np

F16, I32 = 2, 5  # storage::DType order
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def stream_words(codes, bits):
    """codes packed as one little-endian bit stream of `bits` each -> uint32 words."""
    total = len(codes) * bits
    assert total % 32 == 0
    acc = 0
    for i, c in enumerate(codes):
        acc |= int(c) << (i * bits)
    return [(acc >> (32 * w)) & 0xFFFFFFFF for w in range(total // 32)]


def seed(name, *, awq, bits, group, n, k, sym, desc_act, bias, rng):
    g = 1 if group == -1 else k // group
    levels = 1 << bits
    q = rng.integers(0, levels, size=(n, k))
    z = np.full((g, n), levels // 2) if sym else rng.integers(1, levels, size=(g, n))
    scales = rng.uniform(0.001, 0.1, size=(g, n)).astype(np.float16)
    order = rng.permutation(k) if desc_act else np.arange(k)
    g_idx = np.zeros(k, dtype=np.int32) if group == -1 else (order // group).astype(np.int32)
    if awq:
        qw = np.zeros((k, n // 8), dtype=np.uint32)
        qz = np.zeros((g, n // 8), dtype=np.uint32)
        for c in range(n // 8):
            for i, o in enumerate(AWQ_ORDER):
                qw[:, c] |= (q[8 * c + o, :].astype(np.uint32) << (4 * i))
                qz[:, c] |= (z[:, 8 * c + o].astype(np.uint32) << (4 * i))
    else:
        qw = np.array([stream_words(q[col], bits) for col in range(n)], dtype=np.uint32).T.copy()
        qz = np.array([stream_words((z[row] - 1) & (levels - 1), bits) for row in range(g)], dtype=np.uint32)
    flags = (1 if awq else 0) | (2 if sym else 0) | (4 if desc_act else 0) | (0 if awq else 8) | (16 if bias else 0)
    header = bytes([flags, [2, 3, 4, 8].index(bits), 0 if group == -1 else group,
                    qw.shape[0], qw.shape[1], qz.shape[0], qz.shape[1], g, n]) + struct.pack("<H", k) + \
        bytes([n if bias else 0, I32, I32, F16, I32, F16])
    body = qw.astype("<u4").tobytes() + qz.astype("<u4").tobytes() + scales.astype("<f2").tobytes()
    if not awq:
        body += g_idx.astype("<i4").tobytes()
    if bias:
        body += rng.uniform(-1, 1, size=n).astype("<f2").tobytes()
    with open(f"packed_linear/{name}", "wb") as f:
        f.write(header + body)


rng = np.random.default_rng(0)
seed("gptq_w4_g32_bias", awq=False, bits=4, group=32, n=16, k=64, sym=False, desc_act=False, bias=True, rng=rng)
seed("gptq_w3_gall", awq=False, bits=3, group=-1, n=32, k=64, sym=False, desc_act=False, bias=False, rng=rng)
seed("gptq_w8_sym_actorder", awq=False, bits=8, group=16, n=8, k=64, sym=True, desc_act=True, bias=False, rng=rng)
seed("gptq_w2_g16", awq=False, bits=2, group=16, n=16, k=32, sym=False, desc_act=False, bias=False, rng=rng)
seed("awq_w4_g32", awq=True, bits=4, group=32, n=16, k=64, sym=False, desc_act=False, bias=False, rng=rng)
seed("awq_w4_g64_bias", awq=True, bits=4, group=64, n=8, k=128, sym=False, desc_act=False, bias=True, rng=rng)
