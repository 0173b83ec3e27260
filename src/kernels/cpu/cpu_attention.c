/* CPU flash attention: causal within documents (cu_seqlens), GQA, strided THD rows.
 *
 * Work is cut into blocks that never cross a document boundary: query blocks of AT_BQ
 * rows (forward, dq pass) and key blocks of AT_BK rows (dk/dv pass), aligned to each
 * document's start. A query block only visits the key blocks of its own document up to
 * its last row, so the work is ~causal and only the diagonal block needs a mask.
 * Memory is O(block) per thread: no [T, T] (or [T, BK]) buffer ever exists.
 *
 * Forward: online softmax (running max m, running sum l, rescaled accumulator).
 * Backward (FlashAttention-2 math, deterministic, no atomics):
 *   D_i = dO_i . O_i ; P = exp(S*scale - lse) ; dP = dO V^T ; dS = P * (dP - D)
 *   pass 1 over query blocks: dQ = scale * dS K         (each thread owns its dq rows)
 *   pass 2 over key blocks:   dV = P^T dO, dK = scale * dS^T Q, summed over the query heads
 *                             of the group             (each thread owns its dk/dv rows)
 * S and dP are recomputed in both passes.
 *
 * The inner products use a register-blocked micro-kernel on GCC vector types; on x86-64
 * the per-block functions are compiled for AVX-512, AVX2+FMA and baseline and picked at
 * load time (target_clones), so the library stays portable without -march=native. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/cpu/cpu_internal.h"

#define AT_BQ 64 /* query rows per block */
#define AT_BK 64 /* key rows per block */
#define VW 16    /* floats per vector */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define AT_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#endif
#endif
#ifndef AT_CLONES
#define AT_CLONES
#endif
#define AI static inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* v16 helpers are always inlined: no ABI crossing */
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

AI v16 vld(const float *p) {
    v16 r;
    memcpy(&r, p, sizeof r);
    return r;
}
AI void vst(float *p, v16 x) { memcpy(p, &x, sizeof x); }
AI v16 vsplat(float a) {
    v16 z = {0};
    return z + a;
}
AI v16 vsel(v16i mask, v16 a, v16 b) { return (v16)((mask & (v16i)a) | (~mask & (v16i)b)); }
AI v16 vmax(v16 a, v16 b) { return vsel(a > b, a, b); }
AI float hmax(v16 x) {
    float m = x[0];
    for (int i = 1; i < VW; i++) m = x[i] > m ? x[i] : m;
    return m;
}
AI float hsum(v16 x) {
    float s = 0;
    for (int i = 0; i < VW; i++) s += x[i];
    return s;
}
AI v16i lane_idx(void) { return (v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }

/* exp(x) for x <= 88 to ~1 ulp (Cephes expf polynomial, Cody-Waite reduction).
 * Underflow (x < -87.3, incl. -inf) gives exactly 0; NaN propagates. */
AI v16 vexp(v16 x) {
    const float lo = -87.3f;
    v16i under = x < lo;
    x = vsel(under, vsplat(lo), x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    v16 fn = x * 1.44269504088896341f + magic;
    fn = fn - magic;
    v16 r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    v16 p = vsplat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    v16i n = __builtin_convertvector(fn, v16i);
    v16 two_n = (v16)((n + 127) << 23);
    return (v16)((v16i)(p * two_n) & ~under);
}

/* C[m, n] (row stride ldc) = (acc ? C : 0) + A[m, k] B[k, n], with A(i, p) = A[i*ars + p*acs]
 * and B row p at B + p*ldb. n is a multiple of VW; B and C rows are readable/writable up to n. */
AI void gemm_blk(int64_t m, int64_t n, int64_t k, const float *A, int64_t ars, int64_t acs, const float *B,
                 int64_t ldb, float *C, int64_t ldc, int acc) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const float *a0 = A + i * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars;
        float *c0 = C + i * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        int64_t j = 0;
        for (; j + 2 * VW <= n; j += 2 * VW) {
            v16 x00 = {0}, x01 = {0}, x10 = {0}, x11 = {0}, x20 = {0}, x21 = {0}, x30 = {0}, x31 = {0};
            if (acc) {
                x00 = vld(c0 + j), x01 = vld(c0 + j + VW), x10 = vld(c1 + j), x11 = vld(c1 + j + VW);
                x20 = vld(c2 + j), x21 = vld(c2 + j + VW), x30 = vld(c3 + j), x31 = vld(c3 + j + VW);
            }
            for (int64_t p = 0; p < k; p++) {
                const float *b = B + p * ldb + j;
                v16 b0 = vld(b), b1 = vld(b + VW);
                float s0 = a0[p * acs], s1 = a1[p * acs], s2 = a2[p * acs], s3 = a3[p * acs];
                x00 += s0 * b0, x01 += s0 * b1, x10 += s1 * b0, x11 += s1 * b1;
                x20 += s2 * b0, x21 += s2 * b1, x30 += s3 * b0, x31 += s3 * b1;
            }
            vst(c0 + j, x00), vst(c0 + j + VW, x01), vst(c1 + j, x10), vst(c1 + j + VW, x11);
            vst(c2 + j, x20), vst(c2 + j + VW, x21), vst(c3 + j, x30), vst(c3 + j + VW, x31);
        }
        for (; j < n; j += VW) {
            v16 x0 = {0}, x1 = {0}, x2 = {0}, x3 = {0};
            if (acc) x0 = vld(c0 + j), x1 = vld(c1 + j), x2 = vld(c2 + j), x3 = vld(c3 + j);
            for (int64_t p = 0; p < k; p++) {
                v16 b0 = vld(B + p * ldb + j);
                x0 += a0[p * acs] * b0, x1 += a1[p * acs] * b0, x2 += a2[p * acs] * b0, x3 += a3[p * acs] * b0;
            }
            vst(c0 + j, x0), vst(c1 + j, x1), vst(c2 + j, x2), vst(c3 + j, x3);
        }
    }
    for (; i < m; i++) {
        const float *a0 = A + i * ars;
        float *c0 = C + i * ldc;
        for (int64_t j = 0; j < n; j += VW) {
            v16 x0 = {0};
            if (acc) x0 = vld(c0 + j);
            for (int64_t p = 0; p < k; p++) x0 += a0[p * acs] * vld(B + p * ldb + j);
            vst(c0 + j, x0);
        }
    }
}

