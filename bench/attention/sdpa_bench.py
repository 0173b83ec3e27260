#!/usr/bin/env python3
"""torch SDPA (causal, bf16) forward and backward timing, for the side-by-side tables of
bench/attention/run.sh and lab.sh. Prints one JSON object per backend, FLOPs counted as
bench_attention counts them (causal once: 2 T^2 H d forward, 2.5x that backward; with
--docs N, N documents of T/N tokens each, run as a batch of N sequences: what
bench_attention's packed rows of N equal documents compute; --docs Nv, bench_attention's
N documents of varied length (eight lengths, see bench_attention.c), each length run as
one batch of N/8 sequences, the eight times added).

    python3 bench/attention/sdpa_bench.py T H HKV D [REPS] [--backends cudnn,flash] [--docs N[v]]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def time_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main():
    p = argparse.ArgumentParser()
    for n in ("T", "H", "Hkv", "d"):
        p.add_argument(n, type=int)
    p.add_argument("reps", type=int, nargs="?", default=5)
    p.add_argument("--backends", default="cudnn,flash")
    p.add_argument("--docs", default="1")
    a = p.parse_args()
    varied = a.docs.endswith("v")
    n = int(a.docs[:-1] if varied else a.docs)
    if n < 1 or a.T % n:
        p.error("--docs must divide T")
    b = a.T // n
    if varied:
        if n % 8 or b % 4 or b < 256:
            p.error("--docs Nv: N a multiple of 8, T/N a multiple of 4 and at least 256")
        # bench_attention.c's lengths: b f / 4 + e, each taken by N/8 documents
        groups = [(n // 8, b * f // 4 + e) for f, e in zip((1, 2, 3, 4, 4, 5, 6, 7), (37, -21, 13, -45, 29, -5, 11, -19))]
    else:
        groups = [(n, b)]
    g = torch.Generator(device="cuda").manual_seed(7)
    ff = sum(2.0 * L * L * a.H * a.d * B for B, L in groups)
    gqa = a.Hkv != a.H
    tens = []
    for B, L in groups:
        q = torch.randn(B, a.H, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        k = torch.randn(B, a.Hkv, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        v = torch.randn(B, a.Hkv, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        tens.append((q, k, v, torch.randn(B, a.H, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g)))
    base = {"T": a.T, "H": a.H, "Hkv": a.Hkv, "d": a.d, "docs": n, "varied": int(varied)}
    for name in a.backends.split(","):
        try:
            tf = tb = 0.0
            with sdpa_kernel([BACKENDS[name]]):
                for q, k, v, dout in tens:
                    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
                    tf += time_ms(lambda: fwd().detach(), a.reps)
                    out = fwd()
                    tb += time_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), a.reps)
                    del out
            r = {"impl": "torch-" + name, **base, "fwd_ms": tf, "bwd_ms": tb,
                 "fwd_tflops": ff / tf * 1e-9, "bwd_tflops": 2.5 * ff / tb * 1e-9}
        except Exception as e:  # a backend may not support a shape
            r = {"impl": "torch-" + name, **base, "error": str(e)[:200]}
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
