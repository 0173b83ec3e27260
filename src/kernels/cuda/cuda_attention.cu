/* CUDA flash attention (forward with lse, backward), causal within documents, GQA, strided
 * THD rows, bf16 in/out, fp32 softmax and accumulation, never a T x T buffer.
 *
 * Tensor cores through mma.sync.m16n8k16 (bf16 -> fp32), fragments loaded from shared
 * memory with ldmatrix (.trans for the operands stored [k][n]). Shared-memory rows are
 * padded by 8 elements (16 bytes) so that the 8 row addresses of an ldmatrix hit distinct
 * bank groups. Tiles are filled with cp.async (16-byte chunks, two stages) when rows and
 * pointers are 16-byte aligned, by plain loads otherwise. The head dimension d <= 128 is
 * padded with zeros to DP in {32, 64, 96, 128} (zero columns change no dot product).
 *
 * Tiling is uniform in the token index (no alignment to documents, so the grid is known
 * without reading cu_seqlens on the host): a query block [r0, r0 + BM) visits keys
 * [docstart(r0), min(r0 + BM, T)); a key block [k0, k0 + BK) visits queries
 * [k0, docend(k0 + BK - 1)). Element masks (j <= i and same document) apply only to tiles
 * that are not entirely valid. Softmax works in log2 units: s2 = s * scale * log2(e).
 *
 *   forward  (4 warps x 16 MT query rows): online softmax, O and lse = (m2 + log2 l) ln 2.
 *   backward (FlashAttention-2):  D = rowsum(dO * O)   (k_attn_dot)
 *            dK, dV (4 warps x 16 MT keys; loops over the query heads of the kv group and
 *                    the query tiles; no atomics, deterministic)
 *            dQ     (4 warps x 16 MT query rows; loops over key tiles)
 *   P = exp2(s2 - lse2), dS = P (dP - D), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

#define AT_NW 4
#define AT_NT (AT_NW * 32)
#define AT_LOG2E 1.4426950408889634f
#define AT_LN2 0.6931471805599453f

/* ---------------------------------------------------------------- PTX helpers */

__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16(void *s, const void *g) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(s)), "l"(g));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}

/* c[16x8] += a[16x16] b[16x8], bf16 inputs, fp32 accumulators */
__device__ __forceinline__ void mma16816(float *c, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Fragment addresses inside a row-major smem tile with LD elements per row (lane = 0..31).
 *  A operand, rows [r0, r0+16) x cols [c0, c0+16)                   -> a[0..3]
 *  B operand from a tile stored [n][k] (rows n0..n0+15, cols k0..k0+15) -> b0,b1 of n-tile n0,
 *    b0,b1 of n-tile n0+8 (ldsm_x4)
 *  B operand from a tile stored [k][n] (rows k0.., cols n0..) -> same order (ldsm_x4_t) */
template <int LD>
__device__ __forceinline__ const bf16 *frag_a(const bf16 *s, int r0, int c0, int lane) {
    return s + (r0 + (lane & 15)) * LD + c0 + (lane >> 4) * 8;
}
template <int LD>
__device__ __forceinline__ const bf16 *frag_b_nk(const bf16 *s, int n0, int k0, int lane) {
    return s + (n0 + (lane & 7) + ((lane >> 4) & 1) * 8) * LD + k0 + ((lane >> 3) & 1) * 8;
}
template <int LD>
__device__ __forceinline__ const bf16 *frag_b_kn(const bf16 *s, int k0, int n0, int lane) {
    return s + (k0 + (lane & 15)) * LD + n0 + (lane >> 4) * 8;
}

/* ---------------------------------------------------------------- tiles */

/* smem[r][c] = g[(row0 + r) * gs + c] for row0 + r < rend and c < d, else 0; R rows x DP cols.
 * vec: 16-byte cp.async chunks (d % 8 == 0, gs % 8 == 0, g 16-byte aligned). */
template <int R, int DP>
__device__ __forceinline__ void load_tile(bf16 *s, const bf16 *__restrict__ g, int64_t gs, int64_t row0,
                                          int64_t rend, int d, bool vec) {
    constexpr int LD = DP + 8;
    if (vec) {
        constexpr int CH = DP / 8;
        for (int u = threadIdx.x; u < R * CH; u += AT_NT) {
            int r = u / CH, c = (u % CH) * 8;
            bf16 *dst = s + r * LD + c;
            int64_t row = row0 + r;
            if (row < rend && c < d)
                cp_async16(dst, g + row * gs + c);
            else
                *(uint4 *)dst = make_uint4(0, 0, 0, 0);
        }
    } else {
        for (int u = threadIdx.x; u < R * DP; u += AT_NT) {
            int r = u / DP, c = u % DP;
            int64_t row = row0 + r;
            s[r * LD + c] = (row < rend && c < d) ? g[row * gs + c] : __float2bfloat16_rn(0.0f);
        }
    }
}

/* One warp stores its 16 staged rows s[r0w .. r0w+16) to g rows (row0 + r) < rend. */
template <int DP>
__device__ __forceinline__ void store_rows(bf16 *__restrict__ g, int64_t gs, const bf16 *s, int r0w, int64_t row0,
                                           int64_t rend, int d, bool vec, int lane) {
    constexpr int LD = DP + 8;
    if (vec) {
        constexpr int CH = DP / 8;
        for (int u = lane; u < 16 * CH; u += 32) {
            int r = r0w + u / CH, c = (u % CH) * 8;
            int64_t row = row0 + r;
            if (row < rend && c < d) *(uint4 *)(g + row * gs + c) = *(const uint4 *)(s + r * LD + c);
        }
    } else {
        for (int u = lane; u < 16 * DP; u += 32) {
            int r = r0w + u / DP, c = u % DP;
            int64_t row = row0 + r;
            if (row < rend && c < d) g[row * gs + c] = s[r * LD + c];
        }
    }
}

/* A warp's 16 x DP fp32 accumulator (C fragments of DP/8 n-tiles), scaled, to bf16 rows of s. */
template <int DP>
__device__ __forceinline__ void stage_acc(bf16 *s, int r0w, const float (*acc)[4], float mul0, float mul1,
                                          int lane) {
    constexpr int LD = DP + 8;
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++) {
        int c = nt * 8 + 2 * t4;
        *(unsigned *)(s + (r0w + g) * LD + c) = ul_pack_bf16(acc[nt][0] * mul0, acc[nt][1] * mul0);
        *(unsigned *)(s + (r0w + g + 8) * LD + c) = ul_pack_bf16(acc[nt][2] * mul1, acc[nt][3] * mul1);
    }
}

