#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "formats/hf_model.h"
#include "memory/plan.h"

/* element offset into an act buffer */
#define AO(p, n) ((void *)((char *)(p) + (size_t)(n) * m->k->act_bytes))
/* ZeRO-3 unit hooks (ModelShards); nothing without sharding */
#define SHARDS(fn, u)                                          \
    do {                                                       \
        if (m->shards) m->shards->fn(m->shards, m, (int64_t)(u)); \
    } while (0)

/* copy i of a buffer of the model's arenas (memory/plan.h: the table decides where) */
#define BUF(id, i) plan_buf(&m->tab, m->arena, PB_##id, (int64_t)(i))

/* a saved-activation store of n items of `bytes` (memory/offload.h) on the table's rows dev
 * (device slots) and host (the offloaded items) */
static void store_init(Model *m, ActStore *s, int64_t n, size_t bytes, PlanBufId dev, PlanBufId host) {
    actstore_init(s, m->k, n, bytes, m->offload, plan_buf(&m->tab, m->arena, dev, 0),
                  (size_t)plan_buf_stride(&m->tab, dev), plan_buf(&m->tab, m->arena, host, 0),
                  (size_t)plan_buf_stride(&m->tab, host));
}

static void acts_bind(Model *m, LayerActs *a, int64_t l) {
    a->xn1 = BUF(XN1, l);
    a->rstd1 = BUF(RSTD1, l);
    a->qkv = BUF(QKV, l);
    a->qkn = BUF(QKN, l);     /* qk_norm families; else NULL */
    a->rstdq = BUF(RSTDQ, l);
    a->qkvh = BUF(QKVH, l);   /* == qkv when sp == 1 */
    a->oh = BUF(OH, l);       /* NULL with recompute == 2: the kept ones (m->keep_oh, keep_lse) per layer */
    a->lse = BUF(LSE, l);
    a->o = BUF(O, l);         /* == oh when sp == 1 */
    a->xmid = BUF(XMID, l);
    a->xn2 = BUF(XN2, l);
    a->rstd2 = BUF(RSTD2, l);
    a->g = BUF(G, l);         /* NULL with TiledMLP: no [t, I] activations (layer_fwd / layer_bwd) */
    a->u = BUF(U, l);
    a->h = BUF(H, l);
}

/* The plan of a model made from these options alone (tests, eval): the same function train's
 * plan comes from (memory/plan.c), for the parts the model's arenas depend on. */
static void model_plan(const ModelConfig *c, const KernelOps *k, int64_t S, int64_t T_max, const ModelMemOpts *o,
                       Plan *p) {
    PlanInput in;
    plan_input_default(&in);
    in.c = *c;
    in.sp = S;
    in.seq_len = T_max;
    in.act_bytes = (int64_t)k->act_bytes;
    in.cuda = k->on_device;
    in.checkpoint = o->recompute;
    in.mlp_tile = o->mlp_tile;
    in.offload_checkpoints = o->offload > 0;
    in.offload_layers = o->offload > 0 ? o->offload : -1;
    in.ckpt_every = o->ckpt_every;
    in.zero = o->sharded ? 3 : 0; /* sharded 2 (ZeRO 1, 2 with the gradient offload) comes with train's plan */
    in.eval = 1; /* its arena is allocated by model_eval only */
    plan_compute(&in, p);
}

void model_init(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max, int recompute) {
    model_init_ex(m, c, k, sp_g, T_max, recompute, 0);
}

void model_init_ex(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max, int recompute,
                   int64_t mlp_tile) {
    ModelMemOpts o = {recompute, mlp_tile, 0, 0, 1, NULL};
    model_init_opts(m, c, k, sp_g, T_max, &o);
}

/* Every buffer here is a row of the plan's table (memory/plan.h), carved from the model's
 * arenas: two backend allocations at most (device, pinned host), exactly the plan's bytes
 * (model_eval adds the eval arena at its first call). */
