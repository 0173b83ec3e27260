#!/usr/bin/env python3
"""PyTorch peer benchmark for ulysses: what a user runs today for long-sequence Llama training.

The peer is stock PyTorch + transformers `LlamaForCausalLM` (random weights built from a
config, nothing downloaded) trained with

* **Ulysses sequence parallelism.** Each of the `sp` ranks of a group holds T/sp tokens of
  the sample. A custom attention function, registered through transformers'
  `AttentionInterface`, takes the rank's q, k, v [b, heads, T/sp, d] (RoPE already applied
  with *global* positions: position_ids = rank * T/sp + arange(T/sp)), all-to-alls them from a
  sequence split to a head split ([b, heads/sp, T, d]), runs causal SDPA over the whole
  sequence, and all-to-alls the output back. GQA: key/value heads are split over the ranks
  when there are at least `sp` of them, otherwise each is replicated so that every rank
  gets one (sp must then be a multiple of their number). The all-to-all is a
  `torch.autograd.Function` whose backward is the reverse all-to-all.
* **Activation checkpointing** of every decoder layer (transformers' own, non-reentrant).
* **Chunked loss** (like ALST's tiled loss): the final hidden states go through lm_head +
  cross-entropy `--loss-chunk` tokens at a time, each chunk under `torch.utils.checkpoint`,
  so the [T/sp, vocab] logits never exist in full. Labels are pre-shifted on the global
  sequence (label[t] = token[t+1], -100 for the last token) and the loss is the mean over
  all the group's tokens (sum and count all-reduced over the sp ranks).

Precision and optimizer (the usual single-node choice, no DeepSpeed): parameters, gradients
and AdamW states are bf16 (`model` built in bf16, `torch.optim.AdamW(fused=True)` on CUDA,
`foreach` on CPU); no fp32 master weights. This is lossy for real training but it is what a
plain `model.to(torch.bfloat16)` + AdamW user gets, and it is the cheapest in memory:
8 bytes per parameter (weights 2, grads 2, Adam moments 2 + 2). Logits are upcast to fp32
inside each loss chunk, as transformers does.

Gradients: every rank of an sp group holds a full replica of the weights, and its gradient
is only the part that flows through its own tokens, so after backward the gradients are
summed over the sp group (and averaged over data-parallel replicas when world > sp) with
one all-reduce per parameter, not overlapped with backward (DDP or ZeRO would overlap
it); its time is reported separately as grad_sync_s.

Timing: `--warmup-steps` untimed steps, then `--steps` steps each bracketed by
torch.cuda.synchronize(). FLOPs: see `train_flops_per_sample` (the same formula is used for
the ulysses binary). `--check` compares, in fp32 on the CPU, the sp-parallel loss and
gradients against plain transformers (sdpa attention, built-in loss) on the same sequence.

Launch: `torchrun --nproc-per-node N bench/peer/ulysses_peer.py ...` (NCCL on cuda, gloo on
cpu); plain `python` runs one process with sp = 1. See bench/peer/README.md.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

import transformers
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM

ATTN_IMPL = "ulysses_sdpa"  # name of our attention function in transformers' AttentionInterface

SHAPES = {
    "llama-3.2-1b": dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192),
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192),
    ),
    # For CPU runs and --check: same structure (GQA, tied, llama3 RoPE), small sizes.
    "tiny": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
        intermediate_size=768, vocab_size=1024, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192),
    ),
}

SDPA_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def make_config(shape, attn_implementation):
    return LlamaConfig(
        **SHAPES[shape], hidden_act="silu", rms_norm_eps=1e-5, max_position_embeddings=131072,
        attention_bias=False, mlp_bias=False, use_cache=False, attn_implementation=attn_implementation,
    )


# --------------------------------------------------------------------------------------------
# FLOPs


def train_flops_per_sample(hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, seq_len,
                           recompute_layers=False, recompute_lm_head=False):
    """FLOPs of one training step (forward + backward) on one sample of `seq_len` tokens.

    Notation: D = hidden, L = layers, H = query heads, Hkv = key/value heads, d = head_dim,
    I = intermediate (MLP width), V = vocab, T = seq_len (the whole sample, all sp ranks).
    A matrix product of [m, k] x [k, n] counts 2*m*k*n; norms, RoPE, softmax, SiLU and the
    embedding lookup count 0.

      N = L * (D*H*d + 2*D*Hkv*d + H*d*D + 3*D*I)    non-embedding matrix weights
                                                     (q, k, v, o, gate, up, down)
      forward:   dense      2 * N * T
                 attention  L * 2 * T^2 * H * d      QK^T and PV are 2*T^2*H*d each for full
                                                     attention; causal counts half:
                                                     4*T^2*H*d / 2 per layer
                 lm_head    2 * T * D * V
      backward:  2 x forward for dense and lm_head, 2.5 x forward for attention
                 (the FlashAttention backward recomputes QK^T)

      model FLOPs = 6*N*T + 3.5 * L*2*T^2*H*d + 6*T*D*V  =  6NT + 7*L*T^2*H*d + 6TDV

    Recompute is not part of the model FLOPs. With recompute_layers (activation checkpointing)
    one more forward of the layers is added, 2*N*T + L*2*T^2*H*d; with recompute_lm_head (a
    chunked loss whose chunks are checkpointed) one more lm_head forward, 2*T*D*V. Those give
    the "hardware" FLOPs.
    """
    T = seq_len
    n_dense = layers * (hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
                        + heads * head_dim * hidden + 3 * hidden * intermediate)
    dense_fwd = 2 * n_dense * T
    attn_fwd = layers * 2 * T * T * heads * head_dim
    head_fwd = 2 * T * hidden * vocab
    flops = 3 * dense_fwd + 3.5 * attn_fwd + 3 * head_fwd
    if recompute_layers:
        flops += dense_fwd + attn_fwd
    if recompute_lm_head:
        flops += head_fwd
    return flops


def config_flops(cfg, seq_len, **recompute):
    return train_flops_per_sample(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                                  cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size,
                                  cfg.vocab_size, seq_len, **recompute)


# --------------------------------------------------------------------------------------------
# Ulysses attention


def _all_to_all(x, scatter_dim, gather_dim, group):
    """Split x into n chunks along scatter_dim, send chunk j to rank j of the group, and
    concatenate the chunks received (in rank order) along gather_dim."""
    n = dist.get_world_size(group)
    send = torch.stack(x.chunk(n, dim=scatter_dim))  # [n, ...], contiguous
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return torch.cat(recv.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group):
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _all_to_all(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, gather_dim, scatter_dim, ctx.group), None, None, None


class UlyssesAttention:
    """Attention function for transformers' AttentionInterface: all-to-all around causal SDPA.

    Called by LlamaAttention with q [b, H, t, d] and k, v [b, Hkv, t, d] of the rank's t = T/sp
    tokens; returns [b, t, H, d] like transformers' sdpa_attention_forward.
    """

    def __init__(self, group=None, sp=1):
        self.group, self.sp = group, sp

    def seq_to_heads(self, x):  # [b, h, T/sp, d] -> [b, h/sp, T, d]
        return _AllToAll.apply(x, 1, 2, self.group) if self.sp > 1 else x

    def heads_to_seq(self, x):  # [b, h/sp, T, d] -> [b, h, T/sp, d]
        return _AllToAll.apply(x, 2, 1, self.group) if self.sp > 1 else x

    def __call__(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if attention_mask is not None:
            raise RuntimeError("ulysses attention expects no mask (causal, no padding)")
        kv_heads = key.shape[1]
        if kv_heads < self.sp:  # too few kv heads to split: replicate so that each rank gets one
            key = key.repeat_interleave(self.sp // kv_heads, dim=1)
            value = value.repeat_interleave(self.sp // kv_heads, dim=1)
        q, k, v = self.seq_to_heads(query), self.seq_to_heads(key), self.seq_to_heads(value)
        groups = q.shape[1] // k.shape[1]
        if groups > 1:  # GQA: expand kv to the local query heads (works with every SDPA backend)
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling)
        return self.heads_to_seq(out).transpose(1, 2).contiguous(), None


# Registered under a name of its own, with no entry in transformers' AttentionMaskInterface:
# create_causal_mask then returns None (it builds no [T, T] mask and does not inspect the
# offset position_ids for packing), and the attention applies causality through is_causal.
# Overriding "sdpa" instead would give a mask built for the rank's local T/sp tokens.
ULYSSES = UlyssesAttention()
AttentionInterface.register(ATTN_IMPL, ULYSSES)


# --------------------------------------------------------------------------------------------
# Loss


def _chunk_loss_sum(hidden, weight, labels):
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")


def chunked_loss_sum(hidden, weight, labels, chunk):
    """Sum of the token cross-entropies of hidden [n, D] against labels [n], computed `chunk`
    tokens at a time; each chunk's logits are recomputed in backward instead of kept."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for h, y in zip(hidden.split(chunk), labels.split(chunk)):
        total = total + checkpoint(_chunk_loss_sum, h, weight, y, use_reentrant=False)
    return total


