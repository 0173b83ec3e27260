#!/usr/bin/env bash
# End-to-end tests through the command line. Usage: cli_test.sh BIN CASE
#   overfit   a tiny model overfits a tiny batch: the metrics file ends with loss < 0.1
#   badinput  bad flags and files: one clear message naming the flag/file, non-zero exit, no output
#   mesh      10 steps on meshes (sp, dp) equal the single-process run (losses within 1e-4)
#   plan      `ulysses plan`: the table, the largest seq_len monotone in --gpu-mem, bad flags;
#             train's allocation equals its plan; train refuses a plan over --gpu-mem up front;
#             --offload-checkpoints gives the same 10 steps as without; --tiled-mlp auto under a
#             --gpu-mem the untiled plan does not fit picks a tile, fits, and trains the same 10
#             losses as the untiled run (rel 1e-5), where --tiled-mlp off is refused
#   evaldata  --eval-data during training: eval_loss and eval_tokens at each evaluation equal
#             `ulysses eval --data` on the checkpoint of that step (1 process), and the same
#             evaluations on sp = 2 and dp = 2 meshes (rel 1e-5); every sample once
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
CASE=$2
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"

tiny_config() {
  cat > tiny.json <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": $1,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "rope_theta": 10000.0,
 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}}
JSON
}

last_loss() { tail -n 1 "$1" | sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/'; }

case "$CASE" in
overfit)
  printf 'the quick brown fox jumps over the lazy dog and keeps running far away\n' > one.txt
  "$BIN" tokenize --bytes one.txt -o one.tok > /dev/null
  check $? "tokenize"
  tiny_config 2
  OMP_NUM_THREADS=1 "$BIN" train --model tiny.json --data one.tok --seq-len 64 --batch 1 --steps 150 --lr 1e-2 \
    --warmup 10 --weight-decay 0 --seed 3 --metrics m.jsonl --out model --quiet
  check $? "train exited non-zero"
  loss=$(last_loss m.jsonl)
  n=$(wc -l < m.jsonl)
  echo "overfit: $n steps, final loss $loss"
  check $([ "$n" -eq 150 ]; echo $?) "metrics has $n lines, expected 150"
  awk -v l="$loss" 'BEGIN { exit !(l < 0.1) }'
  check $? "final loss $loss is not < 0.1"
  for k in step loss grad_norm lr tokens tok_per_s elapsed_s; do
    grep -q "\"$k\": " m.jsonl; check $? "metrics lack $k"
  done
  test -f model/config.json && test -f model/model.safetensors
  check $? "model directory incomplete"
  # --profile: the phase times are there and, being disjoint intervals inside the step,
  # add up to no more than the step time
  OMP_NUM_THREADS=1 "$BIN" train --model tiny.json --data one.tok --seq-len 64 --batch 1 --steps 3 --profile \
    --metrics p.jsonl --quiet
  check $? "train --profile exited non-zero"
  awk '{ for (i = 1; i <= NF; i++) { gsub(/[",{}]/, "", $i) } print }' p.jsonl | awk '
    { for (i = 1; i < NF; i++) v[$i] = $(i + 1); n++
      if (!("attn_s:" in v) || !("loss_s:" in v) || !("optim_s:" in v)) bad = 1
      else if (v["attn_s:"] < 0 || v["loss_s:"] < 0 || v["optim_s:"] < 0 ||
               v["attn_s:"] + v["loss_s:"] + v["optim_s:"] > v["step_s:"]) bad = 1 }
    END { exit !(n == 3 && !bad) }'
  check $? "--profile metrics missing or inconsistent: $(head -1 p.jsonl)"
  ;;
