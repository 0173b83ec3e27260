/* CUDA backend: strided copies, conversions, embedding, RMSNorm, RoPE, SwiGLU and the
 * optimizer kernels. bf16 storage, fp32 math (double for sumsq). Semantics follow the CPU
 * reference (kernels/cpu/cpu_basic.c); see kernels/kernels.h for the contract. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define TPB 256

static inline cudaStream_t st(void) { return ul_cuda_state.stream; }

static inline int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* ---------------------------------------------------------------- copy2d / add2d */

/* dst[r, c] (=|+=) src[r, c]; VEC elements per thread step (8: 16-byte accesses, caller
 * checked alignment of pointers, strides and cols). */
template <int VEC, bool ADD>
__global__ void k_2d(bf16 *__restrict__ dst, int64_t ds, const bf16 *__restrict__ src, int64_t ss, int64_t rows,
                     int64_t cols) {
    const int64_t cv = cols / VEC, total = rows * cv;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = u / cv, c = (u - r * cv) * VEC;
        if (VEC == 8) {
            uint4 s = *(const uint4 *)(src + r * ss + c);
            if (ADD) {
                uint4 d = *(const uint4 *)(dst + r * ds + c);
                __nv_bfloat162 *dp = (__nv_bfloat162 *)&d;
                const __nv_bfloat162 *sp = (const __nv_bfloat162 *)&s;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 a = __bfloat1622float2(dp[i]), b = __bfloat1622float2(sp[i]);
                    dp[i] = __floats2bfloat162_rn(a.x + b.x, a.y + b.y);
                }
                *(uint4 *)(dst + r * ds + c) = d;
            } else {
                *(uint4 *)(dst + r * ds + c) = s;
            }
        } else {
            bf16 s = src[r * ss + c];
            if (ADD)
                dst[r * ds + c] = __float2bfloat16_rn(__bfloat162float(dst[r * ds + c]) + __bfloat162float(s));
            else
                dst[r * ds + c] = s;
        }
    }
}

template <bool ADD>
static void launch_2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    bool vec = aligned16(dst) && aligned16(src) && ds % 8 == 0 && ss % 8 == 0 && cols % 8 == 0;
    if (vec) {
        k_2d<8, ADD><<<ul_grid1d(rows * (cols / 8), TPB), TPB, 0, st()>>>((bf16 *)dst, ds, (const bf16 *)src, ss, rows,
                                                                          cols);
    } else {
        k_2d<1, ADD><<<ul_grid1d(rows * cols, TPB), TPB, 0, st()>>>((bf16 *)dst, ds, (const bf16 *)src, ss, rows,
                                                                    cols);
    }
    CUDA_LAUNCH_CHECK();
}

void ul_cuda_copy2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols) {
    launch_2d<false>(dst, ds, src, ss, rows, cols);
}
void ul_cuda_add2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols) {
    launch_2d<true>(dst, ds, src, ss, rows, cols);
}

/* ---------------------------------------------------------------- conversions */

__global__ void k_to_act(bf16 *__restrict__ dst, const float *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void k_to_f32(float *__restrict__ dst, const bf16 *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}
void ul_cuda_to_act(void *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    k_to_act<<<ul_grid1d(n, TPB), TPB, 0, st()>>>((bf16 *)dst, src, n);
    CUDA_LAUNCH_CHECK();
}
void ul_cuda_to_f32(float *dst, const void *src, int64_t n) {
    if (n <= 0) return;
    k_to_f32<<<ul_grid1d(n, TPB), TPB, 0, st()>>>(dst, (const bf16 *)src, n);
    CUDA_LAUNCH_CHECK();
}

/* ---------------------------------------------------------------- embedding */

/* one block per token row */
__global__ void k_embedding_fwd(bf16 *__restrict__ out, const int32_t *__restrict__ tokens,
                                const bf16 *__restrict__ wte, int64_t D, int vec) {
    const int64_t i = blockIdx.x;
    const int32_t tok = tokens[i];
    if (tok < 0) __trap(); /* the CPU backend aborts on negative ids too */
    const bf16 *src = wte + (int64_t)tok * D;
    bf16 *dst = out + i * D;
    if (vec) {
        for (int64_t c = threadIdx.x * 8; c < D; c += blockDim.x * 8) *(uint4 *)(dst + c) = *(const uint4 *)(src + c);
    } else {
        for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = src[c];
    }
}

__global__ void k_embedding_bwd(float *__restrict__ dwte, const bf16 *__restrict__ dout,
                                const int32_t *__restrict__ tokens, int64_t D) {
    const int64_t i = blockIdx.x;
    const int32_t tok = tokens[i];
    if (tok < 0) __trap();
    float *dw = dwte + (int64_t)tok * D;
    const bf16 *g = dout + i * D;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) atomicAdd(dw + c, __bfloat162float(g[c]));
}

