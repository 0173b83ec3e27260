#!/usr/bin/env python3
"""ulysses and the PyTorch peer side by side on the same GPUs, model shape and sequence.

Run on the GPU machine from the repository root, after building with the CUDA backend
(scripts/gpu_test.sh builds build-gpu/):

    NCCL_NVLS_ENABLE=0 python3 bench/gpu_bench.py --model-shape llama-3.2-1b --seq-len 32768 --sp 2

For each point it (1) writes the shape's config.json and a token shard of random tokens,
(2) runs `mpirun -np SP build-gpu/ulysses train --device cuda ...` with per-layer
checkpointing and a fixed-length sample, (3) runs bench/peer/ulysses_peer.py under
torchrun on the same GPUs, and prints tokens/s, model TFLOP/s per GPU (causal attention
counted once, recompute not counted — the peer's train_flops_per_sample, one formula for
both; and "with recompute": the forward each side reruns, per ours' --checkpoint and the
peer's checkpointing and chunked loss), GPU memory, and the ratio ours/peer. Ours runs
with --checkpoint 1 unless --ours-args says otherwise (e.g. --ours-args="--checkpoint 2"). --json appends one object per point.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
import ulysses_peer as peer  # noqa: E402  (shapes and the FLOP formula)


def write_shard(path, vocab, seq_len, n_docs, seed):
    import random
    rng = random.Random(seed)
    toks = [rng.randrange(1, vocab) for _ in range(seq_len * n_docs)]
    offs = [i * seq_len for i in range(n_docs + 1)]
    with open(path, "wb") as f:
        f.write(b"ULYSTOK1" + struct.pack("<IIQQ", 1, vocab, n_docs, len(toks)))
        f.write(struct.pack("<%dQ" % len(offs), *offs))
        f.write(struct.pack("<%dI" % len(toks), *toks))


def run_ours(args, work, cfg):
    cfg_path = os.path.join(work, "config.json")
    d = cfg.to_dict()
    d["architectures"] = ["LlamaForCausalLM"]
    d.pop("attn_implementation", None)
    d.pop("_attn_implementation", None)
    with open(cfg_path, "w") as f:
        json.dump(d, f)
    steps = args.steps + args.warmup_steps
    shard = os.path.join(work, "rand.tok")
    write_shard(shard, cfg.vocab_size, args.seq_len, steps, 0)
    metrics = os.path.join(work, "ours.jsonl")
    cmd = ["mpirun", "-np", str(args.sp), "--bind-to", "none", "-x", "NCCL_NVLS_ENABLE=0", args.bin, "train", "--device", "cuda",
           "--model", cfg_path, "--data", shard, "--seq-len", str(args.seq_len), "--fixed-len",
           "--doc-per-sample", "--no-shuffle", "--sp", str(args.sp), "--batch", "1", "--steps", str(steps),
           "--lr", "1e-5", "--checkpoint", "1", "--metrics", metrics, "--quiet", "--profile"] + args.ours_args
    subprocess.run(cmd, check=True)
    rows = [json.loads(l) for l in open(metrics)][args.warmup_steps:]
    med = lambda k: statistics.median(r.get(k, 0.0) for r in rows)
    # the step's breakdown (--profile): attention kernels, all-to-all (communication stream),
    # loss head, optimizer; "other" = the rest of the step (GEMMs, norms, RoPE, SwiGLU, ...)
    br = {k: med(k) for k in ("attn_s", "a2a_s", "loss_s", "optim_s")}
    return {"step_s": med("step_s"), "mem_gib": max(r.get("gpu_mem_gib", 0) for r in rows), "breakdown_s": br}


def run_peer(args, work):
    out = os.path.join(work, "peer.json")
    cmd = ["torchrun", "--nproc-per-node", str(args.sp), os.path.join(os.path.dirname(__file__), "peer", "ulysses_peer.py"),
           "--model-shape", args.model_shape, "--seq-len", str(args.seq_len), "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--attn", args.attn, "--json", out]
    subprocess.run(cmd, check=True)
    r = json.load(open(out))
    # the peer's peak is torch.cuda.max_memory_reserved (what its allocator holds); ours is
    # the device's used memory (cudaMemGetInfo: context and NCCL buffers included)
    return {"step_s": r["step_s_median"], "mem_gib": r["peak_reserved_gib_max"],
            "tflops_per_gpu_hw": r["flops_per_sample_hw"] / r["step_s_median"] / args.sp / 1e12}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-shape", choices=list(peer.SHAPES), default="llama-3.2-1b")
    p.add_argument("--seq-len", type=int, default=32768)
    p.add_argument("--sp", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--attn", default="cudnn", help="the peer's SDPA backend")
    p.add_argument("--bin", default="build-gpu/ulysses")
    p.add_argument("--json", help="append the result here")
    p.add_argument("--ours-args", default="", help="extra flags for ulysses train (e.g. \"--zero 2\")")
    args = p.parse_args()
    args.ours_args = args.ours_args.split()
    cfg = peer.make_config(args.model_shape, "sdpa")
    flops = peer.config_flops(cfg, args.seq_len)
    # "with recompute" (hardware) FLOPs: --checkpoint 1 reruns each layer's forward up to
    # the MLP's gate/up (no down projection: its output is not needed), attention included;
    # --checkpoint 2 keeps the attention output, so only the dense part; our fused logits +
    # loss runs the lm_head forward once
    ck = 1
    for i, a in enumerate(args.ours_args[:-1]):
        if a == "--checkpoint":
            ck = int(args.ours_args[i + 1])
    rec = peer.config_flops(cfg, args.seq_len, recompute_layers=True) - flops  # dense + attention forward
    attn_fwd = cfg.num_hidden_layers * 2 * args.seq_len ** 2 * cfg.num_attention_heads * cfg.head_dim
    down = 2 * args.seq_len * cfg.hidden_size * cfg.intermediate_size * cfg.num_hidden_layers
    hw_ours = flops + (rec - down if ck == 1 else rec - attn_fwd - down if ck == 2 else 0)
    with tempfile.TemporaryDirectory() as work:
        ours = run_ours(args, work, cfg)
        # printed at once: a peer run cut short by a time limit must not lose ours
        print(f"ours: {args.seq_len / ours['step_s']:.0f} tok/s "
              f"{flops / ours['step_s'] / args.sp / 1e12:.0f} TFLOP/s/GPU {ours['mem_gib']:.1f} GiB; breakdown (median s): " +
              ", ".join(f"{k[:-2]} {v:.3f}" for k, v in ours["breakdown_s"].items()) + f", step {ours['step_s']:.3f}",
              flush=True)
        theirs = run_peer(args, work)
    res = {"shape": args.model_shape, "seq_len": args.seq_len, "sp": args.sp, "peer_attn": args.attn}
    for name, r in (("ours", ours), ("peer", theirs)):
        res[name] = dict(r, tok_s=args.seq_len / r["step_s"], tflops_per_gpu=flops / r["step_s"] / args.sp / 1e12)
    res["ours"]["tflops_per_gpu_hw"] = hw_ours / ours["step_s"] / args.sp / 1e12
    res["ours"]["checkpoint"] = ck
    res["ratio_tok_s"] = res["ours"]["tok_s"] / res["peer"]["tok_s"]
    print(f"{args.model_shape} T={args.seq_len} sp={args.sp}: "
          f"ours {res['ours']['tok_s']:.0f} tok/s {res['ours']['tflops_per_gpu']:.0f} TFLOP/s/GPU "
          f"({res['ours']['tflops_per_gpu_hw']:.0f} with recompute) {res['ours']['mem_gib']:.1f} GiB | "
          f"peer {res['peer']['tok_s']:.0f} tok/s {res['peer']['tflops_per_gpu']:.0f} TFLOP/s/GPU "
          f"({res['peer']['tflops_per_gpu_hw']:.0f} with recompute) {res['peer']['mem_gib']:.1f} GiB | "
          f"ratio {res['ratio_tok_s']:.2f}x")
    b = res["ours"]["breakdown_s"]
    print("ours step breakdown (median s): " + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in b.items()) +
          f", step {res['ours']['step_s']:.3f}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