void model_init_opts(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max,
                     const ModelMemOpts *o) {
    int recompute = o->recompute;
    int64_t mlp_tile = o->mlp_tile;
    memset(m, 0, sizeof *m);
    m->c = *c;
    m->k = k;
    m->sp_g = sp_g;
    m->sp = sp_g ? sp_g->size : 1;
    m->sp_rank = sp_g ? sp_g->rank : 0;
    m->recompute = recompute;
    UL_ASSERT(recompute >= 0 && recompute <= 2, "recompute mode %d", recompute);
    UL_ASSERT(o->offload <= 0 || recompute >= 1, "checkpoint offload needs recompute >= 1");
    m->offload = o->offload > 0 ? o->offload : 0;
    int64_t H = c->num_heads, Hkv = c->num_kv_heads, d = c->head_dim, D = c->hidden_size;
    int64_t V = c->vocab_size, L = c->num_layers, S = m->sp;
    UL_ASSERT(T_max % S == 0, "T_max %lld not a multiple of sp", (long long)T_max);
    m->T_max = T_max;
    m->t_max = T_max / S;
    int64_t t = m->t_max;
    m->mlp_tile = plan_mlp_tile(mlp_tile, t);
    m->loss_tile = plan_loss_tile(V, t);

    /* the plan (train's, or one of these options): one allocation per arena, every pointer
     * from its table */
    Plan *own = NULL;
    const Plan *plan = o->plan;
    if (!plan) {
        own = ul_malloc(sizeof *own);
        model_plan(c, k, S, T_max, o, own);
        plan = own;
    }
    m->ck_every = plan_ckpt_every(o->ckpt_every, L);
    UL_ASSERT(m->ck_every == 1 || recompute == 1, "checkpointing every %lld layers needs recompute 1",
              (long long)m->ck_every);
    int64_t nck = plan_ckpt_items(m->ck_every, L); /* the kept layer inputs */
    UL_ASSERT(plan->T == T_max && plan->t == t && plan->mlp_tile == m->mlp_tile && plan->loss_tile == m->loss_tile &&
                  plan->ckpt_every == m->ck_every && plan->tab.buf[PB_XIN].elem == (int64_t)k->act_bytes &&
                  plan->tab.buf[PB_XIN].count == actstore_dev_slots(nck, m->offload < nck ? m->offload : nck),
              "model_init: the memory plan is for other options (T %lld, tile %lld, checkpoint every %lld)",
              (long long)plan->T, (long long)plan->mlp_tile, (long long)plan->ckpt_every);
    m->tab = plan->tab;
    free(own);
    plan_arenas_alloc(&m->tab, k, PA_MODEL, PA_MODEL_HOST, m->arena); /* the optimizer's are zero_init's */

    exchange_init(&m->x, k, sp_g, H, Hkv, d, BUF(XCHG, 0));
    m->Hq_l = m->x.Hq_l;
    m->Hkv_l = m->x.Hkv_l;
    m->W_l = m->x.W_l;

    /* the flat vectors: none with ZeRO-3 (the parameters live in optim/zero.c's units), no
     * fp32 master with ZeRO >= 1 on CUDA (the optimizer's slice is), padded for ZeRO 1, 2 */
    m->n_params = ul_param_numel(c);
    m->n_alloc = m->tab.buf[PB_WACT].present ? m->tab.buf[PB_WACT].numel : 0;
    m->params = BUF(PARAMS, 0);
    m->grads = BUF(GRADS, 0); /* none with the gradient offload of ZeRO 1, 2 (sharded 2): the optimizer's units */
    m->wact = BUF(WACT, 0); /* == params on the CPU */
    UL_ASSERT(!o->sharded == !!m->grads && (o->sharded == 1) == !m->wact && (o->sharded == 1 || m->n_alloc >= m->n_params),
              "model_init: the memory plan's parameter buffers do not match ModelMemOpts.sharded = %d", o->sharded);
    ul_tensors_bind(&m->P, c, m->wact, k->act_bytes);
    ul_tensors_bind(&m->G, c, m->grads, sizeof(float));

    double *invd = ul_malloc((size_t)(d / 2) * sizeof(double));
    float *invf = ul_malloc((size_t)(d / 2) * sizeof(float));
    ul_rope_inv_freq(c, invd);
    for (int64_t i = 0; i < d / 2; i++) invf[i] = (float)invd[i];
    m->inv_freq = BUF(INV_FREQ, 0);
    k->upload(m->inv_freq, invf, (size_t)(d / 2) * sizeof(float));
    free(invd);
    free(invf);

    store_init(m, &m->xin, nck, (size_t)(t * D) * k->act_bytes, PB_XIN, PB_XIN_HOST);
    if (m->ck_every > 1) { /* a recomputed segment's inputs after its first */
        m->xseg = ul_calloc((size_t)(m->ck_every - 1), sizeof(void *));
        for (int64_t i = 0; i < m->ck_every - 1; i++) m->xseg[i] = BUF(XSEG, i); /* [t, D] */
    }
    int64_t nacts = recompute ? 1 : L;
    m->acts = ul_calloc((size_t)nacts, sizeof(LayerActs));
    for (int64_t l = 0; l < nacts; l++) acts_bind(m, &m->acts[l], l);
    if (recompute == 2) { /* keep every layer's attention output and lse: backward skips the attention */
        store_init(m, &m->keep_oh, L, (size_t)(T_max * m->Hq_l * d) * k->act_bytes, PB_KEEP_OH, PB_KEEP_OH_HOST);
        store_init(m, &m->keep_lse, L, (size_t)(T_max * m->Hq_l) * sizeof(float), PB_KEEP_LSE, PB_KEEP_LSE_HOST);
    }
    m->xnf = BUF(XNF, 0); /* with recompute: in acts[0].xn1, rstd1 (memory/plan.c) */
    m->rstdf = BUF(RSTDF, 0);
    m->logits = BUF(LOGITS, 0);
    m->dres = BUF(DRES, 0);
    m->dxn = BUF(DXN, 0);
    m->tg = BUF(TG, 0); /* TiledMLP: the one tile of MLP activations, forward and (recomputed) backward */
    m->tu = BUF(TU, 0);
    m->th = BUF(TH, 0);
    /* with sp > 1, dout [t, H d] lives in dqkv's buffer: it is dead once exchange_dout has
     * packed it, before exchange_dqkv writes dqkv (attn_bwd); with sp == 1 doh and dqkvh are
     * dout and dqkv; with recompute dqkv lives in acts[0].xmid and (sp == 1) dout in acts[0].xn2,
     * dead from the attention's backward on (layer_bwd; memory/plan.c) */
    m->dqkv = BUF(DQKV, 0);
    m->dout = BUF(DOUT, 0);
    m->doh = BUF(DOH, 0);
    m->dqkvh = BUF(DQKVH, 0);
    m->d_tok = BUF(TOK, 0);
    m->d_lab = BUF(LAB, 0);
    m->d_pos = BUF(POS, 0);
    m->d_cu = BUF(CU, 0);
    m->d_cul = BUF(CUL, 0);
    m->cu_local = ul_malloc((size_t)(t + 2) * sizeof(int64_t));
    m->acc = BUF(ACC, 0); /* [CE sum, valid count], read by model_loss_take */
    k->zero(m->acc, 2 * sizeof(double));
}

