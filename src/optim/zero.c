#include "optim/zero.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "memory/plan.h"

#define F32B(n) ((size_t)(n) * sizeof(float))
/* element offset into an act buffer */
#define AOFF(z, p, n) ((void *)((char *)(p) + (size_t)(n) * (z)->k->act_bytes))

static UlCommType act_type(const KernelOps *k) { return k->act_bytes == 2 ? UL_BF16 : UL_F32; }

/* dst[0 : n) = src (fp32, backend memory): a byte copy through the act copy kernel */
static void copy_f32(const KernelOps *k, float *dst, const float *src, int64_t n) {
    int64_t cols = n * (int64_t)(sizeof(float) / k->act_bytes);
    if (n > 0) k->copy2d(dst, cols, src, cols, 1, cols);
}

/* ---------------- stage 3: the model's unit hooks (ModelShards) ---------------- */

static ZeroOpt *zopt(ModelShards *s) { return (ZeroOpt *)(void *)((char *)s - offsetof(ZeroOpt, hooks)); }

/* Unit u into the least recently used buffer, unless it is in one: [S * per_u] = the unit in
 * flat order (+ padding). start: without the compute's wait (a prefetch). Returns the buffer. */
static int z3_gather(ZeroOpt *z, int64_t u, int start) {
    int b = z->wunit[0] == u ? 0 : z->wunit[1] == u ? 1 : -1;
    if (b >= 0) return b;
    const ZeroUnit *un = &z->units[u];
    CommGroup *g = z->dev_shard;
    b = z->wuse[0] <= z->wuse[1] ? 0 : 1;
    if (z->param_host) { /* one rank: the unit from pinned host memory, on the copy stream after the
                            compute queued so far (the buffer's previous unit is done with) */
        const KernelOps *k = z->k;
        k->event_record(z->ev_wq[b], UL_STREAM_COMPUTE);
        k->event_wait(UL_STREAM_COPY, z->ev_wq[b]);
        k->copy_async(z->wbuf[b], AOFF(z, z->wsl, un->so), (size_t)un->per * k->act_bytes, 0);
        k->event_record(z->ev_wcopy[b], UL_STREAM_COPY);
        z->wunit[b] = u;
        z->wpend[b] = 1; /* the compute waits for the copy when it fetches the unit */
        return b;
    }
    (start ? g->ops->allgather_start : g->ops->allgather)(g, AOFF(z, z->wsl, un->so), z->wbuf[b], un->per,
                                                          act_type(z->k));
    z->wunit[b] = u;
    z->wpend[b] = start;
    return b;
}

static void z3_fetch(ModelShards *s, Model *m, int64_t u) {
    ZeroOpt *z = zopt(s);
    int b = z3_gather(z, u, 0);
    if (z->wpend[b]) { /* prefetched (or copied from host): the compute waits for it now */
        if (z->param_host)
            z->k->event_wait(UL_STREAM_COMPUTE, z->ev_wcopy[b]);
        else
            z->dev_shard->ops->wait(z->dev_shard);
        z->wpend[b] = 0;
    }
    z->wuse[b] = ++z->clock;
    ul_tensors_bind_unit(&m->P, &m->c, u, z->wbuf[b], z->k->act_bytes);
}

static void z3_prefetch(ModelShards *s, Model *m, int64_t u) {
    (void)m;
    z3_gather(zopt(s), u, 1); /* the buffer's last use stays older than the current unit's */
}

/* The device gradients of a unit kept on the device (u >= gu_host): gslice covers the
 * slice's [so_host, per). */
static float *gdev(const ZeroOpt *z, int64_t so) { return z->gslice + (so - z->so_host); }

static void drain_grads(ZeroOpt *z);

/* The next unit's gradient buffer: with two, the units alternate (the other one may still be
 * read out to host: waited for on the device, or taken first when it is still pending). */
static void open_unit(ZeroOpt *z) {
    if (!z->gbuf2) return;
    int b = z->gopen == z->gbuf ? 1 : 0;
    z->gopen = b ? z->gbuf2 : z->gbuf;
    if (z->gpend >= 0 && z->gpend_b == b) drain_grads(z); /* still to be read out (a tied head) */
    z->k->event_wait(UL_STREAM_COMPUTE, z->ev_gfree[b]);
}

/* Whether offloaded unit u's gradients already arrived this step (a later sample, a tied head's
 * second round): their sum so far is then uploaded into the unit's buffer, so that the sums
 * run in the order of the device slice's (and of --zero 0): bitwise the same. */
static int host_so_far(ZeroOpt *z, int64_t u) {
    if (z->gpend == u) drain_grads(z); /* a tied head's first round, still pending */
    return !z->gfresh[u];
}

/* unit u's reduced gradients src[n] (device, in the open buffer or gred) are complete on the
 * compute stream: their copy to dst (host) waits for that, the CPU takes them later (drain_grads) */
