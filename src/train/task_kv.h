/* The synthetic long-context task of `ulysses demo` (no download):
 *
 * A sample of T tokens. The first half is a context of filler tokens with P key->value
 * pairs ("k v", two adjacent tokens) at random places; every key is distinct. The second
 * half is filler with Q queries "? k v" at random places, each asking for the value of a
 * key from the context. Only the answer positions carry labels (the token "k" of a query
 * is labelled with its value v); every other label is -100. The answers are half a
 * sequence or more away from their pairs: with sp = 2 every query sits on rank 1 and
 * every pair on rank 0, so the task is solvable only when attention crosses shards.
 *
 * Vocabulary (96): 0 pad, 1 query marker "?", 2..65 keys (64), 66..81 values (16),
 * 82..95 filler (14). Chance accuracy is 1/16.
 * Sample g is a pure function of (seed, g, T, P, Q). */
#ifndef UL_TASK_KV_H
#define UL_TASK_KV_H

#include <stdint.h>

#include "train/data.h"

#define KV_VOCAB 96
#define KV_QUERY 1
#define KV_KEY0 2
#define KV_NKEYS 64
#define KV_VAL0 66
#define KV_NVALS 16
#define KV_FILL0 82
#define KV_NFILL 14

typedef struct {
    int64_t T;        /* sample length (even) */
    int64_t pairs;    /* P: pairs in the context (<= KV_NKEYS) */
    int64_t queries;  /* Q: queries (<= P) */
    uint64_t seed;
} KvTask;

/* Fills s (T tokens, one document, labels only on answers). If dist != NULL it must hold
 * T entries: dist[i] = distance in tokens from the answer position i back to the value
 * it must retrieve, -1 where there is no answer. */
void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist);
/* Checks the task parameters; error names the flag. */
int kv_validate(const KvTask *task, UlError *e);

#endif
