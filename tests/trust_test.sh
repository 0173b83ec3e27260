#!/usr/bin/env bash
# Trust: a user's files and runs are never lost (issue 17). Usage: trust_test.sh BIN CASE
#   outputs    foreign files planted in every output location survive a run; every output
#              location that cannot be written is refused before step 1, with no output
#   nonfinite  NaN/Inf in --init weights is one error naming the tensor (ZeRO 0 and 1);
#              a non-finite loss stops the run naming the step: metrics stay valid JSON
#              (null), no model is written and the last good checkpoint stays the latest
#   signal     SIGTERM at a random step: the ranks stop at a step boundary with a complete
#              checkpoint and exit 143; --resume then ends exactly like the straight run
#   extend     --resume with a larger --steps continues (the schedule rebuilt for the new
#              total, as the straight run of that length has it from there on); resuming a
#              finished run says there is nothing to do and writes nothing
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
BIN=$(readlink -f "$1")
CASE=$2
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"

cat > tiny.json <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "rope_theta": 10000.0}
JSON
corpus 120
T="--data data.tok --seq-len 96 --batch 4 --lr 3e-3 --warmup 2 --seed 11 --quiet"

# refused NAME PATTERN ARGS...: a run that must fail before step 1 with one error naming
# PATTERN and create nothing new in the working directory
refused() {
  local name=$1 pat=$2; shift 2
  local before after
  before=$(find . ! -name o.txt ! -name e.txt | sort)
  $MPIRUN -np 2 "$BIN" "$@" > o.txt 2> e.txt
  local rc=$?
  after=$(find . ! -name o.txt ! -name e.txt | sort)
  local n
  n=$(grep -c "ulysses: error" e.txt)
  checks=$((checks + 1))
  if [ $rc -eq 0 ] || [ "$n" -ne 1 ] || ! grep -q -- "$pat" e.txt || [ "$before" != "$after" ] ||
    grep -q "^step \|loss" e.txt; then
    echo "FAIL: $name: rc $rc, $n error lines, want '$pat':"; cat e.txt
    diff <(echo "$before") <(echo "$after") | head
    fail=$((fail + 1))
  else
    echo "$name: $(grep 'ulysses: error' e.txt | cut -c1-160)"
  fi
}

# no_nan FILE: every line parses as JSON (Python's json rejects nan and inf)
json_ok() { python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$1"; }

case "$CASE" in
outputs)
  # the issue's report: --out DIR replaced DIR whole
  mkdir -p proj/step-00000002 ck
  cp data.tok proj/data.tok
  echo precious > proj/notes.txt
  echo earlier > proj/step-00000002/COMPLETE
  echo mine > ck/mine.txt
  $MPIRUN -np 2 "$BIN" train --model tiny.json $T --data proj/data.tok --steps 4 --out proj --save-every 2 \
    --ckpt-dir ck --metrics proj/m.jsonl > o.txt 2> e.txt
  check $? "training into a directory holding the user's files failed: $(cat e.txt)"
  check $([ "$(cat proj/notes.txt)" = precious ] && cmp -s proj/data.tok data.tok &&
    [ "$(cat proj/step-00000002/COMPLETE)" = earlier ] && [ "$(cat ck/mine.txt)" = mine ]; echo $?) \
    "foreign files did not survive: $(ls -R proj ck)"
  check $([ -f proj/config.json ] && [ -f proj/model.safetensors ] && [ -f ck/step-00000004/COMPLETE ]; echo $?) \
    "the model or the checkpoint is missing: $(ls -R proj ck)"
  # a second run over the same --out replaces only its two files, and --out . works
  before=$(cmp proj/model.safetensors proj/model.safetensors && stat -c %i proj/notes.txt)
  $MPIRUN -np 2 "$BIN" train --model tiny.json $T --data proj/data.tok --steps 2 --seed 5 --out proj > o.txt 2> e.txt
  check $? "the second run into proj failed: $(cat e.txt)"
  check $([ "$(stat -c %i proj/notes.txt)" = "${before#*$'\n'}" ] && [ "$(cat proj/notes.txt)" = precious ] &&
    [ -d proj/step-00000002 ] && [ "$(ls proj | grep -c tmp)" = 0 ]; echo $?) "the second run touched other files: $(ls proj)"
  mkdir here && cp data.tok here/ && echo keep > here/keep.txt
  (cd here && $MPIRUN -np 2 "$BIN" train --model ../tiny.json $T --data data.tok --steps 2 --out . > ../o.txt 2> ../e.txt)
  check $? "--out . failed: $(cat e.txt)"
  check $([ -f here/model.safetensors ] && [ "$(cat here/keep.txt)" = keep ]; echo $?) "--out .: $(ls here)"
  # the demo's --dir keeps what else is in it
  mkdir -p dd && echo mine > dd/mine.txt
  $MPIRUN -np 2 "$BIN" demo --dir dd --steps 2 --seq-len 256 --eval-every 2 --eval-samples 1 --quiet > o.txt 2> e.txt
  check $? "demo --dir failed: $(cat e.txt)"
  check $([ "$(cat dd/mine.txt)" = mine ] && [ -f dd/model/model.safetensors ] && [ -f dd/metrics.jsonl ]; echo $?) \
    "demo --dir: $(ls -R dd)"
  # every output location that cannot be written, refused before any work
  cp -r proj initdir
  mkdir cfgdir && cp tiny.json cfgdir/config.json
  echo x > afile
  R="train --model tiny.json $T --steps 2"
  refused "plot parent" "--plot /nonexistent/x.png: the directory /nonexistent does not exist" $R --plot /nonexistent/x.png
  refused "metrics parent" "--metrics nodir/m.jsonl: the directory nodir does not exist" $R --metrics nodir/m.jsonl
  refused "metrics is the data" "--metrics data.tok: is the --data input data.tok" $R --metrics data.tok
  refused "metrics is a dir" "--metrics proj: is a directory" $R --metrics proj
  refused "out is a file" "--out afile: exists and is not a directory" $R --out afile
  refused "out under a file" "--out afile/m: afile is not a directory" $R --out afile/m
  refused "ckpt-dir is a file" "--ckpt-dir afile: exists and is not a directory" $R --save-every 1 --ckpt-dir afile
  refused "out is the init" "--out initdir: is the --init directory initdir" \
    train --init initdir $T --steps 2 --out initdir
  refused "out holds the model config" "would overwrite the --model input cfgdir/config.json" \
    train --model cfgdir/config.json $T --steps 2 --out cfgdir
  refused "two outputs one file" "the same path for two outputs" $R --metrics m.jsonl --plot m.jsonl
  refused "eval-out parent" "--eval-out nodir/e.jsonl: the directory nodir does not exist" \
    train --model tiny.json --task kv --seq-len 64 --batch 2 --steps 2 --eval-every 1 --eval-out nodir/e.jsonl
  refused "eval --out parent" "--out nodir/r.jsonl: the directory nodir does not exist" \
    eval --model proj --data data.tok --seq-len 96 --samples 2 --out nodir/r.jsonl
  refused "eval --plot is the model" "--plot proj/model.safetensors" \
    eval --model proj --data data.tok --seq-len 96 --samples 2 --plot proj/model.safetensors
  UL_GNUPLOT=/nonexistent/gnuplot refused "no gnuplot" "--plot: the plot needs gnuplot" $R --plot p.png
  ;;