void ul_cuda_embedding_fwd(void *out, const int32_t *tokens, const void *wte, int64_t t, int64_t D) {
    if (t <= 0 || D <= 0) return;
    int vec = aligned16(out) && aligned16(wte) && D % 8 == 0;
    k_embedding_fwd<<<(unsigned)t, 128, 0, st()>>>((bf16 *)out, tokens, (const bf16 *)wte, D, vec);
    CUDA_LAUNCH_CHECK();
}
void ul_cuda_embedding_bwd(float *dwte, const void *dout, const int32_t *tokens, int64_t t, int64_t D) {
    if (t <= 0 || D <= 0) return;
    k_embedding_bwd<<<(unsigned)t, 256, 0, st()>>>(dwte, (const bf16 *)dout, tokens, D);
    CUDA_LAUNCH_CHECK();
}

/* ---------------------------------------------------------------- RMSNorm */

/* Block-wide sum (blockDim.x a multiple of 32, at most 1024); every thread gets the result. */
__device__ float block_sum(float x) {
    __shared__ float red[32];
    __syncthreads(); /* red may still be read by a previous call */
    x = ul_warp_sum(x);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) red[w] = x;
    __syncthreads();
    float s = l < nw ? red[l] : 0.0f;
    return ul_warp_sum(s);
}

/* block_sum in double (same fixed order of additions). */
__device__ double block_sum_d(double x) {
    __shared__ double red[32];
    __syncthreads();
    x = ul_warp_sum_d(x);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) red[w] = x;
    __syncthreads();
    double s = l < nw ? red[l] : 0.0;
    return ul_warp_sum_d(s);
}

/* Rows of d elements: row r = (i, h) at base + i stride + h d (i = r / nh, h < nh); rmsnorm
 * is nh = 1, d = stride = D; headnorm (q_norm, k_norm) is d = head_dim in strided token rows. */
__device__ __forceinline__ int64_t row_at(int64_t r, int64_t nh, int64_t stride, int64_t d) {
    return (r / nh) * stride + (r % nh) * d;
}

/* one block per row */
__global__ void k_rmsnorm_fwd(bf16 *__restrict__ y, int64_t ys, float *__restrict__ rstd, const bf16 *__restrict__ x,
                              int64_t xs, const bf16 *__restrict__ w, int64_t nh, int64_t D, float eps) {
    const int64_t i = blockIdx.x;
    const bf16 *xi = x + row_at(i, nh, xs, D);
    bf16 *yi = y + row_at(i, nh, ys, D);
    float ss = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float v = __bfloat162float(xi[j]);
        ss += v * v;
    }
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[i] = r;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        yi[j] = __float2bfloat16_rn((__bfloat162float(xi[j]) * r) * __bfloat162float(w[j]));
}

/* dx (+)= (w dy) r - x c, c = (sum_j x w dy) / D * r^3 (one block per row; ACC: accumulate,
 * else overwrite, dx may be dy: each thread reads its elements of dy before writing them) */
template <bool ACC>
__global__ void k_rmsnorm_bwd_dx(bf16 *dx, int64_t dxs, const bf16 *dy, int64_t dys, const bf16 *__restrict__ x,
                                 int64_t xs, const bf16 *__restrict__ w, const float *__restrict__ rstd, int64_t nh,
                                 int64_t D) {
    const int64_t i = blockIdx.x;
    const bf16 *xi = x + row_at(i, nh, xs, D), *gi = dy + row_at(i, nh, dys, D);
    bf16 *dxi = dx + row_at(i, nh, dxs, D);
    float dot = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        dot += __bfloat162float(xi[j]) * (__bfloat162float(w[j]) * __bfloat162float(gi[j]));
    dot = block_sum(dot);
    const float r = rstd[i];
    const float c = dot / (float)D * r * r * r;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float v = (__bfloat162float(w[j]) * __bfloat162float(gi[j])) * r - __bfloat162float(xi[j]) * c;
        if (ACC) v += __bfloat162float(dxi[j]);
        dxi[j] = __float2bfloat16_rn(v);
    }
}