/* ---------------------------------------------------------------- arguments */

typedef struct {
    bf16 *o, *dq, *dk, *dv;
    const bf16 *q, *k, *v, *dout, *oc;
    float *lse;
    const float *lsec;
    float *D; /* [T, Hq] rowsum(dO * O) */
    int64_t os, qs, ks, vs, dqs, dks, dvs, dos;
    int64_t T, Hq, Hkv, group, nblk;
    const int64_t *cu;
    int64_t n_docs;
    int d;
    float scale, scale2; /* scale, scale * log2(e) */
    bool vq, vk, vv, vo, vdo, vdq, vdk, vdv;
} AttnArgs;

/* ---------------------------------------------------------------- forward */

/* MT m-tiles of 16 query rows per warp (BM = 4 warps x 16 MT rows per CTA): every K and V
 * fragment read from shared memory feeds MT tensor-core products, which is what bounds
 * this kernel (ldmatrix bandwidth). Q fragments are re-read from shared memory per key
 * block, so registers hold only the MT x DP output and MT x BN score accumulators. */
template <int DP, int MT, int BN>
__global__ void __launch_bounds__(AT_NT) k_attn_fwd(const AttnArgs a) {
    constexpr int LD = DP + 8, BM = AT_NW * 16 * MT;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = (bf16 *)smem_raw;      // [BM][LD]
    bf16 *sK = sQ + BM * LD;          // [2][BN][LD]
    bf16 *sV = sK + 2 * BN * LD;      // [2][BN][LD]

    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int64_t task = blockIdx.x;
    const int64_t h = task % a.Hq, qb = a.nblk - 1 - task / a.Hq; /* longest blocks first */
    const int64_t hk = h / a.group;
    const int64_t r0 = qb * BM;
    const int64_t T = a.T;
    const int64_t kend = r0 + BM < T ? r0 + BM : T;
    const int64_t kstart = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, r0));
    const int64_t ds_last = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, kend - 1));
    const int wr0 = w * 16 * MT; /* this warp's first row inside the block */
    int dsr[MT][2];              /* document start of rows (g, g + 8) of each m-tile, relative to r0 */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int64_t i = r0 + wr0 + mt * 16 + g + hf * 8;
            dsr[mt][hf] = (int)(__ldg(a.cu + ul_doc_of(a.cu, a.n_docs, i < T ? i : T - 1)) - r0);
        }

    const bf16 *qg = a.q + h * a.d, *kg = a.k + hk * a.d, *vg = a.v + hk * a.d;
    const int nkb = (int)((kend - kstart + BN - 1) / BN);

    load_tile<BM, DP>(sQ, qg, a.qs, r0, T, a.d, a.vq);
    load_tile<BN, DP>(sK, kg, a.ks, kstart, kend, a.d, a.vk);
    load_tile<BN, DP>(sV, vg, a.vs, kstart, kend, a.d, a.vv);
    cp_async_commit();

    float oacc[MT][DP / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < DP / 8; i++) oacc[mt][i][0] = oacc[mt][i][1] = oacc[mt][i][2] = oacc[mt][i][3] = 0.0f;
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) mrow[mt][0] = mrow[mt][1] = -INFINITY, lrow[mt][0] = lrow[mt][1] = 0.0f;

    for (int kb = 0; kb < nkb; kb++) {
        const int st = kb & 1;
        if (kb + 1 < nkb) {
            const int64_t jn = kstart + (int64_t)(kb + 1) * BN;
            load_tile<BN, DP>(sK + (st ^ 1) * BN * LD, kg, a.ks, jn, kend, a.d, a.vk);
            load_tile<BN, DP>(sV + (st ^ 1) * BN * LD, vg, a.vs, jn, kend, a.d, a.vv);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *cK = sK + st * BN * LD, *cV = sV + st * BN * LD;
        const int64_t j0 = kstart + (int64_t)kb * BN;

        float sc[MT][BN / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < BN / 8; i++) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < DP / 16; ks++) {
            unsigned qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                ldsm_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], frag_a<LD>(sQ, wr0 + mt * 16, ks * 16, lane));
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, frag_b_nk<LD>(cK, np * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(sc[mt][2 * np], qa[mt], b0, b1);
                    mma16816(sc[mt][2 * np + 1], qa[mt], b2, b3);
                }
            }
        }
        const bool full = j0 >= ds_last && j0 + BN - 1 <= r0;
        const int jr = (int)(j0 - r0);
        float al[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int ir = wr0 + mt * 16 + g;
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = sc[mt][nt][e];
                    if (!full) { /* offsets relative to r0 fit in int (T < 2^31) */
                        const int j = jr + nt * 8 + 2 * t4 + (e & 1);
                        const int i = e < 2 ? ir : ir + 8, ds = dsr[mt][e >> 1];
                        if (!(j <= i && j >= ds)) x = -INFINITY;
                    }
                    sc[mt][nt][e] = x;
                }
                mx0 = fmaxf(mx0, fmaxf(sc[mt][nt][0], sc[mt][nt][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[mt][nt][2], sc[mt][nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* raw scores; the running max m is kept in scaled log2 units: m = max(s) * scale2 */
            const float mn0 = fmaxf(mrow[mt][0], mx0 * a.scale2), mn1 = fmaxf(mrow[mt][1], mx1 * a.scale2);
            const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
            al[mt][0] = ul_ex2(mrow[mt][0] - mu0);
            al[mt][1] = ul_ex2(mrow[mt][1] - mu1);
            mrow[mt][0] = mn0;
            mrow[mt][1] = mn1;
            float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) { /* exp2(s * scale2 - m): one FFMA + ex2 per score */
                sc[mt][nt][0] = ul_ex2(fmaf(sc[mt][nt][0], a.scale2, -mu0));
                sc[mt][nt][1] = ul_ex2(fmaf(sc[mt][nt][1], a.scale2, -mu0));
                sc[mt][nt][2] = ul_ex2(fmaf(sc[mt][nt][2], a.scale2, -mu1));
                sc[mt][nt][3] = ul_ex2(fmaf(sc[mt][nt][3], a.scale2, -mu1));
                rs0 += sc[mt][nt][0] + sc[mt][nt][1];
                rs1 += sc[mt][nt][2] + sc[mt][nt][3];
            }
            lrow[mt][0] = lrow[mt][0] * al[mt][0] + rs0;
            lrow[mt][1] = lrow[mt][1] * al[mt][1] + rs1;
#pragma unroll
            for (int nt = 0; nt < DP / 8; nt++) {
                oacc[mt][nt][0] *= al[mt][0];
                oacc[mt][nt][1] *= al[mt][0];
                oacc[mt][nt][2] *= al[mt][1];
                oacc[mt][nt][3] *= al[mt][1];
            }
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = ul_pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = ul_pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = ul_pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = ul_pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int np = 0; np < DP / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, frag_b_kn<LD>(cV, kk * 16, np * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(oacc[mt][2 * np], pa[mt], b0, b1);
                    mma16816(oacc[mt][2 * np + 1], pa[mt], b2, b3);
                }
            }
        }
        __syncthreads(); /* the next iteration refills this stage */
    }

    /* this warp's rows of sQ are read by this warp only: stage the output there */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = lrow[mt][0], l1 = lrow[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
        const int64_t ia = r0 + wr0 + mt * 16 + g, ib = ia + 8;
        if (t4 == 0) {
            if (ia < T) a.lse[ia * a.Hq + h] = l0 > 0.0f ? (mrow[mt][0] + __log2f(l0)) * AT_LN2 : -INFINITY;
            if (ib < T) a.lse[ib * a.Hq + h] = l1 > 0.0f ? (mrow[mt][1] + __log2f(l1)) * AT_LN2 : -INFINITY;
        }
        stage_acc<DP>(sQ, wr0 + mt * 16, oacc[mt], inv0, inv1, lane);
    }
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < MT; mt++) store_rows<DP>(a.o + h * a.d, a.os, sQ, wr0 + mt * 16, r0, T, a.d, a.vo, lane);
}

