/* The CPU backend's KernelOps table: act = fp32, so every void* buffer is a float*.
 * Thin adapters from the interface's types to the fp32 kernels of this folder. */
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#include "kernels/cpu/cpu_internal.h"

static void cpu_upload(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_sync(void) {}
static void cpu_zero(void *x, size_t bytes) {
    if (bytes % sizeof(float) == 0)
        ul_cpu_zero(x, (int64_t)(bytes / sizeof(float)));
    else
        memset(x, 0, bytes);
}
static void cpu_copy2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols) {
    ul_cpu_copy2d(dst, ds, src, ss, rows, cols);
}
static void cpu_add2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols) {
    ul_cpu_add2d(dst, ds, src, ss, rows, cols);
}
static void cpu_convert(void *dst, const float *src, int64_t n) { ul_cpu_copy2d(dst, n, src, n, 1, n); }
static void cpu_convert_back(float *dst, const void *src, int64_t n) { ul_cpu_copy2d(dst, n, src, n, 1, n); }
static void cpu_matmul(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                       const void *B, int64_t ldb, float beta, void *C, int64_t ldc, int c_f32) {
    (void)c_f32; /* act is fp32 */
    ul_cpu_matmul(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void cpu_embedding_fwd(void *out, const int32_t *tok, const void *wte, int64_t t, int64_t D) {
    ul_cpu_embedding_fwd(out, tok, wte, t, D);
}
static void cpu_embedding_bwd(float *dwte, const void *dout, const int32_t *tok, int64_t t, int64_t D) {
    ul_cpu_embedding_bwd(dwte, dout, tok, t, D);
}
static void cpu_rmsnorm_fwd(void *y, float *rstd, const void *x, const void *w, int64_t t, int64_t D, float eps) {
    ul_cpu_rmsnorm_fwd(y, rstd, x, w, t, D, eps);
}
static void cpu_rmsnorm_bwd(void *dx, float *dw, const void *dy, const void *x, const void *w, const float *rstd,
                            int64_t t, int64_t D) {
    ul_cpu_rmsnorm_bwd(dx, dw, dy, x, w, rstd, t, D);
}
static void cpu_headnorm_fwd(void *y, int64_t ys, float *rstd, const void *x, int64_t xs, const void *w, int64_t t,
                             int64_t nh, int64_t d, float eps) {
    ul_cpu_headnorm_fwd(y, ys, rstd, x, xs, w, t, nh, d, eps);
}
static void cpu_headnorm_bwd(void *dx, int64_t dxs, float *dw, const void *dy, int64_t dys, const void *x, int64_t xs,
                             const void *w, const float *rstd, int64_t t, int64_t nh, int64_t d) {
    ul_cpu_headnorm_bwd(dx, dxs, dw, dy, dys, x, xs, w, rstd, t, nh, d);
}
static void cpu_bias_add(void *y, int64_t ys, const void *b, int64_t t, int64_t n) { ul_cpu_bias_add(y, ys, b, t, n); }
static void cpu_bias_bwd(float *db, const void *dy, int64_t dys, int64_t t, int64_t n) {
    ul_cpu_bias_bwd(db, dy, dys, t, n);
}
static void cpu_rope(void *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                     const float *inv_freq, int inverse) {
    ul_cpu_rope(x, stride, t, nh, d, pos, inv_freq, inverse);
}
static void cpu_swiglu_fwd(void *h, const void *g, const void *u, int64_t n) { ul_cpu_swiglu_fwd(h, g, u, n); }
static void cpu_swiglu_bwd(void *dg, void *du, const void *dh, const void *g, const void *u, int64_t n) {
    ul_cpu_swiglu_bwd(dg, du, dh, g, u, n);
}
static void cpu_attention_fwd(const UlAttention *a) {
    ul_cpu_attention_fwd(a->o, a->os, a->lse, a->q, a->qs, a->k, a->ks, a->v, a->vs, a->T, a->Hq, a->Hkv, a->d,
                         a->cu_seqlens, a->n_docs, a->scale);
}
static void cpu_attention_bwd(const UlAttention *a) {
    ul_cpu_attention_bwd(a->dq, a->dqs, a->dk, a->dks, a->dv, a->dvs, a->dout, a->dos, a->q, a->qs, a->k, a->ks, a->v,
                         a->vs, a->o, a->os, a->lse, a->T, a->Hq, a->Hkv, a->d, a->cu_seqlens, a->n_docs, a->scale);
}
/* Synchronous stand-ins for the copy stream: an event is the wall-clock time of its record. */
static void *cpu_event_create(void) { return ul_calloc(1, sizeof(double)); }
static void cpu_event_destroy(void *ev) { free(ev); }
static void cpu_event_record(void *ev, int stream) {
    (void)stream;
    *(double *)ev = ul_now();
}
static void cpu_event_wait(int stream, void *ev) {
    (void)stream;
    (void)ev;
}
static double cpu_event_elapsed(void *a, void *b) { return *(double *)b - *(double *)a; }
static void cpu_copy_async(void *dst, const void *src, size_t bytes, int to_host) {
    (void)to_host;
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_cross_entropy(void *logits, const int32_t *labels, int64_t n, int64_t V, float dscale, double *acc) {
    int64_t cnt = 0;
    ul_cpu_cross_entropy(logits, labels, n, V, dscale, &acc[0], &cnt);
    acc[1] += (double)cnt;
}

static const KernelOps g_cpu_ops = {
    .name = "cpu",
    .act_bytes = sizeof(float),
    .on_device = 0,
    .compute_stream = NULL,
    .device_mem_used_gib = NULL,
    .device_mem_total = NULL,
    .alloc = ul_cpu_alloc,
    .free = ul_cpu_free,
    .upload = cpu_upload,
    .download = cpu_upload,
    .sync = cpu_sync,
    .zero = cpu_zero,
    .copy2d = cpu_copy2d,
    .add2d = cpu_add2d,
    .to_act = cpu_convert,
    .to_f32 = cpu_convert_back,
    .host_alloc = ul_cpu_host_alloc,
    .host_free = ul_cpu_host_free,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_wait = cpu_event_wait,
    .event_elapsed = cpu_event_elapsed,
    .copy_async = cpu_copy_async,
    .mem_stats = ul_cpu_mem_stats,
    .mem_reset_peak = ul_cpu_mem_reset_peak,
    .matmul = cpu_matmul,
    .embedding_fwd = cpu_embedding_fwd,
    .embedding_bwd = cpu_embedding_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .headnorm_fwd = cpu_headnorm_fwd,
    .headnorm_bwd = cpu_headnorm_bwd,
    .bias_add = cpu_bias_add,
    .bias_bwd = cpu_bias_bwd,
    .rope = cpu_rope,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .cross_entropy = cpu_cross_entropy,
    .sumsq = ul_cpu_sumsq,
    .scale = ul_cpu_scale,
    .adamw = ul_cpu_adamw,
};

const KernelOps *ul_kernels_cpu(void) { return &g_cpu_ops; }
