/* The CUDA backend's KernelOps table: state (compute stream, cuBLASLt, scratch), memory
 * operations, and the table itself. The kernels live in the other files of this folder.
 *
 * ul_kernels_cuda() binds to the CURRENT device (the launcher picks it first, e.g.
 * ul_cuda_select_device() in comm/), creates the backend's one compute stream and returns
 * the table, or NULL when no GPU is visible. Later calls return the same table. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "kernels/cuda/ul_cuda.h"
}

UlCudaState ul_cuda_state;
static int g_inited = 0; /* 0 not tried, 1 ready, -1 no GPU */

void *ul_cuda_scratch(size_t bytes) {
    UlCudaState *S = &ul_cuda_state;
    if (bytes > S->scratch_bytes) {
        if (S->scratch) {
            CUDA_CHECK(cudaStreamSynchronize(S->stream)); /* earlier kernels may still read it */
            CUDA_CHECK(cudaFree(S->scratch));
        }
        size_t n = bytes + bytes / 4 + 4096;
        CUDA_CHECK(cudaMalloc(&S->scratch, n));
        S->scratch_bytes = n;
    }
    return S->scratch;
}

/* ---------------------------------------------------------------- memory */

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    size_t n = bytes ? (bytes + 255) & ~(size_t)255 : 256;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        UL_FATAL("CUDA: out of device memory allocating %zu bytes (%s; %zu of %zu bytes free)", bytes,
                 cudaGetErrorString(e), fr, tot);
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, n, ul_cuda_state.stream));
    return p;
}

static void cu_free(void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream)); /* queued kernels may still use it */
    CUDA_CHECK(cudaFree(p));
}

/* From pageable host memory cudaMemcpyAsync returns once the source has been staged, so
 * the caller may reuse host_src at once. */
static void cu_upload(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ul_cuda_state.stream));
}

static void cu_download(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ul_cuda_state.stream));
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream));
}

/* Page-locked host memory: the offloaded optimizer state (DMA at full PCIe speed). */
static void *cu_host_alloc(size_t bytes) {
    void *p = NULL;
    size_t n = bytes ? bytes : 1;
    cudaError_t e = cudaHostAlloc(&p, n, cudaHostAllocDefault);
    if (e != cudaSuccess) UL_FATAL("CUDA: cannot allocate %zu bytes of pinned host memory: %s", bytes, cudaGetErrorString(e));
    memset(p, 0, n);
    return p;
}

static void cu_host_free(void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream)); /* a queued copy may still read it */
    CUDA_CHECK(cudaFreeHost(p));
}

static void cu_sync(void) { CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream)); }

static void cu_zero(void *x, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemsetAsync(x, 0, bytes, ul_cuda_state.stream));
}

/* ---------------------------------------------------------------- table */

static const KernelOps g_cuda_ops = {
    /* .name = */ "cuda",
    /* .act_bytes = */ sizeof(bf16),
    /* .alloc = */ cu_alloc,
    /* .free = */ cu_free,
    /* .upload = */ cu_upload,
    /* .download = */ cu_download,
    /* .sync = */ cu_sync,
    /* .zero = */ cu_zero,
    /* .copy2d = */ ul_cuda_copy2d,
    /* .add2d = */ ul_cuda_add2d,
    /* .to_act = */ ul_cuda_to_act,
    /* .to_f32 = */ ul_cuda_to_f32,
    /* .matmul = */ ul_cuda_matmul,
    /* .embedding_fwd = */ ul_cuda_embedding_fwd,
    /* .embedding_bwd = */ ul_cuda_embedding_bwd,
    /* .rmsnorm_fwd = */ ul_cuda_rmsnorm_fwd,
    /* .rmsnorm_bwd = */ ul_cuda_rmsnorm_bwd,
    /* .rope = */ ul_cuda_rope,
    /* .swiglu_fwd = */ ul_cuda_swiglu_fwd,
    /* .swiglu_bwd = */ ul_cuda_swiglu_bwd,
    /* .attention_fwd = */ ul_cuda_attention_fwd,
    /* .attention_bwd = */ ul_cuda_attention_bwd,
    /* .cross_entropy = */ ul_cuda_cross_entropy,
    /* .sumsq = */ ul_cuda_sumsq,
    /* .scale = */ ul_cuda_scale,
    /* .adamw = */ ul_cuda_adamw,
    /* .host_alloc = */ cu_host_alloc,
    /* .host_free = */ cu_host_free,
};

extern "C" const KernelOps *ul_kernels_cuda(void) {
    if (g_inited == 1) return &g_cuda_ops;
    if (g_inited == -1) return NULL;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        cudaGetLastError(); /* clear the "no device" error */
        g_inited = -1;
        return NULL;
    }
    UlCudaState *S = &ul_cuda_state;
    memset(S, 0, sizeof *S);
    CUDA_CHECK(cudaGetDevice(&S->device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, S->device));
    if (prop.major < 8)
        UL_FATAL("CUDA backend needs compute capability >= 8.0 (bf16 tensor cores); device %d is %d.%d",
                 S->device, prop.major, prop.minor);
    S->n_sm = prop.multiProcessorCount;
    S->smem_optin = prop.sharedMemPerBlockOptin;
    CUDA_CHECK(cudaStreamCreate(&S->stream)); /* blocking: ordered with the legacy default stream */
    CUBLAS_CHECK(cublasLtCreate(&S->lt));
    CUDA_CHECK(cudaMalloc(&S->workspace, UL_CUDA_WORKSPACE_BYTES));
    CUDA_CHECK(cudaMallocHost((void **)&S->host_dbl, 1024 * sizeof(double)));
    ul_cuda_matmul_init();
    ul_cuda_attention_init();
    g_inited = 1;
    return &g_cuda_ops;
}

extern "C" double ul_cuda_mem_used_gib(void) {
    size_t free_b = 0, total_b = 0;
    if (g_inited != 1 || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return (double)(total_b - free_b) / (1024.0 * 1024.0 * 1024.0);
}

extern "C" void *ul_cuda_stream(void) { return g_inited == 1 ? (void *)ul_cuda_state.stream : NULL; }