static void set_pending(ZeroOpt *z, int64_t u, const float *src, float *dst, int64_t n) {
    z->k->event_record(z->ev_gdone, UL_STREAM_COMPUTE);
    z->gpend = u;
    z->gpend_src = src;
    z->gpend_dst = dst;
    z->gpend_n = n;
    z->gpend_b = z->gopen == z->gbuf2 ? 1 : 0;
}

static void z3_grad_begin(ModelShards *s, Model *m, int64_t u) {
    ZeroOpt *z = zopt(s);
    const ZeroUnit *un = &z->units[u];
    open_unit(z);
    z->k->zero(z->gopen, F32B(z->S * un->per));
    /* the slice's sum so far in this rank's chunk: the reduce-scatter then adds the new part
     * (offloaded units: uploaded from the host when the unit already arrived this step) */
    if (u >= z->gu_host)
        copy_f32(z->k, z->gopen + z->q * un->per, gdev(z, un->so), un->per);
    else if (host_so_far(z, u))
        z->k->upload(z->gopen + z->q * un->per, z->hgrad + un->so, F32B(un->per));
    ul_tensors_bind_unit(&m->G, &m->c, u, z->gopen, sizeof(float));
}

static void z3_grad_end(ModelShards *s, Model *m, int64_t u) {
    (void)m;
    ZeroOpt *z = zopt(s);
    const ZeroUnit *un = &z->units[u];
    CommGroup *g = z->dev_shard;
    if (u >= z->gu_host) {
        g->ops->reduce_scatter_sum(g, z->gopen, gdev(z, un->so), z->S * un->per, UL_F32);
        return;
    }
    /* to host: the previous unit's copy is taken first (it may read gred), then this one waits
     * for its copy, which overlaps the next unit's backward */
    drain_grads(z);
    const float *src = z->gopen; /* S == 1: the unit's buffer is its reduced gradient */
    if (z->S > 1) {
        g->ops->reduce_scatter_sum(g, z->gopen, z->gred, z->S * un->per, UL_F32);
        src = z->gred;
    }
    set_pending(z, u, src, z->hgrad + un->so, un->per);
}

/* ---------------- stages 1, 2 with the gradient offload: the model's unit hooks ---------------- */

static void z12_fetch(ModelShards *s, Model *m, int64_t u) { (void)s, (void)m, (void)u; } /* full weights */

/* unit u's elements [off, off + n) of the flat vector, and their part [a, b) inside this
 * rank's slice [lo, hi) (a == b: none) */
static void z12_unit(const ZeroOpt *z, const ModelConfig *c, int64_t u, int64_t *off, int64_t *n, int64_t *a,
                     int64_t *b) {
    ul_param_unit(c, u, off, n);
    *a = *off > z->lo ? *off : z->lo;
    *b = *off + *n < z->hi ? *off + *n : z->hi;
    if (*b < *a) *b = *a;
}

static void z12_grad_begin(ModelShards *s, Model *m, int64_t u) {
    ZeroOpt *z = zopt(s);
    int64_t off, n, a, b;
    z12_unit(z, &m->c, u, &off, &n, &a, &b);
    open_unit(z);
    z->k->zero(z->gopen, F32B(n));
    /* the sum so far of this rank's slice part, once over the replicas (the all-reduce adds the rest) */
    if (host_so_far(z, u) && z->rep_rank == 0 && b > a)
        z->k->upload(z->gopen + (a - off), z->hgrad + (a - z->lo), F32B(b - a));
    ul_tensors_bind_unit(&m->G, &m->c, u, z->gopen, sizeof(float));
}

/* the unit's gradients summed over every rank (what stage 1 all-reduces and stage 2 reduce-
 * scatters, by the unit), the part inside this rank's slice to host */
static void z12_grad_end(ModelShards *s, Model *m, int64_t u) {
    ZeroOpt *z = zopt(s);
    int64_t off, n, a, b;
    z12_unit(z, &m->c, u, &off, &n, &a, &b);
    drain_grads(z);
    z->dev_world->ops->allreduce_sum(z->dev_world, z->gopen, n, UL_F32);
    set_pending(z, u, z->gopen + (a - off), z->hgrad + (a - z->lo), b - a);
}

/* the updated master slice -> the act slice the gathers read; the gathered units are stale */
static void z3_publish(ZeroOpt *z) {
    const KernelOps *k = z->k;
    if (!z->offload) {
        k->to_act(z->wsl, z->master, z->per);
    } else { /* uploaded through the unit gradient buffer (free between steps), umax elements at a time;
                with the weights in host memory converted in a gathered-unit buffer and downloaded */
        for (int b = 0; b < 2 && z->param_host; b++) k->event_wait(UL_STREAM_COMPUTE, z->ev_wcopy[b]);
        for (int64_t c0 = 0; c0 < z->per; c0 += z->umax) {
            int64_t n = z->per - c0 < z->umax ? z->per - c0 : z->umax;
            k->upload(z->gbuf, z->master + c0, F32B(n));
            k->to_act(z->param_host ? z->wbuf[0] : AOFF(z, z->wsl, c0), z->gbuf, n);
            if (z->param_host) k->download(AOFF(z, z->wsl, c0), z->wbuf[0], (size_t)n * k->act_bytes);
        }
    }
    z->wunit[0] = z->wunit[1] = -1;
}