nonfinite)
  $MPIRUN -np 1 "$BIN" train --model tiny.json $T --steps 2 --out good > o.txt 2> e.txt
  check $? "making a model failed: $(cat e.txt)"
  python3 - <<'EOF'
import json, shutil, struct
for name, val in (("nan", float("nan")), ("inf", float("inf"))):
    shutil.copytree("good", name)
    p = name + "/model.safetensors"
    b = bytearray(open(p, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    off = 8 + n + h["model.layers.1.mlp.up_proj.weight"]["data_offsets"][0] + 4 * 7
    b[off:off + 4] = struct.pack("<f", val)
    open(p, "wb").write(b)
EOF
  for z in 0 1; do
    refused "init nan zero $z" 'nan/model.safetensors: tensor "model.layers.1.mlp.up_proj.weight" holds a non-finite value (nan at element 7)' \
      train --init nan $T --steps 2 --zero $z --out o
    refused "init inf zero $z" 'tensor "model.layers.1.mlp.up_proj.weight" holds a non-finite value (inf at element 7)' \
      train --init inf $T --steps 2 --zero $z --out o
  done
  # a learning rate that blows the weights up: the loss of step 2 is not finite
  $MPIRUN -np 2 "$BIN" train --model tiny.json $T --steps 8 --lr 1e30 --clip 0 --warmup 0 --save-every 1 \
    --ckpt-dir ck --out bad --metrics m.jsonl > o.txt 2> e.txt
  rc=$?
  grep "ulysses: error" e.txt | cut -c1-200
  step=$(grep -o "error: step [0-9]*" e.txt | grep -o "[0-9]*$")
  check $([ $rc -ne 0 ] && [ -n "$step" ] && [ "$(grep -c 'ulysses: error' e.txt)" = 1 ] &&
    grep -q "training stopped, and no model or checkpoint is written" e.txt; echo $?) "non-finite loss: rc $rc: $(cat e.txt)"
  json_ok m.jsonl
  check $? "metrics.jsonl is not valid JSON: $(cat m.jsonl)"
  check $(grep -q '"loss": null' m.jsonl; echo $?) "the bad step's loss is not null in the metrics"
  last=$(ls ck | grep -v tmp | tail -n 1)
  check $([ ! -e bad/model.safetensors ] && [ "$last" = "$(printf 'step-%08d' $((step - 1)))" ] &&
    [ -f "ck/$last/COMPLETE" ] && grep -q "the latest good checkpoint stays ck/$last" e.txt; echo $?) \
    "after the bad step $step: model written or latest checkpoint $last"
  ;;

signal)
  A="--model tiny.json $T --steps 400 --save-every 1000"
  $MPIRUN -np 2 "$BIN" train $A --ckpt-dir ref --metrics ref.jsonl > o.txt 2> e.txt
  check $? "the straight run failed: $(cat e.txt)"
  k=$((60 + RANDOM % 200))
  $MPIRUN -np 2 "$BIN" train $A --ckpt-dir ck --metrics m.jsonl --log-every 1 > o.txt 2> e.txt &
  pid=$!
  for _ in $(seq 600); do # wait for step k (the metrics are flushed every step)
    [ -f m.jsonl ] && [ "$(wc -l < m.jsonl)" -ge $k ] && break
    sleep 0.05
  done
  pkill -TERM -P $pid -f "$BIN" # the ranks, as srun or Kubernetes signal them
  wait $pid
  rc=$?
  grep "stopped by" e.txt
  s=$(grep -o "after step [0-9]*" e.txt | grep -o "[0-9]*")
  check $([ $rc -ne 0 ] && [ -n "$s" ] && grep -q "exit code 143" e.txt &&
    [ -f "ck/$(printf 'step-%08d' "$s")/COMPLETE" ]; echo $?) "SIGTERM at step ~$k: rc $rc, $(tail -n 3 e.txt)"
  $MPIRUN -np 2 "$BIN" train $A --ckpt-dir ck --metrics m.jsonl --resume ck > o.txt 2> e.txt
  check $? "resume after SIGTERM failed: $(cat e.txt)"
  check $(cmp -s ck/step-00000400/model.safetensors ref/step-00000400/model.safetensors &&
    cmp -s ck/step-00000400/state/part-00001-of-00002.safetensors ref/step-00000400/state/part-00001-of-00002.safetensors
    echo $?) "SIGTERM at step $s + resume differs from the straight run"
  check $([ "$(field m.jsonl loss | tr '\n' ' ')" = "$(field ref.jsonl loss | tr '\n' ' ')" ]; echo $?) \
    "the metrics' losses after SIGTERM + resume differ from the straight run"
  ;;

extend)
  $MPIRUN -np 2 "$BIN" train --model tiny.json $T --steps 20 --save-every 10 --ckpt-dir ref --metrics ref.jsonl > o.txt 2> e.txt
  check $? "the 20-step run failed: $(cat e.txt)"
  $MPIRUN -np 2 "$BIN" train --model tiny.json $T --steps 10 --save-every 10 --ckpt-dir ck --out out \
    --metrics m.jsonl > o.txt 2> e.txt
  check $? "the 10-step run failed: $(cat e.txt)"
  # the finished run again: nothing to do, nothing written
  rm out/model.safetensors
  $MPIRUN -np 2 "$BIN" train --model tiny.json ${T/--quiet/} --steps 10 --save-every 10 --ckpt-dir ck --out out \
    --metrics m.jsonl --resume ck > o.txt 2> e.txt
  check $([ $? -eq 0 ] && grep -q "nothing to do: the checkpoint ck/step-00000010 is at step 10" e.txt &&
    [ ! -e out/model.safetensors ] && [ "$(wc -l < m.jsonl)" = 10 ]; echo $?) "resuming a finished run: $(cat e.txt)"
  # extended to 20 steps: said once; steps 11..20 follow the 20-step schedule
  $MPIRUN -np 2 "$BIN" train --model tiny.json ${T/--quiet/} --steps 20 --save-every 10 --ckpt-dir ck --out out \
    --metrics m.jsonl --resume ck > o.txt 2> e.txt
  check $? "extending to 20 steps failed: $(cat e.txt)"
  grep "note: --steps" e.txt
  check $([ "$(grep -c 'the checkpoint.s run had 10' e.txt)" = 1 ]; echo $?) "the extension is not said once: $(cat e.txt)"
  check $([ "$(field m.jsonl lr | sed -n '11,20p' | tr '\n' ' ')" = "$(field ref.jsonl lr | sed -n '11,20p' | tr '\n' ' ')" ] &&
    [ "$(field m.jsonl lr | sed -n '5p')" != "$(field ref.jsonl lr | sed -n '5p')" ]; echo $?) \
    "the extended schedule: $(field m.jsonl lr | tr '\n' ' ') vs $(field ref.jsonl lr | tr '\n' ' ')"
  check $([ -f out/model.safetensors ] && [ -f ck/step-00000020/COMPLETE ] && [ "$(wc -l < m.jsonl)" = 20 ]; echo $?) \
    "the extended run's outputs"
  ;;
*)
  echo "unknown case $CASE"
  exit 2
  ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
