#include "memory/plan.h"

#include <stdarg.h>
#include <string.h>

#include "core/params.h"
#include "kernels/kernels.h"


void plan_input_default(PlanInput *in) {
    memset(in, 0, sizeof *in);
    in->sp = in->dp_replicate = in->dp_shard = 1;
    in->seq_len = 2048;
    in->act_bytes = 4;
    in->reserve_gib = PLAN_DEFAULT_RESERVE_GIB;
    in->offload_layers = -1;
    in->offload_grads = -1;
}

/* Items of each saved-activation store that go to host memory (Plan.offload_items): none
 * without --offload-checkpoints, all (INT64_MAX) without --offload-layers, else K. */
static int64_t plan_offload_items(int offload_checkpoints, int64_t offload_layers) {
    if (!offload_checkpoints) return 0;
    return offload_layers < 0 ? INT64_MAX : offload_layers;
}

const char *plan_group_name(PlanGroup g) {
    static const char *names[PG_COUNT] = {"weights",     "master",    "grads",     "optimizer", "checkpoints",
                                          "activations", "attention", "loss tile", "workspace"};
    return g < PG_COUNT ? names[g] : "?";
}

int64_t plan_loss_tile(int64_t V, int64_t t) {
    /* ~128M logits (256 MiB in bf16): tiles of ~1K rows at a 128K vocabulary, so that the
     * three GEMMs of a tile are large and lm_head's fp32 gradient [V, D] is read and
     * written ~t / 1K times per step, not t / 65 times (8M logits measured 27 % of a
     * 1B step at 32K tokens on H200) */
    int64_t tile = ((int64_t)128 << 20) / V;
    if (tile < 16) tile = 16;
    return tile < t ? tile : t;
}

int64_t plan_mlp_tile(int64_t req, int64_t t) { return req > 0 && req < t ? req : 0; }

int64_t plan_offload_chunk(int64_t per, int64_t req, int *nbuf) {
    int64_t c = req > 0 ? req : PLAN_OFFLOAD_CHUNK;
    if (c > per) c = per;
    *nbuf = per > c ? 2 : 1;
    return c;
}

