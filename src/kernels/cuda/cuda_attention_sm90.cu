/* Flash attention for Hopper (sm_90a), forward and backward: TMA, mbarriers, wgmma, warp
 * specialization. Same contract as the kernels of cuda_attention.cu (causal within
 * documents, GQA, THD rows, O in bf16 and lse in fp32), for head dims 64 and 128 with
 * 16-byte aligned rows and T of at least 128 (192 for the forward at d = 64: no TMA box
 * larger than the tensor); the launchers return 0 for anything else (or on another device,
 * or with UL_ATTN_KERNEL=simple) and the portable mma.sync kernels run.
 *
 * Forward: one CTA = BM = 64 NW query rows of one head (NW = 2 at d = 128, 3 at d = 64):
 *   producer      one thread issues the TMA copies (Q once; K and V tiles of 128 keys into
 *                 a 2-stage ring) and waits for a stage to be released before refilling it;
 *                 a warpgroup that hands its registers to the consumers with setmaxnreg;
 *   NW consumer   warpgroups of 64 query rows each (k_attn_fwd_ov_sm90, the default):
 *                 S = Q K^T of tile kb (wgmma m64n128k16, both operands from shared memory)
 *                 issued with O += P V of tile kb - 1 (wgmma with P from registers, V read
 *                 N-major), the online softmax of S (fp32, log2 units) while P V runs
 *                 (the wait for P V pinned below it, full tiles without mask code: see
 *                 k_attn_fwd_ov_sm90); K and V stages released apart; the warpgroups
 *                 take turns issuing on the tensor cores (named barriers, ping-pong):
 *                 FlashAttention-3's schedule; persistent (tasks taken as CTAs free up),
 *                 each warpgroup's products only over the key tiles its rows see, O
 *                 stored by TMA.
 * UL_ATTN_FWD=serial (k_attn_fwd_sm90, the lab's baseline): S, softmax, P V in turn in each
 * warpgroup. Measured on H100 (bench/RESULTS.md, issue 21): the ov kernel 1.04-1.17x the
 * serial order before the three details of k_attn_fwd_ov_sm90 (1.11-1.38x more); ping-pong
 * alone (0.86-0.97x) and the pipeline alone (0.96-1.02x) were retired. (An earlier
 * pipeline, commits 2abb676 and 917f924, measured 0.55x on H200.)
 * The key tiles end at the block's last row: tile kb covers keys
 * [r0 + BM - (nkb - kb) * 128, +128); the first may start before the document (or before
 * token 0: the TMA fills out-of-range rows with zeros) and is masked like any tile that
 * is not entirely visible. Tiles in shared memory use the 128-byte swizzle (sm90.cuh).
 *
 * Backward: see the comment above k_attn_prep_sm90. Two forms: the fused one (dK, dV and
 * dQ in one kernel, dQ added to an fp32 accumulator by TMA bulk reduce: not bitwise
 * reproducible), the default, and the deterministic one (dK, dV in one kernel, dQ in a
 * second; UL_ATTN_KERNEL=deterministic). Measured on H100 (bench/RESULTS.md, issue 21): the
 * fused form 1.22-1.27x the deterministic one at d = 128 and 1.20 at d = 64 with 64-row
 * query tiles; 128-row tiles at d = 64 (the default there) 1.11-1.19x more; adding dQ
 * with atomics from registers instead (UL_ATTN_KERNEL=fused-red, the lab's baseline) was
 * 0.98x the deterministic form at d = 128. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sm90.cuh"

#define H_BM 128 /* query rows per CTA: two consumer warpgroups of 64 */
#define H_BN 128 /* keys per tile */
#define H_ST 2   /* K/V stages */
#define H_NT 288 /* forward, dQ: 2 consumer warpgroups + 1 producer warp */
#define H_LN2 0.6931471805599453f

typedef struct {
    bf16 *o;    /* [T, os] rows, head h at column h * d */
    float *lse; /* [T, Hq] */
    int64_t os, T, Hq, group, nblk;
    const int64_t *cu; /* [n_docs + 1] */
    int64_t n_docs;
    float scale2; /* scale * log2(e) */
} HFwdArgs;

static size_t hfwd_smem(int DP, int NW, int pin, int nq = 1) {
    /* alignment slack, nq Q buffers, the K and V stages, room for 16 mbarriers and, pin (the
     * ov kernel), 8 bytes per consumer thread (FwdCta) */
    return 1024 + (size_t)nq * 64 * NW * DP * 2 + (size_t)2 * H_ST * H_BN * DP * 2 + 16 * sizeof(uint64_t) +
           (size_t)(pin ? 128 * NW * 8 : 0);
}

/* the persistent forward's task counter (k_attn_fwd_ov_sm90): zeroed before each launch,
 * then each CTA's producer takes the next task with an atomic add */
__device__ unsigned long long g_fwd_task_ctr;

#ifdef UL_SM90A_DEVICE
/* Masked online softmax of one S tile in place (raw scores in sc, this thread's rows
 * irel[0..1] relative to r0, their document starts dsr; keys j0 = r0 + jr + column): sc
 * becomes P (fp32), m (scaled log2 units) and l are updated, al gets the O rescale factors.
 * The mask applies where !full; SPLIT (full known to the caller, which branches): MASK says
 * whether it applies, so that a full tile runs no mask code (otherwise the compiler turns
 * the mask into predicated instructions that every tile executes) */
template <bool SPLIT = false, bool MASK = true>
__device__ __forceinline__ void fwd_softmax(float (*sc)[4], float *mrow, float *lrow, float *al, bool full, int jr,
                                            const int *irel, const int *dsr, int t4, float scale2) {
    if (SPLIT) full = !MASK;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < H_BN / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float x = sc[nt][e];
            if (!full) {
                const int j = jr + nt * 8 + 2 * t4 + (e & 1), hf = e >> 1;
                if (!(j <= irel[hf] && j >= dsr[hf])) x = -INFINITY;
            }
            sc[nt][e] = x;
            mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
    }
    float mu[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 1));
        mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 2));
        const float mn = fmaxf(mrow[hf], mx[hf] * scale2);
        mu[hf] = mn == -INFINITY ? 0.0f : mn;
        al[hf] = ul_ex2(mrow[hf] - mu[hf]);
        mrow[hf] = mn;
    }
    float rs[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < H_BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float p = ul_ex2(fmaf(sc[nt][e], scale2, -mu[e >> 1]));
            sc[nt][e] = p;
            rs[e >> 1] += p;
        }
#pragma unroll
    for (int hf = 0; hf < 2; hf++) lrow[hf] = lrow[hf] * al[hf] + rs[hf];
}

/* O *= al (row factors), then P (fp32 in sc) as the bf16 A fragments of the H_BN / 16 k-steps of P V */
template <int DP>
__device__ __forceinline__ void fwd_rescale_pack(float (*oacc)[4], const float *al, const float (*sc)[4],
                                                 unsigned (*pa)[4]) {
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++) {
        oacc[nt][0] *= al[0];
        oacc[nt][1] *= al[0];
        oacc[nt][2] *= al[1];
        oacc[nt][3] *= al[1];
    }
#pragma unroll
    for (int kk = 0; kk < H_BN / 16; kk++) {
        pa[kk][0] = ul_pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
        pa[kk][1] = ul_pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
        pa[kk][2] = ul_pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        pa[kk][3] = ul_pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
    }
}

/* S = Q K^T of one warpgroup (DP / 16 k-steps, both operands K-major in shared memory;
 * QROWS: rows of the Q tile), issued, not committed */
template <int DP, int QROWS>
__device__ __forceinline__ void fwd_qk(float (*sc)[4], unsigned qaddr, unsigned kaddr) {
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++) {
        const uint64_t da = wgmma_desc(qaddr + (ks >> 2) * (QROWS * 128) + (ks & 3) * 32, 16, 1024);
        const uint64_t db = wgmma_desc(kaddr + (ks >> 2) * (H_BN * 128) + (ks & 3) * 32, 16, 1024);
        wgmma_ss_n128(&sc[0][0], da, db, ks > 0);
    }
}

/* O += P V of one warpgroup (H_BN / 16 k-steps, P from registers, the V tile [keys][DP]
 * read N-major), issued, not committed */
template <int DP>
__device__ __forceinline__ void fwd_pv(float (*oacc)[4], const unsigned (*pa)[4], unsigned vaddr) {
#pragma unroll
    for (int kk = 0; kk < H_BN / 16; kk++) {
        const uint64_t db = wgmma_desc(vaddr + kk * 16 * 128, H_BN * 128, 1024);
        if (DP == 128)
            wgmma_rs_n128_tb(&oacc[0][0], pa[kk], db);
        else
            wgmma_rs_n64_tb(&oacc[0][0], pa[kk], db);
    }
}

/* Ping-pong of NW consumer warpgroups: warpgroup cw issues its tensor-core work only
 * after named barrier 1 + cw, which warpgroup cw - 1 (mod NW) arrives at once it has
 * issued its own; so the warpgroups take turns on the tensor cores and each one's
 * softmax runs while the others' products do. Every warpgroup passes the same number of
 * turns; the last warpgroup arrives once ahead (the first turn of warpgroup 0) and skips
 * its last arrival, so every barrier completes as often as it is waited for. */
__device__ __forceinline__ void fwd_turn_begin(int cw) { named_bar_sync(1 + cw, 256); }
template <int NW>
__device__ __forceinline__ void fwd_turn_end(int cw, bool last) {
    if (!(last && cw == NW - 1)) named_bar_arrive(1 + (cw + 1) % NW, 256);
}

/* a consumer thread's rows' lse = (m + log2 l) ln 2 stored, and 1 / l in inv (the row sums
 * l completed over the quad) */
__device__ __forceinline__ void fwd_lse(const HFwdArgs &a, const float *mrow, const float *lrow, int64_t r0,
                                        const int *irel, int64_t h, int t4, float *inv) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float l = lrow[hf];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        inv[hf] = l > 0.0f ? 1.0f / l : 0.0f;
        const int64_t i = r0 + irel[hf];
        if (t4 == 0 && i < a.T) a.lse[i * a.Hq + h] = l > 0.0f ? (mrow[hf] + __log2f(l)) * H_LN2 : -INFINITY;
    }
}

/* epilogue of a consumer thread: O / l in bf16, lse (fwd_lse) */
template <int DP>
__device__ __forceinline__ void fwd_store(const HFwdArgs &a, const float (*oacc)[4], const float *mrow,
                                          const float *lrow, int64_t r0, const int *irel, int64_t h, int t4) {
    float inv[2];
    fwd_lse(a, mrow, lrow, r0, irel, h, t4, inv);
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int64_t i = r0 + irel[hf];
        if (i >= a.T) continue;
        bf16 *orow = a.o + i * a.os + h * DP;
#pragma unroll
        for (int nt = 0; nt < DP / 8; nt++)
            *(unsigned *)(orow + nt * 8 + 2 * t4) =
                ul_pack_bf16(oacc[nt][2 * hf] * inv[hf], oacc[nt][2 * hf + 1] * inv[hf]);
    }
}

/* the ov kernel's epilogue: lse (fwd_lse); O / l in bf16 staged in this warpgroup's 64
 * rows of its task's Q buffer qb (Q's layout, [NA][BM][64] with the 128-byte swizzle: row
 * r % 8 = g, so the 16-byte chunk nt % 8 of a row at chunk (nt % 8) ^ g, conflict-free;
 * those rows' S are all done), then stored by TMA (64-row boxes, rows past T clipped) by
 * the warpgroup's first thread: NA stores against DP / 4 4-byte stores a thread (the
 * backward's epilogue gained 5-6 % with packed documents the same way, bench/RESULTS.md).
 * Q is released at qrel only now: by the other warps once their rows are written, by the
 * first once the store has read them. */
