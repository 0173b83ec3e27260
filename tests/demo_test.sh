#!/usr/bin/env bash
# The demo's point on a short run (issue 4): with the Ulysses exchange the answer accuracy
# rises well above chance (1/8); with --debug-no-exchange (each rank attends only inside
# its own shard) it stays near chance. Usage: demo_test.sh BIN
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"
A="--seq-len 1024 --steps 400 --eval-every 400 --eval-samples 16 --quiet"
$MPIRUN -np 2 "$BIN" demo $A --dir x > x.out 2>&1
check $? "demo with the exchange failed: $(tail -3 x.out)"
$MPIRUN -np 2 "$BIN" demo $A --dir n --debug-no-exchange > n.out 2>&1
check $? "demo without the exchange failed: $(tail -3 n.out)"
acc() { tail -n 1 "$1/metrics.jsonl" | sed -e 's/.*"answer_acc": \([-0-9.e+]*\).*/\1/'; }
ax=$(acc x)
an=$(acc n)
echo "answer accuracy after 400 steps: with the exchange $ax, without $an (chance 0.125)"
awk -v a="$ax" 'BEGIN { exit !(a >= 0.6) }'
check $? "with the exchange accuracy $ax is not >= 0.6"
awk -v b="$an" 'BEGIN { exit !(b <= 0.3) }'
check $? "without the exchange accuracy $an is not <= 0.3 (near chance)"
for f in x/model/config.json x/model/model.safetensors x/metrics.jsonl x/eval.jsonl x/demo.png; do
  test -s "$f"
  check $? "demo output $f missing"
done
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
