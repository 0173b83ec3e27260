/* CPU backend: memory, matmul (OpenBLAS), embedding, RMSNorm, RoPE, SwiGLU, optimizer,
 * and the KernelOps table. fp32 data; reductions that feed parameters or the loss are
 * accumulated in double in a fixed order, so results do not depend on the thread count. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/cpu/cpu_internal.h"

/* ---------------------------------------------------------------- memory */

/* Accounting of the backend's memory (UlMemStats). Allocations may come from OpenMP
 * threads (attention scratch), hence atomics. Every block carries a 64-byte header with
 * its requested size and kind, so free() knows what to subtract. */
typedef struct {
    _Atomic int64_t cur[2], peak[2]; /* [0] "device" (alloc), [1] host (host_alloc) */
} CpuMem;
static CpuMem g_cpu_mem;

#define CPU_HDR 64

static void *cpu_alloc_kind(size_t bytes, int kind) {
    size_t n = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple of the alignment */
    if (n < bytes || n + CPU_HDR < n) UL_FATAL("allocation size overflow (%zu bytes)", bytes);
    char *p = aligned_alloc(64, n + CPU_HDR);
    if (!p) UL_FATAL("out of host memory allocating %zu bytes", bytes);
    memset(p + CPU_HDR, 0, n);
    ((int64_t *)p)[0] = (int64_t)bytes;
    ((int64_t *)p)[1] = kind;
    int64_t now = atomic_fetch_add(&g_cpu_mem.cur[kind], (int64_t)bytes) + (int64_t)bytes;
    int64_t pk = atomic_load(&g_cpu_mem.peak[kind]);
    while (now > pk && !atomic_compare_exchange_weak(&g_cpu_mem.peak[kind], &pk, now)) {
    }
    return p + CPU_HDR;
}

static void cpu_free_kind(void *q) {
    if (!q) return;
    char *p = (char *)q - CPU_HDR;
    atomic_fetch_sub(&g_cpu_mem.cur[((int64_t *)p)[1]], ((int64_t *)p)[0]);
    free(p);
}

void *ul_cpu_alloc(size_t bytes) { return cpu_alloc_kind(bytes, 0); }
void ul_cpu_free(void *p) { cpu_free_kind(p); }
void *ul_cpu_host_alloc(size_t bytes) { return cpu_alloc_kind(bytes, 1); }
void ul_cpu_host_free(void *p) { cpu_free_kind(p); }

void ul_cpu_mem_stats(UlMemStats *s) {
    s->dev_cur = atomic_load(&g_cpu_mem.cur[0]);
    s->dev_peak = atomic_load(&g_cpu_mem.peak[0]);
    s->host_cur = atomic_load(&g_cpu_mem.cur[1]);
    s->host_peak = atomic_load(&g_cpu_mem.peak[1]);
}

void ul_cpu_mem_reset_peak(void) {
    for (int i = 0; i < 2; i++) atomic_store(&g_cpu_mem.peak[i], atomic_load(&g_cpu_mem.cur[i]));
}

void ul_cpu_zero(float *x, int64_t n) {
    if (n <= 0) return;
    const int64_t CH = 1 << 16;
    int64_t nch = (n + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (n > 4 * UL_CPU_PAR_MIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t a = c * CH, b = a + CH < n ? a + CH : n;
        memset(x + a, 0, (size_t)(b - a) * sizeof(float));
    }
}

void ul_cpu_copy2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                   int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
#pragma omp parallel for schedule(static) if (rows * cols > UL_CPU_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) memmove(dst + r * dst_stride, src + r * src_stride, (size_t)cols * sizeof(float));
}

void ul_cpu_add2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                  int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
#pragma omp parallel for schedule(static) if (rows * cols > UL_CPU_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *d = dst + r * dst_stride;         // [cols]
        const float *s = src + r * src_stride;   // [cols]
        for (int64_t c = 0; c < cols; c++) d[c] += s[c];
    }
}