/* dst[0 : n) (optimizer memory: host with offload, else backend) = src (host) */
static void put(const ZeroOpt *z, float *dst, const float *src, int64_t n) {
    if (z->offload) {
        if (dst != src) memcpy(dst, src, F32B(n)); /* src may be the host state itself (a resume) */
    } else {
        z->k->upload(dst, src, F32B(n));
    }
}


/* ---------------- all stages ---------------- */

/* The gradient offload's events and per-unit flags, for ngu units. */
static void grad_offload_init(ZeroOpt *z, int64_t ngu) {
    const KernelOps *k = z->k;
    z->ngu = ngu;
    z->ev_gdone = k->event_create();
    for (int b = 0; b < 2; b++) {
        z->ev_gfree[b] = k->event_create();
        k->event_record(z->ev_gfree[b], UL_STREAM_COPY); /* the first waits have something to wait for */
    }
    z->gfresh = ul_calloc((size_t)ngu, 1);
    z->gss = ul_calloc((size_t)ngu, sizeof(double));
}

void zero_init(ZeroOpt *z, int stage, int offload, int64_t offload_chunk, int64_t grad_units, int offload_params,
               Model *m, const Mesh *mesh) {
    UL_ASSERT(stage >= 0 && stage <= 3, "zero stage %d", stage);
    UL_ASSERT((stage == 3) == (m->wact == NULL), "zero stage %d: the model must be made %s", stage,
              stage == 3 ? "sharded (ModelMemOpts.sharded)" : "with its parameters");
    UL_ASSERT(!offload || stage >= 1, "optimizer offload needs a ZeRO stage >= 1");
    memset(z, 0, sizeof *z);
    const KernelOps *k = m->k;
    z->stage = stage;
    z->offload = offload;
    z->k = k;
    z->n = m->n_params;
    z->nt = ul_param_tensor_count(&m->c);
    z->pinfo = ul_malloc((size_t)z->nt * sizeof(ParamInfo));
    for (int64_t i = 0; i < z->nt; i++) ul_param_info(&m->c, i, &z->pinfo[i]);
    z->S = stage ? mesh->shard_g.size : 1;
    z->q = stage ? mesh->shard_g.rank : 0;
    z->dev_shard = mesh->dev_shard;
    z->dev_world = mesh->dev_world;
    z->rep_rank = mesh->rep_g.rank;
    int64_t S = z->S, q = z->q;
    z->nu = stage == 3 ? ul_param_unit_count(&m->c) : 1;
    z->units = ul_calloc((size_t)z->nu, sizeof(ZeroUnit));
    for (int64_t u = 0; u < z->nu; u++) {
        ZeroUnit *un = &z->units[u];
        if (stage == 3)
            ul_param_unit(&m->c, u, &un->off, &un->numel);
        else
            un->numel = z->n;
        un->per = (un->numel + S - 1) / S;
        un->so = z->per;
        z->per += un->per;
        if (S * un->per > z->umax) z->umax = S * un->per;
    }
    z->n_pad = S * z->per;
    z->gpend = -1;
    if (stage == 3 && offload) { /* gradient offload: units [0, gu_host) */
        z->gu_host = grad_units < 0 || grad_units > z->nu ? z->nu : grad_units;
        z->so_host = z->gu_host < z->nu ? z->units[z->gu_host].so : z->per;
    }
    if (stage == 3) {
        z->lo = z->hi = 0; /* no single range: the units' chunks */
    } else {
        z->lo = q * z->per < z->n ? q * z->per : z->n;
        z->hi = (q + 1) * z->per < z->n ? (q + 1) * z->per : z->n;
    }
    /* the optimizer's buffers: rows of the plan's table (memory/plan.h, the model's copy),
     * carved from one allocation per arena */
    const PlanTable *tab = &m->tab;
    plan_arenas_alloc(tab, k, PA_OPT, PA_OPT_HOST, z->arena);
#define ZBUF(id, i) plan_buf(tab, z->arena, PB_##id, (i))
    UL_ASSERT(tab->buf[PB_OPT_M1].numel == (stage ? z->per : z->n) &&
                  (stage < 3 || tab->buf[PB_OPT_WBUF].numel == z->umax) &&
                  plan_arena_host(tab->buf[PB_OPT_M1].arena) == offload,
              "zero stage %d: the memory plan is for another optimizer layout (%lld elements per rank, not %lld)",
              stage, (long long)tab->buf[PB_OPT_M1].numel, (long long)(stage ? z->per : z->n));
    if (stage == 0) { /* replicated: the model's master, full moments */
        z->master = m->params;
        z->m1 = ZBUF(OPT_M1, 0); /* [n] */
        z->m2 = ZBUF(OPT_M2, 0); /* [n] */
        z->bytes.weights = m->n_alloc * (int64_t)k->act_bytes;
        z->bytes.master = k->act_bytes == sizeof(float) ? 0 : F32B(z->n); /* on the CPU the act copy IS the master */
        z->bytes.grads = F32B(m->n_alloc);
        z->bytes.moments = 2 * F32B(z->n);
        return;
    }
    /* stages 1, 2: the model's vectors come padded to n_pad from the plan (memory/plan.h) */
    UL_ASSERT(stage == 3 || m->n_alloc == z->n_pad, "zero stage %d: the model's vectors have %lld elements, not %lld",
              stage, (long long)m->n_alloc, (long long)z->n_pad);
    z->master = ZBUF(OPT_MASTER, 0); /* [per], host with offload */
    z->m1 = ZBUF(OPT_M1, 0);         /* [per] */
    z->m2 = ZBUF(OPT_M2, 0);         /* [per] */
    if (offload) {
        z->gchunk = plan_offload_chunk(z->per, offload_chunk, &z->nbuf);
        UL_ASSERT(tab->buf[PB_OPT_GSTAGE].numel == z->gchunk && tab->buf[PB_OPT_GSTAGE].count == z->nbuf,
                  "zero: the memory plan's gradient staging is not [%lld] x %d", (long long)z->gchunk, z->nbuf);
        for (int b = 0; b < z->nbuf; b++) {
            z->h_g[b] = ZBUF(OPT_GSTAGE, b); /* [gchunk] */
            z->ev_c0[b] = k->event_create();
            z->ev_c1[b] = k->event_create();
        }
        z->ev_grad = k->event_create();
    }
    z->gslice = ZBUF(OPT_GSLICE, 0); /* [per - so_host]: stage >= 2 or offload, else NULL; [per] without
                                        the gradient offload of stage 3 */
    if (stage == 3) {
        z->param_host = offload_params && offload && S == 1;
        UL_ASSERT(plan_arena_host(tab->buf[PB_OPT_WSL].arena) == z->param_host &&
                      (z->per > z->so_host ? tab->buf[PB_OPT_GSLICE].numel == z->per - z->so_host : !z->gslice) &&
                      (z->gu_host ? tab->buf[PB_OPT_HGRAD].numel == z->so_host : !tab->buf[PB_OPT_HGRAD].present),
                  "zero stage 3: the memory plan is for another parameter or gradient offload (%lld units' "
                  "gradients on the host)", (long long)z->gu_host);
        z->wsl = ZBUF(OPT_WSL, 0); /* [per] act (param_host: pinned host) */
        if (z->param_host) {
            for (int b = 0; b < 2; b++) {
                z->ev_wq[b] = k->event_create();
                z->ev_wcopy[b] = k->event_create();
            }
        }
        for (int b = 0; b < 2; b++) {
            z->wbuf[b] = ZBUF(OPT_WBUF, b); /* [umax] act */
            z->wunit[b] = -1;
        }
        z->gbuf = ZBUF(OPT_GBUF, 0); /* [umax] */
        z->gopen = z->gbuf;
        if (z->gu_host > 0) {
            z->hgrad = ZBUF(OPT_HGRAD, 0); /* [so_host] host */
            z->gbuf2 = ZBUF(OPT_GBUF2, 0); /* [umax], S == 1; else NULL */
            z->gred = ZBUF(OPT_GRED, 0);   /* [umax / S], S > 1; else NULL */
            UL_ASSERT(!z->gbuf2 == (S > 1) && !z->gred == (S == 1), "zero stage 3: the memory plan's gradient offload "
                      "buffers are not for a shard group of %lld", (long long)S);
            grad_offload_init(z, z->nu);
        }
        z->hooks = (ModelShards){z3_fetch, z3_prefetch, z3_grad_begin, z3_grad_end};
        m->shards = &z->hooks;
        z->bytes.weights = (z->per + 2 * z->umax) * (int64_t)k->act_bytes; /* param_host: the act slice on host */
        z->bytes.master = F32B(z->per);
        z->bytes.grads = F32B(z->per - z->so_host + z->umax) + (z->gbuf2 ? F32B(z->umax) : 0) +
                         (z->gred ? F32B(z->umax / S) : 0);
        z->bytes.moments = 2 * F32B(z->per);
        z->bytes.host = offload ? 3 * F32B(z->per) + z->nbuf * F32B(z->gchunk) + F32B(z->so_host) : 0;
        if (z->param_host) z->bytes.host += z->per * (int64_t)k->act_bytes;
        return;
    }
    if (offload && grad_units != 0) { /* the gradient offload: each unit's, this rank's part to host */
        UL_ASSERT(!m->grads, "zero stage %d: the gradient offload needs a model made without gradients "
                  "(ModelMemOpts.sharded 2)", stage);
        z->g12 = 1;
        z->ngu = ul_param_unit_count(&m->c);
        z->gu_host = z->ngu;
        z->so_host = z->hi - z->lo;
        int64_t umaxu = 0; /* the largest unit */
        for (int64_t u = 0; u < z->ngu; u++) {
            int64_t off, n;
            ul_param_unit(&m->c, u, &off, &n);
            if (n > umaxu) umaxu = n;
        }
        z->hgrad = ZBUF(OPT_HGRAD, 0); /* [per] host */
        z->gbuf = ZBUF(OPT_GBUF, 0);   /* [umaxu] */
        z->gbuf2 = ZBUF(OPT_GBUF2, 0); /* [umaxu] */
        UL_ASSERT(z->hgrad && tab->buf[PB_OPT_HGRAD].numel == z->per && tab->buf[PB_OPT_GBUF].numel == umaxu &&
                      tab->buf[PB_OPT_GBUF2].numel == umaxu,
                  "zero stage %d: the memory plan has no gradient offload of [%lld] with units of %lld", stage,
                  (long long)z->per, (long long)umaxu);
        z->gopen = z->gbuf;
        grad_offload_init(z, z->ngu);
        z->hooks = (ModelShards){z12_fetch, z12_fetch, z12_grad_begin, z12_grad_end}; /* no gathers */
        m->shards = &z->hooks;
        z->bytes.grads = 2 * F32B(umaxu); /* the model has none */
        z->bytes.host = F32B(z->per);
    }
    z->act_send = ZBUF(OPT_SEND, 0); /* [per] act; NULL on the CPU (the master slice itself is sent) */
#undef ZBUF
    z->bytes.weights = (m->n_alloc + (z->act_send ? z->per : 0)) * (int64_t)k->act_bytes;
    z->bytes.master = F32B(z->per);
    z->bytes.grads += (m->grads ? F32B(m->n_alloc) : 0) + (z->gslice ? F32B(z->per) : 0);
    z->bytes.moments = 2 * F32B(z->per);
    z->bytes.host += offload ? 3 * F32B(z->per) + z->nbuf * F32B(z->gchunk) : 0; /* master, m, v, gradient staging */
}

