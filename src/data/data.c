#include "data/data.h"

#include <glob.h>
#include <stdlib.h>
#include <string.h>

int data_open(DataLoader *d, const char *pattern, int64_t seq_len, int pack, int shuffle, uint64_t seed,
              UlError *e) {
    memset(d, 0, sizeof *d);
    d->epoch = -1;
    d->seq_len = seq_len;
    d->pack = pack;
    d->shuffle = shuffle;
    d->seed = seed;
    if (seq_len < 2) return ul_err(e, "--seq-len %lld: must be at least 2", (long long)seq_len);
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        if (rc == 0) globfree(&g);
        return ul_err(e, "--data %s: no file matches", pattern);
    }
    if (rc != 0) return ul_err(e, "--data %s: cannot read the directory", pattern);
    d->n_shards = (int)g.gl_pathc;
    d->shards = ul_calloc((size_t)d->n_shards, sizeof(TokShard));
    for (int i = 0; i < d->n_shards; i++) {
        if (tok_shard_open(&d->shards[i], g.gl_pathv[i], e) != 0) {
            d->n_shards = i;
            globfree(&g);
            data_close(d);
            return -1;
        }
    }
    globfree(&g);
    int64_t cap = 0;
    for (int i = 0; i < d->n_shards; i++) {
        TokShard *s = &d->shards[i];
        if (s->vocab_size > d->vocab_size) d->vocab_size = s->vocab_size;
        for (int64_t j = 0; j < s->n_docs; j++) {
            int64_t len = (int64_t)(s->doc_offsets[j + 1] - s->doc_offsets[j]);
            for (int64_t off = 0; off < len; off += seq_len) {
                if (d->n_pieces == cap) {
                    cap = cap ? 2 * cap : 1024;
                    d->pieces = ul_realloc(d->pieces, (size_t)cap * sizeof(DocPiece));
                }
                DocPiece *p = &d->pieces[d->n_pieces++];
                p->shard = i;
                p->start = (int64_t)s->doc_offsets[j] + off;
                p->len = len - off < seq_len ? len - off : seq_len;
            }
            d->total_tokens += len;
        }
    }
    if (d->n_pieces == 0) {
        data_close(d);
        return ul_err(e, "--data %s: the shards hold no tokens", pattern);
    }
    if (pack && d->total_tokens < seq_len) {
        int64_t tot = d->total_tokens;
        data_close(d);
        return ul_err(e, "--seq-len %lld: the data (%s) holds only %lld tokens and cannot fill one sample",
                      (long long)seq_len, pattern, (long long)tot);
    }
    return 0;
}

void data_close(DataLoader *d) {
    for (int i = 0; i < d->n_shards; i++) tok_shard_close(&d->shards[i]);
    free(d->shards);
    free(d->pieces);
    free(d->order);
    free(d->sample_first);
    free(d->epoch_first);
    memset(d, 0, sizeof *d);
    d->epoch = -1;
}

static void plan_epoch(DataLoader *d, int64_t epoch) {
    if (d->epoch == epoch) return;
    int64_t n = d->n_pieces;
    if (!d->order) {
        d->order = ul_malloc((size_t)n * sizeof(int64_t));
        d->sample_first = ul_malloc((size_t)(n + 1) * sizeof(int64_t));
    }
    for (int64_t i = 0; i < n; i++) d->order[i] = i;
    if (d->shuffle) {
        UlRng r;
        ul_rng_seed(&r, d->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)epoch + 1);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(ul_rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = d->order[i];
            d->order[i] = d->order[j];
            d->order[j] = t;
        }
    }
    int64_t ns = 0, fill = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = d->pieces[d->order[i]].len;
        if (i == 0 || !d->pack || fill + len > d->seq_len) {
            d->sample_first[ns++] = i;
            fill = 0;
        }
        fill += len;
    }
    d->sample_first[ns] = n;
    d->n_samples = ns;
    d->epoch = epoch;
}

static void sample_reserve(Sample *s, int64_t T, int64_t n_docs) {
    if (T > s->cap) {
        s->tokens = ul_realloc(s->tokens, (size_t)T * sizeof(int32_t));
        s->labels = ul_realloc(s->labels, (size_t)T * sizeof(int32_t));
        s->pos = ul_realloc(s->pos, (size_t)T * sizeof(int32_t));
        s->cap = T;
    }
    s->cu_seqlens = ul_realloc(s->cu_seqlens, (size_t)(n_docs + 2) * sizeof(int64_t));
}

/* Appends one document at token offset `at`; returns the new offset. label[i] is token
 * i+1 of the document when that token is a target (mask NULL: every token is), else -100. */
