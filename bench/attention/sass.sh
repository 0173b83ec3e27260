#!/usr/bin/env bash
# The Hopper attention kernels' SASS without a GPU: compiles src/kernels/cuda/
# cuda_attention_sm90.cu for sm_90a with the local CUDA toolkit, disassembles it and prints
# bench/attention/sass_summary.awk's line per kernel (wgmma counts, spills, the exps placed
# under a running wgmma), then ptxas's register and spill report and any wgmma
# serialization warning (C7510-C7520). The full SASS is left in $SASS_OUT [/tmp/ul_sm90.sass].
#   bench/attention/sass.sh
# Needs nvcc (NVCC, default: nvcc on PATH, else /usr/local/cuda/bin/nvcc) and cuobjdump
# (CUOBJDUMP; the toolkit's, or from PyPI: `pip download --no-deps nvidia-cuda-cuobjdump`,
# then unzip the wheel: bin/cuobjdump).
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo "$(dirname "$NVCC")/cuobjdump")}
OUTF=${SASS_OUT:-/tmp/ul_sm90.sass}
[ -x "$NVCC" ] || { echo "sass.sh: no nvcc (set NVCC)" >&2; exit 1; }
[ -x "$CUOBJDUMP" ] || { echo "sass.sh: no cuobjdump (set CUOBJDUMP; see the header)" >&2; exit 1; }
obj=$(mktemp --suffix=.o)
log=$(mktemp)
trap 'rm -f "$obj" "$log"' EXIT
"$NVCC" -std=c++17 -O3 -arch=sm_90a -DUL_SM90A=1 -Isrc -Xptxas -v -c src/kernels/cuda/cuda_attention_sm90.cu \
  -o "$obj" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
"$CUOBJDUMP" -sass "$obj" >"$OUTF"
awk -f bench/attention/sass_summary.awk "$OUTF" | grep -i attn
echo "-- ptxas (registers, spills; wgmma serialization warnings would follow)"
grep -E "Compiling entry|spill stores" "$log" | paste - - | sed -E "s/ptxas info *: Compiling entry function '([^']*)' for 'sm_90a'/\\1/" \
  | awk '{$1=$1};1' | grep -i attn
grep -E "C75[0-9][0-9]" "$log" || true
