#!/usr/bin/env bash
# bench/maxseq.py's logic on the CPU backend (no GPU, no torch): the tiny shape on 2 ranks.
# Usage: maxseq_test.sh BIN
#   - train gets a smaller --gpu-mem than plan, so the plan's maximum is refused and the
#     bisection must end with max_ok <= (train's own plan maximum) < first_fail, within --tol;
#     the lengths below it are run; every probe that trained has its step time and memory;
#   - the peer (a stand-in that fails above MAXSEQ_STUB_MAX tokens) is searched by doubling
#     and bisection to the same bracket;
#   - with no time for a probe the run stops cleanly: "out of time", the JSON still written.
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
BIN=$(readlink -f "$1")
ROOT=$(dirname "$HERE")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"
export MAXSEQ_STUB_MAX=3000 OMP_NUM_THREADS=1
M=(python3 "$ROOT/bench/maxseq.py" --device cpu --bin "$BIN" --shape tiny --gpus 2 --granule 16 --host-mem 0
   --opts "--checkpoint 1 --tiled-mlp off" --peer-script "$HERE/maxseq_peer_stub.py" --peer-launcher python3
   --peer-start 256 --mpirun "${MPIRUN:-mpirun}")
"${M[@]}" --gpu-mem 0.1 --train-gpu-mem 0.08 --budget-s 300 --keep work --json r.jsonl > o.txt 2>&1
check $? "maxseq failed: $(tail -n 20 o.txt)"
cat o.txt
cfg=work/config.json
want=$("$BIN" plan --model $cfg --gpus 2 --sp 2 --seq-len 32 --device cpu --checkpoint 1 --tiled-mlp off --gpu-mem 0.08 |
       sed -n 's/^largest seq_len that fits: //p')
python3 - "$want" r.jsonl <<'PY'
import json, sys
want, res = int(sys.argv[1]), json.loads(open(sys.argv[2]).readlines()[-1])
bad = []
def need(cond, msg):
    if not cond: bad.append(msg)
unit = 32
o, p = res["ours"], res["peer"]
need(res["stopped"] == "done", f"stopped: {res['stopped']}")
need(res["plan"]["max_seq_len"] > want, f"plan at --gpu-mem 0.1 {res['plan']['max_seq_len']} <= train's {want}")
need(o["points"][0]["seq_len"] > want and not o["points"][0]["ok"], f"first probe {o['points'][0]}")
need(0 < o["max_ok"] <= want < o["first_fail"], f"ours: bracket [{o['max_ok']}, {o['first_fail']}) vs {want}")
need(o["first_fail"] - o["max_ok"] <= max(unit, 0.05 * o["first_fail"]), f"ours: bracket {o['max_ok']}..{o['first_fail']}")
below = [pt["seq_len"] for pt in o["points"][-2:]]
need(below == [o["max_ok"] * 3 // 4 // unit * unit, o["max_ok"] // 2 // unit * unit], f"ours: below {below}")
for pt in o["points"]:
    need(pt["ok"] == (pt["seq_len"] <= want), f"ours: {pt}")
    need(not pt["ok"] or (pt["step_s"] > 0 and pt["alloc_peak_gib"] > 0 and pt["plan_gib"] > 0), f"ours: {pt}")
    need(pt["ok"] or pt["why"] == "refused by the plan", f"ours: {pt}")
need(0 < p["max_ok"] <= 3000 < p["first_fail"], f"peer: bracket [{p['max_ok']}, {p['first_fail']})")
need(p["first_fail"] - p["max_ok"] <= max(unit, 0.05 * p["first_fail"]), f"peer: bracket {p['max_ok']}..{p['first_fail']}")
need([pt["seq_len"] for pt in p["points"][:4]] == [256, 512, 1024, 2048], f"peer: doubling {p['points'][:4]}")
for pt in p["points"]:
    need(pt["ok"] == (pt["seq_len"] <= 3000), f"peer: {pt}")
print("maxseq: ours", o["max_ok"], "(plan at train's limit:", want, ") peer", p["max_ok"], "-", "FAIL: " + "; ".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PY
check $? "maxseq results"
# no time for any probe: stops cleanly, the table and the JSON all the same
"${M[@]}" --gpu-mem 0.1 --budget-s 8 --min-probe-s 5 --json t.jsonl > o.txt 2>&1
check $? "maxseq (no time) failed: $(tail -n 20 o.txt)"
python3 -c "
import json, sys
r = json.loads(open('t.jsonl').read())
sys.exit(0 if r['stopped'] == 'out of time' and r['ours']['points'] == [] and r['plan']['max_seq_len'] > 0 else 1)"
check $? "maxseq with no time: $(cat t.jsonl)"
grep -q "stopped: out of time" o.txt; check $? "no table after running out of time"
echo "$((checks - fail)) passed, $fail failed"
[ $fail -eq 0 ]