void model_set_timing(Model *m, int on) {
    phase_free(&m->t_attn);
    phase_free(&m->t_loss);
    phase_init(&m->t_attn, m->k, on);
    phase_init(&m->t_loss, m->k, on);
}

void model_free(Model *m) {
    phase_free(&m->t_attn);
    phase_free(&m->t_loss);
    const KernelOps *k = m->k;
    free(m->acts);
    plan_arenas_free(k, PA_MODEL, PA_MODEL_HOST, m->arena); /* a host free waits for the stores' copies first */
    actstore_free(&m->keep_oh);
    actstore_free(&m->keep_lse);
    actstore_free(&m->xin);
    plan_arenas_free(k, PA_EVAL, PA_EVAL, m->arena);
    free(m->xseg);
    free(m->logits_host);
    free(m->cu_local);
    ul_tensors_free(&m->P);
    ul_tensors_free(&m->G);
    memset(m, 0, sizeof *m);
}

double model_offload_seconds(Model *m) {
    return actstore_copy_seconds(&m->xin) + (m->recompute == 2 ? actstore_copy_seconds(&m->keep_oh) +
                                                                     actstore_copy_seconds(&m->keep_lse)
                                                               : 0);
}

void model_params_updated(Model *m) {
    if (m->params && m->wact != (void *)m->params) m->k->to_act(m->wact, m->params, m->n_params);
}

void model_set_params(Model *m, const float *host) {
    UL_ASSERT(m->params, "model_set_params: the fp32 master is sharded (ZeRO: zero_start_fill sets the slices)");
    m->k->upload(m->params, host, (size_t)m->n_params * sizeof(float));
    model_params_updated(m);
}

void model_get_params(const Model *m, float *host) {
    UL_ASSERT(m->params, "model_get_params: the fp32 master is sharded (ZeRO)");
    m->k->download(host, m->params, (size_t)m->n_params * sizeof(float));
}

void model_get_grads(const Model *m, float *host) {
    m->k->download(host, m->grads, (size_t)m->n_params * sizeof(float));
}

int model_load_weights(Model *m, const char *dir, UlError *e) {
    float *host = ul_malloc((size_t)m->n_params * sizeof(float)); /* [n_params] */
    int rc = ul_load_weights(dir, &m->c, host, e);
    if (rc == 0) model_set_params(m, host);
    free(host);
    return rc;
}

void model_random_range(const ModelConfig *c, uint64_t seed, int64_t a, int64_t b, float *out) {
    int64_t n = ul_param_tensor_count(c);
    const float range = (float)c->initializer_range;
    /* element j of the parameter vector is ul_normal_at(seed, j): the same on every rank and
     * for any thread count or range, and parallel (an 8B model is 8e9 draws) */
    for (int64_t i = 0; i < n; i++) {
        ParamInfo pi;
        ul_param_info(c, i, &pi);
        int64_t x = pi.offset > a ? pi.offset : a, y = pi.offset + pi.numel < b ? pi.offset + pi.numel : b;
        if (x >= y) continue;
        float *p = out + (x - a); /* [y - x]: flat elements [x, y) */
        if (pi.kind != UL_P_MAT) { /* norm weights 1, biases 0 (transformers' init) */
            for (int64_t j = 0; j < y - x; j++) p[j] = pi.kind == UL_P_NORM ? 1.0f : 0.0f;
            continue;
        }
        const uint64_t off = (uint64_t)x;
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < y - x; j++) p[j] = range * ul_normal_at(seed, off + (uint64_t)j);
    }
}

void model_init_random(Model *m, uint64_t seed) {
    float *host = ul_malloc((size_t)m->n_params * sizeof(float)); /* [n_params] */
    model_random_range(&m->c, seed, 0, m->n_params, host);
    model_set_params(m, host);
    free(host);
}

/* Document bounds of the local shard alone [offset, offset + t) (the no-exchange control). */
static int64_t local_docs(Model *m, const LocalSeq *s, int64_t t) {
    int64_t n = 0;
    m->cu_local[0] = 0;
    for (int64_t i = 0; i < s->n_docs; i++) {
        int64_t a = s->cu_seqlens[i] - s->offset, b = s->cu_seqlens[i + 1] - s->offset;
        if (a < 0) a = 0;
        if (b > t) b = t;
        if (b > a) m->cu_local[++n] = b;
    }
    m->k->upload(m->d_cul, m->cu_local, (size_t)(n + 1) * sizeof(int64_t));
    return n;
}

/* ---------------- layers ---------------- */

typedef struct {
    int64_t T, t;
    const LocalSeq *s;
    int64_t n_local; /* no_exchange only */
} StepCtx;

