#!/usr/bin/env bash
# ZeRO stages and optimizer offload through the CLI (issue 8). Usage: zero_test.sh BIN CASE
#   trajectory  --zero 1 / 2, with and without --offload-optimizer (the gradients to host unit by unit,
#               and with --offload-gradients off), give the 10-step trajectory
#               of --zero 0 on the same mesh (loss and grad_norm per step within 1e-5 relative),
#               on sp=2; sp=2 x dp_shard=2; dp_shard=2 x dp_replicate=2; dp_shard=3 (padded slices)
#   stage3      the same for --zero 3 with and without --offload-optimizer, on the same meshes,
#               with --checkpoint 0 and 1, untied and tied embeddings; the offload with every unit's
#               gradients sent to host during the backward (the default), none (--offload-gradients
#               off), and the first 2 units' with small gradient staging chunks (many chunks per step)
#   memory      the per-rank state bytes of the startup log shrink as the stage says, and what
#               model and optimizer allocated equals the memory plan's exact items (stages 0-3,
#               the offload's gradient staging: one [per] chunk, or 2 chunks of --debug-offload-chunk)
#   init        the initial weights (--out after 0 steps) are bitwise those of --zero 0 on one rank
#               for stages 1-3 with and without offload, on sp=2, sp=2 x dp_shard=2, dp_shard=3; each
#               rank stages on the host only its slice (none with offload), as its log line and the
#               plan say; --init DIR likewise reads only the slice (stages 1-3) and trains like --zero 0;
#               a truncated --init file is one clear error
#   resume      a checkpoint saved with --zero 2 resumes with --zero 0 (and the other ways round,
#               on other meshes, with offload, and with --zero 3) and continues the uninterrupted run
#   savemem     a checkpoint save holds in host memory one chunk buffer for the rank's part
#               (4 min(C / S, its length) bytes; none where the part is host memory in place),
#               the staging of the pieces of its ZeRO slice it sends (none with offload) and on
#               rank 0 one chunk buffer for the weights (4 min(C, N)), as the save's log line of
#               every rank's host bytes says; stages 0-3, replicas, the default chunks and
#               C = 1000 (ULYSSES_DEBUG_SAVE_CHUNK), whose files are the default chunks' byte
#               for byte; on one rank the files of --zero 0 (in place) and of stages 1-3 with
#               and without offload (gathered) are the same bytes (checkpoint, --out); and a
#               save + resume on the same mesh and stage gives the straight run exactly
#   params      --offload-params on (one process; 2 replicas): the trajectory of --zero 0 (tied, untied,
#               checkpoint 1, every 2; all or 2 units' gradients on the host), allocation = plan
#   ckpt_every  --checkpoint-every 2, 3, 5 on 5 layers: bitwise the trajectory of --checkpoint 1 (sp=2;
#               --zero 3 + offload on sp=2 x dp_shard=2; kept inputs offloaded), allocation = plan
#   eval3       --zero 3 with --task kv evaluations (a number of eval samples that the DP
#               indices do not divide) and --out: the evaluations of --zero 0, and a model
#               that continues like --zero 0's
#   families    the trajectory check for Qwen2 (q/k/v biases, tied) and Qwen3 (q/k norm, head_dim
#               12 != 32 / 4): stages 1-3 and the offload on sp=2 x dp_shard=2, stage 3 with recompute
#   gpu         the trajectory check on CUDA (bf16 weights, NCCL; within 2e-3), stages 1-3 (also for
#               Qwen2 and Qwen3), the gradient offload, --checkpoint-every and (1 GPU) --offload-params:
#               1 GPU, and sp=2, dp_shard=2 on 2 GPUs when present; exits 77
#               (skipped) without a GPU
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
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
sed -e 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' tiny.json > tied.json
sed -e 's/LlamaForCausalLM/Qwen2ForCausalLM/; s/"llama"/"qwen2"/' tied.json > qwen2.json
sed -e 's/LlamaForCausalLM/Qwen3ForCausalLM/; s/"llama"/"qwen3"/; s/"vocab_size"/"head_dim": 12, "vocab_size"/' \
  tiny.json > qwen3.json
corpus 200