void zero_start(ZeroOpt *z, Model *m, const float *hp, const float *hm1, const float *hm2) {
    UL_ASSERT(z->stage == 0, "zero_start: stage %d starts from slices (zero_start_fill / zero_start_slice)", z->stage);
    const KernelOps *k = z->k;
    if (hp && hp != m->params) model_set_params(m, hp);
    else if (hp) model_params_updated(m);
    if (hm1 && hm1 != z->m1) k->upload(z->m1, hm1, F32B(z->n));
    if (hm2 && hm2 != z->m2) k->upload(z->m2, hm2, F32B(z->n));
}

void zero_clear_grads(ZeroOpt *z, Model *m) {
    if (z->gfresh) memset(z->gfresh, 1, (size_t)z->ngu); /* the host gradients: the first arrival is copied */
    if (z->stage == 3) {
        if (z->gslice) z->k->zero(z->gslice, F32B(z->per - z->so_host));
    } else if (!z->g12)
        z->k->zero(m->grads, (size_t)m->n_alloc * sizeof(float));
}

/* stages 1, 2: the master slice (act) is all-gathered into every rank's act copy */
static void publish12(ZeroOpt *z, Model *m, Mesh *mesh) {
    const KernelOps *k = z->k;
    const float *src = z->master;
    if (z->offload) {
        k->upload(z->gslice, z->master, F32B(z->per));
        src = z->gslice;
    }
    void *send = (void *)src;
    if (z->act_send) {
        k->to_act(z->act_send, src, z->per);
        send = z->act_send;
    }
    mesh->dev_shard->ops->allgather(mesh->dev_shard, send, m->wact, z->per, act_type(k));
}

