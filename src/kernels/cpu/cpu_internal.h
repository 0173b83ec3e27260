/* Internal declarations shared by the CPU kernel files (fp32, OpenBLAS, OpenMP).
 * Every function here implements the KernelOps entry of the same name; see
 * kernels/kernels.h for the contract (shapes, overwrite vs accumulate). */
#ifndef UL_CPU_INTERNAL_H
#define UL_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* cpu_basic.c */
void *ul_cpu_alloc(size_t bytes);
void ul_cpu_free(void *p);
void *ul_cpu_host_alloc(size_t bytes);
void ul_cpu_host_free(void *p);
void ul_cpu_mem_stats(UlMemStats *s);
void ul_cpu_mem_reset_peak(void);
void ul_cpu_zero(float *x, int64_t n);
void ul_cpu_copy2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                   int64_t cols);
void ul_cpu_add2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows,
                  int64_t cols);
void ul_cpu_matmul(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void ul_cpu_embedding_fwd(float *out, const int32_t *tokens, const float *wte, int64_t t, int64_t D);
void ul_cpu_embedding_bwd(float *dwte, const float *dout, const int32_t *tokens, int64_t t, int64_t D);
void ul_cpu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t t, int64_t D, float eps);
void ul_cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                        int64_t t, int64_t D);
void ul_cpu_headnorm_fwd(float *y, int64_t ys, float *rstd, const float *x, int64_t xs, const float *w, int64_t t,
                         int64_t nh, int64_t d, float eps);
void ul_cpu_headnorm_bwd(float *dx, int64_t dxs, float *dw, const float *dy, int64_t dys, const float *x, int64_t xs,
                         const float *w, const float *rstd, int64_t t, int64_t nh, int64_t d);
void ul_cpu_bias_add(float *y, int64_t ys, const float *b, int64_t t, int64_t n);
void ul_cpu_bias_bwd(float *db, const float *dy, int64_t dys, int64_t t, int64_t n);
void ul_cpu_rope(float *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                 const float *inv_freq, int inverse);
void ul_cpu_swiglu_fwd(float *h, const float *g, const float *u, int64_t n);
void ul_cpu_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
double ul_cpu_sumsq(const float *x, int64_t n);
void ul_cpu_scale(float *x, int64_t n, float s);
void ul_cpu_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                  float eps, float wd, int64_t t);

/* cpu_attention.c */
void ul_cpu_attention_fwd(float *o, int64_t os, float *lse, const float *q, int64_t qs, const float *k,
                          int64_t ks, const float *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                          const int64_t *cu_seqlens, int64_t n_docs, float scale);
void ul_cpu_attention_bwd(float *dq, int64_t dqs, float *dk, int64_t dks, float *dv, int64_t dvs,
                          const float *dout, int64_t dos, const float *q, int64_t qs, const float *k, int64_t ks,
                          const float *v, int64_t vs, const float *o, int64_t os, const float *lse, int64_t T,
                          int64_t Hq, int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs,
                          float scale);

/* cpu_loss.c */
void ul_cpu_cross_entropy(float *logits, const int32_t *labels, int64_t n, int64_t V, float dscale,
                          double *loss_sum, int64_t *count);

/* Work below this many elements runs on one thread (OpenMP fork/join costs more). */
#define UL_CPU_PAR_MIN 32768

#endif
