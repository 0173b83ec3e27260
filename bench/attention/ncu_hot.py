#!/usr/bin/env python3
"""Where a kernel's warps stall, instruction by instruction (the kernel lab, issue 21).

Reads the CSV of `ncu --import REP --page source --csv --print-source sass` for a report
taken with `--section SourceCounters` (bench/attention/lab.sh, NCU_SRC=1) and prints the
share of the warp-stall samples by opcode and the N instructions with the most samples
(address and SASS text), so that a stall reason from the kernel-level profile can be put on
the instructions that cause it.
  bench/attention/ncu_hot.py SOURCE.csv [N]
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
        sys.exit("usage: ncu_hot.py SOURCE.csv [N]")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    rows = list(csv.reader(open(sys.argv[1], newline="")))
    head = next((i for i, r in enumerate(rows) if "Address" in r and "Source" in r), None)
    if head is None:
        sys.exit("ncu_hot.py: no header with Address and Source in %s (first line: %s)"
                 % (sys.argv[1], rows[0] if rows else "empty"))
    cols = rows[head]
    stall = next((j for j, c in enumerate(cols) if c.startswith("Warp Stall Sampling (All")), None)
    if stall is None:
        sys.exit("ncu_hot.py: no 'Warp Stall Sampling (All Samples)' column; columns: %s" % ", ".join(cols))
    noiss = next((j for j, c in enumerate(cols) if c.startswith("Warp Stall Sampling (Not")), None)
    addr, src = cols.index("Address"), cols.index("Source")
    inst = [(r[addr], r[src].strip(), number(r[stall]), number(r[noiss]) if noiss is not None else 0.0)
            for r in rows[head + 1:] if len(r) == len(cols)]
    total = sum(i[2] for i in inst)
    if total <= 0:
        sys.exit("ncu_hot.py: no stall samples in %s" % sys.argv[1])
    by_op = Counter()
    for _, text, n, _ in inst:
        words = text.split()
        if words and words[0].startswith("@"):
            words = words[1:]
        by_op[words[0].split(".")[0] if words else "?"] += n
    print("%d instructions, %d samples; by opcode (share of samples):" % (len(inst), total))
    print("  " + ", ".join("%s %.1f%%" % (op, 100 * n / total) for op, n in by_op.most_common(12)))
    print("top %d instructions (share of all samples, of not-issued samples; address; SASS):" % top)
    for a, text, n, ni in sorted(inst, key=lambda i: -i[2])[:top]:
        print("  %5.1f%% %5.1f%%  %s  %s" % (100 * n / total, 100 * ni / total, a, text))


if __name__ == "__main__":
    main()
