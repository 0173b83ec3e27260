#!/usr/bin/env bash
# Training-state checkpoints end to end (issue 5). Usage: test_checkpoint.sh BIN CASE FIXTURES
#   exact   10 steps + save + resume + 10 steps == 20 straight steps, bit for bit (1 and 2 ranks):
#           losses, grad norms, weights, optimizer state; metrics truncated and continued;
#           the kv task's metrics and evaluations too; a Qwen3 model's losses on sp=2
#   mesh    a checkpoint of sp=2 resumed on sp=4, sp=2 x dp=2, dp=2, 1 process: losses within
#           1e-5 of the same-mesh resume, weights close
#   bad     missing marker, truncated/missing part, corrupt state, model config that disagrees
#           (also in family, and an --init directory of another family),
#           mesh the state cannot serve, changed flags: one error naming the file/flag, rc != 0
#   crash   a save killed at each stage never leaves a complete-looking checkpoint; the next
#           run resumes from the previous one and ends bit-identical to an uninterrupted run
#   rotate  --keep-last K keeps the K newest; leftovers of interrupted saves are cleaned
#   gpu     on CUDA (1 GPU; sp=2 and sp=2 with ZeRO 3 on two): 10 steps + save + resume +
#           10 steps track 20 straight steps (losses within 2e-3: CUDA reductions use atomics)
#   rope    --init HF_DIR with --rope-theta / --rope-scaling / --max-position-embeddings:
#           applied to training, written into config.json, checked on resume
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
CASE=$2
FIX=$(readlink -f "${3:-.}")
MPIRUN=${MPIRUN:-mpirun}
export OMP_NUM_THREADS=1 # bit-exact comparisons need the same thread count in every run
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"

tiny_config() { # tiny_config FILE ROPE_THETA HIDDEN
  cat > "$1" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": ${3:-32},
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "rope_theta": ${2:-10000.0},
 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}}
JSON
}

# worst |a - b| over two files of numbers, line by line
worst_diff() { paste -d' ' "$1" "$2" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }'; }
# the float32 data of a safetensors file (after its header), one value per line
st_floats() {
  local h
  h=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  od -An -v -tf4 -j $((8 + h)) "$1" | tr -s ' ' '\n' | sed '/^$/d'
}
# train NP ARGS...: the common flags of a small run
T="--model tiny.json --data data.tok --seq-len 96 --batch 4 --grad-accum 2 --steps 20 --lr 3e-3 --warmup 2 --seed 11 --quiet"
train() {
  local np=$1; shift
  $MPIRUN -np "$np" "$BIN" train $T "$@"
}