/* AdamW by ok on the slice's elements [c0, c1) (offsets in the rank's slice; g[0] is the
 * gradient of element c0): per tensor (its weight-decay flag), on the tensor's intersection
 * with each of this rank's unit chunks and with [c0, c1). Elementwise, so any split of the
 * slice gives the same bits. */
static void adamw_range(const ZeroOpt *z, const KernelOps *ok, const float *g, int64_t c0, int64_t c1,
                        const ZeroHyper *h) {
    for (int64_t u = 0; u < z->nu; u++) {
        const ZeroUnit *un = &z->units[u];
        int64_t lo = un->off + z->q * un->per, end = un->off + un->numel;
        int64_t hi = lo + un->per < end ? lo + un->per : end;
        if (un->so >= c1 || un->so + (hi - lo) <= c0) continue; /* the unit's chunk is outside [c0, c1) */
        for (int64_t i = 0; i < z->nt && lo < hi; i++) {
            const ParamInfo *p = &z->pinfo[i];
            int64_t a = p->offset > lo ? p->offset : lo;
            int64_t b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
            if (a >= b) continue;
            int64_t o0 = un->so + a - lo, o1 = un->so + b - lo; /* the piece in the slice */
            if (o0 < c0) o0 = c0;
            if (o1 > c1) o1 = c1;
            if (o0 >= o1) continue;
            ok->adamw(z->master + o0, g + (o0 - c0), z->m1 + o0, z->m2 + o0, o1 - o0, (float)h->lr, (float)h->beta1,
                      (float)h->beta2, (float)h->eps, p->decay ? (float)h->weight_decay : 0.f, h->t);
        }
    }
}

