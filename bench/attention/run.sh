#!/usr/bin/env bash
# Flash attention side by side with torch SDPA (cuDNN and flash backends) on one GPU, in
# one call. Needs build-gpu/bench_attention (scripts/gpu_test.sh builds it) and torch.
#   bench/attention/run.sh [OUT.jsonl]      (default $OUT/attention.jsonl or attention.jsonl)
# Points: T = 8K, 32K, 128K, 512K; head dims 128 and 64; one document, MHA; H shrinks with
# T so that every point takes about the same time (the rate does not depend on H once
# the GPU is full). FLOPs: causal counted once; backward = 2.5x forward. Ours runs once
# per UL_ATTN_KERNEL value in $VARIANTS (default "fused deterministic": the one-kernel
# backward with dQ added by TMA bulk reduce, the default at both head dims, and the
# bitwise-reproducible two-kernel one); the ratios are those of the default form.
set -uo pipefail
cd "$(dirname "$0")/../.."
J=${1:-${OUT:-.}/attention.jsonl}
BIN=${BENCH_ATTENTION:-build-gpu/bench_attention}
VARIANTS=${VARIANTS:-fused deterministic}
: > "$J"
for d in 128 64; do
  for T in 8192 32768 131072 524288; do
    case $T in 8192) H=32 ;; 32768) H=16 ;; 131072) H=4 ;; *) H=1 ;; esac
    for v in $VARIANTS; do
      UL_ATTN_KERNEL=$v "$BIN" $T $H $H $d 1 5 >> "$J" \
        || echo "{\"impl\": \"ulysses\", \"kernel\": \"$v\", \"T\": $T, \"d\": $d, \"error\": \"exit $?\"}" >> "$J"
    done
    python3 bench/attention/sdpa_bench.py $T $H $H $d 5 >> "$J" 2>/dev/null \
      || echo "{\"impl\": \"torch\", \"T\": $T, \"d\": $d, \"error\": \"sdpa_bench failed\"}" >> "$J"
  done
done
python3 - "$J" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
pts = sorted({(r["d"], r["T"]) for r in rows}, key=lambda x: (-x[0], x[1]))
print("| d | T | ours fwd | ours bwd (fused) | ours bwd (deterministic) | cuDNN fwd | cuDNN bwd | flash fwd | flash bwd | ours/cuDNN fwd | ours/cuDNN bwd |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d, T in pts:
    get = lambda impl, kern=None: next((r for r in rows if r["d"] == d and r["T"] == T and r["impl"] == impl
                                        and r.get("kernel", kern) == kern and "error" not in r), None)
    of, od, c, f = get("ulysses", "fused"), get("ulysses", "deterministic"), get("torch-cudnn"), get("torch-flash")
    o = of  # the default backward form (fused at both head dims)
    v = lambda r, k: f"{r[k]:.0f}" if r else "-"
    ratio = lambda k: f"{o[k] / c[k]:.2f}" if o and c else "-"
    print(f"| {d} | {T} | {v(o,'fwd_tflops')} | {v(of,'bwd_tflops')} | {v(od,'bwd_tflops')} | {v(c,'fwd_tflops')} | {v(c,'bwd_tflops')} | "
          f"{v(f,'fwd_tflops')} | {v(f,'bwd_tflops')} | {ratio('fwd_tflops')} | {ratio('bwd_tflops')} |")
PY