case "$CASE" in
exact)
  corpus 200
  tiny_config tiny.json
  for mesh in "1" "2 --sp 2"; do
    set -- $mesh
    np=$1; shift
    rm -rf straight ck ck2 m.jsonl s.jsonl t.jsonl
    # 20 straight steps; checkpoints go to --out by default
    train "$np" "$@" --metrics s.jsonl --save-every 10 --out straight
    check $? "np=$np: straight run failed"
    # 10 steps, a checkpoint, the run ends (as if preempted) ...
    train "$np" "$@" --metrics m.jsonl --save-every 10 --ckpt-dir ck --stop-at 10
    check $? "np=$np: first half failed"
    n=$(wc -l < m.jsonl)
    check $([ "$n" -eq 10 ] && [ -f ck/step-00000010/COMPLETE ] && [ ! -e ck/step-00000020 ]; echo $?) \
      "np=$np: after --stop-at 10: $n metric lines, checkpoints: $(ls ck)"
    # ... and resumes from the checkpoint root (its latest complete checkpoint)
    train "$np" "$@" --metrics m.jsonl --save-every 10 --ckpt-dir ck --resume ck --out resumed
    check $? "np=$np: resume failed"
    check $([ "$(field m.jsonl step | tr '\n' ' ')" = "$(seq 1 20 | tr '\n' ' ')" ]; echo $?) \
      "np=$np: the metrics after resume do not hold steps 1..20 once each"
    for k in loss grad_norm lr valid_tokens; do
      cmp -s <(field m.jsonl $k) <(field s.jsonl $k)
      check $? "np=$np: $k of 10 + resume + 10 steps differs from 20 straight steps"
    done
    for f in model.safetensors config.json $(cd straight/step-00000020 && ls state/*); do
      cmp -s ck/step-00000020/$f straight/step-00000020/$f
      check $? "np=$np: step-00000020/$f differs between the resumed and the straight run"
    done
    cmp -s resumed/model.safetensors straight/model.safetensors
    check $? "np=$np: --out model differs between the resumed and the straight run"
    test -f straight/config.json && test -f straight/step-00000010/COMPLETE
    check $? "np=$np: --out should hold the final model and the checkpoints (--ckpt-dir defaults to --out)"
    # resuming into a metrics file that already holds later steps: they are replaced
    cp s.jsonl t.jsonl
    train "$np" "$@" --metrics t.jsonl --resume ck/step-00000010
    check $? "np=$np: resume from a specific checkpoint failed"
    cmp -s <(field t.jsonl step) <(seq 1 20) && cmp -s <(field t.jsonl loss) <(field s.jsonl loss)
    check $? "np=$np: metrics not truncated to the checkpoint's step before appending"
    echo "exact np=$np: 10 + resume + 10 steps == 20 steps (losses, weights, optimizer state bit for bit)"
  done
  # a Qwen3 model (q/k norms, their optimizer state) resumes bit for bit as well
  sed -e 's/LlamaForCausalLM/Qwen3ForCausalLM/; s/"llama"/"qwen3"/' tiny.json > qwen3.json
  rm -rf q3ck q3s.jsonl q3m.jsonl
  T=${T/tiny.json/qwen3.json} train 2 --sp 2 --metrics q3s.jsonl
  T=${T/tiny.json/qwen3.json} train 2 --sp 2 --metrics q3m.jsonl --save-every 10 --ckpt-dir q3ck --stop-at 10 &&
    T=${T/tiny.json/qwen3.json} train 2 --sp 2 --metrics q3m.jsonl --save-every 10 --ckpt-dir q3ck --resume q3ck
  check $? "qwen3: stop + resume failed"
  cmp -s <(field q3m.jsonl loss) <(field q3s.jsonl loss) && grep -q Qwen3ForCausalLM q3ck/step-00000020/config.json
  check $? "qwen3: 10 + resume + 10 steps differ from 20 straight steps"
  # the kv task with evaluations: metrics and --eval-out continue exactly as well
  sed -e 's/"vocab_size": 256/"vocab_size": 1100/' tiny.json > kv.json
  K="--model kv.json --task kv --seq-len 256 --steps 6 --lr 3e-3 --eval-every 2 --eval-samples 2 --sp 2 --seed 3 --quiet"
  $MPIRUN -np 2 "$BIN" train $K --metrics kvs.jsonl --eval-out kvse.jsonl
  check $? "kv: straight run failed"
  $MPIRUN -np 2 "$BIN" train $K --metrics kvr.jsonl --eval-out kvre.jsonl --save-every 3 --ckpt-dir kvck --stop-at 3 &&
    $MPIRUN -np 2 "$BIN" train $K --metrics kvr.jsonl --eval-out kvre.jsonl --save-every 3 --ckpt-dir kvck --resume kvck
  check $? "kv: stop + resume failed"
  # timings differ, and so may alloc_peak_gib: the peak since the process started, and the
  # straight run has held the first evaluation's buffers through steps the resumed one did not
  untimed() { sed -e 's/"tok_per_s.*"elapsed_s": [0-9.]*//' -e 's/"alloc_peak_gib": [0-9.]*//' "$1"; }
  cmp -s kvse.jsonl kvre.jsonl && cmp -s <(untimed kvs.jsonl) <(untimed kvr.jsonl)
  check $? "kv: metrics or evaluations of stop + resume differ from the straight run"
  grep -q '"next_sample":[[:space:]]*40' ck/step-00000010/state.json && grep -q '"world":[[:space:]]*2' ck/step-00000010/state.json
  check $? "state.json lacks the data position or the mesh"
  ;;
mesh)
  corpus 200
  tiny_config tiny.json
  train 2 --sp 2 --metrics m.jsonl --save-every 10 --ckpt-dir ck --stop-at 10
  check $? "save on sp=2 failed"
  train 2 --sp 2 --metrics same.jsonl --resume ck --out same
  check $? "same-mesh resume failed"
  st_floats same/model.safetensors > same.f
  for mesh in "4 --sp 4" "4 --sp 2 --dp-shard 2" "2 --dp-shard 2" "4 --sp 2 --dp-replicate 2 --grad-accum 1" "1"; do
    set -- $mesh
    np=$1; shift
    rm -rf got got.jsonl
    train "$np" "$@" --metrics got.jsonl --resume ck --out got
    check $? "resume on np=$np $* failed"
    n=$(wc -l < got.jsonl)
    wl=$(worst_diff <(field same.jsonl loss) <(field got.jsonl loss))
    st_floats got/model.safetensors > got.f
    ww=$(worst_diff same.f got.f)
    echo "mesh sp=2 -> np=$np $*: 10 resumed losses worst abs diff $wl, weights worst abs diff $ww (vs same-mesh resume)"
    check $([ "$n" -eq 10 ]; echo $?) "np=$np $*: $n metric lines"
    awk -v w="$wl" 'BEGIN { exit !(w <= 1e-5) }'
    check $? "np=$np $*: losses differ by $wl > 1e-5"
    awk -v w="$ww" 'BEGIN { exit !(w <= 1e-4) }'
    check $? "np=$np $*: weights differ by $ww > 1e-4"
  done
  ;;
