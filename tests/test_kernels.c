/* CPU kernels against independent float64 references (fresh random inputs, ragged sizes),
 * every backward against central finite differences of the float64 reference forward.
 *
 *   test_kernels            full sizes
 *   test_kernels --small    smaller sizes (the ASan/UBSan build)
 *   ... --seed N            other random inputs (default: a fixed seed)
 *   test_kernels --bench T  time attention fwd+bwd at T tokens (Hq=4, Hkv=2, d=32), no checks */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/common.h"
#include "kernels/kernels.h"
#include "testutil.h"

#define TOL_FWD 1e-5
#define TOL_BWD 1e-4
#define TOL_FD 1e-6 /* float64 analytic vs float64 finite differences */

typedef struct {
    const KernelOps *K;
    UlRng rng;
    int small;
} Ctx;

/* ---------------------------------------------------------------- helpers */

static double urand(Ctx *c, double lo, double hi) { return lo + (hi - lo) * ul_rng_uniform(&c->rng); }
static int64_t irand(Ctx *c, int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)(ul_rng_u64(&c->rng) % (uint64_t)(hi - lo + 1));
}
static float *fvec(int64_t n) { return ul_calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double *dvec(int64_t n) { return ul_calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }
static void fill(Ctx *c, float *x, int64_t n, double amp) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)urand(c, -amp, amp);
}
static double *to_d(const float *x, int64_t n) {
    double *y = dvec(n);
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
/* max|a-b| / max(max|b|, floor), both float64 */
static double rel_dd(const double *a, const double *b, int64_t n, double floor) {
    double md = 0, mr = floor;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mr) mr = fabs(b[i]);
    }
    return md / mr;
}
static int64_t count_ne(const float *x, int64_t n, float v) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += memcmp(&x[i], &v, sizeof v) != 0;
    return c;
}

/* Central finite differences of a float64 scalar function f(x) w.r.t. every entry of x. */
typedef double (*ScalarFn)(void *ctx);
static void fd_grad(ScalarFn f, void *ctx, double *x, int64_t n, double *g) {
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i], h = 1e-6 * (fabs(x0) > 1 ? fabs(x0) : 1);
        x[i] = x0 + h;
        double fp = f(ctx);
        x[i] = x0 - h;
        double fm = f(ctx);
        x[i] = x0;
        g[i] = (fp - fm) / (2 * h);
    }
}

/* ---------------------------------------------------------------- memory ops */

static void test_memory(Ctx *c) {
    const KernelOps *K = c->K;
    for (int rep = 0; rep < 4; rep++) {
        int64_t n = irand(c, 1, 5000);
        float *p = K->alloc((size_t)n * sizeof(float));
        CHECK(((uintptr_t)p & 63) == 0, "alloc: %p not 64-byte aligned", (void *)p);
        CHECK(count_ne(p, n, 0.0f) == 0, "alloc: not zero-filled");
        fill(c, p, n, 1);
        int64_t m = n - irand(c, 0, n - 1);
        K->zero(p, (size_t)m * sizeof(float));
        CHECK(count_ne(p, m, 0.0f) == 0, "zero: %lld elements left", (long long)count_ne(p, m, 0.0f));
        CHECK(m == n || p[m] != 0.0f, "zero: wrote past n");
        K->free(p);
    }
    /* upload / download / sync / to_act / to_f32: plain copies for the fp32 CPU backend */
    {
        CHECK(K->act_bytes == sizeof(float), "cpu act_bytes %zu", K->act_bytes);
        int64_t n = irand(c, 1, 3000);
        float *h = fvec(n), *b = K->alloc((size_t)n * sizeof(float)), *b2 = K->alloc((size_t)n * sizeof(float));
        float *back = fvec(n);
        fill(c, h, n, 3);
        K->upload(b, h, (size_t)n * sizeof(float));
        K->to_act(b2, b, n);
        K->to_f32(b, b2, n);
        K->sync();
        K->download(back, b, (size_t)n * sizeof(float));
        CHECK(memcmp(h, back, (size_t)n * sizeof(float)) == 0, "upload/to_act/to_f32/download round trip");
        K->free(b), K->free(b2), free(h), free(back);
    }
    /* copy2d / add2d with different strides; untouched elements stay */
    int64_t rows = irand(c, 1, 40), cols = irand(c, 1, 30), ds = cols + irand(c, 0, 7), ss = cols + irand(c, 0, 9);
    float *dst = fvec(rows * ds), *src = fvec(rows * ss), *d0 = fvec(rows * ds);
    fill(c, dst, rows * ds, 1);
    fill(c, src, rows * ss, 1);
    memcpy(d0, dst, (size_t)(rows * ds) * sizeof(float));
    K->add2d(dst, ds, src, ss, rows, cols);
    int bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < ds; j++) {
            float want = j < cols ? d0[r * ds + j] + src[r * ss + j] : d0[r * ds + j];
            bad += dst[r * ds + j] != want;
        }
    CHECK(bad == 0, "add2d: %d wrong elements", bad);
    K->copy2d(dst, ds, src, ss, rows, cols);
    bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < ds; j++) bad += dst[r * ds + j] != (j < cols ? src[r * ss + j] : d0[r * ds + j]);
    CHECK(bad == 0, "copy2d: %d wrong elements", bad);
    free(dst), free(src), free(d0);
}

/* ---------------------------------------------------------------- matmul */

typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb;
    double *A, *B, *R; /* A, B as stored; R [M, N] the loss weights */
} MmCtx;

static double mm_at(const MmCtx *m, const double *X, int trans, int64_t ld, int64_t i, int64_t j) {
    return trans ? X[j * ld + i] : X[i * ld + j];
}
static void mm_ref(const MmCtx *m, double *C) {  // C [M, N] = op(A) op(B)
    for (int64_t i = 0; i < m->M; i++)
        for (int64_t j = 0; j < m->N; j++) {
            double s = 0;
            for (int64_t p = 0; p < m->K; p++)
                s += mm_at(m, m->A, m->ta, m->lda, i, p) * mm_at(m, m->B, m->tb, m->ldb, p, j);
            C[i * m->N + j] = s;
        }
}
static double mm_loss(void *ctx) {
    MmCtx *m = ctx;
    double *C = dvec(m->M * m->N), L = 0;
    mm_ref(m, C);
    for (int64_t i = 0; i < m->M * m->N; i++) L += C[i] * m->R[i];
    free(C);
    return L;
}

