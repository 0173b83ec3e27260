#!/usr/bin/env bash
# The command line as a new user meets it (issue 17). Usage: ux_test.sh BIN CASE
#   help   every command's help has its text in one column, continuation lines indented to it
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
  for c in $COMMANDS; do
    "$BIN" "$c" --help > h.txt
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
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
