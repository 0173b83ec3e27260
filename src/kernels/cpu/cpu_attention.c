/* CPU flash attention: causal within documents (cu_seqlens), GQA, strided THD rows.
 *
 * Work is cut into blocks of AT_B rows that never cross a document boundary, aligned to
 * each document's start: query blocks (forward, dq pass) and key blocks (dk/dv pass),
 * one task per (block, head), handed out dynamically (longest first). A query block
 * visits only the keys of its own document up to its last row, in steps of AT_Q_BK keys;
 * a key block visits only the queries from its first row to the document end, in steps
 * of AT_DKV_BQ. So the work is ~causal and only the steps crossing the diagonal are masked.
 * Memory is O(block) per thread plus D [T, Hq] in backward: no [T, T] buffer ever exists.
 *
 * Forward: online softmax (running max m, running sum l, rescaled accumulator); the
 * scores are kept in log2 units (q or k pre-multiplied by scale * log2 e) and lse is
 * returned in natural log.
 * Backward (FlashAttention-2 math, deterministic, no atomics, same bits for any thread
 * count):
 *   D_i = dO_i . O_i ; P = exp(S*scale - lse) ; dP = dO V^T ; dS = P * (dP - D)
 *   pass 1 over query blocks: dQ = scale * dS K          (each task owns its dq rows)
 *   pass 2 over key blocks:   dV = P^T dO, dK = scale * dS^T Q, summed over the query
 *                             heads of the group          (each task owns its dk/dv rows)
 * S and dP are recomputed in both passes (7 block products instead of 5: the price of
 * having no atomics and no per-thread dq copies).
 *
 * The block products use a register-blocked micro-kernel written with GCC vector types
 * (cpu_attention_impl.h). On x86-64 with GCC it is compiled three times (AVX-512,
 * AVX2+FMA, baseline SSE2) and the variant is picked at run time from the CPU's features,
 * so the library stays portable without -march=native. Other compilers and targets get
 * the portable 4-wide variant. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/cpu/cpu_internal.h"

#define AT_B 128 /* rows per block: query blocks (forward, dq pass), key blocks (dk/dv pass) */
#define AT_VWMAX 16 /* widest vector (floats): scratch rows are padded to a multiple of it */
#define AT_LOG2E 1.44269504088896341f
#define AT_LN2 0.693147180559945309f
#define AT_DKV_BQ 32 /* query rows per step of the dk/dv pass (keeps its tiles in L1) */
#define AT_Q_BK 32   /* key rows per step of the forward and the dq pass (same reason) */

#define AI static inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* vector helpers are always inlined: no ABI crossing */
#endif
#define AT_CAT2(a, b) a##_##b
#define AT_CAT(a, b) AT_CAT2(a, b)
#define AT_FN(name) AT_CAT(name, AT_SFX)

static int64_t rup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---------------------------------------------------------------- arguments, scratch */

typedef struct {
    float *o, *lse, *dq, *dk, *dv, *D; /* D [T, Hq]: rowsum(dO * O) */
    const float *q, *k, *v, *dout, *lsec;
    int64_t os, qs, ks, vs, dqs, dks, dvs, dos;
    int64_t T, Hq, Hkv, d, group;
    float scale;
} AttnArgs;

typedef struct {
    float *xt;   // [d, B]   transposed operand: Q^T (forward, dq pass) or K^T (dk/dv pass)
    float *yt;   // [d, B]   transposed operand: dO^T (dq pass) or V^T (dk/dv pass)
    float *kp;   // [B, dp]  K rows of a key step (row-padded copy, only when d % vector != 0)
    float *vp;   // [B, dp]  V rows of a key step
    float *qp;   // [B, dp]  Q rows of a query step
    float *dop;  // [B, dp]  dO rows of a query step
    float *s;    // [B, B]   S^T / P^T / dS^T (forward, dq pass) or S / dS (dk/dv pass)
    float *dp_;  // [B, B]   dP^T (dq pass) or dP, then P (dk/dv pass)
    float *acc;  // [B, dp]  O or dQ accumulator of a query block
    float *dka;  // [B, dp]  dK accumulator of a key block
    float *dva;  // [B, dp]  dV accumulator of a key block
    float *m, *l, *rowv;  // [B] running max / lse, running sum / D
    void *mem;
} Scratch;

