#!/usr/bin/env bash
# The attention kernel lab (issue 21), one device call: builds the CUDA backend, times each
# Hopper forward variant (UL_ATTN_FWD: ovpp, the default; serial, the baseline; a candidate
# is added to the table in kernels/workspace.c and dispatched in cuda_attention_sm90.cu) with
# the backward forms in $BWDS next to torch SDPA's cuDNN backend at each point, checks them
# against the CPU backend (test_cuda_kernels --only attention: the default, fused,
# fused-red, deterministic and simple kernels, then each forward variant that passed a smoke run), runs compute-sanitizer
# memcheck and racecheck on the variants in $SANITIZE, and profiles the forward of each
# variant with ncu when $NCU is 1 (and the backward's dK/dV and dQ kernels at each head dim). Logs in build-gpu/lab,
# and with $OUT set (the device tool) packed into $OUT/lab_logs.tar.gz after each phase and at
# exit, lab.jsonl beside it (the tool returns at most 8 files); carry .deps
# (cJSON, see ../shared/device/deps.sh).
#   bench/attention/lab.sh
# Environment (defaults in brackets): FWDS [ovpp serial]; BWDS, UL_ATTN_KERNEL values
# (default, fused-red, deterministic) [default]; POINTS, "d:T:H[:HKV[:DOCS]] ..." (HKV key/value heads [H], DOCS equal documents
# packed in the rows [1], cuDNN runs them as a batch; DOCS written Nv: N documents of eight
# varied lengths, bench_attention.c, cuDNN runs each length as a batch) [d 128 and 64 at 32K, 128K, 512K,
# GQA 4:1 and 64 documents at 128K]; SANITIZE [ovpp] (forward variants; the backward
# runs with them in the first form of $BWDS); SAN_D, their head dims [128 64];
# NCU [0]; NCU_D, head dims profiled [128]; NCU_F, variants profiled [$FWDS]; NCU_P, the
# profiled point "T H DOCS" (H query and key/value heads) [16384 8 1]; NCU_SRC, 1: also the
# warp-stall samples per SASS instruction (bench/attention/ncu_hot.py) [0]; NCU_SRC_COL,
# with NCU_SRC, the instructions also ranked by this source-counter column, e.g. "L1
# Wavefronts Shared" [unset]; CHECK, the
# correctness run against the CPU backend [1]; ROUNDS, each point's timings repeated in turn,
# the table giving each one's median [1]; NCU_FULL, "T:H[:D] ...": a full ncu profile
# (--set full, plus every shared-memory and gmma metric) of the backward's dK/dV kernel at
# each such point (one document, first form of $BWDS, D [128]), as text:
# ncu_full_T_H_D.txt (details page) and .raw.txt (every raw metric, one a line) [unset];
# NCU_M, a comma-separated list of ncu metrics read for the backward's dK/dV kernel and the
# forward at $NCU_P, in this build and in each BASE and PATCHES build, side by side (a
# change's effect on counters) [unset]; NCU_M_BWDS, the backward forms whose dK/dV kernel
# NCU_M reads (e.g. "default deterministic": the fused kernel beside the one without the dQ
# writer and its bulk reduce) [the first of $BWDS]. POINTS=" " times nothing. BASE, other
# source trees, space-separated (e.g. an earlier commit: `git archive REV src bench tests scripts cmake
# CMakeLists.txt | tar -x -C DIR`, carried to the device): each one's bench_attention built
# too and timed beside, each forward variant f as "base-f" (the first tree), "base2-f" (the
# second), ..., so that changes are measured against what they change in one call [unset].
# PATCHES, candidate patches (e.g. bench/attention/candidates/NAME.patch), space-separated:
# each applied to a copy of this tree (build-gpu-p-NAME/src, built in build-gpu-p-NAME/b),
# timed beside as "NAME-f", checked against the CPU backend (CHECK), run under the
# sanitizers (SANITIZE) and read by NCU_M, so that one call measures several candidates
# against this tree [unset].
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
LOG=build-gpu/lab
rm -rf "$LOG"
mkdir -p "$LOG"
# pack: the logs so far into $OUT (after each phase too, so that a call killed at its time
# limit still returns what was done)
pack() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  tar czf "$OUT/lab_logs.tar.gz.tmp" -C "$LOG" . 2>/dev/null && mv "$OUT/lab_logs.tar.gz.tmp" "$OUT/lab_logs.tar.gz"
  [ -f "$LOG/lab.jsonl" ] && cp "$LOG/lab.jsonl" "$OUT/"
  return 0
}
trap pack EXIT
FWDS=${FWDS:-ovpp serial}
BWDS=${BWDS:-default}
POINTS=${POINTS:-128:32768:16 128:131072:4 128:524288:1 128:131072:16:4 128:131072:8:8:64 64:32768:16 64:131072:4 64:524288:1 64:131072:16:4 64:131072:8:8:64}
SANITIZE=${SANITIZE:-ovpp}
SAN_D=${SAN_D:-128 64}
NCU=${NCU:-0}
CHECK=${CHECK:-1}
ROUNDS=${ROUNDS:-1}
read -r NT NH NDOCS <<< "${NCU_P:-16384 8 1}" # the profiled point (NCU, NCU_M)
source scripts/gpu_env.sh # cJSON and pkg-config carried in .deps, as for scripts/gpu_test.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
# build SRC DIR NAME TARGETS [CMAKE_OPTION...]: configures SRC in DIR and builds TARGETS (logs
# configureNAME.log, buildNAME.log), or stops the lab with the errors
build() {
  local src=$1 dir=$2 nm=$3 targets=$4
  shift 4
  cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DUL_CUDA=ON -DUL_SANITIZE_TESTS=OFF "$@" \
    >"$LOG/configure$nm.log" 2>&1 || { tail -30 "$LOG/configure$nm.log"; exit 1; }
  cmake --build "$dir" -j"$(nproc)" --target $targets >"$LOG/build$nm.log" 2>&1 \
    || { grep -E "error" -A3 "$LOG/build$nm.log" | head -60; exit 1; }
}
t0=$(date +%s)
build . build-gpu "" "test_cuda_kernels bench_attention" -DUL_CUDA_PTXAS_VERBOSE=ON
# the other builds timed beside this one: label, bench binary, test binary (patches only):
# the base trees as "base" (build-gpu-base), "base2" (build-gpu-base2), ...; each patch as
# its file's name (build-gpu-p-NAME)
ALT_L=() ALT_B=() ALT_T=()
n=0
for src in ${BASE:-}; do
  n=$((n + 1))
  sfx=$([ "$n" = 1 ] || echo "$n")
  build "$src" "build-gpu-base$sfx" "_base$sfx" bench_attention
  ALT_L+=("base$sfx") ALT_B+=("build-gpu-base$sfx/bench_attention") ALT_T+=("")
