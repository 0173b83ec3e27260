/* The synthetic long-context task of `ulysses demo` (no download): key->value recall
 * across the sequence, generated from (seed, sample number).
 *
 * Vocabulary (KV_VOCAB = 154 tokens):
 *   0                      padding (never used by the task)
 *   KV_VAL0 + v            the KV_NVALS = 8 values, v = 0..7 (the answers)
 *   KV_KEY0 + k            the KV_NKEYS = 16 keys, k = 0..15 (the queries)
 *   KV_FILL                the filler of the haystack
 *   KV_FACT0 + k*8 + v     the 128 facts "key k has value v", one token each
 *
 * A sample of T tokens (T even, h = T/2):
 *   context  [0, h)   every key gets a value drawn uniformly from the 8; the fact token of
 *                     each of the 16 (key, value) pairs is written KV_REPEAT = 8 times at
 *                     distinct random positions (128 fact tokens, scattered uniformly over
 *                     the context); every other position is KV_FILL.
 *   queries  [h, T)   every position holds a key drawn uniformly from the 16; its label is
 *                     that key's value in this sample's context. Context labels are -100.
 * So the answer to every query sits only in the first half: under sp = 2 every query is on
 * rank 1 and every fact on rank 0, and the task is solvable only when attention crosses
 * the shards (with --debug-no-exchange accuracy stays at chance, 1/8). Values are drawn
 * afresh for every sample, so nothing about them can be memorised: each answer has to be
 * looked up in the context. One attention layer can do it (the query key attends to the
 * fact tokens of its key and reads their value).
 *
 * dist[i] (the evaluation's distance buckets) is the distance from query i back to the
 * nearest copy of its fact: always >= i - h + 1, and typically less than i - h + T/16 (the
 * latest of 8 uniform copies lies near the end of the context), so at T = 2048 the queries
 * fill the distance buckets from 1 to about 1400 tokens. Sample g is a pure function of (seed, g, T).
 *
 * Why this shape (measured, see docs/demo.md): one token per fact makes the lookup a single
 * attention hop (a two-token "k v" layout needs an induction circuit that did not form in
 * the demo's budget); 8 copies per fact give the untrained attention 8x more signal to
 * start from; a single filler token is easy to learn to ignore; the labels are dense (every
 * query position) and the value vocabulary is small. */
#ifndef UL_TASK_KV_H
#define UL_TASK_KV_H

#include <stdint.h>

#include "core/config.h"
#include "data/data.h"

#define KV_NVALS 8
#define KV_NKEYS 16
#define KV_REPEAT 8 /* copies of every fact in the context */
#define KV_VAL0 1
#define KV_KEY0 (KV_VAL0 + KV_NVALS)
#define KV_FILL (KV_KEY0 + KV_NKEYS)
#define KV_FACT0 (KV_FILL + 1)
#define KV_VOCAB (KV_FACT0 + KV_NKEYS * KV_NVALS) /* 154 */
#define KV_MIN_T (2 * KV_NKEYS * KV_REPEAT)       /* 256: the context holds every copy */

typedef struct {
    int64_t T;        /* sample length (even, >= KV_MIN_T) */
    uint64_t seed;
} KvTask;

/* Fills s (T tokens, one document, labels only on the queries). If dist != NULL it must
 * hold T entries: dist[i] = distance from query i back to the nearest copy of its fact,
 * -1 where there is no label. */
void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist);
/* The small Llama the demo trains on this task. */
ModelConfig kv_demo_config(void);
/* Checks the task parameters; error names the flag. */
int kv_validate(const KvTask *task, UlError *e);

#endif