template <int DP, int BM>
__device__ __forceinline__ void fwd_store_tma(const HFwdArgs &a, const CUtensorMap *to, const float (*oacc)[4],
                                              const float *mrow, const float *lrow, int64_t r0, const int *irel,
                                              int64_t h, int cw, int g, int t4, int lane, int tid,
                                              unsigned char *qb, uint64_t *qrel) {
    constexpr int NA = DP / 64;
    float inv[2];
    fwd_lse(a, mrow, lrow, r0, irel, h, t4, inv);
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = irel[hf]; /* cw 64 + 16 wq + g + 8 hf */
#pragma unroll
        for (int nt = 0; nt < DP / 8; nt++) {
            const unsigned off = (nt >> 3) * (BM * 128) + r * 128 + (((nt & 7) ^ g) << 4) + t4 * 4;
            *(unsigned *)(qb + off) = ul_pack_bf16(oacc[nt][2 * hf] * inv[hf], oacc[nt][2 * hf + 1] * inv[hf]);
        }
    }
    fence_proxy_async_smem();
    named_bar_sync(4 + cw, 128); /* the warpgroup's rows written (barriers 1 to NW: the turns) */
    if ((tid & 127) == 0 && r0 + cw * 64 < a.T) {
#pragma unroll
        for (int at = 0; at < NA; at++)
            tma_store_3d(to, at * 64, (int)h, (int)(r0 + cw * 64), qb + at * BM * 128 + cw * 64 * 128);
        bulk_commit();
        bulk_wait_read0();
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(qrel);
}

/* A forward CTA's work and shared memory. Task: query head h (kv head hk), rows
 * [r0, r0 + BM), the nkb key tiles of H_BN ending at r0 + BM (tile kb covers keys
 * [r0 + BM - (nkb - kb) H_BN, +H_BN)). Shared memory: Q [NQ][NA][BM][64], K and V
 * [ST][NA][BN][64] (128-byte swizzle), then the mbarriers: [0] Q; for stage s [1+s] K
 * full, [3+s] V full, [5+s] released (SPLIT: K released), [7+s] V released (SPLIT only);
 * the persistent kernel (NQ = 2, Q buffer q of the tasks it with it % 2 = q): [9+q] Q
 * released, [11] Q full (buffer 1; buffer 0: [0]), [12+q] task posted, [14+q] the task
 * (low 32 bits) and the next (high 32 bits); then, in the ov kernel, pin [128 NW] float2,
 * one per consumer thread (wgmma_wait0_after). */
template <int DP, int BM, int NQ = 1>
struct FwdCta {
    static constexpr unsigned QB = BM * DP * 2, KB = H_BN * DP * 2;
    int64_t h, hk, r0;
    int64_t d0, s0, e0; /* the document of row r0, its start and end */
    int nkb;
    unsigned char *sQ, *sK, *sV;
    uint64_t *bar;
    float2 *pin;

    __device__ __forceinline__ FwdCta(const HFwdArgs &a, unsigned char *smem_raw) {
        sQ = smem_raw + ((1024u - (sm90_addr(smem_raw) & 1023u)) & 1023u);
        sK = sQ + NQ * QB;
        sV = sK + H_ST * KB;
        bar = (uint64_t *)(sV + H_ST * KB);
        pin = (float2 *)(bar + 16);
        set_task(a, blockIdx.x);
    }

    /* the task's head, rows and key tiles (tasks in order: longest query blocks first). WARP:
     * in whole warps, converged (ul_doc_of_warp); else in one thread (the persistent
     * producer: a plain binary search) */
    template <bool WARP = true>
    __device__ __forceinline__ void set_task(const HFwdArgs &a, int64_t task) {
        h = task % a.Hq;
        const int64_t qb = a.nblk - 1 - task / a.Hq; /* longest blocks first */
        hk = h / a.group;
        r0 = qb * BM;
        if (WARP) {
            d0 = ul_doc_of_warp(a.cu, a.n_docs, r0, &s0, &e0);
        } else {
            d0 = ul_doc_of(a.cu, a.n_docs, r0);
            s0 = __ldg(a.cu + d0);
            e0 = __ldg(a.cu + d0 + 1);
        }
        nkb = (int)((r0 + BM - s0 + H_BN - 1) / H_BN);
    }

    /* thread 0 initializes the barriers (a release: one arrival per consumer warp); then all sync */
    template <bool SPLIT, bool PERSIST = false>
    __device__ __forceinline__ void init_barriers(int tid, unsigned consumer_warps) {
        if (tid == 0) {
            mbar_init(&bar[0], 1);
            for (int s = 0; s < H_ST; s++) {
                mbar_init(&bar[1 + s], 1);
                mbar_init(&bar[3 + s], 1);
                mbar_init(&bar[5 + s], consumer_warps);
                if (SPLIT) mbar_init(&bar[7 + s], consumer_warps);
            }
            if (PERSIST) {
                mbar_init(&bar[9], consumer_warps); /* Q released */
                mbar_init(&bar[10], consumer_warps);
                mbar_init(&bar[11], 1); /* Q full, buffer 1 */
                mbar_init(&bar[12], 1); /* task posted */
                mbar_init(&bar[13], 1);
            }
            mbar_fence_init();
        }
        __syncthreads();
    }

    /* the task's K and V tiles, tile by tile into the stage ring (tile gk = gk0 + kb of the
     * CTA's in stage gk % 2, phase (gk / 2) % 2), refilling a stage once its consumers
     * released it (SPLIT: K and V released apart) */
    template <bool SPLIT>
    __device__ __forceinline__ void produce_kv(const CUtensorMap *tk, const CUtensorMap *tv, int gk0) {
        constexpr int NA = DP / 64;
        for (int kb = 0; kb < nkb; kb++) {
            const int gk = gk0 + kb, st = gk & 1;
            const unsigned pe = ((gk >> 1) - 1) & 1;
            const int j0 = (int)(r0 + BM - (int64_t)(nkb - kb) * H_BN);
            if (gk >= H_ST) mbar_wait(&bar[5 + st], pe);
            mbar_expect_tx(&bar[1 + st], KB);
            for (int at = 0; at < NA; at++)
                tma_load_3d(sK + st * KB + at * H_BN * 128, tk, at * 64, (int)hk, j0, &bar[1 + st]);
            if (SPLIT && gk >= H_ST) mbar_wait(&bar[7 + st], pe);
            mbar_expect_tx(&bar[3 + st], KB);
            for (int at = 0; at < NA; at++)
                tma_load_3d(sV + st * KB + at * H_BN * 128, tv, at * 64, (int)hk, j0, &bar[3 + st]);
        }
    }

    /* the producer thread: Q once, then the K and V tiles */
    template <bool SPLIT>
    __device__ __forceinline__ void produce(const CUtensorMap *tq, const CUtensorMap *tk, const CUtensorMap *tv) {
        constexpr int NA = DP / 64;
        mbar_expect_tx(&bar[0], QB);
        for (int at = 0; at < NA; at++) tma_load_3d(sQ + at * BM * 128, tq, at * 64, (int)h, (int)r0, &bar[0]);
        produce_kv<SPLIT>(tk, tv, 0);
    }

    /* the persistent kernel's producer thread: task blockIdx.x first, then each next one
     * from the counter (g_fwd_task_ctr; the CTAs take tasks, longest first, as they free
     * up, as the hardware schedules blocks); at task it, Q buffer it % 2, once the consumers
     * released it (task it - 2), the task and the next one posted in shared memory ([14+q],
     * [12+q]); the K and V tiles numbered across tasks (tile gk in stage gk % 2, phase
     * (gk / 2) % 2), K and V released apart */
    __device__ __forceinline__ void produce_persist(const HFwdArgs &a, const CUtensorMap *tq, const CUtensorMap *tk,
                                                    const CUtensorMap *tv) {
        constexpr int NA = DP / 64;
        const int64_t ntask = a.nblk * a.Hq; /* < 2^31 (the launcher's grid check) */
        int64_t cur = blockIdx.x;
        int gk = 0;
        for (int it = 0; cur < ntask; it++) {
            const int q = it & 1;
            const int64_t nxt = (int64_t)gridDim.x + (int64_t)atomicAdd(&g_fwd_task_ctr, 1ull);
            set_task<false>(a, cur);
            if (it >= 2) mbar_wait(&bar[9 + q], ((it >> 1) - 1) & 1);
            *(volatile uint64_t *)&bar[14 + q] = (uint64_t)cur | (uint64_t)(nxt < ntask ? nxt : ntask) << 32;
            mbar_arrive(&bar[12 + q]); /* (a release: the consumers' wait sees the task) */
            uint64_t *qf = &bar[q ? 11 : 0];
            mbar_expect_tx(qf, QB);
            for (int at = 0; at < NA; at++) tma_load_3d(sQ + q * QB + at * BM * 128, tq, at * 64, (int)h, (int)r0, qf);
            produce_kv<true>(tk, tv, gk);
            gk += nkb;
            cur = nxt;
        }
    }
};

/* A consumer thread's rows: warpgroup cw owns rows [i0, i0 + 64), warp wq of it rows
 * i0 + 16 wq + (g, g + 8): irel (relative to r0) and their document starts dsr (relative
 * to r0); ds_last: the document start of the warpgroup's last row. Found from the
 * document of row r0 (d0, its start s0 and end e0: no load for rows in it) */
struct FwdRows {
    int64_t i0, ds_last;
    int irel[2], dsr[2];
    __device__ __forceinline__ FwdRows(const HFwdArgs &a, int64_t r0, int64_t d0, int64_t s0, int64_t e0, int cw,
                                       int wq, int g) {
        const int64_t T = a.T;
        int64_t e;
        i0 = r0 + cw * 64;
        const int64_t ilast = i0 + 63 < T ? i0 + 63 : T - 1;
        ul_doc_after(a.cu, a.n_docs, ilast < i0 ? T - 1 : ilast, d0, s0, e0, &ds_last, &e);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int64_t i = i0 + wq * 16 + g + hf * 8;
            int64_t st;
            ul_doc_after(a.cu, a.n_docs, i < T ? i : T - 1, d0, s0, e0, &st, &e);
            irel[hf] = (int)(i - r0);
            dsr[hf] = (int)(st - r0);
        }
    }
    /* the tile at keys j0 is visible to every row of the warpgroup (no mask) */
    __device__ __forceinline__ bool full(int64_t j0) const { return j0 >= ds_last && j0 + H_BN - 1 <= i0; }
};
#endif

/* NW consumer warpgroups of 64 query rows each (BM = 64 NW rows per CTA) + the producer:
 * NW = 2: one warp (288 threads, 168 registers each); NW = 3: a warpgroup that gives its
 * registers to the consumers (setmaxnreg 24 / 160; 13 warps would leave 128 each).
 * Serial order in each consumer warpgroup: S, softmax, P V (UL_ATTN_FWD=serial, the lab's
 * baseline; the default is k_attn_fwd_ov_sm90). */
