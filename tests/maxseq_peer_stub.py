#!/usr/bin/env python3
"""Stand-in for bench/peer/ulysses_peer.py in the CPU check of bench/maxseq.py (no torch):
trains (writes the peer's JSON) up to MAXSEQ_STUB_MAX tokens, fails like a CUDA
out-of-memory above it."""
import argparse
import json
import os
import sys

p = argparse.ArgumentParser()
for name in ("--model-shape", "--attn", "--device"):
    p.add_argument(name)
for name in ("--seq-len", "--steps", "--warmup-steps"):
    p.add_argument(name, type=int)
p.add_argument("--json")
a = p.parse_args()
if a.seq_len > int(os.environ["MAXSEQ_STUB_MAX"]):
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB", file=sys.stderr)
    sys.exit(1)
with open(a.json, "w") as f:
    json.dump({"step_s_mean": a.seq_len / 1e6, "peak_reserved_gib_max": a.seq_len / 1e4,
               "peak_mem_gib_max": a.seq_len / 2e4, "loss_last": 7.0}, f)