/* q, k, v at columns 0, Hq d and (Hq + Hkv) d of one packed buffer of row stride rs (and
 * the same for their gradients); o, dout of row stride Hq d. */
static UlAttention attn_args(const void *qkv, void *dqkv, int64_t rs, void *o, float *lse, const void *dout, int64_t T,
                             int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu, int64_t n_docs, size_t act_bytes) {
#define COL(p, c) ((p) ? (void *)((char *)(p) + (size_t)(c) * act_bytes) : NULL)
    UlAttention a = {.q = qkv, .k = COL(qkv, Hq * d), .v = COL(qkv, (Hq + Hkv) * d), .qs = rs, .ks = rs, .vs = rs,
                     .o = o, .os = Hq * d, .lse = lse, .dout = dout, .dos = Hq * d,
                     .dq = dqkv, .dk = COL(dqkv, Hq * d), .dv = COL(dqkv, (Hq + Hkv) * d), .dqs = rs, .dks = rs, .dvs = rs,
                     .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .cu_seqlens = cu, .n_docs = n_docs,
                     .scale = (float)(1.0 / sqrt((double)d))};
#undef COL
    return a;
}

/* reuse: the attention output and lse of this layer are kept from the forward pass
 * (recompute == 2): the exchange still runs (backward needs q, k, v), the kernel does not. */
static void attn_fwd(Model *m, const StepCtx *sc, LayerActs *a, int reuse) {
    const KernelOps *k = m->k;
    const ModelConfig *c = &m->c;
    int64_t d = c->head_dim, H = c->num_heads, Hkv = c->num_kv_heads, rs = (H + 2 * Hkv) * d;
    if (m->no_exchange) {
        UlAttention at = attn_args(a->qkv, NULL, rs, a->o, a->lse, NULL, sc->t, H, Hkv, d, m->d_cul, sc->n_local,
                                   k->act_bytes);
        if (!reuse) k->attention_fwd(&at);
        return;
    }
    if (m->sp > 1) exchange_qkv(&m->x, sc->t, a->qkv, a->qkvh);
    if (!reuse) { /* the whole sequence for this rank's heads: [T, W_l, d] */
        UlAttention at = attn_args(a->qkvh, NULL, m->W_l * d, a->oh, a->lse, NULL, sc->T, m->Hq_l, m->Hkv_l, d, m->d_cu,
                                   sc->s->n_docs, k->act_bytes);
        phase_begin(&m->t_attn);
        k->attention_fwd(&at);
        phase_end(&m->t_attn);
    }
    if (m->sp > 1) exchange_o(&m->x, sc->t, a->oh, a->o);
}

static void attn_bwd(Model *m, const StepCtx *sc, LayerActs *a) {
    const KernelOps *k = m->k;
    const ModelConfig *c = &m->c;
    int64_t d = c->head_dim, H = c->num_heads, Hkv = c->num_kv_heads, rs = (H + 2 * Hkv) * d;
    if (m->no_exchange) {
        const void *dout = m->dout;
        if (dout == m->dqkv) { /* dout shares dqkv's buffer (sp > 1): move it to doh ([T, Hq_l, d] = [t, H d]) */
            k->copy2d(m->doh, H * d, m->dout, H * d, sc->t, H * d);
            dout = m->doh;
        }
        UlAttention at = attn_args(a->qkv, m->dqkv, rs, a->o, a->lse, dout, sc->t, H, Hkv, d, m->d_cul, sc->n_local,
                                   k->act_bytes);
        k->attention_bwd(&at);
        return;
    }
    if (m->sp > 1) exchange_dout(&m->x, sc->t, m->dout, m->doh);
    UlAttention at = attn_args(a->qkvh, m->dqkvh, m->W_l * d, a->oh, a->lse, m->doh, sc->T, m->Hq_l, m->Hkv_l, d,
                               m->d_cu, sc->s->n_docs, k->act_bytes);
    phase_begin(&m->t_attn);
    k->attention_bwd(&at);
    phase_end(&m->t_attn);
    if (m->sp > 1) exchange_dqkv(&m->x, sc->t, m->dqkvh, m->dqkv);
}

/* SwiGLU MLP of n rows: g, u, h [n, I] (kept for backward, or a tile's scratch);
 * y [n, D] += h wd^T (y already holds the residual). */
static void mlp_fwd_rows(Model *m, const LayerTensors *w, const void *xn2, void *y, int64_t n, void *g, void *u,
                         void *h) {
    const KernelOps *k = m->k;
    int64_t D = m->c.hidden_size, I = m->c.intermediate_size;
    k->matmul(0, 1, n, I, D, 1.f, xn2, D, w->wg, D, 0.f, g, I, 0);
    k->matmul(0, 1, n, I, D, 1.f, xn2, D, w->wu, D, 0.f, u, I, 0);
    k->swiglu_fwd(h, g, u, n * I);
    if (y) k->matmul(0, 1, n, D, I, 1.f, h, I, w->wd, I, 1.f, y, D, 0); /* NULL: g, u, h only (a recompute) */
}

/* Backward of mlp_fwd_rows: dy [n, D] -> dxn2 [n, D] (overwritten), weight grads accumulate.
 * The gradients take the activations' memory, dead once read: g, u, h [n, I] are
 * overwritten by dg, du, dh (no [n, I] buffer of the backward's own). */