static void test_matmul(Ctx *c) {
    const KernelOps *K = c->K;
    double worst_f = 0, worst_b = 0;
    for (int rep = 0; rep < 3; rep++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta_i = 0; beta_i < 2; beta_i++) {
                    int big = rep == 0 && !c->small;
                    int64_t M = irand(c, 1, big ? 150 : 40), N = irand(c, 1, big ? 130 : 40),
                            Kd = irand(c, 1, big ? 200 : 40);
                    int64_t ar = ta ? Kd : M, ac = ta ? M : Kd, br = tb ? N : Kd, bc = tb ? Kd : N;
                    int64_t lda = ac + irand(c, 0, 5), ldb = bc + irand(c, 0, 5), ldc = N + irand(c, 0, 5);
                    float *A = fvec(ar * lda), *B = fvec(br * ldb), *C = fvec(M * ldc), *C0 = fvec(M * ldc);
                    fill(c, A, ar * lda, 1), fill(c, B, br * ldb, 1), fill(c, C, M * ldc, 1);
                    float beta = (float)beta_i, alpha = (float)urand(c, 0.5, 1.5);
                    if (beta == 0.0f)
                        for (int64_t i = 0; i < M * ldc; i++) C[i] = NAN; /* must not be read */
                    memcpy(C0, C, (size_t)(M * ldc) * sizeof(float));
                    K->matmul(ta, tb, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc, 1);
                    MmCtx m = {ta, tb, M, N, Kd, lda, ldb, to_d(A, ar * lda), to_d(B, br * ldb), NULL};
                    double *ref = dvec(M * N), *got = dvec(M * N);
                    mm_ref(&m, ref);
                    int pad_ok = 1;
                    for (int64_t i = 0; i < M; i++) {
                        for (int64_t j = 0; j < N; j++) {
                            ref[i * N + j] = alpha * ref[i * N + j] + (beta != 0 ? beta * C0[i * ldc + j] : 0);
                            got[i * N + j] = C[i * ldc + j];
                        }
                        for (int64_t j = N; j < ldc; j++) pad_ok &= memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) == 0;
                    }
                    double e = rel_dd(got, ref, M * N, 1e-30);
                    if (!(e <= worst_f)) worst_f = e;
                    CHECK(e <= TOL_FWD, "matmul ta=%d tb=%d beta=%g M=%lld N=%lld K=%lld: rel err %.3g", ta, tb,
                          beta, (long long)M, (long long)N, (long long)Kd, e);
                    CHECK(pad_ok, "matmul wrote outside C[:, :N]");

                    /* backward by the kernel's own matmuls, against finite differences of the
                     * float64 forward L = sum(R * op(A) op(B)) (small sizes) */
                    int64_t sM = irand(c, 1, 9), sN = irand(c, 1, 9), sK = irand(c, 1, 9);
                    int64_t sar = ta ? sK : sM, sac = ta ? sM : sK, sbr = tb ? sN : sK, sbc = tb ? sK : sN;
                    float *sA = fvec(sar * sac), *sB = fvec(sbr * sbc), *R = fvec(sM * sN);
                    float *dA = fvec(sar * sac), *dB = fvec(sbr * sbc);
                    fill(c, sA, sar * sac, 1), fill(c, sB, sbr * sbc, 1), fill(c, R, sM * sN, 1);
                    if (!ta) /* dA [M, K] = R op(B)^T */
                        K->matmul(0, !tb, sM, sK, sN, 1.0f, R, sN, sB, sbc, 0.0f, dA, sK, 1);
                    else /* dA [K, M] = op(B) R^T */
                        K->matmul(tb, 1, sK, sM, sN, 1.0f, sB, sbc, R, sN, 0.0f, dA, sM, 1);
                    if (!tb) /* dB [K, N] = op(A)^T R */
                        K->matmul(!ta, 0, sK, sN, sM, 1.0f, sA, sac, R, sN, 0.0f, dB, sN, 1);
                    else /* dB [N, K] = R^T op(A) */
                        K->matmul(1, ta, sN, sK, sM, 1.0f, R, sN, sA, sac, 0.0f, dB, sK, 1);
                    MmCtx s = {ta, tb, sM, sN, sK, sac, sbc, to_d(sA, sar * sac), to_d(sB, sbr * sbc), to_d(R, sM * sN)};
                    double *gA = dvec(sar * sac), *gB = dvec(sbr * sbc);
                    fd_grad(mm_loss, &s, s.A, sar * sac, gA);
                    fd_grad(mm_loss, &s, s.B, sbr * sbc, gB);
                    double eb = fmax(tu_rel_err_f64(dA, gA, sar * sac, 1e-30), tu_rel_err_f64(dB, gB, sbr * sbc, 1e-30));
                    if (!(eb <= worst_b)) worst_b = eb;
                    CHECK(eb <= TOL_BWD, "matmul backward ta=%d tb=%d vs finite differences: rel err %.3g", ta, tb, eb);
                    free(A), free(B), free(C), free(C0), free(m.A), free(m.B), free(ref), free(got);
                    free(sA), free(sB), free(R), free(dA), free(dB), free(s.A), free(s.B), free(s.R), free(gA), free(gB);
                }
    printf("  matmul: fwd %.2g, bwd-vs-fd %.2g\n", worst_f, worst_b);
}

/* ---------------------------------------------------------------- embedding */

static void test_embedding(Ctx *c) {
    const KernelOps *K = c->K;
    int64_t V = irand(c, 1, 60), D = irand(c, 1, c->small ? 100 : 300), t = irand(c, 1, c->small ? 200 : 2000);
    int32_t *tok = ul_calloc((size_t)t, sizeof(int32_t));
    for (int64_t i = 0; i < t; i++) tok[i] = (int32_t)irand(c, 0, V - 1);
    float *wte = fvec(V * D), *out = fvec(t * D), *dout = fvec(t * D), *dw = fvec(V * D), *dw1 = fvec(V * D);
    fill(c, wte, V * D, 1), fill(c, dout, t * D, 1), fill(c, dw, V * D, 1);
    memcpy(dw1, dw, (size_t)(V * D) * sizeof(float));
    K->embedding_fwd(out, tok, wte, t, D);
    int bad = 0;
    for (int64_t i = 0; i < t; i++)
        for (int64_t j = 0; j < D; j++) bad += out[i * D + j] != wte[tok[i] * D + j];
    CHECK(bad == 0, "embedding_fwd: %d wrong", bad);
    /* reference backward (accumulates) and its check against finite differences of
     * L = sum(R * wte[tok]) on a small slice */
    double *ref = to_d(dw, V * D);
    for (int64_t i = 0; i < t; i++)
        for (int64_t j = 0; j < D; j++) ref[tok[i] * D + j] += dout[i * D + j];
    K->embedding_bwd(dw, dout, tok, t, D);
    double e = tu_rel_err_f64(dw, ref, V * D, 1e-30);
    CHECK(e <= TOL_BWD, "embedding_bwd: rel err %.3g", e);
    const int nthr = omp_get_max_threads();
    omp_set_num_threads(1);
    K->embedding_bwd(dw1, dout, tok, t, D);
    omp_set_num_threads(nthr);
    CHECK(memcmp(dw, dw1, (size_t)(V * D) * sizeof(float)) == 0, "embedding_bwd depends on the thread count");
    /* the reference gradient against finite differences (the backward is a scatter-add) */
    {
        int64_t st = 7, sD = 3, sV = 4;
        int32_t stok[7] = {1, 3, 1, 0, 1, 3, 2};
        double W[12], R[21], g[12], fd[12] = {0};
        for (int i = 0; i < 12; i++) W[i] = urand(c, -1, 1);
        for (int i = 0; i < 21; i++) R[i] = urand(c, -1, 1);
        for (int64_t i = 0; i < sV * sD; i++) {
            double w0 = W[i];
            double Lp = 0, Lm = 0;
            W[i] = w0 + 1e-6;
            for (int64_t r = 0; r < st; r++)
                for (int64_t j = 0; j < sD; j++) Lp += R[r * sD + j] * W[stok[r] * sD + j];
            W[i] = w0 - 1e-6;
            for (int64_t r = 0; r < st; r++)
                for (int64_t j = 0; j < sD; j++) Lm += R[r * sD + j] * W[stok[r] * sD + j];
            W[i] = w0;
            fd[i] = (Lp - Lm) / 2e-6;
        }
        float fR[21], fg[12] = {0};
        for (int i = 0; i < 21; i++) fR[i] = (float)R[i];
        for (int i = 0; i < 21; i++) R[i] = fR[i];
        K->embedding_bwd(fg, fR, stok, st, sD);
        for (int i = 0; i < 12; i++) g[i] = fg[i];
        double ef = rel_dd(g, fd, 12, 1e-30);
        CHECK(ef <= TOL_BWD, "embedding_bwd vs finite differences: rel err %.3g", ef);
    }
    printf("  embedding: bwd %.2g\n", e);
    free(tok), free(wte), free(out), free(dout), free(dw), free(dw1), free(ref);
}

/* ---------------------------------------------------------------- RMSNorm */

typedef struct {
    int64_t t, D;
    double eps, *x, *w, *R;
} RmsCtx;

static void rms_ref_fwd(const RmsCtx *m, double *y, double *rstd) {
    for (int64_t i = 0; i < m->t; i++) {
        double ss = 0;
        for (int64_t j = 0; j < m->D; j++) ss += m->x[i * m->D + j] * m->x[i * m->D + j];
        double r = 1.0 / sqrt(ss / m->D + m->eps);
        if (rstd) rstd[i] = r;
        for (int64_t j = 0; j < m->D; j++) y[i * m->D + j] = m->x[i * m->D + j] * r * m->w[j];
    }
}
static double rms_loss(void *ctx) {
    RmsCtx *m = ctx;
    double *y = dvec(m->t * m->D), L = 0;
    rms_ref_fwd(m, y, NULL);
    for (int64_t i = 0; i < m->t * m->D; i++) L += y[i] * m->R[i];
    free(y);
    return L;
}
/* analytic float64 backward of L = sum(R * y): dx [t, D], dw [D] (overwritten) */
static void rms_ref_bwd(const RmsCtx *m, double *dx, double *dw) {
    int64_t D = m->D;
    for (int64_t j = 0; j < D; j++) dw[j] = 0;
    for (int64_t i = 0; i < m->t; i++) {
        const double *x = m->x + i * D, *g = m->R + i * D;
        double ss = 0, dot = 0;
        for (int64_t j = 0; j < D; j++) ss += x[j] * x[j], dot += x[j] * m->w[j] * g[j];
        double r = 1.0 / sqrt(ss / D + m->eps);
        for (int64_t j = 0; j < D; j++) {
            dx[i * D + j] = m->w[j] * g[j] * r - x[j] * r * r * r * dot / D;
            dw[j] += g[j] * x[j] * r;
        }
    }
}

