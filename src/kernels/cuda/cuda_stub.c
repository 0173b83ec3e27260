/* Built instead of the kernels/cuda .cu files when the CUDA backend is disabled (UL_CUDA=OFF or no
 * nvcc): the backend is simply absent. */
#include <stddef.h>

#include "kernels/cuda/ul_cuda.h"
#include "kernels/kernels.h"

const KernelOps *ul_kernels_cuda(void) { return NULL; }
int ul_kernels_cuda_select(int local_rank) {
    (void)local_rank;
    return -2;
}
void *ul_cuda_stream(void) { return NULL; }
double ul_cuda_mem_used_gib(void) { return 0; }
long long ul_cuda_mem_total_bytes(void) { return 0; }