done
for pf in ${PATCHES:-}; do
  [ -f "$pf" ] || { echo "PATCHES: no file $pf"; exit 1; }
  nm=$(basename "$pf" .patch)
  dir=build-gpu-p-$nm
  rm -rf "$dir" && mkdir -p "$dir/src" && cp -r src bench tests scripts cmake CMakeLists.txt "$dir/src/"
  patch -s -d "$dir/src" -p1 < "$pf" > "$LOG/patch_$nm.log" 2>&1 || { echo "$pf: does not apply"; cat "$LOG/patch_$nm.log"; exit 1; }
  build "$dir/src" "$dir/b" "_$nm" "test_cuda_kernels bench_attention"
  ALT_L+=("$nm") ALT_B+=("$dir/b/bench_attention")
  ALT_T+=("$(find "$dir/b" -name test_cuda_kernels -type f -perm -u+x | head -1)")
done
echo "build: $(( $(date +%s) - t0 )) s"
att=$(find build-gpu -name "cuda_attention_sm90.cu.o" | head -1)
cuobjdump -sass "$att" > "$LOG/sm90.sass" 2>/dev/null
awk -f bench/attention/sass_summary.awk "$LOG/sm90.sass" | grep -i "attn" # per kernel; see the awk file
TEST=$(find build-gpu -name test_cuda_kernels -type f -perm -u+x | head -1)
BENCH=build-gpu/bench_attention
# the builds checked against the CPU backend and run under the sanitizers: this one and each
# patch's; log-name prefix ("" here, "NAME_" for a patch), test and bench binaries
CHK_P=("") CHK_T=("$TEST") CHK_B=("$BENCH")
for i in "${!ALT_L[@]}"; do
  [ -n "${ALT_T[$i]}" ] && CHK_P+=("${ALT_L[$i]}_") CHK_T+=("${ALT_T[$i]}") CHK_B+=("${ALT_B[$i]}")
