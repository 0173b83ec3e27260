/* The kernel interface: every numeric operation the model and optimizer perform,
 * behind one table of function pointers. The CPU backend (kernels/cpu, fp32, OpenBLAS,
 * OpenMP) is the reference; the CUDA backend (kernels/cuda, bf16 activations, cuBLASLt)
 * implements the same table.
 *
 * Types (docs/design.md §9)
 *  - "act" buffers (activations and the working copy of the weights) hold elements of
 *    the backend's activation dtype, act_bytes each: fp32 on the CPU, bf16 on CUDA.
 *    They are passed as void*; sizes and offsets are in ELEMENTS.
 *  - f32 buffers (master weights, gradients, optimizer moments, rstd, lse) are float*.
 *  - int buffers (tokens, labels, positions, cu_seqlens) are backend memory too
 *    (upload them first).
 * Conventions
 *  - All matrices are row-major. Sizes and offsets are int64_t.
 *  - "Strided rows": a [t, nh, d] tensor whose token rows are `stride` elements apart
 *    (stride >= nh*d), so q, k, v can live interleaved in one [t, Hq+2Hkv, d] buffer.
 *  - Backward kernels named *_bwd overwrite their outputs unless the comment says
 *    "accumulates" (then they add into it; the caller zeroes it once per step).
 *  - Token ids, labels and positions are int32 (labels use -100 = ignore).
 *  - Kernels are asynchronous on GPU backends (one compute stream); sync() waits. */
#ifndef UL_KERNELS_H
#define UL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* Streams named by the event/copy operations below. */
enum { UL_STREAM_COMPUTE = 0, UL_STREAM_COPY = 1 };

/* Bytes allocated through a backend's alloc (device) and host_alloc (pinned host):
 * now, and the peak since the last mem_reset_peak. Requested sizes (no rounding). */
typedef struct {
    int64_t dev_cur, dev_peak, host_cur, host_peak;
} UlMemStats;

/* One attention call (KernelOps.attention_fwd / attention_bwd): the tensors with their row
 * strides (in elements), the shape and the documents. Causal within documents, GQA, THD
 * layout, never a T x T buffer. Token i attends to j iff doc(j) == doc(i) and j <= i; query
 * head h uses kv head h / (Hq / Hkv). */
typedef struct {
    const void *q, *k, *v; /* [T, Hq, d], [T, Hkv, d], [T, Hkv, d] act; row strides qs, ks, vs */
    int64_t qs, ks, vs;
    void *o;                /* [T, Hq, d] act, row stride os: the forward writes it, the backward reads it */
    int64_t os;
    float *lse;             /* [T, Hq] f32 natural-log sum-exp of the scaled scores: forward out, backward in */
    const void *dout;       /* backward: [T, Hq, d] act, row stride dos */
    int64_t dos;
    void *dq, *dk, *dv;     /* backward: overwritten (act), row strides dqs, dks, dvs; dk/dv summed over the
                               query heads of each kv group */
    int64_t dqs, dks, dvs;
    int64_t T, Hq, Hkv, d;
    const int64_t *cu_seqlens; /* [n_docs + 1] backend memory: cu_seqlens[0] = 0, cu_seqlens[n_docs] = T */
    int64_t n_docs;
    float scale;            /* usually 1/sqrt(d) */
} UlAttention;

