/* The optimizer step with ZeRO over the shard group (DESIGN §2, §6), and optimizer-state
 * offload to host memory. Backend-independent: kernels through KernelOps, exchanges
 * through the mesh's device groups (MPI on the CPU, NCCL on CUDA).
 *
 * Layout (stages >= 1). The flat fp32 vector of n parameters (core/params.h order) is
 * padded with zeros to n_pad = ceil(n / S) * S, S = the shard group's size (dp_shard * sp
 * ranks of one replica: SP ranks hold the same parameters, so they share the sharding, as
 * DeepSpeed does). Shard rank q (= r_shard * sp + r_sp) owns the contiguous slice
 * [q * per, (q + 1) * per), per = n_pad / S, whose part inside [0, n) is [lo, hi); the
 * padding (at most S - 1 elements, in the last ranks' slices) is zero, never updated, and
 * only carried by the collectives, which all move equal chunks. Replicas (dp_replicate)
 * hold identical slices and all-reduce their gradient slices.
 *
 *   stage 0  replicated: the model's full fp32 master, full moments; gradients all-reduced
 *            over all ranks; every rank updates everything (the path without ZeRO).
 *   stage 1  fp32 master slice and moments [per] per rank; gradients still all-reduced in
 *            full; each rank updates its slice and the updated slices (act dtype) are
 *            all-gathered over the shard group into the model's act copy.
 *   stage 2  as 1, but the gradients are reduce-scattered (fp32) over the shard group into
 *            a [per] slice, then all-reduced over the replicas. This first version keeps
 *            the full [n_pad] gradient buffer as the accumulation buffer during backward.
 *   stage 3  (parameters sharded too, gathered per layer) is not implemented.
 *   offload  (stages >= 1) master slice and moments live in host memory (pinned on CUDA);
 *            the reduced, clipped gradient slice is copied to host, the CPU backend's
 *            AdamW (OpenMP, the same arithmetic) updates there, and the updated slice is
 *            uploaded and converted to act before the all-gather.
 *
 * Gradient norm for clipping: the norm of the full reduced gradient; with stage 2 the
 * per-slice sums of squares are summed over the shard group only (replicas hold the same
 * slices and are not counted twice). */
#ifndef UL_ZERO_H
#define UL_ZERO_H

#include <stdint.h>

#include "comm/comm.h"
#include "core/params.h"
#include "kernels/kernels.h"
#include "train/model.h"

/* Per-rank bytes of the training state (printed at startup; tests assert on them). */
typedef struct {
    int64_t weights; /* the act working copy of the weights (on the CPU also the stage-0 master) */
    int64_t master;  /* a separate fp32 master copy (stage 0 on CUDA: full; stages >= 1: the slice) */
    int64_t grads;   /* fp32 gradient buffers: the accumulation buffer (+ the stage-2 slice) */
    int64_t moments; /* AdamW m and v */
    int64_t host;    /* the part of the above in host memory (offload) */
} ZeroBytes;

typedef struct {
    int stage, offload;
    const KernelOps *k;  /* the model's backend */
    int64_t n, n_pad, per; /* parameters, padded length, slice length (stage 0: n, n, n) */
    int64_t lo, hi;      /* this rank's slice inside [0, n) (stage 0: [0, n)) */
    ParamInfo *pinfo;    /* [nt] the tensors (weight decay flags, offsets) */
    int64_t nt;
    float *master;  /* [per] fp32 master slice (device, or host with offload); stage 0: the model's params */
    float *m1, *m2; /* [per] AdamW moments (device, or host with offload) */
    float *gslice;  /* [per] device fp32: the stage-2 reduce-scatter target, and the offload's
                       upload staging for the updated slice; NULL when neither */
    float *h_g;     /* [per] host: the offload's gradient copy */
    void *act_send; /* [per] act: the all-gather's source (stages >= 1) */
    ZeroBytes bytes;
} ZeroOpt;

/* Optimizer hyper-parameters of one step. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, clip;
    int64_t t; /* 1-based step for the bias correction */
} ZeroHyper;

/* After model_init, before the weights are set (pads the model's flat buffers for
 * stages >= 1). Collective over nothing; allocates the optimizer state. */
void zero_init(ZeroOpt *z, int stage, int offload, Model *m, const Mesh *mesh);
/* Once, after the weights were set (random init or --init): the optimizer takes its
 * master slice from the model's fp32 master, and with hp/hm1/hm2 (full host buffers of
 * n elements, a resumed checkpoint; any may be NULL) the weights and moments come from
 * there. Stages >= 1 then drop the model's full fp32 master where it is separate. */
void zero_start(ZeroOpt *z, Model *m, const float *hp, const float *hm1, const float *hm2);
/* Reduction of m->grads (summed over the step's samples on this rank), clipping, AdamW
 * (update = 0: skip the update, e.g. a step with no valid label), publication of the new
 * weights to the model's act copy. Returns the gradient norm before clipping. Collective
 * over the mesh. */
double zero_step(ZeroOpt *z, Model *m, Mesh *mesh, const ZeroHyper *h, int update);
/* The full state in host memory (for checkpoints and --out): hp, hm1, hm2 [n_pad] (any
 * may be NULL); stage >= 1 all-gathers the slices over the shard group. Collective. */
void zero_gather_host(ZeroOpt *z, const Model *m, Mesh *mesh, float *hp, float *hm1, float *hm2);
void zero_free(ZeroOpt *z);

#endif
