#!/usr/bin/env python3
"""Generate the Hugging Face reference fixtures of ulysses (tests/fixtures/hf_*).

Usage (from the repository root, with torch + transformers + safetensors installed):

    python scripts/make_hf_fixtures.py            # writes every fixture into tests/fixtures/
    python scripts/make_hf_fixtures.py --out DIR  # writes them into DIR/
    python scripts/make_hf_fixtures.py qwen3_tiny # only the named ones

Each fixture is a tiny random model of one family (LlamaForCausalLM: hf_tiny, hf_tiny_tied;
Qwen2ForCausalLM: qwen2_tiny, q/k/v biases, tied; Qwen3ForCausalLM: qwen3_tiny, q/k norm,
head_dim != hidden/heads, GQA; MistralForCausalLM: mistral_tiny) plus one packed sample, and the logits,
loss and every parameter gradient that transformers computes for it.  The C trainer
loads the checkpoint, runs the same sample and must reproduce them (docs/design.md §11, step 2).

Files in each fixture directory
-------------------------------
config.json, model.safetensors (+ generation_config.json)
    Exactly what ``model.save_pretrained(dir)`` of the installed transformers writes,
    in float32.  Nothing is edited by hand: the C side must read what transformers writes
    (note: transformers >= 5 writes RoPE settings as ``"rope_parameters": {"rope_type",
    "rope_theta", ...}`` and ``"dtype"``; 4.x writes ``"rope_theta"`` + ``"rope_scaling"``
    and ``"torch_dtype"``).  With tie_word_embeddings the file holds no lm_head.weight.
batch.json
    {"generated_by": str, "tokens": [T], "labels": [T], "position_ids": [T],
     "cu_seqlens": [n_docs+1], "n_valid": int, "loss": float}
    One packed sequence of T tokens (docs/design.md §3):
      * documents are concatenated; ``cu_seqlens`` are their start offsets plus T at
        the end; ``position_ids`` restart at 0 at every document start;
      * labels are already shifted: ``labels[t] = tokens[t+1]`` when t+1 is in the same
        document, else -100 (the last token of every document has -100);
      * padding (if any) is token 0, position 0, label -100, and forms its own final
        "document" in cu_seqlens (attention is causal inside it, like any document);
      * ``n_valid`` = number of labels != -100;
      * ``loss`` = sum over t of CE(logits[t], labels[t]) / n_valid  (token mean; the
        labels are NOT shifted again), printed with 17 significant digits.
grads.safetensors (all F32)
    d loss / d parameter for every parameter, under its HF name
    (``model.layers.0.self_attn.q_proj.weight`` ...).  With tied embeddings only
    ``model.embed_tokens.weight`` is present and carries the summed gradient (embedding
    lookup + lm_head use).  Plus ``logits`` [T, vocab] (padding rows included).

How the reference is computed
-----------------------------
The model is built in float32 with our own deterministic initialisation (linear weights
and biases N(0, 0.1^2), embedding N(0, embed_std^2), RMSNorm weights, q_norm and k_norm
included, 1 + 0.1 N(0,1)), saved, loaded
back with ``from_pretrained`` (bitwise check), converted to float64 (``model.double()``)
and run with ``attn_implementation="sdpa"`` (torch SDPA computes in float64 on CPU; the
"eager" attention of transformers takes its softmax in float32 even for a float64 model).
HF's own packing support is not used: every document (and the padding block) is a
separate forward of shape [1, len] with its own position_ids and an all-ones 2-D
attention mask (an explicit mask stops transformers 5 from re-deriving document
boundaries from position_ids, which would split the all-zero-position padding into one
document per token).  The logits are concatenated to [T, V], the loss is
F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / n_valid, and
autograd gives the gradients, which are written as float32.

Precision: HF's "float64" Llama is still not float64 everywhere: LlamaRMSNorm normalises
in float32 and the rotary inv_freq/cos/sin are computed in float32.  The fixtures are
therefore exact only to about float32 rounding (relative ~1e-7), far below what an fp32
C implementation can be checked to.  Check 2 below measures it.

Checks printed by the script (they do not change the files; 1 and 2 abort on failure):
  1. the same float64 model over the whole packed sequence in ONE forward, with a
     block-diagonal causal 4-D additive mask, must agree with the per-document logits
     to 1e-10 (skipped with a note if the installed transformers rejects 4-D masks);
  2. a pure-torch float64 model written here from docs/design.md (cu_seqlens attention,
     llama3 RoPE, RMSNorm all in float64; q/k/v biases and q/k norms for the families that
     have them): relative differences of logits, loss and
     gradients vs the fixture (expect ~1e-7, the float32 islands above);
  3. the float32 HF model (as saved) on the same documents: the distance fp32 code can
     be expected to have from the fixture;
  4. the float64 model with eager attention: its distance from the fixture.

Deterministic (fixed seeds, one thread) and idempotent: each fixture is written into a
temporary directory next to the target, which then replaces the target by rename.
Works with transformers 4.43+ (llama3 rope; Qwen3 needs 4.51+) and 5.x; only public, stable APIs are used.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# family -> (config class, model class, extra config fields as the released configs set them)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(attention_bias=False, mlp_bias=False, pretraining_tp=1)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(use_sliding_window=False)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(attention_bias=False, use_sliding_window=False)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=None)),
}

ATTN = "sdpa"
LINEAR_STD = 0.1
NORM_STD = 0.1

FIXTURES = {
    "hf_tiny": dict(
        seed=1234,
        embed_std=0.5,
        config=dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-5,
            initializer_range=0.02,
            tie_word_embeddings=False,
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                # 32, not 16: with head_dim 16 the shortest RoPE wavelength is 2*pi, so
                # 32/high_freq_factor = 8 puts one frequency in each of the three llama3
                # branches (kept, smoothed, divided by factor)
                original_max_position_embeddings=32,
            ),
        ),
        doc_lens=[17, 1, 20, 4],
        n_pad=3,
    ),
    "hf_tiny_tied": dict(
        seed=4321,
        embed_std=0.2,
        config=dict(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=1,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling=None,
        ),
        doc_lens=[10, 14],
        n_pad=0,
    ),
    # Qwen2/2.5: q/k/v biases, tied embeddings (as the small Qwen2.5 models), rope_theta 1e6
    "qwen2_tiny": dict(
        family="qwen2",
        seed=777,
        embed_std=0.3,
        config=dict(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
            rope_scaling=None,
        ),
        doc_lens=[13, 9, 1, 6],
        n_pad=2,
    ),
    # Qwen3: q_norm/k_norm, head_dim 16 != hidden/heads = 12, GQA 4/2, untied
    "qwen3_tiny": dict(
        family="qwen3",
        seed=888,
        embed_std=0.4,
        config=dict(
            vocab_size=112,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            tie_word_embeddings=False,
            rope_theta=1000000.0,
            rope_scaling=None,
        ),
        doc_lens=[11, 16, 5],
        n_pad=0,
    ),
    # Mistral: the Llama block, sliding_window null, head_dim given, GQA 4/1
    "mistral_tiny": dict(
        family="mistral",
        seed=999,
        embed_std=0.3,
        config=dict(
            vocab_size=80,
            hidden_size=32,
            intermediate_size=56,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            initializer_range=0.02,
            tie_word_embeddings=False,
            rope_theta=10000.0,
            rope_scaling=None,
        ),
        doc_lens=[9, 12],
        n_pad=1,
    ),
}


def versions():
    return "transformers %s, torch %s, python %s" % (
        transformers.__version__,
        torch.__version__,
        sys.version.split()[0],
    )


# ----------------------------------------------------------------------------- model


def family(spec):
    return FAMILIES[spec.get("family", "llama")]


def make_config(spec):
    config_cls, _, extra = family(spec)
    c = dict(spec["config"])
    c.update(extra, hidden_act="silu")
    if c["rope_scaling"] is None:
        del c["rope_scaling"]  # default RoPE
    return config_cls(**c)


def init_weights(model, seed, embed_std):
    """Own initialisation (independent of the HF init code, which changes between versions)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(tuple(p.shape), generator=g, dtype=torch.float64)
            if name.endswith("norm.weight"):  # input/post_attention_layernorm, model.norm, q_norm, k_norm
                v = 1.0 + NORM_STD * r
            elif name == "model.embed_tokens.weight":
                v = embed_std * r
            else:
                v = LINEAR_STD * r
            p.copy_(v.to(p.dtype))