static void scratch_init(Scratch *w, int64_t d) {
    const int64_t dp = rup(d, AT_VWMAX); /* >= the padded width of every variant */
    int64_t n_t = d * AT_B, n_bk = AT_B * dp, n_bq = AT_B * dp, n_s = AT_B * AT_B;
    float **slots[] = {&w->xt, &w->yt, &w->kp, &w->vp, &w->qp, &w->dop, &w->s,
                       &w->dp_, &w->acc, &w->dka, &w->dva, &w->m, &w->l, &w->rowv};
    int64_t sizes[] = {n_t, n_t, n_bk, n_bk, n_bq, n_bq, n_s, n_s, n_bq, n_bk, n_bk, AT_B, AT_B, AT_B};
    const int nslots = (int)(sizeof sizes / sizeof sizes[0]);
    int64_t total = 0;
    for (int i = 0; i < nslots; i++) total += rup(sizes[i], 16);
    float *p = ul_cpu_alloc((size_t)total * sizeof(float));
    w->mem = p;
    for (int i = 0; i < nslots; i++) {
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
    UL_ASSERT(n_docs >= 0 && cu[0] == 0 && cu[n_docs] == T, "attention: cu_seqlens must run from 0 to T=%lld",
              (long long)T);
    for (int64_t i = 0; i < n_docs; i++)
        UL_ASSERT(cu[i + 1] >= cu[i], "attention: cu_seqlens decreasing at %lld", (long long)i);
}

/* ---------------------------------------------------------------- ISA variants */

typedef void (*BlockFn)(const AttnArgs *a, Scratch *w, int64_t head, int64_t row0, int64_t nrows, int64_t doc_edge);
typedef struct {
    BlockFn fwd, dq, dkv;
} AttnImpl;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AT_X86_VARIANTS 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2")
#define AT_VW 16
#define AT_MR 8
#define AT_SFX avx512
#include "kernels/cpu/cpu_attention_impl.h"
#undef AT_VW
#undef AT_MR
#undef AT_SFX
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#define AT_VW 8
#define AT_MR 4
#define AT_SFX avx2
#include "kernels/cpu/cpu_attention_impl.h"
#undef AT_VW
#undef AT_MR
#undef AT_SFX
#pragma GCC pop_options
#endif

#define AT_VW 4
#define AT_MR 4
#define AT_SFX base
#include "kernels/cpu/cpu_attention_impl.h"
#undef AT_VW
#undef AT_MR
#undef AT_SFX

/* The widest variant this CPU runs. UL_CPU_ATTN_ISA=avx512|avx2|base narrows the choice
 * (the tests use it to cover every variant on one machine); a variant the CPU lacks is
 * never chosen. */
static AttnImpl pick_impl(void) {
    const char *want = getenv("UL_CPU_ATTN_ISA");
    (void)want;
#ifdef AT_X86_VARIANTS
    __builtin_cpu_init();
    int allow512 = !want || strcmp(want, "avx512") == 0;
    int allow2 = allow512 || strcmp(want, "avx2") == 0;
    if (allow512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return (AttnImpl){fwd_block_avx512, bwd_dq_block_avx512, bwd_dkv_block_avx512};
    if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (AttnImpl){fwd_block_avx2, bwd_dq_block_avx2, bwd_dkv_block_avx2};
#endif
    return (AttnImpl){fwd_block_base, bwd_dq_block_base, bwd_dkv_block_base};
}

/* ---------------------------------------------------------------- drivers */

/* Query rows [r0, r0 + nq) of head h; their document starts at ds. */
void ul_cpu_attention_fwd(float *o, int64_t os, float *lse, const float *q, int64_t qs, const float *k,
                          int64_t ks, const float *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                          const int64_t *cu_seqlens, int64_t n_docs, float scale) {
    check_args(T, Hq, Hkv, d, cu_seqlens, n_docs);
    if (T == 0) return;
    AttnArgs a = {.o = o, .lse = lse, .q = q, .k = k, .v = v, .os = os, .qs = qs, .ks = ks, .vs = vs,
                  .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .group = Hq / Hkv, .scale = scale};
    const AttnImpl impl = pick_impl();
    int64_t *pre = block_prefix(cu_seqlens, n_docs, AT_B);  // [n_docs + 1]
    const int64_t nblk = pre[n_docs], ntask = nblk * Hq;
#pragma omp parallel
    {
        Scratch w;
        scratch_init(&w, d);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++) {
            int64_t b = nblk - 1 - t / Hq, h = t % Hq; /* last (longest) blocks first */
            int64_t di = block_doc(pre, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t r0 = ds + (b - pre[di]) * AT_B, nq = de - r0 < AT_B ? de - r0 : AT_B;
            impl.fwd(&a, &w, h, r0, nq, ds);
        }
        ul_cpu_free(w.mem);
    }
    free(pre);
}

void ul_cpu_attention_bwd(float *dq, int64_t dqs, float *dk, int64_t dks, float *dv, int64_t dvs,
                          const float *dout, int64_t dos, const float *q, int64_t qs, const float *k, int64_t ks,
                          const float *v, int64_t vs, const float *o, int64_t os, const float *lse, int64_t T,
                          int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs,
                          float scale) {
    check_args(T, Hq, Hkv, d, cu_seqlens, n_docs);
    if (T == 0) return;
    float *D = ul_cpu_alloc((size_t)(T * Hq) * sizeof(float));  // [T, Hq]
    AttnArgs a = {.dq = dq, .dk = dk, .dv = dv, .D = D, .q = q, .k = k, .v = v, .dout = dout,
                  .lsec = lse, .os = os, .qs = qs, .ks = ks, .vs = vs, .dqs = dqs, .dks = dks, .dvs = dvs,
                  .dos = dos, .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .group = Hq / Hkv,
                  .scale = scale};
#pragma omp parallel for schedule(static) if (T * Hq * d > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < Hq; h++) {
            const float *oi = o + i * os + h * d, *gi = dout + i * dos + h * d;  // [d]
            double s = 0;
            for (int64_t e = 0; e < d; e++) s += (double)oi[e] * gi[e];
            D[i * Hq + h] = (float)s;
        }
    const AttnImpl impl = pick_impl();
    int64_t *preq = block_prefix(cu_seqlens, n_docs, AT_B);  // [n_docs + 1]
    int64_t *prek = block_prefix(cu_seqlens, n_docs, AT_B);  // [n_docs + 1]
    const int64_t nbq = preq[n_docs], nbk = prek[n_docs];
#pragma omp parallel
    {
        Scratch w;
        scratch_init(&w, d);
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t t = 0; t < nbq * Hq; t++) {
            int64_t b = nbq - 1 - t / Hq, h = t % Hq; /* last (longest) blocks first */
            int64_t di = block_doc(preq, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t r0 = ds + (b - preq[di]) * AT_B, nq = de - r0 < AT_B ? de - r0 : AT_B;
            impl.dq(&a, &w, h, r0, nq, ds);
        }
        /* pass 2 writes only dk/dv, pass 1 only dq: no barrier needed between them */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < nbk * Hkv; t++) {
            int64_t b = t / Hkv, g = t % Hkv; /* first (longest) key blocks first */
            int64_t di = block_doc(prek, n_docs, b);
            int64_t ds = cu_seqlens[di], de = cu_seqlens[di + 1];
            int64_t k0 = ds + (b - prek[di]) * AT_B, nk = de - k0 < AT_B ? de - k0 : AT_B;
            impl.dkv(&a, &w, g, k0, nk, de);
        }
        ul_cpu_free(w.mem);
    }
    free(preq);
    free(prek);
    ul_cpu_free(D);
}
