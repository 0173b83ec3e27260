#!/usr/bin/env bash
# One device call of at most 10 minutes on one GPU (the `device` tool): build the CUDA backend
# once, then, most important first, each step under its own time limit:
#   1. every kernel against the CPU backend (test_cuda_kernels; also the persistent forward
#      on 3 CTAs and the attention lab's serial forward, the baseline: UL_TEST_ATTN_FWD's
#      default);
#   2. the whole model on one GPU against the transformers fixture of every family (plain
#      and with each memory feature: test_gpu_model);
#   3. the attention timing next to torch SDPA's cuDNN backend (bench/attention/lab.sh's
#      timing at d 128 and 64, T 32K and 128K), and compute-sanitizer memcheck and
#      racecheck on the default forward;
#   4. ZeRO 1/2/3, the optimizer, gradient and parameter offloads and --checkpoint-every on
#      CUDA against --zero 0 (tests/zero_test.sh gpu), with the time left.
# scripts/gpu_test.sh runs every gpu-labelled test instead (more than one call's limit).
# Carry .deps (scripts/gpu_test.sh's header says what goes in it). Logs under $OUT.
#   scripts/gpu_quick.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build-gpu/quick}
mkdir -p "$LOG"
source scripts/gpu_env.sh # mpirun as root; the packages carried in .deps
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s]"; }
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DUL_CUDA=ON -DUL_SANITIZE_TESTS=OFF -DUL_CUDA_PTXAS_VERBOSE=ON >"$LOG/configure.log" 2>&1 \
  || { tail -30 "$LOG/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target test_cuda_kernels test_gpu_model ulysses bench_attention \
  >"$LOG/build.log" 2>&1 || { grep -E "error" -A3 "$LOG/build.log" | head -40; exit 1; }
echo "$(el) built"
export UL_TEST_REPORT="$LOG/gpu_report.txt"
timeout 200 build-gpu/tests/test_cuda_kernels >"$LOG/test_cuda_kernels.log" 2>&1
rc=$? # before any $(...): a command substitution resets $?
echo "$(el) test_cuda_kernels: exit $rc, $(grep -c '| ok' "$LOG/test_cuda_kernels.log") ok, $(grep -c 'FAIL' "$LOG/test_cuda_kernels.log") FAIL"
grep FAIL "$LOG/test_cuda_kernels.log" | head -20
for fx in hf_tiny hf_tiny_tied qwen2_tiny qwen3_tiny mistral_tiny; do
  timeout 60 mpirun -np 1 build-gpu/tests/test_gpu_model "tests/fixtures/$fx" >"$LOG/gpu_model_$fx.log" 2>&1
  rc=$?
  echo "$(el) gpu_model $fx (1 GPU): exit $rc, $(grep -E 'checks, [0-9]+ failed' "$LOG/gpu_model_$fx.log" | tail -1)"
done
FWDS="serial ovpp" POINTS="128:32768:16 128:131072:4 64:32768:16 64:131072:4" SANITIZE="ovpp" CHECK=0 \
  OUT="$LOG/lab" timeout 200 bash bench/attention/lab.sh 2>&1 | sed -n '/== timing/,$p'
echo "$(el) attention timing"
left=$(( 560 - ($(date +%s) - t0) ))
if [ "$left" -gt 60 ]; then
  timeout "$left" tests/zero_test.sh build-gpu/ulysses gpu >"$LOG/gpu_zero.log" 2>&1
  rc=$?
  echo "$(el) gpu_zero: exit $rc (124 = out of time): $(grep -E 'passed, [0-9]+ failed' "$LOG/gpu_zero.log" | tail -1)"
  grep -i "fail\|error" "$LOG/gpu_zero.log" | head -10
fi
