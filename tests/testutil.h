/* Tiny test harness: CHECK macros that count failures, float comparison helpers. */
#ifndef UL_TESTUTIL_H
#define UL_TESTUTIL_H

#include <stdint.h>
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

#endif
