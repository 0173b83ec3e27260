#!/usr/bin/env python3
"""Where a kernel's warps stall, instruction by instruction (the kernel lab, issue 21).

Reads the CSV of `ncu --import REP --page source --csv --print-source sass` for a report
taken with `--section SourceCounters` (bench/attention/lab.sh, NCU_SRC=1) and prints the
share of the warp-stall samples by opcode and the N instructions with the most samples
(address and SASS text), so that a stall reason from the kernel-level profile can be put on
the instructions that cause it. COLUMN (a column's name or the start of one, e.g. "L1 Wavefronts
Shared") ranks by that column instead of the stall samples.
  bench/attention/ncu_hot.py SOURCE.csv [N [COLUMN]]
"""
import csv
import sys
from collections import Counter


def number(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ncu_hot.py SOURCE.csv [N [COLUMN]]")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    by_col = len(sys.argv) > 3 # ranked by COLUMN, not the stall samples
    want = sys.argv[3] if by_col else "Warp Stall Sampling (All"
    rows = list(csv.reader(open(sys.argv[1], newline="")))
    head = next((i for i, r in enumerate(rows) if "Address" in r and "Source" in r), None)
    if head is None:
        sys.exit("ncu_hot.py: no header with Address and Source in %s (first line: %s)"
                 % (sys.argv[1], rows[0] if rows else "empty"))
    cols = rows[head]
    # the column named exactly COLUMN, else the first whose name starts with it
    stall = next((j for j, c in enumerate(cols) if c == want), None)
    if stall is None:
        stall = next((j for j, c in enumerate(cols) if c.startswith(want)), None)
    if stall is None:
        sys.exit("ncu_hot.py: no column starting with '%s'; columns: %s" % (want, ", ".join(cols)))
    # the second figure: the not-issued samples, or with COLUMN, all the stall samples
    second = "Warp Stall Sampling (All" if by_col else "Warp Stall Sampling (Not"
    noiss = next((j for j, c in enumerate(cols) if c.startswith(second)), None)
    addr, src = cols.index("Address"), cols.index("Source")
    inst = [(r[addr], r[src].strip(), number(r[stall]), number(r[noiss]) if noiss is not None else 0.0)
            for r in rows[head + 1:] if len(r) == len(cols)]
    total = sum(i[2] for i in inst)
    if total <= 0:
        sys.exit("ncu_hot.py: column '%s' is zero throughout %s" % (cols[stall], sys.argv[1]))
    by_op = Counter()
    for _, text, n, _ in inst:
        words = text.split()
        if words and words[0].startswith("@"):
            words = words[1:]
        by_op[words[0].split(".")[0] if words else "?"] += n
    print("%d instructions, %d of '%s'; by opcode (share):" % (len(inst), total, cols[stall]))
    print("  " + ", ".join("%s %.1f%%" % (op, 100 * n / total) for op, n in by_op.most_common(12)))
    total2 = sum(i[3] for i in inst) if by_col else total
    print("top %d instructions (share of the column; of the %s samples; address; SASS):"
          % (top, "stall" if by_col else "not-issued"))
    for a, text, n, ni in sorted(inst, key=lambda i: -i[2])[:top]:
        print("  %5.1f%% %5.1f%%  %s  %s" % (100 * n / total, 100 * ni / max(total2, 1), a, text))


if __name__ == "__main__":
    main()
