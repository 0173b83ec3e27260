# Sourced in the project root by the GPU machine's scripts (scripts/gpu_test.sh,
# scripts/gpu_quick.sh, bench/attention/lab.sh): mpirun as root, and the Debian packages the
# GPU image lacks (cJSON, PCRE2, utf8proc, pkg-config), carried in .deps (see the header of
# scripts/gpu_test.sh), unpacked into .deps/root and put on the search paths.
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
if [ -f .deps/deps.sh ]; then source .deps/deps.sh unpack >/dev/null; fi
if ! command -v pkg-config >/dev/null && ls .deps/extra/*.deb >/dev/null 2>&1; then
  for f in .deps/extra/*.deb; do dpkg -x "$f" .deps/root; done
  export PATH=$PWD/.deps/root/usr/bin:$PATH LD_LIBRARY_PATH=$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
fi
# cJSON's .pc says prefix=/usr: resolve its paths inside .deps/root
if [ -d .deps/root/usr/include/cjson ] && [ ! -d /usr/include/cjson ]; then export PKG_CONFIG_SYSROOT_DIR=$PWD/.deps/root; fi