typedef struct KernelOps {
    const char *name;
    size_t act_bytes; /* bytes per act element: 4 (fp32) or 2 (bf16) */

    /* ---- the device (what the run layer may ask a backend; it includes no backend header) ---- */
    int on_device;                        /* 1: alloc'd buffers are device memory (CUDA); 0: host (CPU) */
    void *(*compute_stream)(void);        /* the stream every op runs on (a cudaStream_t), for NCCL; NULL on the CPU */
    double (*device_mem_used_gib)(void);  /* device memory in use, all processes (GiB); 0 on the CPU */
    long long (*device_mem_total)(void);  /* bytes of this process's device; 0 on the CPU */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes); /* zero-filled; aborts on failure */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*sync)(void);
    void (*zero)(void *x, size_t bytes);
    /* dst[r, 0:cols] = src[r, 0:cols] for r < rows (act, strides in elements). */
    void (*copy2d)(void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t rows, int64_t cols);
    /* dst[r, 0:cols] += src[r, 0:cols] (act). */
    void (*add2d)(void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t rows, int64_t cols);
    /* act <-> f32 conversion of n elements (backend memory on both sides). */
    void (*to_act)(void *dst, const float *src, int64_t n);
    void (*to_f32)(float *dst, const void *src, int64_t n);

    /* ---- host memory, copy stream and events (activation-checkpoint offload) ----
     * Two streams: UL_STREAM_COMPUTE (every kernel above and below) and UL_STREAM_COPY
     * (copy_async only), so copies to and from host memory overlap compute. Ordering is by
     * events, never by a device-wide sync. The CPU backend does everything synchronously
     * (copy_async is a memcpy, waits are no-ops, events hold the wall-clock time of their
     * record so event_elapsed still measures the copies). */
    /* page-locked host memory (cudaHostAlloc; plain memory on the CPU), zero-filled, that the CPU
     * reads and writes directly: offloaded checkpoints and ZeRO --offload-optimizer state. Aborts on failure. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);        /* waits for both streams first */
    void *(*event_create)(void);       /* aborts on failure */
    void (*event_destroy)(void *ev);
    void (*event_record)(void *ev, int stream);  /* ev marks the work queued on `stream` so far */
    void (*event_wait)(int stream, void *ev);    /* later work on `stream` waits for ev (device-side) */
    double (*event_elapsed)(void *start, void *end); /* seconds between two records; waits for `end` */
    /* bytes from src to dst on UL_STREAM_COPY: to_host = 1 device -> host_alloc memory,
     * 0 host_alloc memory -> device. Returns at once (GPU); order it with events. */
    void (*copy_async)(void *dst, const void *src, size_t bytes, int to_host);

    /* ---- accounting (the memory planner's check, memory/plan.h) ---- */
    void (*mem_stats)(UlMemStats *s);
    void (*mem_reset_peak)(void); /* peak := current */

    /* ---- dense ---- */
    /* C[M,N] = alpha * op(A) @ op(B) + beta * C ; op(A) is [M,K], op(B) is [K,N]; A and B act.
     * transA: A stored [K,M]; transB: B stored [N,K]. C is f32 when c_f32 (weight gradients,
     * accumulated in fp32), else act. Accumulation is fp32. */
    void (*matmul)(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                   const void *B, int64_t ldb, float beta, void *C, int64_t ldc, int c_f32);

    /* ---- embedding ---- */
    /* out[i, :] = wte[tokens[i], :]                            out [t, D] act, wte [V, D] act */
    void (*embedding_fwd)(void *out, const int32_t *tokens, const void *wte, int64_t t, int64_t D);
    /* dwte[tokens[i], :] += dout[i, :]  (accumulates)           dwte [V, D] f32, dout act */
    void (*embedding_bwd)(float *dwte, const void *dout, const int32_t *tokens, int64_t t, int64_t D);

    /* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ---- */
    /* y [t, D] act, rstd [t] f32 (saved for backward), x [t, D] act, w [D] act */
    void (*rmsnorm_fwd)(void *y, float *rstd, const void *x, const void *w, int64_t t, int64_t D, float eps);
    /* dx [t, D] act (accumulates: dx += ..., it is the residual gradient), dw [D] f32 (accumulates) */
    void (*rmsnorm_bwd)(void *dx, float *dw, const void *dy, const void *x, const void *w, const float *rstd,
                        int64_t t, int64_t D);

    /* ---- per-head RMSNorm (Qwen3's q_norm, k_norm over head_dim) ----
     * x [t, nh, d] with row stride xs, y [t, nh, d] row stride ys (act; y != x), w [d] act,
     * rstd [t, nh] f32 (saved for backward). Same arithmetic as rmsnorm_fwd per head. */
    void (*headnorm_fwd)(void *y, int64_t ys, float *rstd, const void *x, int64_t xs, const void *w, int64_t t,
                         int64_t nh, int64_t d, float eps);
    /* dx [t, nh, d] (row stride dxs) OVERWRITTEN (dx == dy with dxs == dys is allowed: in
     * place); dw [d] f32 (accumulates). */
    void (*headnorm_bwd)(void *dx, int64_t dxs, float *dw, const void *dy, int64_t dys, const void *x, int64_t xs,
                         const void *w, const float *rstd, int64_t t, int64_t nh, int64_t d);

    /* ---- bias of a linear layer (Qwen2's q/k/v projections) ----
     * y[i, j] += b[j] for i < t, j < n: y act with row stride ys, b [n] act. */
    void (*bias_add)(void *y, int64_t ys, const void *b, int64_t t, int64_t n);
    /* db[j] += sum_i dy[i, j] (db [n] f32, accumulates; dy act, row stride dys). */
    void (*bias_bwd)(float *db, const void *dy, int64_t dys, int64_t t, int64_t n);

    /* ---- RoPE (HF rotate_half convention: pairs (i, i + d/2)), in place on act ----
     * x [t, nh, d] with row stride `stride`; pos [t]; inv_freq [d/2] f32.
     * angle = (float)pos * inv_freq (fp32, as transformers computes it).
     * inverse = 1 applies the transpose rotation (the backward). */
    void (*rope)(void *x, int64_t stride, int64_t t, int64_t nh, int64_t d, const int32_t *pos,
                 const float *inv_freq, int inverse);

    /* ---- SwiGLU: h = silu(g) * u (act) ----
     * The backward may run in place: dg == g and/or du == u (the MLP backward writes the
     * gradients over its dead activations); dh does not alias dg, du. */
    void (*swiglu_fwd)(void *h, const void *g, const void *u, int64_t n);
    void (*swiglu_bwd)(void *dg, void *du, const void *dh, const void *g, const void *u, int64_t n);

    /* ---- attention (UlAttention above): the forward writes o and lse from q, k, v; the
     * backward writes dq, dk, dv from dout, q, k, v, o and lse ---- */
    void (*attention_fwd)(const UlAttention *a);
    void (*attention_bwd)(const UlAttention *a);

    /* ---- cross-entropy on one tile of logits, fused with its backward ----
     * logits [n, V] act in, overwritten by dlogits = (softmax - onehot(label)) * dscale for
     * rows whose label != -100, and 0 for ignored rows. acc [2] (backend memory, double):
     * acc[0] += sum of CE over valid rows, acc[1] += their number. */
    void (*cross_entropy)(void *logits, const int32_t *labels, int64_t n, int64_t V, float dscale, double *acc);

    /* ---- optimizer (f32) ---- */
    /* sum of squares of x[n] (double accumulation; waits for the result) */
    double (*sumsq)(const float *x, int64_t n);
    /* x *= s */
    void (*scale)(float *x, int64_t n, float s);
    /* AdamW, decoupled weight decay, bias correction with step t (1-based):
     * m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ;
     * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p) */
    void (*adamw)(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2, float eps,
                  float wd, int64_t t);

} KernelOps;