done
echo "== smoke (a variant that hangs or fails here is dropped)"
ok=""
for f in $FWDS; do
  # (the persistent forward on 7 CTAs, so that each takes several tasks, as in the sanitizer runs)
  if UL_ATTN_PERSIST_CTAS=7 UL_ATTN_FWD=$f timeout 20 "$BENCH" 4000 4 2 128 2 1 >/dev/null &&
    UL_ATTN_PERSIST_CTAS=7 UL_ATTN_FWD=$f timeout 20 "$BENCH" 4000 4 2 64 2 1 >/dev/null; then
    ok="$ok $f"
  else
    echo "fwd=$f: failed or hung (exit $?)"
  fi
done
FWDS=$ok
echo "== timing"
J="$LOG/lab.jsonl"; : > "$J"
# ROUNDS: each point's runs (ours, the base's, cuDNN's) repeated in turn, the table taking
# each one's median (one backward point was seen to vary by +-4 % between runs of one call)
for p in $POINTS; do
  IFS=: read -r d T H HK DOCS <<< "$p"
  HK=${HK:-$H} DOCS=${DOCS:-1}
  for r in $(seq "$ROUNDS"); do
    for f in $FWDS; do
      for b in $BWDS; do
        UL_ATTN_FWD=$f UL_ATTN_KERNEL=$b timeout 30 "$BENCH" $T $H $HK $d $DOCS 5 | sed "s/^{/{\"fwd\": \"$f\", /" >> "$J"
        for i in "${!ALT_L[@]}"; do
          UL_ATTN_FWD=$f UL_ATTN_KERNEL=$b timeout 30 "${ALT_B[$i]}" $T $H $HK $d $DOCS 5 |
            sed "s/^{/{\"fwd\": \"${ALT_L[$i]}-$f\", /" >> "$J"
        done
      done
    done
    python3 bench/attention/sdpa_bench.py $T $H $HK $d 5 --backends cudnn --docs $DOCS >> "$J" 2>/dev/null
  done
done
python3 - "$J" <<'PY'
import json, statistics, sys
raw = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# the median of each configuration's rounds (ROUNDS), in first-seen order; n: the rounds
# (rows with an error, a run that failed, left out)
groups = {}
for x in raw:
    if "error" in x:
        continue
    k = (x.get("impl"), x.get("fwd"), x.get("kernel"), x["d"], x["T"], x["H"], x["Hkv"], x.get("docs", 1), x.get("varied", 0))
    groups.setdefault(k, []).append(x)
rows = []
for g in groups.values():
    r = dict(g[0])
    for m in ("fwd_tflops", "bwd_tflops"):
        r[m] = statistics.median(y[m] for y in g)
    r["n"] = len(g)
    rows.append(r)