static void test_rmsnorm(Ctx *c) {
    const KernelOps *K = c->K;
    double wf = 0, wb = 0, wfd = 0;
    for (int rep = 0; rep < 4; rep++) {
        int64_t t = irand(c, 1, 60), D = rep == 0 ? 1 : irand(c, 2, c->small ? 200 : 700);
        float eps = 1e-5f;
        float *x = fvec(t * D), *w = fvec(D), *y = fvec(t * D), *rstd = fvec(t), *dy = fvec(t * D);
        float *dx = fvec(t * D), *dx0 = fvec(t * D), *dw = fvec(D), *dw0 = fvec(D);
        fill(c, x, t * D, urand(c, 0.1, 3)), fill(c, w, D, 2), fill(c, dy, t * D, 1);
        fill(c, dx, t * D, 1), fill(c, dw, D, 1);
        memcpy(dx0, dx, (size_t)(t * D) * sizeof(float)), memcpy(dw0, dw, (size_t)D * sizeof(float));
        K->rmsnorm_fwd(y, rstd, x, w, t, D, eps);
        RmsCtx m = {t, D, eps, to_d(x, t * D), to_d(w, D), to_d(dy, t * D)};
        double *ry = dvec(t * D), *rr = dvec(t), *rdx = dvec(t * D), *rdw = dvec(D);
        rms_ref_fwd(&m, ry, rr);
        double e = fmax(tu_rel_err_f64(y, ry, t * D, 1e-30), tu_rel_err_f64(rstd, rr, t, 1e-30));
        wf = fmax(wf, e);
        CHECK(e <= TOL_FWD, "rmsnorm_fwd t=%lld D=%lld: rel err %.3g", (long long)t, (long long)D, e);
        rms_ref_bwd(&m, rdx, rdw);
        K->rmsnorm_bwd(dx, dw, dy, x, w, rstd, t, D);
        double *gx = dvec(t * D), *gw = dvec(D);
        for (int64_t i = 0; i < t * D; i++) gx[i] = (double)dx[i] - dx0[i];
        for (int64_t j = 0; j < D; j++) gw[j] = (double)dw[j] - dw0[j];
        /* For D == 1 the exact dx is tiny (w*dy*rstd*eps/(x^2+eps)) and is what is left of two
         * nearly equal terms, so fp32 can only be held to the size of those terms. */
        double term = 1e-30;
        for (int64_t i = 0; D == 1 && i < t; i++) term = fmax(term, fabs((double)w[0] * dy[i] * rr[i]));
        double eb = fmax(rel_dd(gx, rdx, t * D, term), rel_dd(gw, rdw, D, 1e-30));
        wb = fmax(wb, eb);
        CHECK(eb <= TOL_BWD, "rmsnorm_bwd t=%lld D=%lld: rel err %.3g", (long long)t, (long long)D, eb);
        /* the float64 reference backward against finite differences (on a few rows) */
        RmsCtx s = m;
        s.t = t < 3 ? t : 3;
        double *fx = dvec(s.t * D), *fw = dvec(D), *ax = dvec(s.t * D), *aw = dvec(D);
        fd_grad(rms_loss, &s, s.x, s.t * D, fx);
        fd_grad(rms_loss, &s, s.w, D, fw);
        rms_ref_bwd(&s, ax, aw);
        double efd = fmax(rel_dd(ax, fx, s.t * D, term), rel_dd(aw, fw, D, 1e-30));
        wfd = fmax(wfd, efd);
        CHECK(efd <= TOL_FD, "rmsnorm reference backward vs finite differences: rel err %.3g", efd);
        free(x), free(w), free(y), free(rstd), free(dy), free(dx), free(dx0), free(dw), free(dw0);
        free(m.x), free(m.w), free(m.R), free(ry), free(rr), free(rdx), free(rdw), free(gx), free(gw);
        free(fx), free(fw), free(ax), free(aw);
    }
    printf("  rmsnorm: fwd %.2g, bwd %.2g, ref-vs-fd %.2g\n", wf, wb, wfd);
}

/* Per-head RMSNorm (q_norm, k_norm): rows of d inside strided token rows. The reference is
 * rms_ref_* on the rows gathered into [t nh, d]; the output and gradient buffers carry
 * sentinels between and after the heads, which must stay. In-place backward (dx == dy) too. */
static void test_headnorm(Ctx *c) {
    const KernelOps *K = c->K;
    double wf = 0, wb = 0;
    for (int rep = 0; rep < 4; rep++) {
        int64_t t = irand(c, 1, 40), nh = irand(c, 1, 5), d = 2 * irand(c, 1, c->small ? 40 : 80);
        int64_t xs = nh * d + irand(c, 0, 9), ys = nh * d + irand(c, 0, 9), n = t * nh;
        int inplace = rep % 2;
        float eps = 1e-6f, sent = 7.25f;
        float *x = fvec(t * xs), *w = fvec(d), *y = fvec(t * ys), *rstd = fvec(n), *dy = fvec(t * ys);
        float *dx = fvec(t * ys), *dw = fvec(d), *dw0 = fvec(d);
        fill(c, x, t * xs, urand(c, 0.1, 3)), fill(c, w, d, 2), fill(c, dy, t * ys, 1), fill(c, dw, d, 1);
        for (int64_t i = 0; i < t * ys; i++) y[i] = dx[i] = sent;
        memcpy(dw0, dw, (size_t)d * sizeof(float));
        RmsCtx m = {n, d, eps, dvec(n * d), to_d(w, d), dvec(n * d)};
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < d; j++) {
                m.x[r * d + j] = x[(r / nh) * xs + (r % nh) * d + j];
                m.R[r * d + j] = dy[(r / nh) * ys + (r % nh) * d + j];
            }
        K->headnorm_fwd(y, ys, rstd, x, xs, w, t, nh, d, eps);
        double *ry = dvec(n * d), *rr = dvec(n), *rdx = dvec(n * d), *rdw = dvec(d), *gx = dvec(n * d), *gw = dvec(d);
        rms_ref_fwd(&m, ry, rr);
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < d; j++) gx[r * d + j] = y[(r / nh) * ys + (r % nh) * d + j];
        double e = fmax(rel_dd(gx, ry, n * d, 1e-30), tu_rel_err_f64(rstd, rr, n, 1e-30));
        int64_t kept = 0;
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = nh * d; j < ys; j++) kept += y[i * ys + j] == sent;
        CHECK(kept == t * (ys - nh * d), "headnorm_fwd wrote outside the heads");
        wf = fmax(wf, e);
        CHECK(e <= TOL_FWD, "headnorm_fwd t=%lld nh=%lld d=%lld: rel err %.3g", (long long)t, (long long)nh,
              (long long)d, e);
        float *gout = inplace ? dy : dx;
        K->headnorm_bwd(gout, ys, dw, dy, ys, x, xs, w, rstd, t, nh, d);
        rms_ref_bwd(&m, rdx, rdw);
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < d; j++) gx[r * d + j] = gout[(r / nh) * ys + (r % nh) * d + j];
        for (int64_t j = 0; j < d; j++) gw[j] = (double)dw[j] - dw0[j];
        double eb = fmax(rel_dd(gx, rdx, n * d, 1e-30), rel_dd(gw, rdw, d, 1e-30));
        kept = 0;
        for (int64_t i = 0; !inplace && i < t; i++)
            for (int64_t j = nh * d; j < ys; j++) kept += dx[i * ys + j] == sent;
        CHECK(inplace || kept == t * (ys - nh * d), "headnorm_bwd wrote outside the heads");
        wb = fmax(wb, eb);
        CHECK(eb <= TOL_BWD, "headnorm_bwd t=%lld nh=%lld d=%lld%s: rel err %.3g", (long long)t, (long long)nh,
              (long long)d, inplace ? " in place" : "", eb);
        free(x), free(w), free(y), free(rstd), free(dy), free(dx), free(dw), free(dw0);
        free(m.x), free(m.w), free(m.R), free(ry), free(rr), free(rdx), free(rdw), free(gx), free(gw);
    }
    printf("  headnorm: fwd %.2g, bwd %.2g\n", wf, wb);
}

/* Bias of a linear layer over strided rows: y += b; db += column sums of dy (accumulates).
 * The backward is linear, so it is its own finite-difference check: db is compared with the
 * float64 column sums. */
static void test_bias(Ctx *c) {
    const KernelOps *K = c->K;
    double wf = 0, wb = 0;
    for (int rep = 0; rep < 3; rep++) {
        int64_t t = irand(c, 1, 300), n = irand(c, 1, 200), ys = n + irand(c, 0, 7);
        float *y = fvec(t * ys), *y0 = fvec(t * ys), *b = fvec(n), *db = fvec(n), *db0 = fvec(n);
        fill(c, y, t * ys, 2), fill(c, b, n, 1), fill(c, db, n, 1);
        memcpy(y0, y, (size_t)(t * ys) * sizeof(float)), memcpy(db0, db, (size_t)n * sizeof(float));
        K->bias_add(y, ys, b, t, n);
        double *ry = dvec(t * ys), *gy = to_d(y, t * ys), *rdb = dvec(n), *gdb = dvec(n);
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = 0; j < ys; j++) ry[i * ys + j] = (double)y0[i * ys + j] + (j < n ? b[j] : 0.0);
        double e = rel_dd(gy, ry, t * ys, 1e-30);
        wf = fmax(wf, e);
        CHECK(e <= TOL_FWD, "bias_add t=%lld n=%lld: rel err %.3g", (long long)t, (long long)n, e);
        K->bias_bwd(db, y0, ys, t, n);
        for (int64_t j = 0; j < n; j++) {
            for (int64_t i = 0; i < t; i++) rdb[j] += y0[i * ys + j];
            gdb[j] = (double)db[j] - db0[j];
        }
        double eb = rel_dd(gdb, rdb, n, 1e-30);
        wb = fmax(wb, eb);
        CHECK(eb <= TOL_BWD, "bias_bwd t=%lld n=%lld: rel err %.3g", (long long)t, (long long)n, eb);
        free(y), free(y0), free(b), free(db), free(db0), free(ry), free(gy), free(rdb), free(gdb);
    }
    printf("  bias: fwd %.2g, bwd %.2g\n", wf, wb);
}

