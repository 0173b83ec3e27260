#!/usr/bin/env bash
# Installs what is missing (Debian/Ubuntu packages) and builds ulysses into build/.
# Safe to run again: it installs nothing that is already there and rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libopenblas-dev libopenmpi-dev openmpi-bin libcjson-dev libpcre2-dev libutf8proc-dev gnuplot-nox python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# mpirun refuses to start as root unless told; the tests and the demo run as whoever you are.
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" -- --no-print-directory | grep -vE "^\[ *[0-9]+%\] (Building|Linking)" || true
cmake --build build -j"$(nproc)" >/dev/null
test -x build/ulysses || { echo "setup: build failed" >&2; exit 1; }
echo "setup: built build/ulysses" >&2