#define HFWD_NT(NW) ((NW) == 2 ? 288 : 512)
template <int DP, int NW>
__global__ void __launch_bounds__(HFWD_NT(NW), 1)
    k_attn_fwd_sm90(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tv, const HFwdArgs a) {
#ifdef UL_SM90A_DEVICE
    constexpr int BM = 64 * NW; /* query rows per CTA */
    constexpr unsigned KB = H_BN * DP * 2;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    FwdCta<DP, BM> c(a, smem_raw);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    c.template init_barriers<false>(tid, 4 * NW);

    if (warp >= 4 * NW) { /* ---- producer */
        if (NW == 3) reg_dealloc<24>();
        if (warp == 4 * NW && lane == 0) c.template produce<false>(&tq, &tk, &tv);
        return;
    }

    if (NW == 3) reg_alloc<160>();
    /* ---- consumers */
    const int cw = warp >> 2, wq = warp & 3, g = lane >> 2, t4 = lane & 3;
    const FwdRows rw(a, c.r0, c.d0, c.s0, c.e0, cw, wq, g);
    const unsigned qaddr = sm90_addr(c.sQ) + cw * 64 * 128;
    uint64_t *bar = c.bar;

    float oacc[DP / 8][4];
    float sc[H_BN / 8][4];
#pragma unroll
    for (int i = 0; i < DP / 8; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
#pragma unroll
    for (int i = 0; i < H_BN / 8; i++) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

    mbar_wait(&bar[0], 0);
    for (int kb = 0; kb < c.nkb; kb++) {
        const int st = kb & 1;
        const unsigned ph = (kb >> 1) & 1;
        const int64_t j0 = c.r0 + BM - (int64_t)(c.nkb - kb) * H_BN;

        /* S = Q K^T over DP / 16 k-steps */
        mbar_wait(&bar[1 + st], ph);
        wgmma_fence();
        fwd_qk<DP, BM>(sc, qaddr, sm90_addr(c.sK + st * KB));
        wgmma_commit();
        wgmma_wait<0>();
        reg_fence<H_BN / 2>(&sc[0][0]);

        float al[2];
        fwd_softmax(sc, mrow, lrow, al, rw.full(j0), (int)(j0 - c.r0), rw.irel, rw.dsr, t4, a.scale2);
        unsigned pa[H_BN / 16][4]; /* P as the A fragments of H_BN / 16 k-steps */
        fwd_rescale_pack<DP>(oacc, al, sc, pa);

        /* O += P V over H_BN / 16 k-steps */
        mbar_wait(&bar[3 + st], ph);
        wgmma_fence();
        fwd_pv<DP>(oacc, pa, sm90_addr(c.sV + st * KB));
        wgmma_commit();
        wgmma_wait<0>();
        reg_fence<DP / 2>(&oacc[0][0]);
        reg_fence_u<H_BN / 4>(&pa[0][0]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[5 + st]); /* this warp is done with the stage */
    }
    fwd_store<DP>(a, oacc, mrow, lrow, c.r0, rw.irel, c.h, t4);
#endif
}

/* Overlapped forward (FlashAttention-3's intra-warpgroup pipeline): a producer warpgroup
 * (setmaxnreg 24) and NW consumer warpgroups (240 registers at NW = 2, 160 at NW = 3).
 * Each consumer issues S_kb = Q K_kb^T and O += P_{kb-1} V_{kb-1} together, runs the
 * softmax of S_kb while P V runs on the tensor cores, then rescales O and packs P_kb.
 * K and V stages are released apart (K once S is done, V once P V is): the next K load
 * has a full step of lead. The consumer warpgroups take turns issuing (ping-pong,
 * fwd_turn_begin): FlashAttention-3's schedule. The default forward (bench/RESULTS.md).
 * Three details the SASS showed to matter (bench/attention/sass.sh; measured 1.11-1.38x the
 * same kernel without them on H100, bench/RESULTS.md): with a plain wgmma_wait<0>, ptxas
 * hoists the wait for P V above the softmax (WARPGROUP.DEPBAR.LE gsb0, 0x0 right after the
 * wait for S) and the softmax never runs under P V: wgmma_wait0_after keeps it below; the
 * mask is a branch to the masked softmax, so full tiles run no mask code; the warpgroup index
 * is broadcast from lane 0, so the wgmma descriptors stay in uniform registers.
 * Persistent, with a dynamic schedule (FlashAttention-3's): one CTA per SM takes tasks as
 * it frees up (FwdCta::produce_persist), with two Q buffers, so that the next task's Q and
 * first K tile load while this one's last tiles, P V and O store run: with short documents
 * (64 of 2K tokens: 8.5 key tiles a task on average) a CTA's start and end are a large
 * share of its time. Measured 1.03-1.05x the same kernel with one CTA per task (the
 * default before) with 64 packed documents, within the spread on one document; a static
 * schedule (ovpp-persist) lost (bench/RESULTS.md). Two more details for short documents
 * (measured together 1.06x with 64 packed documents at d = 128 and 1.12x at d = 64, within
 * the spread on one document): each warpgroup multiplies only the key tiles its rows see
 * (fwd_ov_task), and O is staged in the task's Q buffer and stored by TMA
 * (fwd_store_tma). */
#define HOV_NT(NW) (128 * ((NW) + 1))
#define HOV_REG(NW) ((NW) == 2 ? 240 : 160)
#ifdef UL_SM90A_DEVICE
/* A key tile none of the warpgroup's rows sees (fwd_ov_task): its turn passed without
 * products, then K and V released once loaded (so that the arrival counts toward tile gk's
 * phase of the release barriers, not an earlier one's); last: the CTA's last turn */
template <int NW>
__device__ __forceinline__ void fwd_ov_skip(uint64_t *bar, int gk, int cw, int lane, bool last) {
    const int st = gk & 1;
    const unsigned ph = (gk >> 1) & 1;
    fwd_turn_begin(cw);
    fwd_turn_end<NW>(cw, last);
    mbar_wait(&bar[1 + st], ph);
    __syncwarp();
    if (lane == 0) mbar_arrive(&bar[5 + st]);
    mbar_wait(&bar[3 + st], ph);
    __syncwarp();
    if (lane == 0) mbar_arrive(&bar[7 + st]);
}

/* One task of the ov kernel in a consumer thread: S, softmax and P V over the key tiles
 * [lo, hi) of the task's nkb that its rows see (numbered from gb across the CTA's tasks:
 * stage gk % 2, phase (gk / 2) % 2), the others passed (fwd_ov_skip); Q at qb (full: phase
 * qph of qfull), then O and lse stored (fwd_store_tma, which releases Q at qrel). first:
 * the CTA's first task (the ping-pong's first turn); last: its last (the ping-pong's last
 * turn). */
template <int DP, int NW>
__device__ __forceinline__ void fwd_ov_task(const HFwdArgs &a, const CUtensorMap *to, const FwdCta<DP, 64 * NW, 2> &c,
                                            int cw, int wq, int g, int lane, int tid, int t4, unsigned char *qb,
                                            uint64_t *qfull, unsigned qph, int gb, bool first, bool last,
                                            uint64_t *qrel) {
    constexpr int BM = 64 * NW;
    constexpr unsigned KB = H_BN * DP * 2;
    const FwdRows rw(a, c.r0, c.d0, c.s0, c.e0, cw, wq, g);
    uint64_t *bar = c.bar;
    const int nkb = c.nkb;
    const unsigned qaddr = sm90_addr(qb) + cw * 64 * 128; /* this warpgroup's rows of Q */
    /* the warpgroup's products over the task's key tiles [lo, hi) only: those before the
     * document of its first row (packed documents: a task across a document boundary) and
     * those after its last row (warpgroup 0 of three at d = 64: the task's last tile) are
     * passed (fwd_ov_skip) outside the loop, whose code is the same as without them
     * (measured +8 % with 64 packed documents at d = 64, +3 % with varied ones at d = 128,
     * bench/RESULTS.md; a branch per tile inside the loop, ovpp-skip, had lost). The
     * diagonal tile is always in the range, so lo < hi. */
    int lo, hi;
    {
        const int64_t i0 = c.r0 + cw * 64, f = i0 < a.T ? i0 : a.T - 1;
        int64_t fs, fe;
        ul_doc_after(a.cu, a.n_docs, f, c.d0, c.s0, c.e0, &fs, &fe);
        const int before = nkb - (int)((c.r0 + BM - fs + H_BN - 1) / H_BN); /* tiles wholly before fs */
        lo = __shfl_sync(0xffffffffu, before > 0 ? before : 0, 0);
        hi = nkb + 1 - (BM - 64 * cw - 63 + H_BN - 1) / H_BN; /* tiles with j0 <= i0 + 63 */
    }

    float oacc[DP / 8][4];
    float sc[H_BN / 8][4];
    unsigned pa[H_BN / 16][4]; /* P of the previous tile, the A operand of the P V in flight */
#pragma unroll
    for (int i = 0; i < DP / 8; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
#pragma unroll
    for (int i = 0; i < H_BN / 8; i++) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f}, al[2];
    if (first && cw == NW - 1) named_bar_arrive(1, 256); /* warpgroup 0 takes the first turn */
    for (int kb = 0; kb < lo; kb++) fwd_ov_skip<NW>(bar, gb + kb, cw, lane, false);
    mbar_wait(qfull, qph);
    /* tile lo: S alone */
    {
        const int64_t j0 = c.r0 + BM - (int64_t)(nkb - lo) * H_BN;
        const int st = (gb + lo) & 1;
        mbar_wait(&bar[1 + st], ((gb + lo) >> 1) & 1);
        fwd_turn_begin(cw);
        wgmma_fence();
        fwd_qk<DP, BM>(sc, qaddr, sm90_addr(c.sK + st * KB));
        wgmma_commit();
        fwd_turn_end<NW>(cw, false);
        wgmma_wait<0>();
        reg_fence<H_BN / 2>(&sc[0][0]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[5 + st]); /* K_0 no longer needed */
        fwd_softmax(sc, mrow, lrow, al, rw.full(j0), (int)(j0 - c.r0), rw.irel, rw.dsr, t4, a.scale2);
        fwd_rescale_pack<DP>(oacc, al, sc, pa);
    }
    for (int kb = lo + 1; kb < hi; kb++) {
        const int gk = gb + kb;
        const int st = gk & 1, pst = st ^ 1;
        const int64_t j0 = c.r0 + BM - (int64_t)(nkb - kb) * H_BN;
        mbar_wait(&bar[1 + st], (gk >> 1) & 1);
        mbar_wait(&bar[3 + pst], ((gk - 1) >> 1) & 1);
        fwd_turn_begin(cw);
        /* S_kb with P_{kb-1} V_{kb-1} */
        wgmma_fence();
        fwd_qk<DP, BM>(sc, qaddr, sm90_addr(c.sK + st * KB));
        wgmma_commit();
        fwd_pv<DP>(oacc, pa, sm90_addr(c.sV + pst * KB));
        wgmma_commit();
        fwd_turn_end<NW>(cw, false);
        wgmma_wait<1>(); /* S_kb done; P_{kb-1} V_{kb-1} may still run */
        reg_fence<H_BN / 2>(&sc[0][0]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[5 + st]);
        /* a full tile's softmax without mask code (a branch, not predicated code every tile runs) */
        if (rw.full(j0))
            fwd_softmax<true, false>(sc, mrow, lrow, al, true, (int)(j0 - c.r0), rw.irel, rw.dsr, t4, a.scale2);
        else
            fwd_softmax<true, true>(sc, mrow, lrow, al, false, (int)(j0 - c.r0), rw.irel, rw.dsr, t4, a.scale2);
        /* the wait for P V, kept below the softmax (ptxas hoists a plain wgmma_wait<0> above it) */
        wgmma_wait0_after(sm90_addr(c.pin + tid), lrow[0], lrow[1]);
        reg_fence<DP / 2>(&oacc[0][0]);
        reg_fence_u<H_BN / 4>(&pa[0][0]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[7 + pst]);
        fwd_rescale_pack<DP>(oacc, al, sc, pa);
    }
    /* the last tile's P V (tile hi - 1; Q released after the epilogue, which stages O in it) */
    {
        const int gk = gb + hi - 1;
        const int st = gk & 1;
        mbar_wait(&bar[3 + st], (gk >> 1) & 1);
        fwd_turn_begin(cw);
        wgmma_fence();
        fwd_pv<DP>(oacc, pa, sm90_addr(c.sV + st * KB));
        wgmma_commit();
        fwd_turn_end<NW>(cw, last && hi == nkb);
        wgmma_wait<0>();
        reg_fence<DP / 2>(&oacc[0][0]);
        reg_fence_u<H_BN / 4>(&pa[0][0]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[7 + st]); /* V of the last tile released */
    }
    for (int kb = hi; kb < nkb; kb++) fwd_ov_skip<NW>(bar, gb + kb, cw, lane, last && kb == nkb - 1);
    fwd_store_tma<DP, BM>(a, to, oacc, mrow, lrow, c.r0, rw.irel, c.h, cw, g, t4, lane, tid, qb, qrel);
}
#endif

template <int DP, int NW>
__global__ void __launch_bounds__(HOV_NT(NW), 1)
    k_attn_fwd_ov_sm90(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                       const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap to,
                       const HFwdArgs a) {
#ifdef UL_SM90A_DEVICE
    constexpr int BM = 64 * NW;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    FwdCta<DP, BM, 2> c(a, smem_raw);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    c.template init_barriers<true, true>(tid, 4 * NW);

    if (warp >= 4 * NW) { /* ---- producer warpgroup: one thread issues every copy */
        reg_dealloc<24>();
        if (warp == 4 * NW && lane == 0) c.produce_persist(a, &tq, &tk, &tv);
        return;
    }
    reg_alloc<HOV_REG(NW)>();

    /* cw broadcast from lane 0: warp-uniform to the compiler, so the wgmma descriptors stay
     * in uniform registers (as in the backward) */
    const int cw = __shfl_sync(0xffffffffu, warp >> 2, 0);
    const int wq = warp & 3, g = lane >> 2, t4 = lane & 3;
    uint64_t *bar = c.bar;
    /* the tasks the producer posts (FwdCta::produce_persist), Q in buffer it % 2,
     * the key tiles numbered across tasks (gb: the task's first); a CTA beyond the tasks
     * (the launcher gives none) gets none. The protocol (barriers, parities, the ping-pong
     * across tasks, buffer reuse) was checked in a model under random interleavings: no
     * deadlock, no buffer overwritten in use, every task once (bench/attention/dyn_protocol.py,
     * removed with the first form in f56a0c1). */
    if (blockIdx.x >= a.nblk * a.Hq) return;
    int gb = 0;
    for (int it = 0;; it++) {
        const int q = it & 1;
        mbar_wait(&bar[12 + q], (it >> 1) & 1);
        /* the slot read by lane 0 only, the lane that releases Q (bar[9 + q]) once the task's
         * O is stored (fwd_store_tma), and broadcast: so the release that lets the producer
         * rewrite the slot orders the read itself (with every lane reading and lane 0
         * arriving, that order rests on __syncwarp, which racecheck may not follow: the
         * retired form's 2 hazards) */
        uint64_t tw = 0;
        if (lane == 0) tw = *(volatile uint64_t *)&bar[14 + q];
        tw = __shfl_sync(0xffffffffu, tw, 0);
        c.set_task(a, (int64_t)(tw & 0xffffffffu));
        const bool last = (int64_t)(tw >> 32) >= a.nblk * a.Hq;
        fwd_ov_task<DP, NW>(a, &to, c, cw, wq, g, lane, tid, t4, c.sQ + q * c.QB, &bar[q ? 11 : 0], (it >> 1) & 1,
                            gb, it == 0, last, &bar[9 + q]);
        if (last) break;
        gb += c.nkb;
    }
    /* (each O store waited for its reads of shared memory; its writes complete with the
     * grid, so the CTA leaves without waiting for them, as CUTLASS's epilogues do) */
#endif
}

/* ---------------------------------------------------------------- backward */

/* Backward:
 *   k_attn_prep_sm90: DT[h][i] = rowsum(dO * O), L2T[h][i] = lse * log2(e), transposed
 *                     ([Hq][Tp], Tp = T rounded up to 64) so that a tile's values are one
 *                     contiguous TMA box;
 *   k_attn_dkv_sm90:  128 keys per CTA (2 consumer warpgroups x 64, 240 registers each
 *                     through setmaxnreg; one producer warpgroup at 24), loops over the
 *                     query heads of the kv group and the query tiles of 64 rows (128
 *                     rows at d = 64 in the fused form):
 *                     S^T = K Q^T, dP^T = V dO^T (wgmma SS), P^T, dS^T in registers,
 *                     dV += P^T dO, dK += dS^T Q (wgmma RS, dO and Q read N-major);
 *                     fused form: also dQ += dS K into an fp32 accumulator (below), in
 *                     launches of as many kv heads as its budget allows;
 *                     CTAs ordered kv head major, longest key block first;
 *   deterministic form (FlashAttention-2 split, as in cuda_attention.cu, no atomics):
 *   k_attn_dq_sm90:   128 query rows per CTA (2 consumer warpgroups + producer warp), key
 *                     tiles of 64: S = Q K^T, dP = dO V^T, dQ += dS K;
 *   fused form: k_attn_dq_convert_tiles (k_attn_dq_convert for fused-red) scales the
 *                     accumulator to bf16 dQ. */
#define B_BK 128 /* dK/dV: keys per CTA */
#define B_BQ 64  /* dK/dV: queries per tile */
#define B_NT 384
#define Q_BN 64 /* dQ: keys per tile */

typedef struct {
    bf16 *dq, *dk, *dv;
    const bf16 *o, *dout;
    const float *lse;
    float *DT, *L2T; /* [Hq][Tp] */
    float *dqacc;    /* the fused form's fp32 dQ accumulator (layout: k_attn_dkv_sm90), then scaled to bf16 */
    int64_t dqs, dks, dvs, os, dos, Tp;
    int64_t T, Hq, group, nblk;
    int64_t hk0, nhk; /* the key/value heads of this launch (DQ_BULK: dqacc holds their query heads) */
    const int64_t *cu; /* [n_docs + 1] */
    int64_t n_docs;
    float scale, scale2;
} HBwdArgs;

__global__ void k_attn_prep_sm90(const HBwdArgs a, int d) {
    const int lane = threadIdx.x & 31;
    const int64_t u = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (u >= a.T * a.Hq) return;
    const int64_t i = u / a.Hq, h = u - i * a.Hq;
    const bf16 *o = a.o + i * a.os + h * d, *g = a.dout + i * a.dos + h * d;
    float s = 0.0f;
    for (int e = lane; e < d; e += 32) s += __bfloat162float(o[e]) * __bfloat162float(g[e]);
    s = ul_warp_sum(s);
    if (lane == 0) {
        a.DT[h * a.Tp + i] = s;
        a.L2T[h * a.Tp + i] = a.lse[u] * 1.4426950408889634f;
    }
}

/* dQ in the fused form (the FQ argument of k_attn_dkv_sm90) */
#define DQ_NONE 0 /* dK, dV only: dQ by k_attn_dq_sm90 */
#define DQ_RED 1  /* each consumer thread adds its part of the tile's dQ with red.global */
#define DQ_BULK 2 /* the consumers stage the tile's dQ in shared memory; one thread adds it with one TMA bulk reduce */

/* fq: the fused form also keeps dS^T [2][BK][BQ] bf16 in shared memory; DQ_BULK also the
 * tile's dQ [BQ * DP] fp32 (in fragment order, below) and two more mbarriers; bq: queries
 * per tile (128 at d = 64: 199760 bytes of the 227 KB) */
static size_t hdkv_smem(int DP, int fq, int bq = B_BQ) {
    return 1024 + (size_t)2 * B_BK * DP * 2 + (size_t)2 * 2 * bq * DP * 2 + (size_t)(fq ? 2 * B_BK * bq * 2 : 0) +
           (size_t)(fq == DQ_BULK ? bq * DP * 4 : 0) + (size_t)2 * 2 * bq * 4 + 10 * 8;
}

#ifdef UL_SM90A_DEVICE
/* acc[DP / 2] += A B over BQ / 16 k-steps of 16: A from registers (fr[kk], the A fragments of
 * the warpgroup's 64 keys), B the stage's [BQ][DP] tile at `base` read N-major (dO or Q) */
template <int DP, int BQ>
__device__ __forceinline__ void dkv_rs(float *acc, const unsigned (*fr)[4], unsigned base) {
#pragma unroll
    for (int kk = 0; kk < BQ / 16; kk++) {
        const uint64_t b = wgmma_desc(base + kk * 16 * 128, BQ * 128, 1024);
        if (DP == 128)
            wgmma_rs_n128_tb(acc, fr[kk], b);
        else
            wgmma_rs_n64_tb(acc, fr[kk], b);
    }
}

/* the dK/dV kernel reads lse2 and D of a tile's first DKV_PRE n-tiles (2 DKV_PRE values a
 * thread) before the wait for S^T (dP^T), the rest after: the wait's memory clobber keeps
 * shared loads below it, so each first exp (dS^T) waited on its load (5.5 % of the stall
 * samples at d 128, bench/RESULTS.md); 2, since more spills in the d 128 fused kernel */
constexpr int DKV_PRE = 2;
/* this thread's pairs (columns 8 nt + 2 t4, +1) of a tile's per-query values v (lse2 or D)
 * for the first DKV_PRE n-tiles */
__device__ __forceinline__ void dkv_first(float (*dst)[2], const float *v, int t4) {
#pragma unroll
    for (int nt = 0; nt < DKV_PRE; nt++) {
        const float2 p = *(const float2 *)(v + nt * 8 + 2 * t4);
        dst[nt][0] = p.x, dst[nt][1] = p.y;
    }
}
/* P^T of a tile in place in sc: exp2(s * scale2 - lse2[i]) where key j sees query i
 * (column c = 8 nt + 2 t4 + (e & 1): query qr + c, lse2 in pre[nt][e & 1] for nt < DKV_PRE,
 * else L[c]; this thread's keys jrel[hf] with document ends derel[hf]), else 0;
 * PACK: also the bf16 A fragments in pa. MASK: the mask applies (false: a full tile; the
 * caller branches, since a per-element test becomes predicated code that every tile runs) */
template <int BQ, bool MASK, bool PACK>
__device__ __forceinline__ void dkv_p(float (*sc)[4], unsigned (*pa)[4], const float *L, const float (*pre)[2],
                                      float scale2, int qr, const int *jrel, const int *derel, int t4) {
#pragma unroll
    for (int nt = 0; nt < BQ / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int c = nt * 8 + 2 * t4 + (e & 1), hf = e >> 1;
            bool ok = true;
            if (MASK) {
                const int i = qr + c;
                ok = i >= jrel[hf] && i < derel[hf];
            }
            const float l = nt < DKV_PRE ? pre[nt][e & 1] : L[c];
            sc[nt][e] = ok ? ul_ex2(fmaf(sc[nt][e], scale2, -l)) : 0.0f;
        }
        if (PACK) {
            const int kk = nt >> 1, hi = (nt & 1) * 2;
            pa[kk][hi] = ul_pack_bf16(sc[nt][0], sc[nt][1]);
            pa[kk][hi + 1] = ul_pack_bf16(sc[nt][2], sc[nt][3]);
        }
    }
}