badinput)
  corpus 40
  tiny_config 2
  printf 'garbage' > bad.tok
  head -c 100 data.tok > trunc.tok
  mkdir -p badmodel && printf '{"vocab_size": 256' > badmodel/config.json
  sed -e "s/\"num_attention_heads\": 4, \"num_key_value_heads\": 2/\"num_attention_heads\": 6, \"num_key_value_heads\": 3, \"head_dim\": 8/" tiny.json > kv3.json
  sed -e 's/"hidden_act": *"[a-z]*"//' tiny.json | sed -e 's/"model_type": "llama"/"model_type": "llama", "hidden_act": "gelu"/' > gelu.json
  expect() { expect_error "$@"; } # testlib.sh
  T="train --data data.tok --seq-len 64 --steps 2 --batch 2 --quiet"
  expect 1 "no-such.json" $T --model no-such.json
  expect 2 "badmodel/config.json" $T --model badmodel
  expect 1 "hidden_act" $T --model gelu.json
  expect 2 "bad.tok" train --model tiny.json --data bad.tok --seq-len 64 --steps 2 --batch 2
  expect 1 "trunc.tok" train --model tiny.json --data trunc.tok --seq-len 64 --steps 2
  expect 2 "no file matches" train --model tiny.json --data "nothing-*.tok" --seq-len 64 --steps 2 --batch 2
  expect 1 "\-\-lr" $T --model tiny.json --lr abc
  expect 1 "\-\-bogus" $T --model tiny.json --bogus 3
  expect 1 "tokenize corpus.txt: name the tokenizer before the files: --bytes FILE" tokenize corpus.txt -o x.tok
  expect 2 "mesh" $T --model tiny.json --sp 4
  expect 2 "\-\-sp 3" $T --model tiny.json --sp 3 --dp-shard 1 --dp-replicate 1
  expect 2 "\-\-batch" $T --model tiny.json --dp-shard 2 --batch 3
  expect 1 "cannot fill" train --model tiny.json --data data.tok --seq-len 100000 --steps 2
  expect 2 "shorter than --sp" train --model tiny.json --data data.tok --seq-len 1 --steps 2 --sp 2 --batch 2
  expect 1 "no-such-dir" $T --model tiny.json --init no-such-dir
  expect 3 "attention heads" $T --model tiny.json --sp 3 --batch 3
  expect 2 "\-\-zero 5: expected 0, 1, 2 or 3" $T --model tiny.json --zero 5
  expect 2 "\-\-offload-optimizer: needs \-\-zero 1, 2 or 3" $T --model tiny.json --offload-optimizer
  expect 2 "kv heads" train --model kv3.json --data data.tok --seq-len 64 --steps 2 --sp 2 --batch 2
  # --plot without a working gnuplot: refused before training (UL_GNUPLOT names a stand-in
  # that fails; PATH cannot be used: mpirun started by absolute path puts its own bin first)
  printf '#!/bin/sh\nexit 1\n' > nognuplot && chmod +x nognuplot
  export UL_GNUPLOT=$PWD/nognuplot
  expect 2 "\-\-plot: the plot needs gnuplot" $T --model tiny.json --plot p.png
  unset UL_GNUPLOT
  # a mistyped kernel choice is refused, not run as the default (UL_ATTN_KERNEL=deterministic
  # would otherwise give the non-reproducible default); checked on the CPU too
  export UL_ATTN_KERNEL=determinstic
  expect 2 "environment variable UL_ATTN_KERNEL=determinstic: unknown value; expected one of default, fused," \
    $T --model tiny.json --sp 2 --batch 2
  unset UL_ATTN_KERNEL
  export UL_ATTN_FWD=pin
  expect 1 "UL_ATTN_FWD=pin: unknown value; expected one of ovpp, serial" $T --model tiny.json
  unset UL_ATTN_FWD
  # so are the kernels' test knobs (a mistyped one would test something else than asked)
  export UL_CPU_ATTN_ISA=avx3
  expect 2 "environment variable UL_CPU_ATTN_ISA=avx3: unknown value; expected one of avx512, avx2, base" \
    $T --model tiny.json --sp 2 --batch 2
  unset UL_CPU_ATTN_ISA
  export UL_ATTN_DQ_HEADS=0
  expect 1 "environment variable UL_ATTN_DQ_HEADS=0: expected a positive integer" $T --model tiny.json
  unset UL_ATTN_DQ_HEADS
  expect 1 "\-\-offload-checkpoints" $T --model tiny.json --offload-checkpoints
  expect 1 "\-\-offload-layers: needs \-\-offload-checkpoints" $T --model tiny.json --checkpoint 1 --offload-layers 1
  expect 1 "\-\-offload-layers x: expected auto, all" $T --model tiny.json --checkpoint 1 --offload-checkpoints --offload-layers x
  expect 2 "\-\-gpu-mem" $T --model tiny.json --gpu-mem 0.0001 --sp 2 --batch 2
  expect 1 "\-\-gpu-mem" $T --model tiny.json --gpu-mem -1
  expect 2 "\-\-tiled-mlp 12x: expected auto, off" $T --model tiny.json --tiled-mlp 12x --sp 2 --batch 2
  expect 1 "\-\-tiled-mlp \-3: expected auto, off" $T --model tiny.json --tiled-mlp -3
  echo "badinput: $checks checks"
  ;;
