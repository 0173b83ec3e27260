#!/usr/bin/env python3
"""Checks that a model directory written by ulysses (a checkpoint's config.json +
model.safetensors, or a --out directory) loads in Hugging Face transformers with no
conversion and no sequence parallelism, and that transformers reproduces the loss that
`ulysses eval` reports for the same tokens (docs/design.md §11, step 5).

Needs a Python with torch, transformers and numpy (not part of ctest: CI has no torch).
Run by hand with that Python, for example from a virtual environment:

    python3 -m venv ~/hfenv && ~/hfenv/bin/pip install torch transformers numpy
    ~/hfenv/bin/python scripts/check_hf_interop.py            # self-contained, see below
    ~/hfenv/bin/python scripts/check_hf_interop.py --model runs/x/step-00000100 \\
        --data data/val.tok --seq-len 2048 --samples 8

A missing module, or a model or data that ulysses refuses (its message is printed), ends
the script with one line saying so and exit status 2; a loss that differs, with FAIL and 1.

Self-contained mode (no --model): writes a token shard of random documents, then trains
a fixture (--fixture, default tests/fixtures/hf_tiny; qwen2_tiny, qwen3_tiny and
mistral_tiny check the other families) from its weights (--init) for a few steps under
`mpirun -np 2 ulysses train --sp 2` with RoPE overrides (--rope-theta, --rope-scaling
llama3:..., --max-position-embeddings) and --save-every, and checks the checkpoint it
wrote, and the --out directory of the same run.

The model is loaded with the class its config.json names in "architectures"
(LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or MistralForCausalLM), which must
report no missing, unexpected or mismatched weights.

What `ulysses eval --data SHARD --seq-len N --samples K` computes (src/run/eval.c with
the data loader of src/data/data.c, packing on, shuffling off) and this script
recomputes:
  * documents of the shards in file order (empty ones skipped), each cut into pieces of at
    most N tokens; a piece is a document of its own;
  * pieces packed greedily into samples: a new sample starts when the next piece does not
    fit into the N tokens; eval takes the first K samples, each once (all of them when
    the data holds fewer);
  * inside a sample, position_ids restart at 0 at every document, attention is causal
    within each document and never crosses documents, label[t] = token[t+1] within a
    document where the shard's loss mask of token t+1 is 1 (version 2 shards; version 1:
    always), else -100, and -100 at each document's last token (and on padding);
  * loss = mean cross-entropy over every labelled token of those samples.
Here every sample is one forward over the packed sequence with a block-diagonal causal
4-D attention mask (checked against per-document forwards on the first sample holding several).

Exit status 0 when |loss_transformers - loss_ulysses| <= --tol (default 1e-4).
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
np = torch = F = transformers = None  # imported by need_modules()


def fail(msg):
    """One line on stderr and exit status 2: the check could not run."""
    print(f"check_hf_interop: {msg}", file=sys.stderr)
    sys.exit(2)


def need_modules():
    global np, torch, F, transformers
    try:
        import numpy as np
        import torch
        import torch.nn.functional as F
        import transformers
    except ImportError as e:
        fail(f"this Python ({sys.executable}) lacks {e.name or e}: run the script with a Python that has torch, "
             f"transformers and numpy (see the top of {os.path.relpath(__file__)})")
MAGIC = b"ULYSTOK1"


def read_shard(path):
    """A ulysses token shard (docs/formats.md): list of documents, each an np.int64 array
    [n, 2] of (token, loss mask); version 1 shards have no mask (all ones)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != MAGIC:
        fail(f"{path}: not a ulysses token shard")
    version, vocab, n_docs, n_tokens = struct.unpack_from("<IIQQ", buf, 8)
    if version not in (1, 2):
        fail(f"{path}: shard version {version}, expected 1 or 2")
    offs = np.frombuffer(buf, dtype="<u8", count=n_docs + 1, offset=32).astype(np.int64)
    at = 32 + 8 * (n_docs + 1)
    toks = np.frombuffer(buf, dtype="<u4", count=n_tokens, offset=at).astype(np.int64)
    mask = np.ones(n_tokens, dtype=np.int64)
    if version == 2:
        mask = np.frombuffer(buf, dtype="u1", count=n_tokens, offset=at + 4 * n_tokens).astype(np.int64)
    both = np.stack([toks, mask], axis=1)
    return [both[offs[i] : offs[i + 1]] for i in range(n_docs)]


