#include "memory/plan.h"

#include <stdarg.h>
#include <string.h>

#include "core/common.h"
#include "core/params.h"
#include "kernels/kernels.h"
#include "memory/offload.h"


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
}

/* ---- the buffer table (plan.h PlanTable) ---- */

static const char *const buf_names[PB_COUNT] = {
#define PLAN_BUF_NAME(id, name, arena) name,
    PLAN_BUFS(PLAN_BUF_NAME)
#undef PLAN_BUF_NAME
};
static const PlanArena buf_arenas[PB_COUNT] = {
#define PLAN_BUF_ARENA(id, name, arena) arena,
    PLAN_BUFS(PLAN_BUF_ARENA)
#undef PLAN_BUF_ARENA
};

const char *plan_buf_name(PlanBufId id) { return id < PB_COUNT ? buf_names[id] : "?"; }

static int64_t pad(int64_t bytes) { return (bytes + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN; }

/* A line of the table whose bytes are the sum of the rows registered into it (buf, below);
 * exact, and in host memory when its arena is. Returns its index. */
static int item(Plan *p, PlanGroup g, PlanArena a, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int item(Plan *p, PlanGroup g, PlanArena a, const char *fmt, ...) {
    if (p->n >= PLAN_MAX_ITEMS) return PLAN_MAX_ITEMS - 1; /* cannot happen */
    PlanItem *it = &p->items[p->n];
    memset(it, 0, sizeof *it);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->name, sizeof it->name, fmt, ap);
    va_end(ap);
    it->group = g;
    it->host = plan_arena_host(a);
    it->exact = 1;
    return p->n++;
}

/* Row id in arena a: count copies of [numel] elements of dtype (act: A bytes), counted in line
 * it; with `of` != id it shares of's memory (registered before it, same count, same arena),
 * which is then sized by the larger of the two. Nothing for count or numel <= 0. */
static void buf_at(Plan *p, int it, PlanBufId id, PlanBufId of, PlanArena a, int64_t count, int64_t numel,
                   PlanDtype dt, int64_t A, const char *fmt, ...) __attribute__((format(printf, 10, 11)));
static void buf_at(Plan *p, int it, PlanBufId id, PlanBufId of, PlanArena a, int64_t count, int64_t numel,
                   PlanDtype dt, int64_t A, const char *fmt, ...) {
    static const int64_t sizes[] = {0, 4, 4, 8, 8};
    if (count <= 0 || numel <= 0) return;
    PlanBuf *b = &p->tab.buf[id];
    b->present = of == id || p->tab.buf[of].present;
    if (!b->present) return;
    b->arena = of == id ? a : p->tab.buf[of].arena;
    b->alias = of;
    b->dtype = dt;
    b->elem = dt == PD_ACT ? A : sizes[dt];
    b->count = count;
    b->numel = numel;
    b->item = it;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->shape, sizeof b->shape, fmt, ap);
    va_end(ap);
}
/* in the row's own arena (plan.h PLAN_BUFS); sharing of's memory */
#define buf(p, it, id, count, numel, dt, A, ...) buf_at(p, it, id, id, buf_arenas[id], count, numel, dt, A, __VA_ARGS__)
#define buf_as(p, it, id, of, count, numel, dt, A, ...) \
    buf_at(p, it, id, of, buf_arenas[id], count, numel, dt, A, __VA_ARGS__)

/* Strides (alias groups sized by their largest member), offsets in each arena, the lines'
 * bytes; then the totals over all lines, dropping empty ones. */