/* ---------------------------------------------------------------- backward: D = rowsum(dO * O) */

__global__ void k_attn_dot(const AttnArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t u = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (u >= a.T * a.Hq) return;
    const int64_t i = u / a.Hq, h = u - i * a.Hq;
    const bf16 *o = a.oc + i * a.os + h * a.d, *g = a.dout + i * a.dos + h * a.d;
    float s = 0.0f;
    for (int e = lane; e < a.d; e += 32) s += __bfloat162float(o[e]) * __bfloat162float(g[e]);
    s = ul_warp_sum(s);
    if (lane == 0) a.D[u] = s;
}

/* ---------------------------------------------------------------- backward: dQ */

template <int DP, int MT, int BN>
__global__ void __launch_bounds__(AT_NT) k_attn_bwd_dq(const AttnArgs a) {
    constexpr int LD = DP + 8, BM = AT_NW * 16 * MT;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = (bf16 *)smem_raw;   // [BM][LD]
    bf16 *sO = sQ + BM * LD;       // [BM][LD]   dO
    bf16 *sK = sO + BM * LD;       // [2][BN][LD]
    bf16 *sV = sK + 2 * BN * LD;   // [2][BN][LD]

    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int64_t task = blockIdx.x;
    const int64_t h = task % a.Hq, qb = a.nblk - 1 - task / a.Hq;
    const int64_t hk = h / a.group;
    const int64_t r0 = qb * BM;
    const int64_t T = a.T;
    const int64_t kend = r0 + BM < T ? r0 + BM : T;
    const int64_t kstart = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, r0));
    const int64_t ds_last = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, kend - 1));
    const int wr0 = w * 16 * MT;
    int dsr[MT][2];       /* document start of rows (g, g + 8) of each m-tile, relative to r0 */
    float lsr[MT][2], Dr[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int64_t i = r0 + wr0 + mt * 16 + g + hf * 8;
            dsr[mt][hf] = (int)(__ldg(a.cu + ul_doc_of(a.cu, a.n_docs, i < T ? i : T - 1)) - r0);
            lsr[mt][hf] = i < T ? a.lsec[i * a.Hq + h] * AT_LOG2E : 0.0f;
            Dr[mt][hf] = i < T ? a.D[i * a.Hq + h] : 0.0f;
        }

    const bf16 *kg = a.k + hk * a.d, *vg = a.v + hk * a.d;
    const int nkb = (int)((kend - kstart + BN - 1) / BN);

    load_tile<BM, DP>(sQ, a.q + h * a.d, a.qs, r0, T, a.d, a.vq);
    load_tile<BM, DP>(sO, a.dout + h * a.d, a.dos, r0, T, a.d, a.vdo);
    load_tile<BN, DP>(sK, kg, a.ks, kstart, kend, a.d, a.vk);
    load_tile<BN, DP>(sV, vg, a.vs, kstart, kend, a.d, a.vv);
    cp_async_commit();

    float acc[MT][DP / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < DP / 8; i++) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.0f;

    for (int kb = 0; kb < nkb; kb++) {
        const int st = kb & 1;
        if (kb + 1 < nkb) {
            const int64_t jn = kstart + (int64_t)(kb + 1) * BN;
            load_tile<BN, DP>(sK + (st ^ 1) * BN * LD, kg, a.ks, jn, kend, a.d, a.vk);
            load_tile<BN, DP>(sV + (st ^ 1) * BN * LD, vg, a.vs, jn, kend, a.d, a.vv);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *cK = sK + st * BN * LD, *cV = sV + st * BN * LD;
        const int64_t j0 = kstart + (int64_t)kb * BN;

        float sc[MT][BN / 8][4], dp[MT][BN / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < BN / 8; i++) {
                sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
                dp[mt][i][0] = dp[mt][i][1] = dp[mt][i][2] = dp[mt][i][3] = 0.0f;
            }
#pragma unroll
        for (int ks = 0; ks < DP / 16; ks++) {
            unsigned qa[MT][4], oa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                ldsm_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], frag_a<LD>(sQ, wr0 + mt * 16, ks * 16, lane));
                ldsm_x4(oa[mt][0], oa[mt][1], oa[mt][2], oa[mt][3], frag_a<LD>(sO, wr0 + mt * 16, ks * 16, lane));
            }
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, frag_b_nk<LD>(cK, np * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(sc[mt][2 * np], qa[mt], b0, b1);
                    mma16816(sc[mt][2 * np + 1], qa[mt], b2, b3);
                }
                ldsm_x4(b0, b1, b2, b3, frag_b_nk<LD>(cV, np * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(dp[mt][2 * np], oa[mt], b0, b1);
                    mma16816(dp[mt][2 * np + 1], oa[mt], b2, b3);
                }
            }
        }
        const bool full = j0 >= ds_last && j0 + BN - 1 <= r0;
        const int jr = (int)(j0 - r0);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int ir = wr0 + mt * 16 + g;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = ul_ex2(fmaf(sc[mt][nt][e], a.scale2, -lsr[mt][e >> 1]));
                    if (!full) {
                        const int j = jr + nt * 8 + 2 * t4 + (e & 1);
                        const int i = e < 2 ? ir : ir + 8, ds = dsr[mt][e >> 1];
                        if (!(j <= i && j >= ds)) p = 0.0f;
                    }
                    sc[mt][nt][e] = p * (dp[mt][nt][e] - Dr[mt][e >> 1]); /* dS */
                }
            }
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = ul_pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = ul_pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = ul_pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = ul_pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int np = 0; np < DP / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, frag_b_kn<LD>(cK, kk * 16, np * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(acc[mt][2 * np], pa[mt], b0, b1);
                    mma16816(acc[mt][2 * np + 1], pa[mt], b2, b3);
                }
            }
        }
        __syncthreads();
    }
    /* every warp is past its last read of sQ (the loop ends with a barrier) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) stage_acc<DP>(sQ, wr0 + mt * 16, acc[mt], a.scale, a.scale, lane);
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < MT; mt++) store_rows<DP>(a.dq + h * a.d, a.dqs, sQ, wr0 + mt * 16, r0, T, a.d, a.vdq, lane);
}

/* ---------------------------------------------------------------- backward: dK, dV */