static void mlp_bwd_rows(Model *m, const LayerTensors *w, LayerTensors *gw, const void *xn2, const void *dy,
                         void *dxn2, int64_t n, void *g, void *u, void *h) {
    const KernelOps *k = m->k;
    int64_t D = m->c.hidden_size, I = m->c.intermediate_size;
    void *dg = g, *du = u, *dh = h;
    k->matmul(1, 0, D, I, n, 1.f, dy, D, h, I, 1.f, gw->wd, I, 1);  /* dwd += dy^T h (h's last reader) */
    k->matmul(0, 0, n, I, D, 1.f, dy, D, w->wd, I, 0.f, dh, I, 0);  /* dh = dy wd, over h */
    k->swiglu_bwd(dg, du, dh, g, u, n * I);                         /* in place: dg over g, du over u */
    k->matmul(0, 0, n, D, I, 1.f, dg, I, w->wg, D, 0.f, dxn2, D, 0); /* dxn2 = dg wg + du wu */
    k->matmul(0, 0, n, D, I, 1.f, du, I, w->wu, D, 1.f, dxn2, D, 0);
    k->matmul(1, 0, I, D, n, 1.f, dg, I, xn2, D, 1.f, gw->wg, D, 1); /* dwg += dg^T xn2 */
    k->matmul(1, 0, I, D, n, 1.f, du, I, xn2, D, 1.f, gw->wu, D, 1);
}

/* x [t, D] -> y [t, D], saving activations in a; recomputing: the backward's second
 * forward of this layer (per-layer checkpointing), which stops at what the backward needs
 * (y unused: NULL). */
static void layer_fwd(Model *m, const StepCtx *sc, int64_t l, const void *x, void *y, LayerActs *a, int recomputing) {
    if (m->recompute == 2) { /* this layer's kept attention output and lse (written now, or read back) */
        a->oh = recomputing ? actstore_read(&m->keep_oh, l) : actstore_write(&m->keep_oh, l);
        a->lse = recomputing ? actstore_read(&m->keep_lse, l) : actstore_write(&m->keep_lse, l);
        if (m->sp == 1) a->o = a->oh;
    }
    const KernelOps *k = m->k;
    const ModelConfig *c = &m->c;
    const LayerTensors *w = &m->P.layers[l];
    int64_t t = sc->t, D = c->hidden_size, I = c->intermediate_size, d = c->head_dim;
    int64_t H = c->num_heads, Hkv = c->num_kv_heads, Hd = H * d, rs = (H + 2 * Hkv) * d;
    float eps = (float)c->rms_norm_eps;

    const UlFamily *fam = ul_family(c);
    /* q, k go to qkn when they are normalized (q_norm, k_norm read them from there) */
    void *qk = fam->qk_norm ? a->qkn : a->qkv;
    int64_t qks = fam->qk_norm ? (H + Hkv) * d : rs;

    k->rmsnorm_fwd(a->xn1, a->rstd1, x, w->ln1, t, D, eps);
    k->matmul(0, 1, t, Hd, D, 1.f, a->xn1, D, w->wq, D, 0.f, qk, qks, 0);                            /* q = xn1 wq^T */
    k->matmul(0, 1, t, Hkv * d, D, 1.f, a->xn1, D, w->wk, D, 0.f, AO(qk, Hd), qks, 0);               /* k */
    k->matmul(0, 1, t, Hkv * d, D, 1.f, a->xn1, D, w->wv, D, 0.f, AO(a->qkv, Hd + Hkv * d), rs, 0);  /* v */
    UL_ASSERT(!fam->qkv_bias || (w->bk == AO(w->bq, Hd) && w->bv == AO(w->bk, Hkv * d)), "q/k/v biases not adjacent");
    if (fam->qkv_bias) { /* bq, bk adjacent (core/params.h) */
        k->bias_add(qk, qks, w->bq, t, (H + Hkv) * d);
        k->bias_add(AO(a->qkv, Hd + Hkv * d), rs, w->bv, t, Hkv * d);
    }
    if (fam->qk_norm) { /* RMSNorm over head_dim, per head, before RoPE (sequence-local) */
        k->headnorm_fwd(a->qkv, rs, a->rstdq, a->qkn, qks, w->qn, t, H, d, eps);
        k->headnorm_fwd(AO(a->qkv, Hd), rs, a->rstdq + t * H, AO(a->qkn, Hd), qks, w->kn, t, Hkv, d, eps);
    }
    k->rope(a->qkv, rs, t, H, d, m->d_pos, m->inv_freq, 0);
    k->rope(AO(a->qkv, Hd), rs, t, Hkv, d, m->d_pos, m->inv_freq, 0);
    attn_fwd(m, sc, a, recomputing && m->recompute == 2);
    k->copy2d(a->xmid, D, x, D, t, D);
    k->matmul(0, 1, t, D, Hd, 1.f, a->o, Hd, w->wo, Hd, 1.f, a->xmid, D, 0); /* xmid = x + o wo^T */
    k->rmsnorm_fwd(a->xn2, a->rstd2, a->xmid, w->ln2, t, D, eps);
    if (recomputing) {
        /* the backward needs xn2, xmid, rstd2 and the MLP's g, u, h, not the layer's output:
         * no down projection; TiledMLP recomputes each tile's g, u, h in the backward itself */
        if (!m->mlp_tile) mlp_fwd_rows(m, w, a->xn2, NULL, t, a->g, a->u, a->h);
        return;
    }
    k->copy2d(y, D, a->xmid, D, t, D);
    int64_t tile = m->mlp_tile ? m->mlp_tile : t;
    for (int64_t i0 = 0; i0 < t; i0 += tile) {
        int64_t n = t - i0 < tile ? t - i0 : tile;
        void *g = m->mlp_tile ? m->tg : AO(a->g, i0 * I), *u = m->mlp_tile ? m->tu : AO(a->u, i0 * I);
        void *h = m->mlp_tile ? m->th : AO(a->h, i0 * I);
        mlp_fwd_rows(m, w, AO(a->xn2, i0 * D), AO(y, i0 * D), n, g, u, h);
    }
}