print("| d | T | H:Hkv | docs | fwd variant | bwd form | ours fwd | ours bwd | cuDNN fwd | cuDNN bwd | fwd ratio | bwd ratio | rounds |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
key = lambda x: (x["d"], x["T"], x["H"], x["Hkv"], x.get("docs", 1), x.get("varied", 0))
for r in rows:
    if r.get("impl") != "ulysses":
        continue
    c = next((x for x in rows if x.get("impl") == "torch-cudnn" and key(x) == key(r)), None)
    rf = f"{r['fwd_tflops'] / c['fwd_tflops']:.2f}" if c else "-"
    rb = f"{r['bwd_tflops'] / c['bwd_tflops']:.2f}" if c else "-"
    cf = f"{c['fwd_tflops']:.0f}" if c else "-"
    cb = f"{c['bwd_tflops']:.0f}" if c else "-"
    print(f"| {r['d']} | {r['T']} | {r['H']}:{r['Hkv']} | {r['docs']}{'v' if r.get('varied') else ''} | {r['fwd']} | {r['kernel']} | {r['fwd_tflops']:.0f} | {r['bwd_tflops']:.0f} | {cf} | {cb} | {rf} | {rb} | {r['n']} |")
PY
pack
if [ "$CHECK" = 1 ]; then
  echo "== correctness (test_cuda_kernels --only attention)"
  for j in "${!CHK_T[@]}"; do
    t="$LOG/${CHK_P[$j]}test_attention.txt"
    UL_TEST_ATTN_FWD="$FWDS" timeout 300 "${CHK_T[$j]}" --only attention > "$t" 2>&1; rc=$?
    echo "${CHK_P[$j]:+${CHK_P[$j]%_}: }exit $rc: $(grep -c '| ok' "$t") ok, $(grep -c '| FAIL' "$t") failed"
    grep '| FAIL' "$t" | head -10
  done
fi
pack
echo "== compute-sanitizer"
for j in "${!CHK_B[@]}"; do
  for f in $SANITIZE; do
    for d in $SAN_D; do
      for tool in memcheck racecheck; do
        log="$LOG/sanitize_${CHK_P[$j]}${f}_${d}_$tool.txt"
        UL_ATTN_PERSIST_CTAS=5 UL_ATTN_FWD=$f UL_ATTN_KERNEL=${BWDS%% *} timeout 120 compute-sanitizer --tool $tool \
          --error-exitcode 9 "${CHK_B[$j]}" 1000 4 2 $d 2 1 >"$log" 2>&1
        rc=$? # 0: clean; 9: the tool found errors; 124: out of time
        echo "${CHK_P[$j]:+${CHK_P[$j]%_}: }fwd=$f d=$d $tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tr '\n' ' ')"
        # clean runs leave no log; a finding keeps its first 150 lines and the summary
        if [ "$rc" = 0 ]; then rm -f "$log"; else { head -n 150 "$log"; tail -n 3 "$log"; } > "$log.k" && mv "$log.k" "$log"; fi
      done
    done
  done
done
pack
if [ "$NCU" = 1 ] && command -v ncu >/dev/null; then
  # ncu_one NAME TIMEOUT REGEX D: one profile of the first kernel matching REGEX at head dim D
  # (at $NCU_P; UL_ATTN_FWD and UL_ATTN_KERNEL from the environment), its key lines on
  # one line; then, from a second run's PC sampling, the six most frequent reasons a warp
  # was stalled (share of the samples)
  ncu_one() {
    timeout "$2" ncu -k "regex:$3" -c 1 --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
      --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
      "$BENCH" "$NT" "$NH" "$NH" "$4" "$NDOCS" 1 > "$LOG/ncu_$1_$4.txt" 2>&1
    grep -E 'Duration|Compute \(SM\) Throughput|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Registers Per|SM Active Cycles|Elapsed Cycles|Waves Per SM' \
      "$LOG/ncu_$1_$4.txt" | awk '{$1=$1};1' | tr '\n' ';'
    timeout "$2" ncu -k "regex:$3" -c 1 --metrics "regex:^smsp__pcsamp_warps_issue_stalled_[a-z_]+$" \
      "$BENCH" "$NT" "$NH" "$NH" "$4" "$NDOCS" 1 > "$LOG/ncu_stall_$1_$4.txt" 2>&1
    awk '$1 ~ /^smsp__pcsamp_warps_issue_stalled_/ && $1 !~ /_not_issued$/ {
           v = $NF; gsub(",", "", v); n = $1; sub("smsp__pcsamp_warps_issue_stalled_", "", n); s[n] = v + 0; t += v }
         END { for (n in s) if (t > 0) printf "%.1f %s\n", 100 * s[n] / t, n }' "$LOG/ncu_stall_$1_$4.txt" |
      sort -rn | head -6 | awk 'BEGIN { printf " stalls:" } { printf " %s %s%%", $2, $1 }'
    # NCU_SRC=1: a third run with the per-instruction counters; the stall samples by opcode
    # and the hottest instructions (bench/attention/ncu_hot.py; and by $NCU_SRC_COL) in
    # ncu_hot_NAME_D.txt (the report and its CSV deleted: large)
    if [ "${NCU_SRC:-0}" = 1 ]; then
      rep="$LOG/ncu_src_$1_$4"
      timeout "$2" ncu -k "regex:$3" -c 1 --section SourceCounters -f -o "$rep" \
        "$BENCH" "$NT" "$NH" "$NH" "$4" "$NDOCS" 1 > "$rep.log" 2>&1 &&
        ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv" 2>> "$rep.log" &&
        python3 bench/attention/ncu_hot.py "$rep.csv" 30 > "$LOG/ncu_hot_$1_$4.txt" 2>&1 &&
        { [ -z "${NCU_SRC_COL:-}" ] || python3 bench/attention/ncu_hot.py "$rep.csv" 20 "$NCU_SRC_COL" \
          >> "$LOG/ncu_hot_$1_$4.txt" 2>&1; } &&
        rm -f "$rep.ncu-rep" "$rep.csv" "$rep.log" || tail -5 "$rep.log" >> "$LOG/ncu_hot_$1_$4.txt"
      printf " (per instruction: ncu_hot_%s_%s.txt)" "$1" "$4"
    fi
  }
  echo "== ncu (forward and backward at T H DOCS = $NT $NH $NDOCS, d in \$NCU_D)"
  for d in ${NCU_D:-128}; do
    for f in ${NCU_F:-$FWDS}; do
      echo "fwd=$f d=$d: $(UL_ATTN_FWD=$f ncu_one "$f" 90 k_attn_fwd "$d")"
    done
    # the backward's kernels in the first form of $BWDS (dK, dV, with dQ in the fused forms;
    # and, deterministic, the dQ kernel)
    kns=k_attn_dkv
    [ "${BWDS%% *}" = deterministic ] && kns="$kns k_attn_dq_sm90"
    for kn in $kns; do
      echo "bwd $kn d=$d: $(UL_ATTN_KERNEL=${BWDS%% *} ncu_one "$kn" 120 "$kn" "$d")"
    done
  done
