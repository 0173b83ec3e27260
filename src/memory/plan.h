/* The memory planner (docs/design.md §8, §13, docs/memory.md): every buffer the model, the
 * optimizer and the backend allocate for one rank, by name, from (model, mesh, seq_len,
 * options), before anything is allocated. `ulysses plan` prints it with the largest seq_len
 * that fits; `train` refuses up front what does not fit.
 *
 * The plan is the allocator: the buffers of the model (model_init_opts, with the exchange's
 * staging and the saved-activation stores) and of the optimizer (zero_init) are the rows of
 * one table (PlanTable below), and those modules allocate one block per arena and take every
 * pointer from it (plan_buf). The plan's lines (PlanItem) are sums of rows, so the items
 * marked `exact` equal what the backend allocated (KernelOps.mem_stats) by construction;
 * tests/test_memory.c still checks it byte for byte on the CPU. The backend's own buffers
 * are declared by the backend (ul_kernels_workspace); the rest (eval logits, transient host
 * copies of the state, the CUDA context) are estimates, not exact. model_init takes its tile
 * sizes from plan_loss_tile and plan_mlp_tile. */
#ifndef UL_PLAN_H
#define UL_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "kernels/kernels.h"

typedef enum {
    PG_WEIGHTS,   /* working copy of the weights used by the kernels */
    PG_MASTER,    /* fp32 master weights */
    PG_GRADS,     /* fp32 gradients */
    PG_OPTIM,     /* AdamW moments */
    PG_CKPT,      /* saved activations of the per-layer checkpointing (layer inputs, kept attention) */
    PG_ACTS,      /* activations and their gradients of the layer being computed */
    PG_ATTN,      /* attention and Ulysses exchange buffers */
    PG_LOSS,      /* the logits tile */
    PG_WORK,      /* inputs, workspace, scratch, the CUDA context reserve */
    PG_COUNT
} PlanGroup;

typedef struct {
    char name[64];
    PlanGroup group;
    int host;      /* 1: host memory of this rank, 0: device (GPU; backend memory on the CPU) */
    int exact;     /* allocated through KernelOps alloc/host_alloc at init: checked byte for byte */
    int64_t bytes;
} PlanItem;

#define PLAN_MAX_ITEMS 64

/* ---- the buffer table: the allocator ----
 * Every buffer model_init_opts takes (the Ulysses exchange's staging and the saved-activation
 * stores of memory/offload.h included) and every one zero_init takes is one row of PlanTable,
 * built by plan_compute from PlanInput: its shape, dtype, arena and offset. An arena is ONE
 * backend allocation (KernelOps.alloc, or host_alloc: plan_arena_host); the model and the
 * optimizer take the pointers as arena base + offset (plan_buf) and free their arenas,
 * nothing else. Every row is padded to
 * PLAN_ALIGN bytes (per copy) and the padding is counted: the plan's items are the sums of
 * their rows, so "allocated = plan" holds by construction. */
typedef enum {
    PA_MODEL,      /* device: the flat weights and gradients, activations, their gradients, scratch, inputs,
                      exchange staging, saved activations (model_init_opts) */
    PA_MODEL_HOST, /* pinned host: the offloaded saved activations (--offload-checkpoints) */
    PA_OPT,        /* device: the optimizer's (zero_init): moments, slices, ZeRO-3 units, unit gradients */
    PA_OPT_HOST,   /* pinned host: the optimizer's with --offload-optimizer (master, moments, gradient
                      staging, the offloaded gradients; the act weights slice with --offload-params) */
    PA_EVAL,       /* device: evaluation's (model_eval allocates it at its first call; not exact) */
    PA_COUNT
} PlanArena;

/* 1: the arena is pinned host memory (KernelOps.host_alloc), 0: device (KernelOps.alloc). */
static inline int plan_arena_host(PlanArena a) { return a == PA_MODEL_HOST || a == PA_OPT_HOST; }

#define PLAN_ALIGN ((int64_t)256)

