/* The optimizer step with ZeRO over the shard group (docs/design.md §2, §7), and optimizer-state
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
 *   stage 3  parameters sharded too, in a layout of their own (below): each rank keeps
 *            only its slices (act weights, fp32 master, moments, reduced gradients); the
 *            model gathers each unit's act weights before using them and reduce-scatters
 *            each unit's gradients right after its backward.
 *   offload  (stages >= 1) master slice and moments live in host memory (pinned on CUDA);
 *            the reduced, clipped gradient slice is copied to host in chunks (at most
 *            PLAN_OFFLOAD_CHUNK elements, two pinned buffers: the next chunk's copy overlaps
 *            the update of this one), the CPU backend's AdamW (OpenMP, the same arithmetic)
 *            updates each chunk there, and the updated slice is uploaded and converted to
 *            act before the all-gather.
 *
 * Stage-3 layout. The gather units are the contiguous ranges of core/params.h's flat order
 * (ul_param_unit): u = 0 the embedding, 1 + l layer l, L + 1 the final norm (+ lm_head if
 * untied). EACH unit u of n_u elements is padded to a multiple of S and split evenly:
 * per_u = ceil(n_u / S), and rank q holds elements [q * per_u, (q + 1) * per_u) of the unit
 * (the part beyond n_u is zero padding). The rank's slice is the concatenation of its unit
 * chunks: unit u at offset so_u = sum_{v < u} per_v, per = sum_u per_u, n_pad = S * per.
 * So a unit's gather is one equal-chunk all-gather of [per_u] from every rank into a
 * working buffer [S * per_u] that holds the unit in flat order, and its gradient reduction
 * is one reduce-scatter of [S * per_u]. Stages 0-2 are the same description with a single
 * unit [0, n) (so the same code slices, gathers and updates all of them).
 *
 * Stage-3 gradient accumulation: the per-unit fp32 buffer is zeroed at the unit's
 * grad_begin and this rank's slice so far (earlier samples, and for a tied embedding the
 * lm_head part) is copied into this rank's chunk of it; the backward accumulates; at
 * grad_end a reduce-scatter writes the sum over the shard group back into the slice. So the
 * slice carries the running sum over the samples of the step without an extra buffer.
 *
 * Gradient norm for clipping: the norm of the full reduced gradient; with stage 2 the
 * per-slice sums of squares (stage 2 and 3) are summed over the shard group only (replicas hold the same
 * slices and are not counted twice). */
#ifndef UL_ZERO_H
#define UL_ZERO_H

#include <stdint.h>

#include "comm/mesh.h"
#include "core/params.h"
#include "kernels/kernels.h"
#include "model/model.h"

/* Per-rank bytes of the training state (printed at startup; tests assert on them). */
typedef struct {
    int64_t weights; /* the act working copy of the weights (on the CPU also the stage-0 master);
                        stage 3: the act slice + 2 gathered units */
    int64_t master;  /* a separate fp32 master copy (stage 0 on CUDA: full; stages >= 1: the slice) */
    int64_t grads;   /* fp32 gradient buffers: the accumulation buffer (+ the stage-2 slice);
                        stage 3: the slice + one unit's buffer */
    int64_t moments; /* AdamW m and v */
    int64_t host;    /* the part of the above in host memory (offload) */
} ZeroBytes;

/* A range of the flat vector that is sharded as one piece (stage 3: a gather unit). */
typedef struct {
    int64_t off, numel; /* [off, off + numel) in the flat vector */
    int64_t per;        /* elements per rank: ceil(numel / S) */
    int64_t so;         /* offset of this unit's chunk in the rank's slice */
} ZeroUnit;