train() { # train NP ARGS... (MODEL: the config, default tiny.json)
  local np=$1; shift
  OMP_NUM_THREADS=1 $MPIRUN -np "$np" "$BIN" train --model "${MODEL:-tiny.json}" --data data.tok --seq-len 96 \
    --lr 3e-3 --warmup 2 --seed 11 "$@"
}
# worst relative difference of field K between two metrics files (same number of lines)
worst() {
  paste -d' ' <(field "$1" "$3") <(field "$2" "$3") |
    awk '{ d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; r = m > 0 ? d / m : d; if (r > w) w = r }
         END { printf "%.3g", w + 0 }'
}
# compare A B WHAT N: both files hold N lines; loss and grad_norm within 1e-5 relative
compare() {
  local a=$1 b=$2 what=$3 n=$4
  check $([ "$(wc -l < "$b")" -eq "$n" ]; echo $?) "$what: $(wc -l < "$b") metric lines, expected $n"
  local wl wg
  wl=$(worst "$a" "$b" loss)
  wg=$(worst "$a" "$b" grad_norm)
  echo "$what: loss worst rel diff $wl, grad_norm $wg"
  awk -v l="$wl" -v g="$wg" -v t="${TOL:-1e-5}" 'BEGIN { exit !(l <= t && g <= t) }'
  check $? "$what: loss ($wl) or grad_norm ($wg) differ by more than ${TOL:-1e-5}"
}

# vs_zero0 LABEL "ZERO FLAGS|ZERO FLAGS|..." NP ARGS...: 10 steps with each set of ZeRO flags
# against 10 steps with --zero 0 (MODEL: the config)
vs_zero0() {
  local label=$1 zs=$2 np=$3 z
  shift 3
  train "$np" "$@" --zero 0 --metrics ref.jsonl
  check $? "$label np=$np $* --zero 0 failed"
  IFS='|' read -r -a zl <<< "$zs"
  for z in "${zl[@]}"; do
    rm -f got.jsonl
    train "$np" "$@" $z --metrics got.jsonl
    check $? "$label np=$np $* $z failed"
    compare ref.jsonl got.jsonl "$label np=$np $* $z vs --zero 0" 10
  done
}
MESHES=("2 --sp 2" "4 --sp 2 --dp-shard 2" "4 --dp-shard 2 --dp-replicate 2" "3 --dp-shard 3")
T="--batch 24 --grad-accum 2 --steps 10 --quiet"

case "$CASE" in
trajectory)
  for mesh in "${MESHES[@]}"; do
    vs_zero0 "" "--zero 1|--zero 2|--zero 1 --offload-optimizer|--zero 2 --offload-optimizer|--zero 1 --offload-optimizer --offload-gradients all|--zero 2 --offload-optimizer --offload-gradients all|--zero 1 --offload-optimizer --offload-gradients all --debug-offload-chunk 100|--zero 2 --offload-optimizer --debug-offload-chunk 1000" $mesh $T
  done
  ;;
stage3)
  for mesh in "${MESHES[@]}"; do
    for MODEL in tiny.json tied.json; do
      for ck in 0 1; do
        vs_zero0 "$MODEL" "--zero 3|--zero 3 --offload-optimizer|--zero 3 --offload-optimizer --offload-gradients off|--zero 3 --offload-optimizer --offload-gradients 2 --debug-offload-chunk 77" $mesh $T --checkpoint $ck
      done
    done
  done
  ;;