#endif /* UL_SM90A_DEVICE */

/* FQ = DQ_NONE: dK, dV only (the deterministic form; dQ by k_attn_dq_sm90). Otherwise also
 * dQ += dS K for the tile: both warpgroups write dS^T to shared memory, then warpgroup cw
 * multiplies it by the columns [cw d/2, (cw + 1) d/2) of K and adds the 64 x d/2 result to
 * the fp32 accumulator a.dqacc:
 *   DQ_RED:  [T][Hq][d], with atomics from registers;
 *   DQ_BULK: [the launch's query heads][Tp / 64][64 d], each 64-row tile in the consumers' fragment order (float
 *            pair ((cw * 4 + wq) * d / 8 + hf * d / 16 + nt) * 32 + lane holds row
 *            16 wq + g + 8 hf, columns cw d/2 + 8 nt + 2 t4, +1), so a tile is one
 *            contiguous block: the consumers stage it in shared memory (conflict-free
 *            stores) and warp 1 adds it with one TMA bulk reduce (FlashAttention-3's way);
 *            k_attn_dq_convert_tiles reads it back.
 * Either way the order across key blocks varies: dQ is not bitwise reproducible.
 * BQ: queries per tile, B_BQ = 64, or 128 (the fused form's at d = 64, as FlashAttention-3's
 * backward at d 64: half the tiles, so half the barriers and mbarrier waits per key block;
 * measured 1.11-1.19x the 64-row tile on H100, bench/RESULTS.md; d = 64 and DQ_BULK only):
 * S^T, dP^T are 64 keys x 128 queries per warpgroup, dS^T two [BK][64] tiles (queries
 * 0-63, 64-127) per stage, and warpgroup cw forms dQ for queries [64 cw, 64 cw + 64), all
 * d columns, staged as 64-row tile cw in the order above (its column halves where BQ 64
 * has its warpgroups), so that one bulk reduce adds both tiles (only the first where the
 * second would start at Tp).
 * P^T of a tile all of whose queries the warpgroup's keys see runs without mask code (a
 * branch in dkv_p's caller, not predicated code every tile runs), and the warpgroup index is
 * warp-uniform to the compiler (below): measured 1.02-1.05x the same kernel without them
 * in the fused form on H100 (bench/RESULTS.md), and no spills at d = 128 (24 bytes before). */