# --------------------------------------------------------------------------------------------
# Setup


class Dist:
    """Ranks, sp groups (consecutive ranks) and data-parallel replicas."""

    def __init__(self, sp_arg, device):
        self.enabled = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        if self.enabled:
            if device == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        self.sp = sp_arg or self.world
        if self.world % self.sp:
            sys.exit(f"--sp {self.sp} does not divide the world size {self.world}")
        self.dp = self.world // self.sp
        self.sp_rank, self.dp_rank = self.rank % self.sp, self.rank // self.sp
        self.sp_group = None
        if self.enabled and self.sp < self.world:
            for r in range(self.dp):  # every rank must create every group
                g = dist.new_group(list(range(r * self.sp, (r + 1) * self.sp)))
                if r == self.dp_rank:
                    self.sp_group = g

    def all_reduce(self, t, group=None):
        if self.enabled:
            dist.all_reduce(t, group=group)
        return t


def build_model(cfg, dtype, device, seed=0):
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    return model.to(device=device, dtype=dtype)


def make_sample(vocab, seq_len, seed, device):
    """Random tokens of one sample and its pre-shifted labels (label[t] = token[t+1])."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (1, seq_len), generator=g)
    labels = torch.cat([tokens[:, 1:], torch.full((1, 1), -100)], dim=1)
    return tokens.to(device), labels.to(device)


def shard(x, d):
    t = x.shape[1] // d.sp
    return x[:, d.sp_rank * t:(d.sp_rank + 1) * t]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-shape", choices=list(SHAPES), default="llama-3.2-1b")
    p.add_argument("--seq-len", type=int, default=4096, help="global tokens per sample (all sp ranks)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--sp", type=int, default=0, help="sequence-parallel degree (default: world size)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--attn", choices=list(SDPA_BACKENDS), default="flash", help="SDPA backend")
    p.add_argument("--checkpointing", choices=["on", "off"], default="on")
    p.add_argument("--loss-chunk", type=int, default=4096, help="tokens per chunk of the chunked loss")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--json", help="write the results as one JSON object to this file")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--check", action="store_true",
                   help="fp32 on cpu: compare loss and gradients with plain transformers at sp=1")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Training step


def forward_loss(model, tokens, labels, positions, chunk, count):
    """Local share of the group's mean loss (its backward gives this rank's gradient share)
    and the rank's loss sum (detached)."""
    hidden = model.model(input_ids=tokens, position_ids=positions, use_cache=False).last_hidden_state
    loss_sum = chunked_loss_sum(hidden.flatten(0, 1), model.lm_head.weight, labels.flatten(), chunk)
    return loss_sum / count, loss_sum.detach()