/* X(id, name, arena): the arena is the row's unless the plan puts it elsewhere (the optimizer's
 * master and moments are in PA_OPT_HOST with --offload-optimizer, the act weights slice with
 * --offload-params). PARAMS, GRADS, WACT: the flat parameter vectors (core/params.h; padded
 * for ZeRO 1, 2: optim/zero.h; no GRADS with the gradient offload). OPT_GBUF2, OPT_GRED,
 * OPT_HGRAD: the gradient offload's second unit buffer, reduce-scatter target and host sums. The per-layer rows (XN1 .. H) have one copy per layer kept ([L],
 * or [1] with --checkpoint); the stores' rows one per slot or offloaded item. */
#define PLAN_BUFS(X)                                        \
    X(PARAMS, "fp32 master weights", PA_MODEL)              \
    X(GRADS, "fp32 gradients", PA_MODEL)                    \
    X(WACT, "act weights", PA_MODEL)                        \
    X(INV_FREQ, "rope inv_freq", PA_MODEL)                  \
    X(XCHG, "all-to-all staging", PA_MODEL)                 \
    X(XIN, "layer inputs (device)", PA_MODEL)               \
    X(XIN_HOST, "layer inputs (host)", PA_MODEL_HOST)       \
    X(XSEG, "segment's recomputed inputs", PA_MODEL)        \
    X(XN1, "xn1", PA_MODEL)                                 \
    X(XMID, "xmid", PA_MODEL)                               \
    X(XN2, "xn2", PA_MODEL)                                 \
    X(RSTD1, "rstd1", PA_MODEL)                             \
    X(RSTD2, "rstd2", PA_MODEL)                             \
    X(QKV, "qkv", PA_MODEL)                                 \
    X(QKN, "q, k before q/k norm", PA_MODEL)                \
    X(RSTDQ, "q/k norm rstd", PA_MODEL)                     \
    X(QKVH, "qkv head-sharded", PA_MODEL)                   \
    X(OH, "attention out head-sharded", PA_MODEL)           \
    X(LSE, "lse", PA_MODEL)                                 \
    X(O, "attention out", PA_MODEL)                         \
    X(G, "MLP g", PA_MODEL)                                 \
    X(U, "MLP u", PA_MODEL)                                 \
    X(H, "MLP h", PA_MODEL)                                 \
    X(KEEP_OH, "kept attention out (device)", PA_MODEL)     \
    X(KEEP_OH_HOST, "kept attention out (host)", PA_MODEL_HOST) \
    X(KEEP_LSE, "kept lse (device)", PA_MODEL)              \
    X(KEEP_LSE_HOST, "kept lse (host)", PA_MODEL_HOST)      \
    X(XNF, "final norm out", PA_MODEL)                      \
    X(RSTDF, "final norm rstd", PA_MODEL)                   \
    X(LOGITS, "logits tile", PA_MODEL)                      \
    X(DRES, "dres", PA_MODEL)                               \
    X(DXN, "dxn", PA_MODEL)                                 \
    X(TG, "TiledMLP g", PA_MODEL)                           \
    X(TU, "TiledMLP u", PA_MODEL)                           \
    X(TH, "TiledMLP h", PA_MODEL)                           \
    X(DQKV, "dqkv", PA_MODEL)                               \
    X(DOUT, "dout", PA_MODEL)                               \
    X(DOH, "dout head-sharded", PA_MODEL)                   \
    X(DQKVH, "dqkv head-sharded", PA_MODEL)                 \
    X(TOK, "tokens", PA_MODEL)                              \
    X(LAB, "labels", PA_MODEL)                              \
    X(POS, "positions", PA_MODEL)                           \
    X(CU, "cu_seqlens", PA_MODEL)                           \
    X(CUL, "local document bounds", PA_MODEL)               \
    X(ACC, "loss sum and count", PA_MODEL)                  \
    X(OPT_MASTER, "fp32 master slice", PA_OPT)              \
    X(OPT_GSLICE, "reduced gradient slice", PA_OPT)         \
    X(OPT_GBUF, "unit gradients", PA_OPT)                   \
    X(OPT_GBUF2, "unit gradients, 2nd", PA_OPT)             \
    X(OPT_GRED, "reduced unit gradients", PA_OPT)           \
    X(OPT_HGRAD, "gradients (host)", PA_OPT_HOST)           \
    X(OPT_GSTAGE, "gradient staging", PA_OPT_HOST)          \
    X(OPT_WSL, "act weights slice", PA_OPT)                 \
    X(OPT_WBUF, "gathered unit weights", PA_OPT)            \
    X(OPT_SEND, "all-gather send slice", PA_OPT)            \
    X(OPT_M1, "AdamW m", PA_OPT)                            \
    X(OPT_M2, "AdamW v", PA_OPT)                            \
    X(LOGITS32, "eval logits fp32", PA_EVAL)

