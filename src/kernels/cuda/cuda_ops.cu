/* The CUDA backend's KernelOps table: state (compute stream, cuBLASLt, scratch), memory
 * operations, and the table itself. The kernels live in the other files of this folder.
 *
 * ul_kernels_cuda() binds to the CURRENT device (the launcher picks it first, e.g.
 * ul_cuda_select_device() in comm/), creates the backend's one compute stream and returns
 * the table, or NULL when no GPU is visible. Later calls return the same table. */
#include <stdint.h>
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

/* The live-block table behind UlMemStats (host memory only; allocation is not hot). */
static size_t blk_slot(const UlCudaState *S, const void *p) {
    return (size_t)(((uintptr_t)p >> 8) * 0x9E3779B97F4A7C15ull) & (S->blk_cap - 1);
}

static void blk_add(void *p, size_t bytes, int host) {
    UlCudaState *S = &ul_cuda_state;
    if (2 * (S->blk_used + 1) > S->blk_cap) { /* grow (and drop tombstones) */
        size_t oc = S->blk_cap;
        void **op = S->blk_ptr;
        size_t *ob = S->blk_bytes;
        int *oh = S->blk_host;
        S->blk_cap = oc ? 2 * oc : 1024;
        S->blk_ptr = (void **)ul_calloc(S->blk_cap, sizeof(void *));
        S->blk_bytes = (size_t *)ul_calloc(S->blk_cap, sizeof(size_t));
        S->blk_host = (int *)ul_calloc(S->blk_cap, sizeof(int));
        S->blk_used = 0;
        for (size_t i = 0; i < oc; i++)
            if (op[i] && op[i] != (void *)1) {
                size_t j = blk_slot(S, op[i]);
                while (S->blk_ptr[j]) j = (j + 1) & (S->blk_cap - 1);
                S->blk_ptr[j] = op[i];
                S->blk_bytes[j] = ob[i];
                S->blk_host[j] = oh[i];
                S->blk_used++;
            }
        free(op);
        free(ob);
        free(oh);
    }
    size_t j = blk_slot(S, p);
    while (S->blk_ptr[j] && S->blk_ptr[j] != (void *)1) j = (j + 1) & (S->blk_cap - 1);
    if (!S->blk_ptr[j]) S->blk_used++;
    S->blk_ptr[j] = p;
    S->blk_bytes[j] = bytes;
    S->blk_host[j] = host;
    S->cur[host] += (int64_t)bytes;
    if (S->cur[host] > S->peak[host]) S->peak[host] = S->cur[host];
}

static void blk_remove(void *p) {
    UlCudaState *S = &ul_cuda_state;
    if (!S->blk_cap) return;
    for (size_t j = blk_slot(S, p); S->blk_ptr[j]; j = (j + 1) & (S->blk_cap - 1))
        if (S->blk_ptr[j] == p) {
            S->cur[S->blk_host[j]] -= (int64_t)S->blk_bytes[j];
            S->blk_ptr[j] = (void *)1; /* tombstone */
            return;
        }
}

static void cu_mem_stats(UlMemStats *s) {
    const UlCudaState *S = &ul_cuda_state;
    s->dev_cur = S->cur[0];
    s->dev_peak = S->peak[0];
    s->host_cur = S->cur[1];
    s->host_peak = S->peak[1];
}

static void cu_mem_reset_peak(void) {
    UlCudaState *S = &ul_cuda_state;
    S->peak[0] = S->cur[0];
    S->peak[1] = S->cur[1];
}

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
    blk_add(p, bytes, 0);
    return p;
}

static void cu_free(void *p) {
    if (!p) return;
    /* queued kernels and copies may still use it */
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream));
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.copy_stream));
    blk_remove(p);
    CUDA_CHECK(cudaFree(p));
}

/* ---------------------------------------------------------------- host memory, copy stream, events */

static void *cu_host_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        UL_FATAL("CUDA: cannot allocate %zu bytes of pinned host memory (%s)", bytes, cudaGetErrorString(e));
    }
    memset(p, 0, bytes);
    blk_add(p, bytes, 1);
    return p;
}

static void cu_host_free(void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream));
    CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.copy_stream));
    blk_remove(p);
    CUDA_CHECK(cudaFreeHost(p));
}

static cudaStream_t cu_stream_of(int stream) {
    return stream == UL_STREAM_COPY ? ul_cuda_state.copy_stream : ul_cuda_state.stream;
}

