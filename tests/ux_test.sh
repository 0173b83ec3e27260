#!/usr/bin/env bash
# The command line as a new user meets it (issue 17). Usage: ux_test.sh BIN CASE
#   help   --version names the version and a commit of this repository; `ulysses help CMD`
#          prints CMD's help (the same as `CMD --help`); every command's help has its text in
#          one column, continuation lines indented to it
#   plan   exit status 0 when the run fits, 2 when it does not, 1 on an error; --device cpu
#          speaks of ranks, not GPUs, and has no default limit
#   eval   on a token shard, --samples above what the data holds evaluates each sample once
#          and says so: the sample and answer counts equal those computed from the shard, the
#          loss equals that of --samples = the exact count; the JSON parses (no nan) with null
#          for every empty bucket (kv task: the context's positions, the far distances); the
#          plot has accuracy and loss panels with one point per non-empty bucket
#   progress  --progress lines: plain "step N/M" lines; bar: the live line (\r[###...]) even
#          into a file; auto: lines into a file, the bar when mpirun's stderr is a terminal (a
#          pseudo-terminal from script(1), when present) and lines when mpirun's stderr is a
#          file inside that terminal; a bad value is one error naming --progress
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
      /^[a-z]+:$/ { in_flags = 0 } # the next section (environment:)
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
plan)
  cat > tiny.json <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "rope_theta": 10000.0}
JSON
  prc() { "$BIN" plan "$@" > o.txt 2> e.txt; echo $?; }
  P="--model tiny.json --seq-len 4096 --sp 2 --gpus 2 --tiled-mlp off"
  rc=$(prc $P --device cpu --gpu-mem 1); check $([ "$rc" -eq 0 ]; echo $?) "plan that fits 1 GiB: rc $rc"
  grep -q "^fits 1 GiB per rank: yes" o.txt; check $? "plan --device cpu --gpu-mem 1: $(grep ^fits o.txt)"
  total=$(sed -n 's/^per rank total: .*(\([0-9]*\) bytes)$/\1/p' o.txt)
  # one byte per rank below the plan: does not fit, exit 2, and the largest length is below 4096
  G=$(awk -v b="$total" 'BEGIN { printf "%.12f", (b - 1) / 1073741824 }')
  rc=$(prc $P --device cpu --gpu-mem "$G")
  max=$(sed -n 's/^largest seq_len that fits: //p' o.txt)
  echo "plan: $total bytes per rank at seq_len 4096; --gpu-mem 1 byte less: rc $rc, largest seq_len $max"
  check $([ "$rc" -eq 2 ] && grep -q "^fits .*: NO" o.txt && [ "$max" -lt 4096 ]; echo $?) "plan that does not fit: rc $rc, $(grep ^fits o.txt)"
  rc=$(prc $P --device cpu --gpu-mem "$G" --seq-len "$max")
  check $([ "$rc" -eq 0 ]; echo $?) "plan at the largest seq_len $max: rc $rc"
  rc=$(prc $P --device cpu --host-mem 0.000001 --offload-checkpoints --checkpoint 1)
  check $([ "$rc" -eq 2 ]; echo $?) "plan over --host-mem: rc $rc"
  rc=$(prc $P --device cpu --zero 9)
  check $([ "$rc" -eq 1 ] && grep -q "ulysses: error: --zero 9" e.txt; echo $?) "plan --zero 9: rc $rc (want 1)"
  # the CPU: no GPU words, no default limit
  rc=$(prc $P --device cpu)
  check $([ "$rc" -eq 0 ]; echo $?) "plan --device cpu: rc $rc"
  sed -e 's/--gpu-mem//g' o.txt > words.txt # the flag's name aside
  ! grep -Eiq "gpu|\b139\b" words.txt; check $? "plan --device cpu speaks of GPUs: $(grep -Ei "gpu|\b139\b" words.txt | head -3)"
  grep -q "^largest seq_len that fits: no limit given" o.txt; check $? "plan --device cpu without limits: $(tail -1 o.txt)"
  # CUDA (the default device): per GPU, 139 GiB by default
  rc=$(prc $P)
  check $([ "$rc" -eq 0 ] && grep -q "^fits 139 GiB per GPU: yes" o.txt && grep -q "^per GPU total:" o.txt; echo $?) "plan (cuda): rc $rc, $(grep ^fits o.txt)"
  ;;
