/* The synthetic long-context task of `ulysses demo` (no download): key->value recall.
 *
 * A sample of T tokens. The first half, the context, is a random sequence of T/2
 * DISTINCT tokens: every token is a key and the token after it is its value. The second
 * half replays the context in pieces: it is cut into chunks of random length (8..64
 * tokens) that appear in random order. Inside a chunk every next token is the value of
 * the current token, found only by looking the key up in the context; those positions
 * carry labels, every other label (the context, the first token of each chunk) is -100.
 * The value of every query lies T/2 tokens or further... in the first half: with sp = 2
 * every query sits on rank 1 and every key->value pair on rank 0, so the task is solvable
 * only when attention crosses shards. Chance accuracy is about 2/T.
 *
 * Vocabulary: 0 pad, 1..KV_VOCAB-1 keys. Sample g is a pure function of (seed, g, T). */
#ifndef UL_TASK_KV_H
#define UL_TASK_KV_H

#include <stdint.h>
#include <stdlib.h>

#include "core/config.h"
#include "train/data.h"

#define KV_VOCAB (getenv("KVV") ? atoi(getenv("KVV")) : 1056)
#define KV_MIN_CHUNK 8
#define KV_MAX_CHUNK 64

typedef struct {
    int64_t T;        /* sample length (even) */
    uint64_t seed;
} KvTask;

/* Fills s (T tokens, one document, labels only on answers). If dist != NULL it must hold
 * T entries: dist[i] = distance in tokens from the answer position i back to the context
 * position of the same key, -1 where there is no answer. */
void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist);
/* The small Llama the demo trains on this task. */
ModelConfig kv_demo_config(void);
/* Checks the task parameters; error names the flag. */
int kv_validate(const KvTask *task, UlError *e);

#endif
