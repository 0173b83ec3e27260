#!/usr/bin/env bash
# The command line as a new user meets it (issue 17). Usage: ux_test.sh BIN CASE
#   help   --version names the version and a commit of this repository; `ulysses help CMD`
#          prints CMD's help (the same as `CMD --help`); every command's help has its text in
#          one column, continuation lines indented to it
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
CASE=$2
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"
COMMANDS="demo train eval plan tokenize"

case "$CASE" in
help)
  "$BIN" --version > v.txt 2> e.txt
  check $? "--version exited non-zero: $(cat e.txt)"
  cat v.txt
  grep -Eq "^ulysses [0-9]+\.[0-9]+\.[0-9]+" v.txt; check $? "--version: no 'ulysses X.Y.Z': $(head -1 v.txt)"
  commit=$(sed -n 's/.*(git \([0-9a-f]*\).*/\1/p' v.txt)
  if git -C "$HERE" rev-parse --git-dir > /dev/null 2>&1; then # built from a git checkout: a commit of it
    git -C "$HERE" cat-file -e "${commit:-none}^{commit}" 2> /dev/null
    check $? "--version: '$commit' is not a commit of this repository"
  fi
  "$BIN" help > top.txt
  for c in $COMMANDS; do
    "$BIN" help "$c" > h.txt 2> e.txt
    check $? "help $c exited non-zero: $(cat e.txt)"
    "$BIN" "$c" --help > h2.txt
    cmp -s h.txt h2.txt; check $? "'help $c' differs from '$c --help'"
    ! cmp -s h.txt top.txt; check $? "'help $c' prints the top-level help"
    grep -q "^usage: .*ulysses $c" h.txt; check $? "'help $c' has no usage line for $c: $(head -1 h.txt)"
    # the help column: where the text of each flag line starts; continuation lines start there too
    awk -v c="$c" '
      /^flags:/ { in_flags = 1; next }
      !in_flags || /^$/ { next }
      /^  -/ { s = substr($0, 3); i = match(s, /  +[^ ]/); col = i + RLENGTH + 1
               if (!i) { print c ": no help text: " $0; bad = 1; next }
               if (want && col != want) { print c ": help at column " col ", not " want ": " $0; bad = 1 }
               if (!want) want = col; next }
      { match($0, /^ */); if (RLENGTH + 1 != want) { print c ": continuation at column " RLENGTH + 1 ", not " want ": " $0; bad = 1 } }
      END { exit bad }' h.txt
    check $? "help $c: misaligned columns"
  done
  "$BIN" help nosuch > o.txt 2> e.txt
  rc=$?
  check $([ $rc -eq 2 ] && grep -q "unknown command 'nosuch'" e.txt; echo $?) "help nosuch: rc $rc, $(cat e.txt)"
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