/* Fills stage st of the dK/dV kernel's query buffers with tile `it` = (head of the kv
 * group) * nqt + (query tile): Q and dO rows, lse (log2 units) and D. */
template <int DP, int BQ>
__device__ __forceinline__ void load_q_tile(const AttnArgs &a, bf16 *sQ, bf16 *sO, float *sL, float *sD, int64_t hk,
                                            int64_t k0, int64_t qend, int nqt, int it, int st) {
    constexpr int LD = DP + 8;
    const int64_t h = hk * a.group + it / nqt;
    const int64_t i0 = k0 + (int64_t)(it % nqt) * BQ;
    load_tile<BQ, DP>(sQ + st * BQ * LD, a.q + h * a.d, a.qs, i0, qend, a.d, a.vq);
    load_tile<BQ, DP>(sO + st * BQ * LD, a.dout + h * a.d, a.dos, i0, qend, a.d, a.vdo);
    for (int r = threadIdx.x; r < BQ; r += AT_NT) {
        const int64_t i = i0 + r;
        sL[st * BQ + r] = i < qend ? a.lsec[i * a.Hq + h] * AT_LOG2E : 0.0f;
        sD[st * BQ + r] = i < qend ? a.D[i * a.Hq + h] : 0.0f;
    }
}

template <int DP, int MT, int BQ>
__global__ void __launch_bounds__(AT_NT) k_attn_bwd_dkv(const AttnArgs a) {
    constexpr int LD = DP + 8, BK = AT_NW * 16 * MT;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sK = (bf16 *)smem_raw;   // [BK][LD]
    bf16 *sV = sK + BK * LD;       // [BK][LD]
    bf16 *sQ = sV + BK * LD;       // [2][BQ][LD]
    bf16 *sO = sQ + 2 * BQ * LD;   // [2][BQ][LD]  dO
    float *sL = (float *)(sO + 2 * BQ * LD);  // [2][BQ]  lse2
    float *sD = sL + 2 * BQ;                  // [2][BQ]  D

    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int64_t task = blockIdx.x;
    const int64_t hk = task % a.Hkv, kb = task / a.Hkv; /* first (longest) key blocks first */
    const int64_t k0 = kb * BK;
    const int64_t T = a.T;
    const int64_t klast = (k0 + BK < T ? k0 + BK : T) - 1;
    const int64_t qend = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, klast) + 1);
    const int64_t de_first = __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, k0) + 1);
    const bool keys_in = k0 + BK <= T;
    const int wk0 = w * 16 * MT; /* this warp's first key inside the block */
    int der[MT][2]; /* document end of keys (g, g + 8) of each m-tile, relative to k0 (<= 0: none valid) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int64_t j = k0 + wk0 + mt * 16 + g + hf * 8;
            der[mt][hf] = (int)((j < T ? __ldg(a.cu + ul_doc_of(a.cu, a.n_docs, j) + 1) : 0) - k0);
        }

    const bf16 *kg = a.k + hk * a.d, *vg = a.v + hk * a.d;
    const int nqt = (int)((qend - k0 + BQ - 1) / BQ);
    const int nit = nqt * (int)a.group;

    load_tile<BK, DP>(sK, kg, a.ks, k0, T, a.d, a.vk);
    load_tile<BK, DP>(sV, vg, a.vs, k0, T, a.d, a.vv);

    load_q_tile<DP, BQ>(a, sQ, sO, sL, sD, hk, k0, qend, nqt, 0, 0);
    cp_async_commit();

    float dka[MT][DP / 8][4], dva[MT][DP / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < DP / 8; i++) {
            dka[mt][i][0] = dka[mt][i][1] = dka[mt][i][2] = dka[mt][i][3] = 0.0f;
            dva[mt][i][0] = dva[mt][i][1] = dva[mt][i][2] = dva[mt][i][3] = 0.0f;
        }

    for (int it = 0; it < nit; it++) {
        const int st = it & 1;
        if (it + 1 < nit) {
            load_q_tile<DP, BQ>(a, sQ, sO, sL, sD, hk, k0, qend, nqt, it + 1, st ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *cQ = sQ + st * BQ * LD, *cO = sO + st * BQ * LD;
        const float *cL = sL + st * BQ, *cD = sD + st * BQ;
        const int64_t i0 = k0 + (int64_t)(it % nqt) * BQ;
        const int ir = (int)(i0 - k0);

        /* S^T = K Q^T and dP^T = V dO^T: 16 MT keys x BQ queries per warp */
        float sc[MT][BQ / 8][4], dp[MT][BQ / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < BQ / 8; i++) {
                sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
                dp[mt][i][0] = dp[mt][i][1] = dp[mt][i][2] = dp[mt][i][3] = 0.0f;
            }
