#!/usr/bin/env bash
# `ulysses tokenize --tokenizer` against the Python `tokenizers` library (issue 18): ids
# document by document and --decode's text, for tokenizers the test trains itself and two
# real tokenizer.json files of public models (Anthropic's and DeepSeek's, shipped in the
# litellm wheel on PyPI). The reference is installed into BUILD/tokref on first use
# (PyPI); when it cannot be installed the test fails, it never skips.
#   tokenizer_test.sh ULYSSES BUILD_DIR [WORK_NAME [ONLY]]   (ONLY: tokenizer names, comma-separated)
set -euo pipefail
BIN=$1
BUILD=$2
WORK=$BUILD/${3:-tokenizer_test}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF=$BUILD/tokref
TOKENIZERS_VERSION=0.23.3
LITELLM_VERSION=1.110.2
mkdir -p "$BUILD"
exec 9>"$BUILD/tokref.lock"
flock 9 # one installer at a time (ctest -j runs the ASan variant beside this one)
if [ ! -f "$REF/ready" ]; then
  rm -rf "$REF"
  mkdir -p "$REF"
  python3 -m venv "$REF/venv" || { echo "tokenizer_test: python3 -m venv failed (Debian: python3-venv)"; exit 1; }
  "$REF/venv/bin/pip" install -q --disable-pip-version-check "tokenizers==$TOKENIZERS_VERSION" ||
    { echo "tokenizer_test: cannot install tokenizers==$TOKENIZERS_VERSION from PyPI"; exit 1; }
  "$REF/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "litellm==$LITELLM_VERSION" -d "$REF/wheels" ||
    { echo "tokenizer_test: cannot download litellm==$LITELLM_VERSION (the real tokenizer.json files)"; exit 1; }
  "$REF/venv/bin/python" - "$REF" <<'PY'
import glob, os, sys, zipfile
ref = sys.argv[1]
os.makedirs(os.path.join(ref, "real"), exist_ok=True)
with zipfile.ZipFile(glob.glob(os.path.join(ref, "wheels", "litellm-*.whl"))[0]) as z:
    for name in ("anthropic_tokenizer.json", "deepseek_tokenizer.json"):
        with open(os.path.join(ref, "real", name), "wb") as f:
            f.write(z.read("litellm/litellm_core_utils/tokenizers/" + name))
PY
  rm -rf "$REF/wheels"
  touch "$REF/ready"
fi
flock -u 9
rm -rf "$WORK"
ONLY=()
[ -n "${4:-}" ] && ONLY=("--only=$4")
"$REF/venv/bin/python" "$ROOT/scripts/tokenizer_reference.py" "${ONLY[@]}" "$BIN" "$WORK" \
  "$REF/real/anthropic_tokenizer.json" "$REF/real/deepseek_tokenizer.json"
