#!/usr/bin/env python3
"""torch SDPA (causal, bf16) forward and backward timing, for the side-by-side tables of
bench/attention/run.sh and lab.sh. Prints one JSON object per backend, FLOPs counted as
bench_attention counts them (causal once: 2 T^2 H d forward, 2.5x that backward; with
--docs N, N documents of T/N tokens each, run as a batch of N sequences: what
bench_attention's packed rows of N equal documents compute).

    python3 bench/attention/sdpa_bench.py T H HKV D [REPS] [--backends cudnn,flash] [--docs N]
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
    p.add_argument("--docs", type=int, default=1)
    a = p.parse_args()
    if a.docs < 1 or a.T % a.docs:
        p.error("--docs must divide T")
    B, L = a.docs, a.T // a.docs
    g = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(B, a.H, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(B, a.Hkv, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(B, a.Hkv, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    dout = torch.randn(B, a.H, L, a.d, device="cuda", dtype=torch.bfloat16, generator=g)
    ff = 2.0 * L * L * a.H * a.d * B
    gqa = a.Hkv != a.H
    for name in a.backends.split(","):
        try:
            with sdpa_kernel([BACKENDS[name]]):
                fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
                tf = time_ms(lambda: fwd().detach(), a.reps)
                out = fwd()
                tb = time_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), a.reps)
            r = {"impl": "torch-" + name, "T": a.T, "H": a.H, "Hkv": a.Hkv, "d": a.d, "docs": a.docs, "fwd_ms": tf, "bwd_ms": tb,
                 "fwd_tflops": ff / tf * 1e-9, "bwd_tflops": 2.5 * ff / tb * 1e-9}
        except Exception as e:  # a backend may not support a shape
            r = {"impl": "torch-" + name, "T": a.T, "H": a.H, "Hkv": a.Hkv, "d": a.d, "docs": a.docs, "error": str(e)[:200]}
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
