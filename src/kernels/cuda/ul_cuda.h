/* C-side hooks of the CUDA backend beyond the KernelOps table (kernels/kernels.h).
 * Defined by kernels/cuda/cuda_ops.cu when the backend is built, by cuda_stub.c otherwise. */
#ifndef UL_CUDA_H
#define UL_CUDA_H

/* The backend's compute stream (a cudaStream_t), NULL before ul_kernels_cuda() succeeded
 * or when the backend is not built. Every KernelOps call of the CUDA table runs on it. */
void *ul_cuda_stream(void);

/* Device memory in use on this process's GPU (total - free, GiB; all processes and the
 * CUDA context included, so an upper bound of this process's own); 0 without the backend. */
double ul_cuda_mem_used_gib(void);

/* Total memory of this process's GPU in bytes (cudaMemGetInfo); 0 without the backend. */
long long ul_cuda_mem_total_bytes(void);

#endif