static void *cu_event_create(void) {
    cudaEvent_t ev;
    CUDA_CHECK(cudaEventCreate(&ev)); /* with timing: event_elapsed measures the copies */
    return (void *)ev;
}

static void cu_event_destroy(void *ev) {
    if (ev) CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev));
}

static void cu_event_record(void *ev, int stream) { CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, cu_stream_of(stream))); }

static void cu_event_wait(int stream, void *ev) {
    CUDA_CHECK(cudaStreamWaitEvent(cu_stream_of(stream), (cudaEvent_t)ev, 0));
}

static double cu_event_elapsed(void *a, void *b) {
    float ms = 0;
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b));
    return ms * 1e-3;
}

static void cu_copy_async(void *dst, const void *src, size_t bytes, int to_host) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice,
                               ul_cuda_state.copy_stream));
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

static void cu_sync(void) { CUDA_CHECK(cudaStreamSynchronize(ul_cuda_state.stream)); }

static void cu_zero(void *x, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemsetAsync(x, 0, bytes, ul_cuda_state.stream));
}

/* ---------------------------------------------------------------- table */

static const KernelOps g_cuda_ops = {
    /* .name = */ "cuda",
    /* .act_bytes = */ sizeof(bf16),
    /* .on_device = */ 1,
    /* .compute_stream = */ ul_cuda_stream,
    /* .device_mem_used_gib = */ ul_cuda_mem_used_gib,
    /* .device_mem_total = */ ul_cuda_mem_total_bytes,
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
    /* .host_alloc = */ cu_host_alloc,
    /* .host_free = */ cu_host_free,
    /* .event_create = */ cu_event_create,
    /* .event_destroy = */ cu_event_destroy,
    /* .event_record = */ cu_event_record,
    /* .event_wait = */ cu_event_wait,
    /* .event_elapsed = */ cu_event_elapsed,
    /* .copy_async = */ cu_copy_async,
    /* .mem_stats = */ cu_mem_stats,
    /* .mem_reset_peak = */ cu_mem_reset_peak,
    /* .matmul = */ ul_cuda_matmul,
    /* .embedding_fwd = */ ul_cuda_embedding_fwd,
    /* .embedding_bwd = */ ul_cuda_embedding_bwd,
    /* .rmsnorm_fwd = */ ul_cuda_rmsnorm_fwd,
    /* .rmsnorm_bwd = */ ul_cuda_rmsnorm_bwd,
    /* .headnorm_fwd = */ ul_cuda_headnorm_fwd,
    /* .headnorm_bwd = */ ul_cuda_headnorm_bwd,
    /* .bias_add = */ ul_cuda_bias_add,
    /* .bias_bwd = */ ul_cuda_bias_bwd,
    /* .rope = */ ul_cuda_rope,
    /* .swiglu_fwd = */ ul_cuda_swiglu_fwd,
    /* .swiglu_bwd = */ ul_cuda_swiglu_bwd,
    /* .attention_fwd = */ ul_cuda_attention_fwd,
    /* .attention_bwd = */ ul_cuda_attention_bwd,
    /* .cross_entropy = */ ul_cuda_cross_entropy,
    /* .sumsq = */ ul_cuda_sumsq,
    /* .scale = */ ul_cuda_scale,
    /* .adamw = */ ul_cuda_adamw,
};

extern "C" int ul_kernels_cuda_select(int local_rank) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError(); /* clear the sticky "no device" error */
        return -1;
    }
    CUDA_CHECK(cudaSetDevice(local_rank % n));
    return local_rank % n;
}

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
    S->cc = prop.major * 10 + prop.minor;
    S->smem_optin = prop.sharedMemPerBlockOptin;
    CUDA_CHECK(cudaStreamCreate(&S->stream)); /* blocking: ordered with the legacy default stream */
    /* the copy stream must not wait for the compute stream implicitly: only its events order it */
    CUDA_CHECK(cudaStreamCreateWithFlags(&S->copy_stream, cudaStreamNonBlocking));
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

extern "C" long long ul_cuda_mem_total_bytes(void) {
    size_t free_b = 0, total_b = 0;
    if (g_inited != 1) return 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return (long long)total_b;
}

extern "C" void *ul_cuda_stream(void) { return g_inited == 1 ? (void *)ul_cuda_state.stream : NULL; }