/* dst[e, c] = src[c, e] for c < n, e < d (src rows `stride` apart); columns [n, npad) zeroed.
 * dst [d, AT_BK] */
AI void pack_t(float *dst, const float *src, int64_t stride, int64_t n, int64_t npad, int64_t d) {
    for (int64_t c = 0; c < n; c++) {
        const float *s = src + c * stride;
        for (int64_t e = 0; e < d; e++) dst[e * AT_BK + c] = s[e];
    }
    for (int64_t e = 0; e < d; e++)
        for (int64_t c = n; c < npad; c++) dst[e * AT_BK + c] = 0.0f;
}

/* dst[c, 0:d] = src[c, 0:d] (dst row stride dp; columns [d, dp) are never written and stay 0). */
AI void pack_rows(float *dst, int64_t dp, const float *src, int64_t stride, int64_t n, int64_t d) {
    for (int64_t c = 0; c < n; c++) memcpy(dst + c * dp, src + c * stride, (size_t)d * sizeof(float));
}

static int64_t rup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---------------------------------------------------------------- arguments, scratch */

typedef struct {
    float *o, *lse, *dq, *dk, *dv, *D; /* D [T, Hq]: rowsum(dO * O) */
    const float *q, *k, *v, *dout, *oc, *lsec;
    int64_t os, qs, ks, vs, dqs, dks, dvs, dos;
    int64_t T, Hq, Hkv, d, dp, group;
    float scale;
} AttnArgs;

typedef struct {
    float *kt;   // [d, BK]   K^T of the key block
    float *vt;   // [d, BK]   V^T of the key block
    float *kp;   // [BK, dp]  K rows (padded)
    float *vp;   // [BK, dp]  V rows (padded)
    float *qp;   // [BQ, dp]  Q rows (padded)
    float *dop;  // [BQ, dp]  dO rows (padded)
    float *s;    // [BQ, BK]  scores / P / dS
    float *dp_;  // [BQ, BK]  dP
    float *acc;  // [BQ, dp]  O or dQ accumulator
    float *dka;  // [BK, dp]  dK accumulator
    float *dva;  // [BK, dp]  dV accumulator
    float *m, *l, *rowv;  // [BQ] running max, running sum, per-row lse or D
    void *mem;
} Scratch;

