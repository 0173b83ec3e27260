/* CUDA matmul: cuBLASLt, bf16 A/B, fp32 compute, C/D bf16 or fp32 (c_f32).
 *
 * Row-major onto column-major: a row-major [r, c] matrix with leading dimension ld is the
 * column-major [c, r] matrix with the same ld, i.e. its transpose. So the row-major
 *     C[M,N] = op(A)[M,K] op(B)[K,N]
 * is computed as the column-major
 *     C^T[N,M] = op(B)^T[N,K] op(A)^T[K,M]
 * with cuBLASLt's "A" = the B buffer (op N when B is stored [K,N], T when stored [N,K]) and
 * cuBLASLt's "B" = the A buffer (op N when A is stored [M,K], T when stored [K,M]).
 *
 * Plans (descriptors + the heuristic's algorithm) are cached by shape, leading dimensions,
 * output type and pointer alignment. Shapes for which cuBLASLt offers no algorithm run on
 * a simple tiled fallback kernel (fp32 accumulation), so every shape is served. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

typedef struct {
    int used;
    int ta, tb, c_f32, fallback;
    int64_t M, N, K, lda, ldb, ldc;
    uint32_t alA, alB, alC; /* pointer alignments (bytes, capped at 256) */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lx, ly, lc;
    cublasLtMatmulAlgo_t algo;
} Plan;

#define PLAN_SLOTS 512
static Plan g_plans[PLAN_SLOTS];

static int g_force_fallback; /* UL_CUDA_MATMUL_FALLBACK=1: every product on the fallback (tests) */

void ul_cuda_matmul_init(void) {
    memset(g_plans, 0, sizeof g_plans);
    const char *e = getenv("UL_CUDA_MATMUL_FALLBACK");
    g_force_fallback = e && e[0] == '1';
}

static uint32_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

static int plan_eq(const Plan *p, int ta, int tb, int c_f32, int64_t M, int64_t N, int64_t K, int64_t lda,
                   int64_t ldb, int64_t ldc, uint32_t alA, uint32_t alB, uint32_t alC) {
    return p->used && p->ta == ta && p->tb == tb && p->c_f32 == c_f32 && p->M == M && p->N == N && p->K == K &&
           p->lda == lda && p->ldb == ldb && p->ldc == ldc && p->alA == alA && p->alB == alB && p->alC == alC;
}

static void plan_destroy(Plan *p) {
    if (!p->used) return;
    if (!p->fallback) {
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->lx);
        cublasLtMatrixLayoutDestroy(p->ly);
        cublasLtMatrixLayoutDestroy(p->lc);
    }
    memset(p, 0, sizeof *p);
}

static void plan_build(Plan *p) {
    cublasOperation_t opx = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N; /* cuBLASLt A = our B */
    cublasOperation_t opy = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N; /* cuBLASLt B = our A */
    const uint64_t cm = (uint64_t)p->N, cn = (uint64_t)p->M, ck = (uint64_t)p->K;
    cudaDataType_t ct = p->c_f32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof opx));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof opy));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lx, CUDA_R_16BF, opx == CUBLAS_OP_N ? cm : ck,
                                            opx == CUBLAS_OP_N ? ck : cm, p->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->ly, CUDA_R_16BF, opy == CUBLAS_OP_N ? ck : cn,
                                            opy == CUBLAS_OP_N ? cn : ck, p->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, ct, cm, cn, p->ldc));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = UL_CUDA_WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    uint32_t ax = p->alB, ay = p->alA, ac = p->alC;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ax, sizeof ax));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ay, sizeof ay));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac));
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(ul_cuda_state.lt, p->op, p->lx, p->ly, p->lc, p->lc, pref, 1,
                                                      &res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || nres == 0 || res.state != CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulDescDestroy(p->op);
        cublasLtMatrixLayoutDestroy(p->lx);
        cublasLtMatrixLayoutDestroy(p->ly);
        cublasLtMatrixLayoutDestroy(p->lc);
        p->fallback = 1;
        return;
    }
    p->algo = res.algo;
}

/* ---------------------------------------------------------------- fallback kernels */