template <int DP, int FQ, int BQ = B_BQ>
__global__ void __launch_bounds__(B_NT, 1)
    k_attn_dkv_sm90(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tdo,
                    const __grid_constant__ CUtensorMap tl, const __grid_constant__ CUtensorMap tdd,
                    const __grid_constant__ CUtensorMap tdk, const __grid_constant__ CUtensorMap tdv,
                    const HBwdArgs a) {
#ifdef UL_SM90A_DEVICE
    static_assert(BQ == 64 || (BQ == 128 && DP == 64 && FQ == DQ_BULK), "BQ 128: d 64, DQ_BULK only");
    constexpr int NA = DP / 64;
    constexpr unsigned KB = B_BK * DP * 2, QB = BQ * DP * 2;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *sK = smem_raw + ((1024u - (sm90_addr(smem_raw) & 1023u)) & 1023u); /* [NA][BK][64] */
    unsigned char *sV = sK + KB;                                                       /* [NA][BK][64] */
    unsigned char *sQ = sV + KB;                                                       /* [2][NA][BQ][64] */
    unsigned char *sO = sQ + 2 * QB;                                                   /* [2][NA][BQ][64] dO */
    unsigned char *sS = sO + 2 * QB;                        /* FQ: [2][BQ / 64][BK][64] dS^T, 128-byte swizzle */
    float *sQa = (float *)(sS + (FQ ? 2 * B_BK * BQ * 2 : 0)); /* DQ_BULK: [BQ * DP] dQ of a tile, fragment order */
    float *sL = sQa + (FQ == DQ_BULK ? BQ * DP : 0);             /* [2][BQ] lse2 */
    float *sD = sL + 2 * BQ;                                                           /* [2][BQ] D */
    /* [0] K,V  [1+s] Q,lse  [3+s] dO,D  [5+s] empty  [7] dQ staged  [8] dQ stage read */
    uint64_t *bar = (uint64_t *)(sD + 2 * BQ);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t nkblk = (a.T + B_BK - 1) / B_BK;
    /* kv head major, the key blocks of a head longest first (block 0 sees every query of its
     * document): CTAs running together work on one or two heads, so the rows of dO, Q (and,
     * fused, of the dQ accumulator) they touch stay in L2, and the long blocks do not trail */
    const int64_t hk = a.hk0 + blockIdx.x / nkblk, kblk = blockIdx.x % nkblk;
    const int64_t k0 = kblk * B_BK, T = a.T;
    const int64_t klast = k0 + B_BK - 1 < T ? k0 + B_BK - 1 : T - 1;
    /* (a plain binary search: ul_doc_of_warp here makes ptxas spill 16 bytes in the d = 128
     * fused kernel's main loop) */
    const int64_t qend = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, klast) + 1);
    const int nqt = (int)((qend - k0 + BQ - 1) / BQ);
    const int nit = nqt * (int)a.group;

    if (tid == 0) {
        mbar_init(&bar[0], 1);
        for (int s = 0; s < 2; s++) {
            mbar_init(&bar[1 + s], 1);
            mbar_init(&bar[3 + s], 1);
            mbar_init(&bar[5 + s], 8);
        }
        mbar_init(&bar[7], 8);
        mbar_init(&bar[8], 1);
        mbar_fence_init();
    }
    __syncthreads();

    if (warp < 4) { /* ---- producer warpgroup */
        reg_dealloc<24>();
        if (FQ == DQ_BULK && warp == 1 && lane == 0) { /* the dQ writer: each tile's staged rows, added to dqacc */
            for (int it = 0; it < nit; it++) {
                mbar_wait(&bar[7], it & 1);
                const int64_t h = hk * a.group + it / nqt, q0 = k0 + (int64_t)(it % nqt) * BQ;
                /* BQ 128: the tile's two 64-row tiles, or only the first where the second
                 * starts at Tp (the accumulator ends there; its rows are past T, all zero) */
                const unsigned bytes = BQ == 64 || q0 + BQ <= a.Tp ? BQ * DP * 4 : 64 * DP * 4;
                bulk_reduce_add_f32(a.dqacc + ((h - a.hk0 * a.group) * a.Tp + q0) * DP, sQa, bytes);
                bulk_commit();
                bulk_wait_read0();
                mbar_arrive(&bar[8]);
            }
            /* (the last reduce's reads of shared memory waited for above; its writes complete
             * with the grid, before k_attn_dq_convert_tiles reads them) */
        }
        if (tid == 0) {
            mbar_expect_tx(&bar[0], 2 * KB);
            for (int at = 0; at < NA; at++) {
                tma_load_3d(sK + at * B_BK * 128, &tk, at * 64, (int)hk, (int)k0, &bar[0]);
                tma_load_3d(sV + at * B_BK * 128, &tv, at * 64, (int)hk, (int)k0, &bar[0]);
            }
            for (int it = 0; it < nit; it++) {
                const int st = it & 1;
                if (it >= 2) mbar_wait(&bar[5 + st], ((it >> 1) - 1) & 1);
                const int h = (int)(hk * a.group) + it / nqt, q0 = (int)k0 + (it % nqt) * BQ;
                /* whole boxes (BQ rows; those past T, or past Tp for lse2 and D, zero-filled and counted) */
                mbar_expect_tx(&bar[1 + st], QB + BQ * 4);
                for (int at = 0; at < NA; at++)
                    tma_load_3d(sQ + st * QB + at * BQ * 128, &tq, at * 64, h, q0, &bar[1 + st]);
                tma_load_2d(sL + st * BQ, &tl, q0, h, &bar[1 + st]);
                mbar_expect_tx(&bar[3 + st], QB + BQ * 4);
                for (int at = 0; at < NA; at++)
                    tma_load_3d(sO + st * QB + at * BQ * 128, &tdo, at * 64, h, q0, &bar[3 + st]);
                tma_load_2d(sD + st * BQ, &tdd, q0, h, &bar[3 + st]);
            }
        }
        return;
    }
    reg_alloc<240>();

    /* ---- consumers: warpgroup cw owns keys [kw, kw + 64); this thread rows kw + 16 wq + (g, g + 8) */
    /* cw broadcast from lane 0, so that the compiler knows it is warp-uniform and keeps the
     * wgmma descriptors, which depend on it, in uniform registers (the main loop's SASS: 787
     * instructions at d 128 against 950 with cw from threadIdx.x, half the R2UR moves) */
    const int cw = __shfl_sync(0xffffffffu, (warp >> 2) - 1, 0);
    const int wq = warp & 3, g = lane >> 2, t4 = lane & 3;
    const int64_t kw = k0 + cw * 64;
    const int64_t kwl = kw + 63 < T ? kw + 63 : T - 1;
    /* the end of key kw's document (the warp converged), then this thread's keys': the same
     * unless a document ends in the warpgroup's keys (then a search) */
    int64_t tmp, de_first;
    ul_doc_of_warp(a.cu, a.n_docs, kw < T ? kw : T - 1, &tmp, &de_first);
    if (kw >= T) de_first = 0;
    int jrel[2], derel[2]; /* this thread's two keys and their document ends, relative to k0 */
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int64_t j = kw + wq * 16 + g + hf * 8;
        const int64_t de = j >= T ? 0 : j < de_first ? de_first : __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, j) + 1);
        jrel[hf] = (int)(j - k0);
        derel[hf] = (int)(de - k0);
    }
    const unsigned kaddr = sm90_addr(sK) + cw * 64 * 128, vaddr = sm90_addr(sV) + cw * 64 * 128;

    float dk[DP / 8][4], dv[DP / 8][4];
    float sc[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
    for (int i = 0; i < DP / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.0f;
#pragma unroll
    for (int i = 0; i < BQ / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) sc[i][e] = dp[i][e] = 0.0f;

    mbar_wait(&bar[0], 0);
    for (int it = 0; it < nit; it++) {
        const int st = it & 1;
        const unsigned ph = (it >> 1) & 1;
        const int64_t q0 = k0 + (int64_t)(it % nqt) * BQ;
        const bool skip = q0 + BQ - 1 < kw || kw >= T; /* every query precedes every key of this warpgroup */
        /* FQ: this thread's dS^T rows cw 64 + 16 wq + g (+ 8) of stage st: 4 bytes per (row, query pair),
         * 16-byte chunk nt % 8 of a row stored at chunk (nt % 8) ^ g (the 128-byte swizzle; rows % 8 = g),
         * in the tile of queries 64 (nt / 8) (BQ 128: two tiles [BK][64], one after the other) */
        unsigned char *srow = sS + st * (B_BK * BQ * 2) + (cw * 64 + wq * 16 + g) * 128 + t4 * 4;
        mbar_wait(&bar[1 + st], ph);
        mbar_wait(&bar[3 + st], ph);
        unsigned pa[BQ / 16][4], sa[BQ / 16][4]; /* P^T, dS^T as A fragments (read by the wgmma in flight) */
        if (!skip) {
            const unsigned qaddr = sm90_addr(sQ + st * QB), oaddr = sm90_addr(sO + st * QB);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < DP / 16; ks++) {
                const uint64_t da = wgmma_desc(kaddr + (ks >> 2) * (B_BK * 128) + (ks & 3) * 32, 16, 1024);
                const uint64_t db = wgmma_desc(qaddr + (ks >> 2) * (BQ * 128) + (ks & 3) * 32, 16, 1024);
                if (BQ == 128)
                    wgmma_ss_n128(&sc[0][0], da, db, ks > 0);
                else
                    wgmma_ss_n64(&sc[0][0], da, db, ks > 0);
            }
            wgmma_commit();
#pragma unroll
            for (int ks = 0; ks < DP / 16; ks++) {
                const uint64_t da = wgmma_desc(vaddr + (ks >> 2) * (B_BK * 128) + (ks & 3) * 32, 16, 1024);
                const uint64_t db = wgmma_desc(oaddr + (ks >> 2) * (BQ * 128) + (ks & 3) * 32, 16, 1024);
                if (BQ == 128)
                    wgmma_ss_n128(&dp[0][0], da, db, ks > 0);
                else
                    wgmma_ss_n64(&dp[0][0], da, db, ks > 0);
            }
            wgmma_commit();
            float pre[DKV_PRE][2]; /* lse2 of the first queries, read while the products run */
            dkv_first(pre, sL + st * BQ, t4);
            wgmma_wait<1>(); /* S^T done; dP^T may still run */
            reg_fence<BQ / 2>(&sc[0][0]);

            /* P^T = exp2(s * scale2 - lse2[i]) where key j sees query i (kept in sc), then
             * dV += P^T dO on the tensor cores while dS^T = P^T (dP^T - D[i]) is formed.
             * BQ 128: sc, dp, pa, dk and dv do not all fit in 240 registers: P^T is packed
             * while dS^T is formed (sc[nt], dp[nt] die as it goes) and dV issued with dK */
            constexpr bool LATE = BQ == 128;
            const bool full = q0 >= kwl && q0 + BQ - 1 < de_first;
            const int qr = (int)(q0 - k0);
            const float *L = sL + st * BQ, *Dd = sD + st * BQ;
            if (full)
                dkv_p<BQ, false, !LATE>(sc, pa, L, pre, a.scale2, qr, jrel, derel, t4);
            else
                dkv_p<BQ, true, !LATE>(sc, pa, L, pre, a.scale2, qr, jrel, derel, t4);
            float pred[DKV_PRE][2]; /* D of the first queries, read while dP^T runs */
            dkv_first(pred, Dd, t4);
            if (!LATE) {
                wgmma_fence();
                dkv_rs<DP, BQ>(&dv[0][0], pa, oaddr);
                wgmma_commit();
                wgmma_wait<1>(); /* dP^T done; dV may still run */
            } else {
                wgmma_wait<0>(); /* dP^T done */
            }
            reg_fence<BQ / 2>(&dp[0][0]);
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++) {
                float ds[4];
#pragma unroll
                for (int e = 0; e < 4; e++)
                    ds[e] = sc[nt][e] * (dp[nt][e] - (nt < DKV_PRE ? pred[nt][e & 1] : Dd[nt * 8 + 2 * t4 + (e & 1)]));
                const int kk = nt >> 1, hi = (nt & 1) * 2;
                if (LATE) {
                    pa[kk][hi] = ul_pack_bf16(sc[nt][0], sc[nt][1]);
                    pa[kk][hi + 1] = ul_pack_bf16(sc[nt][2], sc[nt][3]);
                }
                sa[kk][hi] = ul_pack_bf16(ds[0], ds[1]);
                sa[kk][hi + 1] = ul_pack_bf16(ds[2], ds[3]);
                if (FQ) {
                    unsigned char *sb = BQ == 128 ? srow + (nt >> 3) * (B_BK * 128) : srow;
                    const int sn = BQ == 128 ? nt & 7 : nt;
                    *(unsigned *)(sb + ((sn ^ g) << 4)) = sa[kk][hi];
                    *(unsigned *)(sb + 8 * 128 + ((sn ^ g) << 4)) = sa[kk][hi + 1];
                }
            }
            wgmma_fence();
            if (LATE) dkv_rs<DP, BQ>(&dv[0][0], pa, oaddr);
            dkv_rs<DP, BQ>(&dk[0][0], sa, qaddr);
            wgmma_commit();
        } else if (FQ) { /* no key of this warpgroup sees the tile: its dS^T rows are zero */
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++) {
                unsigned char *sb = BQ == 128 ? srow + (nt >> 3) * (B_BK * 128) : srow;
                const int sn = BQ == 128 ? nt & 7 : nt;
                *(unsigned *)(sb + ((sn ^ g) << 4)) = 0u;
                *(unsigned *)(sb + 8 * 128 + ((sn ^ g) << 4)) = 0u;
            }
        }
        /* FQ: dQ of the tile's 64 queries, columns [cw d/2, (cw + 1) d/2); BQ 128: of its
         * queries [64 cw, 64 cw + 64), all d columns */
        constexpr int NQ = BQ == 128 ? DP : DP / 2;
        float dqp[NQ / 8][4];
        if (FQ != DQ_NONE) {
            fence_proxy_async_smem();
            named_bar_sync(1, 256); /* both halves of dS^T written (and the stage's last reads done) */
            const unsigned saddr = sm90_addr(sS + st * (B_BK * BQ * 2)) + (BQ == 128 ? cw * B_BK * 128 : 0);
            const unsigned kb = sm90_addr(sK) + (DP == 128 ? cw * B_BK * 128 : BQ == 128 ? 0 : cw * 64);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < B_BK / 16; kk++) {
                const uint64_t da = wgmma_desc(saddr + kk * 16 * 128, B_BK * 128, 1024);
                const uint64_t db = wgmma_desc(kb + kk * 16 * 128, B_BK * 128, 1024);
                if (NQ == 64)
                    wgmma_ss_n64_tt(&dqp[0][0], da, db, kk > 0);
                else
                    wgmma_ss_n32_tt(&dqp[0][0], da, db, kk > 0);
            }
            wgmma_commit();
        }
        wgmma_wait<0>();
        if (!skip) {
            reg_fence<DP / 2>(&dv[0][0]);
            reg_fence<DP / 2>(&dk[0][0]);
            reg_fence_u<BQ / 4>(&pa[0][0]);
            reg_fence_u<BQ / 4>(&sa[0][0]);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[5 + st]);
        if (FQ == DQ_BULK) { /* stage the tile's dQ rows (once the writer has read the last tile's) */
            reg_fence<NQ / 2>(&dqp[0][0]);
            if (it > 0) mbar_wait(&bar[8], (it - 1) & 1);
            /* BQ 128: 64-row tile cw (after tile 0's 8 (DP / 8) 32 float pairs), its column
             * halves c = 0, 1 where BQ 64 has warpgroups 0, 1: each 64-row tile in one order */
            float2 *frag = (float2 *)sQa + (BQ == 128 ? cw * 8 + wq : cw * 4 + wq) * (DP / 8) * 32 + lane;
#pragma unroll
            for (int c = 0; c < NQ / (DP / 2); c++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int nt = 0; nt < DP / 16; nt++)
                        frag[(c * 4 * (DP / 8) + hf * (DP / 16) + nt) * 32] =
                            make_float2(dqp[c * (DP / 16) + nt][2 * hf], dqp[c * (DP / 16) + nt][2 * hf + 1]);
            fence_proxy_async_smem();
            __syncwarp();
            if (lane == 0) mbar_arrive(&bar[7]);
        }
        if (FQ == DQ_RED) {
            reg_fence<NQ / 2>(&dqp[0][0]);
            const int64_t h = hk * a.group + it / nqt;
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int64_t i = q0 + wq * 16 + g + hf * 8;
                if (i >= qend) continue;
                float *row = a.dqacc + (i * a.Hq + h) * DP + cw * (DP / 2) + 2 * t4;
#pragma unroll
                for (int nt = 0; nt < DP / 16; nt++) red_add_v2(row + nt * 8, dqp[nt][2 * hf], dqp[nt][2 * hf + 1]);
            }
        }
    }

    /* epilogue: dK = scale * sum dS^T Q, dV = sum P^T dO (bf16), staged where K and V were
     * (their layout, [NA][BK][64] with the 128-byte swizzle: this thread's row r % 8 = g, so
     * the 16-byte chunk nt % 8 of a row at chunk (nt % 8) ^ g, conflict-free) once both
     * warpgroups are done with K and V (each ended on wgmma_wait<0>), then stored by TMA,
     * rows past T clipped: 4 stores a block against 64 4-byte stores a thread, which filled
     * the global-memory queue with short tasks (lg throttle, bench/RESULTS.md) */
    named_bar_sync(1, 256);
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int r = cw * 64 + wq * 16 + g + hf * 8;
#pragma unroll
        for (int nt = 0; nt < DP / 8; nt++) {
            const unsigned off = (nt >> 3) * (B_BK * 128) + r * 128 + (((nt & 7) ^ g) << 4) + t4 * 4;
            *(unsigned *)(sK + off) = ul_pack_bf16(dk[nt][2 * hf] * a.scale, dk[nt][2 * hf + 1] * a.scale);
            *(unsigned *)(sV + off) = ul_pack_bf16(dv[nt][2 * hf], dv[nt][2 * hf + 1]);
        }
    }
    fence_proxy_async_smem();
    named_bar_sync(1, 256);
    if (tid == 128) {
#pragma unroll
        for (int at = 0; at < NA; at++) {
            tma_store_3d(&tdk, at * 64, (int)hk, (int)k0, sK + at * B_BK * 128);
            tma_store_3d(&tdv, at * 64, (int)hk, (int)k0, sV + at * B_BK * 128);
        }
        bulk_commit();
        bulk_wait_read0(); /* shared memory read: the CTA may leave (the writes complete with the grid) */
    }