/* m->dres holds dL/dy [t, D] on entry and dL/dx on exit; parameter grads (fp32) accumulate. */
static void layer_bwd(Model *m, const StepCtx *sc, int64_t l, const void *x, LayerActs *a) {
    const KernelOps *k = m->k;
    const ModelConfig *c = &m->c;
    const LayerTensors *w = &m->P.layers[l];
    LayerTensors *gw = &m->G.layers[l];
    int64_t t = sc->t, D = c->hidden_size, I = c->intermediate_size, d = c->head_dim;
    int64_t H = c->num_heads, Hkv = c->num_kv_heads, Hd = H * d, rs = (H + 2 * Hkv) * d;
    void *dres = m->dres, *dxn = m->dxn;

    /* MLP: TiledMLP recomputes each tile's g, u, h before its backward; the backward
     * overwrites them with their gradients (the layer's g, u, h are read by nothing after) */
    int64_t tile = m->mlp_tile ? m->mlp_tile : t;
    for (int64_t i0 = 0; i0 < t; i0 += tile) {
        int64_t n = t - i0 < tile ? t - i0 : tile;
        const void *xn2 = AO(a->xn2, i0 * D);
        if (m->mlp_tile) {
            k->matmul(0, 1, n, I, D, 1.f, xn2, D, w->wg, D, 0.f, m->tg, I, 0);
            k->matmul(0, 1, n, I, D, 1.f, xn2, D, w->wu, D, 0.f, m->tu, I, 0);
            k->swiglu_fwd(m->th, m->tg, m->tu, n * I);
            mlp_bwd_rows(m, w, gw, xn2, AO(dres, i0 * D), AO(dxn, i0 * D), n, m->tg, m->tu, m->th);
        } else {
            mlp_bwd_rows(m, w, gw, xn2, dres, dxn, n, a->g, a->u, a->h);
        }
    }
    k->rmsnorm_bwd(dres, gw->ln2, dxn, a->xmid, w->ln2, a->rstd2, t, D);

    /* attention (xn2, xmid are dead from here: with recompute, dout and dqkv live in them) */
    k->matmul(0, 0, t, Hd, D, 1.f, dres, D, w->wo, Hd, 0.f, m->dout, Hd, 0); /* dout = dres wo */
    k->matmul(1, 0, D, Hd, t, 1.f, dres, D, a->o, Hd, 1.f, gw->wo, Hd, 1);   /* dwo += dres^T o */
    attn_bwd(m, sc, a);
    k->rope(m->dqkv, rs, t, H, d, m->d_pos, m->inv_freq, 1);
    k->rope(AO(m->dqkv, Hd), rs, t, Hkv, d, m->d_pos, m->inv_freq, 1);
    const UlFamily *fam = ul_family(c);
    if (fam->qk_norm) { /* in place: dqkv's q, k become the gradients before the norms */
        int64_t qks = (H + Hkv) * d;
        k->headnorm_bwd(m->dqkv, rs, gw->qn, m->dqkv, rs, a->qkn, qks, w->qn, a->rstdq, t, H, d);
        k->headnorm_bwd(AO(m->dqkv, Hd), rs, gw->kn, AO(m->dqkv, Hd), rs, AO(a->qkn, Hd), qks, w->kn,
                        a->rstdq + t * H, t, Hkv, d);
    }
    UL_ASSERT(!fam->qkv_bias || (gw->bk == (float *)gw->bq + Hd && gw->bv == (float *)gw->bk + Hkv * d),
              "q/k/v bias gradients not adjacent");
    if (fam->qkv_bias) k->bias_bwd(gw->bq, m->dqkv, rs, t, rs); /* dbq, dbk, dbv (adjacent) += column sums */
    const void *dq = m->dqkv, *dk = AO(m->dqkv, Hd), *dv = AO(m->dqkv, Hd + Hkv * d);
    k->matmul(0, 0, t, D, Hd, 1.f, dq, rs, w->wq, D, 0.f, dxn, D, 0); /* dxn1 = dq wq + dk wk + dv wv */
    k->matmul(0, 0, t, D, Hkv * d, 1.f, dk, rs, w->wk, D, 1.f, dxn, D, 0);
    k->matmul(0, 0, t, D, Hkv * d, 1.f, dv, rs, w->wv, D, 1.f, dxn, D, 0);
    k->matmul(1, 0, Hd, D, t, 1.f, dq, rs, a->xn1, D, 1.f, gw->wq, D, 1); /* dwq += dq^T xn1 */
    k->matmul(1, 0, Hkv * d, D, t, 1.f, dk, rs, a->xn1, D, 1.f, gw->wk, D, 1);
    k->matmul(1, 0, Hkv * d, D, t, 1.f, dv, rs, a->xn1, D, 1.f, gw->wv, D, 1);
    k->rmsnorm_bwd(dres, gw->ln1, dxn, x, w->ln1, a->rstd1, t, D);
}

