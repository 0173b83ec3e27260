#!/usr/bin/env python3
"""Tokenizer throughput: `ulysses tokenize --tokenizer` against the Python `tokenizers`
library on the same corpus and machine, single-threaded and with all cores (documents in
parallel). Not a test: prints a table (markdown) for bench/RESULTS.md.

    python bench/tokenizer/bench.py --bin build/ulysses TOKENIZER.json|DIR ...

Needs `tokenizers` importable (tests/tokenizer_test.sh installs it into build/tokref/venv).
Corpus: every .py file of this Python's standard library (code, docstrings: one document
each) plus multilingual documents from scripts/tokenizer_reference.py, as one JSONL file.
tokenizers is timed on encode_batch of the texts already in memory; ulysses on its own
reported encode time (reading the JSONL file, encoding, writing the shard) and, in
brackets, the whole command (MPI start and tokenizer.json loading included). Both sides
read a directory's tokenizer.json alone (no tokenizer_config.json)."""
import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from tokenizer_reference import make_corpus  # noqa: E402

REF = r'''
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
docs = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
tok.encode_batch(docs[:200])
best = None
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter()
    n = sum(len(e.ids) for e in tok.encode_batch(docs))
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(json.dumps({"tokens": n, "s": best}))
'''


def corpus(path, mb):
    rng = random.Random(7)
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True))
    docs, size = [], 0
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                t = fh.read()
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(t)
        size += len(t.encode())
        if size > mb * 0.8e6:
            break
    multi = make_corpus(rng, 4000)
    docs += multi
    rng.shuffle(docs)
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return len(docs), os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mb", type=float, default=20, help="corpus size (MB, about)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement (the best is kept)")
    ap.add_argument("tokenizers", nargs="+")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tokbench")
    data = os.path.join(work, "corpus.jsonl")
    ndocs, nbytes = corpus(data, a.mb)
    ncpu = os.cpu_count()
    print(f"corpus: {ndocs} documents, {nbytes / 1e6:.1f} MB; {ncpu} cores\n")
    print("| tokenizer | threads | tokenizers tok/s | ulysses tok/s (whole command) | ulysses / tokenizers |")
    print("|---|---|---|---|---|")
    for tk in a.tokenizers:
        tj = os.path.join(tk, "tokenizer.json") if os.path.isdir(tk) else tk
        name = os.path.basename(tk.rstrip("/")).replace(".json", "")
        for threads in (1, ncpu):
            env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true",
                       OMP_NUM_THREADS=str(threads))
            r = subprocess.run([sys.executable, "-c", REF, tj, data, str(a.repeat)], env=env, capture_output=True,
                               text=True, check=True)
            ref = json.loads(r.stdout)
            best = None
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                u = subprocess.run([a.bin, "tokenize", "--tokenizer", tj, data, "-o", os.path.join(work, "out.tok")],
                                   env=env, capture_output=True, text=True, check=True)
                wall = time.perf_counter() - t0
                # "tokenize: F file(s), D documents (...), N tokens (M with loss) in S s (...)"
                m = [re.search(r" documents[^,]*, (\d+) tokens.* in ([0-9.]+) s ", ln) for ln in u.stderr.splitlines()]
                m = [x for x in m if x][0]
                ntok, secs = int(m.group(1)), float(m.group(2))
                if best is None or secs < best[0]:
                    best = (secs, wall, ntok)
            if best[2] != ref["tokens"]:
                print(f"warning: {name}: ulysses made {best[2]} tokens, tokenizers {ref['tokens']}")
            rt, ut, uw = ref["tokens"] / ref["s"], best[2] / best[0], best[2] / best[1]
            print(f"| {name} | {threads} | {rt / 1e6:.2f} M | {ut / 1e6:.2f} M ({uw / 1e6:.2f} M) | {ut / rt:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
