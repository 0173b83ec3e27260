#!/usr/bin/env bash
# Runs the whole test suite (CPU only; GPU tests are skipped where no GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
