#include "data/task_kv.h"

#include <stdlib.h>
#include <string.h>

int kv_validate(const KvTask *t, UlError *e) {
    if (t->T < KV_MIN_T || t->T % 2)
        return ul_err(e, "--seq-len %lld: the kv task needs an even length >= %d", (long long)t->T, KV_MIN_T);
    return 0;
}

static uint64_t below(UlRng *r, uint64_t n) { return ul_rng_u64(r) % n; }

void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist) {
    int64_t T = task->T, h = T / 2, nf = KV_NKEYS * KV_REPEAT;
    UlRng r;
    ul_rng_seed(&r, task->seed * 0x2545F4914F6CDD1DULL + (uint64_t)g * 0x9E3779B97F4A7C15ULL + 17);
    int32_t val[KV_NKEYS];
    for (int k = 0; k < KV_NKEYS; k++) val[k] = (int32_t)below(&r, KV_NVALS);
    int32_t *tok = malloc((size_t)T * sizeof(int32_t));   /* [T] */
    int64_t *pos = malloc((size_t)h * sizeof(int64_t));   /* [h] context positions, shuffled */
    int64_t last[KV_NKEYS];                               /* latest copy of each fact */
    for (int64_t i = 0; i < h; i++) {
        tok[i] = KV_FILL;
        pos[i] = i;
    }
    for (int64_t i = 0; i < nf; i++) { /* partial Fisher-Yates: nf distinct positions */
        int64_t j = i + (int64_t)below(&r, (uint64_t)(h - i)), t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
    }
    for (int k = 0; k < KV_NKEYS; k++) last[k] = -1;
    for (int64_t i = 0; i < nf; i++) {
        int k = (int)(i % KV_NKEYS);
        tok[pos[i]] = KV_FACT0 + k * KV_NVALS + val[k];
        if (pos[i] > last[k]) last[k] = pos[i];
    }
    int32_t *key = malloc((size_t)T * sizeof(int32_t)); /* [T] key of each query */
    for (int64_t i = h; i < T; i++) {
        key[i] = (int32_t)below(&r, KV_NKEYS);
        tok[i] = KV_KEY0 + key[i];
    }
    const int32_t *docs[1] = {tok};
    int64_t lens[1] = {T};
    sample_from_docs(s, docs, NULL, lens, 1, 1, T);
    for (int64_t i = 0; i < T; i++) {
        s->labels[i] = i < h ? UL_IGNORE_INDEX : KV_VAL0 + val[key[i]];
        if (dist) dist[i] = i < h ? -1 : (int32_t)(i - last[key[i]]);
    }
    s->n_valid = T - h;
    free(tok);
    free(pos);
    free(key);
}

ModelConfig kv_demo_config(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.vocab_size = KV_VOCAB;
    /* One layer is enough for the lookup and trains fastest; 8 heads of 32 (wider than
     * the residual, as head_dim allows) find the right facts far sooner than 4. */
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_layers = 1;
    c.num_heads = 8;
    c.num_kv_heads = 4;
    c.head_dim = 32;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    /* A larger init than the usual 0.02: attention logits of order 1 at the start; with
     * 0.02 the attention is uniform and stays stuck at chance for thousands of steps. */
    c.initializer_range = 0.14;
    c.tie_word_embeddings = 1;
    /* The lookup is by content alone; a large base leaves most rotary frequencies nearly
     * still across 2048 positions, so they can match a key to facts far away. */
    c.rope_theta = 1e9;
    c.rope_type = UL_ROPE_DEFAULT;
    c.bos_token_id = -1;
    c.eos_token_id = -1;
    return c;
}