#define FB_T 16
/* C = alpha op(A) op(B) + beta C, 16x16 tiles, fp32 accumulation (any shape/alignment). */
__global__ void k_gemm_fallback(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                                const bf16 *__restrict__ A, int64_t lda, const bf16 *__restrict__ B, int64_t ldb,
                                float beta, void *C, int64_t ldc, int c_f32) {
    __shared__ float sa[FB_T][FB_T + 1], sb[FB_T][FB_T + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t row = (int64_t)blockIdx.y * FB_T + ty, col = (int64_t)blockIdx.x * FB_T + tx;
    float acc = 0;
    for (int64_t k0 = 0; k0 < K; k0 += FB_T) {
        int64_t ar = (int64_t)blockIdx.y * FB_T + ty, ak = k0 + tx; /* op(A)[ar, ak] */
        float av = 0, bv = 0;
        if (ar < M && ak < K) av = __bfloat162float(ta ? A[ak * lda + ar] : A[ar * lda + ak]);
        int64_t bk = k0 + ty, bc = (int64_t)blockIdx.x * FB_T + tx; /* op(B)[bk, bc] */
        if (bk < K && bc < N) bv = __bfloat162float(tb ? B[bc * ldb + bk] : B[bk * ldb + bc]);
        sa[ty][tx] = av;
        sb[ty][tx] = bv;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < FB_T; kk++) acc += sa[ty][kk] * sb[kk][tx];
        __syncthreads();
    }
    if (row < M && col < N) {
        if (c_f32) {
            float *c = (float *)C + row * ldc + col;
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        } else {
            bf16 *c = (bf16 *)C + row * ldc + col;
            float v = beta == 0.0f ? alpha * acc : alpha * acc + beta * __bfloat162float(*c);
            *c = __float2bfloat16_rn(v);
        }
    }
}

/* C = beta C (beta == 0 writes zeros: C is not read) */
__global__ void k_scale_c(void *C, int64_t ldc, int64_t M, int64_t N, float beta, int c_f32) {
    const int64_t total = M * N;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = u / N, c = u - r * N;
        if (c_f32) {
            float *p = (float *)C + r * ldc + c;
            *p = beta == 0.0f ? 0.0f : *p * beta;
        } else {
            bf16 *p = (bf16 *)C + r * ldc + c;
            *p = __float2bfloat16_rn(beta == 0.0f ? 0.0f : __bfloat162float(*p) * beta);
        }
    }
}

/* ---------------------------------------------------------------- entry */

void ul_cuda_matmul(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                    const void *B, int64_t ldb, float beta, void *C, int64_t ldc, int c_f32) {
    if (M <= 0 || N <= 0) return;
    cudaStream_t s = ul_cuda_state.stream;
    if (K <= 0 || alpha == 0.0f) {
        if (beta == 1.0f) return;
        k_scale_c<<<ul_grid1d(M * N, 256), 256, 0, s>>>(C, ldc, M, N, beta, c_f32 ? 1 : 0);
        CUDA_LAUNCH_CHECK();
        return;
    }
    ta = ta ? 1 : 0;
    tb = tb ? 1 : 0;
    c_f32 = c_f32 ? 1 : 0;
    const uint32_t alA = align_of(A), alB = align_of(B), alC = align_of(C);
    uint64_t h = 0;
    const uint64_t key[] = {(uint64_t)ta, (uint64_t)tb, (uint64_t)c_f32, (uint64_t)M, (uint64_t)N, (uint64_t)K,
                            (uint64_t)lda, (uint64_t)ldb, (uint64_t)ldc, alA, alB, alC};
    for (size_t i = 0; i < sizeof key / sizeof key[0]; i++) h = mix(h, key[i]);
    Plan *p = NULL;
    for (int probe = 0; probe < 8; probe++) {
        Plan *q = &g_plans[(h + (uint64_t)probe) % PLAN_SLOTS];
        if (plan_eq(q, ta, tb, c_f32, M, N, K, lda, ldb, ldc, alA, alB, alC)) {
            p = q;
            break;
        }
        if (!q->used) {
            p = q;
            break;
        }
    }
    if (!p) { /* the probe window is full: evict its first slot */
        p = &g_plans[h % PLAN_SLOTS];
        plan_destroy(p);
    }
    if (!p->used) {
        p->used = 1;
        p->ta = ta;
        p->tb = tb;
        p->c_f32 = c_f32;
        p->M = M;
        p->N = N;
        p->K = K;
        p->lda = lda;
        p->ldb = ldb;
        p->ldc = ldc;
        p->alA = alA;
        p->alB = alB;
        p->alC = alC;
        p->fallback = 0;
        plan_build(p);
    }
    if (p->fallback || g_force_fallback) {
        dim3 grid((unsigned)((N + FB_T - 1) / FB_T), (unsigned)((M + FB_T - 1) / FB_T));
        UL_ASSERT((M + FB_T - 1) / FB_T <= 65535, "matmul fallback: M = %lld too large", (long long)M);
        k_gemm_fallback<<<grid, dim3(FB_T, FB_T), 0, s>>>(ta, tb, M, N, K, alpha, (const bf16 *)A, lda,
                                                          (const bf16 *)B, ldb, beta, C, ldc, c_f32);
        CUDA_LAUNCH_CHECK();
        return;
    }
    CUBLAS_CHECK(cublasLtMatmul(ul_cuda_state.lt, p->op, &alpha, B, p->lx, A, p->ly, &beta, C, p->lc, C, p->lc,
                                &p->algo, ul_cuda_state.workspace, UL_CUDA_WORKSPACE_BYTES, s));
}
