/* CUDA cross-entropy on one tile of logits, fused with its backward (kernels/kernels.h).
 * One block per row: an online (max, sum-exp) pass in fp32, a block reduction, then the
 * row is overwritten by dlogits = (softmax - onehot) * dscale in bf16. The row's loss is
 * added to the device double acc[0] (and 1 to acc[1]) with atomicAdd. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define CE_THREADS 512

__device__ __forceinline__ void ms_combine(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) {
        s = 0.0f;
    } else {
        s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
    }
    m = mn;
}

__global__ void __launch_bounds__(CE_THREADS) k_cross_entropy(bf16 *__restrict__ logits,
                                                              const int32_t *__restrict__ labels, int64_t V,
                                                              float dscale, double *__restrict__ acc) {
    __shared__ float sm[32], ss[32];
    const int64_t row = blockIdx.x;
    bf16 *x = logits + row * V;
    const int32_t lab = labels[row];
    if (lab == UL_IGNORE_INDEX) {
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) x[j] = __float2bfloat16_rn(0.0f);
        return;
    }
    if (lab < 0 || (int64_t)lab >= V) __trap(); /* the CPU backend aborts on such labels */
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float v = __bfloat162float(x[j]);
        if (v > m) {
            s = s * expf(m - v) + 1.0f; /* expf(-inf) = 0 on the first element */
            m = v;
        } else if (v > -INFINITY) {
            s += expf(v - m);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_combine(m, s, m2, s2);
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) {
        sm[w] = m;
        ss[w] = s;
    }
    __syncthreads();
    m = l < nw ? sm[l] : -INFINITY;
    s = l < nw ? ss[l] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_combine(m, s, m2, s2);
    }
    /* every thread now holds the row's (m, s) */
    const float xl = __bfloat162float(x[lab]);
    __syncthreads(); /* x[lab] is read by all before anyone overwrites it */
    const float c = (float)((double)dscale / (double)s);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float p = expf(__bfloat162float(x[j]) - m) * c;
        if (j == lab) p -= dscale;
        x[j] = __float2bfloat16_rn(p);
    }
    if (threadIdx.x == 0) {
        atomicAdd(&acc[0], (double)m + log((double)s) - (double)xl);
        atomicAdd(&acc[1], 1.0);
    }
}

void ul_cuda_cross_entropy(void *logits, const int32_t *labels, int64_t n, int64_t V, float dscale, double *acc) {
    if (n <= 0 || V <= 0) return;
    UL_ASSERT(n <= 0x7fffffff, "cross_entropy: %lld rows is too many for one call", (long long)n);
    k_cross_entropy<<<(unsigned)n, CE_THREADS, 0, ul_cuda_state.stream>>>((bf16 *)logits, labels, V, dscale, acc);
    CUDA_LAUNCH_CHECK();
}