typedef struct {
    ModelShards hooks; /* stage 3: the model's unit hooks (m->shards points here) */
    int stage, offload;
    const KernelOps *k;  /* the model's backend */
    int64_t n, n_pad, per; /* parameters, padded length, slice length (stage 0: n, n, n) */
    int64_t lo, hi;      /* this rank's slice inside [0, n) (stage 0: [0, n)) */
    ParamInfo *pinfo;    /* [nt] the tensors (weight decay flags, offsets) */
    int64_t nt;
    int64_t S, q;        /* shard group size and this rank's index in it (stage 0: 1, 0) */
    int64_t nu;          /* units: L + 2 with stage 3, else 1 (the whole vector) */
    ZeroUnit *units;     /* [nu] */
    CommGroup *dev_shard; /* the shard group for backend buffers (stage 3's hooks) */
    CommGroup *dev_world; /* all ranks (the gradient offload of stages 1, 2) */
    int rep_rank;         /* this rank's replica (mesh rep_g) */
    float *master;  /* [per] fp32 master slice (device, or host with offload); stage 0: the model's params */
    float *m1, *m2; /* [per] AdamW moments (device, or host with offload) */
    float *gslice;  /* [per] device fp32: the stage-2 reduce-scatter target, and the offload's
                       upload staging for the updated slice; NULL when neither */
    /* offload: the reduced gradient slice goes to the CPU AdamW in chunks of gchunk elements
     * through nbuf pinned host buffers (2 when there is more than one chunk: the download of
     * chunk c + 1 on the copy stream overlaps AdamW on chunk c) */
    int64_t gchunk;
    int nbuf;
    float *h_g[2];   /* [gchunk] host each (pinned on CUDA) */
    void *ev_grad;   /* compute stream: the clipped gradient slice is complete */
    void *ev_c0[2], *ev_c1[2]; /* copy stream: around buffer b's download (the CPU waits for ev_c1) */
    void *act_send; /* [per] act: the all-gather's source (stages 1, 2) */
    /* stage 3 */
    void *wsl;         /* [per] act: this rank's act weights, the source of every unit gather (param_host:
                          pinned host memory, each unit copied in on the copy stream before its use) */
    int param_host;    /* parameter offload (one rank per shard group, with offload): wsl in host memory */
    void *ev_wq[2], *ev_wcopy[2]; /* param_host: the compute before / the copy into wbuf[b] */
    void *wbuf[2];     /* [umax] act: two gathered units */
    int64_t wunit[2];  /* the unit each holds (-1: none) */
    int64_t wuse[2], clock; /* last use of each: the least recently used one is refilled */
    int wpend[2];      /* a prefetch gather into it the compute has not waited for yet */
    float *gbuf;       /* [umax] fp32: the open unit's gradients */
    int64_t umax;      /* the largest padded unit, S * per_u */
    /* stage 3 with offload: gradient offload. The gradients of units [0, gu_host) (the embedding
     * and the first layers: the last of the backward) leave for host memory right after each
     * unit's backward and accumulate there in fp32 over the step's samples; the device keeps
     * only the gradients of units [gu_host, nu) in gslice ([per - so_host]). A unit's reduced
     * gradient is copied on the copy stream while the next unit's backward computes, and taken
     * (its sum of squares recorded) at the next unit's grad_end or at zero_step; when the unit
     * comes again in the step, its sum so far is uploaded into its buffer first, as gslice's is. */
    int64_t gu_host;   /* units whose gradients live in host memory */
    int64_t so_host;   /* their elements: the slice's [0, so_host) */
    float *hgrad;      /* [so_host] host fp32 (pinned on CUDA): the step's accumulated gradients */
    float *gbuf2;      /* [umax] fp32, S == 1: the second unit buffer (the units alternate: the copy of
                          one overlaps the next one's backward) */
    float *gred;       /* [umax / S] fp32, S > 1: the reduce-scatter target the copy reads */
    float *gopen;      /* the open unit's buffer (gbuf or gbuf2) */
    int64_t gpend;     /* the unit whose gradients wait to be taken to host (-1: none) */
    const float *gpend_src; /* [gpend_n] its reduced gradients of this rank's slice (device) */
    float *gpend_dst;  /* [gpend_n] where they accumulate (in hgrad) */
    int64_t gpend_n;
    int gpend_b;       /* 0: gbuf, 1: gbuf2 (the buffer its copy frees) */
    void *ev_gdone;    /* compute stream: the pending unit's reduced gradients are complete */
    void *ev_gfree[2]; /* copy stream: gbuf / gbuf2 read out */
    unsigned char *gfresh; /* [ngu] no gradient of unit u arrived yet this step */
    double *gss;       /* [ngu] sum of squares of each host unit's accumulated gradients (fp64) */
    /* stages 1, 2 with offload (g12): the model has no gradient buffer; the hooks bind each gather
     * unit's (core/params.h) gradients to gbuf / gbuf2 ([umax], the largest unit), all-reduce them
     * over the world at its end, and the part inside this rank's slice [lo, hi) goes to hgrad
     * ([per], host) as in stage 3. gu_host = ngu = the model's units, so_host = per. */
    int g12;
    int64_t ngu;       /* gather units of the model (stage 3: nu) */
    ZeroBytes bytes;
    void *arena[PA_COUNT]; /* PA_OPT, PA_OPT_HOST: where the buffers above live (memory/plan.h) */
} ZeroOpt;

/* Optimizer hyper-parameters of one step. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, clip;
    int64_t t; /* 1-based step for the bias correction */
} ZeroHyper;