bad)
  corpus 60
  tiny_config tiny.json
  tiny_config theta.json 500000.0
  tiny_config wide.json 10000.0 48
  "$BIN" tokenize --bytes tiny.json -o other.tok > /dev/null
  train 2 --sp 2 --save-every 10 --ckpt-dir ck --stop-at 10 || check 1 "setup run failed"
  C=ck/step-00000010
  P1=state/part-00001-of-00002.safetensors
  mk() { rm -rf "$1"; cp -r $C "$1"; }
  mk nomark; rm nomark/COMPLETE
  mk trunc; truncate -s 1000 trunc/$P1
  mk trunc2; truncate -s 1000 trunc2/$P1; sed -i -e "/part-00001-of/s/:[[:space:]]*[0-9]*/: 1000/" trunc2/COMPLETE
  mk nopart; rm nopart/$P1
  mk badstate; printf '{"format": "ulys' > badstate/state.json
  mk badstate2; truncate -s 100 badstate2/state.json; sed -i -e "/state.json/s/:[[:space:]]*[0-9]*/: 100/" badstate2/COMPLETE
  mk world; sed -i -e 's/"world":\([[:space:]]*\)2/"world":\13/' world/state.json
  mkdir -p onlybroken/step-00000005 empty
  expect() { local np=$1 pat=$2; shift 2; expect_error "$np" "$pat" train "$@"; } # testlib.sh
  S="$T --sp 2"
  expect 2 "nomark/COMPLETE: missing" $S --resume nomark
  expect 2 "trunc/$P1: 1000 bytes" $S --resume trunc
  expect 2 "trunc2/$P1: tensor" $S --resume trunc2
  expect 2 "nopart/$P1: missing" $S --resume nopart
  expect 2 "badstate/state.json" $S --resume badstate
  expect 2 "badstate2/state.json: not a valid JSON" $S --resume badstate2
  expect 2 "cannot be reassembled" $S --resume world
  expect 4 "\-\-batch 4: must be a positive multiple of dp (4)" $T --resume ck
  expect 2 "config.json: rope_theta" ${S/tiny.json/theta.json} --resume ck
  expect 2 "config.json: hidden_size" ${S/tiny.json/wide.json} --resume ck
  sed -e 's/LlamaForCausalLM/Qwen3ForCausalLM/; s/"llama"/"qwen3"/' tiny.json > qwen3.json
  expect 2 "config.json: the checkpoint is a LlamaForCausalLM" ${S/tiny.json/qwen3.json} --resume ck
  expect 1 "describes a Qwen2ForCausalLM, \-\-model tiny.json a LlamaForCausalLM" $T --init "$FIX/qwen2_tiny"
  expect 2 "config.json: rope_scaling.factor" $S --resume ck --rope-scaling llama3:factor=16
  expect 2 "\-\-lr 0.001 differs" $S --resume ck --lr 1e-3
  expect 2 "\-\-steps 5 is below the checkpoint's step 10" ${S/--steps 20/--steps 5} --resume ck
  expect 2 "\-\-batch 8 differs" ${S/--batch 4/--batch 8} --resume ck
  expect 2 "\-\-seq-len 64 differs" ${S/--seq-len 96/--seq-len 64} --resume ck
  expect 2 "\-\-seed 12 differs" ${S/--seed 11/--seed 12} --resume ck
  expect 2 "other.tok" ${S/data.tok/other.tok} --resume ck
  expect 2 "\-\-stop-at 5" $S --resume ck --stop-at 5
  expect 2 "onlybroken/step-00000005 has no COMPLETE" $S --resume onlybroken
  expect 2 "no checkpoint in it" $S --resume empty
  expect 2 "no-such-dir: no such directory" $S --resume no-such-dir
  expect 2 "\-\-ckpt-dir ck: already holds checkpoints" $S --save-every 5 --ckpt-dir ck
  expect 1 "\-\-rope-scaling llama3:fator=2: unknown key" $T --rope-scaling llama3:fator=2
  expect 1 "\-\-keep-last" $T --keep-last -1
  # the good checkpoint still resumes after all that
  train 2 --sp 2 --resume ck --stop-at 12
  check $? "the intact checkpoint does not resume"
  echo "bad: $checks checks"
  ;;
