#include "train/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define F32B(n) ((size_t)(n) * sizeof(float))

void zero_init(ZeroOpt *z, int stage, int offload, Model *m, const Mesh *mesh) {
    UL_ASSERT(stage >= 0 && stage <= 2, "zero stage %d", stage);
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
    if (stage == 0) { /* replicated: the model's master, full moments */
        z->n_pad = z->per = z->n;
        z->lo = 0;
        z->hi = z->n;
        z->master = m->params;
        z->m1 = k->alloc(F32B(z->n)); /* [n] */
        z->m2 = k->alloc(F32B(z->n)); /* [n] */
        z->bytes.weights = m->n_alloc * (int64_t)k->act_bytes;
        z->bytes.master = k->act_bytes == sizeof(float) ? 0 : F32B(z->n); /* on the CPU the act copy IS the master */
        z->bytes.grads = F32B(m->n_alloc);
        z->bytes.moments = 2 * F32B(z->n);
        return;
    }
    int64_t S = mesh->shard_g.size, q = mesh->shard_g.rank;
    z->n_pad = (z->n + S - 1) / S * S;
    z->per = z->n_pad / S;
    z->lo = q * z->per < z->n ? q * z->per : z->n;
    z->hi = (q + 1) * z->per < z->n ? (q + 1) * z->per : z->n;
    model_pad_params(m, z->n_pad);
    if (offload) {
        z->master = k->host_alloc(F32B(z->per)); /* [per] */
        z->m1 = k->host_alloc(F32B(z->per));     /* [per] */
        z->m2 = k->host_alloc(F32B(z->per));     /* [per] */
        z->h_g = k->host_alloc(F32B(z->per));    /* [per] */
    } else {
        z->master = k->alloc(F32B(z->per)); /* [per] */
        z->m1 = k->alloc(F32B(z->per));     /* [per] */
        z->m2 = k->alloc(F32B(z->per));     /* [per] */
    }
    if (stage == 2 || offload) z->gslice = k->alloc(F32B(z->per)); /* [per] */
    if (k->act_bytes != sizeof(float)) z->act_send = k->alloc((size_t)z->per * k->act_bytes); /* [per] act */
    z->bytes.weights = (m->n_alloc + (z->act_send ? z->per : 0)) * (int64_t)k->act_bytes;
    z->bytes.master = F32B(z->per);
    z->bytes.grads = F32B(m->n_alloc) + (z->gslice ? F32B(z->per) : 0);
    z->bytes.moments = 2 * F32B(z->per);
    z->bytes.host = offload ? 4 * F32B(z->per) : 0; /* master, m, v, gradient copy */
}

/* dst[0 : n) (optimizer memory: host with offload, else backend) = src (host) */
static void put(const ZeroOpt *z, float *dst, const float *src, int64_t n) {
    if (z->offload)
        memcpy(dst, src, F32B(n));
    else
        z->k->upload(dst, src, F32B(n));
}

void zero_start(ZeroOpt *z, Model *m, const float *hp, const float *hm1, const float *hm2) {
    const KernelOps *k = z->k;
    if (hp && hp != m->params) model_set_params(m, hp);
    else if (hp) model_params_updated(m);
    int64_t own = z->hi - z->lo;
    if (z->stage == 0) {
        if (hm1 && hm1 != z->m1) k->upload(z->m1, hm1, F32B(z->n));
        if (hm2 && hm2 != z->m2) k->upload(z->m2, hm2, F32B(z->n));
        return;
    }
    /* the master slice from the model's fp32 master (exact, never via the act copy) */
    float *tmp = ul_calloc((size_t)z->per, sizeof(float)); /* [per] host */
    k->download(tmp, m->params + z->lo, F32B(own));
    put(z, z->master, tmp, z->per);
    if (hm1) put(z, z->m1, hm1 + z->lo, own);
    if (hm2) put(z, z->m2, hm2 + z->lo, own);
    free(tmp);
    model_drop_master(m);
}