/* ---------------------------------------------------------------- RoPE */

typedef struct {
    int64_t t, nh, d;
    const int32_t *pos;
    const float *inv_freq;
    double *x, *R; /* x [t, nh, d] packed */
} RopeCtx;

/* y = rope(x) (inverse: transpose rotation) in float64; the angle is the fp32 product */
static void rope_ref(const RopeCtx *m, const double *x, double *y, int inverse) {
    int64_t half = m->d / 2;
    for (int64_t i = 0; i < m->t; i++)
        for (int64_t h = 0; h < m->nh; h++)
            for (int64_t j = 0; j < half; j++) {
                float ang = (float)m->pos[i] * m->inv_freq[j];
                double cs = cos((double)ang), sn = sin((double)ang) * (inverse ? -1 : 1);
                const double *xh = x + (i * m->nh + h) * m->d;
                double *yh = y + (i * m->nh + h) * m->d;
                yh[j] = xh[j] * cs - xh[j + half] * sn;
                yh[j + half] = xh[j + half] * cs + xh[j] * sn;
            }
}
static double rope_loss(void *ctx) {
    RopeCtx *m = ctx;
    int64_t n = m->t * m->nh * m->d;
    double *y = dvec(n), L = 0;
    rope_ref(m, m->x, y, 0);
    for (int64_t i = 0; i < n; i++) L += y[i] * m->R[i];
    free(y);
    return L;
}

static void test_rope(Ctx *c) {
    const KernelOps *K = c->K;
    double wf = 0, wb = 0, wfd = 0;
    for (int rep = 0; rep < 4; rep++) {
        int64_t t = irand(c, 1, 50), nh = irand(c, 1, 5), d = 2 * irand(c, 1, 40), stride = nh * d + irand(c, 0, 9);
        int32_t *pos = ul_calloc((size_t)t, sizeof(int32_t));
        for (int64_t i = 0; i < t; i++) pos[i] = (int32_t)(rep == 1 ? irand(c, 0, 20000000) : irand(c, 0, 9000));
        float *inv = fvec(d / 2);
        for (int64_t j = 0; j < d / 2; j++) inv[j] = (float)(1.0 / pow(500000.0, (double)(2 * j) / (double)d));
        int64_t n = t * nh * d;
        float *xs = fvec(t * stride), *x0 = fvec(t * stride), *rs = fvec(t * stride);
        fill(c, xs, t * stride, 1), fill(c, rs, t * stride, 1);
        memcpy(x0, xs, (size_t)(t * stride) * sizeof(float));
        RopeCtx m = {t, nh, d, pos, inv, dvec(n), dvec(n)};
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = 0; j < nh * d; j++) m.x[i * nh * d + j] = xs[i * stride + j], m.R[i * nh * d + j] = rs[i * stride + j];
        double *ry = dvec(n), *rg = dvec(n), *got = dvec(n);
        rope_ref(&m, m.x, ry, 0);
        K->rope(xs, stride, t, nh, d, pos, inv, 0);
        int pad_ok = 1;
        for (int64_t i = 0; i < t; i++) {
            for (int64_t j = 0; j < nh * d; j++) got[i * nh * d + j] = xs[i * stride + j];
            for (int64_t j = nh * d; j < stride; j++) pad_ok &= xs[i * stride + j] == x0[i * stride + j];
        }
        double e = rel_dd(got, ry, n, 1e-30);
        wf = fmax(wf, e);
        CHECK(e <= TOL_FWD, "rope t=%lld nh=%lld d=%lld: rel err %.3g", (long long)t, (long long)nh, (long long)d, e);
        CHECK(pad_ok, "rope wrote into the row padding");
        /* inverse(rope(x)) == x */
        K->rope(xs, stride, t, nh, d, pos, inv, 1);
        double er = tu_rel_err_f32(xs, x0, t * stride, 1e-30);
        CHECK(er <= TOL_FWD, "rope inverse does not undo rope: rel err %.3g", er);
        /* backward: the kernel's inverse applied to R, against the float64 transpose and
         * against finite differences of L = sum(R * rope(x)) */
        rope_ref(&m, m.R, rg, 1);
        K->rope(rs, stride, t, nh, d, pos, inv, 1);
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = 0; j < nh * d; j++) got[i * nh * d + j] = rs[i * stride + j];
        double eb = rel_dd(got, rg, n, 1e-30);
        wb = fmax(wb, eb);
        CHECK(eb <= TOL_BWD, "rope backward (inverse=1): rel err %.3g", eb);
        RopeCtx s = m;
        s.t = t < 4 ? t : 4;
        double *fd = dvec(s.t * nh * d);
        fd_grad(rope_loss, &s, s.x, s.t * nh * d, fd);
        double efd = rel_dd(rg, fd, s.t * nh * d, 1e-30);
        wfd = fmax(wfd, efd);
        CHECK(efd <= TOL_FD, "rope reference backward vs finite differences: rel err %.3g", efd);
        free(pos), free(inv), free(xs), free(x0), free(rs), free(m.x), free(m.R), free(ry), free(rg), free(got), free(fd);
    }
    printf("  rope: fwd %.2g, bwd %.2g, ref-vs-fd %.2g\n", wf, wb, wfd);
}

/* ---------------------------------------------------------------- SwiGLU */

typedef struct {
    int64_t n;
    double *g, *u, *R;
} SwCtx;
static double silu_d(double x) { return x / (1 + exp(-x)); }
static double sw_loss(void *ctx) {
    SwCtx *m = ctx;
    double L = 0;
    for (int64_t i = 0; i < m->n; i++) L += silu_d(m->g[i]) * m->u[i] * m->R[i];
    return L;
}

static void test_swiglu(Ctx *c) {
    const KernelOps *K = c->K;
    int64_t n = irand(c, 1, c->small ? 5000 : 100000);
    float *g = fvec(n), *u = fvec(n), *h = fvec(n), *dh = fvec(n), *dg = fvec(n), *du = fvec(n);
    fill(c, g, n, 9), fill(c, u, n, 2), fill(c, dh, n, 1);
    for (int64_t i = 0; i < n; i++) dg[i] = du[i] = NAN; /* overwritten */
    K->swiglu_fwd(h, g, u, n);
    K->swiglu_bwd(dg, du, dh, g, u, n);
    double *rh = dvec(n), *rdg = dvec(n), *rdu = dvec(n);
    for (int64_t i = 0; i < n; i++) {
        double x = g[i], s = 1 / (1 + exp(-x));
        rh[i] = x * s * u[i];
        rdu[i] = dh[i] * x * s;
        rdg[i] = dh[i] * u[i] * s * (1 + x * (1 - s));
    }
    double e = tu_rel_err_f64(h, rh, n, 1e-30);
    double eb = fmax(tu_rel_err_f64(dg, rdg, n, 1e-30), tu_rel_err_f64(du, rdu, n, 1e-30));
    CHECK(e <= TOL_FWD, "swiglu_fwd: rel err %.3g", e);
    CHECK(eb <= TOL_BWD, "swiglu_bwd: rel err %.3g", eb);
    /* in place (dg over g, du over u), as the model's MLP backward runs it: bitwise the
     * out-of-place result */
    float *ig = fvec(n), *iu = fvec(n);
    memcpy(ig, g, (size_t)n * sizeof(float));
    memcpy(iu, u, (size_t)n * sizeof(float));
    K->swiglu_bwd(ig, iu, dh, ig, iu, n);
    CHECK(memcmp(ig, dg, (size_t)n * sizeof(float)) == 0 && memcmp(iu, du, (size_t)n * sizeof(float)) == 0,
          "swiglu_bwd in place differs from out of place");
    free(ig), free(iu);
    int64_t sn = n < 50 ? n : 50;
    SwCtx s = {sn, to_d(g, sn), to_d(u, sn), to_d(dh, sn)};
    double *fg = dvec(sn), *fu = dvec(sn);
    fd_grad(sw_loss, &s, s.g, sn, fg);
    fd_grad(sw_loss, &s, s.u, sn, fu);
    double efd = fmax(rel_dd(rdg, fg, sn, 1e-30), rel_dd(rdu, fu, sn, 1e-30));
    CHECK(efd <= TOL_FD, "swiglu reference backward vs finite differences: rel err %.3g", efd);
    printf("  swiglu: fwd %.2g, bwd %.2g, ref-vs-fd %.2g\n", e, eb, efd);
    free(g), free(u), free(h), free(dh), free(dg), free(du), free(rh), free(rdg), free(rdu);
    free(s.g), free(s.u), free(s.R), free(fg), free(fu);
}