crash)
  corpus 200
  tiny_config tiny.json
  train 2 --sp 2 --save-every 10 --ckpt-dir ref
  check $? "reference run failed"
  train 2 --sp 2 --save-every 10 --ckpt-dir ck --stop-at 10
  check $? "first half failed"
  for stage in parts files marker; do
    rm -rf c; cp -r ck c
    ULYSSES_DEBUG_CKPT_CRASH=$stage $MPIRUN -x ULYSSES_DEBUG_CKPT_CRASH -np 2 "$BIN" train $T --sp 2 \
      --save-every 10 --ckpt-dir c --resume c > o.txt 2>&1
    rc=$?
    left=$(cd c && ls -d step-* | tr '\n' ' ')
    echo "crash during the save of step 20 at stage '$stage' (rc $rc): $left"
    check $([ $rc -ne 0 ] && [ ! -e c/step-00000020 ] && [ -f c/step-00000010/COMPLETE ]; echo $?) \
      "stage $stage: rc $rc, a step-00000020 exists or step-00000010 lost: $left"
    # the next run resumes from step 10, cleans the leftovers, and ends like the uninterrupted run
    $MPIRUN -np 2 "$BIN" train ${T/--quiet/} --sp 2 --save-every 10 --ckpt-dir c --resume c > o.txt 2> e.txt
    check $? "stage $stage: the run after the crash failed"
    grep -q "resuming from c/step-00000010 at step 10" e.txt
    check $? "stage $stage: did not resume from c/step-00000010"
    grep -q "skipping the incomplete checkpoint c/step-00000020.tmp-[0-9]* (an interrupted save of step 20" e.txt
    check $? "stage $stage: resuming did not say which incomplete checkpoint it skipped: $(cat e.txt)"
    cmp -s c/step-00000020/model.safetensors ref/step-00000020/model.safetensors &&
      cmp -s c/step-00000020/state/part-00001-of-00002.safetensors ref/step-00000020/state/part-00001-of-00002.safetensors
    check $? "stage $stage: the state after crash + resume differs from the uninterrupted run"
    check $([ "$(cd c && ls -d step-* | tr '\n' ' ')" = "step-00000010 step-00000020 " ]; echo $?) \
      "stage $stage: leftovers not cleaned: $(ls c)"
  done
  # an interrupted save that did get its final name but no marker (e.g. a copy cut short) is skipped
  mkdir -p c/step-00000030/state
  $MPIRUN -np 2 "$BIN" train ${T/--quiet/} --sp 2 --resume c > o.txt 2> e.txt
  check $? "resume next to an incomplete step-00000030 failed"
  grep -q "skipping the incomplete checkpoint c/step-00000030 (no COMPLETE marker" e.txt
  check $? "resuming did not say it skipped c/step-00000030: $(cat e.txt)"
  grep -q "nothing to do: the checkpoint c/step-00000020 is at step 20" e.txt
  check $? "the root resolution did not skip the incomplete step-00000030"
  ;;
rotate)
  corpus 100
  tiny_config tiny.json
  mkdir -p r/step-00000004.tmp-99999/state
  train 1 --steps 10 --save-every 2 --keep-last 2 --ckpt-dir r --stop-at 6 2>&1 | head -5
  check $([ "$(ls r | tr '\n' ' ')" = "step-00000004 step-00000006 " ]; echo $?) "after 6 steps, keep 2: $(ls r | tr '\n' ' ')"
  train 1 --steps 10 --save-every 2 --keep-last 2 --ckpt-dir r --resume r
  check $? "resume failed"
  check $([ "$(ls r | tr '\n' ' ')" = "step-00000008 step-00000010 " ]; echo $?) "after 10 steps, keep 2: $(ls r | tr '\n' ' ')"
  train 1 --steps 10 --save-every 3 --ckpt-dir all
  check $([ "$(ls all | tr '\n' ' ')" = "step-00000003 step-00000006 step-00000009 step-00000010 " ]; echo $?) \
    "--save-every 3 over 10 steps, no rotation: $(ls all | tr '\n' ' ')"
  echo "rotate: $checks checks"
  ;;