def sync_grads(model, d):
    """Sum gradients over the sp group, average over data-parallel replicas."""
    if not d.enabled:
        return
    handles = []
    for p in model.parameters():
        if p.grad is not None:
            if d.dp > 1:
                p.grad.div_(d.dp)
            handles.append(dist.all_reduce(p.grad, async_op=True))
    for h in handles:
        h.wait()


def setup(args, d, dtype):
    cfg = make_config(args.model_shape, ATTN_IMPL)
    if cfg.num_attention_heads % d.sp or (cfg.num_key_value_heads % d.sp and d.sp % cfg.num_key_value_heads):
        sys.exit(f"sp={d.sp} must divide the {cfg.num_attention_heads} query heads, and divide or be a "
                 f"multiple of the {cfg.num_key_value_heads} key/value heads")
    if args.seq_len % d.sp:
        sys.exit(f"--seq-len {args.seq_len} is not a multiple of sp={d.sp}")
    ULYSSES.group, ULYSSES.sp = d.sp_group, d.sp

    model = build_model(cfg, dtype, args.device)
    if d.enabled:  # identical weights on every rank, whatever the device's RNG did
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, src=0)
    model.train()
    if args.checkpointing == "on":
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # one sample per data-parallel replica (--check: the same one, so that the averaged gradient is comparable)
    seed = 1234 + (0 if args.check else d.dp_rank)
    tokens, labels = make_sample(cfg.vocab_size, args.seq_len, seed=seed, device=args.device)
    t_local = args.seq_len // d.sp
    positions = torch.arange(d.sp_rank * t_local, (d.sp_rank + 1) * t_local, device=args.device)[None]
    tok, lab = shard(tokens, d), shard(labels, d)
    count = d.all_reduce((lab != -100).sum().float(), d.sp_group)  # label tokens of the whole sample
    return cfg, model, (tok, lab, positions, count), (tokens, labels)


