/* The kernel interface: every numeric operation the model and optimizer perform,
 * behind one table of function pointers. The CPU backend (kernels/cpu, fp32, OpenBLAS,
 * OpenMP) is the reference; the CUDA backend (kernels/cuda) implements the same table.
 *
 * Conventions
 *  - All matrices are row-major. Sizes and offsets are int64_t.
 *  - "Strided rows": a [t, nh, d] tensor whose token rows are `stride` floats apart
 *    (stride >= nh*d), so q, k, v can live interleaved in one [t, Hq+2Hkv, d] buffer.
 *  - Backward kernels named *_bwd overwrite their outputs unless the comment says
 *    "accumulates" (then they add into it; the caller zeroes it once per step).
 *  - Token ids, labels and positions are int32 (labels use -100 = ignore). */
#ifndef UL_KERNELS_H
#define UL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct KernelOps {
    const char *name;

    /* ---- memory (device memory for GPU backends; host for CPU) ---- */
    void *(*alloc)(size_t bytes);  /* zero-filled; aborts on failure */
    void (*free)(void *p);
    void (*zero)(float *x, int64_t n);
    /* dst[r, 0:cols] = src[r, 0:cols] for r < rows (strides in floats). */
    void (*copy2d)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                   int64_t cols);
    /* dst[r, 0:cols] += src[r, 0:cols]. */
    void (*add2d)(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                  int64_t cols);

    /* ---- dense ---- */
    /* C[M,N] = alpha * op(A) @ op(B) + beta * C ; op(A) is [M,K], op(B) is [K,N].
     * transA: A stored [K,M]; transB: B stored [N,K]. */
    void (*matmul)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

    /* ---- embedding ---- */
    /* out[i, :] = wte[tokens[i], :]                           out [t, D], wte [V, D] */
    void (*embedding_fwd)(float *out, const int32_t *tokens, const float *wte, int64_t t, int64_t D);
    /* dwte[tokens[i], :] += dout[i, :]  (accumulates)          dwte [V, D] */
    void (*embedding_bwd)(float *dwte, const float *dout, const int32_t *tokens, int64_t t, int64_t D);

    /* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ---- */
    /* y [t, D], rstd [t] (saved for backward), x [t, D], w [D] */
    void (*rmsnorm_fwd)(float *y, float *rstd, const float *x, const float *w, int64_t t, int64_t D, float eps);
    /* dx [t, D] (accumulates: dx += ..., it is the residual gradient), dw [D] (accumulates) */
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        int64_t t, int64_t D);

    /* ---- RoPE (HF rotate_half convention: pairs (i, i + d/2)), in place ----
     * x [t, nh, d] with row stride `stride`; pos [t]; inv_freq [d/2].
     * angle = (float)pos * inv_freq (fp32, as transformers computes it).
     * inverse = 1 applies the transpose rotation (the backward). */
    void (*rope)(float *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                 const float *inv_freq, int inverse);

    /* ---- SwiGLU: h = silu(g) * u ---- */
    void (*swiglu_fwd)(float *h, const float *g, const float *u, int64_t n);
    /* dg, du overwritten from dh */
    void (*swiglu_bwd)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);

    /* ---- attention: causal within documents, GQA, THD layout, never a T x T buffer ----
     * q [T, Hq, d] (row stride qs), k/v [T, Hkv, d] (strides ks, vs), o [T, Hq, d] (os),
     * lse [T, Hq] (natural-log sum-exp of scaled scores, saved for backward).
     * Documents: cu_seqlens [n_docs + 1], cu_seqlens[0] = 0, cu_seqlens[n_docs] = T;
     * token i attends to j iff doc(j) == doc(i) and j <= i. Query head h uses kv head
     * h / (Hq / Hkv). scale is usually 1/sqrt(d). */
    void (*attention_fwd)(float *o, int64_t os, float *lse, const float *q, int64_t qs, const float *k,
                          int64_t ks, const float *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                          const int64_t *cu_seqlens, int64_t n_docs, float scale);
    /* dq [T, Hq, d] (dqs), dk/dv [T, Hkv, d] (dks, dvs) overwritten; dk/dv summed over the
     * query heads of each kv group. dout [T, Hq, d] (dos). */
    void (*attention_bwd)(float *dq, int64_t dqs, float *dk, int64_t dks, float *dv, int64_t dvs,
                          const float *dout, int64_t dos, const float *q, int64_t qs, const float *k, int64_t ks,
                          const float *v, int64_t vs, const float *o, int64_t os, const float *lse, int64_t T,
                          int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs,
                          float scale);

    /* ---- cross-entropy on one tile of logits, fused with its backward ----
     * logits [n, V] in, overwritten by dlogits = (softmax - onehot(label)) * dscale for rows
     * whose label != -100, and 0 for ignored rows. Adds sum of CE over valid rows to
     * *loss_sum (double) and their number to *count. */
    void (*cross_entropy)(float *logits, const int32_t *labels, int64_t n, int64_t V, float dscale,
                          double *loss_sum, int64_t *count);

    /* ---- optimizer ---- */
    /* sum of squares (double accumulation) */
    double (*sumsq)(const float *x, int64_t n);
    /* x *= s */
    void (*scale)(float *x, int64_t n, float s);
    /* AdamW, decoupled weight decay, bias correction with step t (1-based):
     * m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ;
     * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p) */
    void (*adamw)(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2, float eps,
                  float wd, int64_t t);
} KernelOps;

/* The CPU backend (always built). */
const KernelOps *ul_kernels_cpu(void);

#endif