def make_batch(spec, vocab):
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    tokens, labels, pos, cu = [], [], [], [0]
    for n in spec["doc_lens"]:
        doc = torch.randint(1, vocab, (n,), generator=g).tolist()  # 0 is reserved for padding
        tokens += doc
        labels += doc[1:] + [-100]
        pos += list(range(n))
        cu.append(cu[-1] + n)
    if spec["n_pad"]:
        n = spec["n_pad"]
        tokens += [0] * n
        labels += [-100] * n
        pos += [0] * n
        cu.append(cu[-1] + n)
    n_valid = sum(1 for l in labels if l != -100)
    return dict(tokens=tokens, labels=labels, position_ids=pos, cu_seqlens=cu, n_valid=n_valid)


def load_model(spec, path, attn):
    # no dtype argument (torch_dtype in 4.x, dtype in 5.x): both default to float32 here
    return family(spec)[1].from_pretrained(path, attn_implementation=attn).float()


def per_document_logits(model, batch):
    toks = torch.tensor(batch["tokens"])
    pos = torch.tensor(batch["position_ids"])
    cu = batch["cu_seqlens"]
    out = []
    for s, e in zip(cu[:-1], cu[1:]):
        ids = toks[s:e][None]
        out.append(
            model(
                input_ids=ids,
                position_ids=pos[s:e][None],
                attention_mask=torch.ones_like(ids),
                use_cache=False,
            ).logits[0]
        )
    return torch.cat(out, 0)