static void plan_finish(Plan *p) {
    PlanTable *tab = &p->tab;
    for (int i = 0; i < PB_COUNT; i++)
        if (tab->buf[i].present) tab->buf[i].stride = pad(tab->buf[i].numel * tab->buf[i].elem);
    for (int i = 0; i < PB_COUNT; i++) {
        PlanBuf *b = &tab->buf[i], *o = &tab->buf[b->alias];
        if (!b->present || b->alias == (PlanBufId)i) continue;
        if (b->stride > o->stride) o->stride = b->stride;
        b->count = o->count; /* the same copies (asserted equal where they are made) */
    }
    for (int i = 0; i < PB_COUNT; i++) {
        PlanBuf *b = &tab->buf[i];
        if (!b->present || b->alias != (PlanBufId)i) continue;
        int64_t bytes = b->count * b->stride;
        b->offset = tab->arena_bytes[b->arena];
        tab->arena_bytes[b->arena] += bytes;
        p->items[b->item].bytes += bytes;
    }
    for (int i = 0; i < PB_COUNT; i++) /* the alias rows take their owner's place */
        if (tab->buf[i].present && tab->buf[i].alias != (PlanBufId)i) {
            tab->buf[i].offset = tab->buf[tab->buf[i].alias].offset;
            tab->buf[i].stride = tab->buf[tab->buf[i].alias].stride;
        }
    int map[PLAN_MAX_ITEMS], n = 0;
    for (int i = 0; i < p->n; i++) {
        map[i] = n;
        if (p->items[i].bytes <= 0) continue;
        p->items[n++] = p->items[i];
    }
    p->n = n;
    for (int i = 0; i < PB_COUNT; i++)
        if (tab->buf[i].present && tab->buf[i].alias == (PlanBufId)i) tab->buf[i].item = map[tab->buf[i].item];
    for (int i = 0; i < p->n; i++) {
        const PlanItem *it = &p->items[i];
        if (it->host) {
            p->host_total += it->bytes;
            p->host_group[it->group] += it->bytes;
            if (it->exact) p->host_exact += it->bytes;
        } else {
            p->dev_total += it->bytes;
            p->dev_group[it->group] += it->bytes;
            if (it->exact) p->dev_exact += it->bytes;
        }
    }
}

void *plan_buf(const PlanTable *tab, void *const *base, PlanBufId id, int64_t i) {
    const PlanBuf *b = &tab->buf[id];
    if (!b->present) return NULL;
    UL_ASSERT(i >= 0 && i < b->count && base[b->arena], "plan_buf %s: copy %lld of %lld", buf_names[id],
              (long long)i, (long long)b->count);
    return (char *)base[b->arena] + b->offset + i * b->stride;
}

int64_t plan_buf_stride(const PlanTable *tab, PlanBufId id) { return tab->buf[id].stride; }

/* Under AddressSanitizer (the *_asan tests, CPU backend) the padding after each copy of a row
 * is poisoned, so that an overrun of one buffer into the next is still caught as it was when
 * every buffer was its own allocation (the allocator clears it at the arena's free). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
static void poison_padding(const PlanTable *tab, const KernelOps *k, PlanArena a0, PlanArena a1, void **base) {
    if (k->on_device) return; /* device memory, and pinned host memory the allocator does not see */
    for (int i = 0; i < PB_COUNT; i++) {
        const PlanBuf *b = &tab->buf[i];
        if (!b->present || b->alias != (PlanBufId)i || b->arena < a0 || b->arena > a1 || !base[b->arena]) continue;
        int64_t used = b->numel * b->elem;
        for (int j = 0; j < PB_COUNT; j++) /* the largest member of the alias group */
            if (tab->buf[j].present && tab->buf[j].alias == (PlanBufId)i && tab->buf[j].numel * tab->buf[j].elem > used)
                used = tab->buf[j].numel * tab->buf[j].elem;
        for (int64_t c = 0; c < b->count && used < b->stride; c++)
            ASAN_POISON_MEMORY_REGION((char *)base[b->arena] + b->offset + c * b->stride + used,
                                      (size_t)(b->stride - used));
    }
}
#else
static void poison_padding(const PlanTable *tab, const KernelOps *k, PlanArena a0, PlanArena a1, void **base) {
    (void)tab, (void)k, (void)a0, (void)a1, (void)base;
}
#endif

void plan_arenas_alloc(const PlanTable *tab, const KernelOps *k, PlanArena a0, PlanArena a1, void **base) {
    for (int a = a0; a <= (int)a1; a++) {
        size_t bytes = (size_t)tab->arena_bytes[a];
        base[a] = !bytes ? NULL : plan_arena_host((PlanArena)a) ? k->host_alloc(bytes) : k->alloc(bytes);
    }
    poison_padding(tab, k, a0, a1, base);
}