/* ---------------------------------------------------------------- matmul */

/* C = beta * C for the degenerate products (K == 0 or alpha == 0); beta == 0 writes zeros
 * (BLAS semantics: C is not read, so NaN in C does not survive). */
static void scale_c(float beta, float *C, int64_t ldc, int64_t M, int64_t N) {
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;  // [N]
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
}

void ul_cpu_matmul(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(beta, C, ldc, M, N);
        return;
    }
    UL_ASSERT(lda > 0 && lda <= INT_MAX && ldb > 0 && ldb <= INT_MAX && ldc > 0 && ldc <= INT_MAX,
              "matmul: leading dimension out of range (lda %lld ldb %lld ldc %lld)", (long long)lda,
              (long long)ldb, (long long)ldc);
    /* BLAS takes int sizes: split any dimension above 2^30 into chunks. */
    const int64_t CH = (int64_t)1 << 30;
    for (int64_t m0 = 0; m0 < M; m0 += CH) {
        int64_t mc = M - m0 < CH ? M - m0 : CH;
        for (int64_t n0 = 0; n0 < N; n0 += CH) {
            int64_t nc = N - n0 < CH ? N - n0 : CH;
            for (int64_t k0 = 0; k0 < K; k0 += CH) {
                int64_t kc = K - k0 < CH ? K - k0 : CH;
                const float *a = transA ? A + k0 * lda + m0 : A + m0 * lda + k0;  // op(A)[m0:, k0:]
                const float *b = transB ? B + n0 * ldb + k0 : B + k0 * ldb + n0;  // op(B)[k0:, n0:]
                float *c = C + m0 * ldc + n0;                                     // C[m0:, n0:]
                cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                            (int)mc, (int)nc, (int)kc, alpha, a, (int)lda, b, (int)ldb, k0 == 0 ? beta : 1.0f, c,
                            (int)ldc);
            }
        }
    }
}

/* ---------------------------------------------------------------- embedding */

void ul_cpu_embedding_fwd(float *out, const int32_t *tokens, const float *wte, int64_t t, int64_t D) {
#pragma omp parallel for schedule(static) if (t * D > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < t; i++) {
        UL_ASSERT(tokens[i] >= 0, "embedding: negative token id %d at %lld", tokens[i], (long long)i);
        memcpy(out + i * D, wte + (int64_t)tokens[i] * D, (size_t)D * sizeof(float));
    }
}

/* Race-free and deterministic: threads own disjoint column ranges of dwte and walk all
 * tokens in order, so every dwte element is summed in token order whatever the threads. */
void ul_cpu_embedding_bwd(float *dwte, const float *dout, const int32_t *tokens, int64_t t, int64_t D) {
    const int64_t CW = 64;
    int64_t nch = (D + CW - 1) / CW;
#pragma omp parallel for schedule(static) if (t * D > UL_CPU_PAR_MIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t c0 = c * CW, c1 = c0 + CW < D ? c0 + CW : D;
        for (int64_t i = 0; i < t; i++) {
            UL_ASSERT(tokens[i] >= 0, "embedding: negative token id %d at %lld", tokens[i], (long long)i);
            float *dw = dwte + (int64_t)tokens[i] * D;  // [D]
            const float *g = dout + i * D;              // [D]
            for (int64_t j = c0; j < c1; j++) dw[j] += g[j];
        }
    }
}

/* ---------------------------------------------------------------- RMSNorm */

/* RMSNorm over rows of d elements: row (i, h) at x + i xs + h d, for i < t, h < nh.
 * rmsnorm is nh = 1, d = D; headnorm (q_norm, k_norm) is d = head_dim within strided token rows. */
