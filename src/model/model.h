/* The Llama-family model (core/config.h: Llama, Qwen2, Qwen3, Mistral): forward, tiled loss and backward, written explicitly (no autograd),
 * backend-independent (every numeric operation goes through KernelOps, every exchange
 * through CommOps). One call processes one sample's sequence shard on this rank:
 *
 *   x_local [t = T/sp, D] -> per layer: RMSNorm -> q,k,v (+ bias: Qwen2; q/k RMSNorm per
 *   head: Qwen3; then RoPE, global positions)
 *   -> all-to-all seq->head (q,k,v packed in ONE call) -> attention over all T tokens for
 *   H/sp heads (causal within documents) -> all-to-all head->seq -> o_proj -> residual
 *   -> RMSNorm -> SwiGLU MLP -> residual ; final RMSNorm -> tiled logits + CE + backward.
 *
 * GQA (docs/design.md §4): Hkv % sp == 0 splits kv heads; sp % Hkv == 0 replicates each kv head
 * sp/Hkv times before the exchange and sums the replicas' gradients after it. */
#ifndef UL_MODEL_H
#define UL_MODEL_H

#include <stdint.h>

#include "comm/comm.h"
#include "core/config.h"
#include "core/params.h"
#include "kernels/kernels.h"
#include "parallel/exchange.h"
#include "model/phase.h"
#include "memory/offload.h"
#include "memory/plan.h"

/* Activations are "act" buffers (the backend's dtype: fp32 on CPU, bf16 on CUDA);
 * rstd and lse are fp32. */
typedef struct {
    void *xn1;    /* [t, D]  RMSNorm(x) */
    float *rstd1; /* [t] */
    void *qkv;    /* [t, H + 2Hkv, d]  q, k, v after RoPE, interleaved per token */
    void *qkn;    /* [t, H + Hkv, d]  q, k before q_norm / k_norm (qk_norm families; else NULL) */
    float *rstdq; /* [t, H + Hkv]  their rstd: [t, H] for q, then [t, Hkv] for k (qk_norm) */
    void *qkvh;   /* [T, Hq_l + 2Hkv_l, d]  after the exchange (== qkv when sp == 1) */
    void *oh;     /* [T, Hq_l, d]  attention output, head-sharded */
    float *lse;   /* [T, Hq_l] */
    void *o;      /* [t, H*d]  after the exchange back (== oh when sp == 1) */
    void *xmid;   /* [t, D]  x + o_proj(o) */
    void *xn2;    /* [t, D] */
    float *rstd2; /* [t] */
    void *g;      /* [t, I]  (the layer's MLP backward overwrites g, u, h with dg, du, dh) */
    void *u;      /* [t, I] */
    void *h;      /* [t, I]  silu(g) * u */
} LayerActs;

/* ZeRO stage 3 (optim/zero.h): the parameters live sharded outside the model, which asks
 * for them per unit (core/params.h: 0 embedding, 1 + l layer l, L + 1 final norm + untied
 * lm_head). Every rank of the shard group makes the same calls in the same order (they are
 * collective): the model never makes them depend on local data. */
typedef struct Model Model;
typedef struct ModelShards ModelShards;
struct ModelShards {
    /* unit u's act weights gathered; binds m->P's tensors of unit u into them. They stay
     * valid until the second fetch of another unit (two gathered buffers). */
    void (*fetch)(ModelShards *s, Model *m, int64_t u);
    /* unit u will be fetched next: its gather may start now, into the buffer that does not
     * hold the unit fetched last (so only where the other buffer's unit is done with) */
    void (*prefetch)(ModelShards *s, Model *m, int64_t u);
    /* binds m->G's tensors of unit u to an fp32 buffer to accumulate unit u's gradients of
     * this sample into (one buffer: one unit open at a time) */
    void (*grad_begin)(ModelShards *s, Model *m, int64_t u);
    /* unit u's gradients of this sample are complete: reduced into the rank's slice */
    void (*grad_end)(ModelShards *s, Model *m, int64_t u);
};