void plan_arenas_free(const KernelOps *k, PlanArena a0, PlanArena a1, void **base) {
    for (int a = a0; a <= (int)a1; a++) {
        if (base[a]) (plan_arena_host((PlanArena)a) ? k->host_free : k->free)(base[a]);
        base[a] = NULL;
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

/* A saved-activation store of n items (memory/offload.h): the first n_off in pinned host
 * memory through a device ring of 2, the rest in their own device buffers; rows dev and host
 * of [numel] (shape), lines named by what. */
static void add_store(Plan *p, int64_t n_off, int64_t n, int64_t numel, PlanDtype dt, int64_t A, PlanBufId dev,
                      PlanBufId host, const char *what, const char *shape) {
    if (n_off > n) n_off = n;
    if (n_off < 0) n_off = 0;
    int64_t slots = actstore_dev_slots(n, n_off), ring = slots - (n - n_off);
    int it;
    if (n_off <= 0)
        it = item(p, PG_CKPT, PA_MODEL, "%s (%lld)", what, (long long)n);
    else if (n_off < n)
        it = item(p, PG_CKPT, PA_MODEL, "%s: device ring (%lld) + resident (%lld)", what, (long long)ring,
                  (long long)(n - n_off));
    else
        it = item(p, PG_CKPT, PA_MODEL, "%s: device ring (%lld)", what, (long long)ring);
    buf(p, it, dev, slots, numel, dt, A, "%s", shape);
    if (n_off <= 0) return;
    it = item(p, PG_CKPT, PA_MODEL_HOST, "%s: pinned host (%lld)", what, (long long)n_off);
    buf(p, it, host, n_off, numel, dt, A, "%s", shape);
}

/* The lines in the order of the printed table. The model's and the optimizer's buffers are
 * rows of p->tab, summed into the lines (the allocator: model_init_opts and zero_init carve
 * them from their arenas; model_eval the eval arena, at its first call: not exact); the
 * backend's workspace and the host copies are lines only (add), not exact.
 * mlp_req: the TiledMLP rows requested (0 = off), never PLAN_MLP_AUTO here. */
static void plan_fixed(const PlanInput *in, int64_t mlp_req, Plan *p) {
    memset(p, 0, sizeof *p);
    const ModelConfig *c = &in->c;
    int64_t S = in->sp > 0 ? in->sp : 1, A = in->act_bytes, F = 4;
    int64_t H = c->num_heads, Hkv = c->num_kv_heads, d = c->head_dim, D = c->hidden_size;
    int64_t I = c->intermediate_size, V = c->vocab_size, L = c->num_layers;
    int64_t T = plan_padded_len(in->seq_len, S), t = T / S;
    /* heads per rank after the exchange (exchange_init) */
    int64_t Hq_l = H / S, Hkv_l = ul_kv_heads_per_rank(Hkv, S), W_l = Hq_l + 2 * Hkv_l;
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
    const PlanArena oa = oo ? PA_OPT_HOST : PA_OPT; /* the optimizer's master and moments */
    /* the model's flat vectors (rows of its arena, padded to n_pad for ZeRO 1, 2): the fp32
     * master with ZeRO 0 (with ZeRO >= 1 the optimizer's slice is the master: the model has
     * none, except on the CPU where it is the act working copy), the gradients' accumulation
     * buffer (none with the gradient offload: the optimizer's unit buffers), the act working
     * copy (the fp32 master itself on the CPU) */
    int it = 0; /* the line the next rows are counted in */
    if (z == 0) {
        it = item(p, PG_MASTER, PA_MODEL, "master weights fp32");
        buf(p, it, PB_PARAMS, 1, N, PD_F32, A, "[N]");
    } else {
        it = item(p, PG_MASTER, oa, "master weights fp32%s", shard);
        buf_at(p, it, PB_OPT_MASTER, PB_OPT_MASTER, oa, 1, zper, PD_F32, A, "[per]");
    }
    if (z <= 2 && !gu) { /* the accumulation buffer of the backward passes */
        it = item(p, PG_GRADS, PA_MODEL, "gradients fp32");
        buf(p, it, PB_GRADS, 1, n_pad, PD_F32, A, z ? "[n_pad]" : "[N]");
    }
    if ((z >= 2 || oo) && (!gu || z <= 2)) {
        it = item(p, PG_GRADS, PA_OPT, "reduced gradients fp32 (shard)");
        buf(p, it, PB_OPT_GSLICE, 1, zper, PD_F32, A, "[per]");
    }
    if (gu && z <= 2) { /* each unit's gradients all-reduced in one of two buffers (one is copied to host
                           while the next unit computes), the slice's part accumulated on the host */
        it = item(p, PG_GRADS, PA_OPT, "gradients of one unit fp32 (x2, copy to host)");
        buf(p, it, PB_OPT_GBUF, 1, umaxu, PD_F32, A, "[umaxu]");
        buf(p, it, PB_OPT_GBUF2, 1, umaxu, PD_F32, A, "[umaxu]");
        it = item(p, PG_GRADS, PA_OPT_HOST, "gradients fp32 (shard, on the host)");
        buf(p, it, PB_OPT_HGRAD, 1, zper, PD_F32, A, "[per]");
    }
    if (gu && z >= 3) { /* the rest on the device; a second unit buffer (S = 1) or the reduce-scatter's target
                 (S > 1) holds one unit's gradients while they are copied to host */
        it = item(p, PG_GRADS, PA_OPT, "reduced gradients fp32 (shard, %lld units on the GPU)", (long long)(nu - gu));
        buf(p, it, PB_OPT_GSLICE, 1, zper - so_h, PD_F32, A, "[per - so_host]");
        it = item(p, PG_GRADS, PA_OPT_HOST, "gradients fp32 (shard, %lld units on the host)", (long long)gu);
        buf(p, it, PB_OPT_HGRAD, 1, so_h, PD_F32, A, "[so_host]");
    }
    if (z >= 3) {
        it = item(p, PG_GRADS, PA_OPT, "gradients of one unit fp32 (reduce-scatter)");
        buf(p, it, PB_OPT_GBUF, 1, umax, PD_F32, A, "[umax]");
        if (gu && nsh == 1) {
            it = item(p, PG_GRADS, PA_OPT, "gradients of one unit fp32: 2nd (copy to host)");
            buf(p, it, PB_OPT_GBUF2, 1, umax, PD_F32, A, "[umax]");
        } else if (gu) {
            it = item(p, PG_GRADS, PA_OPT, "reduced unit gradients fp32 (copy to host)");
            buf(p, it, PB_OPT_GRED, 1, umax / nsh, PD_F32, A, "[umax / S]");
        }
    }
    if (oo) { /* the reduced slice goes to the CPU AdamW through pinned chunks, never whole */
        int nbuf;
        int64_t chunk = plan_offload_chunk(zper, in->offload_chunk, &nbuf);
        it = item(p, PG_GRADS, PA_OPT_HOST, "gradient staging for the CPU AdamW [%lld] x%d", (long long)chunk, nbuf);
        buf(p, it, PB_OPT_GSTAGE, nbuf, chunk, PD_F32, A, "[chunk]");
    }
    p->param_host = z >= 3 && oo && nsh == 1 && in->offload_params == 1;
    if (z >= 3) {
        const PlanArena wa = p->param_host ? PA_OPT_HOST : PA_OPT; /* param_host: each unit copied in before
                                                                        its forward and backward */
        it = item(p, PG_WEIGHTS, wa, "%s", p->param_host ? "weights working copy (shard, pinned host)"
                                                         : "weights working copy (shard)");
        buf_at(p, it, PB_OPT_WSL, PB_OPT_WSL, wa, 1, zper, PD_ACT, A, "[per]");
        it = item(p, PG_WEIGHTS, PA_OPT, "gathered unit weights (x2)");
        buf(p, it, PB_OPT_WBUF, 2, umax, PD_ACT, A, "[umax]");
    } else if (A != F) {
        it = item(p, PG_WEIGHTS, PA_MODEL, "weights working copy");
        buf(p, it, PB_WACT, 1, n_pad, PD_ACT, A, z ? "[n_pad]" : "[N]");
        if (z >= 1) {
            it = item(p, PG_WEIGHTS, PA_OPT, "all-gather send slice (shard)");
            buf(p, it, PB_OPT_SEND, 1, zper, PD_ACT, A, "[per]");
        }
    } else { /* the CPU: the kernels use the fp32 master copy itself */
        if (z >= 1) { /* the model's only copy: the optimizer's slice is the master */
            it = item(p, PG_WEIGHTS, PA_MODEL, "weights working copy");
            buf(p, it, PB_PARAMS, 1, n_pad, PD_F32, A, "[n_pad]");
        }
        buf_as(p, it, PB_WACT, PB_PARAMS, 1, n_pad, PD_ACT, A, z ? "[n_pad]" : "[N]");
    }
    /* ---- the rest of the model's arena ---- */
    it = item(p, PG_WORK, PA_MODEL, "rope inv_freq");
    buf(p, it, PB_INV_FREQ, 1, d / 2, PD_F32, A, "[d/2]");

    /* ---- the Ulysses exchange: staging for the all-to-alls ---- */
    if (S > 1) {
        it = item(p, PG_ATTN, PA_MODEL, "all-to-all staging [T, W_l, d] (send or recv)");
        buf(p, it, PB_XCHG, 1, T * W_l * d, PD_ACT, A, "[T, W_l, d]");
    }

    /* ---- saved activations ---- */
    add_store(p, off, nck, t * D, PD_ACT, A, PB_XIN, PB_XIN_HOST,
              ck > 1 ? "layer inputs [t, D], every K-th" : "layer inputs [t, D]", "[t, D]");
    if (ck > 1) { /* a recomputed segment's inputs after its first (model.c backward_layers) */
        it = item(p, PG_CKPT, PA_MODEL, "segment's recomputed inputs [t, D] (%lld)", (long long)(ck - 1));
        buf(p, it, PB_XSEG, ck - 1, t * D, PD_ACT, A, "[t, D]");
    }
    int64_t nacts = recompute ? 1 : L;
    const char *per = recompute ? "1 layer" : "all layers";
    /* with recompute the one layer's xn1, rstd1 also hold the final norm's output and rstd (free
     * from the last layer's forward to the final norm's backward: every layer is recomputed
     * before its backward), its xmid dqkv and, with sp == 1, its xn2 dout (both free once the
     * MLP and the second norm's backward have read them; model.c model_step, layer_bwd) */
    if (recompute)
        it = item(p, PG_ACTS, PA_MODEL, "%s + rstd (%s)",
                  S == 1 ? "xn1/final norm, xmid/dqkv, xn2/dout" : "xn1/norm out, xmid/dqkv+dout, xn2/doh", per);
    else
        it = item(p, PG_ACTS, PA_MODEL, "xn1, xmid, xn2 + rstd (%s)", per);
    buf(p, it, PB_XN1, nacts, t * D, PD_ACT, A, "[t, D]");
    buf(p, it, PB_RSTD1, nacts, t, PD_F32, A, "[t]");
    buf(p, it, PB_XMID, nacts, t * D, PD_ACT, A, "[t, D]");
    buf(p, it, PB_XN2, nacts, t * D, PD_ACT, A, "[t, D]");
    buf(p, it, PB_RSTD2, nacts, t, PD_F32, A, "[t]");
    it = item(p, PG_ATTN, PA_MODEL, "qkv [t, H+2Hkv, d] (%s)", per);
    buf(p, it, PB_QKV, nacts, t * (H + 2 * Hkv) * d, PD_ACT, A, "[t, H+2Hkv, d]");
    if (ul_family(c)->qk_norm) {
        it = item(p, PG_ATTN, PA_MODEL, "q, k before q/k norm + rstd (%s)", per);
        buf(p, it, PB_QKN, nacts, t * (H + Hkv) * d, PD_ACT, A, "[t, H+Hkv, d]");
        buf(p, it, PB_RSTDQ, nacts, t * (H + Hkv), PD_F32, A, "[t, H+Hkv]");
    }
    if (S > 1) {
        it = item(p, PG_ATTN, PA_MODEL, "qkv head-sharded [T, W_l, d] (%s)", per);
        buf(p, it, PB_QKVH, nacts, T * W_l * d, PD_ACT, A, "[T, W_l, d]");
    } else { /* the exchange is the identity: qkv itself */
        buf_as(p, it, PB_QKVH, PB_QKV, nacts, T * W_l * d, PD_ACT, A, "[T, W_l, d]");
    }
    if (recompute != 2) { /* with --checkpoint 2 they are the kept ones (below) */
        it = item(p, PG_ATTN, PA_MODEL, "attention out + lse (%s)", per);
        buf(p, it, PB_OH, nacts, T * Hq_l * d, PD_ACT, A, "[T, Hq_l, d]");
        buf(p, it, PB_LSE, nacts, T * Hq_l, PD_F32, A, "[T, Hq_l]");
    }
    if (S > 1) {
        it = item(p, PG_ATTN, PA_MODEL, "attention out [t, H*d] (%s)", per);
        buf(p, it, PB_O, nacts, t * H * d, PD_ACT, A, "[t, H*d]");
    } else {
        buf_as(p, it, PB_O, PB_OH, nacts, t * H * d, PD_ACT, A, "[t, H*d]");
    }
    if (!mlp_tile) {
        it = item(p, PG_ACTS, PA_MODEL, "MLP g, u, h [t, I] (%s)", per);
        buf(p, it, PB_G, nacts, t * I, PD_ACT, A, "[t, I]");
        buf(p, it, PB_U, nacts, t * I, PD_ACT, A, "[t, I]");
        buf(p, it, PB_H, nacts, t * I, PD_ACT, A, "[t, I]");
    }
    if (recompute == 2) {
        add_store(p, off, L, T * Hq_l * d, PD_ACT, A, PB_KEEP_OH, PB_KEEP_OH_HOST, "kept attention out [T, Hq_l, d]",
                  "[T, Hq_l, d]");
        add_store(p, off, L, T * Hq_l, PD_F32, A, PB_KEEP_LSE, PB_KEEP_LSE_HOST, "kept lse [T, Hq_l]", "[T, Hq_l]");
    }
    /* the final norm's output: a line of its own, or with recompute in xn1, rstd1 (above) */
    if (!recompute) it = item(p, PG_ACTS, PA_MODEL, "final norm out + rstd");
    buf_as(p, it, PB_XNF, recompute ? PB_XN1 : PB_XNF, 1, t * D, PD_ACT, A, "[t, D]");
    buf_as(p, it, PB_RSTDF, recompute ? PB_RSTD1 : PB_RSTDF, 1, t, PD_F32, A, "[t]");
    it = item(p, PG_LOSS, PA_MODEL, "logits tile [%lld, V]", (long long)loss_tile);
    buf(p, it, PB_LOGITS, 1, loss_tile * V, PD_ACT, A, "[%lld, V]", (long long)loss_tile);
    it = item(p, PG_ACTS, PA_MODEL, "%s", recompute && S > 1 ? "dres, dxn/dqkv head-sharded [t, D]" : "dres, dxn [t, D]");
    buf(p, it, PB_DRES, 1, t * D, PD_ACT, A, "[t, D]");
    buf(p, it, PB_DXN, 1, t * D, PD_ACT, A, "[t, D]");
    /* the MLP backward writes dg, du, dh over g, u, h (the layer's or the tile's): no
     * [*, I] buffer of its own */
    if (mlp_tile) {
        it = item(p, PG_ACTS, PA_MODEL, "TiledMLP tile g, u, h [%lld, I]", (long long)rows_I);
        buf(p, it, PB_TG, 1, rows_I * I, PD_ACT, A, "[%lld, I]", (long long)rows_I);
        buf(p, it, PB_TU, 1, rows_I * I, PD_ACT, A, "[%lld, I]", (long long)rows_I);
        buf(p, it, PB_TH, 1, rows_I * I, PD_ACT, A, "[%lld, I]", (long long)rows_I);
    }
    /* dout [t, H*d], dqkv [t, H+2Hkv, d] and their head-sharded forms, each in the row named
     * (itself: its own memory). With S > 1 dout lives in dqkv's buffer (dead once exchange_dout
     * packed it, before exchange_dqkv writes dqkv: model.c attn_bwd); with S == 1 the
     * head-sharded ones are the same buffers. With recompute the recomputed layer's xmid holds
     * dqkv, its xn2 dout (S == 1) or the head-sharded dout (S > 1), and dxn the head-sharded
     * dqkv: dead from the attention's backward until the q/k/v projections' (layer_bwd) */
    PlanBufId dqkv = recompute ? PB_XMID : PB_DQKV;
    PlanBufId dout = S > 1 ? dqkv : recompute ? PB_XN2 : PB_DOUT;
    PlanBufId doh = S == 1 ? dout : recompute ? PB_XN2 : PB_DOH;
    PlanBufId dqkvh = S == 1 ? dqkv : recompute ? PB_DXN : PB_DQKVH;
    if (!recompute)
        it = item(p, PG_ATTN, PA_MODEL, S > 1 ? "dqkv (and dout) [t, H+2Hkv, d]" : "dout, dqkv [t, *]");
    buf_as(p, it, PB_DQKV, dqkv, 1, t * (H + 2 * Hkv) * d, PD_ACT, A, "[t, H+2Hkv, d]");
    buf_as(p, it, PB_DOUT, dout, 1, t * H * d, PD_ACT, A, "[t, H*d]");
    if (S > 1 && !recompute) it = item(p, PG_ATTN, PA_MODEL, "dout, dqkv head-sharded [T, *]");
    buf_as(p, it, PB_DOH, doh, 1, T * Hq_l * d, PD_ACT, A, "[T, Hq_l, d]");
    buf_as(p, it, PB_DQKVH, dqkvh, 1, T * W_l * d, PD_ACT, A, "[T, W_l, d]");
    it = item(p, PG_WORK, PA_MODEL, "tokens, labels, positions, cu_seqlens");
    buf(p, it, PB_TOK, 1, t, PD_I32, A, "[t]");
    buf(p, it, PB_LAB, 1, t, PD_I32, A, "[t]");
    buf(p, it, PB_POS, 1, t, PD_I32, A, "[t]");
    buf(p, it, PB_CU, 1, T + 2, PD_I64, A, "[T + 2]");
    buf(p, it, PB_CUL, 1, t + 2, PD_I64, A, "[t + 2]");
    buf(p, it, PB_ACC, 1, 2, PD_F64, A, "[2]");

    /* ---- optimizer state (train_run) ---- */
    it = item(p, PG_OPTIM, oa, "AdamW m + v fp32%s", shard);
    buf_at(p, it, PB_OPT_M1, PB_OPT_M1, oa, 1, zper, PD_F32, A, z ? "[per]" : "[N]");
    buf_at(p, it, PB_OPT_M2, PB_OPT_M2, oa, 1, zper, PD_F32, A, z ? "[per]" : "[N]");

    /* ---- allocated later or outside KernelOps (not part of the exact check) ---- */
    if (in->eval) {
        it = item(p, PG_LOSS, PA_EVAL, "eval logits fp32 (first evaluation)");
        p->items[it].exact = 0;
        buf(p, it, PB_LOGITS32, 1, loss_tile * V, PD_F32, A, "[%lld, V]", (long long)loss_tile);
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
    ul_kernels_workspace(in->cuda, T, Hq_l, Hkv_l, d, &ws);
    for (int i = 0; i < ws.n; i++) add(p, PG_WORK, 0, 0, ws.item[i].bytes, ws.item[i].name);
    if (in->cuda) add(p, PG_WORK, 0, 0, (int64_t)(in->reserve_gib * PLAN_GIB), "CUDA context + cuBLASLt + NCCL reserve");
    plan_finish(p);
}

/* Whether the plan fits the device limit (dev_limit <= 0: none) and the host limit. */
static int dev_fits(const PlanInput *in, const Plan *p) { return in->dev_limit <= 0 || p->dev_total <= in->dev_limit; }
static int host_fits(const PlanInput *in, const Plan *p) {
    int64_t rph = in->ranks_per_host > 0 ? in->ranks_per_host : 1;
    return in->host_limit <= 0 || p->host_total * rph <= in->host_limit;
}

/* PLAN_MLP_AUTO (plan.h): with TiledMLP the [*, I] buffers cost 3 rows I act bytes (the
 * tile's g, u, h, which the backward overwrites with dg, du, dh); everything else does not
 * depend on the tile. */
static void plan_compute_mlp(const PlanInput *in, Plan *p) {
    if (in->mlp_tile != PLAN_MLP_AUTO) {
        plan_fixed(in, in->mlp_tile, p);
        return;
    }
    plan_fixed(in, 0, p);
    p->mlp_auto = 1;
    int64_t t = p->t, rmax = (t - 1) / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN; /* largest tile below t */
    if (dev_fits(in, p) || rmax < PLAN_MLP_ALIGN) return;
    Plan q;
    plan_fixed(in, PLAN_MLP_ALIGN, &q);
    int64_t per_row = 3 * in->c.intermediate_size * in->act_bytes;   /* [1, I] x 3 */
    int64_t rest = q.dev_total - PLAN_MLP_ALIGN * per_row;              /* everything but the tile */
    int64_t head = in->dev_limit - rest > 0 ? in->dev_limit - rest : 0; /* what the tile may take */
    int64_t r = head / 2 / per_row / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN;   /* half of it: slack */
    if (r < PLAN_MLP_ALIGN) r = head / per_row / PLAN_MLP_ALIGN * PLAN_MLP_ALIGN;
    if (r < PLAN_MLP_ALIGN) r = PLAN_MLP_ALIGN; /* does not fit: the smallest tile, for the message */
    if (r > rmax) r = rmax;
    plan_fixed(in, r, p);
    p->mlp_auto = 1;
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
    if (in->zero < 3) {
        /* ZeRO 1, 2: a unit's gradients are all-reduced over the ranks on their own, every sample
         * (not one reduce-scatter a step): sent to host only when the plan fits no other way */
        PlanInput q = *in;
        q.offload_grads = 0;
        plan_compute_ckpt(&q, p);
        if (!dev_fits(in, p)) {
            Plan on;
            q.offload_grads = -1;
            plan_compute_ckpt(&q, &on);
            if (host_fits(in, &on)) *p = on;
        }
        p->grad_auto = 1;
        return;
    }
    /* ZeRO 3: each unit is reduce-scattered on its own anyway, and the CPU AdamW needs the
     * gradients on the host: the most units whose gradients the host holds, beside checkpoints offloaded as asked (auto:
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
    if (!(in->zero >= 3 && in->offload_optimizer && nsh == 1) || dev_fits(in, p)) return;
    Plan on;
    q.offload_params = 1;
    plan_compute_grads(&q, &on);
    if (dev_fits(in, &on) && host_fits(in, &on)) {
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
        if (dev_fits(in, p) && host_fits(in, p)) return;
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

void plan_print_buffers(FILE *f, const Plan *p, const char *unit) {
    static const char *arena_names[PA_COUNT] = {"model", "model host", "optimizer", "optimizer host", "eval"};
    static const char *dtypes[] = {"act", "fp32", "int32", "int64", "fp64"};
    const PlanTable *tab = &p->tab;
    fprintf(f, "\nthe buffers: one allocation per arena (per %s):", unit);
    for (int a = 0; a < PA_COUNT; a++)
        if (tab->arena_bytes[a])
            fprintf(f, "  %s%s %lld bytes", arena_names[a], plan_arena_host((PlanArena)a) ? " (pinned)" : "",
                    (long long)tab->arena_bytes[a]);
    fprintf(f, "; each copy padded to %lld bytes\n", (long long)PLAN_ALIGN);
    fprintf(f, "  %-28s %-14s %-5s %6s  %-16s %12s %12s %12s\n", "buffer", "arena", "dtype", "copies", "shape",
            "elements", "offset", "bytes");
    for (int a = 0; a < PA_COUNT; a++)
        for (int i = 0; i < PB_COUNT; i++) {
            const PlanBuf *b = &tab->buf[i];
            if (!b->present || b->arena != (PlanArena)a) continue;
            const char *dt = b->dtype == PD_ACT ? (b->elem == 2 ? "bf16" : "fp32") : dtypes[b->dtype];
            fprintf(f, "  %-28s %-14s %-5s %6lld  %-16s %12lld %12lld ", buf_names[i], arena_names[a], dt,
                    (long long)b->count, b->shape, (long long)b->numel, (long long)b->offset);
            if (b->alias == (PlanBufId)i)
                fprintf(f, "%12lld\n", (long long)(b->count * b->stride));
            else
                fprintf(f, "%12s  (in %s)\n", "-", buf_names[b->alias]);
        }
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