def token_mean_loss(logits, batch):
    labels = torch.tensor(batch["labels"])
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / batch["n_valid"]


# ------------------------------------------------------------- independent checks


def packed_4d_logits(model, batch):
    """One forward over the whole packed sequence with a block-diagonal causal 4-D mask."""
    T = len(batch["tokens"])
    cu = batch["cu_seqlens"]
    doc = torch.empty(T, dtype=torch.long)
    for i, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
        doc[s:e] = i
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(T, T, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return model(
        input_ids=torch.tensor(batch["tokens"])[None],
        position_ids=torch.tensor(batch["position_ids"])[None],
        attention_mask=mask[None, None],
        use_cache=False,
    ).logits[0]


def inv_freq_f64(cfg):
    """RoPE inverse frequencies in float64, incl. rope_type llama3 (docs/design.md §1)."""
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    theta = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    if rp.get("rope_type", rp.get("type", "default")) == "llama3":
        f, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        smooth = (old / wl - lo) / (hi - lo)
        mid = (1 - smooth) * inv / f + smooth * inv
        inv = torch.where(wl > old / lo, inv / f, torch.where(wl < old / hi, inv, mid))
    return inv


def own_f64_forward(p, cfg, batch):
    """Pure-float64 model over the packed sequence (cu_seqlens attention). p: name -> tensor.
    The Llama block; q/k/v biases and q/k RMSNorm per head (before RoPE) where p has them."""
    H, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    hd = getattr(cfg, "head_dim", None) or D // H
    eps = cfg.rms_norm_eps
    toks = torch.tensor(batch["tokens"])
    pos = torch.tensor(batch["position_ids"], dtype=torch.float64)
    cu = batch["cu_seqlens"]
    T = len(toks)
    ang = pos[:, None] * inv_freq_f64(cfg)[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None], torch.cat([ang.sin()] * 2, -1)[:, None]

    def rope(x):  # x [T, h, hd]; rotate_half convention of HF Llama
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    x = p["model.embed_tokens.weight"][toks]
    for i in range(cfg.num_hidden_layers):
        L = "model.layers.%d." % i
        h = rms(x, p[L + "input_layernorm.weight"])
        def proj(n, heads):
            y = h @ p[L + "self_attn.%s_proj.weight" % n].T
            if L + "self_attn.%s_proj.bias" % n in p:
                y = y + p[L + "self_attn.%s_proj.bias" % n]
            y = y.view(T, heads, hd)
            if L + "self_attn.%s_norm.weight" % n in p:
                y = rms(y, p[L + "self_attn.%s_norm.weight" % n])
            return y

        q, k, v = rope(proj("q", H)), rope(proj("k", Hkv)), proj("v", Hkv)
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)  # q head j -> kv head j // (H/Hkv)
        o = []
        for s, e in zip(cu[:-1], cu[1:]):
            sc = torch.einsum("qhd,khd->hqk", q[s:e], k[s:e]) / math.sqrt(hd)
            sc = sc.masked_fill(~torch.ones(e - s, e - s, dtype=torch.bool).tril(), float("-inf"))
            o.append(torch.einsum("hqk,khd->qhd", sc.softmax(-1), v[s:e]))
        x = x + torch.cat(o, 0).reshape(T, H * hd) @ p[L + "self_attn.o_proj.weight"].T
        h = rms(x, p[L + "post_attention_layernorm.weight"])
        m = F.silu(h @ p[L + "mlp.gate_proj.weight"].T) * (h @ p[L + "mlp.up_proj.weight"].T)
        x = x + m @ p[L + "mlp.down_proj.weight"].T
    x = rms(x, p["model.norm.weight"])
    return x @ p.get("lm_head.weight", p["model.embed_tokens.weight"]).T


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


# ------------------------------------------------------------------------- driver