rope)
  corpus 60
  I0="--data data.tok --seq-len 64 --batch 2 --steps 6 --lr 1e-3 --seed 5 --quiet"
  I="$I0 --init $FIX/hf_tiny"
  R="--rope-theta 500000 --rope-scaling llama3:factor=16,original_max_position_embeddings=128 --max-position-embeddings 2048"
  $MPIRUN -np 2 "$BIN" train $I --sp 2 $R --save-every 3 --ckpt-dir rk --stop-at 3 --metrics r.jsonl
  check $? "training with rope overrides failed"
  cfg=rk/step-00000003/config.json
  for want in '"rope_theta": 500000.0' '"factor": 16.0' '"low_freq_factor": 1.0' '"high_freq_factor": 4.0' \
              '"original_max_position_embeddings": 128' '"max_position_embeddings": 2048' '"rope_type": "llama3"'; do
    grep -q "$want" $cfg
    check $? "$cfg lacks $want"
  done
  # the overrides act on training: the first loss differs from the base config's ...
  $MPIRUN -np 2 "$BIN" train $I --sp 2 --stop-at 1 --metrics b.jsonl
  check $? "base run failed"
  # ... and overriding with the base config's own values changes nothing
  $MPIRUN -np 2 "$BIN" train $I --sp 2 --stop-at 1 --metrics s.jsonl --rope-theta 10000 \
    --rope-scaling llama3:factor=8,low_freq_factor=1,high_freq_factor=4,original_max_position_embeddings=32
  check $? "no-op override run failed"
  lr=$(head -1 r.jsonl | field /dev/stdin loss); lb=$(field b.jsonl loss); ls_=$(field s.jsonl loss)
  echo "rope: first loss with overrides $lr, base $lb, base values given as flags $ls_"
  check $([ "$lr" != "$lb" ] && [ "$lb" = "$ls_" ]; echo $?) "the rope flags do not act as expected"
  # resume: the same flags work; the base config without the flags disagrees; no config at all uses the checkpoint's
  $MPIRUN -np 2 "$BIN" train $I --sp 2 $R --resume rk --stop-at 4 --metrics r.jsonl
  check $? "resume with the same rope flags failed"
  $MPIRUN -np 2 "$BIN" train $I --sp 2 --resume rk > o.txt 2> e.txt
  check $([ $? -ne 0 ] && grep -q "config.json: rope_theta is 500000 in the checkpoint but 10000" e.txt; echo $?) \
    "resume without the rope flags should fail naming config.json: $(cat e.txt)"
  $MPIRUN -np 2 "$BIN" train $I0 --sp 2 --resume rk --metrics r.jsonl
  check $? "resume with the checkpoint's own config failed"
  check $([ "$(wc -l < r.jsonl)" -eq 6 ]; echo $?) "r.jsonl should hold 6 steps"
  ;;
gpu)
  corpus 200
  tiny_config tiny.json 10000.0 64
  train 1 --steps 1 --device cuda > g.out 2>&1
  rc=$?
  if grep -q "no GPU is visible\|no CUDA backend" g.out; then echo "no GPU: skipped"; exit 77; fi
  check $rc "GPU run failed: $(tail -3 g.out)"
  meshes="1"
  [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ] && meshes="1|2 --sp 2|2 --sp 2 --zero 3"
  IFS='|' read -r -a ms <<< "$meshes"
  for mesh in "${ms[@]}"; do
    set -- $mesh
    np=$1; shift
    rm -rf straight ck m.jsonl s.jsonl
    train "$np" "$@" --device cuda --metrics s.jsonl --out straight &&
      train "$np" "$@" --device cuda --metrics m.jsonl --save-every 10 --ckpt-dir ck --stop-at 10 &&
      train "$np" "$@" --device cuda --metrics m.jsonl --save-every 10 --ckpt-dir ck --resume ck
    check $? "cuda np=$np $*: runs failed"
    field s.jsonl loss > a.txt
    field m.jsonl loss > b.txt
    [ "$(wc -l < a.txt)" -eq 20 ] && [ "$(wc -l < b.txt)" -eq 20 ]
    check $? "cuda np=$np $*: 20 metric lines each expected ($(wc -l < a.txt), $(wc -l < b.txt))"
    w=$(worst_diff a.txt b.txt)
    echo "cuda np=$np $*: worst |loss(resumed) - loss(straight)| = $w"
    awk -v w="$w" 'BEGIN { exit !(w <= 2e-3) }'
    check $? "cuda np=$np $*: resumed losses differ from the straight run by $w (> 2e-3)"
    # the loss must have moved: a resume that restarted from the initial weights would not track
    awk 'NR == 1 { a = $1 } END { exit !(a - $1 > 0.05) }' a.txt
    check $? "cuda np=$np $*: the straight run did not learn ($(head -1 a.txt) -> $(tail -1 a.txt))"
  done
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