typedef enum {
#define PLAN_BUF_ID(id, name, arena) PB_##id,
    PLAN_BUFS(PLAN_BUF_ID)
#undef PLAN_BUF_ID
    PB_COUNT
} PlanBufId;

typedef enum { PD_ACT, PD_F32, PD_I32, PD_I64, PD_F64 } PlanDtype; /* PD_ACT: the backend's (fp32 CPU, bf16 CUDA) */

typedef struct {
    int present;        /* 0: this configuration has no such buffer (plan_buf gives NULL) */
    PlanArena arena;
    PlanBufId alias;    /* the row whose memory it uses: itself, or the one it shares (sized by the larger) */
    PlanDtype dtype;
    int64_t elem;       /* bytes per element */
    int64_t count;      /* copies (layers, slots, offloaded items) */
    int64_t numel;      /* elements per copy */
    char shape[48];     /* e.g. "[t=512, D=2048]" */
    int64_t stride;     /* bytes per copy: numel elem padded to PLAN_ALIGN (own rows; the max over an alias group) */
    int64_t offset;     /* bytes from the arena's base (own rows) */
    int item;           /* the Plan.items line it is counted in (own rows) */
} PlanBuf;

typedef struct {
    PlanBuf buf[PB_COUNT];
    int64_t arena_bytes[PA_COUNT];
} PlanTable;

const char *plan_buf_name(PlanBufId id);
/* Copy i of buffer id inside the arenas base[PA_COUNT] (NULL when the buffer is absent). */
void *plan_buf(const PlanTable *tab, void *const *base, PlanBufId id, int64_t i);
/* Bytes per copy as the owner laid them out (the padded stride). */
int64_t plan_buf_stride(const PlanTable *tab, PlanBufId id);
/* base[a] for the arenas a in [a0, a1] with bytes: one k->alloc, or k->host_alloc for a
 * host arena, each (zero-filled); the others NULL. Under AddressSanitizer on the CPU the
 * rows' padding is poisoned. */
void plan_arenas_alloc(const PlanTable *tab, const KernelOps *k, PlanArena a0, PlanArena a1, void **base);
/* Frees them (a host free waits for the copies in flight first) and sets them NULL. */
void plan_arenas_free(const KernelOps *k, PlanArena a0, PlanArena a1, void **base);

typedef struct {
    ModelConfig c;
    int64_t sp, dp_replicate, dp_shard; /* the mesh (docs/design.md §2) */
    int64_t seq_len;          /* padded up to a multiple of sp */
    int64_t act_bytes;        /* 2: CUDA (bf16), 4: CPU (fp32) */
    int cuda;                 /* add the CUDA backend's own buffers and the context reserve */
    int checkpoint;           /* 0, 1, 2 (train --checkpoint) */
    int64_t ckpt_every;       /* checkpoint 1: keep every K-th layer's input (0, 1: every layer's;
                                 PLAN_CKPT_AUTO: the smallest K that fits dev_limit and host_limit) */
    int64_t mlp_tile;         /* TiledMLP rows requested (0 = off, PLAN_MLP_AUTO: chosen from dev_limit) */
    int offload_checkpoints;  /* saved activations in pinned host memory */
    int64_t offload_layers;   /* only those of the first K layers (-1: all; PLAN_OFFLOAD_AUTO: as many
                                 as host_limit holds) */
    int64_t host_limit;       /* PLAN_OFFLOAD_AUTO: bytes per host the plan may use (0: no limit) */
    int64_t ranks_per_host;   /* PLAN_OFFLOAD_AUTO: ranks sharing that host memory (0: 1) */
    int zero;                 /* ZeRO stage 0..3 over the shard group (dp_shard x sp ranks) */
    int offload_optimizer;    /* fp32 master weights and AdamW moments in host memory */
    int64_t offload_params;   /* ZeRO 3 with offload_optimizer on a shard group of one rank: the act weights
                                 slice in pinned host memory (0 off, 1 on, PLAN_OFFLOAD_AUTO: on only when the
                                 plan fits dev_limit with it and not without) */
    int64_t offload_grads;    /* ZeRO 3 with offload_optimizer: the gradients of the first K gather units in
                                 host memory, sent there right after each unit's backward (-1: all;
                                 PLAN_OFFLOAD_AUTO: as many as host_limit holds, before the checkpoints) */
    int64_t offload_chunk;    /* elements per chunk of the offload's gradient staging (0: PLAN_OFFLOAD_CHUNK) */
    int eval;                 /* evaluation during training (model_eval's fp32 logits) */
    double reserve_gib;       /* CUDA context + cuBLASLt + NCCL (cuda only) */
    int64_t dev_limit;        /* bytes per GPU the auto TiledMLP tile is chosen for (<= 0: no limit) */
    /* host copies of the training state, allocated around their use (train.c save_state,
     * resume_state, SaveSrc) */
    int save_state;           /* --save-every or --resume: a save's chunk buffers (+ with resume below) */
    int resume;               /* --resume: the weights come from the checkpoint (no initial weights);
                                 the rank's slice of params, m, v (or all of them) is read */
    int save_out;             /* --out: rank 0's weights chunk buffer at the end */
} PlanInput;

