#include "common.h"

#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_log_rank = -1; /* only used to label fatal messages */

void ul_set_log_rank(int rank) { g_log_rank = rank; }
int ul_log_rank(void) { return g_log_rank; }

int ul_err(UlError *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void ul_fatal_at(const char *file, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ulysses: fatal [rank %d] %s:%d: %s\n", g_log_rank, file, line, msg);
    fflush(stderr);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, 3);
    abort();
}

void *ul_calloc(size_t n, size_t size) {
    if (n == 0 || size == 0) return NULL;
    void *p = calloc(n, size);
    if (!p) UL_FATAL("out of host memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *ul_malloc(size_t bytes) {
    if (bytes == 0) return NULL;
    void *p = malloc(bytes);
    if (!p) UL_FATAL("out of host memory allocating %zu bytes", bytes);
    return p;
}

void *ul_realloc(void *p, size_t bytes) {
    if (bytes == 0) {
        free(p);
        return NULL;
    }
    void *q = realloc(p, bytes);
    if (!q) UL_FATAL("out of host memory reallocating %zu bytes", bytes);
    return q;
}

char *ul_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = ul_malloc(n);
    memcpy(p, s, n);
    return p;
}

double ul_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix64(uint64_t z) { /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *x) { return mix64(*x += 0x9e3779b97f4a7c15ULL); }

void ul_rng_seed(UlRng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ul_rng_u64(UlRng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ul_rng_uniform(UlRng *r) { return (double)(ul_rng_u64(r) >> 11) * 0x1.0p-53; }

double ul_rng_normal(UlRng *r) {
    double u1 = ul_rng_uniform(r), u2 = ul_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

float ul_normal_at(uint64_t seed, uint64_t i) {
    const uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ULL);
    const uint64_t a = mix64(key + (2 * i + 1) * 0x9e3779b97f4a7c15ULL);
    const uint64_t b = mix64(key + (2 * i + 2) * 0x9e3779b97f4a7c15ULL);
    const float u1 = (float)((a >> 40) + 1) * 0x1.0p-24f; /* (0, 1] */
    const float u2 = (float)(b >> 40) * 0x1.0p-24f;       /* [0, 1) */
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795865f * u2);
}

uint16_t ul_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ul_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