def write_batch_json(path, batch, loss):
    lines = ['  "generated_by": %s' % json.dumps(versions())]
    for key in ("tokens", "labels", "position_ids", "cu_seqlens"):
        lines.append('  "%s": %s' % (key, json.dumps(batch[key])))
    lines.append('  "n_valid": %d' % batch["n_valid"])
    lines.append('  "loss": %.17g' % loss)
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def make_fixture(name, spec, out_root):
    print("== %s" % name)
    final = os.path.join(out_root, name)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % name, dir=out_root)
    os.chmod(tmp, 0o755)
    try:
        torch.manual_seed(spec["seed"])
        cfg = make_config(spec)
        model32 = family(spec)[1](cfg).float()
        init_weights(model32, spec["seed"], spec["embed_std"])
        model32.save_pretrained(tmp)
        batch = make_batch(spec, cfg.vocab_size)
        T = len(batch["tokens"])

        # reload what was written: the reference runs on exactly the saved fp32 weights
        ref = load_model(spec, tmp, ATTN)
        saved = load_file(os.path.join(tmp, "model.safetensors"))
        ref_params = dict(ref.named_parameters())  # tied lm_head is deduplicated here
        assert set(saved) == set(ref_params), (sorted(saved), sorted(ref_params))
        for k, v in saved.items():
            assert v.dtype == torch.float32 and torch.equal(v, ref_params[k].detach()), k
        ref = ref.double().eval()

        logits = per_document_logits(ref, batch)
        loss = token_mean_loss(logits, batch)
        loss.backward()
        grads = {k: p.grad.float().contiguous() for k, p in ref.named_parameters()}
        grads["logits"] = logits.detach().float().contiguous()
        save_file(grads, os.path.join(tmp, "grads.safetensors"), metadata={"generated_by": versions()})
        write_batch_json(os.path.join(tmp, "batch.json"), batch, loss.item())
        print("   T=%d docs=%s n_valid=%d loss=%.17g" % (T, batch["cu_seqlens"], batch["n_valid"], loss.item()))

        # check 1: packed forward with a block-diagonal causal 4-D mask
        with torch.no_grad():
            try:
                l4 = packed_4d_logits(ref, batch)
            except Exception as ex:  # noqa: BLE001 - any rejection of 4-D masks
                print("   check 1 skipped: this transformers rejects a 4-D attention mask (%s)" % ex)
            else:
                d = (l4 - logits).abs().max().item()
                print("   check 1 (packed, 4-D mask) max|dlogits| = %.3g  %s" % (d, "OK" if d < 1e-10 else "FAIL"))
                if not d < 1e-10:
                    raise SystemExit("check 1 failed for %s" % name)

        # check 2: own pure-float64 implementation from the same weights
        p64 = {k: v.double().requires_grad_(True) for k, v in saved.items()}
        l64 = own_f64_forward(p64, cfg, batch)
        loss64 = token_mean_loss(l64, batch)
        loss64.backward()
        gerr = max(rel_err(grads[k].double(), p64[k].grad) for k in p64)
        print(
            "   check 2 (own float64 impl) logits rel %.2g, loss |d| %.2g, worst grad rel %.2g"
            % (rel_err(logits.detach(), l64.detach()), abs(loss.item() - loss64.item()), gerr)
        )
        if not (rel_err(logits.detach(), l64.detach()) < 1e-5 and gerr < 1e-4):
            raise SystemExit("check 2 failed for %s" % name)

        # check 3: float32 model, for the tolerance fp32 code can expect
        m32 = load_model(spec, tmp, ATTN).eval()
        l32 = per_document_logits(m32, batch)
        loss32 = token_mean_loss(l32, batch)
        loss32.backward()
        g32err = max(rel_err(p.grad.double(), grads[k].double()) for k, p in m32.named_parameters())
        print(
            "   check 3 (HF float32 vs reference) logits rel %.2g, loss |d| %.2g, worst grad rel %.2g"
            % (rel_err(l32.detach().double(), logits.detach()), abs(loss32.item() - loss.item()), g32err)
        )

        # check 4: the eager attention of transformers takes its softmax in float32 even for a
        # float64 model, so it is not used for the reference; show how far it is from it
        with torch.no_grad():
            le = per_document_logits(load_model(spec, tmp, "eager").double().eval(), batch)
        print("   check 4 (HF eager float64 vs reference) logits rel %.2g" % rel_err(le, logits.detach()))

        old = None
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=".%s.old-" % name, dir=out_root)
            os.rename(final, os.path.join(old, name))
        os.rename(tmp, final)
        tmp = None
        if old:
            shutil.rmtree(old)
        for f in sorted(os.listdir(final)):
            print("   %-24s %8d bytes" % (f, os.path.getsize(os.path.join(final, f))))
    finally:
        if tmp and os.path.isdir(tmp):
            shutil.rmtree(tmp)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("names", nargs="*", default=list(FIXTURES), help="fixtures to make (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    print(versions())
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    for name in args.names:
        make_fixture(name, FIXTURES[name], out)


if __name__ == "__main__":
    main()
