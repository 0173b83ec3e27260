/* The data loader (docs/design.md §3): packing, the label shift before sharding, position ids,
 * document bounds, padding, long-document pieces, determinism, and sample sources. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "data/data.h"

/* The loss mask the test gives token value v (doc * 1000 + offset): shard b (documents
 * 10..) has a mask (version 2), shard a none (version 1, all ones). */
static int mask_of(int32_t v) { return v < 10000 || (v % 1000) % 3 != 1; }

/* Checks the invariants of one sample against the documents it claims to hold. */
static void check_sample(const Sample *s, int64_t pad, int64_t seq_len) {
    CHECK(s->T % pad == 0, "T %lld not a multiple of %lld", (long long)s->T, (long long)pad);
    CHECK(s->n_real <= seq_len && s->n_real <= s->T, "n_real %lld", (long long)s->n_real);
    CHECK(s->cu_seqlens[0] == 0 && s->cu_seqlens[s->n_docs] == s->T, "cu_seqlens ends");
    int64_t valid = 0;
    for (int64_t d = 0; d < s->n_docs; d++) {
        int64_t a = s->cu_seqlens[d], b = s->cu_seqlens[d + 1];
        CHECK(b > a, "empty document %lld", (long long)d);
        for (int64_t i = a; i < b; i++) {
            CHECK(s->pos[i] == i - a, "position %lld of doc %lld is %d", (long long)i, (long long)d, s->pos[i]);
            int32_t want = (i + 1 < b && i < s->n_real && mask_of(s->tokens[i + 1])) ? s->tokens[i + 1] : UL_IGNORE_INDEX;
            CHECK(s->labels[i] == want, "label %lld: %d, want %d", (long long)i, s->labels[i], want);
            valid += s->labels[i] != UL_IGNORE_INDEX;
        }
    }
    for (int64_t i = s->n_real; i < s->T; i++) CHECK(s->labels[i] == UL_IGNORE_INDEX, "padding label %lld", (long long)i);
    CHECK(valid == s->n_valid, "n_valid %lld vs %lld", (long long)s->n_valid, (long long)valid);
}