static void scratch_init(Scratch *w, int64_t d, int64_t dp) {
    int64_t n_kt = d * AT_BK, n_bk = AT_BK * dp, n_bq = AT_BQ * dp, n_s = AT_BQ * AT_BK;
    int64_t total = 2 * n_kt + 2 * n_bk + 3 * n_bq + 2 * n_s + 2 * n_bk + 3 * AT_BQ + 16 * 14;
    float *p = ul_cpu_alloc((size_t)total * sizeof(float));
    w->mem = p;
    float **slots[] = {&w->kt, &w->vt, &w->kp, &w->vp, &w->qp, &w->dop, &w->s,
                       &w->dp_, &w->acc, &w->dka, &w->dva, &w->m, &w->l, &w->rowv};
    int64_t sizes[] = {n_kt, n_kt, n_bk, n_bk, n_bq, n_bq, n_s, n_s, n_bq, n_bk, n_bk, AT_BQ, AT_BQ, AT_BQ};
    for (int i = 0; i < 14; i++) {
        *slots[i] = p;
        p += rup(sizes[i], 16); /* keep every slot 64-byte aligned */
    }
}

/* Blocks of `bs` rows that never cross a document: pre[di] = number of blocks before doc di.
 * Returns the doc containing block b (binary search; empty docs own no block). */