/* ---------------------------------------------------------------- attention */

/* float64 reference on packed [T, H, d] buffers */
typedef struct {
    int64_t T, Hq, Hkv, d, n_docs;
    const int64_t *cu;
    double scale;
    double *q, *k, *v, *R; /* R: dO (loss weights) [T, Hq, d] */
} AtCtx;

static int64_t doc_start(const int64_t *cu, int64_t n_docs, int64_t i) {
    int64_t lo = 0, hi = n_docs - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (cu[mid] <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    /* skip empty docs that start at i too: the doc containing i has cu[di+1] > i */
    while (cu[lo + 1] <= i) lo++;
    return cu[lo];
}

/* o and lse for row i, head h */
static void at_ref_row(const AtCtx *m, int64_t i, int64_t h, double *o, double *lse) {
    int64_t d = m->d, g = h / (m->Hq / m->Hkv), ds = doc_start(m->cu, m->n_docs, i);
    const double *qi = m->q + (i * m->Hq + h) * d;
    double mx = -INFINITY;
    for (int64_t j = ds; j <= i; j++) {
        double s = 0;
        for (int64_t e = 0; e < d; e++) s += qi[e] * m->k[(j * m->Hkv + g) * d + e];
        s *= m->scale;
        if (s > mx) mx = s;
    }
    double l = 0;
    for (int64_t e = 0; e < d; e++) o[e] = 0;
    for (int64_t j = ds; j <= i; j++) {
        double s = 0;
        for (int64_t e = 0; e < d; e++) s += qi[e] * m->k[(j * m->Hkv + g) * d + e];
        double p = exp(s * m->scale - mx);
        l += p;
        for (int64_t e = 0; e < d; e++) o[e] += p * m->v[(j * m->Hkv + g) * d + e];
    }
    for (int64_t e = 0; e < d; e++) o[e] /= l;
    *lse = mx + log(l);
}
static double at_loss(void *ctx) {
    AtCtx *m = ctx;
    double L = 0, *o = dvec(m->d), lse;
    for (int64_t i = 0; i < m->T; i++)
        for (int64_t h = 0; h < m->Hq; h++) {
            at_ref_row(m, i, h, o, &lse);
            for (int64_t e = 0; e < m->d; e++) L += o[e] * m->R[(i * m->Hq + h) * m->d + e];
        }
    free(o);
    return L;
}
/* analytic float64 backward of L = sum(R * O): dq [T, Hq, d], dk, dv [T, Hkv, d] (overwritten).
 * Rows restricted to `rows` (NULL = all) for dq; dk/dv need all rows. */
static void at_ref_bwd(const AtCtx *m, double *dq, double *dk, double *dv) {
    int64_t d = m->d, Hq = m->Hq, Hkv = m->Hkv;
    memset(dq, 0, (size_t)(m->T * Hq * d) * sizeof(double));
    memset(dk, 0, (size_t)(m->T * Hkv * d) * sizeof(double));
    memset(dv, 0, (size_t)(m->T * Hkv * d) * sizeof(double));
    double *o = dvec(d);
    for (int64_t i = 0; i < m->T; i++)
        for (int64_t h = 0; h < Hq; h++) {
            double lse;
            at_ref_row(m, i, h, o, &lse);
            int64_t g = h / (Hq / Hkv), ds = doc_start(m->cu, m->n_docs, i);
            const double *qi = m->q + (i * Hq + h) * d, *gi = m->R + (i * Hq + h) * d;
            double D = 0;
            for (int64_t e = 0; e < d; e++) D += gi[e] * o[e];
            for (int64_t j = ds; j <= i; j++) {
                const double *kj = m->k + (j * Hkv + g) * d, *vj = m->v + (j * Hkv + g) * d;
                double s = 0, dp = 0;
                for (int64_t e = 0; e < d; e++) s += qi[e] * kj[e], dp += gi[e] * vj[e];
                double p = exp(s * m->scale - lse), dsc = p * (dp - D) * m->scale;
                for (int64_t e = 0; e < d; e++) {
                    dq[(i * Hq + h) * d + e] += dsc * kj[e];
                    dk[(j * Hkv + g) * d + e] += dsc * qi[e];
                    dv[(j * Hkv + g) * d + e] += p * gi[e];
                }
            }
        }
    free(o);
}

/* random ragged documents over T tokens, with length-1 docs; returns n_docs */
static int64_t make_docs(Ctx *c, int64_t T, int64_t maxlen, int64_t *cu) {
    int64_t n = 0, at = 0;
    cu[0] = 0;
    while (at < T) {
        int64_t r = irand(c, 0, 9);
        int64_t len = r < 2 ? 1 : r < 4 ? irand(c, 2, 5) : irand(c, 1, maxlen);
        if (len > T - at) len = T - at;
        at += len;
        cu[++n] = at;
    }
    return n;
}

static void test_attention_fd(Ctx *c) {
    /* the float64 reference backward against finite differences */
    int64_t cu[4] = {0, 4, 5, 9};
    AtCtx m = {9, 4, 2, 3, 3, cu, 0.61, NULL, NULL, NULL, NULL};
    int64_t nq = m.T * m.Hq * m.d, nk = m.T * m.Hkv * m.d;
    m.q = dvec(nq), m.k = dvec(nk), m.v = dvec(nk), m.R = dvec(nq);
    for (int64_t i = 0; i < nq; i++) m.q[i] = urand(c, -1.5, 1.5), m.R[i] = urand(c, -1, 1);
    for (int64_t i = 0; i < nk; i++) m.k[i] = urand(c, -1.5, 1.5), m.v[i] = urand(c, -1, 1);
    double *dq = dvec(nq), *dk = dvec(nk), *dv = dvec(nk), *fq = dvec(nq), *fk = dvec(nk), *fv = dvec(nk);
    at_ref_bwd(&m, dq, dk, dv);
    fd_grad(at_loss, &m, m.q, nq, fq);
    fd_grad(at_loss, &m, m.k, nk, fk);
    fd_grad(at_loss, &m, m.v, nk, fv);
    double e = fmax(rel_dd(dq, fq, nq, 1e-30), fmax(rel_dd(dk, fk, nk, 1e-30), rel_dd(dv, fv, nk, 1e-30)));
    CHECK(e <= TOL_FD, "attention reference backward vs finite differences: rel err %.3g", e);
    printf("  attention: ref-vs-fd %.2g\n", e);
    free(m.q), free(m.k), free(m.v), free(m.R), free(dq), free(dk), free(dv), free(fq), free(fk), free(fv);
}

/* One configuration. layout 0: separate buffers with padded strides; 1: q,k,v (and dq,dk,dv)
 * interleaved in one [T, Hq + 2 Hkv, d] buffer with extra padding per row. */
static void test_attention_cfg(Ctx *c, int64_t T, int64_t Hq, int64_t Hkv, int64_t d, int64_t maxdoc, int layout,
                               double *wf, double *wb) {
    const KernelOps *K = c->K;
    int64_t *cu = ul_calloc((size_t)T + 2, sizeof(int64_t));
    int64_t n_docs = make_docs(c, T, maxdoc, cu);
    const float SENT = 12345.0f;
    int64_t qs, ks, vs, os, qoff, koff, voff, nbuf;
    if (layout == 1) {
        qs = ks = vs = (Hq + 2 * Hkv) * d + irand(c, 0, 5);
        qoff = 0, koff = Hq * d, voff = (Hq + Hkv) * d, nbuf = T * qs;
    } else {
        qs = Hq * d + irand(c, 0, 5), ks = Hkv * d + irand(c, 0, 5), vs = Hkv * d + irand(c, 0, 5);
        qoff = 0, koff = T * qs, voff = T * qs + T * ks, nbuf = T * (qs + ks + vs);
    }
    os = Hq * d + irand(c, 0, 3);
    float *qkv = fvec(nbuf), *dqkv = fvec(nbuf), *dqkv2 = fvec(nbuf), *o = fvec(T * os), *dout = fvec(T * os),
          *lse = fvec(T * Hq);
    float *q = qkv + qoff, *k = qkv + koff, *v = qkv + voff;
    float *dq = dqkv + qoff, *dk = dqkv + koff, *dv = dqkv + voff;
    fill(c, qkv, nbuf, 1.5), fill(c, dout, T * os, 1);
    for (int64_t i = 0; i < T * os; i++) o[i] = SENT;
    for (int64_t i = 0; i < nbuf; i++) dqkv[i] = SENT;
    for (int64_t i = 0; i < T; i++) { /* heads of the gradient buffers start as NaN: must be overwritten */
        for (int64_t j = 0; j < Hq * d; j++) dq[i * qs + j] = NAN;
        for (int64_t j = 0; j < Hkv * d; j++) dk[i * ks + j] = NAN, dv[i * vs + j] = NAN;
    }
    float scale = (float)(1.0 / sqrt((double)d));
    test_attention_fwd(K, o, os, lse, q, qs, k, ks, v, vs, T, Hq, Hkv, d, cu, n_docs, scale);
    test_attention_bwd(K, dq, qs, dk, ks, dv, vs, dout, os, q, qs, k, ks, v, vs, o, os, lse, T, Hq, Hkv, d, cu, n_docs,
                     scale);
    /* reference */
    AtCtx m = {T, Hq, Hkv, d, n_docs, cu, scale, dvec(T * Hq * d), dvec(T * Hkv * d), dvec(T * Hkv * d),
               dvec(T * Hq * d)};
    for (int64_t i = 0; i < T; i++) {
        for (int64_t j = 0; j < Hq * d; j++) m.q[i * Hq * d + j] = q[i * qs + j], m.R[i * Hq * d + j] = dout[i * os + j];
        for (int64_t j = 0; j < Hkv * d; j++) m.k[i * Hkv * d + j] = k[i * ks + j], m.v[i * Hkv * d + j] = v[i * vs + j];
    }
    double *ro = dvec(T * Hq * d), *rl = dvec(T * Hq), *go = dvec(T * Hq * d);
    double *rdq = dvec(T * Hq * d), *rdk = dvec(T * Hkv * d), *rdv = dvec(T * Hkv * d);
    double *gq = dvec(T * Hq * d), *gk = dvec(T * Hkv * d), *gv = dvec(T * Hkv * d);
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < Hq; h++) at_ref_row(&m, i, h, ro + (i * Hq + h) * d, rl + i * Hq + h);
    at_ref_bwd(&m, rdq, rdk, rdv);
    int64_t pad_bad = 0;
    for (int64_t i = 0; i < T; i++) {
        for (int64_t j = 0; j < Hq * d; j++) go[i * Hq * d + j] = o[i * os + j], gq[i * Hq * d + j] = dq[i * qs + j];
        for (int64_t j = 0; j < Hkv * d; j++) gk[i * Hkv * d + j] = dk[i * ks + j], gv[i * Hkv * d + j] = dv[i * vs + j];
        pad_bad += count_ne(o + i * os + Hq * d, os - Hq * d, SENT);
    }
    for (int64_t i = 0; i < nbuf; i++) { /* the gradient buffer outside the heads is untouched */
        int64_t r = layout == 1 ? i % qs : -1;
        int in_head = layout == 1 ? r < (Hq + 2 * Hkv) * d
                                  : (i < koff ? i % qs < Hq * d : i < voff ? (i - koff) % ks < Hkv * d
                                                                           : (i - voff) % vs < Hkv * d);
        if (!in_head) pad_bad += memcmp(&dqkv[i], &SENT, 4) != 0;
    }
    /* lse is a logarithm: its error is measured against max(|lse|, 1) */
    double ef = fmax(rel_dd(go, ro, T * Hq * d, 1e-30), tu_rel_err_f64(lse, rl, T * Hq, 1.0));
    /* dq and dk of a length-1 document are exactly 0 (P = 1, dP = D) and the kernel returns
     * rounding noise of the size of dO.v there: when every document is that short, measure
     * dq, dk against the scale of dv rather than against 0. */
    double dv_scale = 0;
    for (int64_t i = 0; i < T * Hkv * d; i++) dv_scale = fmax(dv_scale, fabs(rdv[i]));
    double eb = fmax(rel_dd(gq, rdq, T * Hq * d, 0.1 * dv_scale),
                     fmax(rel_dd(gk, rdk, T * Hkv * d, 0.1 * dv_scale), rel_dd(gv, rdv, T * Hkv * d, 1e-30)));
    *wf = fmax(*wf, ef), *wb = fmax(*wb, eb);
    CHECK(ef <= TOL_FWD, "attention_fwd T=%lld Hq=%lld Hkv=%lld d=%lld docs=%lld layout=%d: rel err %.3g",
          (long long)T, (long long)Hq, (long long)Hkv, (long long)d, (long long)n_docs, layout, ef);
    CHECK(eb <= TOL_BWD, "attention_bwd T=%lld Hq=%lld Hkv=%lld d=%lld docs=%lld layout=%d: rel err %.3g",
          (long long)T, (long long)Hq, (long long)Hkv, (long long)d, (long long)n_docs, layout, eb);
    CHECK(pad_bad == 0, "attention wrote outside its heads (%lld elements)", (long long)pad_bad);
    /* deterministic, and independent of the thread count */
    memcpy(dqkv2, dqkv, (size_t)nbuf * sizeof(float));
    const int nthr = omp_get_max_threads();
    omp_set_num_threads(1);
    test_attention_bwd(K, dqkv2 + qoff, qs, dqkv2 + koff, ks, dqkv2 + voff, vs, dout, os, q, qs, k, ks, v, vs, o, os, lse,
                     T, Hq, Hkv, d, cu, n_docs, scale);
    omp_set_num_threads(nthr);
    CHECK(memcmp(dqkv, dqkv2, (size_t)nbuf * sizeof(float)) == 0, "attention_bwd differs between 1 and N threads");
    free(cu), free(qkv), free(dqkv), free(dqkv2), free(o), free(dout), free(lse);
    free(m.q), free(m.k), free(m.v), free(m.R), free(ro), free(rl), free(go), free(rdq), free(rdk), free(rdv);
    free(gq), free(gk), free(gv);
}

