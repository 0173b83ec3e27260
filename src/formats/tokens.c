#include "formats/tokens.h"

#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"

/* doc_offsets and tokens are used in place, as host integers. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards assume a little-endian host");

/* Checks offsets (monotone, 0 .. n_tokens) and tokens (< vocab_size when known). */
static int check_contents(const char *path, const uint64_t *off, int64_t n_docs, const uint32_t *tok,
                          int64_t n_tokens, uint32_t vocab_size, const uint8_t *mask, UlError *e) {
    if (off[0] != 0) return ul_err(e, "%s: doc_offsets[0] is %llu, must be 0", path, (unsigned long long)off[0]);
    for (int64_t i = 0; i < n_docs; i++)
        if (off[i + 1] < off[i])
            return ul_err(e, "%s: doc_offsets decrease at document %lld (%llu < %llu)", path, (long long)i,
                          (unsigned long long)off[i + 1], (unsigned long long)off[i]);
    if (off[n_docs] != (uint64_t)n_tokens)
        return ul_err(e, "%s: doc_offsets end at %llu, but n_tokens is %lld", path,
                      (unsigned long long)off[n_docs], (long long)n_tokens);
    if (vocab_size > 0)
        for (int64_t i = 0; i < n_tokens; i++)
            if (tok[i] >= vocab_size)
                return ul_err(e, "%s: token %lld is %u, outside the vocabulary (size %u)", path, (long long)i, tok[i],
                              vocab_size);
    if (mask)
        for (int64_t i = 0; i < n_tokens; i++)
            if (mask[i] > 1)
                return ul_err(e, "%s: loss mask of token %lld is %u, must be 0 or 1", path, (long long)i, mask[i]);
    return 0;
}

int tok_shard_open(TokShard *s, const char *path, UlError *e) {
    memset(s, 0, sizeof *s);
    if (ul_map_file(path, &s->map, &s->size, e)) return -1;
    s->path = ul_strdup(path);
    const uint8_t *p = s->map; /* [size] */
    int rc = 0;
    uint64_t n_docs = 0, n_tokens = 0;
    uint32_t version = 0;
    if (s->size < UL_TOK_HEADER_BYTES)
        rc = ul_err(e, "%s: truncated: %zu bytes, a token shard header needs %d", path, s->size, UL_TOK_HEADER_BYTES);
    else if (memcmp(p, UL_TOK_MAGIC, 8) != 0)
        rc = ul_err(e, "%s: not a token shard (bad magic)", path);
    else if ((version = ul_load_le32(p + 8)) < 1 || version > UL_TOK_VERSION)
        rc = ul_err(e, "%s: unsupported token shard version %u (expected 1 to %u)", path, version, UL_TOK_VERSION);
    if (rc == 0) {
        s->vocab_size = ul_load_le32(p + 12);
        n_docs = ul_load_le64(p + 16);
        n_tokens = ul_load_le64(p + 24);
        /* Expected size, overflow-checked: header + 8*(n_docs+1) + 4*n_tokens (+ n_tokens, version 2). */
        uint64_t need = UL_TOK_HEADER_BYTES, a, b, m = version >= 2 ? n_tokens : 0;
        if (n_docs >= (1ull << 60) || n_tokens >= (1ull << 60) || __builtin_mul_overflow(n_docs + 1, 8ull, &a) ||
            __builtin_mul_overflow(n_tokens, 4ull, &b) || __builtin_add_overflow(need, a, &need) ||
            __builtin_add_overflow(need, b, &need) || __builtin_add_overflow(need, m, &need))
            rc = ul_err(e, "%s: implausible header (n_docs %llu, n_tokens %llu)", path, (unsigned long long)n_docs,
                        (unsigned long long)n_tokens);
        else if (need != (uint64_t)s->size)
            rc = ul_err(e, "%s: size mismatch: header (n_docs %llu, n_tokens %llu) implies %llu bytes, file has %zu",
                        path, (unsigned long long)n_docs, (unsigned long long)n_tokens, (unsigned long long)need,
                        s->size);
    }
    if (rc == 0) {
        s->n_docs = (int64_t)n_docs;
        s->n_tokens = (int64_t)n_tokens;
        s->doc_offsets = (const uint64_t *)(p + UL_TOK_HEADER_BYTES);               /* 8-aligned in the map */
        s->tokens = (const uint32_t *)(p + UL_TOK_HEADER_BYTES + 8 * (n_docs + 1)); /* 4-aligned */
        s->mask = version >= 2 ? (const uint8_t *)(s->tokens + n_tokens) : NULL;
        rc = check_contents(path, s->doc_offsets, s->n_docs, s->tokens, s->n_tokens, s->vocab_size, s->mask, e);
    }
    if (rc) tok_shard_close(s);
    return rc;
}

