#include "train/task_kv.h"

#include <stdlib.h>
#include <string.h>

int kv_validate(const KvTask *t, UlError *e) {
    if (t->T < 64 || t->T % 2) return ul_err(e, "--seq-len %lld: the kv task needs an even length >= 64", (long long)t->T);
    if (t->pairs < 1 || t->pairs > KV_NKEYS)
        return ul_err(e, "--pairs %lld: must be in 1..%d", (long long)t->pairs, KV_NKEYS);
    if (t->queries < 1 || t->queries > t->pairs)
        return ul_err(e, "--queries %lld: must be in 1..pairs (%lld)", (long long)t->queries, (long long)t->pairs);
    if (3 * t->queries > t->T / 2 || 2 * t->pairs > t->T / 2)
        return ul_err(e, "--seq-len %lld: too short for %lld pairs and %lld queries", (long long)t->T,
                      (long long)t->pairs, (long long)t->queries);
    return 0;
}

/* k distinct slots of width w in [0, n): random, non-overlapping, sorted. Returns starts. */
static void slots(UlRng *r, int64_t n, int64_t w, int64_t k, int64_t *out) {
    /* choose k of the n - k*(w-1) "compressed" positions, then expand */
    int64_t m = n - k * (w - 1);
    int64_t chosen = 0;
    for (int64_t i = 0; i < m && chosen < k; i++) /* selection sampling (Knuth S) */
        if ((double)(m - i) * ul_rng_uniform(r) < (double)(k - chosen)) out[chosen++] = i;
    for (int64_t j = 0; j < k; j++) out[j] += j * (w - 1);
}

void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist) {
    int64_t T = task->T, half = T / 2, P = task->pairs, Q = task->queries;
    UlRng r;
    ul_rng_seed(&r, task->seed * 0x2545F4914F6CDD1DULL + (uint64_t)g * 0x9E3779B97F4A7C15ULL + 17);
    int32_t *tok = malloc((size_t)T * sizeof(int32_t)); /* [T] */
    for (int64_t i = 0; i < T; i++) tok[i] = KV_FILL0 + (int32_t)(ul_rng_u64(&r) % KV_NFILL);
    /* P distinct keys (partial Fisher-Yates) with random values */
    int32_t keys[KV_NKEYS], vals[KV_NKEYS];
    for (int i = 0; i < KV_NKEYS; i++) keys[i] = KV_KEY0 + i;
    for (int64_t i = 0; i < P; i++) {
        int64_t j = i + (int64_t)(ul_rng_u64(&r) % (uint64_t)(KV_NKEYS - i));
        int32_t tmp = keys[i];
        keys[i] = keys[j];
        keys[j] = tmp;
        vals[i] = KV_VAL0 + (int32_t)(ul_rng_u64(&r) % KV_NVALS);
    }
    int64_t *ps = malloc((size_t)P * sizeof(int64_t)), *qs = malloc((size_t)Q * sizeof(int64_t));
    slots(&r, half, 2, P, ps);
    slots(&r, T - half, 3, Q, qs);
    for (int64_t i = 0; i < P; i++) {
        tok[ps[i]] = keys[i];
        tok[ps[i] + 1] = vals[i];
    }
    /* queries ask for a random subset of the pairs, in random order */
    int64_t *which = malloc((size_t)P * sizeof(int64_t));
    for (int64_t i = 0; i < P; i++) which[i] = i;
    for (int64_t i = 0; i < Q; i++) {
        int64_t j = i + (int64_t)(ul_rng_u64(&r) % (uint64_t)(P - i));
        int64_t tmp = which[i];
        which[i] = which[j];
        which[j] = tmp;
    }
    const int32_t *docs[1] = {tok};
    int64_t lens[1] = {T};
    sample_from_docs(s, docs, lens, 1, 1, T);
    for (int64_t i = 0; i < T; i++) s->labels[i] = UL_IGNORE_INDEX;
    if (dist)
        for (int64_t i = 0; i < T; i++) dist[i] = -1;
    for (int64_t i = 0; i < Q; i++) {
        int64_t at = half + qs[i], p = which[i];
        s->tokens[at] = KV_QUERY;
        s->tokens[at + 1] = keys[p];
        s->tokens[at + 2] = vals[p];
        s->labels[at + 1] = vals[p];
        if (dist) dist[at + 1] = (int32_t)(at + 1 - (ps[p] + 1));
    }
    s->n_valid = Q;
    free(tok);
    free(ps);
    free(qs);
    free(which);
}