#endif
}

static size_t hdq_smem(int DP) {
    return 1024 + (size_t)2 * H_BM * DP * 2 + (size_t)2 * 2 * Q_BN * DP * 2 + 8 * 8;
}

template <int DP>
__global__ void __launch_bounds__(H_NT, 1)
    k_attn_dq_sm90(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tdo,
                   const HBwdArgs a) {
#ifdef UL_SM90A_DEVICE
    constexpr int NA = DP / 64;
    constexpr unsigned QB = H_BM * DP * 2, KB = Q_BN * DP * 2;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *sQ = smem_raw + ((1024u - (sm90_addr(smem_raw) & 1023u)) & 1023u); /* [NA][BM][64] */
    unsigned char *sO = sQ + QB;                                                       /* [NA][BM][64] dO */
    unsigned char *sK = sO + QB;                                                       /* [2][NA][BN][64] */
    unsigned char *sV = sK + 2 * KB;                                                   /* [2][NA][BN][64] */
    uint64_t *bar = (uint64_t *)(sV + 2 * KB); /* [0] Q,dO  [1+s] K  [3+s] V  [5+s] empty */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t task = blockIdx.x;
    const int64_t h = task % a.Hq, qb = a.nblk - 1 - task / a.Hq;
    const int64_t hk = h / a.group, r0 = qb * H_BM, T = a.T;
    /* the document of row r0 (every thread, its warps converged), then the later rows' from it */
    int64_t kstart, e0, tmp;
    const int64_t d0 = ul_doc_of_warp(a.cu, a.n_docs, r0, &kstart, &e0);
    /* key tiles of 64 ending at r0 + 128: tile kb starts at r0 + 128 - (nkb - kb) * 64 */
    const int nkb = 2 + (int)((r0 - kstart + Q_BN - 1) / Q_BN);

    if (tid == 0) {
        mbar_init(&bar[0], 1);
        for (int s = 0; s < 2; s++) {
            mbar_init(&bar[1 + s], 1);
            mbar_init(&bar[3 + s], 1);
            mbar_init(&bar[5 + s], 8);
        }
        mbar_fence_init();
    }
    __syncthreads();

    if (warp == 8) {
        if (lane == 0) {
            mbar_expect_tx(&bar[0], 2 * QB);
            for (int at = 0; at < NA; at++) {
                tma_load_3d(sQ + at * H_BM * 128, &tq, at * 64, (int)h, (int)r0, &bar[0]);
                tma_load_3d(sO + at * H_BM * 128, &tdo, at * 64, (int)h, (int)r0, &bar[0]);
            }
            for (int kb = 0; kb < nkb; kb++) {
                const int st = kb & 1;
                if (kb >= 2) mbar_wait(&bar[5 + st], ((kb >> 1) - 1) & 1);
                const int j0 = (int)(r0 + H_BM - (int64_t)(nkb - kb) * Q_BN);
                mbar_expect_tx(&bar[1 + st], KB);
                for (int at = 0; at < NA; at++)
                    tma_load_3d(sK + st * KB + at * Q_BN * 128, &tk, at * 64, (int)hk, j0, &bar[1 + st]);
                mbar_expect_tx(&bar[3 + st], KB);
                for (int at = 0; at < NA; at++)
                    tma_load_3d(sV + st * KB + at * Q_BN * 128, &tv, at * 64, (int)hk, j0, &bar[3 + st]);
            }
        }
        return;
    }

    const int cw = warp >> 2, wq = warp & 3, g = lane >> 2, t4 = lane & 3;
    const int64_t i0 = r0 + cw * 64;
    const int64_t ilast = i0 + 63 < T ? i0 + 63 : T - 1;
    int64_t ds_last;
    ul_doc_after(a.cu, a.n_docs, ilast < i0 ? T - 1 : ilast, d0, kstart, e0, &ds_last, &tmp);
    int irel[2], dsr[2];
    float l2[2], dd[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int64_t i = i0 + wq * 16 + g + hf * 8, ic = i < T ? i : T - 1;
        irel[hf] = (int)(i - r0);
        int64_t st;
        ul_doc_after(a.cu, a.n_docs, ic, d0, kstart, e0, &st, &tmp);
        dsr[hf] = (int)(st - r0);
        l2[hf] = a.L2T[h * a.Tp + ic];
        dd[hf] = a.DT[h * a.Tp + ic];
    }
    const unsigned qaddr = sm90_addr(sQ) + cw * 64 * 128, oaddr = sm90_addr(sO) + cw * 64 * 128;

    float dq[DP / 8][4], sc[Q_BN / 8][4], dp[Q_BN / 8][4];
#pragma unroll
    for (int i = 0; i < DP / 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
#pragma unroll
    for (int i = 0; i < Q_BN / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) sc[i][e] = dp[i][e] = 0.0f;

    mbar_wait(&bar[0], 0);
    for (int kb = 0; kb < nkb; kb++) {
        const int st = kb & 1;
        const unsigned ph = (kb >> 1) & 1;
        const int64_t j0 = r0 + H_BM - (int64_t)(nkb - kb) * Q_BN;
        const bool skip = j0 > ilast || i0 >= T; /* every key follows every query of this warpgroup */
        mbar_wait(&bar[1 + st], ph);
        mbar_wait(&bar[3 + st], ph);
        if (!skip) {
            const unsigned kaddr = sm90_addr(sK + st * KB), vaddr = sm90_addr(sV + st * KB);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < DP / 16; ks++) {
                const uint64_t da = wgmma_desc(qaddr + (ks >> 2) * (H_BM * 128) + (ks & 3) * 32, 16, 1024);
                const uint64_t db = wgmma_desc(kaddr + (ks >> 2) * (Q_BN * 128) + (ks & 3) * 32, 16, 1024);
                wgmma_ss_n64(&sc[0][0], da, db, ks > 0);
            }
            wgmma_commit();
#pragma unroll
            for (int ks = 0; ks < DP / 16; ks++) {
                const uint64_t da = wgmma_desc(oaddr + (ks >> 2) * (H_BM * 128) + (ks & 3) * 32, 16, 1024);
                const uint64_t db = wgmma_desc(vaddr + (ks >> 2) * (Q_BN * 128) + (ks & 3) * 32, 16, 1024);
                wgmma_ss_n64(&dp[0][0], da, db, ks > 0);
            }
            wgmma_commit();
            wgmma_wait<1>(); /* S done; dP may still run: P meanwhile */
            reg_fence<Q_BN / 2>(&sc[0][0]);
            const bool full = j0 >= ds_last && j0 + Q_BN - 1 <= i0;
            const int jr = (int)(j0 - r0);
#pragma unroll
            for (int nt = 0; nt < Q_BN / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int hf = e >> 1;
                    bool ok = true;
                    if (!full) {
                        const int j = jr + nt * 8 + 2 * t4 + (e & 1);
                        ok = j <= irel[hf] && j >= dsr[hf];
                    }
                    sc[nt][e] = ok ? ul_ex2(fmaf(sc[nt][e], a.scale2, -l2[hf])) : 0.0f;
                }
            wgmma_wait<0>();
            reg_fence<Q_BN / 2>(&dp[0][0]);
            unsigned sa[Q_BN / 16][4];
#pragma unroll
            for (int nt = 0; nt < Q_BN / 8; nt++) {
                float ds[4];
#pragma unroll
                for (int e = 0; e < 4; e++) ds[e] = sc[nt][e] * (dp[nt][e] - dd[e >> 1]);
                const int kk = nt >> 1, hi = (nt & 1) * 2;
                sa[kk][hi] = ul_pack_bf16(ds[0], ds[1]);
                sa[kk][hi + 1] = ul_pack_bf16(ds[2], ds[3]);
            }
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < Q_BN / 16; kk++) {
                const uint64_t bk = wgmma_desc(kaddr + kk * 16 * 128, Q_BN * 128, 1024);
                if (DP == 128)
                    wgmma_rs_n128_tb(&dq[0][0], sa[kk], bk);
                else
                    wgmma_rs_n64_tb(&dq[0][0], sa[kk], bk);
            }
            wgmma_commit();
            wgmma_wait<0>();
            reg_fence<DP / 2>(&dq[0][0]);
            reg_fence_u<Q_BN / 4>(&sa[0][0]);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(&bar[5 + st]);
    }

#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int64_t i = r0 + irel[hf];
        if (i >= T) continue;
        bf16 *row = a.dq + i * a.dqs + h * DP;
#pragma unroll
        for (int nt = 0; nt < DP / 8; nt++)
            *(unsigned *)(row + nt * 8 + 2 * t4) =
                ul_pack_bf16(dq[nt][2 * hf] * a.scale, dq[nt][2 * hf + 1] * a.scale);
    }