#pragma unroll
        for (int ks = 0; ks < DP / 16; ks++) {
            unsigned ka[MT][4], va[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                ldsm_x4(ka[mt][0], ka[mt][1], ka[mt][2], ka[mt][3], frag_a<LD>(sK, wk0 + mt * 16, ks * 16, lane));
                ldsm_x4(va[mt][0], va[mt][1], va[mt][2], va[mt][3], frag_a<LD>(sV, wk0 + mt * 16, ks * 16, lane));
            }
#pragma unroll
            for (int np = 0; np < BQ / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, frag_b_nk<LD>(cQ, np * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(sc[mt][2 * np], ka[mt], b0, b1);
                    mma16816(sc[mt][2 * np + 1], ka[mt], b2, b3);
                }
                ldsm_x4(b0, b1, b2, b3, frag_b_nk<LD>(cO, np * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(dp[mt][2 * np], va[mt], b0, b1);
                    mma16816(dp[mt][2 * np + 1], va[mt], b2, b3);
                }
            }
        }
        const bool full = keys_in && i0 >= k0 + BK - 1 && i0 + BQ - 1 < de_first && i0 + BQ <= qend;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int jr = wk0 + mt * 16 + g;
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int c = nt * 8 + 2 * t4 + (e & 1);
                    float p = ul_ex2(fmaf(sc[mt][nt][e], a.scale2, -cL[c]));
                    if (!full) { /* offsets relative to k0 */
                        const int i = ir + c;
                        const int j = e < 2 ? jr : jr + 8, de = der[mt][e >> 1];
                        if (!(i >= j && i < de)) p = 0.0f;
                    }
                    sc[mt][nt][e] = p;                           /* P^T */
                    dp[mt][nt][e] = p * (dp[mt][nt][e] - cD[c]); /* dS^T */
                }
            }
        }
        /* dV += P^T dO, dK += dS^T Q */
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            unsigned pa[MT][4], sa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = ul_pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = ul_pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = ul_pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = ul_pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
                sa[mt][0] = ul_pack_bf16(dp[mt][2 * kk][0], dp[mt][2 * kk][1]);
                sa[mt][1] = ul_pack_bf16(dp[mt][2 * kk][2], dp[mt][2 * kk][3]);
                sa[mt][2] = ul_pack_bf16(dp[mt][2 * kk + 1][0], dp[mt][2 * kk + 1][1]);
                sa[mt][3] = ul_pack_bf16(dp[mt][2 * kk + 1][2], dp[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int np = 0; np < DP / 16; np++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, frag_b_kn<LD>(cO, kk * 16, np * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(dva[mt][2 * np], pa[mt], b0, b1);
                    mma16816(dva[mt][2 * np + 1], pa[mt], b2, b3);
                }
                ldsm_x4_t(b0, b1, b2, b3, frag_b_kn<LD>(cQ, kk * 16, np * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(dka[mt][2 * np], sa[mt], b0, b1);
                    mma16816(dka[mt][2 * np + 1], sa[mt], b2, b3);
                }
            }
        }
        __syncthreads();
    }
    /* nit >= 1 (qend > k0): the last iteration waited for every copy and ended with a barrier */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        stage_acc<DP>(sK, wk0 + mt * 16, dka[mt], a.scale, a.scale, lane);
        stage_acc<DP>(sV, wk0 + mt * 16, dva[mt], 1.0f, 1.0f, lane);
    }
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        store_rows<DP>(a.dk + hk * a.d, a.dks, sK, wk0 + mt * 16, k0, T, a.d, a.vdk, lane);
        store_rows<DP>(a.dv + hk * a.d, a.dvs, sV, wk0 + mt * 16, k0, T, a.d, a.vdv, lane);
    }
}