void ul_cpu_headnorm_fwd(float *y, int64_t ys, float *rstd, const float *x, int64_t xs, const float *w, int64_t t,
                         int64_t nh, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (t * nh * d > UL_CPU_PAR_MIN)
    for (int64_t r = 0; r < t * nh; r++) {
        const float *xi = x + (r / nh) * xs + (r % nh) * d;  // [d]
        float *yi = y + (r / nh) * ys + (r % nh) * d;        // [d]
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        rstd[r] = rs;
        for (int64_t j = 0; j < d; j++) yi[j] = (xi[j] * rs) * w[j];
    }
}

/* dw[j] += sum over rows of dy x rstd (if x) or of dy (bias gradient, x = NULL): threads own
 * column ranges, rows summed in order in double. Rows as in ul_cpu_headnorm_fwd. */
static void col_sums(float *dw, const float *dy, int64_t dys, const float *x, int64_t xs, const float *rstd,
                     int64_t t, int64_t nh, int64_t d) {
    const int64_t CW = 64;
    int64_t nch = (d + CW - 1) / CW;
#pragma omp parallel for schedule(static) if (t * nh * d > UL_CPU_PAR_MIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t c0 = c * CW, c1 = c0 + CW < d ? c0 + CW : d;
        double acc[64] = {0};  // [CW]
        for (int64_t r = 0; r < t * nh; r++) {
            const float *gi = dy + (r / nh) * dys + (r % nh) * d;
            if (x) {
                const float *xi = x + (r / nh) * xs + (r % nh) * d;
                double rs = rstd[r];
                for (int64_t j = c0; j < c1; j++) acc[j - c0] += (double)gi[j] * xi[j] * rs;
            } else {
                for (int64_t j = c0; j < c1; j++) acc[j - c0] += (double)gi[j];
            }
        }
        for (int64_t j = c0; j < c1; j++) dw[j] += (float)acc[j - c0];
    }
}

/* dx overwritten (acc = 0; dx may be dy) or accumulated into (acc = 1); dw accumulates. */
static void headnorm_bwd(float *dx, int64_t dxs, float *dw, const float *dy, int64_t dys, const float *x,
                         int64_t xs, const float *w, const float *rstd, int64_t t, int64_t nh, int64_t d, int acc) {
    col_sums(dw, dy, dys, x, xs, rstd, t, nh, d); /* first: dx may overwrite dy */
#pragma omp parallel for schedule(static) if (t * nh * d > UL_CPU_PAR_MIN)
    for (int64_t r = 0; r < t * nh; r++) {
        const float *xi = x + (r / nh) * xs + (r % nh) * d, *gi = dy + (r / nh) * dys + (r % nh) * d;  // [d]
        float *dxi = dx + (r / nh) * dxs + (r % nh) * d;                                           // [d]
        double dot = 0;                                                                            // sum_j x w dy
        for (int64_t j = 0; j < d; j++) dot += (double)xi[j] * ((double)w[j] * gi[j]);
        float rs = rstd[r];
        float c = (float)(dot / (double)d * (double)rs * rs * rs);
        for (int64_t j = 0; j < d; j++) dxi[j] = (acc ? dxi[j] : 0.0f) + ((w[j] * gi[j]) * rs - xi[j] * c);
    }
}

void ul_cpu_headnorm_bwd(float *dx, int64_t dxs, float *dw, const float *dy, int64_t dys, const float *x, int64_t xs,
                         const float *w, const float *rstd, int64_t t, int64_t nh, int64_t d) {
    headnorm_bwd(dx, dxs, dw, dy, dys, x, xs, w, rstd, t, nh, d, 0);
}

void ul_cpu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t t, int64_t D, float eps) {
    ul_cpu_headnorm_fwd(y, D, rstd, x, D, w, t, 1, D, eps);
}

void ul_cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        int64_t t, int64_t D) {
    headnorm_bwd(dx, D, dw, dy, D, x, D, w, rstd, t, 1, D, 1);
}

/* ---------------------------------------------------------------- bias */