/* What a backend allocates for itself (workspaces, scratch) for a sequence of T tokens with
 * Hq_l local query heads of dim d: the memory plan's items (memory/plan.c), so the plan
 * knows no backend internals. cuda: the CUDA backend's, else the CPU backend's. Defined in
 * kernels/workspace.c (built without the CUDA toolkit too). */
#define UL_WORKSPACE_MAX 4
#define UL_CUDA_WORKSPACE_BYTES ((size_t)32 << 20) /* the CUDA backend's cuBLASLt workspace */
typedef struct {
    int64_t bytes;
    const char *name;
} UlWorkspaceItem;
typedef struct {
    int n;
    UlWorkspaceItem item[UL_WORKSPACE_MAX];
} UlWorkspace;
void ul_kernels_workspace(int cuda, int64_t T, int64_t Hq_l, int64_t Hkv_l, int64_t d, UlWorkspace *w);
/* The CUDA attention backward's launches (Hopper, fused form): key/value heads per launch, so
 * that its fp32 dQ accumulator [Hq_l / Hkv_l * this][T rounded up to 64][d] stays within
 * UL_ATTN_DQ_BUDGET (and at least one key/value head's queries). Shared by the backend and
 * ul_kernels_workspace so that the plan counts exactly what runs. */
#define UL_ATTN_DQ_BUDGET ((int64_t)256 << 20)
int64_t ul_attn_dq_kv_heads(int64_t T, int64_t Hq_l, int64_t Hkv_l, int64_t d);

/* The attention kernels the environment chooses (the CUDA backend's; README, "GPUs"):
 * UL_ATTN_KERNEL the backward's form and which kernels run, UL_ATTN_FWD the Hopper
 * forward's variant (the kernel lab's, bench/attention). Unset or empty: 0, the default; an
 * unknown value: -1 (refused at start-up: ul_attn_env_check, from run/setup.c). The names
 * and their parsing live in kernels/workspace.c, for the backend, the check and --help. */
enum { UL_AK_DEFAULT, UL_AK_FUSED, UL_AK_FUSED_RED, UL_AK_DETERMINISTIC, UL_AK_SIMPLE, UL_AK_SIMPLE_BWD, UL_AK_COUNT };
enum { UL_AF_OVPP, UL_AF_SERIAL, UL_AF_COUNT };
enum { UL_ATTN_ENV_KERNEL, UL_ATTN_ENV_FWD }; /* the variable: UL_ATTN_KERNEL, UL_ATTN_FWD */
int ul_attn_kernel_choice(void);
int ul_attn_fwd_choice(void);
/* the variable's accepted values, in enum order, joined by sep into out[n] */
void ul_attn_env_values(int var, const char *sep, char *out, size_t n);
/* 0, or -1 with e naming the variable that has an unknown value, the value and the accepted
 * ones: UL_ATTN_KERNEL, UL_ATTN_FWD and the kernels' test knobs (UL_CPU_ATTN_ISA,
 * UL_CUDA_MATMUL_FALLBACK, UL_ATTN_DQ_HEADS, UL_ATTN_PERSIST_CTAS; kernels/workspace.c) */
int ul_attn_env_check(UlError *e);

/* The CPU backend (always built). */
const KernelOps *ul_kernels_cpu(void);
/* The CUDA backend, NULL when not built or no GPU is visible. It binds to the current
 * device; ul_kernels_cuda_select(local_rank) first makes that GPU local_rank % count (the
 * rank's index on its node: comm/comm.h ul_node_rank) and returns it, -1 when no GPU is
 * visible, -2 when this build has no CUDA backend. */
const KernelOps *ul_kernels_cuda(void);
int ul_kernels_cuda_select(int local_rank);

#endif
