/* The CUDA backend against the CPU backend (the reference), op by op, on random inputs that
 * are rounded to bf16 first so that both backends see the same numbers. Errors are
 * max|gpu - cpu| / max|cpu| with bf16 tolerances (the CUDA act dtype); the optimizer ops
 * (fp32 on both) must agree to fp32 rounding. Prints a table of the errors (also appended
 * to $UL_TEST_REPORT when set) and an informational attention timing line.
 *
 *   test_cuda_kernels               every op, then the timing
 *   test_cuda_kernels --only NAME   one group: memory matmul embedding rmsnorm headnorm rope swiglu
 *                                   loss optim attention bench
 * Exits 77 (ctest SKIP_RETURN_CODE) when no GPU is visible or the backend is not built. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/kernels.h"
#include "testutil.h"

static const KernelOps *G; /* CUDA */
static const KernelOps *C; /* CPU reference */
static UlRng g_rng;
static FILE *g_report;

/* ---------------------------------------------------------------- helpers */

static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_report) {
        va_start(ap, fmt);
        vfprintf(g_report, fmt, ap);
        va_end(ap);
    }
}

static void row(const char *name, double err, double tol) {
    int ok = err <= tol; /* NaN fails */
    out("| %-44s | %10.3e | %8.1e | %-4s |\n", name, err, tol, ok ? "ok" : "FAIL");
    CHECK(ok, "%s: error %.3e above tolerance %.1e", name, err, tol);
}

static float bfr(float x) { return ul_bf16_to_f32(ul_f32_to_bf16(x)); }
static double urand(double lo, double hi) { return lo + (hi - lo) * ul_rng_uniform(&g_rng); }
static int64_t irand(int64_t lo, int64_t hi) { return lo + (int64_t)(ul_rng_u64(&g_rng) % (uint64_t)(hi - lo + 1)); }
static float *fvec(int64_t n) { return ul_calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
/* random values in [-amp, amp], rounded to bf16 */
static float *rvec(int64_t n, double amp) {
    float *x = fvec(n);
    for (int64_t i = 0; i < n; i++) x[i] = bfr((float)urand(-amp, amp));
    return x;
}
static float *fdup(const float *x, int64_t n) {
    float *y = fvec(n);
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

/* act buffers: host floats -> device bf16 and back */
static void *up_act(const float *x, int64_t n) {
    uint16_t *h = ul_calloc((size_t)(n > 0 ? n : 1), 2);
    for (int64_t i = 0; i < n; i++) h[i] = ul_f32_to_bf16(x[i]);
    void *d = G->alloc((size_t)n * 2);
    G->upload(d, h, (size_t)n * 2);
    free(h);
    return d;
}
static float *down_act(const void *d, int64_t n) {
    uint16_t *h = ul_calloc((size_t)(n > 0 ? n : 1), 2);
    G->download(h, d, (size_t)n * 2);
    float *x = fvec(n);
    for (int64_t i = 0; i < n; i++) x[i] = ul_bf16_to_f32(h[i]);
    free(h);
    return x;
}
static void *up_bytes(const void *x, size_t bytes) {
    void *d = G->alloc(bytes);
    G->upload(d, x, bytes);
    return d;
}
static float *down_f32(const void *d, int64_t n) {
    float *x = fvec(n);
    G->download(x, d, (size_t)n * sizeof(float));
    return x;
}
static double rel(const float *a, const float *b, int64_t n) { return tu_rel_err_f32(a, b, n, 1e-30); }

/* rel error over the [rows, cols] block of two arrays with row stride ld */
static double rel2d(const float *a, const float *b, int64_t rows, int64_t cols, int64_t ld) {
    double md = 0, mr = 1e-30;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double d = fabs((double)a[r * ld + c] - b[r * ld + c]);
            if (!(d <= md)) md = d;
            if (fabs(b[r * ld + c]) > mr) mr = fabs(b[r * ld + c]);
        }
    return md / mr;
}

/* ---------------------------------------------------------------- memory */

static void test_memory(void) {
    /* alloc is zeroed; upload/download round trip; zero */
    int64_t n = 100003;
    unsigned char *h = ul_malloc((size_t)n);
    void *d = G->alloc((size_t)n);
    G->download(h, d, (size_t)n);
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += h[i] != 0;
    row("alloc zero-filled (nonzero bytes)", (double)nz, 0);
    for (int64_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 7 + 3);
    G->upload(d, h, (size_t)n);
    unsigned char *h2 = ul_malloc((size_t)n);
    G->download(h2, d, (size_t)n);
    row("upload/download round trip (diff bytes)", (double)(memcmp(h, h2, (size_t)n) != 0), 0);
    G->zero((char *)d + 10, 1000);
    G->download(h2, d, (size_t)n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += h2[i] != ((i >= 10 && i < 1010) ? 0 : h[i]);
    row("zero (wrong bytes)", (double)bad, 0);
    G->free(d);
    free(h), free(h2);

    /* copy2d / add2d, scalar and 16-byte paths; elements outside [:, :cols] untouched */
    const int64_t shapes[2][4] = {{37, 50, 61, 53}, {40, 64, 72, 128}}; /* rows, cols, ds, ss */
    for (int s = 0; s < 2; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], ds = shapes[s][2], ss = shapes[s][3];
        float *dst = rvec(rows * ds, 2), *src = rvec(rows * ss, 2);
        void *gd = up_act(dst, rows * ds), *gs = up_act(src, rows * ss);
        G->add2d(gd, ds, gs, ss, rows, cols);
        float *got = down_act(gd, rows * ds), *want = fdup(dst, rows * ds);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) want[r * ds + c] = bfr(dst[r * ds + c] + src[r * ss + c]);
        char name[64];
        snprintf(name, sizeof name, "add2d %s", s ? "(16-byte path)" : "(scalar path)");
        row(name, rel(got, want, rows * ds), 0);
        free(got);
        G->copy2d(gd, ds, gs, ss, rows, cols);
        got = down_act(gd, rows * ds);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) want[r * ds + c] = src[r * ss + c];
        snprintf(name, sizeof name, "copy2d %s", s ? "(16-byte path)" : "(scalar path)");
        row(name, rel(got, want, rows * ds), 0);
        free(got), free(want), free(dst), free(src);
        G->free(gd), G->free(gs);
    }

    /* to_act / to_f32 */
    n = 4099;
    float *x = fvec(n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)urand(-100, 100);
    void *gx = up_bytes(x, (size_t)n * 4), *ga = G->alloc((size_t)n * 2), *gy = G->alloc((size_t)n * 4);
    G->to_act(ga, gx, n);
    G->to_f32(gy, ga, n);
    float *y = down_f32(gy, n), *want = fvec(n);
    for (int64_t i = 0; i < n; i++) want[i] = bfr(x[i]);
    row("to_act + to_f32 (bf16 round to nearest even)", rel(y, want, n), 0);
    free(x), free(y), free(want);
    G->free(gx), G->free(ga), G->free(gy);
}