/* save: a backward follows, so the saved activations must reach the host (offload). */
static void forward_layers(Model *m, const StepCtx *sc, int save) {
    const ModelConfig *c = &m->c;
    int64_t L = c->num_layers;
    void *x = actstore_write(&m->xin, 0);
    SHARDS(fetch, 0);
    SHARDS(prefetch, 1); /* layer 0's gather overlaps the embedding (and so on) */
    m->k->embedding_fwd(x, m->d_tok, m->P.wte, sc->t, c->hidden_size);
    if (save) actstore_saved(&m->xin, 0);
    const int64_t K = m->ck_every;
    for (int64_t l = 0; l < L; l++) {
        /* layer l + 1's input: kept (item ceil((l + 1) / K); with offload: in its ring slot, once
         * the slot's previous item is out), or a segment's inner input (recomputed in backward) */
        int kept = (l + 1) % K == 0 || l + 1 == L;
        void *y = kept ? actstore_write(&m->xin, (l + K) / K) : m->xseg[(l + 1) % K - 1];
        SHARDS(fetch, 1 + l);
        SHARDS(prefetch, 2 + l); /* the next layer, or the tail after the last */
        layer_fwd(m, sc, l, x, y, &m->acts[m->recompute ? 0 : l], 0);
        if (save) {
            if (kept) actstore_saved(&m->xin, (l + K) / K);
            if (m->recompute == 2) {
                actstore_saved(&m->keep_oh, l);
                actstore_saved(&m->keep_lse, l);
            }
        }
        x = y;
    }
    SHARDS(fetch, L + 1);
    /* the head's weights: lm_head is the embedding's when tied (unconditionally, before any
     * tile is skipped for lack of labels: the fetches are collective) */
    if (c->tie_word_embeddings) SHARDS(fetch, 0);
    m->k->rmsnorm_fwd(m->xnf, m->rstdf, x, m->P.lnf, sc->t, c->hidden_size, (float)c->rms_norm_eps);
}

/* The layers' backward, from m->dres = dL/d(last layer's output) to dL/d(embedding output),
 * segment by segment (--checkpoint-every K; K = 1: layer by layer): segment j, layers
 * [jK, e], starts from its kept input xin[j]; its other inputs are recomputed forward into
 * xseg, then each layer is recomputed (recompute >= 1) and differentiated, the last first.
 * The recomputed inputs are the forward's bits (the same kernels on the same inputs). */
static void backward_layers(Model *m, const StepCtx *sc) {
    const int64_t L = m->c.num_layers, K = m->ck_every;
    for (int64_t j = (L + K - 1) / K - 1; j >= 0; j--) {
        int64_t s = j * K, e = (s + K < L ? s + K : L) - 1; /* the segment's layers [s, e] */
        const void *xs = actstore_read(&m->xin, j);
        /* offload: the next segment's kept input comes back while this one runs */
        actstore_prefetch(&m->xin, j - 1);
        for (int64_t l = s; l < e; l++) { /* the inputs of layers s + 1 .. e again (K > 1) */
            SHARDS(fetch, 1 + l);
            SHARDS(prefetch, 2 + l);
            layer_fwd(m, sc, l, l == s ? xs : m->xseg[l - s - 1], m->xseg[l - s], &m->acts[0], 0);
        }
        for (int64_t l = e; l >= s; l--) {
            LayerActs *a = &m->acts[m->recompute ? 0 : l];
            const void *x = l == s ? xs : m->xseg[l - s - 1];
            if (m->recompute == 2) { /* layer l's own are read back in layer_fwd */
                actstore_prefetch(&m->keep_oh, l - 1);
                actstore_prefetch(&m->keep_lse, l - 1);
            }
            SHARDS(fetch, 1 + l); /* ZeRO-3: the layer's weights again, its gradient buffer */
            if (l > 0) SHARDS(prefetch, l > s ? l : 1 + (j - 1) * K); /* the next needed, during this backward */
            SHARDS(grad_begin, 1 + l);
            if (m->recompute) layer_fwd(m, sc, l, x, NULL, a, 1);
            layer_bwd(m, sc, l, x, a);
            SHARDS(grad_end, 1 + l);
            if (l == s) actstore_release(&m->xin, j);
            if (m->recompute == 2) {
                actstore_release(&m->keep_oh, l);
                actstore_release(&m->keep_lse, l);
            }
        }
    }
}

