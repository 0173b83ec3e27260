/* One instruction-set variant of the attention block kernels. cpu_attention.c includes
 * this file once per variant, under the matching `#pragma GCC target`, with
 *   AT_VW   floats per vector register (16 AVX-512, 8 AVX2, 4 baseline)
 *   AT_MR   rows of the micro-kernel's register tile (AT_MR x 2 vectors of accumulators)
 *   AT_SFX  suffix appended to every name defined here.
 * The three entry points are AT_FN(fwd_block), AT_FN(bwd_dq_block), AT_FN(bwd_dkv_block).
 *
 * Tile layouts. The forward and the dq pass own a query block, so they pack Q^T (and dO^T)
 * once and compute transposed tiles S^T = K Q^T [keys, queries]: the softmax statistics of
 * a query are then per-lane (no horizontal reductions) and K, V are read in place. The
 * dk/dv pass owns a key block, so it packs K^T and V^T once and computes S = Q K^T. */
#ifndef AT_VW
#error "define AT_VW, AT_MR and AT_SFX before including cpu_attention_impl.h"
#endif

#define vf AT_FN(vf)
#define vi AT_FN(vi)
#define vld AT_FN(vld)
#define vst AT_FN(vst)
#define vsplat AT_FN(vsplat)
#define visplat AT_FN(visplat)
#define vsel AT_FN(vsel)
#define vmax AT_FN(vmax)
#define lane_idx AT_FN(lane_idx)
#define vexp2 AT_FN(vexp2)
#define gemm_tile AT_FN(gemm_tile)
#define gemm_blk AT_FN(gemm_blk)
#define pack_t AT_FN(pack_t)
#define pack_rows AT_FN(pack_rows)

typedef float vf __attribute__((vector_size(AT_VW * 4)));
typedef int32_t vi __attribute__((vector_size(AT_VW * 4)));

AI vf vld(const float *p) {
    vf r;
    memcpy(&r, p, sizeof r);
    return r;
}
AI void vst(float *p, vf x) { memcpy(p, &x, sizeof x); }
AI vf vsplat(float a) {
    vf z = {0};
    return z + a;
}
AI vi visplat(int32_t a) {
    vi z = {0};
    return z + a;
}
AI vf vsel(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
AI vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
AI vi lane_idx(void) {
    vi r;
    for (int i = 0; i < AT_VW; i++) r[i] = i;
    return r;
}

/* 2^x for x <= 127 to ~1 ulp (round to nearest, Cephes expf polynomial on the remainder).
 * Underflow (x < -126, -inf included) gives exactly 0; NaN propagates. The tiles work in
 * log2 units (scores pre-multiplied by scale * log2(e)), which saves the range reduction. */
AI vf vexp2(vf x) {
    const float lo = -126.0f;
    vi under = x < lo;
    x = vsel(under, vsplat(lo), x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    vf fn = (x + magic) - magic;
    vf r = (x - fn) * 0.693147180559945309f; /* x - fn is exact; |r| <= ln2 / 2 */
    vf p = vsplat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    vi n = __builtin_convertvector(fn, vi);
    vf two_n = (vf)((n + 127) << 23);
    return (vf)((vi)(p * two_n) & ~under);
}

/* mr rows (a compile-time constant after inlining) of C (+)= A B; see gemm_blk. */
AI void gemm_tile(const int mr, int64_t n, int64_t k, const float *A, int64_t ars, int64_t acs, const float *B,
                  int64_t ldb, float *C, int64_t ldc, int acc) {
    int64_t j = 0;
    for (; j + 2 * AT_VW <= n; j += 2 * AT_VW) {
        vf x0[AT_MR], x1[AT_MR];
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
            x0[r] = acc ? vld(C + r * ldc + j) : vsplat(0.0f);
            x1[r] = acc ? vld(C + r * ldc + j + AT_VW) : vsplat(0.0f);
        }
        for (int64_t p = 0; p < k; p++) {
            const float *b = B + p * ldb + j, *ap = A + p * acs;
            vf b0 = vld(b), b1 = vld(b + AT_VW);
#pragma GCC unroll 16
            for (int r = 0; r < mr; r++) {
                float s = ap[r * ars];
                x0[r] += s * b0;
                x1[r] += s * b1;
            }
        }
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) vst(C + r * ldc + j, x0[r]), vst(C + r * ldc + j + AT_VW, x1[r]);
    }
    for (; j < n; j += AT_VW) {
        vf x0[AT_MR];
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) x0[r] = acc ? vld(C + r * ldc + j) : vsplat(0.0f);
        for (int64_t p = 0; p < k; p++) {
            vf b0 = vld(B + p * ldb + j);
            const float *ap = A + p * acs;
#pragma GCC unroll 16
            for (int r = 0; r < mr; r++) x0[r] += ap[r * ars] * b0;
        }
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) vst(C + r * ldc + j, x0[r]);
    }
}