int main(void) {
    char dir[] = "/tmp/ul_test_data_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char p1[256], p2[256], pat[256];
    snprintf(p1, sizeof p1, "%s/a.tok", dir);
    snprintf(p2, sizeof p2, "%s/b.tok", dir);
    snprintf(pat, sizeof pat, "%s/*.tok", dir);
    /* two shards: documents of lengths 1..40 (and one of 100 that must be cut), token = doc*1000 + i */
    UlError e;
    int64_t lens_a[] = {5, 1, 17, 40, 100, 3}, lens_b[] = {12, 0, 33, 7};
    int64_t total = 0;
    for (int f = 0; f < 2; f++) {
        const int64_t *lens = f ? lens_b : lens_a;
        int64_t nd = f ? 4 : 6, n = 0;
        uint64_t off[8] = {0};
        for (int64_t d = 0; d < nd; d++) off[d + 1] = off[d] + (uint64_t)lens[d];
        n = (int64_t)off[nd];
        uint32_t *tok = malloc((size_t)n * sizeof(uint32_t));
        uint8_t *mask = malloc((size_t)n);
        for (int64_t d = 0; d < nd; d++)
            for (int64_t i = 0; i < lens[d]; i++) tok[off[d] + (uint64_t)i] = (uint32_t)((f * 10 + d) * 1000 + i);
        for (int64_t i = 0; i < n; i++) mask[i] = (uint8_t)mask_of((int32_t)tok[i]);
        /* shard a's mask is all ones: written as version 1, as a shard without one */
        CHECK(tok_shard_write(f ? p2 : p1, tok, n, off, nd, 0, mask, &e) == 0, "write shard: %s", e.msg);
        TokShard sh;
        CHECK(tok_shard_open(&sh, f ? p2 : p1, &e) == 0, "open shard: %s", e.msg);
        CHECK(((const uint8_t *)sh.map)[8] == (f ? 2 : 1) && (sh.mask != NULL) == f, "shard %d: version %d", f,
              ((const uint8_t *)sh.map)[8]);
        CHECK(sh.size == (size_t)(32 + 8 * (nd + 1) + 4 * n + (f ? n : 0)), "shard %d: size %zu", f, sh.size);
        CHECK(!f || memcmp(sh.mask, mask, (size_t)n) == 0, "mask read back");
        tok_shard_close(&sh);
        total += n;
        free(tok);
        free(mask);
    }
    int64_t seq_len = 48;
    DataLoader dl;
    CHECK(data_open(&dl, pat, seq_len, 1, 1, 5, &e) == 0, "open: %s", e.msg);
    CHECK(dl.total_tokens == total, "total tokens %lld vs %lld", (long long)dl.total_tokens, (long long)total);
    /* 100 -> 48 + 48 + 4: pieces of at most seq_len, the empty document skipped */
    CHECK(dl.n_pieces == 6 + 2 + 3, "pieces %lld", (long long)dl.n_pieces);
    /* one epoch covers every token exactly once; samples respect the invariants */
    int64_t seen = 0, g = 0;
    Sample s = {0}, s2 = {0};
    int64_t n_samples = dl.n_samples; /* planned at the first call */
    data_sample(&dl, 0, 4, 0, &s);
    n_samples = dl.n_samples;
    CHECK(n_samples > 1 && n_samples < dl.n_pieces, "samples per epoch %lld", (long long)n_samples);
    for (g = 0; g < n_samples; g++) {
        data_sample(&dl, g, 4, 0, &s);
        check_sample(&s, 4, seq_len);
        seen += s.n_real;
        /* every token of a document is (doc id * 1000 + offset within its original document) */
        for (int64_t d = 0; d < s.n_docs; d++)
            for (int64_t i = s.cu_seqlens[d] + 1; i < s.cu_seqlens[d + 1] && i < s.n_real; i++)
                CHECK(s.tokens[i] == s.tokens[i - 1] + 1, "document %lld broken at %lld", (long long)d, (long long)i);
    }
    CHECK(seen == total, "an epoch holds %lld tokens, data has %lld", (long long)seen, (long long)total);
    /* determinism: same (seed, g) -> same sample, also after visiting another epoch */
    data_sample(&dl, 3, 4, 0, &s);
    data_sample(&dl, 3 + 2 * n_samples, 4, 0, &s2);
    data_sample(&dl, 3, 4, 0, &s2);
    CHECK(s.T == s2.T && memcmp(s.tokens, s2.tokens, (size_t)s.T * 4) == 0, "sample 3 not reproducible");
    /* another epoch is another order */
    int differs = 0;
    for (g = 0; g < n_samples && !differs; g++) {
        data_sample(&dl, g, 4, 0, &s);
        data_sample(&dl, g + n_samples, 4, 0, &s2);
        differs = s.T != s2.T || memcmp(s.tokens, s2.tokens, (size_t)s.T * 4) != 0;
    }
    CHECK(differs, "epoch 1 repeats epoch 0");
    /* fixed length pads to seq_len */
    data_sample(&dl, 1, 4, 1, &s);
    CHECK(s.T == seq_len, "fixed length %lld", (long long)s.T);
    check_sample(&s, 4, seq_len);
    data_close(&dl);

    /* one piece per sample, file order */
    CHECK(data_open(&dl, pat, seq_len, 0, 0, 5, &e) == 0, "open: %s", e.msg);
    data_sample(&dl, 0, 1, 0, &s);
    CHECK(s.n_real == 5 && s.tokens[0] == 0 && s.n_docs == 1, "first sample in file order: %lld tokens",
          (long long)s.n_real);
    data_sample(&dl, 4, 1, 0, &s);
    CHECK(s.n_real == 48 && s.tokens[0] == 4000, "a cut document's first piece");
    data_sample(&dl, 5, 1, 0, &s);
    CHECK(s.n_real == 48 && s.tokens[0] == 4048, "its second piece continues the tokens");
    data_close(&dl);

    /* errors name the flag or file */
    CHECK(data_open(&dl, pat, 100000, 1, 1, 5, &e) != 0 && strstr(e.msg, "cannot fill"), "unfillable: %s", e.msg);
    char nomatch[300];
    snprintf(nomatch, sizeof nomatch, "%s/none-*.tok", dir);
    CHECK(data_open(&dl, nomatch, 16, 1, 1, 5, &e) != 0 && strstr(e.msg, "no file matches"), "no match: %s", e.msg);

    /* explicit documents with padding to a multiple */
    int32_t d0[] = {7, 8, 9}, d1[] = {4};
    const int32_t *docs[] = {d0, d1};
    int64_t dl2[] = {3, 1};
    sample_from_docs(&s, docs, NULL, dl2, 2, 4, 0);
    CHECK(s.T == 4 && s.n_docs == 2 && s.n_valid == 2, "from docs: T %lld docs %lld valid %lld", (long long)s.T,
          (long long)s.n_docs, (long long)s.n_valid);
    sample_from_docs(&s, docs, NULL, dl2, 2, 3, 0);
    CHECK(s.T == 6 && s.n_docs == 3 && s.labels[3] == UL_IGNORE_INDEX, "padding doc");
    check_sample(&s, 3, 6);
    /* masks: HF labels [-100, 8, 9] for document 0 give label[t] = token[t+1] where it is not -100 */
    uint8_t m0[] = {1, 0, 1}, m1[] = {1};
    const uint8_t *masks[] = {m0, m1};
    sample_from_docs(&s, docs, masks, dl2, 2, 1, 0);
    CHECK(s.T == 4 && s.labels[0] == UL_IGNORE_INDEX && s.labels[1] == 9 && s.labels[2] == UL_IGNORE_INDEX &&
              s.labels[3] == UL_IGNORE_INDEX && s.n_valid == 1,
          "masked labels %d %d %d %d, valid %lld", s.labels[0], s.labels[1], s.labels[2], s.labels[3],
          (long long)s.n_valid);
    sample_free(&s);
    sample_free(&s2);
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    return tu_finish("test_data");
}