#endif
}

/* dq[i, h d + c] = bf16(scale * dqacc[i][h][c]), four columns per thread (the fused backward) */
__global__ void k_attn_dq_convert(const HBwdArgs a, int64_t d) {
    const int64_t e = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4, hd = a.Hq * d;
    if (e >= a.T * hd) return;
    const int64_t i = e / hd, c = e - i * hd;
    const float4 x = *(const float4 *)(a.dqacc + e);
    uint2 y;
    y.x = ul_pack_bf16(x.x * a.scale, x.y * a.scale);
    y.y = ul_pack_bf16(x.z * a.scale, x.w * a.scale);
    *(uint2 *)(a.dq + i * a.dqs + c) = y;
}

/* dq of the launch's query heads from the DQ_BULK accumulator [nhk group][Tp / 64][64 d]
 * (fragment order, see k_attn_dkv_sm90): one float pair per thread */
template <int DP>
__global__ void k_attn_dq_convert_tiles(const HBwdArgs a) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, per = 32 * DP; /* pairs per tile */
    if (e >= a.nhk * a.group * a.Tp * DP / 2) return;
    const int64_t tile = e / per, ntile = a.Tp / 64;
    const int w = (int)(e - tile * per), lane = w & 31, k = (w >> 5) % (DP / 8), wg = (w >> 5) / (DP / 8);
    const int hf = k / (DP / 16), nt = k % (DP / 16), g = lane >> 2, t4 = lane & 3;
    const int64_t hr = tile / ntile, i = (tile - hr * ntile) * 64 + (wg & 3) * 16 + g + hf * 8;
    const int64_t h = a.hk0 * a.group + hr;
    if (i >= a.T) return;
    const float2 x = *(const float2 *)(a.dqacc + 2 * e);
    *(unsigned *)(a.dq + i * a.dqs + h * DP + (wg >> 2) * (DP / 2) + nt * 8 + 2 * t4) =
        ul_pack_bf16(x.x * a.scale, x.y * a.scale);
}

/* ---------------------------------------------------------------- host */

#ifdef UL_SM90A
/* cuTensorMapEncodeTiled, looked up through the runtime (linking libcuda would tie every
 * binary, CPU runs included, to the GPU driver's library) */
static PFN_cuTensorMapEncodeTiled_v12000 g_encode;