/* C[m, n] (row stride ldc) = (acc ? C : 0) + A[m, k] B[k, n], where A(i, p) = A[i*ars + p*acs]
 * and row p of B starts at B + p*ldb. n is a multiple of AT_VW; B and C rows are readable
 * (writable) up to n. */
AI void gemm_blk(int64_t m, int64_t n, int64_t k, const float *A, int64_t ars, int64_t acs, const float *B,
                 int64_t ldb, float *C, int64_t ldc, int acc) {
    int64_t i = 0;
    for (; i + AT_MR <= m; i += AT_MR) gemm_tile(AT_MR, n, k, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
#if AT_MR > 4
    for (; i + 4 <= m; i += 4) gemm_tile(4, n, k, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
#endif
    for (; i < m; i++) gemm_tile(1, n, k, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, acc);
}

/* dst[e, c] = mul * src[c, e] for c < n, e < d (src rows `stride` apart); columns [n, npad)
 * zeroed. dst [d, AT_B] */
AI void pack_t(float *dst, const float *src, int64_t stride, int64_t n, int64_t npad, int64_t d, float mul) {
    for (int64_t c = 0; c < n; c++) {
        const float *s = src + c * stride;
        for (int64_t e = 0; e < d; e++) dst[e * AT_B + c] = s[e] * mul;
    }
    for (int64_t e = 0; e < d; e++)
        for (int64_t c = n; c < npad; c++) dst[e * AT_B + c] = 0.0f;
}

/* Rows of a B operand with the padded width dp: read in place when d == dp, otherwise
 * copied into buf [n, dp] (columns [d, dp) of buf are never written and stay 0). */
AI const float *pack_rows(float *buf, int64_t dp, const float *src, int64_t stride, int64_t n, int64_t d,
                          int64_t *ld) {
    if (d == dp) {
        *ld = stride;
        return src;
    }
    for (int64_t c = 0; c < n; c++) memcpy(buf + c * dp, src + c * stride, (size_t)d * sizeof(float));
    *ld = dp;
    return buf;
}

/* ---------------------------------------------------------------- forward */

/* Query rows [r0, r0 + nq) of head h; their document starts at ds. */
static void AT_FN(fwd_block)(const AttnArgs *a, Scratch *w, int64_t h, int64_t r0, int64_t nq, int64_t ds) {
    const int64_t d = a->d, dp = rup(d, AT_VW), g = h / a->group, nqp = rup(nq, AT_VW);
    float *m = w->m, *l = w->l; /* [AT_B] running max (log2 units) and sum of each query lane */
    pack_t(w->xt, a->q + r0 * a->qs + h * d, a->qs, nq, nqp, d, a->scale * AT_LOG2E); /* Q^T [d, AT_B] */
    for (int64_t r = 0; r < nqp; r++) m[r] = -INFINITY, l[r] = 0.0f;
    memset(w->acc, 0, (size_t)(nq * dp) * sizeof(float));
    /* The first step (kb = ds) holds the document's first key, which every query lane sees,
     * so m is finite from then on; a lane that sees no key of a later (diagonal) step just
     * gets corr = 1 and p = 0 there. */
    for (int64_t kb = ds; kb < r0 + nq; kb += AT_Q_BK) {
        const int64_t nk = r0 + nq - kb < AT_Q_BK ? r0 + nq - kb : AT_Q_BK;
        const float *kr = a->k + kb * a->ks + g * d;  // [nk, d] rows ks apart
        int64_t ldv;
        const float *vb = pack_rows(w->vp, dp, a->v + kb * a->vs + g * d, a->vs, nk, d, &ldv);  // [nk, dp]
        float *st = w->s;                                                                     // [nk, AT_B]
        gemm_blk(nk, nqp, d, kr, a->ks, 1, w->xt, AT_B, st, AT_B, 0); /* S^T = K Q^T (log2 units) */
        const int diag = kb + nk - 1 > r0; /* some key lies after some query: mask c > r0 + r - kb */
        for (int64_t j = 0; j < nqp; j += AT_VW) {
            const vi thr = lane_idx() + (int32_t)(diag ? r0 + j - kb : 0);
            vf mold = vld(m + j), mx = mold;
            for (int64_t c = 0; c < nk; c++) {
                vf x = vld(st + c * AT_B + j);
                if (diag) x = vsel(visplat((int32_t)c) <= thr, x, vsplat(-INFINITY));
                mx = vmax(mx, x);
            }
            vf corr = vexp2(mold - mx); /* 0 on the first block (mold = -inf) */
            vf sum = vld(l + j) * corr;
            for (int64_t c = 0; c < nk; c++) {
                vf x = vld(st + c * AT_B + j);
                if (diag) x = vsel(visplat((int32_t)c) <= thr, x, vsplat(-INFINITY));
                vf p = vexp2(x - mx);
                sum += p;
                vst(st + c * AT_B + j, p);
            }
            vst(l + j, sum);
            vst(m + j, mx);
            for (int64_t r = j; r < j + AT_VW && r < nq; r++) {
                float cr = corr[r - j];
                if (cr == 1.0f) continue;
                float *ar = w->acc + r * dp;
                for (int64_t e = 0; e < dp; e += AT_VW) vst(ar + e, vld(ar + e) * cr);
            }
        }
        gemm_blk(nq, dp, nk, st, 1, AT_B, vb, ldv, w->acc, dp, 1); /* acc += P V */
    }
    for (int64_t r = 0; r < nq; r++) {
        float *o = a->o + (r0 + r) * a->os + h * d;  // [d]
        float inv = 1.0f / l[r];
        for (int64_t e = 0; e < d; e++) o[e] = w->acc[r * dp + e] * inv;
        a->lse[(r0 + r) * a->Hq + h] = (m[r] + log2f(l[r])) * AT_LN2;
    }
}

/* ---------------------------------------------------------------- backward */

/* Pass 1: dq of query rows [r0, r0 + nq) of head h (document starts at ds). */
static void AT_FN(bwd_dq_block)(const AttnArgs *a, Scratch *w, int64_t h, int64_t r0, int64_t nq, int64_t ds) {
    const int64_t d = a->d, dp = rup(d, AT_VW), g = h / a->group, Hq = a->Hq, nqp = rup(nq, AT_VW);
    const float scale = a->scale;
    float *lse = w->m, *D = w->rowv; /* [AT_B] per query lane (lse in log2 units); padded lanes 0 */
    pack_t(w->xt, a->q + r0 * a->qs + h * d, a->qs, nq, nqp, d, scale * AT_LOG2E); /* Q^T  [d, AT_B] */
    pack_t(w->yt, a->dout + r0 * a->dos + h * d, a->dos, nq, nqp, d, 1.0f);        /* dO^T [d, AT_B] */
    for (int64_t r = 0; r < nqp; r++) {
        lse[r] = r < nq ? a->lsec[(r0 + r) * Hq + h] * AT_LOG2E : 0.0f;
        D[r] = r < nq ? a->D[(r0 + r) * Hq + h] : 0.0f;
    }
    memset(w->acc, 0, (size_t)(nq * dp) * sizeof(float));
    for (int64_t kb = ds; kb < r0 + nq; kb += AT_Q_BK) {
        const int64_t nk = r0 + nq - kb < AT_Q_BK ? r0 + nq - kb : AT_Q_BK;
        const float *kr = a->k + kb * a->ks + g * d;  // [nk, d] rows ks apart
        const float *vr = a->v + kb * a->vs + g * d;  // [nk, d] rows vs apart
        int64_t ldk;
        const float *kb_rows = pack_rows(w->kp, dp, kr, a->ks, nk, d, &ldk);  // [nk, dp]
        float *st = w->s, *dpt = w->dp_;                                       // [nk, AT_B]
        gemm_blk(nk, nqp, d, kr, a->ks, 1, w->xt, AT_B, st, AT_B, 0);  /* S^T  = K Q^T  */
        gemm_blk(nk, nqp, d, vr, a->vs, 1, w->yt, AT_B, dpt, AT_B, 0); /* dP^T = V dO^T */
        const int diag = kb + nk - 1 > r0;
        for (int64_t j = 0; j < nqp; j += AT_VW) {
            const vi thr = lane_idx() + (int32_t)(diag ? r0 + j - kb : 0);
            const vf lv = vld(lse + j), Dv = vld(D + j);
            for (int64_t c = 0; c < nk; c++) {
                vf x = vld(st + c * AT_B + j);
                if (diag) x = vsel(visplat((int32_t)c) <= thr, x, vsplat(-INFINITY));
                vf p = vexp2(x - lv);
                vst(st + c * AT_B + j, p * (vld(dpt + c * AT_B + j) - Dv)); /* dS^T */
            }
        }
        gemm_blk(nq, dp, nk, st, 1, AT_B, kb_rows, ldk, w->acc, dp, 1); /* dQ += dS K */
    }
    for (int64_t r = 0; r < nq; r++) {
        float *dq = a->dq + (r0 + r) * a->dqs + h * d;  // [d]
        for (int64_t e = 0; e < d; e++) dq[e] = w->acc[r * dp + e] * scale;
    }
}

/* Pass 2: dk, dv of key rows [k0, k0 + nk) of kv head g (document ends at de). */
static void AT_FN(bwd_dkv_block)(const AttnArgs *a, Scratch *w, int64_t g, int64_t k0, int64_t nk, int64_t de) {
    const int64_t d = a->d, dp = rup(d, AT_VW), Hq = a->Hq, nkp = rup(nk, AT_VW);
    const float scale = a->scale;
    pack_t(w->xt, a->k + k0 * a->ks + g * d, a->ks, nk, nkp, d, scale * AT_LOG2E); /* K^T [d, AT_B] */
    pack_t(w->yt, a->v + k0 * a->vs + g * d, a->vs, nk, nkp, d, 1.0f);             /* V^T [d, AT_B] */
    memset(w->dka, 0, (size_t)(AT_B * dp) * sizeof(float));
    memset(w->dva, 0, (size_t)(AT_B * dp) * sizeof(float));
    for (int64_t h = g * a->group; h < (g + 1) * a->group; h++) {
        for (int64_t qb = k0; qb < de; qb += AT_DKV_BQ) {
            const int64_t nq = de - qb < AT_DKV_BQ ? de - qb : AT_DKV_BQ;
            const float *q = a->q + qb * a->qs + h * d;      // [nq, d] rows qs apart
            const float *dO = a->dout + qb * a->dos + h * d; // [nq, d] rows dos apart
            int64_t ldq, ldo;
            const float *qrows = pack_rows(w->qp, dp, q, a->qs, nq, d, &ldq);      // [nq, dp]
            const float *dorows = pack_rows(w->dop, dp, dO, a->dos, nq, d, &ldo);  // [nq, dp]
            float *s = w->s, *pm = w->dp_;                                         // [nq, AT_B]
            gemm_blk(nq, nkp, d, q, a->qs, 1, w->xt, AT_B, s, AT_B, 0);    /* S  = Q K^T (log2 units) */
            gemm_blk(nq, nkp, d, dO, a->dos, 1, w->yt, AT_B, pm, AT_B, 0); /* dP = dO V^T */
            /* row r (query qb + r) sees keys c <= qb + r - k0: only the steps with
             * qb < k0 + nk have a masked part */
            for (int64_t r = 0; r < nq; r++) {
                float *sr = s + r * AT_B, *pr = pm + r * AT_B;  // [AT_B]
                const int64_t nv = qb + r - k0 + 1 < nk ? qb + r - k0 + 1 : nk;
                const float lr = a->lsec[(qb + r) * Hq + h] * AT_LOG2E, Dr = a->D[(qb + r) * Hq + h];
                for (int64_t j = 0; j < nkp; j += AT_VW) {
                    vf x = vsel(lane_idx() + (int32_t)j < (int32_t)nv, vld(sr + j), vsplat(-INFINITY));
                    vf dpv = vld(pr + j);
                    vf p = vexp2(x - lr);
                    vst(pr + j, p);                /* P over dP (already read) */
                    vst(sr + j, p * (dpv - Dr));   /* dS */
                }
            }
            gemm_blk(nk, dp, nq, pm, 1, AT_B, dorows, ldo, w->dva, dp, 1); /* dV += P^T dO */
            gemm_blk(nk, dp, nq, s, 1, AT_B, qrows, ldq, w->dka, dp, 1);   /* dK += dS^T Q */
        }
    }
    for (int64_t c = 0; c < nk; c++) {
        float *dk = a->dk + (k0 + c) * a->dks + g * d;  // [d]
        float *dv = a->dv + (k0 + c) * a->dvs + g * d;  // [d]
        for (int64_t e = 0; e < d; e++) dk[e] = w->dka[c * dp + e] * scale, dv[e] = w->dva[c * dp + e];
    }
}

#undef vf
#undef vi
#undef vld
#undef vst
#undef vsplat
#undef visplat
#undef vsel
#undef vmax
#undef lane_idx
#undef vexp2
#undef gemm_tile
#undef gemm_blk
#undef pack_t
#undef pack_rows