/* ---------------------------------------------------------------- host side */

/* forward: MT = 2 m-tiles per warp (128 query rows per CTA) */
#define AT_FWD_MT 2
/* keys per step: 32 for head dims above 64 (the score and output accumulators of two
 * m-tiles must fit in registers without spilling), else 64 */
#define AT_FWD_BN(DP) ((DP) > 64 ? 32 : 64)

static size_t fwd_smem_v(int DP, int MT, int BN) { return (size_t)(AT_NW * 16 * MT + 4 * BN) * (DP + 8) * sizeof(bf16); }

template <int DP, int MT, int BN>
static void fwd_attr(void) {
    CUDA_CHECK(cudaFuncSetAttribute(k_attn_fwd<DP, MT, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)fwd_smem_v(DP, MT, BN)));
}

template <int DP>
static void launch_fwd(AttnArgs &a, cudaStream_t s) {
    constexpr int MT = AT_FWD_MT, BN = AT_FWD_BN(DP);
    const int64_t BM = AT_NW * 16 * MT;
    a.nblk = (a.T + BM - 1) / BM;
    const int64_t grid = a.nblk * a.Hq;
    UL_ASSERT(grid <= 0x7fffffff, "attention: grid too large");
    k_attn_fwd<DP, MT, BN><<<(unsigned)grid, AT_NT, fwd_smem_v(DP, MT, BN), s>>>(a);
}