static CUresult encode_tiled(CUtensorMap *m, CUtensorMapDataType type, cuuint32_t rank, void *base,
                             const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                             const cuuint32_t *es, CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2) {
    if (!g_encode) {
        cudaDriverEntryPointQueryResult q;
        void *fn = NULL;
        CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
        UL_ASSERT(q == cudaDriverEntryPointSuccess && fn, "attention: the driver has no cuTensorMapEncodeTiled");
        g_encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    return g_encode(m, type, rank, base, dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, l2,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

/* 2-D map over f32 [H][Tp]: boxes of `rows` consecutive tokens of one head (zeros past Tp) */
static void make_map_f32(CUtensorMap *m, const float *base, int64_t Tp, int64_t H, int rows) {
    cuuint64_t dims[2] = {(cuuint64_t)Tp, (cuuint64_t)H};
    cuuint64_t strides[1] = {(cuuint64_t)Tp * 4};
    cuuint32_t box[2] = {(cuuint32_t)rows, 1};
    cuuint32_t es[2] = {1, 1};
    const CUresult r = encode_tiled(m, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)base, dims, strides, box, es,
                                    CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
    if (r != CUDA_SUCCESS)
        UL_FATAL("attention: cuTensorMapEncodeTiled (f32) failed: CUresult %d (Tp %lld H %lld)", (int)r,
                 (long long)Tp, (long long)H);
}

/* 3-D map over [T][H][d] rows of `stride` elements (head h at column h * d): boxes of
 * 64 columns x 1 head x `rows` rows, 128-byte swizzle, zeros outside the tensor. */
static void make_map(CUtensorMap *m, const void *base, int64_t T, int64_t H, int64_t d, int64_t stride, int rows) {
    cuuint64_t dims[3] = {(cuuint64_t)d, (cuuint64_t)H, (cuuint64_t)T};
    cuuint64_t strides[2] = {(cuuint64_t)d * 2, (cuuint64_t)stride * 2};
    cuuint32_t box[3] = {64, 1, (cuuint32_t)rows};
    cuuint32_t es[3] = {1, 1, 1};
    const CUresult r = encode_tiled(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)base, dims, strides, box, es,
                                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
    if (r != CUDA_SUCCESS)
        UL_FATAL("attention: cuTensorMapEncodeTiled failed: CUresult %d (T %lld H %lld d %lld stride %lld)", (int)r,
                 (long long)T, (long long)H, (long long)d, (long long)stride);
}

static int g_sm90 = -1; /* 1: this device runs the sm_90a kernels */

/* UL_ATTN_KERNEL (ul_attn_kernel_choice, kernels.h): unset or "default": the Hopper kernels
 * where they apply, the backward fused with dQ staged and added by TMA bulk reduce
 * (DQ_BULK; measured the fastest form at both head dims: bench/RESULTS.md; not bitwise
 * reproducible; query tiles of 128 rows at d = 64, of 64 at d = 128); "fused": the same;
 * "fused-red": the fused backward with dQ added by atomics from registers (the lab's
 * baseline); "deterministic": the two-kernel backward (bitwise reproducible); "simple":
 * the portable mma.sync kernels only; "simple-bwd": the Hopper forward, the portable
 * backward (sm90_enabled). Measured and retired (bench/RESULTS.md): persist (the default
 * as a persistent kernel with a dynamic schedule, commit 013f1d0: 1.03x with 64 packed
 * documents at d = 64, 0.95-0.99x at d = 128) */
static int sm90_fused_bwd(void) {
    const int k = ul_attn_kernel_choice();
    return k == UL_AK_FUSED_RED ? DQ_RED : k == UL_AK_DETERMINISTIC ? DQ_NONE : DQ_BULK;
}

/* UL_ATTN_FWD (ul_attn_fwd_choice): unset or "ovpp" (UL_AF_OVPP): the default, the
 * intra-warpgroup pipeline with the warpgroups in ping-pong, persistent with a dynamic
 * schedule (k_attn_fwd_ov_sm90; measured the faster at every point, bench/RESULTS.md);
 * "serial" (UL_AF_SERIAL, the kernel lab's baseline, bench/attention): S, softmax, P V in
 * turn in each consumer warpgroup, one CTA per task. Measured and retired
 * (bench/RESULTS.md): the default with one CTA per task (the default until the persistent
 * form, as ovpp-dyn, measured 1.03-1.05x it with 64 packed documents), ovpp-skip (tiles a
 * warpgroup does not see skipped by a branch in the loop; skipped outside it, as
 * ovpp-range, they won and are the default), ovpp-nw2
 * (two consumer warpgroups at d = 64), ovpp-ilp (the softmax's row max and sum in partial
 * chains), ovpp-ilpc (with it, O rescaled only when a row's max rose), ovpp-pinsr (O
 * rescaled under the next S, as FlashAttention-3 does: no gain over the default),
 * ovpp-persist (a persistent kernel, one CTA per SM taking tasks in snake-ordered rounds:
 * 0.95-0.99x the default on one document, 0.89x with 64 packed documents at d = 128). An
 * unknown value is refused at start-up (run/setup.c); here it would mean the default. */
static int sm90_fwd_variant(void) {
    const int v = ul_attn_fwd_choice();
    return v < 0 ? UL_AF_OVPP : v;
}

static int sm90_enabled(int bwd) {
    if (g_sm90 < 0) {
        g_sm90 = ul_cuda_state.cc == 90 && ul_cuda_state.smem_optin >= hdkv_smem(128, DQ_BULK) &&
                 ul_cuda_state.smem_optin >= hdkv_smem(64, DQ_BULK, 128);
        if (g_sm90) {
/* each kernel's dynamic shared memory (K: the instantiation, in parentheses) */
#define SET_SMEM(K, BYTES) \
    CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(BYTES)))
            SET_SMEM((k_attn_fwd_sm90<64, 3>), hfwd_smem(64, 3, 0));
            SET_SMEM((k_attn_fwd_sm90<128, 2>), hfwd_smem(128, 2, 0));
            SET_SMEM((k_attn_fwd_ov_sm90<64, 3>), hfwd_smem(64, 3, 1, 2));
            SET_SMEM((k_attn_fwd_ov_sm90<128, 2>), hfwd_smem(128, 2, 1, 2));
            SET_SMEM((k_attn_dkv_sm90<64, DQ_NONE>), hdkv_smem(64, DQ_NONE));
            SET_SMEM((k_attn_dkv_sm90<128, DQ_NONE>), hdkv_smem(128, DQ_NONE));
            SET_SMEM((k_attn_dkv_sm90<64, DQ_RED>), hdkv_smem(64, DQ_RED));
            SET_SMEM((k_attn_dkv_sm90<128, DQ_RED>), hdkv_smem(128, DQ_RED));
            SET_SMEM((k_attn_dkv_sm90<128, DQ_BULK>), hdkv_smem(128, DQ_BULK));
            SET_SMEM((k_attn_dkv_sm90<64, DQ_BULK, 128>), hdkv_smem(64, DQ_BULK, 128));
            SET_SMEM((k_attn_dq_sm90<64>), hdq_smem(64));
            SET_SMEM((k_attn_dq_sm90<128>), hdq_smem(128));
#undef SET_SMEM
        }
    }
    const int k = ul_attn_kernel_choice();
    if (k == UL_AK_SIMPLE || (bwd && k == UL_AK_SIMPLE_BWD)) return 0;
    return g_sm90;
}

static int aligned16(const void *p, int64_t stride) { return ((uintptr_t)p & 15u) == 0 && stride % 8 == 0; }
#endif

int ul_cuda_attention_fwd_sm90(void *o, int64_t os, float *lse, const void *q, int64_t qs, const void *k,
                               int64_t ks, const void *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv,
                                          int64_t d, const int64_t *cu_seqlens, int64_t n_docs, float scale) {
#ifdef UL_SM90A
    /* T below the largest TMA box (BM query rows: 192 at d = 64; 128 keys): the portable
     * kernels: a tensor map's box may not be larger than the tensor (test_cuda_kernels'
     * small-T cases) */
    if (!sm90_enabled(0) || (d != 64 && d != 128) || T > 0x7fffff00LL || Hq > 0x7fffffffLL || n_docs > 0x7fffffffLL)
        return 0;
    if (T < (d == 64 ? 192 : H_BN)) return 0;
    if (!aligned16(o, os) || !aligned16(q, qs) || !aligned16(k, ks) || !aligned16(v, vs)) return 0;
    CUtensorMap tq, tk, tv;
    /* query rows per CTA: three consumer warpgroups at d = 64 (1.27x the rate of two on
     * H200, serial kernel), two at d = 128 (the registers of three do not fit) */
    const int variant = sm90_fwd_variant();
    const int nw = d == 64 ? 3 : 2;
    make_map(&tq, q, T, Hq, d, qs, 64 * nw);
    make_map(&tk, k, T, Hkv, d, ks, H_BN);
    make_map(&tv, v, T, Hkv, d, vs, H_BN);
    HFwdArgs a;
    memset(&a, 0, sizeof a);
    a.o = (bf16 *)o;
    a.lse = lse;
    a.os = os;
    a.T = T;
    a.Hq = Hq;
    a.group = Hq / Hkv;
    a.nblk = (T + 64 * nw - 1) / (64 * nw);
    a.cu = cu_seqlens;
    a.n_docs = n_docs;
    a.scale2 = scale * 1.4426950408889634f;
    const int64_t grid = a.nblk * Hq;
    UL_ASSERT(grid <= 0x7fffffff, "attention: grid too large");
    cudaStream_t s = ul_cuda_state.stream;
    /* PIN: the ov kernel's pin area (FwdCta); NQ: its Q buffers. The ov kernel is persistent:
     * one CTA per SM at most (UL_ATTN_PERSIST_CTAS=n, fewer, for the tests: several tasks a
     * CTA at small shapes), its task counter zeroed first */
    int64_t pgrid = grid;
    if (variant == UL_AF_OVPP) {
        if (ul_cuda_state.n_sm > 0 && ul_cuda_state.n_sm < pgrid) pgrid = ul_cuda_state.n_sm;
        const char *epc = getenv("UL_ATTN_PERSIST_CTAS");
        const long long n = epc ? atoll(epc) : 0;
        if (n > 0 && n < pgrid) pgrid = n;
        if (!ul_cuda_state.fwd_task_ctr) CUDA_CHECK(cudaGetSymbolAddress(&ul_cuda_state.fwd_task_ctr, g_fwd_task_ctr));
        CUDA_CHECK(cudaMemsetAsync(ul_cuda_state.fwd_task_ctr, 0, sizeof(unsigned long long), s));
    }
#define FWD_LAUNCH(K, G, NT, DP, NW, PIN, NQ, ...) \
    K<<<(unsigned)(G), NT(NW), hfwd_smem(DP, NW, PIN, NQ), s>>>(tq, tk, tv, __VA_ARGS__)
    CUtensorMap to; /* the ov kernel's O stores: boxes of a warpgroup's 64 rows */
    make_map(&to, o, T, Hq, d, os, 64);
    if (d == 128) {
        if (variant == UL_AF_SERIAL) FWD_LAUNCH((k_attn_fwd_sm90<128, 2>), grid, HFWD_NT, 128, 2, 0, 1, a);
        else FWD_LAUNCH((k_attn_fwd_ov_sm90<128, 2>), pgrid, HOV_NT, 128, 2, 1, 2, to, a);
    } else {
        if (variant == UL_AF_SERIAL) FWD_LAUNCH((k_attn_fwd_sm90<64, 3>), grid, HFWD_NT, 64, 3, 0, 1, a);
        else FWD_LAUNCH((k_attn_fwd_ov_sm90<64, 3>), pgrid, HOV_NT, 64, 3, 1, 2, to, a);
    }
#undef FWD_LAUNCH
    CUDA_LAUNCH_CHECK();
    return 1;
#else
    (void)o, (void)os, (void)lse, (void)q, (void)qs, (void)k, (void)ks, (void)v, (void)vs, (void)T, (void)Hq;
    (void)Hkv, (void)d, (void)cu_seqlens, (void)n_docs, (void)scale;
    return 0;
#endif
}

int ul_cuda_attention_bwd_sm90(void *dq, int64_t dqs, void *dk, int64_t dks, void *dv, int64_t dvs, const void *dout,
                               int64_t dos, const void *q, int64_t qs, const void *k, int64_t ks, const void *v,
                               int64_t vs, const void *o, int64_t os, const float *lse, int64_t T, int64_t Hq,
                               int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs, float scale) {
#ifdef UL_SM90A
    /* T below the largest TMA box (128 rows: B_BK keys, H_BM and the d = 64 fused form's
     * query rows): the portable kernels, as for the forward */
    if (!sm90_enabled(1) || (d != 64 && d != 128) || T > 0x7fffff00LL || Hq > 0x7fffffffLL || T < 128 ||
        n_docs > 0x7fffffffLL)
        return 0;
    if (!aligned16(dq, dqs) || !aligned16(dk, dks) || !aligned16(dv, dvs) || !aligned16(dout, dos) ||
        !aligned16(q, qs) || !aligned16(k, ks) || !aligned16(v, vs))
        return 0;
    HBwdArgs a;
    memset(&a, 0, sizeof a);
    a.dq = (bf16 *)dq;
    a.dk = (bf16 *)dk;
    a.dv = (bf16 *)dv;
    a.o = (const bf16 *)o;
    a.dout = (const bf16 *)dout;
    a.lse = lse;
    a.dqs = dqs;
    a.dks = dks;
    a.dvs = dvs;
    a.os = os;
    a.dos = dos;
    a.T = T;
    a.Tp = (T + 63) / 64 * 64;
    a.Hq = Hq;
    a.group = Hq / Hkv;
    a.nblk = (T + H_BM - 1) / H_BM;
    a.cu = cu_seqlens;
    a.n_docs = n_docs;
    a.scale = scale;
    a.scale2 = scale * 1.4426950408889634f;
    const int fused = sm90_fused_bwd();
    /* DQ_RED: [T][Hq][d], one launch (the lab's baseline: not in the memory plan);
     * DQ_BULK: [the launch's query heads][Tp / 64][64 d] (k_attn_dkv_sm90), launches of kvl
     * key/value heads (ul_attn_dq_kv_heads, as the plan counts; UL_ATTN_DQ_HEADS=n, fewer,
     * for the tests) */
    int64_t kvl = fused == DQ_BULK ? ul_attn_dq_kv_heads(T, Hq, Hkv, d) : Hkv;
    const char *eh = getenv("UL_ATTN_DQ_HEADS");
    if (fused == DQ_BULK && eh && atoll(eh) > 0 && atoll(eh) < kvl) kvl = atoll(eh);
    const int64_t nacc = fused == DQ_BULK ? a.group * kvl * a.Tp * d : fused ? T * Hq * d : 0;
    a.DT = (float *)ul_cuda_scratch((size_t)(2 * Hq * a.Tp + nacc) * sizeof(float));
    a.L2T = a.DT + Hq * a.Tp;
    a.dqacc = fused ? a.L2T + Hq * a.Tp : NULL;
    /* boxes: dK/dV reads K, V in 128-row blocks and Q, dO in 64-row tiles (fused at d = 64: 128,
     * with lse2 and D); dQ the other way */
    const int bq = fused == DQ_BULK && d == 64 ? 128 : B_BQ;
    CUtensorMap tq64, tdo64, tk128, tv128, tq128, tdo128, tk64, tv64, tl, tdd, tdk128, tdv128;
    make_map(&tq64, q, T, Hq, d, qs, B_BQ);
    make_map(&tdo64, dout, T, Hq, d, dos, B_BQ);
    make_map(&tk128, k, T, Hkv, d, ks, B_BK);
    make_map(&tv128, v, T, Hkv, d, vs, B_BK);
    make_map(&tdk128, dk, T, Hkv, d, dks, B_BK); /* dK, dV stored in the K, V blocks' boxes */
    make_map(&tdv128, dv, T, Hkv, d, dvs, B_BK);
    make_map(&tq128, q, T, Hq, d, qs, H_BM);
    make_map(&tdo128, dout, T, Hq, d, dos, H_BM);
    make_map(&tk64, k, T, Hkv, d, ks, Q_BN);
    make_map(&tv64, v, T, Hkv, d, vs, Q_BN);
    make_map_f32(&tl, a.L2T, a.Tp, Hq, bq);
    make_map_f32(&tdd, a.DT, a.Tp, Hq, bq);
    cudaStream_t s = ul_cuda_state.stream;
    const int64_t nkblk = (T + B_BK - 1) / B_BK, gp = (T * Hq + 3) / 4, gk = nkblk * Hkv, gq = a.nblk * Hq;
    a.hk0 = 0;
    a.nhk = Hkv;
    UL_ASSERT(gp <= 0x7fffffff && gq <= 0x7fffffff, "attention: grid too large");
    k_attn_prep_sm90<<<(unsigned)gp, 128, 0, s>>>(a, (int)d);
    CUDA_LAUNCH_CHECK();
/* k_attn_dkv_sm90<DP, FQ, BQ> on G CTAs, Q and dO through the maps TQ, TDO (boxes of BQ rows) */
#define DKV_LAUNCH(DP, FQ, BQ, TQ, TDO, G)                                                                     \
    do {                                                                                                      \
        k_attn_dkv_sm90<DP, FQ, BQ><<<(unsigned)(G), B_NT, hdkv_smem(DP, FQ, BQ), s>>>(TQ, tk128, tv128, TDO, tl, \
                                                                                     tdd, tdk128, tdv128, a);  \
        CUDA_LAUNCH_CHECK();                                                                                  \
    } while (0)
    if (fused == DQ_BULK) {
        for (a.hk0 = 0; a.hk0 < Hkv; a.hk0 += kvl) {
            a.nhk = Hkv - a.hk0 < kvl ? Hkv - a.hk0 : kvl;
            const int64_t n = a.group * a.nhk * a.Tp * d, gt = (n / 2 + 255) / 256;
            UL_ASSERT(nkblk * a.nhk <= 0x7fffffff && gt <= 0x7fffffff, "attention: grid too large");
            CUDA_CHECK(cudaMemsetAsync(a.dqacc, 0, (size_t)n * sizeof(float), s));
            const int64_t g = nkblk * a.nhk;
            if (d == 128) {
                DKV_LAUNCH(128, DQ_BULK, B_BQ, tq64, tdo64, g);
                k_attn_dq_convert_tiles<128><<<(unsigned)gt, 256, 0, s>>>(a);
            } else { /* 128-row query tiles (H_BM = 128: the dQ kernel's maps are the 128-row boxes) */
                DKV_LAUNCH(64, DQ_BULK, 128, tq128, tdo128, g);
                k_attn_dq_convert_tiles<64><<<(unsigned)gt, 256, 0, s>>>(a);
            }
            CUDA_LAUNCH_CHECK();
        }
        return 1;
    }
    if (fused) {
        const int64_t n4 = T * Hq * d / 4, gc = (n4 + 255) / 256;
        UL_ASSERT(gc <= 0x7fffffff, "attention: grid too large");
        CUDA_CHECK(cudaMemsetAsync(a.dqacc, 0, (size_t)nacc * sizeof(float), s));
        if (d == 128)
            DKV_LAUNCH(128, DQ_RED, B_BQ, tq64, tdo64, gk);
        else
            DKV_LAUNCH(64, DQ_RED, B_BQ, tq64, tdo64, gk);
        k_attn_dq_convert<<<(unsigned)gc, 256, 0, s>>>(a, d);
    } else if (d == 128) {
        DKV_LAUNCH(128, DQ_NONE, B_BQ, tq64, tdo64, gk);
        k_attn_dq_sm90<128><<<(unsigned)gq, H_NT, hdq_smem(128), s>>>(tq128, tk64, tv64, tdo128, a);
    } else {
        DKV_LAUNCH(64, DQ_NONE, B_BQ, tq64, tdo64, gk);
        k_attn_dq_sm90<64><<<(unsigned)gq, H_NT, hdq_smem(64), s>>>(tq128, tk64, tv64, tdo128, a);
    }
#undef DKV_LAUNCH
    CUDA_LAUNCH_CHECK();
    return 1;
#else
    (void)dq, (void)dqs, (void)dk, (void)dks, (void)dv, (void)dvs, (void)dout, (void)dos, (void)q, (void)qs, (void)k;
    (void)ks, (void)v, (void)vs, (void)o, (void)os, (void)lse, (void)T, (void)Hq, (void)Hkv, (void)d, (void)cu_seqlens;
    (void)n_docs, (void)scale;
    return 0;
#endif
}
