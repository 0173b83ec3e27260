#include "testutil.h"

#include <math.h>

int tu_failures = 0;
int tu_checks = 0;

double tu_rel_err_f32(const float *a, const float *b, int64_t n, double floor) {
    double maxdiff = 0, maxref = floor;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    return maxdiff / maxref;
}

double tu_rel_err_f64(const float *a, const double *b, int64_t n, double floor) {
    double maxdiff = 0, maxref = floor;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = d;
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / maxref;
}

int tu_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

void test_attention_fwd(const KernelOps *K, void *o, int64_t os, float *lse, const void *q, int64_t qs, const void *k,
                        int64_t ks, const void *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                        const int64_t *cu, int64_t n_docs, float scale) {
    UlAttention a = {.q = q, .k = k, .v = v, .qs = qs, .ks = ks, .vs = vs, .o = o, .os = os, .lse = lse,
                     .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .cu_seqlens = cu, .n_docs = n_docs, .scale = scale};
    K->attention_fwd(&a);
}

void test_attention_bwd(const KernelOps *K, void *dq, int64_t dqs, void *dk, int64_t dks, void *dv, int64_t dvs,
                        const void *dout, int64_t dos, const void *q, int64_t qs, const void *k, int64_t ks,
                        const void *v, int64_t vs, const void *o, int64_t os, const float *lse, int64_t T, int64_t Hq,
                        int64_t Hkv, int64_t d, const int64_t *cu, int64_t n_docs, float scale) {
    UlAttention a = {.q = q, .k = k, .v = v, .qs = qs, .ks = ks, .vs = vs, .o = (void *)o, .os = os, .lse = (float *)lse,
                     .dout = dout, .dos = dos, .dq = dq, .dk = dk, .dv = dv, .dqs = dqs, .dks = dks, .dvs = dvs,
                     .T = T, .Hq = Hq, .Hkv = Hkv, .d = d, .cu_seqlens = cu, .n_docs = n_docs, .scale = scale};
    K->attention_bwd(&a);
}