void tok_shard_close(TokShard *s) {
    ul_unmap_file(s->map, s->size);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int tok_shard_write(const char *path, const uint32_t *tokens, int64_t n_tokens, const uint64_t *doc_offsets,
                    int64_t n_docs, uint32_t vocab_size, const uint8_t *mask, UlError *e) {
    if (n_tokens < 0 || n_docs < 0) return ul_err(e, "%s: negative token or document count", path);
    if (check_contents(path, doc_offsets, n_docs, tokens, n_tokens, vocab_size, mask, e)) return -1;
    int64_t ones = 0;
    for (int64_t i = 0; mask && i < n_tokens; i++) ones += mask[i];
    if (ones == n_tokens) mask = NULL; /* all ones: version 1 */
    uint8_t hdr[UL_TOK_HEADER_BYTES];
    memcpy(hdr, UL_TOK_MAGIC, 8);
    ul_store_le32(hdr + 8, mask ? 2u : 1u);
    ul_store_le32(hdr + 12, vocab_size);
    ul_store_le64(hdr + 16, (uint64_t)n_docs);
    ul_store_le64(hdr + 24, (uint64_t)n_tokens);
    UlAtomicFile af;
    if (ul_afile_open(&af, path, e)) return -1;
    if (ul_afile_write(&af, hdr, sizeof hdr, e) ||
        ul_afile_write(&af, doc_offsets, 8 * (size_t)(n_docs + 1), e) ||
        ul_afile_write(&af, tokens, 4 * (size_t)n_tokens, e) ||
        (mask && ul_afile_write(&af, mask, (size_t)n_tokens, e))) {
        ul_afile_abort(&af);
        return -1;
    }
    return ul_afile_commit(&af, e);
}

/* ---------------------------------------------------------------- byte tokenizer */

typedef struct {
    uint32_t *tok; /* [cap_tok] */
    uint64_t *off; /* [cap_off]; off[0] = 0, one more entry per document */
    int64_t n_tok, n_docs, cap_tok, cap_off;
} DocBuilder;

static void add_doc(DocBuilder *b, const uint8_t *bytes, int64_t n) {
    if (b->n_tok + n > b->cap_tok) {
        b->cap_tok = 2 * (b->n_tok + n) + 1024;
        b->tok = ul_realloc(b->tok, (size_t)b->cap_tok * sizeof *b->tok);
    }
    if (b->n_docs + 2 > b->cap_off) {
        b->cap_off = 2 * b->cap_off + 16;
        b->off = ul_realloc(b->off, (size_t)b->cap_off * sizeof *b->off);
    }
    for (int64_t i = 0; i < n; i++) b->tok[b->n_tok + i] = bytes[i];
    b->n_tok += n;
    b->off[0] = 0;
    b->off[++b->n_docs] = (uint64_t)b->n_tok;
}

static int blank_line(const uint8_t *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

void ul_blank_line_blocks(const uint8_t *p, int64_t n, void (*fn)(void *ctx, int64_t start, int64_t len), void *ctx) {
    int64_t doc_start = -1, doc_end = 0;
    for (int64_t ls = 0; ls < n;) {
        int64_t le = ls;
        while (le < n && p[le] != '\n') le++; /* line is p[ls, le) */
        if (!blank_line(p + ls, le - ls)) {
            if (doc_start < 0) doc_start = ls;
            doc_end = le > ls && p[le - 1] == '\r' ? le - 1 : le;
        } else if (doc_start >= 0) {
            fn(ctx, doc_start, doc_end - doc_start);
            doc_start = -1;
        }
        ls = le + 1;
    }
    if (doc_start >= 0) fn(ctx, doc_start, doc_end - doc_start);
}

typedef struct {
    DocBuilder *b;
    const uint8_t *p;
} BlankCtx;

static void add_block(void *ctx, int64_t start, int64_t len) {
    BlankCtx *c = ctx;
    add_doc(c->b, c->p + start, len);
}

static void split_blank(DocBuilder *b, const uint8_t *p, int64_t n) {
    BlankCtx c = {b, p};
    ul_blank_line_blocks(p, n, add_block, &c);
}

int ul_tokenize_bytes(const char *const *files, int n_files, int split_blank_lines, const char *out, UlError *e) {
    DocBuilder b = {0};
    int rc = 0;
    for (int f = 0; f < n_files && rc == 0; f++) {
        char *text;
        size_t len;
        if ((rc = ul_read_file(files[f], (size_t)1 << 40, &text, &len, e))) break;
        if (split_blank_lines) split_blank(&b, (const uint8_t *)text, (int64_t)len);
        else add_doc(&b, (const uint8_t *)text, (int64_t)len);
        free(text);
    }
    if (rc == 0) {
        uint64_t zero = 0;
        rc = tok_shard_write(out, b.tok, b.n_tok, b.n_docs ? b.off : &zero, b.n_docs, 256, NULL, e);
    }
    free(b.tok);
    free(b.off);
    return rc;
}
