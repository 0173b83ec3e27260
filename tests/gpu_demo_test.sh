#!/usr/bin/env bash
# 200 steps of the demo task on one GPU (bf16) track the CPU (fp32) curve: the mean loss of
# steps 151..200 within 25 % and the final answer accuracy within 0.15. Exits 77 (skipped)
# without a GPU. Usage: gpu_demo_test.sh BIN
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"
A="--steps 200 --eval-every 200 --quiet"
"$BIN" demo $A --device cuda --dir g > g.out 2>&1
rc=$?
if grep -q "no GPU is visible\|no CUDA backend" g.out; then echo "no GPU: skipped"; exit 77; fi
check $rc "GPU demo failed: $(tail -3 g.out)"
"$BIN" demo $A --device cpu --dir c > c.out 2>&1
check $? "CPU demo failed: $(tail -3 c.out)"
tail_loss() { sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/' "$1/metrics.jsonl" | awk 'NR > 150 { s += $1; n++ } END { print s / n }'; }
acc() { tail -n 1 "$1/metrics.jsonl" | sed -e 's/.*"answer_acc": \([-0-9.e+]*\).*/\1/'; }
lg=$(tail_loss g); lc=$(tail_loss c); ag=$(acc g); ac=$(acc c)
line="gpu demo: steps 151-200 mean loss: GPU $lg, CPU $lc; answer accuracy at 200: GPU $ag, CPU $ac"
echo "$line"
[ -n "${UL_TEST_REPORT:-}" ] && echo "$line" >> "$UL_TEST_REPORT"
awk -v a="$lg" -v b="$lc" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.25 * b) }'
check $? "GPU loss $lg does not track the CPU loss $lc"
awk -v a="$ag" -v b="$ac" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.15) }'
check $? "GPU accuracy $ag vs CPU $ac"
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
