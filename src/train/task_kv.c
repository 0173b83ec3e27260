#include "train/task_kv.h"

#include <stdlib.h>
#include <string.h>

/* EXPERIMENTAL knobs (env) */
static int64_t envi(const char *n, int64_t d) { return getenv(n) ? atoll(getenv(n)) : d; }

int kv_validate(const KvTask *t, UlError *e) {
    if (t->T < 16 || t->T % 4) return ul_err(e, "--seq-len %lld: bad", (long long)t->T);
    return 0;
}

static void shuffle64(UlRng *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ul_rng_u64(r) % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void kv_sample(const KvTask *task, int64_t g, Sample *s, int32_t *dist) {
    int64_t T = task->T, h = T / 2;
    int64_t NV = envi("KVNV", 32), NK = envi("KVNK", 1000), NF = envi("KVNF", 0), QF = envi("KVQF", 0);
    int64_t NPmax = envi("KVNP", h / 2), NPmin = envi("KVNPMIN", NPmax);
    int32_t K0 = (int32_t)(1 + NV), F0 = (int32_t)(1 + NV + NK);
    UlRng r;
    ul_rng_seed(&r, task->seed * 0x2545F4914F6CDD1DULL + (uint64_t)g * 0x9E3779B97F4A7C15ULL + 17);
    int64_t NP = NPmin + (int64_t)(ul_rng_u64(&r) % (uint64_t)(NPmax - NPmin + 1));
    if (NP > NK) NP = NK;
    int64_t *keys = malloc((size_t)NK * sizeof(int64_t));
    for (int64_t i = 0; i < NK; i++) keys[i] = i;
    for (int64_t i = 0; i < NP; i++) {
        int64_t j = i + (int64_t)(ul_rng_u64(&r) % (uint64_t)(NK - i)), t = keys[i];
        keys[i] = keys[j];
        keys[j] = t;
    }
    int32_t *val = malloc((size_t)NP * sizeof(int32_t));
    for (int64_t i = 0; i < NP; i++) val[i] = (int32_t)(1 + ul_rng_u64(&r) % (uint64_t)NV);
    int32_t *tok = malloc((size_t)T * sizeof(int32_t)), *lab = malloc((size_t)T * sizeof(int32_t));
    int32_t *dd = malloc((size_t)T * sizeof(int32_t));
    int64_t *vpos = malloc((size_t)NP * sizeof(int64_t));
    for (int64_t i = 0; i < T; i++) {
        tok[i] = NF > 0 ? F0 + (int32_t)(ul_rng_u64(&r) % (uint64_t)NF) : F0;
        lab[i] = UL_IGNORE_INDEX;
        dd[i] = -1;
    }
    /* context: NP pairs in h/2 slots of 2 */
    int64_t ns = h / 2, *slot = malloc((size_t)(T) * sizeof(int64_t));
    for (int64_t i = 0; i < ns; i++) slot[i] = i;
    shuffle64(&r, slot, ns);
    for (int64_t p = 0; p < NP; p++) {
        int64_t at = 2 * slot[p];
        tok[at] = K0 + (int32_t)keys[p];
        tok[at + 1] = val[p];
        vpos[p] = at + 1;
    }
    if (QF == 4) { /* fact tokens: FT0 + k*NV + (v-1) at random context positions */
        int32_t FT0 = (int32_t)(1 + NV + NK + (NF > 0 ? NF : 1));
        for (int64_t i = 0; i < h; i++) tok[i] = NF > 0 ? F0 + (int32_t)(ul_rng_u64(&r) % (uint64_t)NF) : F0;
        for (int64_t i = 0; i < h; i++) slot[i] = i;
        shuffle64(&r, slot, h);
        int64_t REP = envi("KVREP", 1);
        for (int64_t p = 0; p < NP * REP; p++) tok[slot[p]] = FT0 + (int32_t)(keys[p % NP] * NV + (val[p % NP] - 1));
        for (int64_t p = 0; p < NP; p++) {
            tok[slot[p]] = FT0 + (int32_t)(keys[p] * NV + (val[p] - 1));
            vpos[p] = slot[p];
        }
        for (int64_t i = h; i < T; i++) {
            int64_t p = (int64_t)(ul_rng_u64(&r) % (uint64_t)NP);
            tok[i] = K0 + (int32_t)keys[p];
            lab[i] = envi("KVCOPY", 0) ? tok[vpos[p]] : val[p];
            dd[i] = (int32_t)(i - vpos[p]);
        }
    } else if (QF == 2 || QF == 3) {
        for (int64_t i = h; i < T; i++) {
            int64_t p = (int64_t)(ul_rng_u64(&r) % (uint64_t)NK);
            tok[i] = K0 + (int32_t)p;
        }
        for (int64_t i = h + 1; i < T; i++) {
            lab[i] = QF == 2 ? tok[i - 1] : (int32_t)(1 + (tok[i] * 7919) % NV);
            dd[i] = 1;
        }
    } else if (QF == 0) {
        for (int64_t i = h; i < T; i++) {
            int64_t p = (int64_t)(ul_rng_u64(&r) % (uint64_t)NP);
            tok[i] = K0 + (int32_t)keys[p];
            lab[i] = val[p];
            dd[i] = (int32_t)(i - vpos[p]);
        }
    } else {
        int64_t nq = NP < h / 2 ? NP : h / 2;
        for (int64_t i = 0; i < ns; i++) slot[i] = i;
        shuffle64(&r, slot, ns);
        int64_t *qp = malloc((size_t)NP * sizeof(int64_t));
        for (int64_t i = 0; i < NP; i++) qp[i] = i;
        shuffle64(&r, qp, NP);
        for (int64_t q = 0; q < nq; q++) {
            int64_t at = h + 2 * slot[q], p = qp[q];
            tok[at] = K0 + (int32_t)keys[p];
            tok[at + 1] = val[p];
            lab[at] = val[p];
            dd[at] = (int32_t)(at - vpos[p]);
        }
        free(qp);
    }
    const int32_t *docs[1] = {tok};
    int64_t lens[1] = {T};
    sample_from_docs(s, docs, lens, 1, 1, T);
    s->n_valid = 0;
    for (int64_t i = 0; i < T; i++) {
        s->labels[i] = lab[i];
        s->n_valid += lab[i] != UL_IGNORE_INDEX;
        if (dist) dist[i] = dd[i];
    }
    free(keys);
    free(val);
    free(tok);
    free(lab);
    free(dd);
    free(vpos);
    free(slot);
}

ModelConfig kv_demo_config(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.vocab_size = KV_VOCAB;
    c.hidden_size = envi("KVD", 128);
    c.num_heads = envi("KVH", 4);
    c.num_kv_heads = envi("KVKVH", 2);
    c.head_dim = envi("KVHD", c.hidden_size / c.num_heads);
    c.intermediate_size = envi("KVI", 2 * c.hidden_size);
    c.num_layers = envi("KVL", 2);
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