double zero_step(ZeroOpt *z, Model *m, Mesh *mesh, const ZeroHyper *h, int update) {
    const KernelOps *k = z->k;
    int64_t own = z->hi - z->lo;
    float *g; /* this rank's reduced gradient slice [own] (backend memory) */
    double gn;
    if (z->stage <= 1) {
        mesh->dev_world->ops->allreduce_sum(mesh->dev_world, m->grads, z->n, UL_F32);
        gn = sqrt(k->sumsq(m->grads, z->n));
        g = m->grads + z->lo;
    } else {
        mesh->dev_shard->ops->reduce_scatter_sum(mesh->dev_shard, m->grads, z->gslice, z->n_pad, UL_F32);
        if (mesh->dev_rep->size > 1) mesh->dev_rep->ops->allreduce_sum(mesh->dev_rep, z->gslice, z->per, UL_F32);
        double ss = k->sumsq(z->gslice, z->per); /* the padding is zero */
        mesh->shard_g.ops->allreduce_sum(&mesh->shard_g, &ss, 1, UL_F64); /* not over replicas: same slices */
        gn = sqrt(ss);
        g = z->gslice;
    }
    if (h->clip > 0 && gn > h->clip) k->scale(g, own, (float)(h->clip / (gn + 1e-6)));
    if (!update) {
        if (z->stage == 0) model_params_updated(m);
        return gn;
    }
    const KernelOps *ok = k; /* who runs AdamW: the backend, or the CPU on the offloaded state */
    if (z->offload) {
        k->download(z->h_g, g, F32B(own));
        g = z->h_g;
        ok = ul_kernels_cpu();
    }
    for (int64_t i = 0; i < z->nt; i++) {
        const ParamInfo *p = &z->pinfo[i];
        int64_t a = p->offset > z->lo ? p->offset : z->lo;
        int64_t b = p->offset + p->numel < z->hi ? p->offset + p->numel : z->hi;
        if (a >= b) continue;
        int64_t o = a - z->lo;
        ok->adamw(z->master + o, g + o, z->m1 + o, z->m2 + o, b - a, (float)h->lr, (float)h->beta1, (float)h->beta2,
                  (float)h->eps, p->decay ? (float)h->weight_decay : 0.f, h->t);
    }
    if (z->stage == 0) {
        model_params_updated(m);
        return gn;
    }
    /* publish: the updated slice (act) is all-gathered into every rank's act copy */
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
    mesh->dev_shard->ops->allgather(mesh->dev_shard, send, m->wact, z->per, k->act_bytes == 2 ? UL_BF16 : UL_F32);
    return gn;
}

void zero_gather_host(ZeroOpt *z, const Model *m, Mesh *mesh, float *hp, float *hm1, float *hm2) {
    const KernelOps *k = z->k;
    if (z->stage == 0) {
        if (hp && hp != m->params) model_get_params(m, hp);
        if (hm1 && hm1 != z->m1) k->download(hm1, z->m1, F32B(z->n));
        if (hm2 && hm2 != z->m2) k->download(hm2, z->m2, F32B(z->n));
        return;
    }
    float *dst[3] = {hp, hm1, hm2}, *src[3] = {z->master, z->m1, z->m2};
    float *tmp = z->offload ? NULL : ul_malloc(F32B(z->per)); /* [per] host */
    CommGroup *g = &mesh->shard_g;
    for (int i = 0; i < 3; i++) {
        if (!dst[i]) continue;
        const float *s = src[i];
        if (!z->offload) {
            k->download(tmp, src[i], F32B(z->per));
            s = tmp;
        }
        if (g->size == 1)
            memcpy(dst[i], s, F32B(z->per));
        else
            g->ops->allgather(g, s, dst[i], z->per, UL_F32);
    }
    free(tmp);
}

void zero_free(ZeroOpt *z) {
    const KernelOps *k = z->k;
    if (!k) return;
    if (z->offload) {
        k->host_free(z->master);
        k->host_free(z->m1);
        k->host_free(z->m2);
        k->host_free(z->h_g);
    } else {
        if (z->stage > 0) k->free(z->master); /* stage 0: the model's */
        k->free(z->m1);
        k->free(z->m2);
    }
    if (z->gslice) k->free(z->gslice);
    if (z->act_send) k->free(z->act_send);
    free(z->pinfo);
    memset(z, 0, sizeof *z);
}
