/* Shared declarations of the CUDA backend (kernels/cuda): error checking, the backend's
 * state (one compute stream, the cuBLASLt handle and workspace, scratch), bf16 helpers
 * and the entry points that cuda_ops.cu puts into the KernelOps table.
 *
 * Types follow kernels/kernels.h: "act" buffers are bf16 (__nv_bfloat16), f32 buffers
 * are float, int buffers live in device memory. Every kernel runs on ul_cuda_state.stream. */
#ifndef UL_CUDA_COMMON_CUH
#define UL_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/common.h"
#include "kernels/kernels.h"
}

#define CUDA_CHECK(call)                                                                     \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) UL_FATAL("CUDA: %s: %s (%s)", #call, cudaGetErrorString(e_),  \
                                        cudaGetErrorName(e_));                               \
    } while (0)
/* After a kernel launch: reports launch-configuration errors at the launch site. */
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())
#define CUBLAS_CHECK(call)                                                                   \
    do {                                                                                     \
        cublasStatus_t s_ = (call);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) UL_FATAL("cuBLASLt: %s: status %d", #call, (int)s_); \
    } while (0)

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ unsigned ul_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(unsigned *)&v;
}

/* 2^x (ex2.approx.ftz: 2 ulp, -inf -> 0) */
__device__ __forceinline__ float ul_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* The largest di in [lo, hi] with cu[di] <= i (lo when none is larger: the caller knows
 * cu[lo] <= i), by binary search (cu: document offsets in device memory, as in attention's
 * cu_seqlens). */
__device__ __forceinline__ int64_t ul_doc_in(const int64_t *__restrict__ cu, int64_t lo, int64_t hi, int64_t i) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (__ldg(cu + mid) <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Index of the document holding token i: the largest di < n_docs with cu[di] <= i
 * (cu: [n_docs + 1] document offsets). */
__device__ __forceinline__ int64_t ul_doc_of(const int64_t *__restrict__ cu, int64_t n_docs, int64_t i) {
    return ul_doc_in(cu, 0, n_docs - 1, i);
}

/* The same for token i in every lane of a converged warp, with the document's start and end
 * (cu[doc], cu[doc + 1]): a 32-way search, each round one load per lane and a vote, so
 * rounds of dependent loads number log32(n_docs) (2 up to 1,024 documents) where
 * ul_doc_of's chain is log2(n_docs) long (the Hopper attention kernels' start, where with
 * packed documents that chain was on every CTA's path, bench/RESULTS.md). */
__device__ __forceinline__ int64_t ul_doc_of_warp(const int64_t *__restrict__ cu, int64_t n_docs, int64_t i,
                                                  int64_t *start, int64_t *end) {
    /* (32-bit counts: the Hopper launchers take n_docs < 2^31 only) */
    const int lane = threadIdx.x & 31;
    int lo = 0, n = (int)n_docs; /* the document is in [lo, lo + n) */
    while (n > 1) {
        const int step = (n + 31) >> 5, off = lane * step;
        const unsigned vote = __ballot_sync(0xffffffffu, off < n && __ldg(cu + lo + off) <= i);
        const int up = (31 - __clz(vote)) * step; /* lane 0's vote is set: cu[lo] <= i */
        lo += up;
        n = min(step, n - up);
    }
    *start = __ldg(cu + lo);
    *end = __ldg(cu + lo + 1);
    return lo;
}

/* The document of token i (i < cu[n_docs]) given document d, with start s = cu[d] <= i and
 * end e = cu[d + 1]: d when i < e, without a load (rows of a tile in one document); else a
 * binary search over the documents after d (empty ones included, so no closer bound).
 * Its start and end in *start, *end. */
__device__ __forceinline__ int64_t ul_doc_after(const int64_t *__restrict__ cu, int64_t n_docs, int64_t i,
                                                int64_t d, int64_t s, int64_t e, int64_t *start, int64_t *end) {
    if (i < e) {
        *start = s;
        *end = e;
        return d;
    }
    const int64_t lo = ul_doc_in(cu, d + 1, n_docs - 1, i); /* cu[d + 1] = e <= i */
    *start = __ldg(cu + lo);
    *end = __ldg(cu + lo + 1);
    return lo;
}


typedef struct {
    int device;
    int n_sm;
    int cc; /* compute capability, major * 10 + minor */
    size_t smem_optin; /* max dynamic shared memory per block (opt-in) */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace; /* [UL_CUDA_WORKSPACE_BYTES] cuBLASLt workspace */
    void *scratch;   /* grown on demand: attention D, sumsq partials */
    size_t scratch_bytes;
    double *host_dbl; /* pinned [1024] for sumsq results */
    cudaStream_t copy_stream; /* UL_STREAM_COPY: host <-> device copies of the checkpoint offload */
    void *fwd_task_ctr; /* the persistent attention forward's task counter (a module variable), once known */
    /* accounting of alloc / host_alloc (UlMemStats): the size of every live block */
    void **blk_ptr;      /* [blk_cap] open-addressing table, NULL = empty, (void*)1 = deleted */
    size_t *blk_bytes;   /* [blk_cap] */
    int *blk_host;       /* [blk_cap] 1: host_alloc */
    size_t blk_cap, blk_used;
    int64_t cur[2], peak[2]; /* [0] device, [1] pinned host */
} UlCudaState;

extern UlCudaState ul_cuda_state;

/* Device scratch of at least `bytes` (contents undefined; valid until the next call). */
void *ul_cuda_scratch(size_t bytes);

static inline unsigned ul_grid1d(int64_t n, int threads, int64_t max_blocks = 65535 * 16) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > max_blocks) b = max_blocks;
    return (unsigned)b;
}

