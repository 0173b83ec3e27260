/* The options of a training run (train, demo; plan reads the same flags): the one struct
 * the CLI fills and the run layer reads, its defaults, and the resolution of the memory
 * flags into the memory plan (run/options.c). */
#ifndef UL_OPTIONS_H
#define UL_OPTIONS_H

#include <stdint.h>

#include "core/common.h"
#include "core/config.h"
#include "kernels/kernels.h"
#include "memory/plan.h"

typedef struct {
    /* model */
    const char *model;     /* config.json or a directory holding one */
    const char *init;      /* HF directory to load weights from (NULL: random init) */
    const ModelConfig *config; /* built-in architecture, used when model and init are NULL */
    /* RoPE overrides for long-context extension (0 / NULL: keep the config's); applied to the
     * config used for training and written into every saved config.json */
    double rope_theta;
    const char *rope_scaling;  /* "default" or "llama3:factor=F,..." (checkpoint.h) */
    int64_t max_position_embeddings;
    /* data */
    const char *data;      /* glob of token shards */
    int64_t seq_len;
    int fixed_len;         /* pad every sample to seq_len */
    int doc_per_sample;    /* one document per sample instead of packing */
    int no_shuffle;
    /* schedule */
    int64_t batch;         /* global batch, sequences per optimizer step */
    int64_t grad_accum;
    int64_t steps;
    double lr, min_lr_ratio, warmup;
    double weight_decay, beta1, beta2, adam_eps, clip;
    int64_t seed;
    /* mesh */
    int64_t sp, dp_replicate, dp_shard;
    /* backend */
    const char *device;    /* "cpu" | "cuda" | NULL: cuda when built with it and a GPU is visible */
    /* memory */
    int checkpoint;        /* per-layer activation checkpointing (recompute in backward) */
    int64_t ckpt_every;    /* --checkpoint-every K (checkpoint 1): keep every K-th layer's input (default 1;
                              PLAN_CKPT_AUTO: the smallest K that fits) */
    int64_t mlp_tile;      /* TiledMLP: rows per MLP tile, 0 = off, PLAN_MLP_AUTO (default): the planner's */
    int offload_checkpoints; /* saved layer inputs (and kept attention) in pinned host memory */
    int64_t offload_layers;  /* --offload-layers K: only the first K layers' (-1, the default: all;
                                PLAN_OFFLOAD_AUTO: as many as the host memory holds) */
    double gpu_mem;        /* GiB per GPU to plan against (0: the GPU's total on CUDA, no limit on CPU) */
    double host_mem;       /* GiB of host memory per node to plan against (0: no check) */
    double reserve_gib;    /* CUDA context + cuBLASLt + NCCL reserve in the plan (0: the default) */
    int64_t zero;          /* ZeRO stage over the shard group: 0 (replicated), 1, 2 (optim/zero.h) */
    int offload_optimizer; /* fp32 master slice and AdamW moments in host memory, CPU AdamW (zero >= 1) */
    int64_t offload_grads; /* --offload-gradients (zero 3 with offload_optimizer): the first K gather units'
                              gradients in host memory (-1: all; PLAN_OFFLOAD_AUTO, the default: as many as
                              the host memory holds) */
    int offload_grads_given; /* --offload-gradients was on the command line */
    int64_t offload_params; /* --offload-params (zero 3 with offload_optimizer, one rank per shard group): the
                               bf16 weights in pinned host memory: 0 off, 1 on, PLAN_OFFLOAD_AUTO (default):
                               only when the plan fits with and not without */
    /* outputs */
    const char *out;
    const char *save_dtype; /* "f32" | "bf16" */
    const char *metrics;
    const char *plot;      /* PNG: loss (and answer accuracy) against step */
    /* training-state checkpoints (run/checkpoint.h, docs/checkpoints.md) */
    int64_t save_every;    /* a checkpoint every N steps and at the end (0: none) */
    int64_t keep_last;     /* keep the K newest checkpoints (0: all) */
    const char *ckpt_dir;  /* where checkpoints go (NULL: --out) */
    const char *resume;    /* a checkpoint directory, or a root (its latest complete one) */
    int64_t stop_at;       /* end this run after optimizer step N (0: --steps), as if preempted */
    int64_t log_every;
    int progress;          /* UlProgress (core/term.h): auto, a live bar, or plain lines */
    int quiet;
    int profile;           /* metrics get the step's attention, loss-head and optimizer times */
    /* synthetic task instead of --data (the demo): "kv" */
    const char *task;
    /* evaluation during training (forward only, on the training mesh): the kv task's answer
     * accuracy on held-out samples, or the loss on --eval-data's token shards */
    const char *eval_data; /* glob of held-out token shards (with --data) */
    int64_t eval_every, eval_samples; /* eval_samples 0: kv 16, --eval-data every sample */
    const char *eval_out;  /* JSONL of every evaluation (buckets included) */
    /* debug */
    int no_exchange;       /* attend only within the local shard (control experiment) */
    int64_t offload_chunk; /* --offload-optimizer: elements per gradient staging chunk (0: the default, 64 Mi) */
} TrainOptions;