static void test_attention_variant(Ctx *c, const char *isa);
static void test_attention(Ctx *c) {
    test_attention_fd(c);
    /* every instruction-set variant of the CPU kernel that this machine can run */
    const char *isas[] = {"base", "avx2", "avx512"};
    for (int v = 0; v < 3; v++) {
        setenv("UL_CPU_ATTN_ISA", isas[v], 1);
        test_attention_variant(c, isas[v]);
    }
    unsetenv("UL_CPU_ATTN_ISA");
}

static void test_attention_variant(Ctx *c, const char *isa) {
    double wf = 0, wb = 0;
    test_attention_cfg(c, 1, 1, 1, 8, 1, 0, &wf, &wb);
    test_attention_cfg(c, 150, 2, 1, 16, 80, 0, &wf, &wb);
    test_attention_cfg(c, 300, 4, 4, 32, 200, 1, &wf, &wb);
    test_attention_cfg(c, 257, 4, 1, 5, 300, 0, &wf, &wb);
    test_attention_cfg(c, 200, 3, 3, 64, 4, 1, &wf, &wb);
    test_attention_cfg(c, 70, 2, 2, 128, 70, 0, &wf, &wb);
    test_attention_cfg(c, 129, 4, 2, 1, 129, 1, &wf, &wb);
    test_attention_cfg(c, c->small ? 300 : 700, 4, 2, 32, 1 << 20, 1, &wf, &wb); /* one long doc (few docs) */
    for (int rep = 0; rep < (c->small ? 2 : 6); rep++) {
        int64_t Hkv = irand(c, 1, 3), grp = (int64_t[]){1, 2, 4}[irand(c, 0, 2)];
        test_attention_cfg(c, irand(c, 1, c->small ? 200 : 400), Hkv * grp, Hkv, irand(c, 1, 48), irand(c, 1, 300),
                           (int)irand(c, 0, 1), &wf, &wb);
    }
    printf("  attention (%s): fwd %.2g, bwd %.2g\n", isa, wf, wb);
}

/* Long sequence, many documents: must finish quickly in modest memory (no T x T buffer);
 * sampled rows and keys checked against the reference. */