/* backward tiles (measured on H200, T = 32K: the best of MT 1/2 x BN/BQ 16/32/64 without spills):
 * head dim <= 64: dQ with 2 m-tiles per warp and 64 keys per step, dK/dV with 2 m-tiles of keys
 * per warp and 32 queries per step; above 64 the dK/dV accumulators of 2 m-tiles do not fit
 * in registers: dQ 2 m-tiles x 32 keys, dK/dV 1 m-tile x 32 queries. */
#define AT_DQ_MT 2
#define AT_DQ_BN(DP) ((DP) <= 64 ? 64 : 32)
#define AT_DKV_MT(DP) ((DP) <= 64 ? 2 : 1)
#define AT_DKV_BQ 32
static size_t dq_smem_v(int DP, int MT, int BN) { return (size_t)(2 * AT_NW * 16 * MT + 4 * BN) * (DP + 8) * sizeof(bf16); }
static size_t dkv_smem_v(int DP, int MT, int BQ) {
    return (size_t)(2 * AT_NW * 16 * MT + 4 * BQ) * (DP + 8) * sizeof(bf16) + (size_t)4 * BQ * sizeof(float);
}
template <int DP, int MT, int BN>
static void dq_attr(void) {
    CUDA_CHECK(cudaFuncSetAttribute(k_attn_bwd_dq<DP, MT, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)dq_smem_v(DP, MT, BN)));
}
template <int DP, int MT, int BQ>
static void dkv_attr(void) {
    CUDA_CHECK(cudaFuncSetAttribute(k_attn_bwd_dkv<DP, MT, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)dkv_smem_v(DP, MT, BQ)));
}
template <int DP, int MT, int BN>
static void launch_dq(AttnArgs a, cudaStream_t s) {
    const int64_t BM = AT_NW * 16 * MT;
    a.nblk = (a.T + BM - 1) / BM;
    const int64_t gq = a.nblk * a.Hq;
    UL_ASSERT(gq <= 0x7fffffff, "attention: grid too large");
    k_attn_bwd_dq<DP, MT, BN><<<(unsigned)gq, AT_NT, dq_smem_v(DP, MT, BN), s>>>(a);
    CUDA_LAUNCH_CHECK();
}
template <int DP, int MT, int BQ>
static void launch_dkv(const AttnArgs &a, cudaStream_t s) {
    const int64_t BK = AT_NW * 16 * MT;
    const int64_t gk = ((a.T + BK - 1) / BK) * a.Hkv;
    UL_ASSERT(gk <= 0x7fffffff, "attention: grid too large");
    k_attn_bwd_dkv<DP, MT, BQ><<<(unsigned)gk, AT_NT, dkv_smem_v(DP, MT, BQ), s>>>(a);
    CUDA_LAUNCH_CHECK();
}

template <int DP>
static void set_smem_attrs(void) {
    fwd_attr<DP, AT_FWD_MT, AT_FWD_BN(DP)>();
    dq_attr<DP, AT_DQ_MT, AT_DQ_BN(DP)>();
    dkv_attr<DP, AT_DKV_MT(DP), AT_DKV_BQ>();
}

void ul_cuda_attention_init(void) {
    const size_t need = dq_smem_v(128, AT_DQ_MT, AT_DQ_BN(128));
    UL_ASSERT(need <= ul_cuda_state.smem_optin,
              "attention: device allows %zu bytes of shared memory per block, the kernels need %zu",
              ul_cuda_state.smem_optin, need);
    set_smem_attrs<32>();
    set_smem_attrs<64>();
    set_smem_attrs<96>();
    set_smem_attrs<128>();
}

static int pad_dim(int64_t d) {
    UL_ASSERT(d >= 1 && d <= 128, "attention: head dim %lld unsupported (1..128)", (long long)d);
    return d <= 32 ? 32 : d <= 64 ? 64 : d <= 96 ? 96 : 128;
}

static bool vec_ok(const void *p, int64_t stride, int64_t d) {
    return d % 8 == 0 && stride % 8 == 0 && ((uintptr_t)p & 15u) == 0;
}

static void check_shape(int64_t T, int64_t Hq, int64_t Hkv, int64_t d, int64_t n_docs) {
    UL_ASSERT(T >= 0 && Hq > 0 && Hkv > 0 && d > 0 && Hq % Hkv == 0 && n_docs >= 1,
              "attention: bad shape T %lld Hq %lld Hkv %lld d %lld n_docs %lld", (long long)T, (long long)Hq,
              (long long)Hkv, (long long)d, (long long)n_docs);
}