void train_options_default(TrainOptions *o);

/* The one option-resolution step of train, demo and plan (the CLI only parses):
 * ul_resolve_mesh derives --dp-shard from the world (what is left of it after sp x
 * dp-replicate) and checks the mesh against the job and the model (run/setup.h
 * ul_check_mesh); world is the job's ranks, or with gpus_flag the value of plan's --gpus
 * (<= 0: the mesh's own size, --dp-shard default 1). ul_check_memory_flags checks the
 * memory flags train and plan share (--checkpoint, --offload-*, --zero, --tiled-mlp,
 * --gpu-mem, --host-mem, --reserve-gib). One error naming the flag. */
int ul_resolve_mesh(TrainOptions *o, int64_t world, int gpus_flag, const ModelConfig *c, UlError *e);
/* Its first part alone (no model needed): --dp-shard from the world. */
int ul_derive_dp_shard(TrainOptions *o, int64_t world, int gpus_flag, UlError *e);
int ul_check_memory_flags(const TrainOptions *o, UlError *e);


/* The memory plan of a training run (memory/plan.h) from its options. */
void ul_plan_input(const TrainOptions *o, const ModelConfig *c, size_t act_bytes, int cuda, PlanInput *in);
/* --tiled-mlp S: "auto" (PLAN_MLP_AUTO), "off" (0) or rows >= 0 into *rows; NULL: unchanged.
 * The error names the flag. */
int ul_parse_tiled_mlp(const char *s, int64_t *rows, UlError *e);
/* --offload-layers: an integer K >= 0, "all" (-1) or "auto" (PLAN_OFFLOAD_AUTO); NULL: unchanged. */
int ul_parse_offload_layers(const char *s, int64_t *k, UlError *e);
/* --offload-params: auto (PLAN_OFFLOAD_AUTO), on (1) or off (0); NULL: unchanged. */
int ul_parse_offload_params(const char *s, int64_t *v, UlError *e);
/* --checkpoint-every: an integer K >= 1 or "auto" (PLAN_CKPT_AUTO); NULL: unchanged. */
int ul_parse_ckpt_every(const char *s, int64_t *k, UlError *e);
/* --offload-gradients: an integer K >= 0, "off" (0), "all" (-1) or "auto" (PLAN_OFFLOAD_AUTO);
 * NULL: unchanged. Sets o->offload_grads and o->offload_grads_given. */
int ul_parse_offload_grads(const char *s, TrainOptions *o, UlError *e);
/* Plans the run and checks it against --gpu-mem (or the smallest GPU's total memory,
 * agreed over the job: collective on CUDA) and --host-mem; an auto TiledMLP tile is
 * chosen for that limit (p->mlp_tile):
 * 0 when it fits; else -1 with e naming the flag, the largest items and what to change.
 * Identical on every rank. */
int ul_plan_check(const TrainOptions *o, const ModelConfig *c, const KernelOps *k, int on_gpu, Plan *p, UlError *e);

#endif