static void test_attention_long(Ctx *c) {
    const KernelOps *K = c->K;
    int64_t T = c->small ? 50000 : 200000, H = 1, d = 16, maxdoc = 1024;
    int64_t *cu = ul_calloc((size_t)T + 2, sizeof(int64_t));
    int64_t n_docs = 0;
    cu[0] = 0;
    while (cu[n_docs] < T) {
        int64_t len = irand(c, 1, maxdoc);
        cu[n_docs + 1] = cu[n_docs] + (len < T - cu[n_docs] ? len : T - cu[n_docs]);
        n_docs++;
    }
    float *q = fvec(T * d), *k = fvec(T * d), *v = fvec(T * d), *o = fvec(T * d), *lse = fvec(T), *dout = fvec(T * d);
    float *dq = fvec(T * d), *dk = fvec(T * d), *dv = fvec(T * d);
    fill(c, q, T * d, 1.5), fill(c, k, T * d, 1.5), fill(c, v, T * d, 1), fill(c, dout, T * d, 1);
    fill(c, o, T * d, 1), fill(c, dq, T * d, 1), fill(c, dk, T * d, 1), fill(c, dv, T * d, 1), fill(c, lse, T, 1);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    float scale = 0.25f;
    double t0 = ul_now();
    test_attention_fwd(K, o, d, lse, q, d, k, d, v, d, T, H, H, d, cu, n_docs, scale);
    double t1 = ul_now();
    test_attention_bwd(K, dq, d, dk, d, dv, d, dout, d, q, d, k, d, v, d, o, d, lse, T, H, H, d, cu, n_docs, scale);
    double t2 = ul_now();
    getrusage(RUSAGE_SELF, &ru1);
    double grew_mb = (double)(ru1.ru_maxrss - ru0.ru_maxrss) / 1024.0;
    printf("  attention T=%lld (%lld docs, d=%lld): fwd %.3f s, bwd %.3f s, peak RSS grew %.1f MB\n", (long long)T,
           (long long)n_docs, (long long)d, t1 - t0, t2 - t1, grew_mb);
    CHECK(grew_mb < 64, "attention at T=%lld grew the peak RSS by %.1f MB", (long long)T, grew_mb);
    /* sampled rows: o, lse, dq; sampled keys: dk, dv (float64, using the reference per row) */
    AtCtx m = {T, H, H, d, n_docs, cu, scale, to_d(q, T * d), to_d(k, T * d), to_d(v, T * d), to_d(dout, T * d)};
    double ro[16], rdq[16], rl, maxe_f = 0, maxe_b = 0, mo = 1e-30, mg = 1e-30;
    for (int s = 0; s < 20; s++) {
        int64_t i = s == 0 ? T - 1 : irand(c, 0, T - 1), ds = doc_start(cu, n_docs, i);
        at_ref_row(&m, i, 0, ro, &rl);
        double D = 0;
        for (int64_t e = 0; e < d; e++) D += ro[e] * m.R[i * d + e], rdq[e] = 0;
        for (int64_t j = ds; j <= i; j++) {
            double sc = 0, dp = 0;
            for (int64_t e = 0; e < d; e++) sc += m.q[i * d + e] * m.k[j * d + e], dp += m.R[i * d + e] * m.v[j * d + e];
            double p = exp(sc * scale - rl);
            for (int64_t e = 0; e < d; e++) rdq[e] += p * (dp - D) * scale * m.k[j * d + e];
        }
        for (int64_t e = 0; e < d; e++) {
            maxe_f = fmax(maxe_f, fabs(o[i * d + e] - ro[e])), mo = fmax(mo, fabs(ro[e]));
            maxe_b = fmax(maxe_b, fabs(dq[i * d + e] - rdq[e])), mg = fmax(mg, fabs(rdq[e]));
        }
        maxe_f = fmax(maxe_f, fabs(lse[i] - rl) / fmax(fabs(rl), 1) * mo);
    }
    double rdk[16], rdv[16], mk = 1e-30, ek = 0;
    for (int s = 0; s < 5; s++) {
        int64_t j = irand(c, 0, T - 1), di = 0;
        while (cu[di + 1] <= j) di++;
        for (int64_t e = 0; e < d; e++) rdk[e] = rdv[e] = 0;
        for (int64_t i = j; i < cu[di + 1]; i++) {
            at_ref_row(&m, i, 0, ro, &rl);
            double D = 0, sc = 0, dp = 0;
            for (int64_t e = 0; e < d; e++)
                D += ro[e] * m.R[i * d + e], sc += m.q[i * d + e] * m.k[j * d + e], dp += m.R[i * d + e] * m.v[j * d + e];
            double p = exp(sc * scale - rl);
            for (int64_t e = 0; e < d; e++) rdk[e] += p * (dp - D) * scale * m.q[i * d + e], rdv[e] += p * m.R[i * d + e];
        }
        for (int64_t e = 0; e < d; e++) {
            ek = fmax(ek, fmax(fabs(dk[j * d + e] - rdk[e]), fabs(dv[j * d + e] - rdv[e])));
            mk = fmax(mk, fmax(fabs(rdk[e]), fabs(rdv[e])));
        }
    }
    CHECK(maxe_f / mo <= TOL_FWD, "long attention fwd: rel err %.3g", maxe_f / mo);
    CHECK(maxe_b / mg <= TOL_BWD, "long attention dq: rel err %.3g", maxe_b / mg);
    CHECK(ek / mk <= TOL_BWD, "long attention dk/dv: rel err %.3g", ek / mk);
    free(cu), free(q), free(k), free(v), free(o), free(lse), free(dout), free(dq), free(dk), free(dv);
    free(m.q), free(m.k), free(m.v), free(m.R);
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints wall and process CPU seconds (CPU time is steadier on a shared machine). */
static void bench_attention(Ctx *c, int64_t T) {
    const KernelOps *K = c->K;
    int64_t Hq = 4, Hkv = 2, d = 32, qs = (Hq + 2 * Hkv) * d;
    int64_t cu[2] = {0, T};
    float *qkv = fvec(T * qs), *dqkv = fvec(T * qs), *o = fvec(T * Hq * d), *dout = fvec(T * Hq * d), *lse = fvec(T * Hq);
    fill(c, qkv, T * qs, 1), fill(c, dout, T * Hq * d, 1);
    for (int rep = 0; rep < (T > 20000 ? 1 : 3); rep++) {
        double t0 = ul_now(), c0 = cpu_seconds();
        test_attention_fwd(K, o, Hq * d, lse, qkv, qs, qkv + Hq * d, qs, qkv + (Hq + Hkv) * d, qs, T, Hq, Hkv, d, cu, 1,
                         0.17677669f);
        double t1 = ul_now(), c1 = cpu_seconds();
        test_attention_bwd(K, dqkv, qs, dqkv + Hq * d, qs, dqkv + (Hq + Hkv) * d, qs, dout, Hq * d, qkv, qs, qkv + Hq * d,
                         qs, qkv + (Hq + Hkv) * d, qs, o, Hq * d, lse, T, Hq, Hkv, d, cu, 1, 0.17677669f);
        double t2 = ul_now(), c2 = cpu_seconds();
        printf("attention T=%lld Hq=%lld Hkv=%lld d=%lld threads=%d: fwd %.3f s  bwd %.3f s  total %.3f s  "
               "(cpu: fwd %.3f bwd %.3f)\n",
               (long long)T, (long long)Hq, (long long)Hkv, (long long)d, omp_get_max_threads(), t1 - t0, t2 - t1,
               t2 - t0, c1 - c0, c2 - c1);
    }
    free(qkv), free(dqkv), free(o), free(dout), free(lse);
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    int64_t n, V;
    const int32_t *lab;
    double *x, dscale;
} CeCtx;
static double ce_loss(void *ctx) { /* dscale * sum CE over valid rows */
    CeCtx *m = ctx;
    double L = 0;
    for (int64_t i = 0; i < m->n; i++) {
        if (m->lab[i] == -100) continue;
        const double *x = m->x + i * m->V;
        double mx = x[0], s = 0;
        for (int64_t j = 1; j < m->V; j++) mx = fmax(mx, x[j]);
        for (int64_t j = 0; j < m->V; j++) s += exp(x[j] - mx);
        L += mx + log(s) - x[m->lab[i]];
    }
    return L * m->dscale;
}
static void ce_ref_grad(const CeCtx *m, double *g) {
    for (int64_t i = 0; i < m->n; i++) {
        double *gi = g + i * m->V;
        const double *x = m->x + i * m->V;
        if (m->lab[i] == -100) {
            for (int64_t j = 0; j < m->V; j++) gi[j] = 0;
            continue;
        }
        double mx = x[0], s = 0;
        for (int64_t j = 1; j < m->V; j++) mx = fmax(mx, x[j]);
        for (int64_t j = 0; j < m->V; j++) s += exp(x[j] - mx);
        for (int64_t j = 0; j < m->V; j++) gi[j] = exp(x[j] - mx) / s * m->dscale;
        gi[m->lab[i]] -= m->dscale;
    }
}

static void test_cross_entropy(Ctx *c) {
    const KernelOps *K = c->K;
    double wl = 0, wg = 0, wfd = 0;
    for (int rep = 0; rep < 5; rep++) {
        int64_t n = irand(c, 1, 40), V = rep == 0 ? 1 : irand(c, 2, c->small ? 1000 : 5000);
        int32_t *lab = ul_calloc((size_t)n, sizeof(int32_t));
        for (int64_t i = 0; i < n; i++) lab[i] = irand(c, 0, 3) == 0 ? -100 : (int32_t)irand(c, 0, V - 1);
        float *x = fvec(n * V);
        fill(c, x, n * V, 6);
        for (int64_t i = 0; i < n; i++) { /* large per-row offsets: needs the max subtraction */
            float off = (float)(irand(c, 0, 2) == 0 ? 0 : urand(c, -3000, 3000));
            for (int64_t j = 0; j < V; j++) x[i * V + j] += off;
        }
        CeCtx m = {n, V, lab, to_d(x, n * V), 1.0 / (double)irand(c, 1, 1000)};
        double loss = 1.25, ref = 1.25 + ce_loss(&m) / m.dscale;
        int64_t cnt = 3, rcnt = 3;
        for (int64_t i = 0; i < n; i++) rcnt += lab[i] != -100;
        double *rg = dvec(n * V);
        ce_ref_grad(&m, rg);
        double acc[2] = {loss, (double)cnt};
        K->cross_entropy(x, lab, n, V, (float)m.dscale, acc);
        loss = acc[0];
        cnt = (int64_t)acc[1];
        double el = fabs(loss - ref) / fmax(fabs(ref), 1.0);
        double eg = tu_rel_err_f64(x, rg, n * V, 1e-30);
        int64_t ign_bad = 0;
        for (int64_t i = 0; i < n; i++)
            if (lab[i] == -100) ign_bad += count_ne(x + i * V, V, 0.0f);
        wl = fmax(wl, el), wg = fmax(wg, eg);
        CHECK(cnt == rcnt, "cross_entropy count %lld, want %lld", (long long)cnt, (long long)rcnt);
        CHECK(el <= 1e-6, "cross_entropy loss %.10g, want %.10g (rel %.3g)", loss, ref, el);
        CHECK(eg <= TOL_BWD, "cross_entropy dlogits n=%lld V=%lld: rel err %.3g", (long long)n, (long long)V, eg);
        CHECK(ign_bad == 0, "cross_entropy: ignored rows not zeroed");
        /* the float64 reference gradient against finite differences (a few rows) */
        CeCtx s = m;
        s.n = n < 3 ? n : 3;
        s.V = V < 50 ? V : 50;
        double *xs = dvec(s.n * s.V), *fd = dvec(s.n * s.V), *an = dvec(s.n * s.V);
        int32_t slab[3];
        for (int64_t i = 0; i < s.n; i++) {
            slab[i] = lab[i] == -100 || lab[i] < s.V ? lab[i] : (int32_t)(lab[i] % s.V);
            for (int64_t j = 0; j < s.V; j++) xs[i * s.V + j] = urand(c, -4, 4);
        }
        s.lab = slab, s.x = xs;
        fd_grad(ce_loss, &s, s.x, s.n * s.V, fd);
        ce_ref_grad(&s, an);
        double efd = rel_dd(an, fd, s.n * s.V, 1e-30);
        wfd = fmax(wfd, efd);
        CHECK(efd <= TOL_FD,
              "cross_entropy reference gradient vs finite differences: rel err %.3g", efd);
        free(lab), free(x), free(m.x), free(rg), free(xs), free(fd), free(an);
    }
    printf("  cross_entropy: loss %.2g, dlogits %.2g, ref-vs-fd %.2g\n", wl, wg, wfd);
}

/* ---------------------------------------------------------------- optimizer */

static void test_optimizer(Ctx *c) {
    const KernelOps *K = c->K;
    int64_t n = c->small ? 300001 : 3000017;
    float *x = fvec(n);
    fill(c, x, n, 2);
    double ref = 0;
    for (int64_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    double s2 = K->sumsq(x, n);
    const int nthr = omp_get_max_threads();
    omp_set_num_threads(1);
    double s1 = K->sumsq(x, n);
    omp_set_num_threads(nthr);
    CHECK(fabs(s2 - ref) <= 1e-12 * ref, "sumsq %.17g, want %.17g", s2, ref);
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0, "sumsq differs between 1 and N threads");
    CHECK(K->sumsq(x, 0) == 0.0, "sumsq of nothing");
    float *y = fvec(n);
    memcpy(y, x, (size_t)n * sizeof(float));
    K->scale(y, n, 0.37f);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += y[i] != x[i] * 0.37f;
    CHECK(bad == 0, "scale: %d wrong", bad);

    /* AdamW: three steps against the float64 formula of the header */
    int64_t na = 5000;
    float *p = fvec(na), *g = fvec(na), *m = fvec(na), *v = fvec(na), *p0 = fvec(na);
    double *rp = dvec(na), *rm = dvec(na), *rv = dvec(na);
    fill(c, p, na, 1);
    memcpy(p0, p, (size_t)na * sizeof(float));
    for (int64_t i = 0; i < na; i++) rp[i] = p[i];
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    for (int64_t t = 1; t <= 3; t++) {
        fill(c, g, na, t == 2 ? 1e-3 : 1);
        for (int64_t i = 0; i < na; i += 97) g[i] = 0;
        K->adamw(p, g, m, v, na, lr, b1, b2, eps, wd, t);
        for (int64_t i = 0; i < na; i++) {
            rm[i] = (double)b1 * rm[i] + (1 - (double)b1) * g[i];
            rv[i] = (double)b2 * rv[i] + (1 - (double)b2) * (double)g[i] * g[i];
            double mh = rm[i] / (1 - pow(b1, (double)t)), vh = rv[i] / (1 - pow(b2, (double)t));
            rp[i] -= (double)lr * (mh / (sqrt(vh) + eps) + (double)wd * rp[i]);
        }
    }
    double *dp = dvec(na), *rdp = dvec(na);
    for (int64_t i = 0; i < na; i++) dp[i] = (double)p[i] - p0[i], rdp[i] = rp[i] - p0[i];
    double ep = rel_dd(dp, rdp, na, 1e-30);
    double em = fmax(tu_rel_err_f64(m, rm, na, 1e-30), tu_rel_err_f64(v, rv, na, 1e-30));
    CHECK(ep <= TOL_BWD, "adamw parameter update: rel err %.3g", ep);
    CHECK(em <= TOL_FWD, "adamw moments: rel err %.3g", em);
    printf("  sumsq rel %.2g; adamw update %.2g, moments %.2g\n", fabs(s2 - ref) / ref, ep, em);
    free(x), free(y), free(p), free(g), free(m), free(v), free(p0), free(rp), free(rm), free(rv), free(dp), free(rdp);
}

/* ul_normal_at (random initialization): the moments of 2^20 draws against N(0, 1), far
 * outside their sampling error only if the generator is wrong (mean: sd 0.001, variance:
 * 0.0014, P(|x| < 1): 0.0005, kurtosis: 0.005); a pure function of (seed, index). */
static void test_normal_at(void) {
    const int64_t n = (int64_t)1 << 20;
    double s1 = 0, s2 = 0, s4 = 0, in1 = 0;
    for (int64_t i = 0; i < n; i++) {
        const double x = ul_normal_at(3, (uint64_t)i);
        s1 += x, s2 += x * x, s4 += x * x * x * x;
        in1 += fabs(x) < 1.0;
    }
    const double mean = s1 / n, var = s2 / n - mean * mean, kurt = (s4 / n) / (var * var);
    CHECK(fabs(mean) < 0.005, "normal_at: mean %.5f", mean);
    CHECK(fabs(var - 1.0) < 0.01, "normal_at: variance %.5f", var);
    CHECK(fabs(in1 / n - 0.682689) < 0.003, "normal_at: P(|x| < 1) = %.5f", in1 / n);
    CHECK(fabs(kurt - 3.0) < 0.05, "normal_at: kurtosis %.4f", kurt);
    CHECK(ul_normal_at(3, 12345) == ul_normal_at(3, 12345), "normal_at: not a function of (seed, i)");
    int same = 0;
    for (uint64_t i = 0; i < 1000; i++) same += ul_normal_at(3, i) == ul_normal_at(4, i);
    CHECK(same < 5, "normal_at: seeds 3 and 4 agree on %d of 1000 draws", same);
    double c = 0; /* neighbours uncorrelated */
    for (int64_t i = 0; i + 1 < n; i++) c += (double)ul_normal_at(3, (uint64_t)i) * ul_normal_at(3, (uint64_t)i + 1);
    CHECK(fabs(c / (n - 1)) < 0.005, "normal_at: lag-1 correlation %.5f", c / (n - 1));
}

int main(int argc, char **argv) {
    Ctx c = {.K = ul_kernels_cpu(), .small = 0};
    ul_rng_seed(&c.rng, 20240611);
    if (argc > 2 && strcmp(argv[1], "--bench") == 0) {
        bench_attention(&c, atoll(argv[2]));
        return 0;
    }
    c.small = argc > 1 && strcmp(argv[1], "--small") == 0;
    for (int i = 1; i + 1 < argc; i++) /* --seed N: other random inputs */
        if (strcmp(argv[i], "--seed") == 0) ul_rng_seed(&c.rng, (uint64_t)atoll(argv[i + 1]));
    CHECK(c.K && strcmp(c.K->name, "cpu") == 0, "backend name");
    double t0 = ul_now();
    test_normal_at();
    test_memory(&c);
    test_matmul(&c);
    test_embedding(&c);
    test_rmsnorm(&c);
    test_headnorm(&c);
    test_bias(&c);
    test_rope(&c);
    test_swiglu(&c);
    test_cross_entropy(&c);
    test_optimizer(&c);
    test_attention(&c);
    test_attention_long(&c);
    printf("  total %.2f s\n", ul_now() - t0);
    return tu_finish("test_kernels");
}