static int64_t put_doc(Sample *s, int64_t at, const uint32_t *tok32, const int32_t *tok, const uint8_t *mask,
                       int64_t len) {
    if (len <= 0) return at;
    for (int64_t i = 0; i < len; i++) {
        s->tokens[at + i] = tok32 ? (int32_t)tok32[i] : tok[i];
        s->pos[at + i] = (int32_t)i;
    }
    for (int64_t i = 0; i < len; i++) {
        int target = i + 1 < len && (!mask || mask[i + 1]);
        s->labels[at + i] = target ? s->tokens[at + i + 1] : UL_IGNORE_INDEX;
        s->n_valid += target;
    }
    s->cu_seqlens[++s->n_docs] = at + len;
    return at + len;
}

static int64_t padded_len(int64_t n, int64_t pad_multiple, int64_t fixed_T) {
    if (fixed_T > 0) return fixed_T;
    int64_t m = pad_multiple > 0 ? pad_multiple : 1;
    return (n + m - 1) / m * m;
}

static void finish_padding(Sample *s, int64_t at) {
    s->n_real = at;
    if (s->T > at) {
        for (int64_t i = at; i < s->T; i++) {
            s->tokens[i] = 0;
            s->pos[i] = (int32_t)(i - at);
            s->labels[i] = UL_IGNORE_INDEX;
        }
        s->cu_seqlens[++s->n_docs] = s->T;
    }
}

int64_t data_epoch_samples(DataLoader *d) {
    plan_epoch(d, 0);
    return d->n_samples;
}

void data_sample(DataLoader *d, int64_t g, int64_t pad_multiple, int fixed_len, Sample *s) {
    /* the epoch of global sample g: epochs are planned (and their sizes cached) in order */
    if (d->n_epoch_first == 0) {
        d->epoch_first = ul_realloc(d->epoch_first, sizeof(int64_t));
        d->epoch_first[d->n_epoch_first++] = 0;
    }
    while (d->epoch_first[d->n_epoch_first - 1] <= g) {
        plan_epoch(d, d->n_epoch_first - 1);
        d->epoch_first = ul_realloc(d->epoch_first, (size_t)(d->n_epoch_first + 1) * sizeof(int64_t));
        d->epoch_first[d->n_epoch_first] = d->epoch_first[d->n_epoch_first - 1] + d->n_samples;
        d->n_epoch_first++;
    }
    int64_t epoch = 0;
    while (d->epoch_first[epoch + 1] <= g) epoch++;
    plan_epoch(d, epoch);
    int64_t k = g - d->epoch_first[epoch];
    int64_t a = d->sample_first[k], b = d->sample_first[k + 1];
    int64_t n = 0;
    for (int64_t i = a; i < b; i++) n += d->pieces[d->order[i]].len;
    int64_t T = padded_len(n, pad_multiple, fixed_len ? d->seq_len : 0);
    UL_ASSERT(T >= n, "sample of %lld tokens exceeds fixed length %lld", (long long)n, (long long)T);
    sample_reserve(s, T, b - a);
    s->T = T;
    s->n_docs = 0;
    s->n_valid = 0;
    s->cu_seqlens[0] = 0;
    int64_t at = 0;
    for (int64_t i = a; i < b; i++) {
        const DocPiece *p = &d->pieces[d->order[i]];
        const TokShard *sh = &d->shards[p->shard];
        at = put_doc(s, at, sh->tokens + p->start, NULL, sh->mask ? sh->mask + p->start : NULL, p->len);
    }
    finish_padding(s, at);
}

void sample_from_docs(Sample *s, const int32_t *const *docs, const uint8_t *const *masks, const int64_t *lens,
                      int64_t n_docs, int64_t pad_multiple, int64_t fixed_T) {
    int64_t n = 0;
    for (int64_t i = 0; i < n_docs; i++) n += lens[i];
    int64_t T = padded_len(n, pad_multiple, fixed_T);
    UL_ASSERT(T >= n, "documents of %lld tokens exceed length %lld", (long long)n, (long long)T);
    sample_reserve(s, T, n_docs);
    s->T = T;
    s->n_docs = 0;
    s->n_valid = 0;
    s->cu_seqlens[0] = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n_docs; i++) at = put_doc(s, at, NULL, docs[i], masks ? masks[i] : NULL, lens[i]);
    finish_padding(s, at);
}

void sample_free(Sample *s) {
    free(s->tokens);
    free(s->labels);
    free(s->pos);
    free(s->cu_seqlens);
    memset(s, 0, sizeof *s);
}