/* After model_init, before the weights are set. Stages 1, 2 need a model made from the plan
 * of this stage (ModelMemOpts.plan: its flat buffers padded to n_pad, no fp32 master on
 * CUDA); stage 3 one made with ModelMemOpts.sharded, and installs the unit hooks in it. Collective over nothing; allocates the optimizer state. offload_chunk:
 * elements per chunk of the offload's gradient staging (0: PLAN_OFFLOAD_CHUNK; the sizes
 * are plan_offload_chunk's). grad_units (stage 3 with offload; else ignored): the gradients of
 * the first grad_units gather units go to host memory (ZeroOpt.gu_host; -1 or more than there
 * are: all; the plan's Plan.grad_units). offload_params (stage 3 with offload, a shard group of
 * one rank; else ignored): the act weights slice in pinned host memory, each unit copied to
 * the device before its forward and backward, the next one prefetched (Plan.param_host). */
void zero_init(ZeroOpt *z, int stage, int offload, int64_t offload_chunk, int64_t grad_units, int offload_params,
               Model *m, const Mesh *mesh);
/* Stage 0, once, after the weights were set (--init or random init): with hp/hm1/hm2 (full
 * host buffers of n elements, a resumed checkpoint; any may be NULL) the weights and
 * moments come from there. Stages >= 1 start from their slices instead: zero_start_fill /
 * zero_start_random (initial weights) or zero_start_slice (a resume). */
void zero_start(ZeroOpt *z, Model *m, const float *hp, const float *hm1, const float *hm2);
/* Stages >= 1, once, instead of zero_start after model_init_random: the random initial
 * weights of seed (model_random_range, the values model_init_random gives) are drawn for
 * this rank's slice only, straight into the host master with offload, else into a [per]
 * host staging that is uploaded; then published as zero_start_slice does (moments zero).
 * Collective over the shard group. Returns the host staging bytes it used. */
int64_t zero_start_random(ZeroOpt *z, Model *m, Mesh *mesh, uint64_t seed);
/* The same with the weights from fill(ctx, a, b, out): the flat parameter elements [a, b)
 * into out[b - a] host (e.g. a range reader of a safetensors directory). */
typedef void (*ZeroFillFn)(void *ctx, int64_t a, int64_t b, float *out);
int64_t zero_start_fill(ZeroOpt *z, Model *m, Mesh *mesh, ZeroFillFn fill, void *ctx);
/* Zeroes the step's gradient accumulation (the model's grads; stage 3: the slice). */
void zero_clear_grads(ZeroOpt *z, Model *m);
/* Reduction of m->grads (summed over the step's samples on this rank; stage 3: the slice,
 * reduce-scattered during the backward, is only all-reduced over the replicas), clipping, AdamW
 * (update = 0: skip the update, e.g. a step with no valid label), publication of the new
 * weights to the model's act copy. Returns the gradient norm before clipping. Collective
 * over the mesh. */
double zero_step(ZeroOpt *z, Model *m, Mesh *mesh, const ZeroHyper *h, int update);
/* A piece of a flat range that one shard rank holds: flat [begin, end), at offset so of
 * that rank's slice. */
typedef struct {
    int64_t begin, end, so;
} ZeroPiece;
/* The pieces of flat [a, b) that shard rank q holds, in flat order, into out[nu] (stages
 * 0-2: at most one; stage 3: one per unit). Returns their count. */
int64_t zero_slice_pieces(const ZeroOpt *z, int64_t q, int64_t a, int64_t b, ZeroPiece *out);
/* Stages >= 1, once, instead of zero_start, on --resume: this rank's slices sp, sm1, sm2
 * ([per] host each, the master weights and moments in the slice layout, zero padding)
 * become the optimizer state, and the weights are published to the model (stages 1, 2:
 * all-gathered over the shard group into the act copy; stage 3: the act slice). Collective
 * over the shard group. With offload sp, sm1, sm2 may be the optimizer's own host vectors
 * (z->master, z->m1, z->m2: a resume reads into them directly). */
void zero_start_slice(ZeroOpt *z, Model *m, Mesh *mesh, const float *sp, const float *sm1, const float *sm2);
/* Host copies of flat ranges of the state (checkpoints, --out) without full-size buffers.
 * want[2 * p], want[2 * p + 1] ([2 * S], the same on every rank of the shard group): the
 * range [a_p, b_p) inside [0, n) that shard rank p wants (empty: nothing). which: bit i
 * asks for vector i (0 the fp32 master weights, 1 AdamW m, 2 v), the same on every rank;
 * out[i] ([b - a] host, this rank's range; unused where it is empty). Stage 0: copied
 * from this rank's replicated state (want[0 : 2] only). Stages >= 1: each rank sends every
 * rank the pieces of its range that it holds, point to point over the MPI shard group,
 * staging on the host only the pieces it sends (packed, one vector at a time: at most its
 * slice's elements inside the union of the wanted ranges; none with offload: the slice is
 * there). Collective over the shard group for stages >= 1. Returns the host staging bytes
 * it used. */
int64_t zero_host_range(ZeroOpt *z, const Model *m, Mesh *mesh, const int64_t *want, int which, float *const out[3]);
void zero_free(ZeroOpt *z);

#endif
