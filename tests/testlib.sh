# Shared by the shell test drivers (sourced): pass/fail counting and a synthetic corpus.
# Expects BIN (the ulysses binary) and, for expect_error, MPIRUN to be set; works in the current directory.
fail=0
checks=0
check() { # check CONDITION-EXIT-CODE MESSAGE
  checks=$((checks + 1))
  if [ "$1" -ne 0 ]; then echo "FAIL: $2"; fail=$((fail + 1)); fi
}

# field FILE KEY: the values of "KEY": in a JSONL file, one per line (numbers, nan, inf)
field() { sed -e "s/.*\"$2\": \([-0-9.e+a-z]*\).*/\1/" "$1"; }

# corpus N: N documents of 20..199 random lowercase letters, blank-line separated,
# tokenized to data.tok (deterministic)
corpus() {
  awk -v n="$1" 'BEGIN { srand(7); for (d = 0; d < n; d++) { len = 20 + int(rand() * 180);
      s = ""; for (i = 0; i < len; i++) s = s sprintf("%c", 97 + int(rand() * 26));
      print s; print "" } }' > corpus.txt
  "$BIN" tokenize --bytes corpus.txt --split-blank-lines -o data.tok > /dev/null
}

# expect_error NP PATTERN ARGS...: `$MPIRUN -np NP $BIN ARGS --out out --metrics m.jsonl` exits
# non-zero, prints exactly one error line containing PATTERN, and writes no output; the
# error line is echoed (cut to 200 characters) so the log shows what a user would read
expect_error() {
  local np=$1 pat=$2; shift 2
  rm -rf out m.jsonl
  $MPIRUN -np "$np" "$BIN" "$@" --out out --metrics m.jsonl > o.txt 2> e.txt
  local rc=$?
  local n
  n=$(grep -c "ulysses: error" e.txt)
  checks=$((checks + 1))
  if [ $rc -eq 0 ] || [ "$n" -ne 1 ] || ! grep -q -- "$pat" e.txt || [ -e out ] || [ -e m.jsonl ]; then
    echo "FAIL: np=$np '$*' -> rc $rc, $n error lines, want '$pat':"; cat e.txt; fail=$((fail + 1))
  else
    grep "ulysses: error" e.txt | cut -c1-200
  fi
}