/* ---- entry points (one per KernelOps member, same contract) ---- */
void ul_cuda_copy2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols);
void ul_cuda_add2d(void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t cols);
void ul_cuda_to_act(void *dst, const float *src, int64_t n);
void ul_cuda_to_f32(float *dst, const void *src, int64_t n);
void ul_cuda_matmul(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                    const void *B, int64_t ldb, float beta, void *C, int64_t ldc, int c_f32);
void ul_cuda_matmul_init(void);
void ul_cuda_embedding_fwd(void *out, const int32_t *tokens, const void *wte, int64_t t, int64_t D);
void ul_cuda_embedding_bwd(float *dwte, const void *dout, const int32_t *tokens, int64_t t, int64_t D);
void ul_cuda_rmsnorm_fwd(void *y, float *rstd, const void *x, const void *w, int64_t t, int64_t D, float eps);
void ul_cuda_rmsnorm_bwd(void *dx, float *dw, const void *dy, const void *x, const void *w, const float *rstd,
                         int64_t t, int64_t D);
void ul_cuda_headnorm_fwd(void *y, int64_t ys, float *rstd, const void *x, int64_t xs, const void *w, int64_t t,
                          int64_t nh, int64_t d, float eps);
void ul_cuda_headnorm_bwd(void *dx, int64_t dxs, float *dw, const void *dy, int64_t dys, const void *x, int64_t xs,
                          const void *w, const float *rstd, int64_t t, int64_t nh, int64_t d);
void ul_cuda_bias_add(void *y, int64_t ys, const void *b, int64_t t, int64_t n);
void ul_cuda_bias_bwd(float *db, const void *dy, int64_t dys, int64_t t, int64_t n);
void ul_cuda_rope(void *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                  const float *inv_freq, int inverse);
void ul_cuda_swiglu_fwd(void *h, const void *g, const void *u, int64_t n);
void ul_cuda_swiglu_bwd(void *dg, void *du, const void *dh, const void *g, const void *u, int64_t n);
void ul_cuda_attention_init(void);
void ul_cuda_attention_fwd(const UlAttention *a);
void ul_cuda_attention_bwd(const UlAttention *a);
/* Hopper forward (cuda_attention_sm90.cu): returns 1 when it ran, 0 when the device, the
 * build or the shape needs the portable kernel (or UL_ATTN_KERNEL=simple asks for it). */
int ul_cuda_attention_fwd_sm90(void *o, int64_t os, float *lse, const void *q, int64_t qs, const void *k, int64_t ks,
                               const void *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                               const int64_t *cu_seqlens, int64_t n_docs, float scale);
int ul_cuda_attention_bwd_sm90(void *dq, int64_t dqs, void *dk, int64_t dks, void *dv, int64_t dvs, const void *dout,
                               int64_t dos, const void *q, int64_t qs, const void *k, int64_t ks, const void *v,
                               int64_t vs, const void *o, int64_t os, const float *lse, int64_t T, int64_t Hq,
                               int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs, float scale);
void ul_cuda_cross_entropy(void *logits, const int32_t *labels, int64_t n, int64_t V, float dscale, double *acc);
double ul_cuda_sumsq(const float *x, int64_t n);
void ul_cuda_scale(float *x, int64_t n, float s);
void ul_cuda_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2, float eps,
                   float wd, int64_t t);

/* ---- device helpers ---- */
__device__ __forceinline__ float ul_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ double ul_warp_sum_d(double x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float ul_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

#endif
