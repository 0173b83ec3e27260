/* What each backend allocates for itself, declared for the memory plan (kernels.h,
 * ul_kernels_workspace): the plan adds these items and knows no backend internals. Kept
 * next to the kernel interface so that it builds without the CUDA toolkit (`ulysses plan`
 * plans a GPU run on any machine). */
#include "kernels/kernels.h"

#include <stdio.h>

static void item(UlWorkspace *w, int64_t bytes, const char *name) {
    if (w->n < UL_WORKSPACE_MAX) w->item[w->n++] = (UlWorkspaceItem){bytes, name};
}

void ul_kernels_workspace(int cuda, int64_t T, int64_t Hq_l, int64_t d, UlWorkspace *w) {
    const int64_t F = (int64_t)sizeof(float);
    w->n = 0;
    if (!cuda) {
        item(w, T * Hq_l * F, "attention backward D [T, Hq_l] (transient)");
        return;
    }
    item(w, UL_CUDA_WORKSPACE_BYTES, "cuBLASLt workspace");
    /* ul_cuda_scratch (kernels/cuda/cuda_ops.cu), grown by 1/4: the attention backward's
     * rowsum(dO * O) and, for the Hopper kernels, lse in log2 units, both f32 [Hq_l][T
     * rounded up to 64], and at d = 64 the fused Hopper backward's fp32 dQ accumulator
     * [T, Hq_l, d] (its default there; the two-kernel default at d = 128 needs none) */
    int64_t D_bytes = 2 * Hq_l * ((T + 63) / 64 * 64) * F + (d == 64 ? T * Hq_l * d * F : 0);
    item(w, D_bytes + D_bytes / 4 + 4096,
         d == 64 ? "attention scratch D, lse [2][Hq_l][T], dQ fp32 [T, Hq_l, d]" : "attention scratch D, lse [2][Hq_l][T]");
}