/* dw[j] += sum_r dy x rstd (x != NULL) or sum_r dy (bias gradient, x == NULL): block (32
 * columns x 8 row lanes) over `rw` rows, one atomic per column */
__global__ void k_rmsnorm_bwd_dw(float *__restrict__ dw, const bf16 *__restrict__ dy, int64_t dys,
                                 const bf16 *__restrict__ x, int64_t xs, const float *__restrict__ rstd, int64_t rows,
                                 int64_t nh, int64_t D, int64_t rw) {
    __shared__ float part[8][33];
    const int64_t j = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t i0 = (int64_t)blockIdx.y * rw;
    const int64_t i1 = i0 + rw < rows ? i0 + rw : rows;
    float acc = 0;
    if (j < D)
        for (int64_t i = i0 + threadIdx.y; i < i1; i += 8) {
            float g = __bfloat162float(dy[row_at(i, nh, dys, D) + j]);
            acc += x ? g * __bfloat162float(x[row_at(i, nh, xs, D) + j]) * rstd[i] : g;
        }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < D) {
        float s = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) s += part[k][threadIdx.x];
        atomicAdd(dw + j, s);
    }
}

static int row_threads(int64_t D) {
    int th = 32;
    while (th < 1024 && th < D / 4) th *= 2;
    return th;
}

static void launch_col_sums(float *dw, const void *dy, int64_t dys, const void *x, int64_t xs, const float *rstd,
                            int64_t rows, int64_t nh, int64_t D) {
    int64_t rw = 256; /* rows per block: the grid's y extent stays <= 65535 */
    while ((rows + rw - 1) / rw > 65535) rw *= 2;
    dim3 grid((unsigned)((D + 31) / 32), (unsigned)((rows + rw - 1) / rw));
    k_rmsnorm_bwd_dw<<<grid, dim3(32, 8), 0, st()>>>(dw, (const bf16 *)dy, dys, (const bf16 *)x, xs, rstd, rows, nh,
                                                     D, rw);
    CUDA_LAUNCH_CHECK();
}

void ul_cuda_headnorm_fwd(void *y, int64_t ys, float *rstd, const void *x, int64_t xs, const void *w, int64_t t,
                          int64_t nh, int64_t d, float eps) {
    if (t <= 0 || nh <= 0 || d <= 0) return;
    UL_ASSERT(t * nh < ((int64_t)1 << 31), "rmsnorm: %lld rows is too many for one call", (long long)(t * nh));
    k_rmsnorm_fwd<<<(unsigned)(t * nh), row_threads(d), 0, st()>>>((bf16 *)y, ys, rstd, (const bf16 *)x, xs,
                                                                   (const bf16 *)w, nh, d, eps);
    CUDA_LAUNCH_CHECK();
}

static void headnorm_bwd(void *dx, int64_t dxs, float *dw, const void *dy, int64_t dys, const void *x, int64_t xs,
                         const void *w, const float *rstd, int64_t t, int64_t nh, int64_t d, bool acc) {
    if (t <= 0 || nh <= 0 || d <= 0) return;
    UL_ASSERT(t * nh < ((int64_t)1 << 31), "rmsnorm_bwd: %lld rows is too many for one call", (long long)(t * nh));
    launch_col_sums(dw, dy, dys, x, xs, rstd, t * nh, nh, d); /* first: dx may overwrite dy */
    if (acc)
        k_rmsnorm_bwd_dx<true><<<(unsigned)(t * nh), row_threads(d), 0, st()>>>(
            (bf16 *)dx, dxs, (const bf16 *)dy, dys, (const bf16 *)x, xs, (const bf16 *)w, rstd, nh, d);
    else
        k_rmsnorm_bwd_dx<false><<<(unsigned)(t * nh), row_threads(d), 0, st()>>>(
            (bf16 *)dx, dxs, (const bf16 *)dy, dys, (const bf16 *)x, xs, (const bf16 *)w, rstd, nh, d);
    CUDA_LAUNCH_CHECK();
}