static void add(Plan *p, PlanGroup g, int host, int exact, int64_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(Plan *p, PlanGroup g, int host, int exact, int64_t bytes, const char *fmt, ...) {
    if (bytes <= 0) return;
    if (p->n >= PLAN_MAX_ITEMS) return; /* cannot happen: fewer lines than that below */
    PlanItem *it = &p->items[p->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->name, sizeof it->name, fmt, ap);
    va_end(ap);
    it->group = g;
    it->host = host;
    it->exact = exact;
    it->bytes = bytes;
    if (host) {
        p->host_total += bytes;
        p->host_group[g] += bytes;
        if (exact) p->host_exact += bytes;
    } else {
        p->dev_total += bytes;
        p->dev_group[g] += bytes;
        if (exact) p->dev_exact += bytes;
    }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ZeRO-3's layout (optim/zero.h): each gather unit padded to a multiple of the shard group
 * size nsh and split evenly; *per: the rank's slice (sum of the unit chunks), *umax: the
 * largest padded unit (the gathered-weights and unit-gradient buffers), *so_g: the chunks of
 * the first g units (the gradient offload's host part). */
static void zero3_sizes(const ModelConfig *c, int64_t nsh, int64_t g, int64_t *per, int64_t *umax, int64_t *so_g) {
    *per = *umax = *so_g = 0;
    for (int64_t u = 0; u < ul_param_unit_count(c); u++) {
        int64_t off, n;
        ul_param_unit(c, u, &off, &n);
        int64_t pu = ceil_div(n, nsh);
        if (u == g) *so_g = *per;
        *per += pu;
        if (pu * nsh > *umax) *umax = pu * nsh;
    }
    if (g >= ul_param_unit_count(c)) *so_g = *per;
}

/* A saved-activation store (memory/offload.h): n items of `bytes`, on the device or (offload)
 * in pinned host memory behind a ring of 2 device slots. */
/* A saved-activation store of n items (memory/offload.h): the first n_off in pinned host
 * memory through a device ring of 2, the rest in their own device buffers */
static void add_store(Plan *p, int64_t n_off, int64_t n, int64_t bytes, const char *what) {
    if (n_off > n) n_off = n;
    if (n_off <= 0) {
        add(p, PG_CKPT, 0, 1, n * bytes, "%s (%lld)", what, (long long)n);
        return;
    }
    int64_t ring = n_off < 2 ? n_off : 2;
    if (n_off < n)
        add(p, PG_CKPT, 0, 1, (ring + n - n_off) * bytes, "%s: device ring (%lld) + resident (%lld)", what,
            (long long)ring, (long long)(n - n_off));
    else
        add(p, PG_CKPT, 0, 1, ring * bytes, "%s: device ring (%lld)", what, (long long)ring);
    add(p, PG_CKPT, 1, 1, n_off * bytes, "%s: pinned host (%lld)", what, (long long)n_off);
}

/* The order follows model_init_opts (model/model.c), exchange_init and train_run.
 * mlp_req: the TiledMLP rows requested (0 = off), never PLAN_MLP_AUTO here. */
static void plan_fixed(const PlanInput *in, int64_t mlp_req, Plan *p) {
    memset(p, 0, sizeof *p);
    const ModelConfig *c = &in->c;
    int64_t S = in->sp > 0 ? in->sp : 1, A = in->act_bytes, F = 4;
    int64_t H = c->num_heads, Hkv = c->num_kv_heads, d = c->head_dim, D = c->hidden_size;
    int64_t I = c->intermediate_size, V = c->vocab_size, L = c->num_layers;
    int64_t T = plan_padded_len(in->seq_len, S), t = T / S;
    /* heads per rank after the exchange (exchange_init) */
    int64_t Hq_l = H / S, Hkv_l = Hkv % S == 0 ? Hkv / S : 1, W_l = Hq_l + 2 * Hkv_l;
    int recompute = in->checkpoint;
    int64_t off = recompute >= 1 ? plan_offload_items(in->offload_checkpoints, in->offload_layers) : 0;
    int64_t ck = recompute == 1 ? plan_ckpt_every(in->ckpt_every, L) : 1, nck = plan_ckpt_items(ck, L);
    p->offload_items = off < nck ? off : nck;
    p->ckpt_every = ck;
    p->ckpt_items = nck;
    int64_t mlp_tile = plan_mlp_tile(mlp_req, t), rows_I = mlp_tile ? mlp_tile : t;
    int64_t loss_tile = plan_loss_tile(V, t);
    p->T = T;
    p->t = t;
    p->loss_tile = loss_tile;
    p->mlp_tile = mlp_tile;

    /* ---- parameters, gradients, optimizer (ZeRO over the shard group of dp_shard x sp ranks) ---- */
    int64_t N = ul_param_numel(c), nsh = (in->dp_shard > 0 ? in->dp_shard : 1) * S;
    int z = in->zero, oo = in->offload_optimizer && z >= 1;
    /* the rank's slice (stages >= 1): stages 1, 2 one range of the vector padded to n_pad;
     * stage 3 per gather unit (zero3_sizes) */
    int64_t zper = z >= 1 ? ceil_div(N, nsh) : N, umax = 0, so_h = 0, nu = ul_param_unit_count(c);
    /* gradient offload (with offload): the first gu units' gradients in host memory (ZeRO 1, 2: all or none) */
    int64_t gu = oo ? (in->offload_grads < 0 || in->offload_grads > nu ? nu : in->offload_grads) : 0;
    if (z <= 2 && gu > 0) gu = nu; /* ZeRO 1, 2: all units' or none */
    int64_t umaxu = 0; /* ZeRO 1, 2: the largest unit (its gradients' buffers) */
    for (int64_t u = 0; u < nu; u++) {
        int64_t uo, un;
        ul_param_unit(c, u, &uo, &un);
        if (un > umaxu) umaxu = un;
    }
    if (z >= 3) zero3_sizes(c, nsh, gu, &zper, &umax, &so_h);
    p->grad_units = gu;
    p->units = nu;
    int64_t n_pad = z >= 1 ? zper * nsh : N;
    const char *shard = z >= 1 ? " (shard)" : "";
    add(p, PG_MASTER, oo, 1, zper * F, "master weights fp32%s", shard);
    if (z <= 2 && !gu) /* the accumulation buffer of the backward passes (zero_init pads it) */
        add(p, PG_GRADS, 0, 1, n_pad * F, "gradients fp32");
    if ((z >= 2 || oo) && (!gu || z <= 2)) add(p, PG_GRADS, 0, 1, zper * F, "reduced gradients fp32 (shard)");
    if (gu && z <= 2) { /* each unit's gradients all-reduced in one of two buffers (one is copied to host
                           while the next unit computes), the slice's part accumulated on the host */
        add(p, PG_GRADS, 0, 1, 2 * umaxu * F, "gradients of one unit fp32 (x2, copy to host)");
        add(p, PG_GRADS, 1, 1, zper * F, "gradients fp32 (shard, on the host)");
    }
    if (gu && z >= 3) { /* the rest on the device; a second unit buffer (S = 1) or the reduce-scatter's target
                 (S > 1) holds one unit's gradients while they are copied to host */
        add(p, PG_GRADS, 0, 1, (zper - so_h) * F, "reduced gradients fp32 (shard, %lld units on the GPU)",
            (long long)(nu - gu));
        add(p, PG_GRADS, 1, 1, so_h * F, "gradients fp32 (shard, %lld units on the host)", (long long)gu);
    }
    if (z >= 3) add(p, PG_GRADS, 0, 1, umax * F, "gradients of one unit fp32 (reduce-scatter)");
    if (gu && nsh == 1) add(p, PG_GRADS, 0, 1, umax * F, "gradients of one unit fp32: 2nd (copy to host)");
    if (gu && nsh > 1) add(p, PG_GRADS, 0, 1, umax / nsh * F, "reduced unit gradients fp32 (copy to host)");
    if (oo) { /* the reduced slice goes to the CPU AdamW through pinned chunks, never whole */
        int nbuf;
        int64_t chunk = plan_offload_chunk(zper, in->offload_chunk, &nbuf);
        add(p, PG_GRADS, 1, 1, nbuf * chunk * F, "gradient staging for the CPU AdamW [%lld] x%d", (long long)chunk,
            nbuf);
    }
    p->param_host = z >= 3 && oo && nsh == 1 && in->offload_params == 1;
    if (z >= 3) {
        if (p->param_host) /* each unit copied in before its forward and backward */
            add(p, PG_WEIGHTS, 1, 1, zper * A, "weights working copy (shard, pinned host)");
        else
            add(p, PG_WEIGHTS, 0, 1, zper * A, "weights working copy (shard)");
        add(p, PG_WEIGHTS, 0, 1, 2 * umax * A, "gathered unit weights (x2)");
    } else if (A != F || z >= 1) { /* CPU zero 0: the kernels use the fp32 master copy itself */
        add(p, PG_WEIGHTS, 0, 1, n_pad * A, "weights working copy");
        if (z >= 1 && A != F) add(p, PG_WEIGHTS, 0, 1, zper * A, "all-gather send slice (shard)");
    }
    add(p, PG_WORK, 0, 1, (d / 2) * F, "rope inv_freq");

    /* ---- the Ulysses exchange: staging for the all-to-alls ---- */
    if (S > 1) add(p, PG_ATTN, 0, 1, T * W_l * d * A, "all-to-all staging [T, W_l, d] (send or recv)");

    /* ---- saved activations ---- */
    add_store(p, off, nck, t * D * A, ck > 1 ? "layer inputs [t, D], every K-th" : "layer inputs [t, D]");
    if (ck > 1) add(p, PG_CKPT, 0, 1, (ck - 1) * t * D * A, "segment's recomputed inputs [t, D] (%lld)", (long long)(ck - 1));
    int64_t nacts = recompute ? 1 : L;
    const char *per = recompute ? "1 layer" : "all layers";
    add(p, PG_ACTS, 0, 1, nacts * (3 * t * D * A + 2 * t * F), "xn1, xmid, xn2 + rstd (%s)", per);
    add(p, PG_ATTN, 0, 1, nacts * t * (H + 2 * Hkv) * d * A, "qkv [t, H+2Hkv, d] (%s)", per);
    if (ul_family(c)->qk_norm)
        add(p, PG_ATTN, 0, 1, nacts * (t * (H + Hkv) * d * A + t * (H + Hkv) * F), "q, k before q/k norm + rstd (%s)",
            per);
    if (S > 1) add(p, PG_ATTN, 0, 1, nacts * T * W_l * d * A, "qkv head-sharded [T, W_l, d] (%s)", per);
    if (recompute != 2) add(p, PG_ATTN, 0, 1, nacts * (T * Hq_l * d * A + T * Hq_l * F), "attention out + lse (%s)", per);
    if (S > 1) add(p, PG_ATTN, 0, 1, nacts * t * H * d * A, "attention out [t, H*d] (%s)", per);
    if (!mlp_tile) add(p, PG_ACTS, 0, 1, nacts * 3 * t * I * A, "MLP g, u, h [t, I] (%s)", per);
    if (recompute == 2) {
        add_store(p, off, L, T * Hq_l * d * A, "kept attention out [T, Hq_l, d]");
        add_store(p, off, L, T * Hq_l * F, "kept lse [T, Hq_l]");
    }
    add(p, PG_ACTS, 0, 1, t * D * A + t * F, "final norm out + rstd");
    add(p, PG_LOSS, 0, 1, loss_tile * V * A, "logits tile [%lld, V]", (long long)loss_tile);
    add(p, PG_ACTS, 0, 1, 2 * t * D * A, "dres, dxn [t, D]");
    add(p, PG_ACTS, 0, 1, 3 * rows_I * I * A, "MLP grads dh, dg, du [%lld, I]", (long long)rows_I);
    if (mlp_tile) add(p, PG_ACTS, 0, 1, 3 * rows_I * I * A, "TiledMLP tile g, u, h [%lld, I]", (long long)rows_I);
    if (S > 1) /* dout lives in dqkv's buffer */
        add(p, PG_ATTN, 0, 1, t * (H + 2 * Hkv) * d * A, "dqkv (and dout) [t, H+2Hkv, d]");
    else
        add(p, PG_ATTN, 0, 1, t * H * d * A + t * (H + 2 * Hkv) * d * A, "dout, dqkv [t, *]");
    if (S > 1) add(p, PG_ATTN, 0, 1, T * Hq_l * d * A + T * W_l * d * A, "dout, dqkv head-sharded [T, *]");
    add(p, PG_WORK, 0, 1, 3 * t * 4 + (T + 2) * 8 + (t + 2) * 8 + 2 * 8, "tokens, labels, positions, cu_seqlens");

    /* ---- optimizer state (train_run) ---- */
    add(p, PG_OPTIM, oo, 1, 2 * zper * F, "AdamW m + v fp32%s", shard);

    /* ---- allocated later or outside KernelOps (not part of the exact check) ---- */
    if (in->eval) {
        add(p, PG_LOSS, 0, 0, loss_tile * V * F, "eval logits fp32 (first evaluation)");
        add(p, PG_LOSS, 1, 0, loss_tile * V * F, "eval logits host copy");
    }
    /* Host copies of the state exist only around their use (train.c save_state,
     * resume_state, SaveSrc), one at a time; the largest is the host peak above the
     * rest, charged for rank 0 (the largest). A save and --out are streamed in chunks
     * (checkpoint.h CKPT_CHUNK = C elements; none of these on the CPU backend without ZeRO:
     * in place): one buffer for the rank's part, [min(C / Z, ceil(N / W))] (Z = the shard
     * group with ZeRO >= 1, else 1), reused for params, m, v; on rank 0 one for the weights of
     * model.safetensors, [min(C, N)]; and with ZeRO >= 1 without offload the staging of the
     * pieces of the slice sent in one exchange, at most [min(per, C)]. With offload a chunk
     * inside one piece of the rank's own slice is taken in place (counted here as if not).
     * A resume: the slice [per] x 3 with ZeRO >= 1 (none with offload: read straight into
     * the host master and moments), the full [N] x 3 on CUDA without ZeRO
     * (then broadcast). --out: the weights buffer and the staging. The initial weights
     * (train.c): with ZeRO >= 1 each rank draws (random) or reads (--init: ranges of the
     * safetensors) only its slice (zero_start_fill), straight into the host master with
     * offload (no staging), else into a [per] staging that is uploaded; ZeRO 0 stages all
     * [N] on the host. */
    int64_t W = S * (in->dp_shard > 0 ? in->dp_shard : 1) * (in->dp_replicate > 0 ? in->dp_replicate : 1);
    int h_owned = in->cuda || z >= 1;
    int64_t h_chunk = CKPT_CHUNK, h_zs = z >= 1 ? nsh : 1, h_pc = h_chunk / h_zs > 0 ? h_chunk / h_zs : 1;
    int64_t h_stage = z >= 1 && !in->offload_optimizer ? (zper < h_chunk ? zper : h_chunk) * F : 0;
    int64_t h_wbuf = h_owned ? (N < h_chunk ? N : h_chunk) * F : 0;
    int64_t h_part = h_owned ? (ceil_div(N, W) < h_pc ? ceil_div(N, W) : h_pc) * F : 0;
    int64_t h_save = h_part + h_stage + h_wbuf;
    int64_t h_resume = !in->resume ? 0 : z >= 1 ? (oo ? 0 : 3 * zper * F) : in->cuda ? 3 * N * F : 0;
    int init_full = z == 0;
    int64_t h_init = in->resume ? 0 : init_full ? N * F : oo ? 0 : zper * F;
    int64_t h_state = in->save_state ? (h_save > h_resume ? h_save : h_resume) : 0;
    int64_t h_out = in->save_out ? h_wbuf + h_stage : 0;
    if (h_state >= h_init && h_state >= h_out)
        add(p, PG_WORK, 1, 0, h_state, "state host copy: the rank's part or slice of params, m, v (checkpoint save/resume)");
    else if (h_out > h_init)
        add(p, PG_WORK, 1, 0, h_out, "weights host copy (--out, at the end)");
    else
        add(p, PG_WORK, 1, 0, h_init, init_full ? "initial weights host staging [N] (start-up)"
                                                : "initial weights host staging [per] (start-up)");
    UlWorkspace ws; /* what the backend allocates for itself, as it declares it (kernels.h) */
    ul_kernels_workspace(in->cuda, T, Hq_l, d, &ws);
    for (int i = 0; i < ws.n; i++) add(p, PG_WORK, 0, 0, ws.item[i].bytes, ws.item[i].name);
    if (in->cuda) add(p, PG_WORK, 0, 0, (int64_t)(in->reserve_gib * PLAN_GIB), "CUDA context + cuBLASLt + NCCL reserve");
}

/* PLAN_MLP_AUTO (plan.h): with TiledMLP the [*, I] buffers cost 6 rows I act bytes (the
 * tile's g, u, h and the grads dh, dg, du); everything else does not depend on the tile. */
static void plan_compute_mlp(const PlanInput *in, Plan *p) {
    if (in->mlp_tile != PLAN_MLP_AUTO) {
        plan_fixed(in, in->mlp_tile, p);
        return;
    }
    plan_fixed(in, 0, p);
    p->mlp_auto = 1;
    int64_t t = p->t, rmax = (t - 1) / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN; /* largest tile below t */
    if (in->dev_limit <= 0 || p->dev_total <= in->dev_limit || rmax < PLAN_MLP_ALIGN) return;
    Plan q;
    plan_fixed(in, PLAN_MLP_ALIGN, &q);
    int64_t per_row = 6 * in->c.intermediate_size * in->act_bytes;   /* [1, I] x 6 */
    int64_t rest = q.dev_total - PLAN_MLP_ALIGN * per_row;              /* everything but the tile */
    int64_t head = in->dev_limit - rest > 0 ? in->dev_limit - rest : 0; /* what the tile may take */
    int64_t r = head / 2 / per_row / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN;   /* half of it: slack */
    if (r < PLAN_MLP_ALIGN) r = head / per_row / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN;
    if (r < PLAN_MLP_ALIGN) r = PLAN_MLP_ALIGN; /* does not fit: the smallest tile, for the message */
    if (r > rmax) r = rmax;
    plan_fixed(in, r, p);
    p->mlp_auto = 1;
}

static int host_fits(const PlanInput *in, const Plan *p) {
    int64_t rph = in->ranks_per_host > 0 ? in->ranks_per_host : 1;
    return in->host_limit <= 0 || p->host_total * rph <= in->host_limit;
}

/* --offload-layers auto (PLAN_OFFLOAD_AUTO) */
static void plan_compute_ckpt(const PlanInput *in, Plan *p) {
    if (!(in->offload_checkpoints && in->checkpoint >= 1 && in->offload_layers == PLAN_OFFLOAD_AUTO)) {
        plan_compute_mlp(in, p);
        return;
    }
    /* the most layers whose checkpoints the host holds: each one offloaded costs host
     * memory and saves device memory, so the most that fit is the best */
    PlanInput q = *in;
    for (int64_t K = in->c.num_layers + 1; K >= 0; K--) {
        q.offload_layers = K;
        plan_compute_mlp(&q, p);
        if (host_fits(in, p)) break;
    }
    p->offload_auto = 1;
}

static void plan_compute_grads(const PlanInput *in, Plan *p) {
    if (!(in->zero >= 1 && in->offload_optimizer && in->offload_grads == PLAN_OFFLOAD_AUTO)) {
        plan_compute_ckpt(in, p);
        return;
    }
    /* the most units whose gradients the host holds, beside checkpoints offloaded as asked (auto:
     * none yet): a byte of gradients on the host costs one copy a step (which the CPU AdamW needs
     * anyway), a byte of checkpoints two, so the gradients go first; auto checkpoints take the rest */
    PlanInput q = *in;
    if (q.offload_layers == PLAN_OFFLOAD_AUTO) q.offload_layers = 0;
    int64_t lo = 0, hi = ul_param_unit_count(&in->c); /* host memory grows with the units: bisection */
    while (lo < hi) {
        q.offload_grads = lo + (hi - lo + 1) / 2;
        plan_compute_mlp(&q, p);
        if (host_fits(in, p))
            lo = q.offload_grads;
        else
            hi = q.offload_grads - 1;
    }
    q.offload_grads = lo;
    q.offload_layers = in->offload_layers;
    plan_compute_ckpt(&q, p);
    p->grad_auto = 1;
}

/* --offload-params auto: the weights go to host only when the plan then fits the device and
 * did not before (every unit crosses PCIe twice a step; the fastest plan that fits keeps them) */
static void plan_compute_params(const PlanInput *in, Plan *p) {
    if (in->offload_params != PLAN_OFFLOAD_AUTO) {
        plan_compute_grads(in, p);
        return;
    }
    PlanInput q = *in;
    q.offload_params = 0;
    plan_compute_grads(&q, p);
    p->param_auto = 1;
    int64_t nsh = (in->dp_shard > 0 ? in->dp_shard : 1) * (in->sp > 0 ? in->sp : 1);
    if (!(in->zero >= 3 && in->offload_optimizer && nsh == 1) || in->dev_limit <= 0 || p->dev_total <= in->dev_limit)
        return;
    Plan on;
    q.offload_params = 1;
    plan_compute_grads(&q, &on);
    if (on.dev_total <= in->dev_limit && host_fits(in, &on)) {
        *p = on;
        p->param_auto = 1;
    }
}

void plan_compute(const PlanInput *in, Plan *p) {
    if (!(in->ckpt_every == PLAN_CKPT_AUTO && in->checkpoint == 1)) {
        plan_compute_params(in, p);
        return;
    }
    /* --checkpoint-every auto: the smallest K that fits (the least recompute); none: the K with
     * the smallest device total, for the message */
    PlanInput q = *in;
    Plan best;
    memset(&best, 0, sizeof best);
    for (int64_t K = 1; K <= (in->c.num_layers > 1 ? in->c.num_layers : 1); K++) {
        q.ckpt_every = K;
        plan_compute_params(&q, p);
        p->ckpt_auto = 1;
        if ((in->dev_limit <= 0 || p->dev_total <= in->dev_limit) && host_fits(in, p)) return;
        if (K == 1 || p->dev_total < best.dev_total) best = *p;
    }
    *p = best;
}

void plan_grads_desc(const Plan *p, char *buf, size_t n) {
    const char *a = p->grad_auto ? "auto: " : "";
    if (p->grad_units <= 0)
        snprintf(buf, n, "%s", p->grad_auto ? "auto: none" : "off");
    else if (p->grad_units >= p->units)
        snprintf(buf, n, "%sall %lld units", a, (long long)p->units);
    else
        snprintf(buf, n, "%s%lld of %lld units", a, (long long)p->grad_units, (long long)p->units);
}

void plan_offload_desc(const Plan *p, int64_t L, char *buf, size_t n) {
    const char *a = p->offload_auto ? "auto: " : "";
    if (p->offload_items <= 0)
        snprintf(buf, n, "%s", p->offload_auto ? "auto: none" : "off");
    else if (p->offload_items >= p->ckpt_items && p->ckpt_every <= 1)
        snprintf(buf, n, "%sall %lld layers", a, (long long)L);
    else if (p->offload_items >= p->ckpt_items)
        snprintf(buf, n, "%sall %lld kept inputs", a, (long long)p->ckpt_items);
    else if (p->ckpt_every <= 1)
        snprintf(buf, n, "%s%lld of %lld layers", a, (long long)p->offload_items, (long long)L);
    else
        snprintf(buf, n, "%s%lld of %lld kept inputs", a, (long long)p->offload_items, (long long)p->ckpt_items);
}

void plan_mlp_desc(const Plan *p, char *buf, size_t n) {
    if (p->mlp_tile)
        snprintf(buf, n, "%s%lld rows", p->mlp_auto ? "auto: " : "", (long long)p->mlp_tile);
    else
        snprintf(buf, n, "%s", p->mlp_auto ? "auto: untiled" : "off");
}

int64_t plan_max_seq_len(const PlanInput *in, int64_t dev_limit, int64_t host_limit, int64_t ranks_per_host) {
    PlanInput q = *in;
    q.dev_limit = dev_limit;
    if (q.host_limit <= 0) { /* --offload-layers auto fills the same host limit */
        q.host_limit = host_limit;
        q.ranks_per_host = ranks_per_host;
    }
    int64_t S = in->sp > 0 ? in->sp : 1;
    int64_t lo = 0, hi = INT32_MAX / S; /* in units of sp tokens; lo fits (or is 0) */
    Plan p;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        q.seq_len = mid * S;
        plan_compute(&q, &p);
        int fits = p.dev_total <= dev_limit && (host_limit <= 0 || p.host_total * ranks_per_host <= host_limit);
        if (fits)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo * S;
}

static double gib(int64_t b) { return (double)b / PLAN_GIB; }

void plan_print(FILE *f, const Plan *p, int64_t ranks_per_host, const char *unit) {
    char where_dev[16], per[32];
    snprintf(where_dev, sizeof where_dev, "%s", unit);
    for (char *c = where_dev; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    snprintf(per, sizeof per, "per %s", unit);
    fprintf(f, "%-52s %6s %14s %10s\n", "buffer", "where", "bytes", "GiB");
    for (int where = 0; where < 2; where++)
        for (int g = 0; g < PG_COUNT; g++)
            for (int i = 0; i < p->n; i++) {
                const PlanItem *it = &p->items[i];
                if (it->host != where || (int)it->group != g) continue;
                fprintf(f, "%-52s %6s %14lld %10.3f\n", it->name, where ? "host" : where_dev, (long long)it->bytes,
                        gib(it->bytes));
            }
    fprintf(f, "\n%s, by group:", per);
    for (int g = 0; g < PG_COUNT; g++)
        if (p->dev_group[g]) fprintf(f, "  %s %.3f", plan_group_name((PlanGroup)g), gib(p->dev_group[g]));
    fprintf(f, "\n%s total:  %.3f GiB (%lld bytes)\n", per, gib(p->dev_total), (long long)p->dev_total);
    fprintf(f, "per rank host:  %.3f GiB;  per host (%lld ranks): %.3f GiB\n", gib(p->host_total),
            (long long)ranks_per_host, gib(p->host_total * ranks_per_host));
}

void plan_summary(const Plan *p, const char *unit, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "per %s %.3f GiB (", unit, gib(p->dev_total));
    int first = 1;
    for (int g = 0; g < PG_COUNT && o < n; g++)
        if (p->dev_group[g]) {
            o += (size_t)snprintf(buf + o, n - o, "%s%s %.3f", first ? "" : ", ", plan_group_name((PlanGroup)g),
                                  gib(p->dev_group[g]));
            first = 0;
        }
    if (o < n) snprintf(buf + o, n - o, "), host %.3f GiB per rank", gib(p->host_total));
}

void plan_top_items(const Plan *p, int k, char *buf, size_t n) {
    int used[PLAN_MAX_ITEMS] = {0};
    size_t o = 0;
    buf[0] = 0;
    for (int j = 0; j < k && o < n; j++) {
        int best = -1;
        for (int i = 0; i < p->n; i++)
            if (!used[i] && !p->items[i].host && (best < 0 || p->items[i].bytes > p->items[best].bytes)) best = i;
        if (best < 0) break;
        used[best] = 1;
        o += (size_t)snprintf(buf + o, n - o, "%s%s %.2f GiB", j ? ", " : "", p->items[best].name,
                              gib(p->items[best].bytes));
    }
}
