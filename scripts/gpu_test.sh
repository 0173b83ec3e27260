#!/usr/bin/env bash
# GPU machine: configure with the CUDA backend forced on, build, run the GPU-labelled tests,
# print their table. Logs go to $OUT (device tool) or build-gpu/ otherwise.
#   scripts/gpu_test.sh [extra ctest args]
# The GPU image lacks cJSON, PCRE2 and utf8proc headers (and pkg-config): fetch their Debian
# packages here first, then carry .deps (scripts/gpu_env.sh unpacks them there)
#   ../shared/device/deps.sh fetch libcjson1 libcjson-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 \
#       libpcre2-posix3 libpcre2-dev libutf8proc2 libutf8proc-dev
#   (cd .deps && mkdir -p extra && cd extra && apt-get download pkgconf pkgconf-bin libpkgconf3)
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build-gpu}
mkdir -p "$LOG"
source scripts/gpu_env.sh # mpirun as root; the packages carried in .deps
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DUL_CUDA=ON -DUL_SANITIZE_TESTS=OFF \
      -DUL_CUDA_PTXAS_VERBOSE=ON >"$LOG/configure.log" 2>&1 || { tail -40 "$LOG/configure.log"; exit 1; }
# only what the gpu-labelled tests need (UL_GPU_BUILD_ALL=1 builds everything)
targets="--target test_cuda_kernels test_gpu_model ulysses bench_attention"; [ "${UL_GPU_BUILD_ALL:-0}" = 1 ] && targets=""
cmake --build build-gpu -j"$(nproc)" $targets >"$LOG/build.log" 2>&1 || { grep -E "error|Error" -A3 "$LOG/build.log" | head -80; exit 1; }
grep -E "spill|stack frame" "$LOG/build.log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | grep -v "0 bytes stack frame" | head -20
echo "build: $(( $(date +%s) - t0 )) s"
# tensor-core instructions per attention kernel (HMMA = mma.sync, HGMMA = wgmma)
if command -v cuobjdump >/dev/null; then
  for att in $(find build-gpu -name "cuda_attention*.cu.o"); do
    cuobjdump -sass "$att" | awk '/Function :/{if(f)printf "%-52s HMMA %4d HGMMA %4d LDSM %4d LDL/STL %d\n",f,h,w,l,s; f=$3;h=0;w=0;l=0;s=0;next}
      /HGMMA/{w++;next} /HMMA/{h++} /LDSM/{l++} /LDL|STL/{s++} END{if(f)printf "%-52s HMMA %4d HGMMA %4d LDSM %4d LDL/STL %d\n",f,h,w,l,s}'
  done
fi
export UL_TEST_REPORT="$LOG/gpu_report.txt"
rm -f "$UL_TEST_REPORT"
ctest --test-dir build-gpu -L gpu --output-on-failure "$@" 2>&1 | tee "$LOG/ctest.log"
rc=${PIPESTATUS[0]}
echo "================ GPU test report ================"
cat "$UL_TEST_REPORT" 2>/dev/null || echo "(no report: the tests did not run)"
echo "ctest exit code: $rc"
exit $rc