void ul_cuda_headnorm_bwd(void *dx, int64_t dxs, float *dw, const void *dy, int64_t dys, const void *x, int64_t xs,
                          const void *w, const float *rstd, int64_t t, int64_t nh, int64_t d) {
    headnorm_bwd(dx, dxs, dw, dy, dys, x, xs, w, rstd, t, nh, d, false);
}

void ul_cuda_rmsnorm_fwd(void *y, float *rstd, const void *x, const void *w, int64_t t, int64_t D, float eps) {
    ul_cuda_headnorm_fwd(y, D, rstd, x, D, w, t, 1, D, eps);
}

void ul_cuda_rmsnorm_bwd(void *dx, float *dw, const void *dy, const void *x, const void *w, const float *rstd,
                         int64_t t, int64_t D) {
    headnorm_bwd(dx, D, dw, dy, D, x, D, w, rstd, t, 1, D, true);
}

/* ---------------------------------------------------------------- bias */

__global__ void k_bias_add(bf16 *__restrict__ y, int64_t ys, const bf16 *__restrict__ b, int64_t t, int64_t n) {
    const int64_t total = t * n;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = u / n, j = u - i * n;
        y[i * ys + j] = __float2bfloat16_rn(__bfloat162float(y[i * ys + j]) + __bfloat162float(b[j]));
    }
}

void ul_cuda_bias_add(void *y, int64_t ys, const void *b, int64_t t, int64_t n) {
    if (t <= 0 || n <= 0) return;
    k_bias_add<<<ul_grid1d(t * n, TPB), TPB, 0, st()>>>((bf16 *)y, ys, (const bf16 *)b, t, n);
    CUDA_LAUNCH_CHECK();
}

void ul_cuda_bias_bwd(float *db, const void *dy, int64_t dys, int64_t t, int64_t n) {
    if (t <= 0 || n <= 0) return;
    launch_col_sums(db, dy, dys, NULL, 0, NULL, t, 1, n);
}

/* ---------------------------------------------------------------- RoPE */

/* one thread per (token, pair index j < d/2), looping over heads */
__global__ void k_rope(bf16 *__restrict__ x, int64_t stride, int64_t t, int64_t nh, int64_t d,
                       const int32_t *__restrict__ pos, const float *__restrict__ inv_freq, int inverse) {
    const int64_t half = d / 2, total = t * half;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = u / half, j = u - i * half;
        float ang = (float)pos[i] * inv_freq[j]; /* fp32 product, as transformers */
        float s, c;
        sincosf(ang, &s, &c);
        if (inverse) s = -s;
        bf16 *xr = x + i * stride + j;
        for (int64_t h = 0; h < nh; h++) {
            bf16 *xh = xr + h * d;
            float x1 = __bfloat162float(xh[0]), x2 = __bfloat162float(xh[half]);
            xh[0] = __float2bfloat16_rn(x1 * c - x2 * s);
            xh[half] = __float2bfloat16_rn(x2 * c + x1 * s);
        }
    }
}

void ul_cuda_rope(void *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                  const float *inv_freq, int inverse) {
    UL_ASSERT(d % 2 == 0, "rope: head dim %lld is odd", (long long)d);
    if (t <= 0 || nh <= 0 || d <= 0) return;
    k_rope<<<ul_grid1d(t * (d / 2), TPB), TPB, 0, st()>>>((bf16 *)x, stride, t, nh, d, pos, inv_freq, inverse);
    CUDA_LAUNCH_CHECK();
}

/* ---------------------------------------------------------------- SwiGLU */

__global__ void k_swiglu_fwd(bf16 *__restrict__ h, const bf16 *__restrict__ g, const bf16 *__restrict__ u,
                             int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = __bfloat162float(g[i]);
        h[i] = __float2bfloat16_rn(x / (1.0f + expf(-x)) * __bfloat162float(u[i]));
    }
}

/* May run in place (dg == g, du == u; model.c's MLP backward does): no __restrict__ on the
 * pointers that alias, and each element's inputs are loaded before its stores. */
