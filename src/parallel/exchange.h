/* The Ulysses exchange (docs/design.md §4) on one SP group of S ranks, t = T/S tokens each.
 *
 * seq -> head: every rank holds qkv [t, H + 2Hkv, d] for its tokens; afterwards rank j holds
 *   qkvh [T, Hq_l + 2Hkv_l, d] for ALL T tokens (global order: rank i's tokens are rows
 *   [i*t, (i+1)*t)) and its heads: q heads [j*Hq_l, (j+1)*Hq_l), kv heads from exchange_kv_base(j).
 *   q, k and v travel in ONE all-to-all.
 * head -> seq: o [T, Hq_l, d] on rank j -> rows [i*t, (i+1)*t) go back to rank i, landing
 *   in columns [j*Hq_l*d, (j+1)*Hq_l*d) of its o [t, H*d].
 * The backward runs the same exchanges in reverse; gradients of kv heads replicated to
 * several ranks (sp > Hkv) are summed. */
#ifndef UL_EXCHANGE_H
#define UL_EXCHANGE_H

#include <stdint.h>

#include "comm/comm.h"
#include "kernels/kernels.h"

typedef struct {
    const KernelOps *k;
    CommGroup *g;       /* the SP group */
    int64_t S;          /* g->size */
    int64_t H, Hkv, d;  /* model heads */
    int64_t Hq_l, Hkv_l, kv_rep, W_l; /* per rank after the exchange */
    void *send, *recv;  /* staging, [T_max, W_l, d] act: one buffer, both names (an exchange uses one side) */
} Exchange;

/* Sets the per-rank head counts (requires H % S == 0 and Hkv % S == 0 or S % Hkv == 0).
 * staging: the caller's act buffer of at least [T_max, W_l, d] (S > 1; the model's arena, memory/plan.h
 * PB_XCHG), W_l = H / S + 2 Hkv_l, Hkv_l = Hkv / S, or 1 when S % Hkv == 0. */
void exchange_init(Exchange *x, const KernelOps *k, CommGroup *g, int64_t H, int64_t Hkv, int64_t d, void *staging);
/* First global kv head held by rank j. */
int64_t exchange_kv_base(const Exchange *x, int64_t j);

/* Buffers are act (the backend's dtype). */
void exchange_qkv(Exchange *x, int64_t t, const void *qkv, void *qkvh);    /* seq->head */
void exchange_o(Exchange *x, int64_t t, const void *oh, void *o);          /* head->seq */
void exchange_dout(Exchange *x, int64_t t, const void *dout, void *doh);   /* seq->head (backward of _o) */
void exchange_dqkv(Exchange *x, int64_t t, const void *dqkvh, void *dqkv); /* head->seq (backward of _qkv) */

#endif
