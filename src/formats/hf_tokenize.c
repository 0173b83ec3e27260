#define _GNU_SOURCE /* memmem */
#include "formats/hf_tokenize.h"

#include <cjson/cJSON.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/fileio.h"
#include "formats/hf_tokenizer.h"
#include "formats/tokens.h"

/* The documents of one input file: spans of sanitized UTF-8. */
typedef struct {
    const char **p; /* [n] */
    size_t *len;    /* [n] */
    int64_t n, cap;
    char **owned; /* JSONL fields */
    int64_t n_owned;
} Docs;

static void docs_add(Docs *d, const char *p, size_t len) {
    if (d->n == d->cap) {
        d->cap = 2 * d->cap + 64;
        d->p = ul_realloc(d->p, (size_t)d->cap * sizeof *d->p);
        d->len = ul_realloc(d->len, (size_t)d->cap * sizeof *d->len);
        d->owned = ul_realloc(d->owned, (size_t)d->cap * sizeof *d->owned);
    }
    d->p[d->n] = p;
    d->len[d->n++] = len;
}

static void docs_clear(Docs *d) {
    for (int64_t i = 0; i < d->n_owned; i++) free(d->owned[i]);
    d->n = d->n_owned = 0;
}

typedef struct {
    Docs *d;
    const char *text;
} BlockCtx;

static void add_block(void *ctx, int64_t start, int64_t len) {
    BlockCtx *c = ctx;
    docs_add(c->d, c->text + start, (size_t)len);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* cJSON strings end at NUL, so a \u0000 escape is parsed as U+10FFFF (a noncharacter,
 * refused when the line has one of its own) and turned back into NUL afterwards. */
#define NUL_ESC "\\udbff\\udfff"
#define NONCHAR "\xF4\x8F\xBF\xBF"

/* s[n] with every \u0000 escape replaced (malloc'd), or NULL when it has none. */
static char *escape_nul(const char *s, size_t n, int *clash) {
    size_t cnt = 0;
    *clash = memmem(s, n, NONCHAR, 4) != NULL;
    for (size_t k = 0; k + 1 < n; k++)
        if (s[k] == '\\') {
            if (k + 5 < n && memcmp(s + k + 1, "u0000", 5) == 0) cnt++;
            if (k + 11 < n && strncasecmp(s + k, NUL_ESC, 12) == 0) *clash = 1;
            k++;
        }
    if (cnt == 0) return NULL;
    char *o = ul_malloc(n + 7 * cnt + 1), *q = o;
    for (size_t k = 0; k < n; k++) {
        if (s[k] == '\\' && k + 5 < n && memcmp(s + k + 1, "u0000", 5) == 0) {
            memcpy(q, NUL_ESC, 12);
            q += 12;
            k += 5;
            continue;
        }
        if (s[k] == '\\' && k + 1 < n) *q++ = s[k++];
        *q++ = s[k];
    }
    *q = 0;
    return o;
}

typedef enum { L_OK, L_JSON, L_TRAIL, L_NOT_OBJECT, L_NO_FIELD, L_NUL_CLASH } LineStatus;

typedef struct {
    size_t a, b;  /* the line is text[a, b) */
    int64_t line; /* 1-based */
    LineStatus st;
    char *doc; /* L_OK: the sanitized document */
    size_t len, bad_utf8;
} Line;

/* One JSONL line s[n] -> its document (thread-safe). */
static LineStatus parse_line(const char *s, size_t n, const char *field, Line *l) {
    int clash;
    char *esc = escape_nul(s, n, &clash);
    if (esc && clash) {
        free(esc);
        return L_NUL_CLASH;
    }
    const char *src = esc ? esc : s, *end = NULL;
    size_t srclen = esc ? strlen(esc) : n;
    cJSON *j = cJSON_ParseWithLengthOpts(src, srclen, &end, 0);
    LineStatus st = L_OK;
    if (!j) st = L_JSON;
    else {
        while (end && end < src + srclen && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
        if (end && end < src + srclen) st = L_TRAIL;
        else if (!cJSON_IsObject(j)) st = L_NOT_OBJECT;
        else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, field))) st = L_NO_FIELD;
    }
    free(esc);
    if (st == L_OK) {
        const char *v = cJSON_GetObjectItemCaseSensitive(j, field)->valuestring;
        l->bad_utf8 = ul_utf8_sanitize(v, strlen(v), &l->doc, &l->len);
        if (memmem(l->doc, l->len, NONCHAR, 4)) { /* back to NUL */
            size_t w = 0;
            for (size_t k = 0; k < l->len; k++) {
                if (k + 4 <= l->len && memcmp(l->doc + k, NONCHAR, 4) == 0) {
                    l->doc[w++] = 0;
                    k += 3;
                } else l->doc[w++] = l->doc[k];
            }
            l->len = w;
        }
    }
    cJSON_Delete(j);
    return st;
}

