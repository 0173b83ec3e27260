#!/usr/bin/env bash
# CPU step time and all-to-all time against sp (issue 3). Not a test: prints a table.
# Usage: bench/bench_sp_cpu.sh [SEQ_LEN] [STEPS]     (run from the repository root after scripts/setup.sh)
# Each configuration trains the same model on the same data for STEPS steps under
# mpirun -np sp (one thread per rank when OMP_NUM_THREADS is unset and ranks fill the
# cores); the table reports medians over the steps after the first.
set -euo pipefail
T=${1:-4096}
STEPS=${2:-6}
BIN=$(readlink -f build/ulysses)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$W"
awk 'BEGIN { srand(5); for (d = 0; d < 64; d++) { len = 2000 + int(rand() * 6000); s = "";
       for (i = 0; i < len; i++) s = s sprintf("%c", 97 + int(rand() * 26)); print s; print "" } }' > c.txt
"$BIN" tokenize --bytes c.txt --split-blank-lines -o c.tok > /dev/null
cat > m.json <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 256,
 "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "rope_theta": 500000.0}
JSON
med() { sed -e "s/.*\"$1\": \([-0-9.e+]*\).*/\1/" "$2" | tail -n +2 | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf "%-4s %-9s %-11s %-11s %-9s %-10s\n" sp seq_len step_s a2a_s a2a_% tok/s
for sp in 1 2 4; do
  mpirun --oversubscribe -np $sp "$BIN" train --model m.json --data c.tok --seq-len "$T" --fixed-len --sp $sp \
    --batch 1 --steps "$STEPS" --lr 1e-4 --metrics "sp$sp.jsonl" --quiet
  s=$(med step_s "sp$sp.jsonl"); a=$(med a2a_s "sp$sp.jsonl")
  awk -v sp=$sp -v T="$T" -v s="$s" -v a="$a" 'BEGIN { printf "%-4d %-9d %-11.4f %-11.4f %-9.1f %-10.0f\n", sp, T, s, a, 100 * a / s, T / s }'
done
echo "cores: $(nproc); ranks beyond the core count are oversubscribed"