memory)
  # bytes KEY LOGFILE: the value of KEY= in the startup line
  bytes() { sed -n -e "s/.*ulysses: zero .* $1=\([0-9]*\).*/\1/p" "$2"; }
  for mesh in "4 --sp 2 --dp-shard 2" "3 --dp-shard 3"; do
    set -- $mesh
    np=$1; shift
    C=100 # the staging chunk of the 'c' runs: 2 pinned buffers of C floats
    for z in 0 1 2 2o 2oc 3 3o 3oc; do
      zf="--zero ${z:0:1}"
      case $z in *o*) zf="$zf --offload-optimizer" ;; esac
      case $z in 2o*) zf="$zf --offload-gradients all" ;; esac # ZeRO 1, 2: auto sends them only when needed
      case $z in *c) zf="$zf --debug-offload-chunk $C" ;; esac
      train "$np" --batch 12 --steps 1 "$@" $zf --metrics m.jsonl 2> log$z.txt
      check $? "np=$np $* $zf failed"
      # what model_init + zero_init allocated through the backend = the plan's exact items
      got=$(sed -n 's/.*allocated \([0-9]*\) device + \([0-9]*\) host bytes (plan: \([0-9]*\) + \([0-9]*\)).*/\1 \2 \3 \4/p' log$z.txt)
      set -- $got
      check $([ $# -eq 4 ] && [ "$1" = "$3" ] && [ "$2" = "$4" ]; echo $?) "np=$np $zf: allocated vs plan: '$got'"
      set -- $mesh
      shift
    done
    N=$(sed -n -e 's/.*slice [0-9]* of \([0-9]*\) params.*/\1/p' log0.txt)
    S=$np
    per=$(( (N + S - 1) / S ))
    echo "np=$np $*: N=$N, shard group $S, slice $per"
    chk() { # chk WHAT GOT WANT
      check $([ "$2" = "$3" ]; echo $?) "np=$np $*: $1 = $2 bytes, expected $3"
    }
    chk "zero 0 moments" "$(bytes moments log0.txt)" $((8 * N))
    chk "zero 0 grads" "$(bytes grads log0.txt)" $((4 * N))
    chk "zero 0 master (the CPU's act copy is the master)" "$(bytes master log0.txt)" 0
    for z in 1 2 2o 2oc; do
      chk "zero $z moments" "$(bytes moments log$z.txt)" $((8 * per))
      chk "zero $z master" "$(bytes master log$z.txt)" $((4 * per))
      chk "zero $z weights" "$(bytes weights log$z.txt)" $((4 * per * S))
    done
    chk "zero 1 grads" "$(bytes grads log1.txt)" $((4 * per * S))
    # stage 2: the full accumulation buffer (first version) plus the reduced slice
    chk "zero 2 grads" "$(bytes grads log2.txt)" $((4 * per * S + 4 * per))
    chk "zero 1 host" "$(bytes host log1.txt)" 0
    # offload: master, m, v, and the gradient staging: the whole slice is one chunk (the default
    # chunk, 64 Mi floats, is more than per), or 2 buffers of C floats
    # offload: master, m, v, the gradients (--offload-gradients all: this rank's slice of each unit's,
    # on the host), and the gradient staging: the whole slice is one chunk (the default chunk, 64 Mi
    # floats, is more than per), or 2 buffers of C floats; on the device two buffers of the largest
    # unit (a layer of tiny.json: 2 norms D, q and o D*32, k and v D*16, the MLP 3*D*I) and the
    # slice the new weights are uploaded through, no [n_pad] gradient
    chk "zero 2 offload host (master, m, v, gradients, one [per] staging chunk)" "$(bytes host log2o.txt)" $((20 * per))
    chk "zero 2 offload host (master, m, v, gradients, 2 staging chunks of $C)" "$(bytes host log2oc.txt)" \
      $((16 * per + 8 * C))
    ulayer=$((2 * 32 + 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64))
    for z in 2o 2oc; do
      chk "zero $z grads (2 unit buffers + the upload slice)" "$(bytes grads log$z.txt)" $((4 * (2 * ulayer + per)))
    done
    # stage 3: the gather units of tiny.json (core/params.h; V 256, D 32, I 64, 4 heads and 2 kv
    # heads of 8): the embedding V*D; each of the 2 layers 2 norms D, q and o D*32, k and v
    # D*16, the MLP 3*D*I; the tail D + V*D (untied lm_head). Each unit is padded to a multiple
    # of S and split: the slice is the sum of the chunks, umax the largest padded unit.
    V=256 D=32 I=64
    units="$((V * D)) $((2 * D + 2 * D * 32 + 2 * D * 16 + 3 * D * I))"
    units="$units ${units#* } $((D + V * D))"
    sum=0 per3=0 umax=0
    for n in $units; do
      pu=$(( (n + S - 1) / S ))
      sum=$((sum + n)) per3=$((per3 + pu))
      [ $((pu * S)) -gt $umax ] && umax=$((pu * S))
    done
    echo "np=$np $*: stage-3 units $units, slice $per3, largest padded unit $umax"
    chk "the units' sum (the parameter count)" $sum "$N"
    chk "zero 3 slice" "$(sed -n -e 's/.*zero 3: .* slice \([0-9]*\) of.*/\1/p' log3.txt)" $per3
    for z in 3 3o 3oc; do
      chk "zero $z weights (act slice + 2 gathered units)" "$(bytes weights log$z.txt)" $((4 * (per3 + 2 * umax)))
      chk "zero $z master" "$(bytes master log$z.txt)" $((4 * per3))
      chk "zero $z moments" "$(bytes moments log$z.txt)" $((8 * per3))
    done
    chk "zero 3 grads (slice + one unit's buffer)" "$(bytes grads log3.txt)" $((4 * (per3 + umax)))
    # offload: every unit's gradients go to host (--offload-gradients auto, no host limit): the
    # device keeps one unit's buffer and the reduce-scatter's target [umax / S] the copy reads
    for z in 3o 3oc; do
      chk "zero $z grads (one unit's buffer + its reduced chunk)" "$(bytes grads log$z.txt)" $((4 * (umax + umax / S)))
    done
    chk "zero 3 host" "$(bytes host log3.txt)" 0
    chk "zero 3 offload host (master, m, v, gradients, one [per] staging chunk)" "$(bytes host log3o.txt)" $((20 * per3))
    chk "zero 3 offload host (master, m, v, gradients, 2 staging chunks of $C)" "$(bytes host log3oc.txt)" \
      $((16 * per3 + 8 * C))
    w2=$(bytes weights log2.txt) w3=$(bytes weights log3.txt) g2=$(bytes grads log2.txt) g3=$(bytes grads log3.txt)
    check $([ "$w3" -lt "$w2" ] && [ "$g3" -lt "$g2" ]; echo $?) \
      "np=$np $*: zero 3 weights/grads ($w3/$g3) not below zero 2's ($w2/$g2)"
    # the optimizer state per rank shrinks S-fold (up to the padding)
    m0=$(bytes moments log0.txt)
    m1=$(bytes moments log1.txt)
    check $([ $((m1 * S)) -ge "$m0" ] && [ $((m1 * S)) -lt $((m0 + 8 * S)) ]; echo $?) \
      "np=$np $*: zero 1 moments $m1 x $S is not zero 0's $m0 (+ padding)"
  done
  ;;
init)
  # the --out of 0 steps: the initial weights as written (f32), compared byte for byte
  rm -rf ref
  train 1 --batch 6 --steps 0 --zero 0 --out ref --quiet
  check $? "np=1 --zero 0 --steps 0 failed"
  V=256 D=32 I=64
  for mesh in "2 --sp 2" "4 --sp 2 --dp-shard 2" "3 --dp-shard 3"; do
    set -- $mesh
    np=$1; shift
    for z in 1 2 3 1o 2o 3o; do
      zf="--zero ${z:0:1}"
      case $z in *o) zf="$zf --offload-optimizer" ;; esac
      rm -rf out
      train "$np" --batch 6 --steps 0 "$@" $zf --out out 2> log.txt
      check $? "np=$np $* $zf --steps 0 failed ($(tail -2 log.txt))"
      cmp -s ref/model.safetensors out/model.safetensors
      check $? "np=$np $* $zf: the initial weights differ from --zero 0's"
      # every rank's host staging: its slice [per] (stages 1, 2: ceil(N / S); stage 3: the
      # units' chunks), none with offload
      N=$(sed -n -e 's/.*ulysses: zero .* slice [0-9]* of \([0-9]*\) params.*/\1/p' log.txt)
      S=$np
      per=$(( (N + S - 1) / S ))
      if [ "${z:0:1}" = 3 ]; then
        units="$((V * D)) $((2 * D + 2 * D * 32 + 2 * D * 16 + 3 * D * I))"
        units="$units ${units#* } $((D + V * D))"
        per=0
        for n in $units; do per=$((per + (n + S - 1) / S)); done
      fi
      want=$((4 * per))
      case $z in *o) want=0 ;; esac
      line=$(grep -m1 "initial weights (random) host staging bytes" log.txt)
      for r in $(seq 0 $((np - 1))); do
        got=$(echo "$line" | sed -n -e "s/.* rank$r=\([0-9]*\).*/\1/p")
        check $([ "$got" = "$want" ]; echo $?) "np=$np $* $zf: rank $r staged $got host bytes for the initial weights, expected $want"
      done
      # the plan's line says the same (none: no line)
      pl=$("$BIN" plan --model tiny.json --gpus "$np" "$@" $zf --seq-len 96 --device cpu |
        sed -n -e 's/^initial weights host staging .* host *\([0-9]*\) .*/\1/p')
      check $([ "${pl:-0}" = "$want" ]; echo $?) "np=$np $* $zf: the plan stages '${pl:-0}' bytes, train $want"
    done
  done
  echo "initial weights: stages 1-3 (and offload) wrote --zero 0's bytes on 3 meshes"
  # --init DIR: each rank reads only its slice of the safetensors (none staged with offload,
  # [per] without), and trains as --zero 0 does
  train 2 --batch 12 --steps 3 --sp 2 --init ref --zero 0 --metrics a.jsonl --quiet
  check $? "--init --zero 0 failed"
  for zf in "--zero 3 --offload-optimizer" "--zero 2" "--zero 1 --offload-optimizer"; do
    rm -f b.jsonl
    train 2 --batch 12 --steps 3 --sp 2 --init ref $zf --metrics b.jsonl 2> log.txt
    check $? "--init $zf failed ($(tail -2 log.txt))"
    compare a.jsonl b.jsonl "--init ref: $zf vs --zero 0" 3
    per=$(sed -n -e 's/.*ulysses: zero .* slice \([0-9]*\) of.*/\1/p' log.txt)
    want=$((4 * per))
    case "$zf" in *offload*) want=0 ;; esac
    line=$(grep -m1 "initial weights (--init) host staging bytes" log.txt)
    check $([ "$line" = "ulysses: initial weights (--init) host staging bytes: rank0=$want rank1=$want" ]; echo $?) \
      "--init $zf: '$line', expected $want on each rank"
    pl=$("$BIN" plan --model tiny.json --gpus 2 --sp 2 $zf --seq-len 96 --device cpu |
      sed -n -e 's/^initial weights host staging .* host *\([0-9]*\) .*/\1/p')
    check $([ "${pl:-0}" = "$want" ]; echo $?) "--init $zf: the plan stages '${pl:-0}' bytes, train $want"
  done
  # a bad --init directory: one message, every rank, before any step
  mkdir -p badinit && cp ref/config.json badinit/ && head -c 100 ref/model.safetensors > badinit/model.safetensors
  train 2 --batch 12 --steps 1 --sp 2 --init badinit --zero 3 --offload-optimizer --metrics c.jsonl 2> log.txt
  check $([ $? -ne 0 ] && grep -q "badinit/model.safetensors" log.txt && [ ! -s c.jsonl ]; echo $?) \
    "--init of a truncated file with --zero 3: no clear error ($(tail -2 log.txt))"
  ;;