def packed_samples(docs, seq_len):
    """Samples of one epoch in file order: each a list of document pieces."""
    pieces = [d[o : o + seq_len] for d in docs for o in range(0, len(d), seq_len)]
    samples, cur, fill = [], [], 0
    for i, p in enumerate(pieces):
        if i == 0 or fill + len(p) > seq_len:
            if cur:
                samples.append(cur)
            cur, fill = [], 0
        cur.append(p)
        fill += len(p)
    if cur:
        samples.append(cur)
    return samples


def sample_tensors(pieces):
    tokens = torch.tensor(np.concatenate([p[:, 0] for p in pieces]), dtype=torch.long)
    pos = torch.cat([torch.arange(len(p)) for p in pieces])
    # label[t] = token[t+1] where the loss mask of token t+1 is 1 (docs/formats.md)
    labels = torch.cat(
        [torch.tensor(np.append(np.where(p[1:, 1] == 1, p[1:, 0], -100), -100), dtype=torch.long) for p in pieces]
    )
    doc = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pieces)])
    return tokens, pos, labels, doc


def packed_logits(model, tokens, pos, doc):
    T = len(tokens)
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(T, T, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return model(
        input_ids=tokens[None], position_ids=pos[None], attention_mask=mask[None, None], use_cache=False
    ).logits[0]


def per_document_logits(model, pieces):
    out = []
    for p in pieces:
        ids = torch.tensor(p[:, 0], dtype=torch.long)[None]
        out.append(
            model(
                input_ids=ids,
                position_ids=torch.arange(ids.shape[1])[None],
                attention_mask=torch.ones_like(ids),  # explicit: transformers 5 would otherwise infer packing
                use_cache=False,
            ).logits[0]
        )
    return torch.cat(out, 0)


def hf_loss(model_dir, shard_paths, seq_len, n_samples, dtype):
    with open(os.path.join(model_dir, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    cls = getattr(transformers, arch)  # the family's own class
    model, info = cls.from_pretrained(model_dir, attn_implementation="sdpa", output_loading_info=True)
    model = model.to(dtype).eval()
    if type(model) is not cls:
        fail(f"{model_dir}: loaded as {type(model).__name__}, not {arch}")
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        fail(f"{model_dir}: transformers reports {bad}")
    docs = [d for p in shard_paths for d in read_shard(p) if len(d) > 0]
    samples = packed_samples(docs, seq_len)[:n_samples]  # each once, as ulysses eval
    n_samples = len(samples)
    total, count, check = 0.0, 0, None
    with torch.no_grad():
        for g in range(n_samples):
            pieces = samples[g]
            tokens, pos, labels, doc = sample_tensors(pieces)
            logits = packed_logits(model, tokens, pos, doc)
            if check is None and (len(pieces) > 1 or g == n_samples - 1):  # first sample with several documents
                ref = per_document_logits(model, pieces)
                check = ((logits - ref).abs().max().item(), g, len(pieces))
            ce = F.cross_entropy(logits.double(), labels, ignore_index=-100, reduction="sum")
            total += ce.item()
            count += int((labels != -100).sum())
    return total / count, count, n_samples, check, model.config


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        verb = next((w for w in ("tokenize", "train", "eval") if w in cmd), "ulysses")
        fail(f"`ulysses {verb}` exited with status {r.returncode} (its message is above); nothing was checked")
    return r


def mpi_env():
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_shard(path, docs, vocab):
    """A ulysses token shard (docs/formats.md) holding docs (lists of ints < vocab)."""
    offs = [0]
    for d in docs:
        offs.append(offs[-1] + len(d))
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<IIQQ", 1, vocab, len(docs), offs[-1]))
        f.write(np.asarray(offs, dtype="<u8").tobytes())
        f.write(np.concatenate([np.asarray(d, dtype="<u4") for d in docs]).tobytes())


def self_contained(args, work):
    """Trains the fixture a few steps with RoPE overrides; returns ([checkpoint dir, --out dir], shard)."""
    fixture = os.path.join(ROOT, "tests", "fixtures", args.fixture)
    with open(os.path.join(fixture, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    rng = np.random.default_rng(3)
    docs = [rng.integers(1, vocab, size=int(rng.integers(10, 150))).tolist() for _ in range(120)]
    shard = os.path.join(work, "data.tok")
    write_shard(shard, docs, vocab)
    ck, out = os.path.join(work, "ck"), os.path.join(work, "out")
    mpirun = args.mpirun.split() + ["-np", "2"]
    run(
        mpirun
        + [args.bin, "train", "--init", fixture, "--data", shard,
           "--seq-len", str(args.seq_len), "--sp", "2", "--batch", "2", "--steps", "8", "--lr", "3e-3",
           "--seed", "4", "--rope-theta", "500000",
           "--rope-scaling", "llama3:factor=16,low_freq_factor=1,high_freq_factor=4,original_max_position_embeddings=64",
           "--max-position-embeddings", "4096", "--save-every", "4", "--ckpt-dir", ck, "--out", out, "--quiet"],
        env=mpi_env(),
    )
    return [os.path.join(ck, "step-00000008"), out], shard


def check_dir(args, work, model_dir, data):
    """ulysses eval and transformers on model_dir: True when the losses agree."""
    out = os.path.join(work, "eval.json")
    run(
        args.mpirun.split()
        + ["-np", str(args.np), args.bin, "eval", "--model", model_dir, "--data", data, "--seq-len",
           str(args.seq_len), "--samples", str(args.samples), "--out", out],
        env=mpi_env(),
        stdout=subprocess.DEVNULL,
    )
    with open(out) as f:
        ul = json.load(f)
    import glob

    shards = sorted(glob.glob(data))
    dtype = torch.float64 if args.double else torch.float32
    if not shards:
        fail(f"--data {data}: no file matches")
    loss, count, n_samples, packed_vs_docs, cfg = hf_loss(model_dir, shards, args.seq_len, args.samples, dtype)
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
    print(f"model          {model_dir} ({cfg.architectures[0]})")
    print(f"transformers   config: max_position_embeddings {cfg.max_position_embeddings}, rope {rope}")
    print(f"tokens         {count} labelled tokens in {n_samples} packed samples of <= {args.seq_len} "
          f"(ulysses: {ul['answers']:.0f} in {ul['samples']})")
    print(f"packed 4-D mask vs per-document forwards, sample {packed_vs_docs[1]} ({packed_vs_docs[2]} documents): "
          f"max |dlogits| = {packed_vs_docs[0]:.3g}")
    diff = abs(loss - ul["eval_loss"])
    print(f"loss           ulysses {ul['eval_loss']:.6g}   transformers ({dtype}) {loss:.8g}   |diff| {diff:.3g}"
          f"   (tolerance {args.tol:g}; ulysses prints 6 significant digits)")
    return (diff <= args.tol and count == round(ul["answers"]) and n_samples == ul["samples"]
            and packed_vs_docs[0] < 1e-4 and math.isfinite(loss))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "ulysses"), help="the ulysses binary")
    ap.add_argument("--model", help="model/checkpoint directory to check (default: train one, see above)")
    ap.add_argument("--fixture", default="hf_tiny", help="self-contained mode: the tests/fixtures/ model to train")
    ap.add_argument("--data", help="token shard(s) (glob, as ulysses takes it); required with --model")
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--np", type=int, default=2, help="ranks of `ulysses eval` (its --sp)")
    ap.add_argument("--mpirun", default="mpirun -q --oversubscribe")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--double", action="store_true", help="run transformers in float64 (default: float32)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        fail(f"{args.bin}: no ulysses binary (build it first, or pass --bin)")
    need_modules()
    work = tempfile.mkdtemp(prefix="ul-interop-")
    try:
        if args.model:
            if not args.data:
                fail("--data: required with --model")
            model_dirs, data = [args.model], args.data
        else:
            model_dirs, data = self_contained(args, work)
        ok = True
        for model_dir in model_dirs:
            ok = check_dir(args, work, model_dir, data) and ok
        print("OK" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
