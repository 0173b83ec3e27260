/* Times the CUDA backend's flash attention (forward and backward) on one GPU.
 *   bench_attention T H HKV D [DOCS] [REPS]
 * Causal over DOCS equal documents (default 1), or, with DOCS written Nv, N documents of
 * varied length (N a multiple of 8; below), bf16 inputs from a fixed seed. Prints one JSON
 * object: milliseconds and TFLOP/s, FLOPs counted causal once (forward 2 L^2 H d for each
 * document of L tokens, i.e. half of 4 L^2 H d; backward 2.5x forward). Not a test: see
 * bench/attention/run.sh and lab.sh, which run it side by side with torch SDPA.
 *
 * Varied lengths (the same in bench/attention/sdpa_bench.py, which runs each length as one
 * batch): with b = T / N, document i has length b f[i % 8] / 4 + e[i % 8], f and e below:
 * eight lengths from b / 4 to 7 b / 4, interleaved, summing to T, their starts off the
 * 64-row tiles. Needs b a multiple of 4 and at least 256. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/kernels.h"

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_attention T H HKV D [DOCS] [REPS]\n");
        return 2;
    }
    const int64_t T = atoll(argv[1]), H = atoll(argv[2]), Hkv = atoll(argv[3]), d = atoll(argv[4]);
    const int64_t docs = argc > 5 ? atoll(argv[5]) : 1, reps = argc > 6 ? atoll(argv[6]) : 5;
    const int varied = argc > 5 && argv[5][strspn(argv[5], "0123456789")] == 'v';
    if (T < 1 || H < 1 || Hkv < 1 || H % Hkv || d < 1 || d > 128 || docs < 1 || T % docs || reps < 1 ||
        (varied && (docs % 8 || (T / docs) % 4 || T / docs < 256))) {
        fprintf(stderr, "bench_attention: bad arguments\n");
        return 2;
    }
    UlError e;
    if (ul_attn_env_check(&e)) { /* a mistyped variant would time the default under its name */
        fprintf(stderr, "bench_attention: %s\n", e.msg);
        return 2;
    }
    const KernelOps *G = ul_kernels_cuda();
    if (!G) {
        fprintf(stderr, "bench_attention: no GPU visible (or no CUDA backend in this build)\n");
        return 77;
    }
    const int64_t nq = T * H * d, nk = T * Hkv * d; /* [T, H, d], [T, Hkv, d] */
    float *x = malloc((size_t)nq * sizeof(float));
    UlRng rng;
    ul_rng_seed(&rng, 7);
    for (int64_t i = 0; i < nq; i++) x[i] = (float)ul_rng_normal(&rng);
    float *xf = G->alloc((size_t)nq * 4);
    G->upload(xf, x, (size_t)nq * 4);
    void *q = G->alloc((size_t)nq * 2), *k = G->alloc((size_t)nk * 2), *v = G->alloc((size_t)nk * 2);
    void *dout = G->alloc((size_t)nq * 2), *o = G->alloc((size_t)nq * 2), *dq = G->alloc((size_t)nq * 2);
    void *dk = G->alloc((size_t)nk * 2), *dv = G->alloc((size_t)nk * 2);
    float *lse = G->alloc((size_t)(T * H) * 4); /* [T, H] */
    G->to_act(q, xf, nq);
    G->to_act(dout, xf, nq);
    G->to_act(k, xf, nk);
    G->to_act(v, xf + (nq - nk), nk);
    int64_t *cu = malloc((size_t)(docs + 1) * sizeof(int64_t)); /* [docs + 1] */
    static const int64_t vf[8] = {1, 2, 3, 4, 4, 5, 6, 7}, ve[8] = {37, -21, 13, -45, 29, -5, 11, -19};
    double ff = 0.0; /* causal: 2 L^2 H d a document */
    cu[0] = 0;
    for (int64_t i = 0; i < docs; i++) {
        const int64_t L = varied ? (T / docs) * vf[i % 8] / 4 + ve[i % 8] : T / docs;
        cu[i + 1] = cu[i] + L;
        ff += 2.0 * (double)L * (double)L * (double)H * (double)d;
    }
    int64_t *gcu = G->alloc((size_t)(docs + 1) * sizeof(int64_t));
    G->upload(gcu, cu, (size_t)(docs + 1) * sizeof(int64_t));
    const float scale = 1.0f / sqrtf((float)d);
    const UlAttention at = {.q = q, .k = k, .v = v, .qs = H * d, .ks = Hkv * d, .vs = Hkv * d, .o = o, .os = H * d,
                            .lse = lse, .dout = dout, .dos = H * d, .dq = dq, .dk = dk, .dv = dv, .dqs = H * d,
                            .dks = Hkv * d, .dvs = Hkv * d, .T = T, .Hq = H, .Hkv = Hkv, .d = d, .cu_seqlens = gcu,
                            .n_docs = docs, .scale = scale};
#define FWD() G->attention_fwd(&at)
#define BWD() G->attention_bwd(&at)
    FWD();
    G->sync();
    double t0 = ul_now();
    for (int64_t r = 0; r < reps; r++) FWD();
    G->sync();
    const double tf = (ul_now() - t0) / (double)reps;
    BWD();
    G->sync();
    t0 = ul_now();
    for (int64_t r = 0; r < reps; r++) BWD();
    G->sync();
    const double tb = (ul_now() - t0) / (double)reps;
    const char *kern = getenv("UL_ATTN_KERNEL");
    printf("{\"impl\": \"ulysses\", \"kernel\": \"%s\", \"T\": %lld, \"H\": %lld, \"Hkv\": %lld, \"d\": %lld, "
           "\"docs\": %lld, \"varied\": %d, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_tflops\": %.1f, \"bwd_tflops\": %.1f}\n",
           kern && *kern ? kern : "default", (long long)T, (long long)H, (long long)Hkv, (long long)d,
           (long long)docs, varied, tf * 1e3, tb * 1e3, ff / tf * 1e-12, 2.5 * ff / tb * 1e-12);
    G->free(xf), G->free(q), G->free(k), G->free(v), G->free(dout), G->free(o), G->free(dq), G->free(dk);
    G->free(dv), G->free(lse), G->free(gcu);
    free(x);
    free(cu);
    return 0;
}