void ul_cpu_bias_add(float *y, int64_t ys, const float *b, int64_t t, int64_t n) {
#pragma omp parallel for schedule(static) if (t * n > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < t; i++)
        for (int64_t j = 0; j < n; j++) y[i * ys + j] += b[j];
}

void ul_cpu_bias_bwd(float *db, const float *dy, int64_t dys, int64_t t, int64_t n) {
    col_sums(db, dy, dys, NULL, 0, NULL, t, 1, n);
}

/* ---------------------------------------------------------------- RoPE */

void ul_cpu_rope(float *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                 const float *inv_freq, int inverse) {
    UL_ASSERT(d % 2 == 0, "rope: head dim %lld is odd", (long long)d);
    const int64_t half = d / 2;
#pragma omp parallel
    {
        float *cs = ul_malloc((size_t)(2 * half > 0 ? 2 * half : 1) * sizeof(float));  // [2, d/2] cos, sin
#pragma omp for schedule(static)
        for (int64_t i = 0; i < t; i++) {
            for (int64_t j = 0; j < half; j++) {
                float ang = (float)pos[i] * inv_freq[j]; /* fp32 product, as transformers */
                cs[j] = (float)cos((double)ang);
                cs[half + j] = inverse ? -(float)sin((double)ang) : (float)sin((double)ang);
            }
            for (int64_t h = 0; h < nh; h++) {
                float *xh = x + i * stride + h * d;  // [d]
                for (int64_t j = 0; j < half; j++) {
                    float x1 = xh[j], x2 = xh[j + half], c = cs[j], s = cs[half + j];
                    xh[j] = x1 * c - x2 * s;
                    xh[j + half] = x2 * c + x1 * s;
                }
            }
        }
        free(cs);
    }
}

/* ---------------------------------------------------------------- SwiGLU */

void ul_cpu_swiglu_fwd(float *h, const float *g, const float *u, int64_t n) {
#pragma omp parallel for schedule(static) if (n > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        h[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

/* May run in place (dg == g, du == u): each element's inputs are loaded before its stores. */
void ul_cpu_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
#pragma omp parallel for schedule(static) if (n > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = g[i], uu = u[i], gd = dh[i];
        float s = 1.0f / (1.0f + expf(-x));
        du[i] = gd * (x * s);
        dg[i] = gd * uu * (s * (1.0f + x * (1.0f - s)));
    }
}

/* ---------------------------------------------------------------- optimizer */

/* Fixed chunks of 2^16 elements, each summed in double, chunks summed in order: the
 * result is bitwise the same for any thread count. */
double ul_cpu_sumsq(const float *x, int64_t n) {
    if (n <= 0) return 0.0;
    const int64_t CH = 1 << 16;
    int64_t nch = (n + CH - 1) / CH;
    double stackp[256];
    double *part = nch <= 256 ? stackp : ul_malloc((size_t)nch * sizeof(double));  // [nch]
#pragma omp parallel for schedule(static) if (n > UL_CPU_PAR_MIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t a = c * CH, b = a + CH < n ? a + CH : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = a; i < b; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int64_t c = 0; c < nch; c++) s += part[c];
    if (part != stackp) free(part);
    return s;
}

void ul_cpu_scale(float *x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* The arithmetic of torch.optim.AdamW (single-tensor path): decay first, lerp for m,
 * bias corrections in double, denom = sqrt(v) / sqrt(bc2) + eps. */
void ul_cpu_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                  float eps, float wd, int64_t t) {
    UL_ASSERT(t >= 1, "adamw: step %lld must be >= 1", (long long)t);
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = (float)(1.0 - (double)lr * (double)wd);
    const float w1 = (float)(1.0 - (double)b1); /* lerp weight */
    const float omb2 = (float)(1.0 - (double)b2);
#pragma omp parallel for schedule(static) if (n > UL_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i];
        mi = w1 < 0.5f ? mi + w1 * (gi - mi) : gi - (gi - mi) * (1.0f - w1);
        float vi = v[i] * b2 + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
}
