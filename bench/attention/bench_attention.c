/* Times the CUDA backend's flash attention (forward and backward) on one GPU.
 *   bench_attention T H HKV D [DOCS] [REPS]
 * Causal over DOCS equal documents (default 1), bf16 inputs from a fixed seed. Prints one
 * JSON object: milliseconds and TFLOP/s, FLOPs counted causal once (forward 2 T^2 H d per
 * document-square, i.e. 4 T_doc^2 H d / 2; backward 2.5x forward). Not a test: see
 * bench/attention/run.sh, which runs it side by side with torch SDPA. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "kernels/kernels.h"

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_attention T H HKV D [DOCS] [REPS]\n");
        return 2;
    }
    const int64_t T = atoll(argv[1]), H = atoll(argv[2]), Hkv = atoll(argv[3]), d = atoll(argv[4]);
    const int64_t docs = argc > 5 ? atoll(argv[5]) : 1, reps = argc > 6 ? atoll(argv[6]) : 5;
    if (T < 1 || H < 1 || Hkv < 1 || H % Hkv || d < 1 || d > 128 || docs < 1 || T % docs || reps < 1) {
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
    for (int64_t i = 0; i <= docs; i++) cu[i] = i * (T / docs);
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
    const double Td = (double)(T / docs);
    const double ff = 2.0 * Td * Td * (double)H * (double)d * (double)docs; /* causal: half of 4 T^2 H d */
    const char *kern = getenv("UL_ATTN_KERNEL");
    printf("{\"impl\": \"ulysses\", \"kernel\": \"%s\", \"T\": %lld, \"H\": %lld, \"Hkv\": %lld, \"d\": %lld, "
           "\"docs\": %lld, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_tflops\": %.1f, \"bwd_tflops\": %.1f}\n",
           kern && *kern ? kern : "default", (long long)T, (long long)H, (long long)Hkv, (long long)d,
           (long long)docs, tf * 1e3, tb * 1e3, ff / tf * 1e-12, 2.5 * ff / tb * 1e-12);
    G->free(xf), G->free(q), G->free(k), G->free(v), G->free(dout), G->free(o), G->free(dq), G->free(dk);
    G->free(dv), G->free(lse), G->free(gcu);
    free(x);
    free(cu);
    return 0;
}