/* Validates the shard and uploads its inputs. */
static void step_ctx(Model *m, const LocalSeq *s, StepCtx *sc) {
    UL_ASSERT(s->T % m->sp == 0 && s->T <= m->T_max, "sample length %lld (sp %d, max %lld)", (long long)s->T, m->sp,
              (long long)m->T_max);
    sc->T = s->T;
    sc->t = s->T / m->sp;
    sc->s = s;
    const KernelOps *k = m->k;
    k->upload(m->d_tok, s->tokens, (size_t)sc->t * sizeof(int32_t));
    k->upload(m->d_lab, s->labels, (size_t)sc->t * sizeof(int32_t));
    k->upload(m->d_pos, s->pos, (size_t)sc->t * sizeof(int32_t));
    k->upload(m->d_cu, s->cu_seqlens, (size_t)(s->n_docs + 1) * sizeof(int64_t));
    sc->n_local = m->no_exchange ? local_docs(m, s, sc->t) : 0;
}

void model_step(Model *m, const LocalSeq *s, float dscale, int backward, double *loss_sum, int64_t *count) {
    const KernelOps *k = m->k;
    const ModelConfig *c = &m->c;
    StepCtx sc;
    step_ctx(m, s, &sc);
    int64_t t = sc.t, D = c->hidden_size, V = c->vocab_size, L = c->num_layers;
    forward_layers(m, &sc, backward);
    if (backward) SHARDS(grad_begin, c->tie_word_embeddings ? 0 : L + 1); /* lm_head's gradient */

    /* tiled logits + CE, the head's backward right away: never a [t, V] buffer */
    phase_begin(&m->t_loss);
    for (int64_t i0 = 0; i0 < t; i0 += m->loss_tile) {
        int64_t n = t - i0 < m->loss_tile ? t - i0 : m->loss_tile;
        int any = 0;
        for (int64_t i = 0; i < n && !any; i++) any = s->labels[i0 + i] != UL_IGNORE_INDEX;
        if (!any) {
            if (backward) k->zero(AO(m->dxn, i0 * D), (size_t)(n * D) * k->act_bytes);
            continue;
        }
        k->matmul(0, 1, n, V, D, 1.f, AO(m->xnf, i0 * D), D, m->P.lm_head, D, 0.f, m->logits, V, 0);
        k->cross_entropy(m->logits, m->d_lab + i0, n, V, dscale, m->acc);
        if (!backward) continue;
        k->matmul(0, 0, n, D, V, 1.f, m->logits, V, m->P.lm_head, D, 0.f, AO(m->dxn, i0 * D), D, 0); /* dxnf */
        k->matmul(1, 0, V, D, n, 1.f, m->logits, V, AO(m->xnf, i0 * D), D, 1.f, m->G.lm_head, D, 1);  /* dlm_head */
    }
    phase_end(&m->t_loss);
    if (backward) {
        if (c->tie_word_embeddings) { /* lm_head (= wte) done: its part of the embedding's gradient */
            SHARDS(grad_end, 0);
            SHARDS(grad_begin, L + 1);
        }
        k->zero(m->dres, (size_t)(t * D) * k->act_bytes);
        int64_t nx = m->xin.n; /* the last item: the final norm's input */
        k->rmsnorm_bwd(m->dres, m->G.lnf, m->dxn, actstore_read(&m->xin, nx - 1), m->P.lnf, m->rstdf, t, D);
        actstore_release(&m->xin, nx - 1);
        SHARDS(grad_end, L + 1);
        backward_layers(m, &sc);
        SHARDS(grad_begin, 0);
        k->embedding_bwd(m->G.wte, m->dres, m->d_tok, t, D);
        SHARDS(grad_end, 0);
    }
    if (loss_sum) model_loss_take(m, loss_sum, count);
}

void model_loss_take(Model *m, double *loss_sum, int64_t *count) {
    double acc[2]; /* [CE sum, valid count] */
    m->k->download(acc, m->acc, sizeof acc);
    m->k->zero(m->acc, 2 * sizeof(double));
    *loss_sum += acc[0];
    *count += (int64_t)acc[1];
}

void model_eval(Model *m, const LocalSeq *s, LogitsFn fn, void *user) {
    const ModelConfig *c = &m->c;
    const KernelOps *k = m->k;
    StepCtx sc;
    step_ctx(m, s, &sc);
    int64_t t = sc.t, D = c->hidden_size, V = c->vocab_size;
    if (!m->logits32) { /* the plan's eval arena, at the first evaluation */
        UL_ASSERT(m->tab.buf[PB_LOGITS32].present, "model_eval: the memory plan has no evaluation (PlanInput.eval)");
        plan_arenas_alloc(&m->tab, k, PA_EVAL, PA_EVAL, m->arena);
        m->logits32 = BUF(LOGITS32, 0); /* [loss_tile, V] */
        m->logits_host = ul_malloc((size_t)(m->loss_tile * V) * sizeof(float));
    }
    forward_layers(m, &sc, 0);
    for (int64_t i0 = 0; i0 < t; i0 += m->loss_tile) {
        int64_t n = t - i0 < m->loss_tile ? t - i0 : m->loss_tile;
        k->matmul(0, 1, n, V, D, 1.f, AO(m->xnf, i0 * D), D, m->P.lm_head, D, 0.f, m->logits, V, 0);
        k->to_f32(m->logits32, m->logits, n * V);
        k->download(m->logits_host, m->logits32, (size_t)(n * V) * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            if (s->labels[i0 + i] != UL_IGNORE_INDEX) fn(user, i0 + i, m->logits_host + i * V, V);
    }
}