def log(d, *a):
    if d.rank == 0:
        print(*a, flush=True)


def run_check(args, d):
    """sp-parallel loss and gradients vs plain transformers on the whole sequence, fp32, cpu."""
    cfg, model, (tok, lab, pos, count), (tokens, labels) = setup(args, d, torch.float32)
    with sdpa_kernel(SDPA_BACKENDS[args.attn]):
        loss, loss_sum = forward_loss(model, tok, lab, pos, args.loss_chunk, count)
        loss.backward()
    sync_grads(model, d)
    loss_par = (d.all_reduce(loss_sum, d.sp_group) / count).item()

    ref = build_model(make_config(args.model_shape, "sdpa"), torch.float32, "cpu")
    ref.load_state_dict(model.state_dict())
    ref.train()
    out = ref(input_ids=tokens, labels=tokens)  # transformers shifts the labels itself
    out.loss.backward()

    errors = {"loss": abs(loss_par - out.loss.item()) / abs(out.loss.item())}
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
             f"model.layers.{cfg.num_hidden_layers - 1}.mlp.down_proj.weight", "model.norm.weight"]
    par, base = dict(model.named_parameters()), dict(ref.named_parameters())
    for n in names:
        errors["grad " + n] = ((par[n].grad - base[n].grad).norm() / base[n].grad.norm()).item()
    log(d, f"check: sp={d.sp} T={args.seq_len} shape={args.model_shape} attn={args.attn} "
           f"checkpointing={args.checkpointing} loss_chunk={args.loss_chunk}")
    log(d, f"  loss sp={d.sp}: {loss_par:.8f}   transformers sp=1: {out.loss.item():.8f}")
    worst = 0.0
    for k, v in errors.items():
        log(d, f"  rel err {k:50s} {v:.3e}")
        worst = max(worst, v)
    ok = worst < 1e-5
    log(d, "check: PASS" if ok else "check: FAIL", f"(max rel err {worst:.3e}, tolerance 1e-5)")
    if args.json and d.rank == 0:
        with open(args.json, "w") as f:
            json.dump({"check": "pass" if ok else "fail", "sp": d.sp, "seq_len": args.seq_len,
                       "rel_errors": errors}, f, indent=1)
    return ok