/* Offload: device fp32 src[0, n) reaches the CPU in chunks of gchunk elements through the
 * pinned buffers h_g, after the compute stream's event `ready`: chunk c + 1 is copied on the
 * copy stream while fn runs on chunk c (h[0] is element c0 of src); the CPU reads a buffer
 * only after waiting for its copy's end event (event_elapsed waits for it), and a buffer is
 * refilled only after fn (synchronous) is done with its previous chunk. */
typedef void (*ChunkFn)(ZeroOpt *z, const float *h, int64_t c0, int64_t c1, void *ctx);

static void queue_chunk(ZeroOpt *z, const float *src, int64_t n, int64_t c) {
    const KernelOps *k = z->k;
    int b = (int)(c % z->nbuf);
    int64_t c0 = c * z->gchunk, len = n - c0 < z->gchunk ? n - c0 : z->gchunk;
    k->event_record(z->ev_c0[b], UL_STREAM_COPY);
    k->copy_async(z->h_g[b], src + c0, F32B(len), 1);
    k->event_record(z->ev_c1[b], UL_STREAM_COPY);
}

static void stream_to_host(ZeroOpt *z, const float *src, int64_t n, void *ready, ChunkFn fn, void *ctx) {
    const KernelOps *k = z->k;
    const int64_t C = z->gchunk, nc = (n + C - 1) / C;
    if (nc == 0) return;
    k->event_wait(UL_STREAM_COPY, ready);
    queue_chunk(z, src, n, 0);
    for (int64_t c = 0; c < nc; c++) {
        /* with 2 buffers chunk c + 1 goes into the buffer of chunk c - 1, whose fn is done */
        if (c + 1 < nc && z->nbuf == 2) queue_chunk(z, src, n, c + 1);
        int b = (int)(c % z->nbuf);
        int64_t c0 = c * C, c1 = n - c0 < C ? n : c0 + C;
        (void)k->event_elapsed(z->ev_c0[b], z->ev_c1[b]); /* returns once the copy has ended */
        fn(z, z->h_g[b], c0, c1, ctx);
        if (c + 1 < nc && z->nbuf == 1) queue_chunk(z, src, n, c + 1);
    }
}

typedef struct {
    int64_t from; /* slice offset of the streamed range's first element */
    const ZeroHyper *h;
} AdamwCtx;

static void adamw_chunk(ZeroOpt *z, const float *h, int64_t c0, int64_t c1, void *ctx) {
    const AdamwCtx *a = ctx;
    adamw_range(z, ul_kernels_cpu(), h, a->from + c0, a->from + c1, a->h);
}

/* the clipped device gradients g of the slice's [from, to) -> the CPU AdamW, chunk by chunk */
static void adamw_offload(ZeroOpt *z, const float *g, int64_t from, int64_t to, const ZeroHyper *h) {
    AdamwCtx a = {from, h};
    z->k->event_record(z->ev_grad, UL_STREAM_COMPUTE);
    stream_to_host(z, g, to - from, z->ev_grad, adamw_chunk, &a);
}

/* The pending unit's reduced gradients (device: its sum so far over the step, grad_begin put
 * the earlier part in) -> its part of the host gradients, copied straight into them (pinned);
 * its sum of squares is recorded (the norm from the units as they arrive). Then its device
 * buffer is free (ev_gfree). */
static void drain_grads(ZeroOpt *z) {
    if (z->gpend < 0) return;
    const KernelOps *k = z->k;
    int64_t u = z->gpend, n = z->gpend_n;
    float *acc = z->gpend_dst; /* [n] host */
    k->event_wait(UL_STREAM_COPY, z->ev_gdone);
    k->event_record(z->ev_c0[0], UL_STREAM_COPY);
    k->copy_async(acc, z->gpend_src, F32B(n), 1);
    k->event_record(z->ev_c1[0], UL_STREAM_COPY);
    (void)k->event_elapsed(z->ev_c0[0], z->ev_c1[0]); /* returns once the copy has ended */
    z->gfresh[u] = 0;
    z->gss[u] = ul_kernels_cpu()->sumsq(acc, n); /* the padding is zero */
    k->event_record(z->ev_gfree[z->gpend_b], UL_STREAM_COPY);
    z->gpend = -1;
}