static void attention_fwd_args(void *o, int64_t os, float *lse, const void *q, int64_t qs, const void *k, int64_t ks,
                           const void *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                           const int64_t *cu_seqlens, int64_t n_docs, float scale) {
    check_shape(T, Hq, Hkv, d, n_docs);
    if (T == 0) return;
    if (ul_cuda_attention_fwd_sm90(o, os, lse, q, qs, k, ks, v, vs, T, Hq, Hkv, d, cu_seqlens, n_docs, scale)) return;
    AttnArgs a;
    memset(&a, 0, sizeof a);
    a.o = (bf16 *)o;
    a.lse = lse;
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.os = os;
    a.qs = qs;
    a.ks = ks;
    a.vs = vs;
    a.T = T;
    a.Hq = Hq;
    a.Hkv = Hkv;
    a.group = Hq / Hkv;
    a.cu = cu_seqlens;
    a.n_docs = n_docs;
    a.d = (int)d;
    a.scale = scale;
    a.scale2 = scale * AT_LOG2E;
    a.vq = vec_ok(q, qs, d);
    a.vk = vec_ok(k, ks, d);
    a.vv = vec_ok(v, vs, d);
    a.vo = vec_ok(o, os, d);
    cudaStream_t s = ul_cuda_state.stream;
    switch (pad_dim(d)) {
    case 32: launch_fwd<32>(a, s); break;
    case 64: launch_fwd<64>(a, s); break;
    case 96: launch_fwd<96>(a, s); break;
    default: launch_fwd<128>(a, s); break;
    }
    CUDA_LAUNCH_CHECK();
}

template <int DP>
static void launch_bwd(const AttnArgs &a, cudaStream_t s) {
    launch_dq<DP, AT_DQ_MT, AT_DQ_BN(DP)>(a, s);
    launch_dkv<DP, AT_DKV_MT(DP), AT_DKV_BQ>(a, s);
}

static void attention_bwd_args(void *dq, int64_t dqs, void *dk, int64_t dks, void *dv, int64_t dvs, const void *dout,
                           int64_t dos, const void *q, int64_t qs, const void *k, int64_t ks, const void *v,
                           int64_t vs, const void *o, int64_t os, const float *lse, int64_t T, int64_t Hq,
                           int64_t Hkv, int64_t d, const int64_t *cu_seqlens, int64_t n_docs, float scale) {
    check_shape(T, Hq, Hkv, d, n_docs);
    if (T == 0) return;
    if (ul_cuda_attention_bwd_sm90(dq, dqs, dk, dks, dv, dvs, dout, dos, q, qs, k, ks, v, vs, o, os, lse, T, Hq, Hkv, d,
                                   cu_seqlens, n_docs, scale))
        return;
    AttnArgs a;
    memset(&a, 0, sizeof a);
    a.dq = (bf16 *)dq;
    a.dk = (bf16 *)dk;
    a.dv = (bf16 *)dv;
    a.dout = (const bf16 *)dout;
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.oc = (const bf16 *)o;
    a.lsec = lse;
    a.os = os;
    a.qs = qs;
    a.ks = ks;
    a.vs = vs;
    a.dqs = dqs;
    a.dks = dks;
    a.dvs = dvs;
    a.dos = dos;
    a.T = T;
    a.Hq = Hq;
    a.Hkv = Hkv;
    a.group = Hq / Hkv;
    a.cu = cu_seqlens;
    a.n_docs = n_docs;
    a.d = (int)d;
    a.scale = scale;
    a.scale2 = scale * AT_LOG2E;
    a.vq = vec_ok(q, qs, d);
    a.vk = vec_ok(k, ks, d);
    a.vv = vec_ok(v, vs, d);
    a.vdo = vec_ok(dout, dos, d);
    a.vdq = vec_ok(dq, dqs, d);
    a.vdk = vec_ok(dk, dks, d);
    a.vdv = vec_ok(dv, dvs, d);
    a.D = (float *)ul_cuda_scratch((size_t)(T * Hq) * sizeof(float));
    cudaStream_t s = ul_cuda_state.stream;
    const int64_t nw = T * Hq, gd = (nw + 3) / 4;
    UL_ASSERT(gd <= 0x7fffffff, "attention: grid too large");
    k_attn_dot<<<(unsigned)gd, 128, 0, s>>>(a);
    CUDA_LAUNCH_CHECK();
    switch (pad_dim(d)) {
    case 32: launch_bwd<32>(a, s); break;
    case 64: launch_bwd<64>(a, s); break;
    case 96: launch_bwd<96>(a, s); break;
    default: launch_bwd<128>(a, s); break;
    }
}

/* The KernelOps entry points (kernels.h UlAttention). */
void ul_cuda_attention_fwd(const UlAttention *a) {
    attention_fwd_args(a->o, a->os, a->lse, a->q, a->qs, a->k, a->ks, a->v, a->vs, a->T, a->Hq, a->Hkv, a->d,
                       a->cu_seqlens, a->n_docs, a->scale);
}

void ul_cuda_attention_bwd(const UlAttention *a) {
    attention_bwd_args(a->dq, a->dqs, a->dk, a->dks, a->dv, a->dvs, a->dout, a->dos, a->q, a->qs, a->k, a->ks, a->v,
                       a->vs, a->o, a->os, a->lse, a->T, a->Hq, a->Hkv, a->d, a->cu_seqlens, a->n_docs, a->scale);
}