eval)
  corpus 12 # testlib.sh: data.tok
  MODEL=$HERE/fixtures/hf_tiny
  # gnuplot through a wrapper that keeps the script it is given (the plot's panels and points)
  GNUPLOT=$(command -v gnuplot || true)
  if [ -n "$GNUPLOT" ]; then
    printf '#!/bin/sh\ntee -a "%s" | "%s" "$@"\n' "$PWD/gp.txt" "$GNUPLOT" > gp && chmod +x gp
    export UL_GNUPLOT=$PWD/gp
    PLOT="--plot"
  fi
  ev() { # ev OUT ARGS...: eval on 2 ranks, stdout in OUT.txt, JSON in OUT.json, plot OUT.png
    local out=$1; shift
    rm -f gp.txt
    $MPIRUN -np 2 "$BIN" eval --model "$MODEL" --out "$out.json" ${PLOT:+$PLOT "$out.png"} "$@" > "$out.txt" 2> e.txt
    check $? "eval $*: $(cat e.txt)"
    [ -n "${PLOT:-}" ] && cp gp.txt "$out.gp"
  }
  ev all --data data.tok --seq-len 64 --samples 1000
  head -n 1 all.txt
  n=$(python3 - data.tok 64 all.json all.txt ${PLOT:+all.gp} <<'PY'
import json, struct, sys
shard, T, res, txt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def strict(x): raise ValueError(f"{x} is not JSON")
r = json.loads(open(res).read(), parse_constant=strict)
buf = open(shard, "rb").read()  # docs/formats.md: magic, version, vocab, n_docs, n_tokens, offsets, tokens
_, _, n_docs, _ = struct.unpack_from("<IIQQ", buf, 8)
offs = struct.unpack_from(f"<{n_docs + 1}Q", buf, 32)
pieces = [min(T, offs[d + 1] - o) for d in range(n_docs) for o in range(offs[d], offs[d + 1], T)]
samples, fill = 0, T + 1
for p in pieces:  # greedy packing in file order
    if fill + p > T: samples, fill = samples + 1, 0
    fill += p
answers = sum(p - 1 for p in pieces)
bad = []
if r["samples"] != samples: bad.append(f"samples {r['samples']}, the shard holds {samples}")
if r["answers"] != answers: bad.append(f"answers {r['answers']}, the shard has {answers} labelled tokens")
want = f"evaluated {samples} samples (the data holds {samples}; --samples 1000 asked for more)"
if want not in open(txt).read(): bad.append(f"stdout lacks '{want}'")
if any(v is not None for v in r["acc_by_distance"] + r["loss_by_distance"]): bad.append("distance buckets of shards not null")
if len(sys.argv) > 5:  # the plot: accuracy and loss against position, one point per non-empty bucket
    gp = open(sys.argv[5]).read()
    for t in ("accuracy against position", "loss against position"):
        if f"set title '{t}'" not in gp: bad.append(f"plot lacks '{t}'")
    if "against distance" in gp: bad.append("the plot of shards has distance panels")
if bad: sys.exit("; ".join(bad))
print(samples)
PY
)
  check $? "eval --samples 1000 on the shard"
  echo "eval: the shard holds ${n:-?} samples"
  if [ -n "$n" ]; then
    ev exact --data data.tok --seq-len 64 --samples "$n"
    ev fewer --data data.tok --seq-len 64 --samples $((n - 1))
    la=$(field all.json eval_loss); le=$(field exact.json eval_loss)
    echo "eval: loss with --samples 1000 $la, with --samples $n $le"
    check $([ -n "$la" ] && [ "$la" = "$le" ] && [ "$(field exact.json samples)" = "$n" ]; echo $?) "--samples 1000 ($la) and --samples $n ($le) differ"
    check $([ "$(field fewer.json samples)" = $((n - 1)) ] && ! grep -q "asked for more" fewer.txt exact.txt; echo $?) \
      "--samples $((n - 1)) or $n: $(head -n 1 fewer.txt)"
  fi
  # the kv task at T = 256: no answers in the context (positions 0..127), none 192 or more tokens
  # back from their fact; those buckets are null in the JSON, '-' in the table, not plotted
  ev kv --task kv --seq-len 256 --samples 2
  grep -A 16 "tokens back" kv.txt
  python3 - kv.json kv.txt ${PLOT:+kv.gp} <<'PY'
import json, sys
def strict(x): raise ValueError(f"{x} is not JSON")
r = json.loads(open(sys.argv[1]).read(), parse_constant=strict)
rows = [l.split() for l in open(sys.argv[2]) if l.startswith("  ") and ".." in l]
bad, empty = [], 0
for kind in ("distance", "position"):
    n = r[f"n_by_{kind}"]
    for key in (f"acc_by_{kind}", f"loss_by_{kind}"):
        for b, (cnt, v) in enumerate(zip(n, r[key])):
            if (cnt == 0) != (v is None): bad.append(f"{key}[{b}] = {v} with {cnt} answers")
    empty += n.count(0)