double zero_step(ZeroOpt *z, Model *m, Mesh *mesh, const ZeroHyper *h, int update) {
    const KernelOps *k = z->k;
    int64_t own = z->stage == 3 ? z->per : z->hi - z->lo; /* the slice's elements to clip and update */
    int64_t nh = z->so_host; /* of which the first nh are host memory (gradient offload), the rest on the device */
    float *g; /* this rank's reduced gradient slice [own - nh] (backend memory), element nh first */
    double gn;
    if (z->g12) { /* summed over the world unit by unit, this rank's slice on the host already */
        drain_grads(z);
        double ss = 0;
        for (int64_t u = 0; u < z->ngu; u++) {
            UL_ASSERT(!z->gfresh[u], "zero_step: unit %lld's gradients did not arrive", (long long)u);
            ss += z->gss[u];
        }
        mesh->shard_g.ops->allreduce_sum(&mesh->shard_g, &ss, 1, UL_F64); /* not over replicas: same slices */
        gn = sqrt(ss);
        g = NULL;
    } else if (z->stage <= 1) {
        mesh->dev_world->ops->allreduce_sum(mesh->dev_world, m->grads, z->n, UL_F32);
        gn = sqrt(k->sumsq(m->grads, z->n));
        g = m->grads + z->lo;
    } else { /* stage 3: reduce-scattered per unit during the backward already */
        drain_grads(z); /* the last unit to host */
        if (z->stage == 2)
            mesh->dev_shard->ops->reduce_scatter_sum(mesh->dev_shard, m->grads, z->gslice, z->n_pad, UL_F32);
        if (mesh->dev_rep->size > 1 && own > nh)
            mesh->dev_rep->ops->allreduce_sum(mesh->dev_rep, z->gslice, own - nh, UL_F32);
        double ss = own > nh ? k->sumsq(z->gslice, own - nh) : 0; /* the padding is zero */
        if (nh > 0) { /* the host units' sums of squares, taken as they arrived */
            if (mesh->rep_g.size > 1) { /* summed over the replicas first */
                mesh->rep_g.ops->allreduce_sum(&mesh->rep_g, z->hgrad, nh, UL_F32);
                ss += ul_kernels_cpu()->sumsq(z->hgrad, nh);
            } else {
                for (int64_t u = 0; u < z->gu_host; u++) {
                    UL_ASSERT(!z->gfresh[u], "zero_step: unit %lld's gradients did not arrive", (long long)u);
                    ss += z->gss[u];
                }
            }
        }
        mesh->shard_g.ops->allreduce_sum(&mesh->shard_g, &ss, 1, UL_F64); /* not over replicas: same slices */
        gn = sqrt(ss);
        g = z->gslice;
    }
    if (h->clip > 0 && gn > h->clip) {
        float f = (float)(h->clip / (gn + 1e-6));
        if (own > nh) k->scale(g, own - nh, f);
        if (nh > 0) ul_kernels_cpu()->scale(z->hgrad, nh, f);
    }
    if (!update) {
        if (z->stage == 0) model_params_updated(m);
        return gn;
    }
    if (z->offload) {
        if (nh > 0) adamw_range(z, ul_kernels_cpu(), z->hgrad, 0, nh, h);
        adamw_offload(z, g, nh, own, h);
    } else {
        adamw_range(z, k, g, 0, own, h);
    }
    if (z->stage == 0) {
        model_params_updated(m);
        return gn;
    }
    if (z->stage == 3) { /* the next forward gathers the new weights unit by unit */
        z3_publish(z);
        return gn;
    }
    publish12(z, m, mesh);
    return gn;
}

int64_t zero_slice_pieces(const ZeroOpt *z, int64_t q, int64_t a, int64_t b, ZeroPiece *out) {
    int64_t k = 0;
    for (int64_t u = 0; u < z->nu; u++) {
        const ZeroUnit *un = &z->units[u];
        int64_t lo = un->off + q * un->per, end = un->off + un->numel;
        int64_t hi = lo + un->per < end ? lo + un->per : end;
        int64_t x = lo > a ? lo : a, y = hi < b ? hi : b;
        if (x < y) out[k++] = (ZeroPiece){x, y, un->so + x - lo};
    }
    return k;
}

/* Stages >= 1: the master slice is set; the weights go to the model (stages 1, 2: all-gathered
 * into its act copy, the model has no fp32 master of its own; stage 3: the act slice). */
static void publish_start(ZeroOpt *z, Model *m, Mesh *mesh) {
    if (z->stage == 3) {
        z3_publish(z);
        return;
    }
    publish12(z, m, mesh);
}

void zero_start_slice(ZeroOpt *z, Model *m, Mesh *mesh, const float *sp, const float *sm1, const float *sm2) {
    UL_ASSERT(z->stage >= 1, "zero_start_slice: stage %d has no slices", z->stage);
    put(z, z->master, sp, z->per);
    put(z, z->m1, sm1, z->per);
    put(z, z->m2, sm2, z->per);
    publish_start(z, m, mesh);
}

int64_t zero_start_fill(ZeroOpt *z, Model *m, Mesh *mesh, ZeroFillFn fill, void *ctx) {
    UL_ASSERT(z->stage >= 1, "zero_start_fill: stage %d has no slices", z->stage);
    /* the moments stay as allocated: zero */
    float *dst = z->offload ? z->master : ul_malloc(F32B(z->per)); /* [per] host: the master itself, or a staging */
    for (int64_t u = 0; u < z->nu; u++) { /* this rank's chunk of each unit, then its zero padding */
        const ZeroUnit *un = &z->units[u];
        int64_t a = un->off + z->q * un->per, end = un->off + un->numel;
        int64_t b = a + un->per < end ? a + un->per : end, got = b > a ? b - a : 0;
        if (got) fill(ctx, a, b, dst + un->so);
        memset(dst + un->so + got, 0, F32B(un->per - got));
    }
    int64_t staging = 0;
    if (!z->offload) {
        put(z, z->master, dst, z->per); /* upload reads pageable memory before it returns */
        free(dst);
        staging = (int64_t)F32B(z->per);
    }
    publish_start(z, m, mesh);
    return staging;
}

