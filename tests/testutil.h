/* Tiny test harness: CHECK macros that count failures, float comparison helpers. */
#ifndef UL_TESTUTIL_H
#define UL_TESTUTIL_H

#include <stdint.h>

#include "kernels/kernels.h"
#include <stdio.h>

extern int tu_failures;
extern int tu_checks;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        tu_checks++;                                                  \
        if (!(cond)) {                                                \
            tu_failures++;                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, "\n");                                    \
        }                                                             \
    } while (0)

/* max |a-b| / max(max|b|, floor) over n elements (relative error of a against reference b). */
double tu_rel_err_f32(const float *a, const float *b, int64_t n, double floor);
double tu_rel_err_f64(const float *a, const double *b, int64_t n, double floor);

/* Prints "name: N checks, M failed" and returns the process exit code. */
int tu_finish(const char *name);

/* The attention ops (kernels.h UlAttention) called with the tensors one by one, as the
 * tests lay them out. */
void test_attention_fwd(const KernelOps *K, void *o, int64_t os, float *lse, const void *q, int64_t qs, const void *k,
                        int64_t ks, const void *v, int64_t vs, int64_t T, int64_t Hq, int64_t Hkv, int64_t d,
                        const int64_t *cu, int64_t n_docs, float scale);
void test_attention_bwd(const KernelOps *K, void *dq, int64_t dqs, void *dk, int64_t dks, void *dv, int64_t dvs,
                        const void *dout, int64_t dos, const void *q, int64_t qs, const void *k, int64_t ks,
                        const void *v, int64_t vs, const void *o, int64_t os, const float *lse, int64_t T, int64_t Hq,
                        int64_t Hkv, int64_t d, const int64_t *cu, int64_t n_docs, float scale);

#endif