__global__ void k_swiglu_bwd(bf16 *dg, bf16 *du, const bf16 *__restrict__ dh, const bf16 *g, const bf16 *u,
                             int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = __bfloat162float(g[i]);
        float uu = __bfloat162float(u[i]);
        float gd = __bfloat162float(dh[i]);
        float s = 1.0f / (1.0f + expf(-x));
        du[i] = __float2bfloat16_rn(gd * (x * s));
        dg[i] = __float2bfloat16_rn(gd * uu * (s * (1.0f + x * (1.0f - s))));
    }
}

void ul_cuda_swiglu_fwd(void *h, const void *g, const void *u, int64_t n) {
    if (n <= 0) return;
    k_swiglu_fwd<<<ul_grid1d(n, TPB), TPB, 0, st()>>>((bf16 *)h, (const bf16 *)g, (const bf16 *)u, n);
    CUDA_LAUNCH_CHECK();
}
void ul_cuda_swiglu_bwd(void *dg, void *du, const void *dh, const void *g, const void *u, int64_t n) {
    if (n <= 0) return;
    k_swiglu_bwd<<<ul_grid1d(n, TPB), TPB, 0, st()>>>((bf16 *)dg, (bf16 *)du, (const bf16 *)dh, (const bf16 *)g,
                                                      (const bf16 *)u, n);
    CUDA_LAUNCH_CHECK();
}

/* ---------------------------------------------------------------- optimizer */

#define SUMSQ_BLOCKS 1024
/* Deterministic: a fixed grid, per-block partials in double, then one block sums them in
 * a fixed order. */
__global__ void k_sumsq_part(double *__restrict__ part, const float *__restrict__ x, int64_t n) {
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void k_sumsq_final(double *__restrict__ out, const double *__restrict__ part, int np) {
    double s = 0;
    for (int i = threadIdx.x; i < np; i += blockDim.x) s += part[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) out[0] = s;
}

double ul_cuda_sumsq(const float *x, int64_t n) {
    if (n <= 0) return 0.0;
    double *part = (double *)ul_cuda_scratch((SUMSQ_BLOCKS + 1) * sizeof(double));
    k_sumsq_part<<<SUMSQ_BLOCKS, TPB, 0, st()>>>(part + 1, x, n);
    CUDA_LAUNCH_CHECK();
    k_sumsq_final<<<1, 1024, 0, st()>>>(part, part + 1, SUMSQ_BLOCKS);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpyAsync(ul_cuda_state.host_dbl, part, sizeof(double), cudaMemcpyDeviceToHost, st()));
    CUDA_CHECK(cudaStreamSynchronize(st()));
    return ul_cuda_state.host_dbl[0];
}

__global__ void k_scale(float *__restrict__ x, int64_t n, float s) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}
void ul_cuda_scale(float *x, int64_t n, float s) {
    if (n <= 0) return;
    k_scale<<<ul_grid1d(n, TPB), TPB, 0, st()>>>(x, n, s);
    CUDA_LAUNCH_CHECK();
}

/* The CPU reference's arithmetic (torch.optim.AdamW single-tensor path), with explicitly
 * rounded operations so that nvcc does not contract them into FMAs: bitwise equal to the
 * CPU backend on the same inputs. */
__global__ void k_adamw(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                        float *__restrict__ v, int64_t n, float step_size, float bc2_sqrt, float decay, float w1,
                        float b2, float omb2, float eps) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gi = g[i], mi = m[i];
        mi = w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)))
                       : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), __fsub_rn(1.0f, w1)));
        float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(omb2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fsub_rn(__fmul_rn(p[i], decay), __fmul_rn(step_size, __fdiv_rn(mi, denom)));
    }
}

void ul_cuda_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2, float eps,
                   float wd, int64_t t) {
    UL_ASSERT(t >= 1, "adamw: step %lld must be >= 1", (long long)t);
    if (n <= 0) return;
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = (float)(1.0 - (double)lr * (double)wd);
    const float w1 = (float)(1.0 - (double)b1);
    const float omb2 = (float)(1.0 - (double)b2);
    k_adamw<<<ul_grid1d(n, TPB), TPB, 0, st()>>>(p, g, m, v, n, step_size, bc2_sqrt, decay, w1, b2, omb2, eps);
    CUDA_LAUNCH_CHECK();
}