if r["n_by_position"][:4] != [0] * 4 or 0 not in r["n_by_distance"]: bad.append(f"no empty buckets: {r}")
dashes = sum(1 for w in rows if w[1] == "0" and w[2:] == ["-", "-"])
if dashes != empty or len(rows) != 16: bad.append(f"table: {dashes} rows with '-' of {len(rows)}, want {empty} of 16")
if len(sys.argv) > 3:  # gnuplot: 4 panels, each with one point per non-empty bucket
    panels = open(sys.argv[3]).read().split("plot '-'")[1:]
    points = [len(p.split("\ne\n")[0].strip().splitlines()) - 1 for p in panels]
    want = [8 - r["n_by_distance"].count(0)] * 2 + [8 - r["n_by_position"].count(0)] * 2
    if points != want: bad.append(f"plot points per panel {points}, want {want}")
if bad: sys.exit("; ".join(bad))
PY
  check $? "kv eval: empty buckets"
  ;;
progress)
  corpus 20
  T="train --model $HERE/fixtures/hf_tiny --data data.tok --seq-len 64 --steps 4 --sp 2 --device cpu"
  bars() { grep -c $'\r\\[' "$1"; }        # live-line updates
  lines() { grep -c '^step [0-9]' "$1"; }   # plain lines
  pr() { # pr OUT.txt ARGS: train on 2 ranks, stderr in OUT.txt
    local out=$1; shift
    $MPIRUN -np 2 "$BIN" $T "$@" > /dev/null 2> "$out"
    check $? "train $*: $(tail -n 3 "$out")"
  }
  pr auto.txt
  pr lines.txt --progress lines
  pr bar.txt --progress bar
  pr lines_auto.txt --progress auto
  for f in auto lines bar lines_auto; do echo "progress: $f into a file: $(bars $f.txt) line(s) with the live bar, $(lines $f.txt) plain lines"; done
  check $([ "$(bars auto.txt)" -eq 0 ] && [ "$(lines auto.txt)" -eq 4 ]; echo $?) "auto into a file is not 4 plain lines"
  check $([ "$(bars lines.txt)" -eq 0 ] && [ "$(lines lines.txt)" -eq 4 ]; echo $?) "--progress lines is not 4 plain lines"
  check $([ "$(bars lines_auto.txt)" -eq 0 ] && [ "$(lines lines_auto.txt)" -eq 4 ]; echo $?) "--progress auto into a file is not 4 plain lines"
  check $([ "$(bars bar.txt)" -eq 1 ] && [ "$(grep -o $'\r\\[' bar.txt | wc -l)" -eq 4 ] && [ "$(lines bar.txt)" -eq 0 ]; echo $?) \
    "--progress bar is not one live line of 4 updates"
  $MPIRUN -np 2 "$BIN" demo --steps 2 --seq-len 256 --eval-every 2 --eval-samples 2 --dir d --device cpu --progress bar \
    > /dev/null 2> demo.txt
  check $([ $? -eq 0 ] && [ "$(grep -o $'\r\\[' demo.txt | wc -l)" -eq 2 ]; echo $?) "demo --progress bar: $(tail -n 2 demo.txt)"
  expect_error 2 "\-\-progress sometimes: expected auto, bar or lines" $T --progress sometimes
  # a pseudo-terminal for mpirun, as an interactive shell gives it (script(1) needs a stdin:
  # with none it records nothing)
  if command -v script > /dev/null && script -qec "echo pty-ok" t.txt < /dev/null > /dev/null && grep -q pty-ok t.txt; then
    script -qec "$MPIRUN -np 2 $BIN $T" pty.txt < /dev/null > /dev/null
    check $? "train under script failed: $(tail -n 3 pty.txt)"
    script -qec "$MPIRUN -np 2 $BIN $T 2> inner.txt" pty2.txt < /dev/null > /dev/null
    echo "progress: mpirun on a terminal: $(bars pty.txt) line(s) with the live bar, $(lines pty.txt) plain lines; its stderr in a file: $(bars inner.txt), $(lines inner.txt)"
    check $([ "$(bars pty.txt)" -eq 1 ] && [ "$(lines pty.txt)" -eq 0 ]; echo $?) "auto under mpirun on a terminal: no live line"
    check $([ "$(bars inner.txt)" -eq 0 ] && [ "$(lines inner.txt)" -eq 4 ]; echo $?) "auto with mpirun's stderr in a file: not plain lines"
  else
    echo "progress: no working script(1): the terminal cases are not checked"
  fi
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