struct Model {
    ModelConfig c;
    const KernelOps *k;
    CommGroup *sp_g;
    int sp, sp_rank;
    Exchange x;      /* the Ulysses all-to-all (sp > 1) */
    int64_t Hq_l, Hkv_l, W_l; /* heads per rank after the exchange (copies of x's) */
    int recompute;   /* per-layer activation checkpointing: 0 off; 1 keep only layer inputs;
                        2 also keep each layer's attention output + lse (backward skips the attention) */
    ActStore keep_oh;  /* [L] x [T, Hq_l, d] act (recompute == 2) */
    ActStore keep_lse; /* [L] x [T, Hq_l] f32 (recompute == 2) */
    int64_t ck_every; /* K: xin keeps the inputs of layers 0, K, 2K, ... and the final norm's (item
                         ceil(l / K) for layer input l); the segment's other inputs are recomputed into xseg */
    void **xseg;      /* [K - 1] x [t, D] act: the inputs of a segment's layers 2..K (K > 1) */
    int64_t offload; /* the saved activations (xin, keep_oh, keep_lse) of the first `offload`
                        layers live in host memory (memory/offload.h); requires recompute >= 1 */
    int no_exchange; /* debug: attend only inside the local shard (the control experiment) */
    int64_t mlp_tile; /* TiledMLP: rows per MLP tile (0 = off); [t, I] activations never exist */
    void *tg, *tu, *th; /* [mlp_tile, I] the current tile's gate, up, silu(g)*u; in backward
                           overwritten by its grads dg, du, dh (mlp_bwd_rows) */

    /* Parameters (flat, order of core/params.h), all in backend memory: */
    int64_t n_params;
    int64_t n_alloc; /* elements of params/grads/wact: n_params, or padded to n_pad for ZeRO 1, 2
                        (zero tail; the plan's: optim/zero.h); 0 with ZeRO-3 */
    float *params;   /* [n_alloc] fp32 master weights (what the optimizer updates); NULL with
                        ZeRO >= 1 on CUDA (the optimizer's slice is the master) and ZeRO-3 */
    float *grads;    /* [n_alloc] fp32, accumulated over the samples of a step */
    void *wact;      /* [n_alloc] act working copy used by the kernels (== params on CPU) */
    ModelTensors P;  /* act pointers into wact */
    ModelTensors G;  /* fp32 pointers into grads */
    float *inv_freq; /* [d/2] */

    int64_t T_max, t_max, loss_tile;
    ActStore xin;    /* [ceil(L / K) + 1] x [t, D] act: the residual stream at every K-th layer's input; the
                        last item: the final norm's input (K = 1: [L + 1], item l = layer l's input) */
    LayerActs *acts; /* [L], or [1] with recompute */
    void *xnf;       /* [t, D] */
    float *rstdf;    /* [t] */
    void *logits;    /* [loss_tile, V] */
    float *logits32; /* [loss_tile, V] fp32 copy for eval (backend memory) */
    float *logits_host; /* [loss_tile, V] host, eval only */
    void *dres;      /* [t, D]  gradient of the residual stream */
    void *dxn;       /* [t, D] */
    void *dout;      /* [t, H*d] */
    void *doh;       /* [T, Hq_l, d] (== dout when sp == 1) */
    void *dqkv;      /* [t, H + 2Hkv, d] */
    void *dqkvh;     /* [T, W_l, d] (== dqkv when sp == 1) */
    /* this sample's inputs in backend memory */
    int32_t *d_tok, *d_lab, *d_pos; /* [t_max] */
    int64_t *d_cu;   /* [T_max + 2] cu_seqlens of the sample */
    int64_t *d_cul;  /* [t_max + 2] document bounds inside the local shard (no_exchange) */
    int64_t *cu_local; /* [t_max + 2] host copy of d_cul */
    double *acc;     /* [2] CE sum and count (backend memory) */
    PlanTable tab;   /* where the buffers below live (memory/plan.h): copies i of PB_* rows */
    void *arena[PA_COUNT]; /* PA_MODEL, PA_MODEL_HOST (model_init), PA_EVAL (model_eval's first call): one
                              backend allocation each; model_free frees these */
    PhaseTimer t_attn, t_loss; /* device time of the attention kernels and of the loss head (model_set_timing) */
    ModelShards *shards; /* ZeRO-3 (set by zero_init): params, grads, wact are NULL, P and G
                            point into the units the hooks bind; NULL otherwise */
};