static int64_t block_doc(const int64_t *pre, int64_t n_docs, int64_t b) {
    int64_t lo = 0, hi = n_docs - 1; /* largest di with pre[di] <= b */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (pre[mid] <= b)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int64_t *block_prefix(const int64_t *cu, int64_t n_docs, int64_t bs) {
    int64_t *pre = ul_malloc((size_t)(n_docs + 1) * sizeof(int64_t));  // [n_docs + 1]
    pre[0] = 0;
    for (int64_t di = 0; di < n_docs; di++) pre[di + 1] = pre[di] + (cu[di + 1] - cu[di] + bs - 1) / bs;
    return pre;
}

static void check_args(int64_t T, int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu, int64_t n_docs) {
    UL_ASSERT(T >= 0 && Hq > 0 && Hkv > 0 && d > 0 && Hq % Hkv == 0,
              "attention: bad shape T %lld Hq %lld Hkv %lld d %lld", (long long)T, (long long)Hq, (long long)Hkv,
              (long long)d);
    UL_ASSERT(n_docs >= 1 && cu[0] == 0 && cu[n_docs] == T, "attention: cu_seqlens must run from 0 to T=%lld",
              (long long)T);
    for (int64_t i = 0; i < n_docs; i++)
        UL_ASSERT(cu[i + 1] >= cu[i], "attention: cu_seqlens decreasing at %lld", (long long)i);
}

/* ---------------------------------------------------------------- forward */

/* Query rows [r0, r0 + nq) of head h; their document starts at ds. */
AT_CLONES static void fwd_block(const AttnArgs *a, Scratch *w, int64_t h, int64_t r0, int64_t nq, int64_t ds) {
    const int64_t d = a->d, dp = a->dp, g = h / a->group;
    const float *q = a->q + r0 * a->qs + h * d;  // [nq, d] rows qs apart
    const float scale = a->scale;
    for (int64_t r = 0; r < nq; r++) w->m[r] = -INFINITY, w->l[r] = 0.0f;
    memset(w->acc, 0, (size_t)(nq * dp) * sizeof(float));
    for (int64_t kb = ds; kb < r0 + nq; kb += AT_BK) {
        const int64_t nk = r0 + nq - kb < AT_BK ? r0 + nq - kb : AT_BK, nkp = rup(nk, VW);
        pack_t(w->kt, a->k + kb * a->ks + g * d, a->ks, nk, nkp, d);
        pack_rows(w->vp, dp, a->v + kb * a->vs + g * d, a->vs, nk, d);
        gemm_blk(nq, nkp, d, q, a->qs, 1, w->kt, AT_BK, w->s, AT_BK, 0); /* S = Q K^T */
        for (int64_t r = 0; r < nq; r++) {
            float *s = w->s + r * AT_BK;                         // [BK]
            int64_t nv = r0 + r - kb + 1 < nk ? r0 + r - kb + 1 : nk; /* valid keys of this row */
            if (nv <= 0) {
                memset(s, 0, (size_t)nkp * sizeof(float));
                continue;
            }
            v16 mx = vsplat(-INFINITY);
            for (int64_t j = 0; j < nkp; j += VW) {
                v16 x = vsel(lane_idx() + (int32_t)j < (int32_t)nv, vld(s + j) * scale, vsplat(-INFINITY));
                mx = vmax(mx, x);
            }
            float mold = w->m[r], mnew = hmax(mx);
            if (mold > mnew) mnew = mold;
            v16 sum = {0};
            for (int64_t j = 0; j < nkp; j += VW) {
                v16 x = vsel(lane_idx() + (int32_t)j < (int32_t)nv, vld(s + j) * scale, vsplat(-INFINITY));
                v16 pe = vexp(x - mnew);
                sum += pe;
                vst(s + j, pe);
            }
            float corr = expf(mold - mnew); /* 0 on the first visited block (mold = -inf) */
            w->l[r] = w->l[r] * corr + hsum(sum);
            w->m[r] = mnew;
            if (corr != 1.0f) {
                float *ar = w->acc + r * dp;
                for (int64_t e = 0; e < dp; e += VW) vst(ar + e, vld(ar + e) * corr);
            }
        }
        gemm_blk(nq, dp, nk, w->s, AT_BK, 1, w->vp, dp, w->acc, dp, 1); /* acc += P V */
    }
    for (int64_t r = 0; r < nq; r++) {
        float *o = a->o + (r0 + r) * a->os + h * d;  // [d]
        float inv = 1.0f / w->l[r];
        for (int64_t e = 0; e < d; e++) o[e] = w->acc[r * dp + e] * inv;
        a->lse[(r0 + r) * a->Hq + h] = w->m[r] + logf(w->l[r]);
    }
}

void ul_cpu_attention_fwd(float *o, int64_t os, float *lse, const float *q, int64_t qs, const float *k,
                          int64_t ks, const float *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                          const int64_t *cu_seqlens, int64_t n_docs, float scale) {
    check_args(T, Hq, Hkv, d, cu_seqlens, n_docs);
    if (T == 0) return;
    AttnArgs a = {.o = o, .lse = lse, .q = q, .k = k, .v = v, .os = os, .qs = qs, .ks = ks, .vs = vs,
                  .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .dp = rup(d, VW), .group = Hq / Hkv, .scale = scale};
    int64_t *pre = block_prefix(cu_seqlens, n_docs, AT_BQ);  // [n_docs + 1]
    const int64_t nblk = pre[n_docs], ntask = nblk * Hq;
#pragma omp parallel
    {
        Scratch w;
        scratch_init(&w, d, a.dp);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++) {
            int64_t b = nblk - 1 - t / Hq, h = t % Hq; /* last (longest) blocks first */
            int64_t di = block_doc(pre, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t r0 = ds + (b - pre[di]) * AT_BQ, nq = de - r0 < AT_BQ ? de - r0 : AT_BQ;
            fwd_block(&a, &w, h, r0, nq, ds);
        }
        free(w.mem);
    }
    free(pre);
}

/* ---------------------------------------------------------------- backward */

/* P and dS of one [nq, nkp] tile in place: s holds S on entry and dS on exit, and P is
 * written to pbuf (may be NULL when P is not needed). Row r sees keys c < nv(r). */
AI void tile_ds(float *s, float *pbuf, const float *dpm, const float *lse_r, const float *D_r, int64_t nq,
                int64_t nkp, int64_t first_valid_minus_one, int64_t nk, float scale) {
    /* nv(r) = min(nk, r + first_valid_minus_one + 1) */
    for (int64_t r = 0; r < nq; r++) {
        float *sr = s + r * AT_BK;              // [BK]
        const float *dpr = dpm + r * AT_BK;     // [BK]
        float *pr = pbuf ? pbuf + r * AT_BK : NULL;
        int64_t nv = r + first_valid_minus_one + 1;
        if (nv > nk) nv = nk;
        float lr = lse_r[r], Dr = D_r[r];
        for (int64_t j = 0; j < nkp; j += VW) {
            v16 x = vsel(lane_idx() + (int32_t)j < (int32_t)(nv > 0 ? nv : 0), vld(sr + j) * scale,
                         vsplat(-INFINITY));
            v16 dpv = vld(dpr + j); /* read before pr (which may alias dpr) is written */
            v16 p = vexp(x - lr);
            if (pr) vst(pr + j, p);
            vst(sr + j, p * (dpv - Dr));
        }
    }
}

/* Pass 1: dq of query rows [r0, r0 + nq) of head h (document starts at ds). */
AT_CLONES static void bwd_dq_block(const AttnArgs *a, Scratch *w, int64_t h, int64_t r0, int64_t nq, int64_t ds) {
    const int64_t d = a->d, dp = a->dp, g = h / a->group, Hq = a->Hq;
    const float *q = a->q + r0 * a->qs + h * d;      // [nq, d] rows qs apart
    const float *dO = a->dout + r0 * a->dos + h * d; // [nq, d] rows dos apart
    for (int64_t r = 0; r < nq; r++) w->m[r] = a->lsec[(r0 + r) * Hq + h], w->rowv[r] = a->D[(r0 + r) * Hq + h];
    memset(w->acc, 0, (size_t)(nq * dp) * sizeof(float));
    for (int64_t kb = ds; kb < r0 + nq; kb += AT_BK) {
        const int64_t nk = r0 + nq - kb < AT_BK ? r0 + nq - kb : AT_BK, nkp = rup(nk, VW);
        pack_t(w->kt, a->k + kb * a->ks + g * d, a->ks, nk, nkp, d);
        pack_t(w->vt, a->v + kb * a->vs + g * d, a->vs, nk, nkp, d);
        pack_rows(w->kp, dp, a->k + kb * a->ks + g * d, a->ks, nk, d);
        gemm_blk(nq, nkp, d, q, a->qs, 1, w->kt, AT_BK, w->s, AT_BK, 0);     /* S  = Q K^T  */
        gemm_blk(nq, nkp, d, dO, a->dos, 1, w->vt, AT_BK, w->dp_, AT_BK, 0); /* dP = dO V^T */
        tile_ds(w->s, NULL, w->dp_, w->m, w->rowv, nq, nkp, r0 - kb, nk, a->scale);
        gemm_blk(nq, dp, nk, w->s, AT_BK, 1, w->kp, dp, w->acc, dp, 1); /* dQ += dS K */
    }
    for (int64_t r = 0; r < nq; r++) {
        float *dq = a->dq + (r0 + r) * a->dqs + h * d;  // [d]
        for (int64_t e = 0; e < d; e++) dq[e] = w->acc[r * dp + e] * a->scale;
    }
}

/* Pass 2: dk, dv of key rows [k0, k0 + nk) of kv head g (document ends at de). */
AT_CLONES static void bwd_dkv_block(const AttnArgs *a, Scratch *w, int64_t g, int64_t k0, int64_t nk, int64_t de) {
    const int64_t d = a->d, dp = a->dp, Hq = a->Hq, nkp = rup(nk, VW);
    pack_t(w->kt, a->k + k0 * a->ks + g * d, a->ks, nk, nkp, d);
    pack_t(w->vt, a->v + k0 * a->vs + g * d, a->vs, nk, nkp, d);
    memset(w->dka, 0, (size_t)(AT_BK * dp) * sizeof(float));
    memset(w->dva, 0, (size_t)(AT_BK * dp) * sizeof(float));
    for (int64_t h = g * a->group; h < (g + 1) * a->group; h++) {
        for (int64_t qb = k0; qb < de; qb += AT_BQ) {
            const int64_t nq = de - qb < AT_BQ ? de - qb : AT_BQ;
            const float *q = a->q + qb * a->qs + h * d;      // [nq, d] rows qs apart
            const float *dO = a->dout + qb * a->dos + h * d; // [nq, d] rows dos apart
            for (int64_t r = 0; r < nq; r++)
                w->m[r] = a->lsec[(qb + r) * Hq + h], w->rowv[r] = a->D[(qb + r) * Hq + h];
            pack_rows(w->qp, dp, q, a->qs, nq, d);
            pack_rows(w->dop, dp, dO, a->dos, nq, d);
            gemm_blk(nq, nkp, d, q, a->qs, 1, w->kt, AT_BK, w->s, AT_BK, 0);     /* S  = Q K^T  */
            gemm_blk(nq, nkp, d, dO, a->dos, 1, w->vt, AT_BK, w->dp_, AT_BK, 0); /* dP = dO V^T */
            /* P goes to dp_ once dP has been consumed row by row: tile_ds reads dpr[j] before
             * writing pr[j] for the same j, so they may alias. */
            tile_ds(w->s, w->dp_, w->dp_, w->m, w->rowv, nq, nkp, qb - k0, nk, a->scale);
            gemm_blk(nk, dp, nq, w->dp_, 1, AT_BK, w->dop, dp, w->dva, dp, 1); /* dV += P^T dO */
            gemm_blk(nk, dp, nq, w->s, 1, AT_BK, w->qp, dp, w->dka, dp, 1);    /* dK += dS^T Q */
        }
    }
    for (int64_t c = 0; c < nk; c++) {
        float *dk = a->dk + (k0 + c) * a->dks + g * d;  // [d]
        float *dv = a->dv + (k0 + c) * a->dvs + g * d;  // [d]
        for (int64_t e = 0; e < d; e++) dk[e] = w->dka[c * dp + e] * a->scale, dv[e] = w->dva[c * dp + e];
    }
}

void ul_cpu_attention_bwd(float *dq, int64_t dqs, float *dk, int64_t dks, float *dv, int64_t dvs,
                          const float *dout, int64_t dos, const float *q, int64_t qs, const float *k, int64_t ks,
                          const float *v, int64_t vs, const float *o, int64_t os, const float *lse, int64_t T,
                          int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs,
                          float scale) {
    check_args(T, Hq, Hkv, d, cu_seqlens, n_docs);
    if (T == 0) return;
    float *D = ul_cpu_alloc((size_t)(T * Hq) * sizeof(float));  // [T, Hq]
    AttnArgs a = {.dq = dq, .dk = dk, .dv = dv, .D = D, .q = q, .k = k, .v = v, .dout = dout, .oc = o,
                  .lsec = lse, .os = os, .qs = qs, .ks = ks, .vs = vs, .dqs = dqs, .dks = dks, .dvs = dvs,
                  .dos = dos, .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .dp = rup(d, VW), .group = Hq / Hkv,
                  .scale = scale};
#pragma omp parallel for schedule(static) if (T * Hq * d > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < Hq; h++) {
            const float *oi = o + i * os + h * d, *gi = dout + i * dos + h * d;  // [d]
            double s = 0;
            for (int64_t e = 0; e < d; e++) s += (double)oi[e] * gi[e];
            D[i * Hq + h] = (float)s;
        }
    int64_t *preq = block_prefix(cu_seqlens, n_docs, AT_BQ);  // [n_docs + 1]
    int64_t *prek = block_prefix(cu_seqlens, n_docs, AT_BK);  // [n_docs + 1]
    const int64_t nbq = preq[n_docs], nbk = prek[n_docs];
#pragma omp parallel
    {
        Scratch w;
        scratch_init(&w, d, a.dp);
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t t = 0; t < nbq * Hq; t++) {
            int64_t b = nbq - 1 - t / Hq, h = t % Hq; /* last (longest) blocks first */
            int64_t di = block_doc(preq, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t r0 = ds + (b - preq[di]) * AT_BQ, nq = de - r0 < AT_BQ ? de - r0 : AT_BQ;
            bwd_dq_block(&a, &w, h, r0, nq, ds);
        }
        /* pass 2 writes only dk/dv, pass 1 only dq: no barrier needed between them */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < nbk * Hkv; t++) {
            int64_t b = t / Hkv, g = t % Hkv; /* first (longest) key blocks first */
            int64_t di = block_doc(prek, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t k0 = ds + (b - prek[di]) * AT_BK, nk = de - k0 < AT_BK ? de - k0 : AT_BK;
            bwd_dkv_block(&a, &w, g, k0, nk, de);
        }
        free(w.mem);
    }
    free(preq);
    free(prek);
    free(D);
}