def run_bench(args, d):
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cfg, model, (tok, lab, pos, count), _ = setup(args, d, dtype)
    if cuda:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, foreach=True)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    step_s, sync_s, loss_sums = [], [], []
    with sdpa_kernel(SDPA_BACKENDS[args.attn]):
        for step in range(args.warmup_steps + args.steps):
            sync()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss, loss_sum = forward_loss(model, tok, lab, pos, args.loss_chunk, count)
            loss.backward()
            sync()
            t1 = time.perf_counter()
            sync_grads(model, d)
            opt.step()
            sync()
            t2 = time.perf_counter()
            loss_sums.append(loss_sum)
            if step >= args.warmup_steps:
                step_s.append(t2 - t0)
                sync_s.append(t2 - t1)  # gradient all-reduce + optimizer step
            log(d, f"step {step + 1}/{args.warmup_steps + args.steps}{' (warmup)' if step < args.warmup_steps else ''}"
                   f": {t2 - t0:.3f} s")

    losses = [(d.all_reduce(s.clone(), d.sp_group) / count).item() for s in loss_sums]
    mean_s = sum(step_s) / len(step_s)
    recompute = dict(recompute_layers=args.checkpointing == "on", recompute_lm_head=True)
    flops_model = config_flops(cfg, args.seq_len)
    flops_hw = config_flops(cfg, args.seq_len, **recompute)

    alloc = reserved = None  # GiB per rank, cuda only
    if cuda:
        peak = torch.tensor([torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()],
                            device="cuda", dtype=torch.float64) / 2**30
        peaks = [peak]
        if d.enabled:
            peaks = [torch.empty_like(peak) for _ in range(d.world)]
            dist.all_gather(peaks, peak)
        alloc = [round(p[0].item(), 3) for p in peaks]
        reserved = [round(p[1].item(), 3) for p in peaks]

    n_params = sum(p.numel() for p in model.parameters())
    res = {
        "peer": "torch+transformers ulysses",
        "model_shape": args.model_shape, "params": n_params,
        "seq_len": args.seq_len, "sp": d.sp, "dp": d.dp, "world": d.world, "batch_per_group": 1,
        "dtype": args.dtype, "attn": args.attn, "checkpointing": args.checkpointing, "loss_chunk": args.loss_chunk,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "warmup_steps": args.warmup_steps, "steps": args.steps,
        "step_s": [round(s, 5) for s in step_s],
        "step_s_mean": mean_s, "step_s_median": statistics.median(step_s),
        "grad_sync_opt_s_mean": sum(sync_s) / len(sync_s),
        "tokens_per_s": d.dp * args.seq_len / mean_s,
        "tokens_per_s_per_gpu": args.seq_len / mean_s / d.sp,
        "flops_per_sample_model": flops_model, "flops_per_sample_hw": flops_hw,
        "tflops_per_gpu_model": flops_model / mean_s / d.sp / 1e12,
        "tflops_per_gpu_hw": flops_hw / mean_s / d.sp / 1e12,
        "peak_mem_gib_per_rank": alloc, "peak_mem_gib_max": max(alloc) if cuda else None,
        "peak_reserved_gib_per_rank": reserved, "peak_reserved_gib_max": max(reserved) if cuda else None,
        "loss_first": losses[0], "loss_last": losses[-1],
    }
    if not all(math.isfinite(v) for v in losses):
        log(d, "warning: non-finite loss", losses)
    log(d, f"peer {args.model_shape} T={args.seq_len} sp={d.sp} dp={d.dp} {args.attn} ckpt={args.checkpointing} "
           f"chunk={args.loss_chunk}: step {mean_s:.3f} s, {res['tokens_per_s']:.0f} tok/s, "
           f"{res['tflops_per_gpu_model']:.1f} TFLOP/s/GPU model ({res['tflops_per_gpu_hw']:.1f} with recompute), "
           f"peak {f'{max(alloc):.2f} GiB' if cuda else 'n/a'}, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if args.json and d.rank == 0:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return res


def main(argv=None):
    args = parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 0 or args.loss_chunk < 1:
        sys.exit("need --steps >= 1, --warmup-steps >= 0, --loss-chunk >= 1")
    if args.check:
        args.device, args.dtype = "cpu", "fp32"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --device cpu")
    d = Dist(args.sp, args.device)
    try:
        ok = run_check(args, d) if args.check else (run_bench(args, d) is not None)
    finally:
        if d.enabled:
            dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