/* JSONL: one document per line from its string field; blank lines are ignored. Lines
 * are parsed in parallel; the first bad one (in file order) is the error. */
static int read_jsonl(const HfTokenizeOptions *o, const char *path, const char *text, size_t len, Docs *d,
                      int64_t *bad_lines, size_t *bad_utf8, UlError *e) {
    const char *field = o->field ? o->field : "text";
    Line *lines = NULL;
    int64_t n = 0, cap = 0, line = 0;
    for (size_t ls = 0; ls < len;) {
        const char *nl = memchr(text + ls, '\n', len - ls);
        size_t le = nl ? (size_t)(nl - text) : len, a = ls;
        line++;
        while (a < le && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        ls = le + 1;
        if (a == le) continue;
        if (n == cap) {
            cap = 2 * cap + 1024;
            lines = ul_realloc(lines, (size_t)cap * sizeof *lines);
        }
        lines[n++] = (Line){.a = a, .b = le, .line = line};
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; i++) lines[i].st = parse_line(text + lines[i].a, lines[i].b - lines[i].a, field, &lines[i]);
    static const char *why[] = {"", "not valid JSON", "text after the JSON value", "not a JSON object", "",
                                "a \\u0000 and a U+10FFFF in one line are not supported"};
    int rc = 0;
    for (int64_t i = 0; i < n; i++) {
        Line *l = &lines[i];
        if (rc) {
            free(l->doc);
        } else if (l->st == L_OK) {
            *bad_utf8 += l->bad_utf8;
            docs_add(d, l->doc, l->len);
            d->owned[d->n_owned++] = l->doc;
        } else if (!o->skip_bad_lines || l->st == L_NUL_CLASH) {
            if (l->st == L_NO_FIELD)
                rc = ul_err(e, "%s:%lld: no string field \"%s\"%s (--skip-bad-lines skips such lines)", path,
                            (long long)l->line, field, o->field ? "" : "; --field NAME reads another key");
            else
                rc = ul_err(e, "%s:%lld: %s%s", path, (long long)l->line, why[l->st],
                            l->st == L_NUL_CLASH ? "" : " (--skip-bad-lines skips such lines)");
        } else (*bad_lines)++;
    }
    free(lines);
    return rc;
}

int ul_tokenize_hf(const HfTokenizeOptions *o, UlError *e) {
    HfTokenizer *t;
    if (hf_tok_load(o->tokenizer, o->bos_eos_from_config, &t, e)) return -1;
    double t0 = ul_now();
    int nt = omp_get_max_threads();
    HfTokScratch **sc = ul_calloc((size_t)nt, sizeof *sc);
    for (int i = 0; i < nt; i++) sc[i] = hf_tok_scratch_new(t);
    Docs d = {0};
    HfIds all = {0};
    uint64_t *off = ul_malloc(sizeof *off);
    int64_t n_docs = 0, bad_lines = 0, in_bytes = 0;
    size_t bad_utf8 = 0;
    off[0] = 0;
    int rc = 0;
    for (int f = 0; f < o->n_files && rc == 0; f++) {
        const char *path = o->files[f];
        char *raw, *text = NULL;
        size_t rlen, len = 0;
        if ((rc = ul_read_file(path, (size_t)1 << 40, &raw, &rlen, e))) break;
        in_bytes += (int64_t)rlen;
        docs_clear(&d);
        if (ends_with(path, ".jsonl")) {
            rc = read_jsonl(o, path, raw, rlen, &d, &bad_lines, &bad_utf8, e);
        } else {
            bad_utf8 += ul_utf8_sanitize(raw, rlen, &text, &len);
            if (o->split_blank_lines) {
                BlockCtx c = {&d, text};
                ul_blank_line_blocks((const uint8_t *)text, (int64_t)len, add_block, &c);
            } else docs_add(&d, text, len);
        }
        free(raw);
        if (rc == 0) {
            HfIds *ids = ul_calloc((size_t)d.n + 1, sizeof *ids); /* [d.n] */
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t i = 0; i < d.n; i++) hf_tok_encode(t, sc[omp_get_thread_num()], d.p[i], d.len[i], &ids[i]);
            off = ul_realloc(off, (size_t)(n_docs + d.n + 1) * sizeof *off);
            for (int64_t i = 0; i < d.n; i++) {
                if (all.n + ids[i].n > all.cap) {
                    all.cap = 2 * (all.n + ids[i].n) + 4096;
                    all.v = ul_realloc(all.v, (size_t)all.cap * sizeof *all.v);
                }
                if (ids[i].n) memcpy(all.v + all.n, ids[i].v, (size_t)ids[i].n * sizeof *all.v);
                all.n += ids[i].n;
                free(ids[i].v);
                off[++n_docs] = (uint64_t)all.n;
            }
            free(ids);
        }
        free(text);
    }
    docs_clear(&d);
    free(d.p);
    free(d.len);
    free(d.owned);
    if (rc == 0) rc = tok_shard_write(o->out, all.v, all.n, off, n_docs, hf_tok_vocab_size(t), NULL, e);
    if (rc == 0) {
        double dt = ul_now() - t0;
        fprintf(stderr,
                "tokenize: %d file(s), %lld documents, %lld tokens in %.2f s (%.0f tokens/s, %d threads) -> %s\n"
                "tokenize: vocab size %u; special tokens per document: %s\n",
                o->n_files, (long long)n_docs, (long long)all.n, dt, dt > 0 ? (double)all.n / dt : 0.0, nt, o->out,
                hf_tok_vocab_size(t), hf_tok_specials_note(t));
        if (bad_lines) fprintf(stderr, "tokenize: skipped %lld malformed JSONL line(s)\n", (long long)bad_lines);
        if (bad_utf8)
            fprintf(stderr, "tokenize: replaced %zu invalid UTF-8 sequence(s) by U+FFFD\n", bad_utf8);
    }
    (void)in_bytes;
    for (int i = 0; i < nt; i++) hf_tok_scratch_free(sc[i]);
    free(sc);
    free(all.v);
    free(off);
    hf_tok_free(t);
    return rc;
}