typedef struct {
    const ModelConfig *c;
    uint64_t seed;
} RandomFill;

static void random_fill(void *ctx, int64_t a, int64_t b, float *out) {
    const RandomFill *r = ctx;
    model_random_range(r->c, r->seed, a, b, out);
}

int64_t zero_start_random(ZeroOpt *z, Model *m, Mesh *mesh, uint64_t seed) {
    RandomFill r = {&m->c, seed};
    return zero_start_fill(z, m, mesh, random_fill, &r);
}

int64_t zero_host_range(ZeroOpt *z, const Model *m, Mesh *mesh, const int64_t *want, int which, float *const out[3]) {
    const KernelOps *k = z->k;
    if (z->stage == 0) { /* replicated: this rank's own copy */
        const float *src[3] = {m->params, z->m1, z->m2};
        int64_t a = want[0], b = want[1];
        for (int i = 0; i < 3; i++)
            if ((which >> i & 1) && b > a) k->download(out[i], src[i] + a, F32B(b - a));
        return 0;
    }
    const int64_t S = z->S, q = z->q, ma = want[2 * q], mb = want[2 * q + 1];
    const float *src[3] = {z->master, z->m1, z->m2};
    ZeroPiece *pc = ul_malloc((size_t)z->nu * sizeof *pc);     /* [nu] */
    ZeroPiece *sp = ul_malloc((size_t)(S * z->nu) * sizeof *sp); /* [S nu]: what this rank sends, in send order */
    UlHostMsg *snd = ul_malloc((size_t)(S * z->nu) * sizeof *snd), *rcv = ul_malloc((size_t)(S * z->nu) * sizeof *rcv);
    int64_t ns = 0, nsend = 0; /* pieces sent, their elements */
    for (int64_t p = 0; p < S; p++) { /* what p wants of this rank's slice, in flat order */
        int64_t np = zero_slice_pieces(z, q, want[2 * p], want[2 * p + 1], pc);
        for (int64_t j = 0; j < np; j++, ns++) {
            sp[ns] = pc[j];
            snd[ns].peer = (int)p;
            nsend += pc[j].end - pc[j].begin;
        }
    }
    /* without offload the slice is device memory: only the pieces sent are staged, packed */
    float *tmp = z->offload || nsend == 0 ? NULL : ul_malloc(F32B(nsend)); /* [nsend] host staging of one vector */
    for (int i = 0; i < 3; i++) {
        if (!(which >> i & 1)) continue;
        int64_t at = 0;
        for (int64_t j = 0; j < ns; j++) {
            int64_t len = sp[j].end - sp[j].begin;
            if (tmp) k->download(tmp + at, src[i] + sp[j].so, F32B(len));
            snd[j].buf = tmp ? (void *)(tmp + at) : (void *)(src[i] + sp[j].so);
            snd[j].bytes = F32B(len);
            at += len;
        }
        int64_t nr = 0;
        for (int64_t p = 0; p < S; p++) { /* what p holds of this rank's range, in flat order */
            int64_t np = zero_slice_pieces(z, p, ma, mb, pc);
            for (int64_t j = 0; j < np; j++)
                rcv[nr++] = (UlHostMsg){(int)p, out[i] + (pc[j].begin - ma), F32B(pc[j].end - pc[j].begin)};
        }
        ul_mpi_exchange(&mesh->shard_g, snd, ns, rcv, nr);
    }
    int64_t staging = tmp ? (int64_t)F32B(nsend) : 0;
    free(snd);
    free(rcv);
    free(sp);
    free(pc);
    free(tmp);
    return staging;
}

void zero_free(ZeroOpt *z) {
    const KernelOps *k = z->k;
    if (!k) return;
    plan_arenas_free(k, PA_OPT, PA_OPT_HOST, z->arena); /* a host free waits for the copies first */
    if (z->offload) {
        for (int b = 0; b < z->nbuf; b++) {
            k->event_destroy(z->ev_c0[b]);
            k->event_destroy(z->ev_c1[b]);
        }
        k->event_destroy(z->ev_grad);
        if (z->hgrad) {
            k->event_destroy(z->ev_gdone);
            for (int b = 0; b < 2; b++) k->event_destroy(z->ev_gfree[b]);
        }
    }
    if (z->param_host) {
        for (int b = 0; b < 2; b++) {
            k->event_destroy(z->ev_wq[b]);
            k->event_destroy(z->ev_wcopy[b]);
        }
    }
    free(z->gfresh);
    free(z->gss);
    free(z->units);
    free(z->pinfo);
    memset(z, 0, sizeof *z);
}