fi
if [ -n "${NCU_FULL:-}" ] && command -v ncu >/dev/null; then
  echo "== ncu, full profiles of the backward (NCU_FULL = $NCU_FULL)"
  ncu --query-metrics > "$LOG/ncu_metrics.txt" 2>&1
  for p in $NCU_FULL; do
    IFS=: read -r T H D <<< "$p"
    D=${D:-128}
    rep="$LOG/ncu_full_${T}_${H}_$D"
    UL_ATTN_KERNEL=${BWDS%% *} timeout 300 ncu -k regex:k_attn_dkv -c 1 --set full \
      --metrics "regex:.*(gmma|mem_shared|pipe_tensor).*" -f -o "$rep" "$BENCH" "$T" "$H" "$H" "$D" 1 1 > "$rep.log" 2>&1
    echo "T=$T H=$H d=$D: exit $?"
    ncu --import "$rep.ncu-rep" --page details > "$rep.txt" 2>> "$rep.log"
    # the raw page's CSV (a row of names, one of units, one of values), one metric a line
    ncu --import "$rep.ncu-rep" --page raw --csv 2>> "$rep.log" | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
if len(rows) >= 3:
    for n, u, v in zip(rows[0], rows[1], rows[2]):
        print(n, v, u)' > "$rep.raw.txt"
    grep -E "Duration|Throughput|Busy|Shared|Bank|Wavefront|Tensor|Pipe" "$rep.txt" | head -40
    rm -f "$rep.ncu-rep"
  done
  pack
fi
if [ -n "${NCU_M:-}" ] && command -v ncu >/dev/null; then
  echo "== ncu metrics at T H DOCS = $NT $NH $NDOCS (NCU_M)"
  # the forward once a build (it is the same in every backward form), then the dK/dV kernel
  # in each form of NCU_M_BWDS
  MB=(${NCU_M_BWDS:-${BWDS%% *}})
  for b in "$BENCH" "${ALT_B[@]}"; do
    for kf in "k_attn_fwd ${MB[0]}" "${MB[@]/#/k_attn_dkv }"; do
      read -r kn form <<< "$kf"
      for d in ${NCU_D:-128}; do
        UL_ATTN_KERNEL=$form timeout 120 ncu -k "regex:$kn" -c 1 --metrics "$NCU_M" "$b" "$NT" "$NH" "$NH" "$d" "$NDOCS" 1 \
          > "$LOG/ncu_m.txt" 2>&1
        echo "$b $kn ($form) d=$d: $(awk -v m="$NCU_M" 'BEGIN { n = split(m, a, ","); for (i = 1; i <= n; i++) w[a[i]] = 1 }
          ($1 in w) { printf " %s %s", $1, $NF }' "$LOG/ncu_m.txt")"
      done
    done
  done
  pack
fi