typedef struct {
    PlanItem items[PLAN_MAX_ITEMS];
    int n;
    PlanTable tab;            /* the buffers behind the items of the arenas (the allocator) */
    int64_t T, t;             /* padded sample length, tokens per rank */
    int64_t loss_tile, mlp_tile;  /* mlp_tile: rows actually used (0 = not tiled) */
    int mlp_auto;                 /* mlp_tile was chosen by PLAN_MLP_AUTO */
    int64_t offload_items;        /* saved-activation items per store in host memory (ModelMemOpts.offload) */
    int offload_auto;             /* offload_items was chosen by PLAN_OFFLOAD_AUTO */
    int64_t grad_units, units;    /* gather units whose gradients are in host memory (zero_init), of units */
    int grad_auto;                /* grad_units was chosen by PLAN_OFFLOAD_AUTO */
    int64_t ckpt_every, ckpt_items; /* layers per recomputed segment (ModelMemOpts.ckpt_every), kept inputs */
    int ckpt_auto;                /* ckpt_every was chosen by PLAN_CKPT_AUTO */
    int param_host, param_auto;   /* the act weights slice in host memory (zero_init); chosen by auto */
    int64_t dev_total, host_total;     /* per rank */
    int64_t dev_exact, host_exact;     /* the items with exact = 1 */
    int64_t dev_group[PG_COUNT], host_group[PG_COUNT];
} Plan;

/* --offload-layers auto: the planner offloads as many layers' checkpoints as the host
 * memory holds (plan_compute, PlanInput.host_limit). */
#define PLAN_OFFLOAD_AUTO ((int64_t)-2)
/* --tiled-mlp auto: the planner picks the tile (plan_compute). */
#define PLAN_MLP_AUTO ((int64_t)-1)
/* Auto tiles are multiples of this many rows. */
#define PLAN_MLP_ALIGN ((int64_t)64)

/* The optimizer offload's gradient staging (optim/zero.c): the reduced gradient slice
 * [per] goes to host memory in chunks of at most this many elements. */
#define PLAN_OFFLOAD_CHUNK ((int64_t)64 << 20)
/* The chunk for a slice of per elements and a request of req (0: PLAN_OFFLOAD_CHUNK):
 * min(per, req); *nbuf: the pinned host buffers of that many elements, 2 when there is more
 * than one chunk (the next chunk's download overlaps the CPU AdamW on this one), else 1. */
int64_t plan_offload_chunk(int64_t per, int64_t req, int *nbuf);
/* "off", "all 32 layers", "auto: 20 of 32 layers", "auto: 5 of 9 kept inputs", ... */
void plan_offload_desc(const Plan *p, int64_t num_layers, char *buf, size_t n);
/* The gradient offload: "off", "all 34 units", "auto: 20 of 34 units", ... */
void plan_grads_desc(const Plan *p, char *buf, size_t n);

