# Shared by the shell test drivers (sourced): pass/fail counting and a synthetic corpus.
# Expects BIN (the ulysses binary) to be set; works in the current directory.
fail=0
checks=0
check() { # check CONDITION-EXIT-CODE MESSAGE
  checks=$((checks + 1))
  if [ "$1" -ne 0 ]; then echo "FAIL: $2"; fail=$((fail + 1)); fi
}

# corpus N: N documents of 20..199 random lowercase letters, blank-line separated,
# tokenized to data.tok (deterministic)
corpus() {
  awk -v n="$1" 'BEGIN { srand(7); for (d = 0; d < n; d++) { len = 20 + int(rand() * 180);
      s = ""; for (i = 0; i < len; i++) s = s sprintf("%c", 97 + int(rand() * 26));
      print s; print "" } }' > corpus.txt
  "$BIN" tokenize --bytes corpus.txt --split-blank-lines -o data.tok > /dev/null
}
