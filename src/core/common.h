/* Common definitions: error reporting, checked allocation, small helpers.
 *
 * Two kinds of failure:
 *  - user errors (bad flag, bad file, impossible mesh): functions return -1 and fill
 *    a UlError; the CLI agrees on them collectively (one message, every rank exits
 *    non-zero, no hang) — see ul_agree() in run/train.h.
 *  - internal failures (allocation, MPI/CUDA/NCCL calls, a rank dying mid-step):
 *    UL_FATAL prints file:line and rank and aborts the whole job (MPI_Abort). */
#ifndef UL_COMMON_H
#define UL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>

#define UL_IGNORE_INDEX (-100)

typedef struct {
    char msg[1024];
} UlError;

/* Formats msg into e (if e != NULL) and returns -1, so callers write
 * `return ul_err(e, "file %s: truncated", path);`. */
int ul_err(UlError *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Internal failure: prints "[rank R] file:line: message" and aborts every rank. */
void ul_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define UL_FATAL(...) ul_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
#define UL_ASSERT(cond, ...)                 \
    do {                                     \
        if (!(cond)) UL_FATAL(__VA_ARGS__);  \
    } while (0)

/* The rank printed in fatal messages (set once MPI is up; -1 before). */
void ul_set_log_rank(int rank);
int ul_log_rank(void);

/* Checked allocation (aborts the job with the size on failure). Zeroed. */
void *ul_calloc(size_t n, size_t size);
void *ul_malloc(size_t bytes);
void *ul_realloc(void *p, size_t bytes);
char *ul_strdup(const char *s);

/* Wall clock in seconds. */
double ul_now(void);

/* Deterministic RNG (splitmix64 seeding a xoshiro256**), reproducible on every platform. */
typedef struct {
    uint64_t s[4];
} UlRng;
void ul_rng_seed(UlRng *r, uint64_t seed);
uint64_t ul_rng_u64(UlRng *r);
double ul_rng_uniform(UlRng *r);  /* [0, 1) */
double ul_rng_normal(UlRng *r);   /* N(0, 1), Box-Muller */
/* Counter-based N(0, 1): element i of stream `seed`, a pure function of both (so any
 * number of threads or ranks fill any slice of an array identically); float Box-Muller
 * over two splitmix64 hashes. */
float ul_normal_at(uint64_t seed, uint64_t i);

/* bf16 <-> f32 (round to nearest even, NaN preserved). */
uint16_t ul_f32_to_bf16(float f);
float ul_bf16_to_f32(uint16_t h);

#endif
