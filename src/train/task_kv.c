#include "train/task_kv.h"

#include <stdlib.h>
#include <string.h>

int kv_validate(const KvTask *t, UlError *e) {
    if (t->T < 2 * KV_MAX_CHUNK || t->T % 2 || t->T / 2 > KV_VOCAB - 1)
        return ul_err(e, "--seq-len %lld: the kv task needs an even length in %d..%d", (long long)t->T,
                      2 * KV_MAX_CHUNK, 2 * (KV_VOCAB - 1));
    return 0;
}

void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist) {
    int64_t T = task->T, h = T / 2;
    UlRng r;
    ul_rng_seed(&r, task->seed * 0x2545F4914F6CDD1DULL + (uint64_t)g * 0x9E3779B97F4A7C15ULL + 17);
    int32_t *perm = malloc((size_t)(KV_VOCAB - 1) * sizeof(int32_t)); /* [V-1] */
    for (int64_t i = 0; i < KV_VOCAB - 1; i++) perm[i] = (int32_t)(i + 1);
    for (int64_t i = 0; i < h; i++) { /* partial Fisher-Yates: h distinct keys */
        int64_t j = i + (int64_t)(ul_rng_u64(&r) % (uint64_t)(KV_VOCAB - 1 - i));
        int32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    /* chunks of the context: starts and lengths, then a random order */
    int64_t nch = 0, *cs = malloc((size_t)h * sizeof(int64_t)), *cl = malloc((size_t)h * sizeof(int64_t));
    for (int64_t at = 0; at < h; nch++) {
        int64_t len = KV_MIN_CHUNK + (int64_t)(ul_rng_u64(&r) % (KV_MAX_CHUNK - KV_MIN_CHUNK + 1));
        if (len > h - at) len = h - at;
        cs[nch] = at;
        cl[nch] = len;
        at += len;
    }
    int64_t *ord = malloc((size_t)nch * sizeof(int64_t));
    for (int64_t i = 0; i < nch; i++) ord[i] = i;
    for (int64_t i = nch - 1; i > 0; i--) {
        int64_t j = (int64_t)(ul_rng_u64(&r) % (uint64_t)(i + 1));
        int64_t tmp = ord[i];
        ord[i] = ord[j];
        ord[j] = tmp;
    }
    int32_t *tok = malloc((size_t)T * sizeof(int32_t)); /* [T] */
    int32_t *src = malloc((size_t)T * sizeof(int32_t)); /* [T] context position replayed, -1 for a chunk start */
    for (int64_t i = 0; i < h; i++) {
        tok[i] = perm[i];
        src[i] = -1;
    }
    int64_t at = h;
    for (int64_t c = 0; c < nch; c++)
        for (int64_t j = 0; j < cl[ord[c]]; j++) {
            tok[at] = perm[cs[ord[c]] + j];
            src[at++] = (int32_t)(cs[ord[c]] + j);
        }
    const int32_t *docs[1] = {tok};
    int64_t lens[1] = {T};
    sample_from_docs(s, docs, lens, 1, 1, T);
    s->n_valid = 0;
    for (int64_t i = 0; i < T; i++) {
        /* position i predicts token i+1: an answer when i+1 continues the chunk of i */
        int ok = i >= h && i + 1 < T && src[i + 1] == src[i] + 1 && (i + 1 - h) > 0;
        ok = ok && src[i + 1] > 0 && tok[i + 1] == perm[src[i] + 1];
        s->labels[i] = ok ? tok[i + 1] : UL_IGNORE_INDEX;
        s->n_valid += ok;
        if (dist) dist[i] = ok ? (int32_t)(i - src[i]) : -1;
    }
    free(perm);
    free(cs);
    free(cl);
    free(ord);
    free(tok);
    free(src);
}

ModelConfig kv_demo_config(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.vocab_size = KV_VOCAB;
    c.hidden_size = getenv("KVD") ? atoi(getenv("KVD")) : 128;
    c.intermediate_size = 2 * c.hidden_size;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = c.hidden_size / 4;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    c.initializer_range = getenv("KVSTD") ? atof(getenv("KVSTD")) : 0.02;
    c.tie_word_embeddings = 1;
    c.rope_theta = getenv("KVTHETA") ? atof(getenv("KVTHETA")) : 1e6;
    c.rope_type = UL_ROPE_DEFAULT;
    c.bos_token_id = -1;
    c.eos_token_id = -1;
    return c;
}