resume)
  T="--batch 12 --steps 10"
  # save at step 5 with SAVE (np, flags), resume with RES (np, flags); against 10 straight
  # steps with SAVE
  for pair in "2 --sp 2 --zero 2|2 --sp 2 --zero 0" \
              "2 --sp 2 --zero 0|4 --sp 2 --dp-shard 2 --zero 2 --offload-optimizer" \
              "3 --dp-shard 3 --zero 1 --offload-optimizer|2 --dp-shard 2 --zero 2" \
              "4 --dp-shard 2 --dp-replicate 2 --zero 2|1 --zero 0" \
              "2 --sp 2 --zero 3|2 --sp 2 --zero 0" \
              "2 --sp 2 --zero 0|4 --sp 2 --dp-shard 2 --zero 3 --offload-optimizer" \
              "3 --dp-shard 3 --zero 3 --checkpoint 1|4 --dp-shard 2 --dp-replicate 2 --zero 3"; do
    save=${pair%|*}
    res=${pair#*|}
    rm -rf ck m.jsonl
    set -- $save
    np=$1; shift
    train "$np" $T "$@" --metrics straight.jsonl --quiet
    check $? "straight np=$np $* failed"
    train "$np" $T "$@" --stop-at 5 --save-every 5 --ckpt-dir ck --metrics m.jsonl --quiet
    check $? "save np=$np $* failed"
    check $([ -f ck/step-00000005/COMPLETE ]; echo $?) "save np=$np $*: no complete checkpoint"
    set -- $res
    np=$1; shift
    train "$np" $T "$@" --resume ck --metrics m.jsonl --quiet
    check $? "resume np=$np $* failed"
    compare straight.jsonl m.jsonl "save [$save] -> resume [$res], steps 1..10 vs straight" 10
  done
  ;;
savemem)
  # default chunks (64 Mi elements, more than N): each rank's part whole in one buffer; then
  # chunks of C = 1000 elements (ULYSSES_DEBUG_SAVE_CHUNK): buffers of C / S (parts) and C
  # (weights), and the same files as with the default chunks
  for run in "- 3 --dp-shard 3 --zero 2" "- 4 --sp 2 --dp-shard 2 --zero 3" \
             "- 4 --dp-shard 2 --dp-replicate 2 --zero 1 --offload-optimizer" "- 2 --sp 2 --zero 0" \
             "1000 3 --dp-shard 3 --zero 2" "1000 4 --sp 2 --dp-shard 2 --zero 3" \
             "1000 4 --dp-shard 2 --dp-replicate 2 --zero 1 --offload-optimizer" "1000 2 --sp 2 --zero 0"; do
    set -- $run
    C=$1 np=$2; shift 2
    rm -rf ck
    if [ "$C" = - ]; then
      train "$np" --batch 12 --steps 2 --save-every 2 --ckpt-dir ck "$@" 2> log.txt
    else
      ULYSSES_DEBUG_SAVE_CHUNK=$C train "$np" --batch 12 --steps 2 --save-every 2 --ckpt-dir ck "$@" 2> log.txt
    fi
    check $? "np=$np $*: save failed ($(tail -3 log.txt))"
    N=$(sed -n -e 's/.*ulysses: zero .* slice [0-9]* of \([0-9]*\) params.*/\1/p' log.txt)
    per=$(sed -n -e 's/.*ulysses: zero .* slice \([0-9]*\) of.*/\1/p' log.txt)
    line=$(grep -m1 "checkpoint host bytes" log.txt)
    echo "chunk $C np=$np $*: N=$N per=$per; $line"
    rep=1
    case "$*" in *"--dp-replicate 2"*) rep=2 ;; esac
    S=$((np / rep))
    case "$*" in *"--zero 0"*) S=1 ;; esac
    [ "$C" = - ] && C=$((64 << 20))
    for r in $(seq 0 $((np - 1))); do
      got=$(echo "$line" | sed -n -e "s/.* rank$r=\([0-9+]*\).*/\1/p")
      q=$((r % S)) a=$((N * r / np)) b=$((N * (r + 1) / np))
      hi=$(((q + 1) * per)); [ $hi -gt $N ] && hi=$N
      len=$((b - a)) cp=$((C / S)); [ $cp -gt $len ] && cp=$len
      part=$((4 * cp)) w=0
      # staging: the pieces of the rank's slice it sends (at most its real elements, 4 (hi - q per);
      # with default chunks every rank wants all of them: the stage-3 mesh here has no padding)
      stg=$((4 * (hi - q * per))) smax=$((4 * C)); [ $smax -gt $stg ] && smax=$stg
      case "$*" in
      *offload*) stg=0 smax=0
        # the part in place where it lies inside the rank's own slice (host memory)
        [ $a -ge $((q * per)) ] && [ $b -le $hi ] && part=0 ;;
      *"--zero 0"*) stg=0 smax=0 part=0 ;; # zero 0 on the CPU: in place
      esac
      if [ "$r" -eq 0 ]; then w=$((4 * (C < N ? C : N))); case "$*" in *"--zero 0"*) w=0 ;; esac; fi
      gp=${got%%+*} gs=${got#*+}; gs=${gs%%+*}; gw=${got##*+}
      if [ "$C" -lt $((64 << 20)) ]; then # small chunks: the staging within its bound
        check $([ "$gp+$gw" = "$part+$w" ] && [ "$gs" -le "$smax" ]; echo $?) \
          "chunk $C np=$np $*: rank $r held $got host bytes, expected part+staging+weights $part+(<= $smax)+$w"
      else
        check $([ "$got" = "$part+$stg+$w" ]; echo $?) \
          "np=$np $*: rank $r held $got host bytes at the save, expected part+staging+weights $part+$stg+$w"
      fi
    done
    # the files do not depend on the chunks
    if [ "$C" -lt $((64 << 20)) ]; then
      for f in $(cd ck && find . -type f | sort); do
        cmp -s "ck/$f" "ck-$np-${*// /}/$f"
        check $? "np=$np $*: $f written in chunks of $C differs from the default chunks' file"
      done
    else
      rm -rf "ck-$np-${*// /}" && cp -r ck "ck-$np-${*// /}"
    fi
  done
  # on one rank every stage trains bit for bit alike: the files of the in-place path (--zero 0
  # on the CPU: no copy) equal those gathered through zero_host_range (staged, offloaded, the
  # stage-3 units), in default and small chunks; --out alone (a directory replaced) likewise
  for run in "- --zero 0" "- --zero 2" "- --zero 3 --offload-optimizer" "1000 --zero 3" "7 --zero 1 --offload-optimizer"; do
    set -- $run
    C=$1; shift
    d="one${*// /}$C"
    rm -rf "$d"
    if [ "$C" = - ]; then
      train 1 --batch 4 --steps 2 --save-every 2 --ckpt-dir "$d/ck" --out "$d/o1" --quiet "$@" &&
        train 1 --batch 4 --steps 2 --out "$d/o2" --quiet "$@"
    else
      ULYSSES_DEBUG_SAVE_CHUNK=$C train 1 --batch 4 --steps 2 --save-every 2 --ckpt-dir "$d/ck" --out "$d/o1" --quiet "$@" &&
        ULYSSES_DEBUG_SAVE_CHUNK=$C train 1 --batch 4 --steps 2 --out "$d/o2" --quiet "$@"
    fi
    check $? "one rank $* (chunk $C): save failed"
    [ "$*" = "--zero 0" ] && ref=$d && continue
    for f in $(cd "$ref" && find . -type f | sort); do
      cmp -s "$ref/$f" "$d/$f"
      check $? "one rank: $f of $* (chunk $C) differs from --zero 0's"
    done
    echo "one rank $* (chunk $C): $(cd "$d" && find . -type f | wc -l) files equal to --zero 0's"
  done
  # a save and resume on the same mesh and stage continues exactly (the slices moved intact)
  T="--batch 12 --steps 8"
  for run in "2 --sp 2 --zero 3" "4 --dp-shard 2 --dp-replicate 2 --zero 2" "3 --dp-shard 3 --zero 1 --offload-optimizer" \
             "2 --sp 2 --zero 3 --offload-optimizer"; do
    set -- $run
    np=$1; shift
    rm -rf ck m.jsonl
    train "$np" $T "$@" --metrics straight.jsonl --quiet
    check $? "straight np=$np $* failed"
    train "$np" $T "$@" --stop-at 4 --save-every 4 --ckpt-dir ck --metrics m.jsonl --quiet &&
      train "$np" $T "$@" --resume ck --metrics m.jsonl --quiet
    check $? "save/resume np=$np $* failed"
    TOL=0 compare straight.jsonl m.jsonl "np=$np $*: save at 4 + resume vs straight (exact)" 8
  done
  ;;
params)
  # --offload-params on (a shard group of one rank: one process, and 2 replicas): the bf16 weights
  # in host memory, each unit copied in before use; the trajectory of --zero 0, with all and the
  # first 2 units' gradients on the host, untied and tied, --checkpoint 1 and every 2 layers;
  # what was allocated equals the plan
  for mesh in "1" "2 --dp-replicate 2"; do
    for MODEL in tiny.json tied.json; do
      for ck in 1 "1 --checkpoint-every 2"; do
        vs_zero0 "$MODEL" "--zero 3 --offload-optimizer --offload-params on|--zero 3 --offload-optimizer --offload-params on --offload-gradients 2 --debug-offload-chunk 77" $mesh $T --checkpoint $ck
      done
    done
  done
  train 1 --batch 4 --steps 1 --zero 3 --offload-optimizer --offload-params on --metrics m.jsonl 2> log.txt
  check $? "--offload-params on failed: $(tail -2 log.txt)"
  got=$(sed -n 's/.*allocated \([0-9]*\) device + \([0-9]*\) host bytes (plan: \([0-9]*\) + \([0-9]*\)).*/\1 \2 \3 \4/p' log.txt)
  set -- $got
  check $([ $# -eq 4 ] && [ "$1" = "$3" ] && [ "$2" = "$4" ]; echo $?) "--offload-params on: allocated vs plan: '$got'"
  grep -q "parameter offload: [0-9]* bytes of weights in pinned host memory" log.txt
  check $? "--offload-params on: no start-up line"
  for bad in "--offload-params maybe" "--sp 2 --offload-params on" "--zero 2 --offload-params on"; do
    train 2 --batch 4 --steps 1 --zero 3 --offload-optimizer $bad > o.txt 2> e.txt
    check $([ $? -ne 0 ] && [ "$(grep -c 'ulysses: error' e.txt)" -eq 1 ] && grep -q -- "--offload-params" e.txt; echo $?) \
      "$bad: $(cat e.txt)"
  done
  ;;
ckpt_every)
  # --checkpoint-every K on 5 layers (segments of 2+2+1, 3+2, 5): bitwise the trajectory of
  # --checkpoint 1 (the recomputed segment inputs are the forward's bits), on sp=2 and with
  # --zero 3 + offload on sp=2 x dp_shard=2 (the unit hooks in the recompute order), with the
  # kept inputs offloaded (all, and the first 2); what was allocated equals the plan
  sed -e 's/"num_hidden_layers": 2/"num_hidden_layers": 5/' tiny.json > five.json
  same() { # same A B WHAT: loss and grad_norm equal as written
    check $([ -n "$(field "$1" loss)" ] && [ "$(field "$1" loss)" = "$(field "$2" loss)" ] &&
            [ "$(field "$1" grad_norm)" = "$(field "$2" grad_norm)" ]; echo $?) "$3: not bitwise the same trajectory"
  }
  for cfg in "2 --sp 2" "4 --sp 2 --dp-shard 2 --zero 3 --offload-optimizer"; do
    set -- $cfg
    np=$1; shift
    MODEL=five.json train "$np" --batch 8 --grad-accum 2 --steps 4 --checkpoint 1 "$@" --metrics ref.jsonl --quiet
    check $? "np=$np $* --checkpoint 1 failed"
    for k in 2 3 5 "3 --offload-checkpoints" "2 --offload-checkpoints --offload-layers 2"; do
      rm -f got.jsonl
      MODEL=five.json train "$np" --batch 8 --grad-accum 2 --steps 4 --checkpoint 1 "$@" --checkpoint-every $k \
        --metrics got.jsonl 2> log.txt
      check $? "np=$np $* --checkpoint-every $k failed: $(tail -2 log.txt)"
      same ref.jsonl got.jsonl "np=$np $* --checkpoint-every $k"
      got=$(sed -n 's/.*allocated \([0-9]*\) device + \([0-9]*\) host bytes (plan: \([0-9]*\) + \([0-9]*\)).*/\1 \2 \3 \4/p' log.txt)
      set -- $got
      check $([ $# -eq 4 ] && [ "$1" = "$3" ] && [ "$2" = "$4" ]; echo $?) "--checkpoint-every $k: allocated vs plan: '$got'"
      set -- $cfg
      shift
      k1=${k%% *}
      grep -q "checkpoint-every ${k1} layers: $(( (5 + k1 - 1) / k1 + 1 )) kept layer inputs" log.txt
      check $? "--checkpoint-every $k: start-up line: $(grep checkpoint-every log.txt)"
    done
  done
  # bad values: one error naming the flag
  for bad in "0" "x" "2 --checkpoint 2"; do
    MODEL=five.json train 1 --batch 2 --steps 1 --checkpoint 1 --checkpoint-every $bad > o.txt 2> e.txt
    check $([ $? -ne 0 ] && [ "$(grep -c 'ulysses: error' e.txt)" -eq 1 ] && grep -q -- "--checkpoint-every" e.txt; echo $?) \
      "--checkpoint-every $bad: $(cat e.txt)"
  done
  ;;
eval3)
  sed -e 's/"vocab_size": 256/"vocab_size": 200/' tiny.json > kv.json
  sed -e 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' kv.json > kvt.json
  for MODEL in kv.json kvt.json; do
    # 3 DP indices, 4 eval samples: the ZeRO-3 gathers need every rank to run as many forwards
    K="--model $MODEL --task kv --seq-len 256 --batch 3 --steps 4 --lr 3e-3 --eval-every 2 --eval-samples 4 --seed 3 --quiet"
    for z in 0 3; do
      rm -rf out$z
      OMP_NUM_THREADS=1 $MPIRUN -np 3 "$BIN" train $K --dp-shard 3 --zero $z --metrics e$z.jsonl --out out$z
      check $? "$MODEL kv --zero $z failed"
    done
    check $([ "$(grep -c eval_loss e3.jsonl)" -eq 2 ]; echo $?) "$MODEL: --zero 3 ran $(grep -c eval_loss e3.jsonl) evaluations, expected 2"
    grep eval_loss e0.jsonl > a.jsonl
    grep eval_loss e3.jsonl > b.jsonl
    wl=$(worst a.jsonl b.jsonl eval_loss)
    echo "$MODEL kv eval --zero 3 vs --zero 0: eval_loss worst rel diff $wl"
    awk -v l="$wl" 'BEGIN { exit !(l <= 1e-5) }'
    check $? "$MODEL: --zero 3 evaluations differ from --zero 0's by $wl"
    # --out: the written models continue alike (one more step from each, --zero 0)
    for z in 0 3; do
      OMP_NUM_THREADS=1 $MPIRUN -np 1 "$BIN" train $K --steps 1 --init out$z --metrics i$z.jsonl
      check $? "$MODEL: training from --out of --zero $z failed"
    done
    compare i0.jsonl i3.jsonl "$MODEL: one step from --zero 3's --out vs --zero 0's" 1
  done
  ;;
families)
  for MODEL in qwen2.json qwen3.json; do
    vs_zero0 "$MODEL" "--zero 1|--zero 2 --offload-optimizer|--zero 3|--zero 3 --offload-optimizer" 4 --sp 2 --dp-shard 2 $T
    vs_zero0 "$MODEL" "--zero 3" 4 --sp 2 --dp-shard 2 $T --checkpoint 1
  done
  ;;
gpu)
  train 1 --batch 4 --steps 1 --device cuda --quiet > g.out 2>&1
  rc=$?
  if grep -q "no GPU is visible\|no CUDA backend" g.out; then echo "no GPU: skipped"; exit 77; fi
  check $rc "GPU run failed: $(tail -3 g.out)"
  TOL=2e-3
  meshes="1"
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  [ "$ngpu" -ge 2 ] && meshes="1|2 --sp 2|2 --dp-shard 2"
  IFS='|' read -r -a ms <<< "$meshes"
  T="--batch 8 --grad-accum 2 --steps 10 --quiet --device cuda"
  for mesh in "${ms[@]}"; do
    vs_zero0 cuda "--zero 1|--zero 2|--zero 1 --offload-optimizer|--zero 2 --offload-optimizer|--zero 3|--zero 3 --offload-optimizer" \
      $mesh $T
    # stage 3 with the tied embedding (gathered at both ends) and per-layer recompute
    MODEL=tied.json vs_zero0 "cuda tied" "--zero 3" $mesh $T --checkpoint 1
    # the families' tensors and kernels (q/k/v bias, q/k norm) through the same stages
    MODEL=qwen2.json vs_zero0 "cuda qwen2" "--zero 1|--zero 3" $mesh $T
    MODEL=qwen3.json vs_zero0 "cuda qwen3" "--zero 2|--zero 3 --offload-optimizer" $mesh $T --checkpoint 1
    # the gradients to host (all units, the first 2, with many staging chunks), sparser checkpoints,
    # and on one GPU the weights in host memory (copy stream, events)
    one=""; [ "$mesh" = 1 ] && one="|--zero 3 --offload-optimizer --offload-params on|--zero 3 --offload-optimizer --offload-params on --checkpoint-every 2 --offload-checkpoints"
    MODEL=tied.json vs_zero0 "cuda offload" "--zero 3 --offload-optimizer --offload-gradients 2 --debug-offload-chunk 77|--zero 3 --offload-optimizer --checkpoint-every 2$one" $mesh $T --checkpoint 1
  done
  ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