mesh)
  corpus 200
  tiny_config "${HKV:-2}"
  run() { # run NP OUT ARGS...
    local np=$1 out=$2; shift 2
    OMP_NUM_THREADS=1 $MPIRUN -np "$np" "$BIN" train --model tiny.json --data data.tok --seq-len 96 --batch 4 \
      --grad-accum 2 --steps 10 --lr 3e-3 --warmup 2 --seed 11 --metrics "$out" --quiet "$@"
    check $? "train np=$np $* failed"
  }
  run 1 ref.jsonl
  for mesh in "2 --sp 2" "2 --dp-shard 2" "4 --sp 2 --dp-shard 2" "4 --sp 4" "4 --sp 2 --dp-replicate 2" "2 --sp 2 --checkpoint 1" "2 --sp 2 --tiled-mlp 16 --checkpoint 1" "4 --sp 4 --checkpoint 2"; do
    set -- $mesh
    np=$1; shift
    run "$np" got.jsonl "$@"
    worst=$(paste -d' ' <(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' ref.jsonl) \
                         <(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' got.jsonl) |
            awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > w) w = r } END { printf "%.3g", w }')
    n=$(wc -l < got.jsonl)
    echo "mesh np=$np $*: 10-step losses worst rel diff $worst vs 1 process"
    check $([ "$n" -eq 10 ]; echo $?) "np=$np $*: $n metric lines"
    awk -v w="$worst" 'BEGIN { exit !(w <= 1e-4) }'
    check $? "np=$np $*: losses differ by $worst > 1e-4"
  done
  ;;