/* This rank's part of one sample. */
typedef struct {
    int64_t T;              /* full (padded) sample length, a multiple of sp */
    const int32_t *tokens;  /* [t] this rank's tokens */
    const int32_t *labels;  /* [t] */
    const int32_t *pos;     /* [t] */
    const int64_t *cu_seqlens; /* [n_docs + 1] of the WHOLE sample */
    int64_t n_docs;
    int64_t offset;         /* global index of this shard's first token (= r_sp * t) */
} LocalSeq;

/* sp_g may be NULL for a single process. Allocates everything for samples up to T_max. */
void model_init(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max, int recompute);
/* ... with TiledMLP over tiles of mlp_tile rows (0 = off; docs/design.md §8). */
void model_init_ex(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max, int recompute,
                   int64_t mlp_tile);
/* Every memory option at once. */
typedef struct {
    int recompute;    /* 0, 1, 2 (see Model.recompute) */
    int64_t mlp_tile; /* TiledMLP rows, 0 = off */
    int64_t offload;  /* checkpoint offload to host memory (needs recompute >= 1): the saved
                         activations of the first `offload` layers (0: none; > L: all, the
                         final norm's input too) */
    int sharded;      /* 1: ZeRO-3: no full params, grads, act weights (zero_init installs the hooks); 2: ZeRO 1, 2
                         with the gradient offload: no full grads (the hooks bind each unit's gradients) */
    int64_t ckpt_every; /* recompute 1: keep only every K-th layer's input (0 or 1: every layer's); the
                           backward recomputes each segment of K layers from it (model.c backward_layers) */
    const Plan *plan; /* the memory plan of these options (train's), whose table places the model's
                         buffers (with ZeRO 1, 2 the padded vectors, and no fp32 master on CUDA:
                         the plan's --zero); NULL: the model plans them from the options above
                         itself, without ZeRO */
} ModelMemOpts;
void model_init_opts(Model *m, const ModelConfig *c, const KernelOps *k, CommGroup *sp_g, int64_t T_max,
                     const ModelMemOpts *o);
void model_free(Model *m);
/* on = 1: time the attention kernels (m->t_attn) and the tiled loss head (m->t_loss) with
 * events; read with phase_take. Off by default. */
void model_set_timing(Model *m, int on);
/* Device time of the offload copies since the last call (waits for them; 0 without offload). */
double model_offload_seconds(Model *m);
/* Parameters: normal(0, initializer_range) for matrices, 1 for norm weights, 0 for biases, from seed. */
void model_init_random(Model *m, uint64_t seed);
/* The same values for flat elements [a, b) of the parameter vector only: out[b - a] (host).
 * Any rank draws any range (ZeRO: its slice, optim/zero.c zero_start_random). */
void model_random_range(const ModelConfig *c, uint64_t seed, int64_t a, int64_t b, float *out);
/* Host <-> model parameters (fp32, [n_params]); setting also refreshes the working copy. */
void model_set_params(Model *m, const float *host);
void model_get_params(const Model *m, float *host);
void model_get_grads(const Model *m, float *host);
/* Loads a HF directory's weights (shapes checked against the config). */
int model_load_weights(Model *m, const char *dir, UlError *e);
/* After the optimizer changed m->params: refresh the act working copy. */
void model_params_updated(Model *m);

/* Forward + loss on one sequence shard; with backward = 1 also the backward, adding
 * d(dscale * sum CE)/dparams into m->grads. The shard's CE sum and valid count go into a
 * device accumulator: with loss_sum given, it is read (model_loss_take) right away; with
 * loss_sum = NULL it keeps adding up, and the caller reads it once per optimizer step (no
 * host sync per micro-batch under --grad-accum). */
void model_step(Model *m, const LocalSeq *s, float dscale, int backward, double *loss_sum, int64_t *count);
/* Adds the accumulated CE sum and valid count to *loss_sum, *count and zeroes the
 * accumulator (one device-to-host copy: waits for the work queued so far). */
void model_loss_take(Model *m, double *loss_sum, int64_t *count);

/* Forward only, keeping logits per token for eval: calls fn(user, i, logits_row[V]) for
 * every local token i whose label != -100. */
typedef void (*LogitsFn)(void *user, int64_t i, const float *logits_row, int64_t V);
void model_eval(Model *m, const LocalSeq *s, LogitsFn fn, void *user);

#endif
