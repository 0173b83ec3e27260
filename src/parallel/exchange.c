#include "parallel/exchange.h"

#include <string.h>

#include "core/common.h"
#include "core/config.h"

#define AO(p, n) ((void *)((char *)(p) + (size_t)(n) * x->k->act_bytes))

/* One all-to-all of `bytes` per rank (timed by the group: CommOps.take_seconds). */
static void a2a(Exchange *x, const void *send, void *recv, int64_t elems_per_rank) {
    x->g->ops->alltoall(x->g, send, recv, (size_t)elems_per_rank * x->k->act_bytes);
}

void exchange_init(Exchange *x, const KernelOps *k, CommGroup *g, int64_t H, int64_t Hkv, int64_t d, void *staging) {
    memset(x, 0, sizeof *x);
    x->k = k;
    x->g = g;
    x->S = g ? g->size : 1;
    x->H = H;
    x->Hkv = Hkv;
    x->d = d;
    UL_ASSERT(ul_heads_split_ok(H, Hkv, x->S), "heads %lld/%lld incompatible with sp %lld",
              (long long)H, (long long)Hkv, (long long)x->S);
    x->Hq_l = H / x->S;
    x->Hkv_l = ul_kv_heads_per_rank(Hkv, x->S);
    x->kv_rep = Hkv % x->S == 0 ? 1 : x->S / Hkv;
    x->W_l = x->Hq_l + 2 * x->Hkv_l;
    UL_ASSERT(x->S == 1 || staging, "exchange_init: sp %lld needs its staging buffer", (long long)x->S);
    /* one staging buffer serves as send and as recv: every exchange uses one side only (qkv
     * and dout pack into it and send; o and dqkv receive into it and unpack), and the compute
     * stream waits for each all-to-all before it touches the buffer again (comm.h) */
    if (x->S > 1) x->send = x->recv = staging;
}

int64_t exchange_kv_base(const Exchange *x, int64_t j) { return x->kv_rep == 1 ? j * x->Hkv_l : j / x->kv_rep; }

void exchange_qkv(Exchange *x, int64_t t, const void *qkv, void *qkvh) {
    const KernelOps *k = x->k;
    int64_t d = x->d, rs = (x->H + 2 * x->Hkv) * d, ws = x->W_l * d;
    for (int64_t j = 0; j < x->S; j++) {
        void *dst = AO(x->send, j * t * ws); /* [t, W_l, d] for rank j */
        int64_t kb = exchange_kv_base(x, j);
        k->copy2d(dst, ws, AO(qkv, j * x->Hq_l * d), rs, t, x->Hq_l * d);
        k->copy2d(AO(dst, x->Hq_l * d), ws, AO(qkv, (x->H + kb) * d), rs, t, x->Hkv_l * d);
        k->copy2d(AO(dst, (x->Hq_l + x->Hkv_l) * d), ws, AO(qkv, (x->H + x->Hkv + kb) * d), rs, t, x->Hkv_l * d);
    }
    a2a(x, x->send, qkvh, t * ws);
}

void exchange_o(Exchange *x, int64_t t, const void *oh, void *o) {
    int64_t w = x->Hq_l * x->d, Hd = x->H * x->d;
    a2a(x, oh, x->recv, t * w);
    for (int64_t j = 0; j < x->S; j++) x->k->copy2d(AO(o, j * w), Hd, AO(x->recv, j * t * w), w, t, w);
}

void exchange_dout(Exchange *x, int64_t t, const void *dout, void *doh) {
    int64_t w = x->Hq_l * x->d, Hd = x->H * x->d;
    for (int64_t j = 0; j < x->S; j++) x->k->copy2d(AO(x->send, j * t * w), w, AO(dout, j * w), Hd, t, w);
    a2a(x, x->send, doh, t * w);
}

void exchange_dqkv(Exchange *x, int64_t t, const void *dqkvh, void *dqkv) {
    const KernelOps *k = x->k;
    int64_t d = x->d, rs = (x->H + 2 * x->Hkv) * d, ws = x->W_l * d;
    a2a(x, dqkvh, x->recv, t * ws);
    k->zero(dqkv, (size_t)(t * rs) * k->act_bytes);
    for (int64_t j = 0; j < x->S; j++) {
        const void *src = AO(x->recv, j * t * ws); /* [t, W_l, d] from rank j */
        int64_t kb = exchange_kv_base(x, j);
        k->copy2d(AO(dqkv, j * x->Hq_l * d), rs, src, ws, t, x->Hq_l * d);
        k->add2d(AO(dqkv, (x->H + kb) * d), rs, AO(src, x->Hq_l * d), ws, t, x->Hkv_l * d);
        k->add2d(AO(dqkv, (x->H + x->Hkv + kb) * d), rs, AO(src, (x->Hq_l + x->Hkv_l) * d), ws, t, x->Hkv_l * d);
    }
}