plan)
  tiny_config 2
  "$BIN" plan --model tiny.json --gpus 2 --sp 2 --seq-len 4096 --checkpoint 1 --device cpu --gpu-mem 1 > p.txt 2> e.txt
  check $? "plan failed: $(cat e.txt)"
  for k in "layer inputs" "master weights fp32" "AdamW m + v" "per rank total" "largest seq_len that fits"; do
    grep -q "$k" p.txt; check $? "plan output lacks '$k'"
  done
  # stage 3: sharded weights, two gathered units, one unit's gradients; less per GPU than stage 2
  for z in 2 3; do
    "$BIN" plan --model tiny.json --gpus 2 --sp 2 --seq-len 4096 --checkpoint 1 --device cpu --zero $z > pz$z.txt 2> e.txt
    check $? "plan --zero $z failed: $(cat e.txt)"
  done
  for k in "weights working copy (shard)" "gathered unit weights (x2)" "gradients of one unit fp32"; do
    grep -q "$k" pz3.txt; check $? "plan --zero 3 output lacks '$k'"
  done
  t2=$(sed -n 's/^per rank total: .*(\([0-9]*\) bytes)/\1/p' pz2.txt)
  t3=$(sed -n 's/^per rank total: .*(\([0-9]*\) bytes)/\1/p' pz3.txt)
  echo "plan: per GPU --zero 2 $t2 bytes, --zero 3 $t3 bytes"
  check $([ -n "$t3" ] && [ "$t3" -lt "$t2" ]; echo $?) "plan: --zero 3 ($t3) not below --zero 2 ($t2)"
  prev=0
  for g in 0.001 0.01 0.1 1; do
    n=$("$BIN" plan --model tiny.json --gpus 2 --sp 2 --seq-len 64 --checkpoint 2 --offload-checkpoints --device cpu --gpu-mem $g |
        sed -n 's/^largest seq_len that fits: //p')
    echo "plan: --gpu-mem $g GiB -> largest seq_len $n"
    check $([ -n "$n" ] && [ "$n" -gt "$prev" ]; echo $?) "largest seq_len $n at --gpu-mem $g is not above $prev"
    prev=${n:-0}
  done
  check $([ "$prev" -gt 0 ]; echo $?) "nothing fits 1 GiB"
  # bad input: one clear error naming the flag, non-zero exit
  pexpect() {
    local pat=$1; shift
    "$BIN" plan "$@" > o.txt 2> e.txt
    local rc=$? n
    n=$(grep -c "ulysses: error" e.txt)
    checks=$((checks + 1))
    if [ $rc -eq 0 ] || [ "$n" -ne 1 ] || ! grep -q -- "$pat" e.txt; then
      echo "FAIL: plan $* -> rc $rc, $n error lines, want '$pat':"; cat e.txt; fail=$((fail + 1))
    fi
  }
  pexpect "\-\-bogus" --model tiny.json --bogus 1
  pexpect "\-\-zero 4" --model tiny.json --zero 4
  pexpect "\-\-gpus 3" --model tiny.json --gpus 3 --sp 2
  pexpect "\-\-checkpoint 3" --model tiny.json --checkpoint 3
  pexpect "\-\-offload-checkpoints" --model tiny.json --offload-checkpoints
  pexpect "\-\-model" --sp 1
  pexpect "\-\-tiled-mlp sometimes" --model tiny.json --tiled-mlp sometimes
  pexpect "\-\-offload-gradients lots" --model tiny.json --zero 3 --offload-optimizer --offload-gradients lots
  pexpect "\-\-offload-gradients 1: with --zero 1 or 2" --model tiny.json --zero 2 --offload-optimizer --offload-gradients 1
  pexpect "\-\-offload-gradients: needs --offload-optimizer" --model tiny.json --zero 3 --offload-gradients all
  # the gradient offload: all units' gradients on the host (3 of 4 tiny units: the rest on the device)
  for g in all 3 off; do
    "$BIN" plan --model tiny.json --gpus 2 --sp 2 --seq-len 4096 --checkpoint 1 --device cpu --zero 3 \
      --offload-optimizer --offload-gradients $g > pg$g.txt 2> e.txt
    check $? "plan --offload-gradients $g failed: $(cat e.txt)"
  done
  grep -q "gradients in host memory: all 4 units" pgall.txt; check $? "plan --offload-gradients all: $(head -3 pgall.txt)"
  grep -q "gradients fp32 (shard, 3 units on the host)" pg3.txt; check $? "plan --offload-gradients 3 lacks the host item"
  ga=$(sed -n 's/^per rank total: .*(\([0-9]*\) bytes)/\1/p' pgall.txt)
  goff=$(sed -n 's/^per rank total: .*(\([0-9]*\) bytes)/\1/p' pgoff.txt)
  check $([ -n "$ga" ] && [ "$ga" -lt "$goff" ]; echo $?) "plan: gradients offloaded ($ga) not below on the device ($goff)"
  # train: what model and optimizer allocate equals the plan's exact items, byte for byte
  corpus 200
  for opts in "--checkpoint 0" "--checkpoint 2 --offload-checkpoints --tiled-mlp 16"; do
    OMP_NUM_THREADS=1 $MPIRUN -np 2 "$BIN" train --model tiny.json --data data.tok --seq-len 96 --batch 2 --steps 1 \
      --sp 2 --device cpu $opts > o.txt 2> e.txt
    check $? "train $opts failed: $(cat e.txt)"
    line=$(grep "memory plan" e.txt)
    echo "plan: train $opts: ${line#*; }"
    got=$(echo "$line" | sed -n 's/.*allocated \([0-9]*\) device + \([0-9]*\) host bytes (plan: \([0-9]*\) + \([0-9]*\)).*/\1 \2 \3 \4/p')
    set -- $got
    check $([ $# -eq 4 ] && [ "$1" = "$3" ] && [ "$2" = "$4" ]; echo $?) "train $opts: allocated vs plan: '$got'"
  done
  grep -q "checkpoint offload: [1-9][0-9]* bytes" e.txt
  check $? "the offload run does not report the bytes sent to the host"
  # the same 10 steps with and without --offload-checkpoints
  run() {
    local np=$1 out=$2; shift 2
    OMP_NUM_THREADS=1 $MPIRUN -np "$np" "$BIN" train --model tiny.json --data data.tok --seq-len 96 --batch 4 \
      --grad-accum 2 --steps 10 --lr 3e-3 --warmup 2 --seed 11 --metrics "$out" --quiet "$@"
    check $? "train np=$np $* failed"
  }
  for m in "1 --checkpoint 1" "2 --sp 2 --checkpoint 2"; do
    set -- $m
    np=$1; shift
    run "$np" a.jsonl "$@"
    la=$(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' a.jsonl | tr '\n' ' ')
    for off in "" "--offload-layers 1" "--offload-layers auto"; do
      run "$np" b.jsonl "$@" --offload-checkpoints $off
      lb=$(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' b.jsonl | tr '\n' ' ')
      echo "plan: np=$np $* $off 10 losses without/with offload equal: $([ "$la" = "$lb" ] && echo yes || echo no)"
      check $([ "$la" = "$lb" ] && [ $(wc -l < b.jsonl) -eq 10 ]; echo $?) "np=$np $* $off: offload changes the losses"
      grep -q '"offload_s": ' b.jsonl; check $? "metrics lack offload_s"
    done
  done
  # --tiled-mlp auto: a --gpu-mem 1 KiB under the untiled plan (seq_len 512: tiles of 64..448 rows)
  P="--model tiny.json --seq-len 512 --device cpu"
  B=$("$BIN" plan $P --tiled-mlp off | sed -n 's/^per rank total: .*(\([0-9]*\) bytes)$/\1/p')
  G=$(awk -v b="$B" 'BEGIN { printf "%.12f", (b - 1024) / 1073741824 }')
  "$BIN" plan $P --gpu-mem "$G" > pa.txt
  "$BIN" plan $P --gpu-mem "$G" --tiled-mlp off > po.txt
  tile=$(sed -n 's/.*tiled-mlp auto: \([0-9]*\) rows.*/\1/p' pa.txt)
  echo "plan: untiled $B bytes; --gpu-mem $G: auto tile ${tile:-none}, fits: $(sed -n 's/^fits.*: //p' pa.txt), off fits: $(sed -n 's/^fits.*: //p' po.txt)"
  check $([ -n "$B" ] && [ -n "$tile" ] && [ "$tile" -gt 0 ] && [ "$tile" -lt 512 ] && [ $((tile % 64)) -eq 0 ]; echo $?) "plan: auto tile '$tile' under --gpu-mem $G"
  grep -q "^fits .*: yes" pa.txt; check $? "plan: --tiled-mlp auto does not fit --gpu-mem $G"
  grep -q "^fits .*: NO" po.txt; check $? "plan: --tiled-mlp off fits --gpu-mem $G"
  "$BIN" plan --model tiny.json --seq-len 512 --device cpu > pf.txt
  grep -q "tiled-mlp auto: untiled" pf.txt; check $? "plan: auto tiles with plenty of memory: $(head -n 1 pf.txt)"
  T="--model tiny.json --data data.tok --seq-len 512 --batch 2 --steps 10 --lr 3e-3 --warmup 2 --seed 5 --device cpu --quiet"
  OMP_NUM_THREADS=1 "$BIN" train $T --tiled-mlp off --metrics off.jsonl 2> e.txt
  check $? "train --tiled-mlp off (no limit) failed: $(cat e.txt)"
  OMP_NUM_THREADS=1 "$BIN" train $T --gpu-mem "$G" --metrics auto.jsonl 2> e.txt
  check $? "train --tiled-mlp auto --gpu-mem $G failed: $(cat e.txt)"
  OMP_NUM_THREADS=1 "$BIN" train ${T% --quiet} --gpu-mem "$G" --steps 1 2> e.txt
  grep -q "tiled-mlp auto: $tile rows;" e.txt; check $? "train's plan line lacks 'tiled-mlp auto: $tile rows': $(grep 'memory plan' e.txt)"
  OMP_NUM_THREADS=1 "$BIN" train $T --gpu-mem "$G" --tiled-mlp off --metrics no.jsonl 2> e.txt
  check $([ $? -ne 0 ] && grep -q "does not fit \-\-gpu-mem" e.txt && [ ! -s no.jsonl ]; echo $?) "train --tiled-mlp off --gpu-mem $G is not refused: $(cat e.txt)"
  worst=$(paste -d' ' <(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' off.jsonl) <(sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' auto.jsonl) |
          awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > w) w = r; n++ } END { printf "%.3g %d", w, n }')
  echo "plan: 10 losses untiled vs --tiled-mlp auto ($tile rows): max rel diff ${worst% *}"
  check $(awk -v w="$worst" 'BEGIN { split(w, a, " "); exit !(a[2] == 10 && a[1] <= 1e-5) }'; echo $?) "auto tile changes the losses: $worst"
  ;;
evaldata)
  corpus 60
  mv data.tok train.tok
  awk 'BEGIN { srand(11); for (d = 0; d < 9; d++) { len = 20 + int(rand() * 150); s = "";
      for (i = 0; i < len; i++) s = s sprintf("%c", 97 + int(rand() * 26)); print s; print "" } }' > val.txt
  "$BIN" tokenize --bytes val.txt --split-blank-lines -o val.tok > /dev/null
  tiny_config 2
  E="--model tiny.json --data train.tok --eval-data val.tok --seq-len 96 --batch 4 --steps 6 --lr 3e-3 --seed 5 --quiet"
  OMP_NUM_THREADS=1 "$BIN" train $E --eval-every 3 --save-every 3 --ckpt-dir ck --metrics m1.jsonl 2> e.txt
  check $? "train --eval-data failed: $(cat e.txt)"
  check $([ "$(grep -c eval_loss m1.jsonl)" = 2 ] && [ "$(sed -n 3p m1.jsonl | grep -c '"eval_tokens"')" = 1 ] &&
    [ "$(sed -n 6p m1.jsonl | grep -c '"eval_loss"')" = 1 ]; echo $?) "eval_loss not at steps 3 and 6: $(cat m1.jsonl)"
  for st in 3 6; do
    OMP_NUM_THREADS=1 "$BIN" eval --model "ck/$(printf 'step-%08d' $st)" --data val.tok --seq-len 96 --samples 1000       --out r$st.jsonl > o.txt 2> e.txt
    check $? "eval of the step-$st checkpoint failed: $(cat e.txt)"
    a=$(sed -n ${st}p m1.jsonl | sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/')
    b=$(sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/' r$st.jsonl)
    na=$(sed -n ${st}p m1.jsonl | sed -e 's/.*"eval_tokens": \([0-9]*\).*/\1/')
    nb=$(sed -e 's/.*"answers": \([0-9]*\).*/\1/' r$st.jsonl)
    echo "evaldata: step $st: training's eval_loss $a over $na tokens, eval's $b over $nb"
    check $(awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-6 * a) }'; echo $?) \
      "step $st: eval_loss $a during training, $b from ulysses eval"
    check $([ -n "$na" ] && [ "$na" = "$nb" ]; echo $?) "step $st: eval_tokens $na, eval answers $nb"
  done
  # every label of the held-out data once: tokens - pieces (a document longer than --seq-len is
  # cut into pieces of 96; the last token of each piece has no label)
  want=$(awk 'BEGIN { RS = ""; n = 0; d = 0 } { n += length($0); d += int((length($0) + 95) / 96) } END { print n - d }' val.txt)
  check $([ "$(sed -n 3p m1.jsonl | sed -e 's/.*"eval_tokens": \([0-9]*\).*/\1/')" = "$want" ]; echo $?) \
    "eval_tokens is not every labelled token of val.tok ($want)"
  for mesh in "2 --sp 2" "2 --dp-shard 2"; do
    OMP_NUM_THREADS=1 $MPIRUN -np ${mesh%% *} "$BIN" train $E ${mesh#* } --eval-every 3 --metrics m2.jsonl 2> e.txt
    check $? "np ${mesh}: train --eval-data failed: $(cat e.txt)"
    worst=$(paste -d' ' <(grep eval_loss m1.jsonl | sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/') \
                        <(grep eval_loss m2.jsonl | sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/') |
            awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > w) w = r; n++ } END { printf "%.3g %d", w, n }')
    echo "evaldata: ${mesh#* }: eval_loss vs one process: max rel diff ${worst% *} over ${worst#* } evaluations"
    check $(awk -v w="$worst" 'BEGIN { split(w, a, " "); exit !(a[2] == 2 && a[1] <= 1e-5) }'; echo $?) \
      "${mesh#* }: eval_loss differs from one process: $worst"
  done
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