/* JSON string literal of s[n] (valid UTF-8): quotes, backslashes and control characters escaped. */
static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

int ul_detokenize(const char *tokenizer, const char *const *shards, int n_shards, int keep_special, int jsonl,
                  const char *out, UlError *e) {
    HfTokenizer *t;
    if (hf_tok_load(tokenizer, 0, &t, e)) return -1;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = out ? open_memstream(&buf, &blen) : stdout;
    int rc = 0;
    for (int s = 0; s < n_shards && rc == 0; s++) {
        TokShard sh;
        if ((rc = tok_shard_open(&sh, shards[s], e))) break;
        if (sh.vocab_size != 0 && sh.vocab_size != hf_tok_vocab_size(t))
            rc = ul_err(e, "%s: vocab_size %u, but the tokenizer %s has %u: made with another tokenizer?", shards[s],
                        sh.vocab_size, tokenizer, hf_tok_vocab_size(t));
        for (int64_t i = 0; i < sh.n_docs && rc == 0; i++) {
            char *text;
            size_t n;
            UlError de;
            const uint32_t *ids = sh.tokens + sh.doc_offsets[i];
            int64_t nid = (int64_t)(sh.doc_offsets[i + 1] - sh.doc_offsets[i]);
            if (hf_tok_decode(t, ids, nid, !keep_special, &text, &n, &de)) {
                rc = ul_err(e, "%s: document %lld: %s", shards[s], (long long)i, de.msg);
                break;
            }
            if (jsonl) {
                fputs("{\"text\": ", f);
                json_string(f, text, n);
                fputs("}\n", f);
            } else {
                fwrite(text, 1, n, f);
                fputs("\n\n", f);
            }
            free(text);
        }
        tok_shard_close(&sh);
    }
    if (out) {
        fclose(f);
        if (rc == 0) rc = ul_write_file_atomic(out, buf, blen, e);
        free(buf);
    } else fflush(stdout);
    hf_tok_free(t);
    return rc;
}