/* ---------------------------------------------------------------- matmul */

static void test_matmul(void) {
    typedef struct {
        int ta, tb;
        int64_t M, N, K;
        int c_f32;
        float alpha, beta;
        int pad;
    } Case;
    const Case cases[] = {
        {0, 0, 128, 96, 64, 0, 1.0f, 0.0f, 0},  {0, 1, 200, 136, 72, 1, 1.0f, 1.0f, 8},
        {1, 0, 64, 128, 256, 1, 0.5f, 1.0f, 0}, {1, 1, 96, 80, 48, 0, 1.0f, 0.5f, 16},
        {0, 1, 512, 1024, 256, 0, 1.0f, 0.0f, 0}, {1, 0, 256, 512, 1024, 1, 1.0f, 1.0f, 0},
        {0, 0, 33, 47, 29, 0, 1.0f, 0.0f, 3},   {1, 1, 17, 9, 13, 1, 2.0f, 1.0f, 1},
        {0, 1, 5, 7, 0, 1, 1.0f, 0.0f, 0},       {0, 1, 16, 16, 16, 0, 0.0f, 1.0f, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const Case *k = &cases[ci];
        int64_t ar = k->ta ? k->K : k->M, ac = k->ta ? k->M : k->K;
        int64_t br = k->tb ? k->N : k->K, bc = k->tb ? k->K : k->N;
        int64_t lda = ac + k->pad, ldb = bc + k->pad, ldc = k->N + k->pad;
        float *A = rvec(ar * lda + 1, 1), *B = rvec(br * ldb + 1, 1), *Cm = rvec(k->M * ldc, 1);
        float *C0 = fdup(Cm, k->M * ldc);
        void *gA = up_act(A, ar * lda + 1), *gB = up_act(B, br * ldb + 1);
        void *gC = k->c_f32 ? up_bytes(Cm, (size_t)(k->M * ldc) * 4) : up_act(Cm, k->M * ldc);
        G->matmul(k->ta, k->tb, k->M, k->N, k->K, k->alpha, gA, lda, gB, ldb, k->beta, gC, ldc, k->c_f32);
        C->matmul(k->ta, k->tb, k->M, k->N, k->K, k->alpha, A, lda, B, ldb, k->beta, Cm, ldc, 1);
        float *got = k->c_f32 ? down_f32(gC, k->M * ldc) : down_act(gC, k->M * ldc);
        char name[96];
        snprintf(name, sizeof name, "matmul ta%d tb%d %lldx%lldx%lld %s a%.1f b%.1f", k->ta, k->tb, (long long)k->M,
                 (long long)k->N, (long long)k->K, k->c_f32 ? "f32" : "bf16", k->alpha, k->beta);
        row(name, rel2d(got, Cm, k->M, k->N, ldc), k->c_f32 ? 1e-3 : 1e-2);
        int64_t pad_bad = 0; /* C[:, N:ldc] is untouched */
        for (int64_t r = 0; r < k->M; r++)
            for (int64_t j = k->N; j < ldc; j++) pad_bad += got[r * ldc + j] != C0[r * ldc + j];
        CHECK(pad_bad == 0, "%s: %lld padding elements written", name, (long long)pad_bad);
        free(got), free(A), free(B), free(Cm), free(C0);
        G->free(gA), G->free(gB), G->free(gC);
    }
}

/* ---------------------------------------------------------------- embedding */

static void test_embedding(void) {
    const int64_t V = 100, D = 72, t = 300;
    float *wte = rvec(V * D, 1), *dout = rvec(t * D, 1), *dw = rvec(V * D, 1);
    int32_t *tok = ul_calloc((size_t)t, sizeof(int32_t));
    for (int64_t i = 0; i < t; i++) tok[i] = (int32_t)irand(0, V - 1);
    void *gw = up_act(wte, V * D), *gdo = up_act(dout, t * D), *go = G->alloc((size_t)(t * D) * 2);
    void *gt = up_bytes(tok, (size_t)t * 4), *gdw = up_bytes(dw, (size_t)(V * D) * 4);
    float *ref = fvec(t * D);
    G->embedding_fwd(go, gt, gw, t, D);
    C->embedding_fwd(ref, tok, wte, t, D);
    float *got = down_act(go, t * D);
    row("embedding_fwd", rel(got, ref, t * D), 0);
    G->embedding_bwd(gdw, gdo, gt, t, D);
    C->embedding_bwd(dw, dout, tok, t, D);
    float *gotw = down_f32(gdw, V * D);
    row("embedding_bwd (accumulates, fp32)", rel(gotw, dw, V * D), 1e-5);
    free(wte), free(dout), free(dw), free(tok), free(ref), free(got), free(gotw);
    G->free(gw), G->free(gdo), G->free(go), G->free(gt), G->free(gdw);
}

/* ---------------------------------------------------------------- RMSNorm */

static void test_rmsnorm(void) {
    const int64_t shapes[2][2] = {{77, 1000}, {300, 4096}};
    for (int s = 0; s < 2; s++) {
        int64_t t = shapes[s][0], D = shapes[s][1];
        float *x = rvec(t * D, 2), *w = rvec(D, 1.5), *dy = rvec(t * D, 1), *dx = rvec(t * D, 1), *dw = rvec(D, 1);
        void *gx = up_act(x, t * D), *gw = up_act(w, D), *gdy = up_act(dy, t * D), *gdx = up_act(dx, t * D);
        void *gy = G->alloc((size_t)(t * D) * 2), *grs = G->alloc((size_t)t * 4), *gdw = up_bytes(dw, (size_t)D * 4);
        float *y = fvec(t * D), *rs = fvec(t);
        G->rmsnorm_fwd(gy, grs, gx, gw, t, D, 1e-5f);
        C->rmsnorm_fwd(y, rs, x, w, t, D, 1e-5f);
        float *gyh = down_act(gy, t * D), *grh = down_f32(grs, t);
        char name[96];
        snprintf(name, sizeof name, "rmsnorm_fwd y (t=%lld D=%lld)", (long long)t, (long long)D);
        row(name, rel(gyh, y, t * D), 1e-2);
        snprintf(name, sizeof name, "rmsnorm_fwd rstd (t=%lld D=%lld)", (long long)t, (long long)D);
        row(name, rel(grh, rs, t), 1e-5);
        G->rmsnorm_bwd(gdx, gdw, gdy, gx, gw, grs, t, D);
        C->rmsnorm_bwd(dx, dw, dy, x, w, rs, t, D);
        float *gdxh = down_act(gdx, t * D), *gdwh = down_f32(gdw, D);
        snprintf(name, sizeof name, "rmsnorm_bwd dx (accumulates, t=%lld D=%lld)", (long long)t, (long long)D);
        row(name, rel(gdxh, dx, t * D), 1e-2);
        snprintf(name, sizeof name, "rmsnorm_bwd dw (accumulates, t=%lld D=%lld)", (long long)t, (long long)D);
        row(name, rel(gdwh, dw, D), 1e-4);
        free(x), free(w), free(dy), free(dx), free(dw), free(y), free(rs), free(gyh), free(grh), free(gdxh), free(gdwh);
        G->free(gx), G->free(gw), G->free(gdy), G->free(gdx), G->free(gy), G->free(grs), G->free(gdw);
    }
}

/* Per-head RMSNorm (Qwen3's q_norm, k_norm) inside strided token rows: forward, backward
 * out of place and in place (dx == dy), and a bias add + its column-sum gradient. Shapes
 * of a Qwen3 layer's q part (32 heads of 128 in a q,k,v row) and a large row count. */
static void test_headnorm(void) {
    const int64_t shapes[2][3] = {{67, 32, 128}, {2500, 8, 64}}; /* t, nh, d */
    for (int s = 0; s < 2; s++) {
        int64_t t = shapes[s][0], nh = shapes[s][1], d = shapes[s][2], xs = nh * d + 3 * d, n = t * nh;
        float *x = rvec(t * xs, 2), *w = rvec(d, 1.5), *dy = rvec(t * xs, 1), *dw = rvec(d, 1);
        float *y = fvec(t * xs), *rs = fvec(n), *dx = fvec(t * xs), *dw2 = fdup(dw, d), *dyi = fdup(dy, t * xs);
        void *gx = up_act(x, t * xs), *gw = up_act(w, d), *gdy = up_act(dy, t * xs), *gdyi = up_act(dy, t * xs);
        void *gy = up_act(y, t * xs), *gdx = up_act(dx, t * xs), *grs = G->alloc((size_t)n * 4);
        void *gdw = up_bytes(dw, (size_t)d * 4), *gdw2 = up_bytes(dw, (size_t)d * 4);
        G->headnorm_fwd(gy, xs, grs, gx, xs, gw, t, nh, d, 1e-6f);
        C->headnorm_fwd(y, xs, rs, x, xs, w, t, nh, d, 1e-6f);
        float *gyh = down_act(gy, t * xs), *grh = down_f32(grs, n);
        char name[96];
        snprintf(name, sizeof name, "headnorm_fwd y (t=%lld nh=%lld d=%lld)", (long long)t, (long long)nh, (long long)d);
        row(name, rel(gyh, y, t * xs), 1e-2);
        snprintf(name, sizeof name, "headnorm_fwd rstd (t=%lld nh=%lld)", (long long)t, (long long)nh);
        row(name, rel(grh, rs, n), 1e-5);
        G->headnorm_bwd(gdx, xs, gdw, gdy, xs, gx, xs, gw, grs, t, nh, d);
        G->headnorm_bwd(gdyi, xs, gdw2, gdyi, xs, gx, xs, gw, grs, t, nh, d);
        C->headnorm_bwd(dx, xs, dw, dy, xs, x, xs, w, rs, t, nh, d);
        C->headnorm_bwd(dyi, xs, dw2, dyi, xs, x, xs, w, rs, t, nh, d);
        float *gdxh = down_act(gdx, t * xs), *gdwh = down_f32(gdw, d), *gdyih = down_act(gdyi, t * xs);
        float *gdw2h = down_f32(gdw2, d);
        snprintf(name, sizeof name, "headnorm_bwd dx (t=%lld nh=%lld d=%lld)", (long long)t, (long long)nh, (long long)d);
        row(name, rel(gdxh, dx, t * xs), 1e-2);
        snprintf(name, sizeof name, "headnorm_bwd dw (accumulates)");
        row(name, rel(gdwh, dw, d), 1e-4);
        snprintf(name, sizeof name, "headnorm_bwd dx in place (t=%lld)", (long long)t);
        row(name, rel(gdyih, dyi, t * xs), 1e-2);
        row("headnorm_bwd dw in place", rel(gdw2h, dw2, d), 1e-4);
        free(x), free(w), free(dy), free(dw), free(y), free(rs), free(dx), free(dw2), free(dyi), free(gyh), free(grh);
        free(gdxh), free(gdwh), free(gdyih), free(gdw2h);
        G->free(gx), G->free(gw), G->free(gdy), G->free(gdyi), G->free(gy), G->free(gdx), G->free(grs), G->free(gdw);
        G->free(gdw2);
    }
    /* bias: the q, k, v columns of 3000 tokens (Qwen2 7B's 28 + 2 x 4 heads of 128 are
     * wider; the kernel is the same) inside a wider row */
    const int64_t t = 3000, n = 9 * 64, ys = n + 40;
    float *y = rvec(t * ys, 2), *b = rvec(n, 1), *db = rvec(n, 1);
    void *gy = up_act(y, t * ys), *gb = up_act(b, n), *gdb = up_bytes(db, (size_t)n * 4);
    G->bias_add(gy, ys, gb, t, n);
    C->bias_add(y, ys, b, t, n);
    float *gyh = down_act(gy, t * ys);
    row("bias_add (strided rows)", rel(gyh, y, t * ys), 1e-2);
    for (int64_t i = 0; i < t * ys; i++) y[i] = gyh[i]; /* the same bf16 gradient on both sides */
    G->bias_bwd(gdb, gy, ys, t, n);
    C->bias_bwd(db, y, ys, t, n);
    float *gdbh = down_f32(gdb, n);
    row("bias_bwd (column sums, accumulates)", rel(gdbh, db, n), 1e-4);
    free(y), free(b), free(db), free(gyh), free(gdbh);
    G->free(gy), G->free(gb), G->free(gdb);
}

/* ---------------------------------------------------------------- RoPE */

static void test_rope(void) {
    const int64_t t = 50, nh = 6, d = 64, stride = nh * d + 128; /* q heads inside a wider row */
    float *x = rvec(t * stride, 1);
    int32_t *pos = ul_calloc((size_t)t, sizeof(int32_t));
    for (int64_t i = 0; i < t; i++) pos[i] = (int32_t)(i < 10 ? i : irand(0, 200000));
    float *inv = fvec(d / 2);
    for (int64_t j = 0; j < d / 2; j++) inv[j] = (float)pow(500000.0, -(double)(2 * j) / (double)d);
    void *gx = up_act(x, t * stride), *gp = up_bytes(pos, (size_t)t * 4), *gi = up_bytes(inv, (size_t)(d / 2) * 4);
    for (int inverse = 0; inverse < 2; inverse++) {
        G->rope(gx, stride, t, nh, d, gp, gi, inverse);
        C->rope(x, stride, t, nh, d, pos, inv, inverse);
        float *got = down_act(gx, t * stride);
        row(inverse ? "rope inverse (strided rows)" : "rope forward (strided rows)", rel(got, x, t * stride), 1e-2);
        /* continue from the same bf16 values on both sides */
        for (int64_t i = 0; i < t * stride; i++) x[i] = got[i];
        free(got);
    }
    free(x), free(pos), free(inv);
    G->free(gx), G->free(gp), G->free(gi);
}

/* ---------------------------------------------------------------- SwiGLU */

static void test_swiglu(void) {
    const int64_t n = 10007;
    float *g = rvec(n, 6), *u = rvec(n, 2), *dh = rvec(n, 1), *h = fvec(n), *dg = fvec(n), *du = fvec(n);
    void *gg = up_act(g, n), *gu = up_act(u, n), *gdh = up_act(dh, n);
    void *gh = G->alloc((size_t)n * 2), *gdg = G->alloc((size_t)n * 2), *gdu = G->alloc((size_t)n * 2);
    G->swiglu_fwd(gh, gg, gu, n);
    C->swiglu_fwd(h, g, u, n);
    G->swiglu_bwd(gdg, gdu, gdh, gg, gu, n);
    C->swiglu_bwd(dg, du, dh, g, u, n);
    float *a = down_act(gh, n), *b = down_act(gdg, n), *c = down_act(gdu, n);
    row("swiglu_fwd", rel(a, h, n), 1e-2);
    row("swiglu_bwd dg", rel(b, dg, n), 1e-2);
    row("swiglu_bwd du", rel(c, du, n), 1e-2);
    /* in place (dg over g, du over u), as the model's MLP backward runs it: the CPU's
     * result, and bitwise the out-of-place one */
    void *ig = up_act(g, n), *iu = up_act(u, n);
    G->swiglu_bwd(ig, iu, gdh, ig, iu, n);
    float *ib = down_act(ig, n), *ic = down_act(iu, n);
    row("swiglu_bwd in place dg", rel(ib, dg, n), 1e-2);
    row("swiglu_bwd in place du", rel(ic, du, n), 1e-2);
    row("swiglu_bwd in place = out of place (diff)",
        (double)(memcmp(ib, b, (size_t)n * sizeof(float)) != 0 || memcmp(ic, c, (size_t)n * sizeof(float)) != 0), 0);
    free(g), free(u), free(dh), free(h), free(dg), free(du), free(a), free(b), free(c), free(ib), free(ic);
    G->free(gg), G->free(gu), G->free(gdh), G->free(gh), G->free(gdg), G->free(gdu), G->free(ig), G->free(iu);
}

/* ---------------------------------------------------------------- cross-entropy */

static void test_loss(void) {
    const int64_t shapes[2][2] = {{37, 1000}, {9, 50257}};
    for (int s = 0; s < 2; s++) {
        int64_t n = shapes[s][0], V = shapes[s][1];
        float *x = rvec(n * V, 6);
        int32_t *lab = ul_calloc((size_t)n, sizeof(int32_t));
        for (int64_t i = 0; i < n; i++) lab[i] = (i % 5 == 3) ? UL_IGNORE_INDEX : (int32_t)irand(0, V - 1);
        double acc[2] = {0.25, 2.0}; /* accumulates into what is there */
        void *gx = up_act(x, n * V), *gl = up_bytes(lab, (size_t)n * 4), *ga = up_bytes(acc, sizeof acc);
        const float dscale = 1.0f / 29.0f;
        G->cross_entropy(gx, gl, n, V, dscale, ga);
        C->cross_entropy(x, lab, n, V, dscale, acc);
        float *got = down_act(gx, n * V);
        double gacc[2];
        G->download(gacc, ga, sizeof gacc);
        char name[96];
        snprintf(name, sizeof name, "cross_entropy dlogits (n=%lld V=%lld)", (long long)n, (long long)V);
        row(name, rel(got, x, n * V), 1e-2);
        snprintf(name, sizeof name, "cross_entropy loss sum (n=%lld V=%lld)", (long long)n, (long long)V);
        row(name, fabs(gacc[0] - acc[0]) / fabs(acc[0]), 1e-4);
        snprintf(name, sizeof name, "cross_entropy count (n=%lld V=%lld)", (long long)n, (long long)V);
        row(name, fabs(gacc[1] - acc[1]), 0);
        free(x), free(lab), free(got);
        G->free(gx), G->free(gl), G->free(ga);
    }
}

/* ---------------------------------------------------------------- optimizer */

static void test_optim(void) {
    const int64_t n = 1000003;
    float *x = fvec(n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)urand(-3, 3);
    void *gx = up_bytes(x, (size_t)n * 4);
    double a = G->sumsq(gx, n), b = C->sumsq(x, n);
    row("sumsq (double accumulation)", fabs(a - b) / b, 1e-12);
    G->scale(gx, n, 0.37f);
    C->scale(x, n, 0.37f);
    float *got = down_f32(gx, n);
    row("scale (fp32, exact)", rel(got, x, n), 0);
    free(got);

    float *p = fvec(n), *g = fvec(n), *m = fvec(n), *v = fvec(n);
    for (int64_t i = 0; i < n; i++) {
        p[i] = (float)urand(-1, 1);
        g[i] = (float)urand(-1, 1) * (i % 3 == 0 ? 1e-4f : 1.0f);
    }
    void *gp = up_bytes(p, (size_t)n * 4), *gg = up_bytes(g, (size_t)n * 4);
    void *gm = up_bytes(m, (size_t)n * 4), *gv = up_bytes(v, (size_t)n * 4);
    for (int64_t step = 1; step <= 3; step++) {
        G->adamw(gp, gg, gm, gv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
        C->adamw(p, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
    }
    float *pp = down_f32(gp, n), *mm = down_f32(gm, n), *vv = down_f32(gv, n);
    double e = rel(pp, p, n);
    if (rel(mm, m, n) > e) e = rel(mm, m, n);
    if (rel(vv, v, n) > e) e = rel(vv, v, n);
    row("adamw p, m, v after 3 steps (fp32)", e, 1e-6);
    free(x), free(p), free(g), free(m), free(v), free(pp), free(mm), free(vv);
    G->free(gx), G->free(gp), G->free(gg), G->free(gm), G->free(gv);
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    const char *name;
    int64_t T, Hq, Hkv, d;
    int interleaved; /* q, k, v (and dq, dk, dv) in one [T, Hq + 2 Hkv, d] buffer */
    int64_t extra;   /* extra elements per row of the interleaved buffer (odd: no 16-byte path) */
    int n_docs;
    const int64_t *cu; /* [n_docs + 1] */
} AttnCase;

static void test_attention_case(const AttnCase *c, const char *kernel) {
    const int64_t T = c->T, Hq = c->Hq, Hkv = c->Hkv, d = c->d;
    const int64_t W = (Hq + 2 * Hkv) * d + c->extra; /* interleaved row */
    int64_t qs, ks, vs, qoff, koff, voff, nqkv;
    if (c->interleaved) {
        qs = ks = vs = W;
        qoff = 0, koff = Hq * d, voff = (Hq + Hkv) * d;
        nqkv = T * W;
    } else {
        qs = Hq * d, ks = vs = Hkv * d;
        qoff = 0, koff = T * Hq * d, voff = koff + T * Hkv * d;
        nqkv = voff + T * Hkv * d;
    }
    const int64_t os = Hq * d, dos = Hq * d + 8; /* dout rows padded */
    float *qkv = rvec(nqkv, 1);
    for (int64_t i = 0; i < T; i++) /* sharper softmax: larger q */
        for (int64_t e = 0; e < Hq * d; e++) qkv[qoff + i * qs + e] = bfr(qkv[qoff + i * qs + e] * 2.5f);
    float *dout = rvec(T * dos, 1);
    float *o = fvec(T * os), *lse = fvec(T * Hq);
    float *fillv = rvec(nqkv, 1), *dqkv = fdup(fillv, nqkv); /* the row gaps must keep these */
    const float scale = 1.0f / sqrtf((float)d);
    test_attention_fwd(C, o, os, lse, qkv + qoff, qs, qkv + koff, ks, qkv + voff, vs, T, Hq, Hkv, d, c->cu, c->n_docs,
                     scale);
    test_attention_bwd(C, dqkv + qoff, qs, dqkv + koff, ks, dqkv + voff, vs, dout, dos, qkv + qoff, qs, qkv + koff, ks,
                     qkv + voff, vs, o, os, lse, T, Hq, Hkv, d, c->cu, c->n_docs, scale);

    void *gqkv = up_act(qkv, nqkv), *gdo = up_act(dout, T * dos);
    void *go = G->alloc((size_t)(T * os) * 2), *glse = G->alloc((size_t)(T * Hq) * 4);
    void *gdqkv = up_act(fillv, nqkv);
    void *gcu = up_bytes(c->cu, (size_t)(c->n_docs + 1) * 8);
    char *b = gqkv, *db = gdqkv;
    test_attention_fwd(G, go, os, glse, b + qoff * 2, qs, b + koff * 2, ks, b + voff * 2, vs, T, Hq, Hkv, d, gcu,
                     c->n_docs, scale);
    test_attention_bwd(G, db + qoff * 2, qs, db + koff * 2, ks, db + voff * 2, vs, gdo, dos, b + qoff * 2, qs,
                     b + koff * 2, ks, b + voff * 2, vs, go, os, glse, T, Hq, Hkv, d, gcu, c->n_docs, scale);
    float *go_h = down_act(go, T * os), *glse_h = down_f32(glse, T * Hq), *gd_h = down_act(gdqkv, nqkv);

    char name[128];
    snprintf(name, sizeof name, "attn[%s] %s o", kernel, c->name);
    row(name, rel(go_h, o, T * os), 2e-2);
    double el = 0;
    for (int64_t i = 0; i < T * Hq; i++) el = fmax(el, fabs((double)glse_h[i] - lse[i]));
    snprintf(name, sizeof name, "attn[%s] %s lse (abs)", kernel, c->name);
    row(name, el, 2e-2);
    const char *nm[3] = {"dq", "dk", "dv"};
    const int64_t offs[3] = {qoff, koff, voff}, hs[3] = {Hq, Hkv, Hkv}, strides[3] = {qs, ks, vs};
    for (int t = 0; t < 3; t++) {
        snprintf(name, sizeof name, "attn[%s] %s %s", kernel, c->name, nm[t]);
        row(name, rel2d(gd_h + offs[t], dqkv + offs[t], T, hs[t] * d, strides[t]), 2e-2);
    }
    if (c->extra) { /* the gap columns of the interleaved rows are untouched */
        double eg = 0;
        for (int64_t i = 0; i < T; i++)
            for (int64_t e = (Hq + 2 * Hkv) * d; e < W; e++) eg = fmax(eg, fabs(gd_h[i * W + e] - dqkv[i * W + e]));
        snprintf(name, sizeof name, "attn[%s] %s row gaps untouched", kernel, c->name);
        row(name, eg, 0);
    }
    if (strcmp(kernel, "deterministic") == 0 || strcmp(kernel, "simple") == 0) {
        /* deterministic kernels: a second backward is bitwise the same */
        void *gd2 = up_act(fillv, nqkv);
        char *db2 = gd2;
        test_attention_bwd(G, db2 + qoff * 2, qs, db2 + koff * 2, ks, db2 + voff * 2, vs, gdo, dos, b + qoff * 2, qs,
                         b + koff * 2, ks, b + voff * 2, vs, go, os, glse, T, Hq, Hkv, d, gcu, c->n_docs, scale);
        float *gd2_h = down_act(gd2, nqkv);
        double ed = 0;
        for (int64_t i = 0; i < nqkv; i++) ed = fmax(ed, fabs((double)gd2_h[i] - gd_h[i]));
        snprintf(name, sizeof name, "attn[%s] %s backward repeated: bitwise equal", kernel, c->name);
        row(name, ed, 0);
        free(gd2_h);
        G->free(gd2);
    }
    free(qkv), free(dout), free(o), free(lse), free(dqkv), free(fillv), free(go_h), free(glse_h), free(gd_h);
    G->free(gqkv), G->free(gdo), G->free(go), G->free(glse), G->free(gdqkv), G->free(gcu);
}

static int cmp_i64(const void *x, const void *y) {
    const int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* cu[0..n]: n documents over T tokens, cut at n - 1 random points, sorted: ragged lengths,
 * empty documents where two cuts meet */
static void ragged_docs(int64_t *cu, int n, int64_t T) {
    cu[0] = 0;
    cu[n] = T;
    for (int i = 1; i < n; i++) cu[i] = irand(0, T);
    qsort(cu + 1, (size_t)(n - 1), sizeof *cu, cmp_i64);
}

static void test_attention(void) {
    /* many documents: the Hopper kernels' document lookups (a 32-way search by the warp, three
     * rounds above 1,024 documents; then a tile's rows from its first row's document) */
    static int64_t cu_many[1301], cu_mid[61];
    ragged_docs(cu_many, 1300, 3000);
    ragged_docs(cu_mid, 60, 4100);
    const AttnCase cases[] = {
        {"T300 GQA4/2 d64 ragged+empty doc", 300, 4, 2, 64, 0, 0, 4, (const int64_t[]){0, 37, 37, 200, 300}},
        {"T517 GQA8/2 d128 1 doc interleaved", 517, 8, 2, 128, 1, 0, 1, (const int64_t[]){0, 517}},
        {"T1000 MHA6 d128 6 docs interleaved", 1000, 6, 6, 128, 1, 8, 6, (const int64_t[]){0, 1, 65, 300, 301, 700, 1000}},
        {"T257 GQA4/1 d32 2 docs", 257, 4, 1, 32, 0, 0, 2, (const int64_t[]){0, 100, 257}},
        {"T190 MHA2 d96 1 doc", 190, 2, 2, 96, 0, 0, 1, (const int64_t[]){0, 190}},
        {"T150 GQA4/2 d80 2 docs interleaved", 150, 4, 2, 80, 1, 0, 2, (const int64_t[]){0, 64, 150}},
        {"T130 GQA2/1 d40 odd stride (scalar path)", 130, 2, 1, 40, 1, 1, 1, (const int64_t[]){0, 130}},
        {"T2000 MHA4 d128 1 doc", 2000, 4, 4, 128, 0, 0, 1, (const int64_t[]){0, 2000}},
        {"T1500 GQA8/2 d64 3 docs interleaved", 1500, 8, 2, 64, 1, 0, 3, (const int64_t[]){0, 700, 701, 1500}},
        {"T3000 GQA4/1 d64 5 docs", 3000, 4, 1, 64, 0, 0, 5, (const int64_t[]){0, 130, 1200, 1201, 2688, 3000}},
        {"T2600 GQA6/2 d128 2 docs interleaved", 2600, 6, 2, 128, 1, 0, 2, (const int64_t[]){0, 1100, 2600}},
        {"T3000 GQA4/2 d128 1300 ragged docs (empties)", 3000, 4, 2, 128, 0, 0, 1300, cu_many},
        {"T4100 MHA4 d64 60 ragged docs interleaved", 4100, 4, 4, 64, 1, 0, 60, cu_mid},
        /* below the Hopper kernels' TMA boxes: T 150 at d 64, the portable forward with the
         * Hopper backward; T 100, the portable kernels both ways */
        {"T150 GQA4/2 d64 2 docs (small T)", 150, 4, 2, 64, 0, 0, 2, (const int64_t[]){0, 70, 150}},
        {"T100 MHA2 d128 1 doc (small T)", 100, 2, 2, 128, 0, 0, 1, (const int64_t[]){0, 100}},
    };
    /* default: the Hopper kernels where the device, the build and the shape allow (head dims
     * 64 and 128, aligned rows), the portable ones elsewhere; "fused": the Hopper backward
     * in one kernel (dQ staged in shared memory and added by TMA bulk reduce) at both head
     * dims (query tiles of 128 rows at d = 64: T not a multiple of 128, packed documents,
     * GQA);
     * "fused-red" (the lab's baseline): dQ added with atomics from registers;
     * "deterministic": the two-kernel Hopper backward; "simple": the portable ones only */
    const char *kernels[5] = {"default", "fused", "fused-red", "deterministic", "simple"};
    for (int kv = 0; kv < 5; kv++) {
        setenv("UL_ATTN_KERNEL", kernels[kv], 1);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_attention_case(&cases[i], kernels[kv]);
    }
    /* the fused backward in launches of one key/value head each (UL_ATTN_DQ_HEADS: fewer heads
     * per launch than its memory budget allows, as at long sequences) */
    setenv("UL_ATTN_KERNEL", "fused", 1);
    setenv("UL_ATTN_DQ_HEADS", "1", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_attention_case(&cases[i], "fused/1 kv head a launch");
    unsetenv("UL_ATTN_DQ_HEADS");
    unsetenv("UL_ATTN_KERNEL");
    /* the Hopper forward variants of the kernel lab named in UL_TEST_ATTN_FWD (space
     * separated UL_ATTN_FWD values; bench/attention/lab.sh sets it; unset: "ovpp serial",
     * the default and the lab's baseline), each with the default backward; the persistent
     * forward (ovpp) on 3 CTAs (UL_ATTN_PERSIST_CTAS), so that each takes several tasks
     * (above, with one CTA per SM, each CTA of the small cases takes at most one) */
    setenv("UL_ATTN_PERSIST_CTAS", "3", 1);
    const char *fv = getenv("UL_TEST_ATTN_FWD");
    char list[64];
    snprintf(list, sizeof list, "%s", fv ? fv : "ovpp serial");
    for (char *save = NULL, *f = strtok_r(list, " ", &save); f; f = strtok_r(NULL, " ", &save)) {
        char label[32];
        snprintf(label, sizeof label, "fwd=%s", f);
        setenv("UL_ATTN_FWD", f, 1);
        /* a name the backend does not know would check the default under its label */
        char known[64];
        snprintf(known, sizeof known, "%s: a variant the backend knows", label);
        const int unknown = ul_attn_fwd_choice() < 0;
        row(known, unknown ? INFINITY : 0.0, 0.0);
        if (unknown) continue;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_attention_case(&cases[i], label);
    }
    unsetenv("UL_ATTN_FWD");
    unsetenv("UL_ATTN_PERSIST_CTAS");
}

/* ---------------------------------------------------------------- timing (informational) */

static void bench_attention(int64_t T, int64_t H, int64_t d) {
    const int64_t n = T * H * d;
    float *x = rvec(n, 1);
    void *q = up_act(x, n), *k = up_act(x, n), *v = up_act(x, n), *dout = up_act(x, n);
    void *o = G->alloc((size_t)n * 2), *dq = G->alloc((size_t)n * 2), *dk = G->alloc((size_t)n * 2),
         *dv = G->alloc((size_t)n * 2), *lse = G->alloc((size_t)(T * H) * 4);
    int64_t cu[2] = {0, T};
    void *gcu = up_bytes(cu, sizeof cu);
    const float scale = 1.0f / sqrtf((float)d);
    const int reps = 5;
    test_attention_fwd(G, o, H * d, lse, q, H * d, k, H * d, v, H * d, T, H, H, d, gcu, 1, scale);
    G->sync();
    double t0 = ul_now();
    for (int r = 0; r < reps; r++)
        test_attention_fwd(G, o, H * d, lse, q, H * d, k, H * d, v, H * d, T, H, H, d, gcu, 1, scale);
    G->sync();
    double tf = (ul_now() - t0) / reps;
    test_attention_bwd(G, dq, H * d, dk, H * d, dv, H * d, dout, H * d, q, H * d, k, H * d, v, H * d, o, H * d, lse, T,
                     H, H, d, gcu, 1, scale);
    G->sync();
    t0 = ul_now();
    for (int r = 0; r < reps; r++)
        test_attention_bwd(G, dq, H * d, dk, H * d, dv, H * d, dout, H * d, q, H * d, k, H * d, v, H * d, o, H * d, lse,
                         T, H, H, d, gcu, 1, scale);
    G->sync();
    double tb = (ul_now() - t0) / reps;
    double ff = 2.0 * (double)T * T * H * d, fb = 2.5 * ff; /* causal counted once */
    out("timing attention T=%lld H=%lld d=%lld causal: fwd %.3f ms %.1f TFLOP/s | bwd %.3f ms %.1f TFLOP/s\n",
        (long long)T, (long long)H, (long long)d, tf * 1e3, ff / tf * 1e-12, tb * 1e3, fb / tb * 1e-12);
    free(x);
    G->free(q), G->free(k), G->free(v), G->free(dout), G->free(o), G->free(dq), G->free(dk), G->free(dv);
    G->free(lse), G->free(gcu);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    G = ul_kernels_cuda();
    if (!G) {
        printf("test_cuda_kernels: no GPU visible (or no CUDA backend in this build): skipped\n");
        return 77;
    }
    C = ul_kernels_cpu();
    ul_rng_seed(&g_rng, 12345);
    const char *rp = getenv("UL_TEST_REPORT");
    if (rp && rp[0]) g_report = fopen(rp, "a");
    out("| %-44s | %10s | %8s | %-4s |\n", only ? only : "op (CUDA vs CPU, bf16 inputs)", "max rel err", "tol",
        "ok");
    out("|%s|%s|%s|%s|\n", "----------------------------------------------", "------------", "----------",
        "------");
#define RUN(name, fn) \
    if (!only || strcmp(only, name) == 0) fn
    RUN("memory", test_memory());
    RUN("matmul", test_matmul());
    RUN("embedding", test_embedding());
    RUN("rmsnorm", test_rmsnorm());
    RUN("headnorm", test_headnorm());
    RUN("rope", test_rope());
    RUN("swiglu", test_swiglu());
    RUN("loss", test_loss());
    RUN("optim", test_optim());
    RUN("attention", test_attention());
    if (!only || strcmp(only, "bench") == 0) {
        bench_attention(8192, 16, 128);
        bench_attention(8192, 16, 64);
    }
#undef RUN
    G->sync();
    int rc = tu_finish("test_cuda_kernels");
    if (g_report) {
        fprintf(g_report, "test_cuda_kernels%s%s: %d checks, %d failed\n", only ? " --only " : "", only ? only : "",
                tu_checks, tu_failures);
        fclose(g_report);
    }
    return rc;
}