/* --checkpoint-every K: layers per recomputed segment, K clamped to [1, L] (0: 1). */
static inline int64_t plan_ckpt_every(int64_t K, int64_t L) { return K < 1 ? 1 : K > L && L > 0 ? L : K; }
/* The saved layer inputs with every K-th kept: those of layers 0, K, 2K, ... and the final norm's. */
static inline int64_t plan_ckpt_items(int64_t K, int64_t L) { return (L + K - 1) / K + 1; }
/* --checkpoint-every auto: the smallest K whose plan fits (plan_compute). */
#define PLAN_CKPT_AUTO ((int64_t)-1)

/* Default CUDA context + cuBLASLt + NCCL reserve (GiB per GPU), docs/memory.md. */
#define PLAN_DEFAULT_RESERVE_GIB 3.0

void plan_input_default(PlanInput *in);
/* With in->mlp_tile == PLAN_MLP_AUTO the TiledMLP tile is chosen here, a pure function of
 * the input (the same on every rank): no tiling when the whole plan fits in->dev_limit
 * (or there is no limit); else the largest multiple of PLAN_MLP_ALIGN rows (below t)
 * whose [tile, I] buffers (g, u, h, overwritten by dg, du, dh in backward: 3 tile I act
 * bytes) take at most half
 * of the headroom the rest of the plan leaves, or, when that is under PLAN_MLP_ALIGN
 * rows, all of it; PLAN_MLP_ALIGN rows when not even that fits (the plan then does not
 * fit either). p->mlp_tile is the result, p->mlp_auto = 1. */
void plan_compute(const PlanInput *in, Plan *p);
const char *plan_group_name(PlanGroup g);

/* Rows of the logits tile for vocabulary V and t tokens per rank (at most ~128M logits). */
int64_t plan_loss_tile(int64_t V, int64_t t);
/* TiledMLP rows actually used for a request of `req` rows (0 = off; >= t also off). */
int64_t plan_mlp_tile(int64_t req, int64_t t);

/* Largest seq_len (a multiple of sp) whose plan fits dev_limit bytes per GPU and
 * host_limit bytes per host (ranks_per_host ranks; <= 0: no host limit); 0 if none does.
 * With PLAN_MLP_AUTO the tile is chosen for dev_limit at every length tried. */
int64_t plan_max_seq_len(const PlanInput *in, int64_t dev_limit, int64_t host_limit, int64_t ranks_per_host);

/* "auto: 1024 rows", "auto: untiled", "1024 rows", "off": the TiledMLP choice. */
void plan_mlp_desc(const Plan *p, char *buf, size_t n);

/* The breakdown table per device (unit: "GPU", or "rank" on the CPU backend) and per host. */
void plan_print(FILE *f, const Plan *p, int64_t ranks_per_host, const char *unit);
/* The buffer table: per row its arena, offset, copies, shape, elements, bytes (padded), dtype. */
void plan_print_buffers(FILE *f, const Plan *p, const char *unit);
/* One line: "per GPU X GiB (weights .., ...), host Y GiB" (unit: "GPU", or "rank" on the CPU). */
void plan_summary(const Plan *p, const char *unit, char *buf, size_t n);
/* Fills buf with the plan's largest device items ("name X GiB, ..."). */
void plan_top_items(const Plan *p, int k, char *buf, size_t n);

#define PLAN_GIB (1024.0 * 1024.0 * 1024.0)

/* The longest sample the model is built for: --seq-len rounded up to a multiple of sp
 * (every sample is padded to one; docs/design.md §3). The one place this is computed. */
static inline int64_t plan_padded_len(int64_t seq_len, int64_t sp) { return (seq_len + sp - 1) / sp * sp; }

/* The checkpoint's streaming (run/checkpoint.h), charged by the plan. */
/* Elements of host memory a save moves at a time (64 Mi floats, 256 MiB): model.safetensors
 * is written from chunks of `chunk` elements of the flat weights, and each rank's part from
 * chunks of `part_chunk` elements of each vector (run/train.c uses CKPT_CHUNK and CKPT_CHUNK / S
 * for a ZeRO shard group of S ranks, so that one exchange moves at most CKPT_CHUNK elements;
 * memory/plan.c charges these). */
#define CKPT_CHUNK ((int64_t)64 << 20)

#endif
