/* Hugging Face tokenizer.json: loading, encoding, decoding (see hf_tokenizer.h).
 *
 * Encoding follows tokenizers' pipeline for one sequence:
 *   1. added tokens with "normalized": false are cut out of the raw text;
 *   2. each remaining segment is normalized, then the "normalized": true added tokens
 *      are cut out of it;
 *   3. the pre-tokenizer splits each remaining piece into words;
 *   4. the BPE model turns each word into ids (heap-ordered merges, a per-thread cache);
 *   5. the post-processor adds its special ids around the sequence.
 * Strings live in a per-call byte arena (HfTokScratch.arena); pieces are offsets into it. */
#include "formats/hf_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include "formats/fileio.h"

/* ---------------------------------------------------------------- byte buffers */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_reserve(Buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    b->cap = 2 * (b->n + extra) + 256;
    b->p = ul_realloc(b->p, b->cap);
}
/* s may point into b itself (the arena copies its own strings). */
static void buf_add(Buf *b, const void *s, size_t n) {
    const char *c = s;
    if (b->p && c >= b->p && c < b->p + b->cap) {
        size_t off = (size_t)(c - b->p);
        buf_reserve(b, n + 1);
        c = b->p + off;
    } else buf_reserve(b, n + 1);
    memmove(b->p + b->n, c, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void buf_addc(Buf *b, char c) { buf_add(b, &c, 1); }

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n), 0 if invalid. Also returns the longest
 * valid prefix of an invalid sequence in *prefix (the "maximal subpart", >= 1). */
static size_t utf8_valid_len(const uint8_t *s, size_t n, size_t *prefix) {
    uint8_t c = s[0];
    *prefix = 1;
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) return 0;
        uint8_t d = s[i];
        if (i == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
        *prefix = i + 1;
    }
    return need + 1;
}

size_t ul_utf8_sanitize(const char *in, size_t n, char **out, size_t *out_len) {
    Buf b = {0};
    buf_reserve(&b, n + 1);
    size_t bad = 0, i = 0;
    const uint8_t *s = (const uint8_t *)in;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] < 0x80) i++;
        if (i > start) buf_add(&b, s + start, i - start);
        if (i >= n) break;
        size_t prefix, l = utf8_valid_len(s + i, n - i, &prefix);
        if (l) {
            buf_add(&b, s + i, l);
            i += l;
        } else {
            buf_add(&b, "\xEF\xBF\xBD", 3);
            bad++;
            i += prefix;
        }
    }
    if (!b.p) buf_add(&b, "", 0);
    *out = b.p;
    *out_len = b.n;
    return bad;
}

/* Length of the (valid) UTF-8 character starting with byte c. */
static inline size_t u8len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static uint32_t u8decode(const uint8_t *s, size_t *len) {
    size_t l = u8len(s[0]);
    *len = l;
    if (l == 1) return s[0];
    uint32_t c = s[0] & (0xFF >> (l + 1));
    for (size_t i = 1; i < l; i++) c = (c << 6) | (s[i] & 0x3F);
    return c;
}

/* GPT-2's byte <-> printable character map of the ByteLevel pre-tokenizer and decoder:
 * printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order. */
static uint32_t g_byte_char[256];
static int16_t g_char_byte[324]; /* code point -> byte, -1 if none */

static void byte_map_init(void) {
    static int done = 0;
    if (done) return; /* idempotent; first called before any thread starts */
    int n = 0;
    for (int c = 0; c < 324; c++) g_char_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        g_byte_char[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        g_char_byte[g_byte_char[b]] = (int16_t)b;
    }
    done = 1;
}

/* ---------------------------------------------------------------- hash maps */

static inline uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ (v * 0xC4CEB9FE1A85EC53ull)) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ (v * 0xC4CEB9FE1A85EC53ull)) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    return h;
}

/* String -> int32 value, open addressing; keys copied into an arena. */
typedef struct {
    uint64_t h;
    uint32_t off, len; /* len == UINT32_MAX: empty slot */
    int32_t val;
} SmSlot;
typedef struct {
    SmSlot *slots; /* [cap] */
    size_t cap, n;
    Buf keys;
} StrMap;

static void sm_init(StrMap *m, size_t expect) {
    m->cap = 64;
    while (m->cap < 2 * expect + 16) m->cap *= 2;
    m->slots = ul_malloc(m->cap * sizeof *m->slots);
    for (size_t i = 0; i < m->cap; i++) m->slots[i].len = UINT32_MAX;
    m->n = 0;
    m->keys = (Buf){0};
}
static void sm_free(StrMap *m) {
    free(m->slots);
    free(m->keys.p);
    memset(m, 0, sizeof *m);
}
static SmSlot *sm_find(const StrMap *m, const char *k, size_t n, uint64_t h) {
    size_t i = h & (m->cap - 1);
    for (;;) {
        SmSlot *s = &m->slots[i];
        if (s->len == UINT32_MAX) return s;
        if (s->h == h && s->len == n && memcmp(m->keys.p + s->off, k, n) == 0) return s;
        i = (i + 1) & (m->cap - 1);
    }
}
static int sm_get(const StrMap *m, const char *k, size_t n, int32_t *val) {
    if (!m->slots) return 0;
    SmSlot *s = sm_find(m, k, n, hash_bytes(k, n));
    if (s->len == UINT32_MAX) return 0;
    *val = s->val;
    return 1;
}
static void sm_grow(StrMap *m) {
    SmSlot *old = m->slots;
    size_t oc = m->cap;
    m->cap *= 2;
    m->slots = ul_malloc(m->cap * sizeof *m->slots);
    for (size_t i = 0; i < m->cap; i++) m->slots[i].len = UINT32_MAX;
    for (size_t i = 0; i < oc; i++)
        if (old[i].len != UINT32_MAX) {
            size_t j = old[i].h & (m->cap - 1);
            while (m->slots[j].len != UINT32_MAX) j = (j + 1) & (m->cap - 1);
            m->slots[j] = old[i];
        }
    free(old);
}
/* Inserts or overwrites. */
static void sm_put(StrMap *m, const char *k, size_t n, int32_t val) {
    if (2 * (m->n + 1) > m->cap) sm_grow(m);
    uint64_t h = hash_bytes(k, n);
    SmSlot *s = sm_find(m, k, n, h);
    if (s->len == UINT32_MAX) {
        s->h = h;
        s->off = (uint32_t)m->keys.n;
        s->len = (uint32_t)n;
        buf_add(&m->keys, k, n);
        m->n++;
    }
    s->val = val;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* UINT64_MAX: empty */
    uint32_t rank, id;
} MergeSlot;
typedef struct {
    MergeSlot *slots;
    size_t cap;
} MergeMap;

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}
static MergeSlot *mm_find(const MergeMap *m, uint64_t key) {
    size_t i = mix64(key) & (m->cap - 1);
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}
static inline const MergeSlot *mm_get(const MergeMap *m, uint32_t a, uint32_t b) {
    const MergeSlot *s = mm_find(m, (uint64_t)a << 32 | b);
    return s->key == UINT64_MAX ? NULL : s;
}

/* ---------------------------------------------------------------- patterns */

/* A pattern of tokenizers' Split / Replace: a literal string or an Oniguruma regex run
 * with PCRE2 (translated where the two disagree, refused where they might). */
typedef struct {
    char *lit; /* literal (NULL for a regex) */
    size_t lit_len;
    pcre2_code *re;
} Pattern;

/* Oniguruma -> PCRE2. \s and \S become Oniguruma's Unicode white space ([\t-\r\x85\p{Z}];
 * PCRE2's \s also takes U+180E); escapes whose meaning differs are refused. */
#define ONIG_SPACE "\\t-\\r\\x{85}\\p{Z}"
static int onig_to_pcre2(const char *pat, size_t n, Buf *out, const char *where, UlError *e) {
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[++i];
            const char *rep = d == 's' ? (in_class ? ONIG_SPACE : "[" ONIG_SPACE "]") : "[^" ONIG_SPACE "]";
            if (d == 's' || (d == 'S' && !in_class)) buf_add(out, rep, strlen(rep));
            else if (strchr("SwWbBhHXRK", d))
                return ul_err(e, "%s: regex escape \\%c is not supported (its meaning differs between Oniguruma "
                              "and PCRE2)", where, d);
            else {
                buf_addc(out, '\\');
                buf_addc(out, d);
            }
            continue;
        }
        if (in_class && c == '[' && !(i + 1 < n && pat[i + 1] == ':'))
            return ul_err(e, "%s: nested character classes are not supported", where);
        if (in_class && c == '&' && i + 1 < n && pat[i + 1] == '&')
            return ul_err(e, "%s: character class intersection (&&) is not supported", where);
        if (!in_class && c == '[') {
            in_class = 1;
            buf_addc(out, c);
            if (i + 1 < n && pat[i + 1] == '^') buf_addc(out, pat[++i]);
            if (i + 1 < n && pat[i + 1] == ']') buf_addc(out, pat[++i]); /* a leading ] is literal */
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        buf_addc(out, c);
    }
    if (!out->p) buf_add(out, "", 0);
    return 0;
}

/* JSON {"String": "..."} or {"Regex": "..."}. */
static int pattern_parse(const cJSON *j, Pattern *p, const char *where, UlError *e) {
    memset(p, 0, sizeof *p);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    if (cJSON_IsString(s)) {
        p->lit_len = strlen(s->valuestring);
        if (p->lit_len == 0) return ul_err(e, "%s: an empty String pattern is not supported", where);
        p->lit = ul_strdup(s->valuestring);
        return 0;
    }
    if (!cJSON_IsString(r)) return ul_err(e, "%s: expected {\"String\": ...} or {\"Regex\": ...}", where);
    Buf t = {0};
    if (onig_to_pcre2(r->valuestring, strlen(r->valuestring), &t, where, e)) {
        free(t.p);
        return -1;
    }
    int err;
    PCRE2_SIZE off;
    p->re = pcre2_compile((PCRE2_SPTR)t.p, t.n, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    free(t.p);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return ul_err(e, "%s: regex \"%s\" does not compile with PCRE2: %s", where, r->valuestring, (char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    return 0;
}

static int pattern_regex(Pattern *p, const char *regex) {
    int err;
    PCRE2_SIZE off;
    memset(p, 0, sizeof *p);
    p->re = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!p->re) return -1;
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);
    return 0;
}

static void pattern_free(Pattern *p) {
    free(p->lit);
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

struct HfTokScratch;
static pcre2_match_data *scratch_md(struct HfTokScratch *s);
static pcre2_match_context *scratch_mctx(struct HfTokScratch *s);

/* Next non-empty match in s[from..n): 1 and [*ms, *me), or 0. Empty regex matches are
 * skipped (they never make a piece). */
static int pattern_next(const Pattern *p, struct HfTokScratch *sc, const char *s, size_t n, size_t from, size_t *ms,
                        size_t *me) {
    if (p->lit) {
        if (n < p->lit_len) return 0;
        for (size_t i = from; i + p->lit_len <= n; i++) {
            const char *q = memchr(s + i, p->lit[0], n - p->lit_len + 1 - i);
            if (!q) return 0;
            i = (size_t)(q - s);
            if (memcmp(q, p->lit, p->lit_len) == 0) {
                *ms = i;
                *me = i + p->lit_len;
                return 1;
            }
        }
        return 0;
    }
    pcre2_match_data *md = scratch_md(sc);
    while (from <= n) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, scratch_mctx(sc));
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            UL_FATAL("PCRE2 match failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        if (ov[0] >= n) return 0;
        from = ov[0] + u8len((uint8_t)s[ov[0]]); /* empty match: go on after the next character */
    }
    return 0;
}

/* ---------------------------------------------------------------- components */

typedef enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_PREPEND, N_REPLACE } NormKind;
typedef struct {
    NormKind kind;
    char *s; /* Prepend's string / Replace's content */
    size_t s_len;
    Pattern pat;
} Norm;

typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIG } SplitBehavior;
typedef enum { P_SPLIT, P_PREFIX_SPACE, P_METASPACE } PreKind;
typedef struct {
    PreKind kind;
    Pattern pat;
    SplitBehavior behavior;
    int invert;
    char rep[8]; /* Metaspace replacement (UTF-8) */
    size_t rep_len;
    int prepend; /* Metaspace: 0 never, 1 always, 2 first */
    int split;
} Pre;

typedef enum { D_BYTELEVEL, D_METASPACE, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP } DecKind;
typedef struct {
    DecKind kind;
    Pattern pat;
    char *content; /* Replace's content / Strip's or Metaspace's character */
    size_t content_len;
    int prepend; /* Metaspace */
    int64_t start, stop;
} Dec;

typedef struct {
    char *content;
    size_t len;
    uint32_t id;
    int special, normalized;
    int single_word, lstrip, rstrip;
} AddedTok;

/* Leftmost-longest matcher over a set of added tokens, bucketed by first byte. */
typedef struct {
    int32_t *ix;  /* token indices, sorted by first byte then length (longest first) */
    int n;
    int32_t start[257]; /* ix[start[b] .. start[b+1]) begin with byte b */
} AddedSet;

struct HfTokenizer {
    /* model */
    StrMap vocab; /* model-space string (raw bytes in byte-level mode) -> id */
    char **id_str; /* [n_ids] the vocabulary string of each id (added tokens included), NULL if none */
    uint32_t n_ids;
    uint8_t *is_special; /* [n_ids] decode's skip_special_tokens drops these */
    MergeMap merges;
    int byte_level, byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;                /* -1: none */
    int32_t byte_id[256];          /* byte-level mode: id of the one-byte word, -1 if none */
    int32_t fallback_id[256];      /* "<0xXX>" ids, -1 if none */
    /* pipeline */
    AddedTok *added;
    int n_added;
    AddedSet raw_set, norm_set;
    Norm *norms;
    int n_norms;
    Pre *pres;
    int n_pres;
    Dec *decs;
    int n_decs;
    int has_decoder;
    pcre2_code *re_space, *re_word; /* one character of tokenizers' (Rust regex) \s and \w */
    uint32_t *pre_ids, *post_ids; /* post-processor: ids before / after the sequence */
    int n_pre_ids, n_post_ids;
    char note[512];
};

/* ---------------------------------------------------------------- scratch */

typedef struct {
    size_t off, len; /* into the arena */
    int at0;         /* starts at offset 0 of the original text (Metaspace prepend_scheme "first") */
} Piece;

typedef struct {
    Piece *v;
    size_t n, cap;
} Pieces;

static void pieces_push(Pieces *p, size_t off, size_t len, int at0) {
    if (len == 0) return;
    if (p->n == p->cap) {
        p->cap = 2 * p->cap + 64;
        p->v = ul_realloc(p->v, p->cap * sizeof *p->v);
    }
    p->v[p->n++] = (Piece){off, len, at0};
}

typedef struct {
    uint32_t rank, pos, id;
} HeapItem;

typedef struct {
    uint32_t off, n; /* into cache_ids */
} CacheVal;

struct HfTokScratch {
    Buf arena;
    Pieces a, b;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    /* BPE */
    uint32_t *sym_id;
    int32_t *sym_prev, *sym_next;
    uint8_t *sym_alive;
    size_t sym_cap;
    HeapItem *heap;
    size_t heap_n, heap_cap;
    /* word cache: word -> ids */
    StrMap cache;
    CacheVal *cache_val;
    size_t cache_val_n, cache_val_cap;
    uint32_t *cache_ids;
    size_t cache_ids_n, cache_ids_cap;
    HfIds word;
};

static pcre2_match_data *scratch_md(struct HfTokScratch *s) { return s->md; }
static pcre2_match_context *scratch_mctx(struct HfTokScratch *s) { return s->mctx; }

#define CACHE_MAX_WORD 256
#define CACHE_MAX_ENTRIES 200000

HfTokScratch *hf_tok_scratch_new(const HfTokenizer *t) {
    (void)t;
    HfTokScratch *s = ul_calloc(1, sizeof *s);
    s->md = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
    UL_ASSERT(s->md && s->mctx && s->jit, "PCRE2: out of memory");
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
    sm_init(&s->cache, 4096);
    return s;
}

void hf_tok_scratch_free(HfTokScratch *s) {
    if (!s) return;
    free(s->arena.p);
    free(s->a.v);
    free(s->b.v);
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit);
    free(s->sym_id);
    free(s->sym_prev);
    free(s->sym_next);
    free(s->sym_alive);
    free(s->heap);
    sm_free(&s->cache);
    free(s->cache_val);
    free(s->cache_ids);
    free(s->word.v);
    free(s);
}

void hf_ids_push(HfIds *ids, uint32_t id) {
    if (ids->n == ids->cap) {
        ids->cap = 2 * ids->cap + 256;
        ids->v = ul_realloc(ids->v, (size_t)ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = id;
}

/* ---------------------------------------------------------------- BPE */

static void heap_push(HfTokScratch *s, uint32_t rank, uint32_t pos, uint32_t id) {
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = 2 * s->heap_cap + 64;
        s->heap = ul_realloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    size_t i = s->heap_n++;
    HeapItem it = {rank, pos, id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        HeapItem *q = &s->heap[p];
        if (q->rank < rank || (q->rank == rank && q->pos < pos)) break;
        s->heap[i] = *q;
        i = p;
    }
    s->heap[i] = it;
}

static HeapItem heap_pop(HfTokScratch *s) {
    HeapItem top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && (s->heap[c + 1].rank < s->heap[c].rank ||
                          (s->heap[c + 1].rank == s->heap[c].rank && s->heap[c + 1].pos < s->heap[c].pos)))
            c++;
        if (last.rank < s->heap[c].rank || (last.rank == s->heap[c].rank && last.pos <= s->heap[c].pos)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void sym_reserve(HfTokScratch *s, size_t n) {
    if (n <= s->sym_cap) return;
    s->sym_cap = 2 * n + 64;
    s->sym_id = ul_realloc(s->sym_id, s->sym_cap * sizeof *s->sym_id);
    s->sym_prev = ul_realloc(s->sym_prev, s->sym_cap * sizeof *s->sym_prev);
    s->sym_next = ul_realloc(s->sym_next, s->sym_cap * sizeof *s->sym_next);
    s->sym_alive = ul_realloc(s->sym_alive, s->sym_cap);
}

/* BPE of one word w[n] into out (tokenizers' BPE::merge_word + Word::merge_all). */
static void bpe_word(const HfTokenizer *t, HfTokScratch *s, const char *w, size_t n, HfIds *out) {
    int32_t id;
    if (t->ignore_merges && sm_get(&t->vocab, w, n, &id)) {
        hf_ids_push(out, (uint32_t)id);
        return;
    }
    sym_reserve(s, n);
    size_t ns = 0;
    int pending_unk = 0;
    const uint8_t *u = (const uint8_t *)w;
    for (size_t i = 0; i < n;) {
        size_t l = t->byte_level ? 1 : u8len(u[i]);
        int32_t uid = -1;
        if (t->byte_level) uid = t->byte_id[u[i]];
        else if (l == 1 && t->byte_id[u[i]] >= 0) uid = t->byte_id[u[i]];
        else if (l > 1) sm_get(&t->vocab, w + i, l, &uid);
        if (uid >= 0) {
            if (pending_unk) s->sym_id[ns++] = (uint32_t)t->unk_id, pending_unk = 0;
            s->sym_id[ns++] = (uint32_t)uid;
        } else {
            int fb = t->byte_fallback;
            for (size_t k = 0; fb && k < l; k++) fb = t->fallback_id[u[i + k]] >= 0;
            if (fb) {
                sym_reserve(s, ns + l + n);
                for (size_t k = 0; k < l; k++) s->sym_id[ns++] = (uint32_t)t->fallback_id[u[i + k]];
            } else if (t->unk_id >= 0) {
                if (pending_unk && !t->fuse_unk) s->sym_id[ns++] = (uint32_t)t->unk_id;
                pending_unk = 1;
            }
        }
        i += l;
    }
    if (pending_unk) s->sym_id[ns++] = (uint32_t)t->unk_id;
    if (ns == 0) return;
    s->heap_n = 0;
    for (size_t i = 0; i < ns; i++) {
        s->sym_prev[i] = (int32_t)i - 1;
        s->sym_next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
        s->sym_alive[i] = 1;
        if (i + 1 < ns) {
            const MergeSlot *m = mm_get(&t->merges, s->sym_id[i], s->sym_id[i + 1]);
            if (m) heap_push(s, m->rank, (uint32_t)i, m->id);
        }
    }
    while (s->heap_n) {
        HeapItem top = heap_pop(s);
        uint32_t p = top.pos;
        if (!s->sym_alive[p]) continue;
        int32_t nx = s->sym_next[p];
        if (nx < 0) continue;
        const MergeSlot *m = mm_get(&t->merges, s->sym_id[p], s->sym_id[nx]);
        if (!m || m->id != top.id) continue;
        s->sym_id[p] = top.id;
        s->sym_alive[nx] = 0;
        s->sym_next[p] = s->sym_next[nx];
        if (s->sym_next[nx] >= 0) s->sym_prev[s->sym_next[nx]] = (int32_t)p;
        int32_t pv = s->sym_prev[p];
        if (pv >= 0 && (m = mm_get(&t->merges, s->sym_id[pv], s->sym_id[p]))) heap_push(s, m->rank, (uint32_t)pv, m->id);
        int32_t nn = s->sym_next[p];
        if (nn >= 0 && (m = mm_get(&t->merges, s->sym_id[p], s->sym_id[nn]))) heap_push(s, m->rank, p, m->id);
    }
    for (int32_t i = 0; i >= 0; i = s->sym_next[i]) hf_ids_push(out, s->sym_id[i]);
}

static void cache_reset(HfTokScratch *s) {
    sm_free(&s->cache);
    sm_init(&s->cache, 4096);
    s->cache_val_n = s->cache_ids_n = 0;
}

/* A word through the cache. */
static void model_word(const HfTokenizer *t, HfTokScratch *s, const char *w, size_t n, HfIds *out) {
    if (n > CACHE_MAX_WORD) {
        bpe_word(t, s, w, n, out);
        return;
    }
    int32_t ci;
    if (sm_get(&s->cache, w, n, &ci)) {
        CacheVal v = s->cache_val[ci];
        for (uint32_t k = 0; k < v.n; k++) hf_ids_push(out, s->cache_ids[v.off + k]);
        return;
    }
    s->word.n = 0;
    bpe_word(t, s, w, n, &s->word);
    for (int64_t k = 0; k < s->word.n; k++) hf_ids_push(out, s->word.v[k]);
    if (s->cache_val_n >= CACHE_MAX_ENTRIES) cache_reset(s);
    if (s->cache_val_n == s->cache_val_cap) {
        s->cache_val_cap = 2 * s->cache_val_cap + 1024;
        s->cache_val = ul_realloc(s->cache_val, s->cache_val_cap * sizeof *s->cache_val);
    }
    if (s->cache_ids_n + (size_t)s->word.n > s->cache_ids_cap) {
        s->cache_ids_cap = 2 * (s->cache_ids_n + (size_t)s->word.n) + 4096;
        s->cache_ids = ul_realloc(s->cache_ids, s->cache_ids_cap * sizeof *s->cache_ids);
    }
    memcpy(s->cache_ids + s->cache_ids_n, s->word.v, (size_t)s->word.n * sizeof *s->word.v);
    s->cache_val[s->cache_val_n] = (CacheVal){(uint32_t)s->cache_ids_n, (uint32_t)s->word.n};
    s->cache_ids_n += (size_t)s->word.n;
    sm_put(&s->cache, w, n, (int32_t)s->cache_val_n++);
}

/* ---------------------------------------------------------------- encode */

/* Appends s[n] to the arena; returns its offset. */
static size_t arena_add(HfTokScratch *sc, const char *s, size_t n) {
    size_t off = sc->arena.n;
    buf_add(&sc->arena, s, n);
    return off;
}

/* Leftmost-longest match of an added token in s[from..n): index into t->added, or -1. */
static int added_next(const HfTokenizer *t, const AddedSet *set, const char *s, size_t n, size_t from, size_t *pos) {
    if (set->n == 0) return -1;
    for (size_t i = from; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        for (int32_t k = set->start[b]; k < set->start[b + 1]; k++) {
            const AddedTok *a = &t->added[set->ix[k]];
            if (a->len <= n - i && memcmp(s + i, a->content, a->len) == 0) {
                *pos = i;
                return set->ix[k];
            }
        }
    }
    return -1;
}

/* Whether the character of s[0..n) starting at byte `at` is in class re. */
static int char_is(const pcre2_code *re, HfTokScratch *sc, const char *s, size_t n, size_t at) {
    if (at >= n) return 0;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, sc->md, NULL);
    return rc >= 0;
}

/* Start of the character before byte `at`. */
static size_t prev_char(const char *s, size_t at) {
    do at--;
    while (at > 0 && ((uint8_t)s[at] & 0xC0) == 0x80);
    return at;
}

/* tokenizers' AddedVocabulary::find_matches as an iterator over s[n]: gaps and added
 * tokens in order. A single_word token needs no \w character on either side; lstrip /
 * rstrip widen a token over the white space before / after it (never back into the
 * previous piece); the search goes on from the raw end of each match. */
typedef struct {
    size_t pos, prev_end;
    int pending; /* a token found after a gap, returned next; -1 none */
    size_t p_start, p_stop;
} AddedIter;

/* Returns -2 at the end, -1 for a gap, else the added token's index; the piece is [*a, *b). */
static int added_iter(const HfTokenizer *t, const AddedSet *set, HfTokScratch *sc, const char *s, size_t n,
                      AddedIter *it, size_t *a, size_t *b) {
    if (it->pending >= 0) {
        int k = it->pending;
        it->pending = -1;
        *a = it->p_start;
        *b = it->p_stop;
        return k;
    }
    for (;;) {
        size_t start;
        int k = added_next(t, set, s, n, it->pos, &start);
        if (k < 0) break;
        const AddedTok *tk = &t->added[k];
        size_t stop = start + tk->len;
        it->pos = stop;
        if (tk->single_word && ((start > 0 && char_is(t->re_word, sc, s, n, prev_char(s, start))) ||
                                char_is(t->re_word, sc, s, n, stop)))
            continue;
        if (tk->lstrip) {
            size_t ns = start;
            while (ns > 0 && char_is(t->re_space, sc, s, n, prev_char(s, ns))) ns = prev_char(s, ns);
            start = ns > it->prev_end ? ns : it->prev_end;
        }
        if (tk->rstrip)
            while (stop < n && char_is(t->re_space, sc, s, n, stop)) stop += u8len((uint8_t)s[stop]);
        size_t gap = it->prev_end;
        it->prev_end = stop;
        if (gap < start) {
            it->pending = k;
            it->p_start = start;
            it->p_stop = stop;
            *a = gap;
            *b = start;
            return -1;
        }
        *a = start;
        *b = stop;
        return k;
    }
    if (it->prev_end < n) {
        *a = it->prev_end;
        *b = n;
        it->prev_end = n;
        return -1;
    }
    return -2;
}

/* Normalizes arena[off, off+len) into a new arena string; returns its offset, *out_len. */
static size_t normalize(const HfTokenizer *t, HfTokScratch *sc, size_t off, size_t len, size_t *out_len) {
    for (int k = 0; k < t->n_norms; k++) {
        const Norm *nm = &t->norms[k];
        if (len == 0) break;
        if (nm->kind <= N_NFKD) {
            const uint8_t *p = (const uint8_t *)sc->arena.p + off;
            size_t i = 0;
            while (i < len && p[i] < 0x80) i++;
            if (i == len) continue; /* ASCII is its own normal form */
            static const int opts[] = {UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE, UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                                       UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = utf8proc_map(p, (utf8proc_ssize_t)len, &dst, UTF8PROC_STABLE | opts[nm->kind]);
            UL_ASSERT(r >= 0, "utf8proc: %s", utf8proc_errmsg(r));
            off = arena_add(sc, (const char *)dst, (size_t)r);
            len = (size_t)r;
            free(dst);
        } else if (nm->kind == N_PREPEND) {
            size_t o = arena_add(sc, nm->s, nm->s_len);
            buf_add(&sc->arena, sc->arena.p + off, len);
            off = o;
            len += nm->s_len;
        } else { /* N_REPLACE */
            size_t from = 0, ms, me;
            /* a separate copy of the source, so that the output can follow it */
            size_t src = arena_add(sc, sc->arena.p + off, len), o = sc->arena.n;
            while (pattern_next(&nm->pat, sc, sc->arena.p + src, len, from, &ms, &me)) {
                buf_add(&sc->arena, sc->arena.p + src + from, ms - from);
                buf_add(&sc->arena, nm->s, nm->s_len);
                from = me;
            }
            buf_add(&sc->arena, sc->arena.p + src + from, len - from);
            off = o;
            len = sc->arena.n - o;
        }
    }
    *out_len = len;
    return off;
}

/* Splits piece pc by pattern / behavior into out (tokenizers' NormalizedString::split). */
static void split_piece(HfTokScratch *sc, Piece pc, const Pattern *pat, SplitBehavior beh, int invert, Pieces *out) {
    /* matches as (start, end, is_match) covering the piece */
    size_t from = 0, ms, me;
    int prev_match = 0;
#define EMIT(s_, e_) pieces_push(out, pc.off + (s_), (e_) - (s_), pc.at0 && (s_) == 0)
    size_t n = pc.len;
    /* MergedWithNext needs lookahead of one: collect spans first. */
    size_t cap = 16, cnt = 0;
    size_t (*sp)[3] = ul_malloc(cap * sizeof *sp);
    while (from < n) {
        int found = pattern_next(pat, sc, sc->arena.p + pc.off, n, from, &ms, &me);
        size_t gs = from, ge = found ? ms : n;
        for (int k = 0; k < 2; k++) {
            size_t a = k == 0 ? gs : ms, b = k == 0 ? ge : me;
            int m = k == 1;
            if (k == 1 && !found) break;
            if (b <= a) continue;
            if (cnt == cap) sp = ul_realloc(sp, (cap *= 2) * sizeof *sp);
            sp[cnt][0] = a;
            sp[cnt][1] = b;
            sp[cnt][2] = (size_t)(invert ? !m : m);
            cnt++;
        }
        if (!found) break;
        from = me;
    }
    switch (beh) {
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < cnt; i++) EMIT(sp[i][0], sp[i][1]);
        break;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < cnt; i++)
            if (!sp[i][2]) EMIT(sp[i][0], sp[i][1]);
        break;
    case SPLIT_PREV:
    case SPLIT_CONTIG: {
        size_t k = 0; /* merged spans written back into sp[0..k) */
        prev_match = 0;
        for (size_t i = 0; i < cnt; i++) {
            int m = (int)sp[i][2];
            int join = beh == SPLIT_PREV ? (m && !prev_match) : (m == prev_match);
            if (join && k > 0) sp[k - 1][1] = sp[i][1];
            else {
                sp[k][0] = sp[i][0];
                sp[k][1] = sp[i][1];
                k++;
            }
            prev_match = m;
        }
        for (size_t i = 0; i < k; i++) EMIT(sp[i][0], sp[i][1]);
        break;
    }
    case SPLIT_NEXT: {
        size_t k = cnt; /* merged spans written into sp[k..cnt) from the back */
        prev_match = 0;
        for (size_t i = cnt; i-- > 0;) {
            int m = (int)sp[i][2];
            if (m && !prev_match && k < cnt) sp[k][0] = sp[i][0];
            else {
                k--;
                sp[k][0] = sp[i][0];
                sp[k][1] = sp[i][1];
            }
            prev_match = m;
        }
        for (size_t i = k; i < cnt; i++) EMIT(sp[i][0], sp[i][1]);
        break;
    }
    }
#undef EMIT
    free(sp);
}

/* Runs the pre-tokenizer steps and the model over one normalized piece. */
static void pretok_and_model(const HfTokenizer *t, HfTokScratch *sc, Piece pc, HfIds *out) {
    Pieces *cur = &sc->a, *nxt = &sc->b;
    cur->n = 0;
    pieces_push(cur, pc.off, pc.len, pc.at0);
    for (int k = 0; k < t->n_pres; k++) {
        const Pre *p = &t->pres[k];
        nxt->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            Piece q = cur->v[i];
            if (p->kind == P_SPLIT) {
                split_piece(sc, q, &p->pat, p->behavior, p->invert, nxt);
            } else if (p->kind == P_PREFIX_SPACE) {
                if (sc->arena.p[q.off] != ' ') {
                    size_t o = arena_add(sc, " ", 1);
                    buf_add(&sc->arena, sc->arena.p + q.off, q.len);
                    q.off = o;
                    q.len++;
                }
                pieces_push(nxt, q.off, q.len, q.at0);
            } else { /* P_METASPACE */
                size_t src = arena_add(sc, sc->arena.p + q.off, q.len); /* stable copy */
                size_t o = sc->arena.n;
                int starts_rep = q.len >= 1 && sc->arena.p[src] == ' ';
                if (!starts_rep && q.len >= p->rep_len && memcmp(sc->arena.p + src, p->rep, p->rep_len) == 0) starts_rep = 1;
                if (!starts_rep && (p->prepend == 1 || (p->prepend == 2 && q.at0))) buf_add(&sc->arena, p->rep, p->rep_len);
                for (size_t j = 0; j < q.len; j++) {
                    char c = sc->arena.p[src + j];
                    if (c == ' ') buf_add(&sc->arena, p->rep, p->rep_len);
                    else buf_addc(&sc->arena, c);
                }
                Piece r = {o, sc->arena.n - o, q.at0};
                if (p->split) split_piece(sc, r, &p->pat, SPLIT_NEXT, 0, nxt);
                else pieces_push(nxt, r.off, r.len, r.at0);
            }
        }
        Pieces *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    for (size_t i = 0; i < cur->n; i++) model_word(t, sc, sc->arena.p + cur->v[i].off, cur->v[i].len, out);
}

/* Normalized segment at arena[off, len): normalized added tokens, then pre-tokenizer + model. */
static void encode_segment(const HfTokenizer *t, HfTokScratch *sc, size_t off, size_t len, int at0, HfIds *out) {
    size_t nl, no = normalize(t, sc, off, len, &nl), a, b;
    AddedIter it = {0, 0, -1, 0, 0};
    int k;
    /* the arena may move while a piece is encoded: its base is taken afresh each time */
    while ((k = added_iter(t, &t->norm_set, sc, sc->arena.p + no, nl, &it, &a, &b)) != -2) {
        if (k >= 0) hf_ids_push(out, t->added[k].id);
        else pretok_and_model(t, sc, (Piece){no + a, b - a, at0 && a == 0}, out);
    }
}

void hf_tok_encode(const HfTokenizer *t, HfTokScratch *sc, const char *text, size_t len, HfIds *out) {
    for (int k = 0; k < t->n_pre_ids; k++) hf_ids_push(out, t->pre_ids[k]);
    hf_tok_encode_text(t, sc, text, len, out);
    for (int k = 0; k < t->n_post_ids; k++) hf_ids_push(out, t->post_ids[k]);
}

void hf_tok_special_ids(const HfTokenizer *t, const uint32_t **pre, int *n_pre, const uint32_t **post, int *n_post) {
    *pre = t->pre_ids;
    *n_pre = t->n_pre_ids;
    *post = t->post_ids;
    *n_post = t->n_post_ids;
}

void hf_tok_encode_text(const HfTokenizer *t, HfTokScratch *sc, const char *text, size_t len, HfIds *out) {
    AddedIter it = {0, 0, -1, 0, 0};
    size_t a, b;
    int k;
    while ((k = added_iter(t, &t->raw_set, sc, text, len, &it, &a, &b)) != -2) {
        if (k >= 0) {
            hf_ids_push(out, t->added[k].id);
            continue;
        }
        sc->arena.n = 0;
        size_t off = arena_add(sc, text + a, b - a);
        encode_segment(t, sc, off, b - a, a == 0, out);
    }
    if (sc->arena.cap > ((size_t)64 << 20)) { /* do not keep a huge document's arena */
        free(sc->arena.p);
        sc->arena = (Buf){0};
    }
}

/* ---------------------------------------------------------------- decode */

typedef struct {
    Buf *v;
    size_t n;
} Toks;

static void toks_set(Toks *t, size_t n) {
    for (size_t i = n; i < t->n; i++) free(t->v[i].p);
    t->n = n;
}

/* ByteLevel: every token's characters back to bytes (a token with a character outside
 * the map keeps its UTF-8 bytes), all joined, then lossy UTF-8. */
static void dec_bytelevel(Toks *tk) {
    Buf raw = {0};
    for (size_t i = 0; i < tk->n; i++) {
        const uint8_t *s = (const uint8_t *)tk->v[i].p;
        size_t n = tk->v[i].n, start = raw.n, l;
        int ok = 1;
        for (size_t j = 0; j < n; j += l) {
            uint32_t c = u8decode(s + j, &l);
            if (c >= 324 || g_char_byte[c] < 0) {
                ok = 0;
                break;
            }
            buf_addc(&raw, (char)g_char_byte[c]);
        }
        if (!ok) {
            raw.n = start;
            buf_add(&raw, s, n);
        }
    }
    char *o;
    size_t ol;
    ul_utf8_sanitize(raw.p ? raw.p : "", raw.n, &o, &ol);
    free(raw.p);
    toks_set(tk, 1);
    free(tk->v[0].p);
    tk->v[0] = (Buf){o, ol, ol + 1};
}

static void dec_step(const HfTokenizer *t, HfTokScratch *sc, const Dec *d, Toks *tk) {
    if (d->kind == D_BYTELEVEL) {
        if (tk->n) dec_bytelevel(tk);
        return;
    }
    if (d->kind == D_FUSE) {
        if (tk->n <= 1) return;
        Buf all = {0};
        for (size_t i = 0; i < tk->n; i++) buf_add(&all, tk->v[i].p, tk->v[i].n);
        toks_set(tk, 1);
        free(tk->v[0].p);
        tk->v[0] = all;
        return;
    }
    if (d->kind == D_BYTEFALLBACK) {
        Toks o = {ul_calloc(tk->n + 1, sizeof(Buf)), 0};
        Buf bytes = {0};
        size_t nbytes = 0;
        for (size_t i = 0; i <= tk->n; i++) {
            const Buf *b = i < tk->n ? &tk->v[i] : NULL;
            int byte = -1;
            if (b && b->n == 6 && memcmp(b->p, "<0x", 3) == 0 && b->p[5] == '>') {
                char hex[3] = {b->p[3], b->p[4], 0}, *end;
                long v = strtol(hex, &end, 16);
                if (*end == 0 && hex[0] != '-' && hex[0] != '+' && hex[0] != ' ') byte = (int)v;
            }
            if (byte >= 0) {
                buf_addc(&bytes, (char)byte);
                nbytes++;
                continue;
            }
            if (nbytes) {
                char *sanit;
                size_t sl;
                size_t bad = ul_utf8_sanitize(bytes.p, bytes.n, &sanit, &sl);
                if (bad == 0) {
                    o.v[o.n++] = (Buf){sanit, sl, sl + 1};
                } else { /* invalid: one U+FFFD per byte token */
                    free(sanit);
                    o.v = ul_realloc(o.v, (o.n + nbytes + tk->n + 1) * sizeof(Buf));
                    for (size_t k = 0; k < nbytes; k++) {
                        Buf r = {0};
                        buf_add(&r, "\xEF\xBF\xBD", 3);
                        o.v[o.n++] = r;
                    }
                }
                bytes.n = 0;
                nbytes = 0;
            }
            if (b) {
                o.v[o.n++] = *b;
                tk->v[i] = (Buf){0};
            }
        }
        free(bytes.p);
        toks_set(tk, 0);
        free(tk->v);
        *tk = o;
        return;
    }
    for (size_t i = 0; i < tk->n; i++) {
        Buf *b = &tk->v[i];
        Buf r = {0};
        if (d->kind == D_REPLACE) {
            size_t from = 0, ms, me;
            while (pattern_next(&d->pat, sc, b->p, b->n, from, &ms, &me)) {
                buf_add(&r, b->p + from, ms - from);
                buf_add(&r, d->content, d->content_len);
                from = me;
            }
            buf_add(&r, b->p + from, b->n - from);
        } else if (d->kind == D_METASPACE) {
            for (size_t j = 0; j < b->n;) {
                size_t l = u8len((uint8_t)b->p[j]);
                if (l == d->content_len && memcmp(b->p + j, d->content, l) == 0) {
                    if (!(i == 0 && d->prepend != 0)) buf_addc(&r, ' ');
                } else buf_add(&r, b->p + j, l);
                j += l;
            }
        } else { /* D_STRIP: up to start leading and stop trailing content characters */
            size_t s0 = 0, e0 = b->n, cl = d->content_len;
            for (int64_t k = 0; k < d->start && s0 + cl <= e0 && memcmp(b->p + s0, d->content, cl) == 0; k++) s0 += cl;
            for (int64_t k = 0; k < d->stop && e0 >= s0 + cl && memcmp(b->p + e0 - cl, d->content, cl) == 0; k++) e0 -= cl;
            buf_add(&r, b->p + s0, e0 - s0);
        }
        if (!r.p) buf_add(&r, "", 0);
        free(b->p);
        *b = r;
    }
}

int hf_tok_decode(const HfTokenizer *t, const uint32_t *ids, int64_t n, int skip_special, char **out, size_t *out_len,
                  UlError *e) {
    Toks tk = {ul_calloc((size_t)n + 1, sizeof(Buf)), 0};
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] >= t->n_ids || !t->id_str[ids[i]]) {
            toks_set(&tk, 0);
            free(tk.v);
            return ul_err(e, "token %lld is %u, which the tokenizer does not have", (long long)i, ids[i]);
        }
        if (skip_special && t->is_special[ids[i]]) continue;
        Buf b = {0};
        buf_add(&b, t->id_str[ids[i]], strlen(t->id_str[ids[i]]));
        tk.v[tk.n++] = b;
    }
    Buf res = {0};
    if (t->has_decoder) {
        HfTokScratch *sc = hf_tok_scratch_new(t);
        for (int k = 0; k < t->n_decs; k++) dec_step(t, sc, &t->decs[k], &tk);
        hf_tok_scratch_free(sc);
        for (size_t i = 0; i < tk.n; i++) buf_add(&res, tk.v[i].p, tk.v[i].n);
    } else
        for (size_t i = 0; i < tk.n; i++) {
            if (i) buf_addc(&res, ' ');
            buf_add(&res, tk.v[i].p, tk.v[i].n);
        }
    if (!res.p) buf_add(&res, "", 0);
    toks_set(&tk, 0);
    free(tk.v);
    *out = res.p;
    *out_len = res.n;
    return 0;
}

/* ---------------------------------------------------------------- loading */

typedef struct {
    const char *file;
    UlError *e;
} Ld;

static const char *jtype(const cJSON *j) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int jbool(const cJSON *j, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static const char *jstr(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int unsupported(Ld *L, const char *where, const char *what, const char *supported) {
    return ul_err(L->e, "%s: %s \"%s\" is not supported (supported: %s)", L->file, where, what, supported);
}

typedef int (*LoadFn)(HfTokenizer *t, Ld *L, const cJSON *j, const char *where);

/* The "type" of component j: NULL with *rc = 0 when j is absent or null, NULL with an
 * error when it has no type. */
static const char *comp_type(Ld *L, const cJSON *j, const char *where, int *rc) {
    *rc = 0;
    if (!j || cJSON_IsNull(j)) return NULL;
    const char *ty = jtype(j);
    if (!ty) *rc = ul_err(L->e, "%s: %s has no \"type\"", L->file, where);
    return ty;
}

/* A "Sequence" component: fn on each element of its array `key`. */
static int load_each(HfTokenizer *t, Ld *L, const cJSON *j, const char *where, const char *key, LoadFn fn) {
    char w[256];
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(j, key)) {
        snprintf(w, sizeof w, "%s.%s[%d]", where, key, i++);
        if (fn(t, L, x, w)) return -1;
    }
    return 0;
}

/* A single character (Metaspace replacement, Strip content). */
static int one_char(Ld *L, const char *where, const char *s, char *dst, size_t *len) {
    size_t l;
    if (!s || !*s || (l = u8len((uint8_t)s[0])) != strlen(s) || l > 4)
        return ul_err(L->e, "%s: %s must be one character", L->file, where);
    memcpy(dst, s, l);
    dst[l] = 0;
    *len = l;
    return 0;
}

static int load_norm(HfTokenizer *t, Ld *L, const cJSON *j, const char *where) {
    int rc;
    const char *ty = comp_type(L, j, where, &rc);
    if (!ty) return rc;
    char w[256];
    if (strcmp(ty, "Sequence") == 0) return load_each(t, L, j, where, "normalizers", load_norm);
    Norm nm = {0};
    if (strcmp(ty, "NFC") == 0) nm.kind = N_NFC;
    else if (strcmp(ty, "NFD") == 0) nm.kind = N_NFD;
    else if (strcmp(ty, "NFKC") == 0) nm.kind = N_NFKC;
    else if (strcmp(ty, "NFKD") == 0) nm.kind = N_NFKD;
    else if (strcmp(ty, "Prepend") == 0) {
        const char *p = jstr(j, "prepend");
        if (!p) return ul_err(L->e, "%s: %s.prepend must be a string", L->file, where);
        nm.kind = N_PREPEND;
        nm.s = ul_strdup(p);
        nm.s_len = strlen(p);
    } else if (strcmp(ty, "Replace") == 0) {
        const char *c = jstr(j, "content");
        snprintf(w, sizeof w, "%s.pattern", where);
        if (!c) return ul_err(L->e, "%s: %s.content must be a string", L->file, where);
        char full[300];
        snprintf(full, sizeof full, "%s: %s", L->file, w);
        if (pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), &nm.pat, full, L->e)) return -1;
        nm.kind = N_REPLACE;
        nm.s = ul_strdup(c);
        nm.s_len = strlen(c);
    } else {
        snprintf(w, sizeof w, "%s.type", where);
        return unsupported(L, w, ty, "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence");
    }
    t->norms = ul_realloc(t->norms, (size_t)(t->n_norms + 1) * sizeof *t->norms);
    t->norms[t->n_norms++] = nm;
    return 0;
}

static const char *GPT2_REGEX =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void add_pre(HfTokenizer *t, Pre p) {
    t->pres = ul_realloc(t->pres, (size_t)(t->n_pres + 1) * sizeof *t->pres);
    t->pres[t->n_pres++] = p;
}

static int add_regex_split(HfTokenizer *t, const char *onig_regex) {
    Pre p = {.kind = P_SPLIT, .behavior = SPLIT_ISOLATED};
    Buf tr = {0};
    UlError dummy;
    if (onig_to_pcre2(onig_regex, strlen(onig_regex), &tr, "", &dummy)) return -1;
    int rc = pattern_regex(&p.pat, tr.p);
    free(tr.p);
    if (rc) return -1;
    add_pre(t, p);
    return 0;
}

static int load_pre(HfTokenizer *t, Ld *L, const cJSON *j, const char *where) {
    int rc;
    const char *ty = comp_type(L, j, where, &rc);
    if (!ty) return rc;
    char w[256], full[320];
    if (t->byte_level)
        return ul_err(L->e, "%s: %s: a pre-tokenizer after ByteLevel is not supported", L->file, where);
    if (strcmp(ty, "Sequence") == 0) return load_each(t, L, j, where, "pretokenizers", load_pre);
    if (strcmp(ty, "Split") == 0) {
        Pre p = {.kind = P_SPLIT};
        const char *b = jstr(j, "behavior");
        snprintf(w, sizeof w, "%s.behavior", where);
        if (!b) return ul_err(L->e, "%s: %s must be a string", L->file, w);
        if (strcmp(b, "Removed") == 0) p.behavior = SPLIT_REMOVED;
        else if (strcmp(b, "Isolated") == 0) p.behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0) p.behavior = SPLIT_PREV;
        else if (strcmp(b, "MergedWithNext") == 0) p.behavior = SPLIT_NEXT;
        else if (strcmp(b, "Contiguous") == 0) p.behavior = SPLIT_CONTIG;
        else return unsupported(L, w, b, "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
        p.invert = jbool(j, "invert", 0);
        snprintf(full, sizeof full, "%s: %s.pattern", L->file, where);
        if (pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), &p.pat, full, L->e)) return -1;
        add_pre(t, p);
        return 0;
    }
    if (strcmp(ty, "Digits") == 0) {
        int r = add_regex_split(t, jbool(j, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+");
        UL_ASSERT(r == 0, "Digits regex");
        return 0;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        if (jbool(j, "add_prefix_space", 1)) add_pre(t, (Pre){.kind = P_PREFIX_SPACE});
        if (jbool(j, "use_regex", 1)) UL_ASSERT(add_regex_split(t, GPT2_REGEX) == 0, "GPT-2 regex");
        t->byte_level = 1;
        return 0;
    }
    if (strcmp(ty, "Metaspace") == 0) {
        Pre p = {.kind = P_METASPACE, .split = jbool(j, "split", 1), .prepend = 1};
        snprintf(w, sizeof w, "%s.replacement", where);
        if (one_char(L, w, jstr(j, "replacement"), p.rep, &p.rep_len)) return -1;
        const char *ps = jstr(j, "prepend_scheme");
        if (ps) {
            snprintf(w, sizeof w, "%s.prepend_scheme", where);
            if (strcmp(ps, "always") == 0) p.prepend = 1;
            else if (strcmp(ps, "never") == 0) p.prepend = 0;
            else if (strcmp(ps, "first") == 0) p.prepend = 2;
            else return unsupported(L, w, ps, "always, never, first");
        } else p.prepend = jbool(j, "add_prefix_space", 1);
        p.pat.lit = ul_strdup(p.rep);
        p.pat.lit_len = p.rep_len;
        add_pre(t, p);
        return 0;
    }
    snprintf(w, sizeof w, "%s.type", where);
    return unsupported(L, w, ty, "Sequence, Split, ByteLevel, Metaspace, Digits");
}

static int load_dec(HfTokenizer *t, Ld *L, const cJSON *j, const char *where) {
    int rc;
    const char *ty = comp_type(L, j, where, &rc);
    if (!ty) return rc;
    t->has_decoder = 1;
    char w[256], full[320];
    if (strcmp(ty, "Sequence") == 0) return load_each(t, L, j, where, "decoders", load_dec);
    Dec d = {0};
    if (strcmp(ty, "ByteLevel") == 0) d.kind = D_BYTELEVEL;
    else if (strcmp(ty, "ByteFallback") == 0) d.kind = D_BYTEFALLBACK;
    else if (strcmp(ty, "Fuse") == 0) d.kind = D_FUSE;
    else if (strcmp(ty, "Replace") == 0) {
        const char *c = jstr(j, "content");
        if (!c) return ul_err(L->e, "%s: %s.content must be a string", L->file, where);
        snprintf(full, sizeof full, "%s: %s.pattern", L->file, where);
        if (pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), &d.pat, full, L->e)) return -1;
        d.kind = D_REPLACE;
        d.content = ul_strdup(c);
        d.content_len = strlen(c);
    } else if (strcmp(ty, "Strip") == 0 || strcmp(ty, "Metaspace") == 0) {
        char ch[8];
        int strip = ty[0] == 'S';
        snprintf(w, sizeof w, "%s.%s", where, strip ? "content" : "replacement");
        if (one_char(L, w, jstr(j, strip ? "content" : "replacement"), ch, &d.content_len)) return -1;
        if (strip) {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "start"), *e = cJSON_GetObjectItemCaseSensitive(j, "stop");
            if (!cJSON_IsNumber(s) || !cJSON_IsNumber(e) || s->valuedouble < 0 || e->valuedouble < 0)
                return ul_err(L->e, "%s: %s: start and stop must be counts", L->file, where);
            d.kind = D_STRIP;
            d.start = (int64_t)s->valuedouble;
            d.stop = (int64_t)e->valuedouble;
        } else {
            d.kind = D_METASPACE;
            const char *ps = jstr(j, "prepend_scheme");
            d.prepend = ps ? strcmp(ps, "never") != 0 : jbool(j, "add_prefix_space", 1);
        }
        d.content = ul_strdup(ch);
    } else {
        snprintf(w, sizeof w, "%s.type", where);
        return unsupported(L, w, ty, "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
    }
    t->decs = ul_realloc(t->decs, (size_t)(t->n_decs + 1) * sizeof *t->decs);
    t->decs[t->n_decs++] = d;
    return 0;
}

/* Id of an added or vocabulary token by content, -1 if none. */
static int64_t token_id(const HfTokenizer *t, const StrMap *orig, const char *s) {
    for (int k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].content, s) == 0) return t->added[k].id;
    int32_t id;
    return sm_get(orig, s, strlen(s), &id) ? id : -1;
}

static void push_id(uint32_t **v, int *n, uint32_t id) {
    *v = ul_realloc(*v, (size_t)(*n + 1) * sizeof **v);
    (*v)[(*n)++] = id;
}

static int load_post(HfTokenizer *t, Ld *L, const cJSON *j, const char *where) {
    int rc;
    const char *ty = comp_type(L, j, where, &rc);
    if (!ty) return rc;
    char w[256];
    if (strcmp(ty, "Sequence") == 0) return load_each(t, L, j, where, "processors", load_post);
    if (strcmp(ty, "ByteLevel") == 0) return 0; /* offsets only */
    if (strcmp(ty, "TemplateProcessing") != 0) {
        snprintf(w, sizeof w, "%s.type", where);
        return unsupported(L, w, ty, "TemplateProcessing, ByteLevel, Sequence");
    }
    if (t->n_pre_ids || t->n_post_ids)
        return ul_err(L->e, "%s: %s: a second TemplateProcessing is not supported", L->file, where);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single"), *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    const cJSON *x;
    int seen_a = 0, i = 0;
    cJSON_ArrayForEach(x, single) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(x, "SpecialToken"), *sq = cJSON_GetObjectItemCaseSensitive(x, "Sequence");
        if (sq) {
            const char *id = jstr(sq, "id");
            if (!id || strcmp(id, "A") != 0 || seen_a)
                return ul_err(L->e, "%s: %s.single[%d]: only one sequence $A is supported", L->file, where, i);
            seen_a = 1;
        } else {
            const char *name = jstr(st, "id");
            const cJSON *tok = name ? cJSON_GetObjectItemCaseSensitive(sp, name) : NULL, *ids = cJSON_GetObjectItemCaseSensitive(tok, "ids"), *v;
            if (!cJSON_IsArray(ids))
                return ul_err(L->e, "%s: %s.single[%d]: special token \"%s\" not in special_tokens", L->file, where,
                              i, name ? name : "?");
            cJSON_ArrayForEach(v, ids) {
                if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 4294967295.0)
                    return ul_err(L->e, "%s: %s.special_tokens[\"%s\"].ids: not a token id", L->file, where, name);
                if (seen_a) push_id(&t->post_ids, &t->n_post_ids, (uint32_t)v->valuedouble);
                else push_id(&t->pre_ids, &t->n_pre_ids, (uint32_t)v->valuedouble);
            }
        }
        i++;
    }
    if (!seen_a) return ul_err(L->e, "%s: %s.single has no $A", L->file, where);
    return 0;
}

static const AddedTok *g_sort_added; /* qsort's context: loading is single-threaded */

static int cmp_added(const void *a, const void *b) {
    const AddedTok *t = g_sort_added;
    const AddedTok *x = &t[*(const int32_t *)a], *y = &t[*(const int32_t *)b];
    uint8_t bx = (uint8_t)x->content[0], by = (uint8_t)y->content[0];
    if (bx != by) return bx < by ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

static void added_set_build(const HfTokenizer *t, AddedSet *s, int normalized) {
    s->ix = ul_malloc(((size_t)t->n_added + 1) * sizeof *s->ix);
    s->n = 0;
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].normalized == normalized && t->added[k].len > 0) s->ix[s->n++] = k;
    g_sort_added = t->added;
    qsort(s->ix, (size_t)s->n, sizeof *s->ix, cmp_added);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < s->n && (uint8_t)t->added[s->ix[k]].content[0] < b) k++;
        s->start[b] = k;
    }
    s->start[256] = s->n;
}

static int load_model(HfTokenizer *t, Ld *L, const cJSON *m, StrMap *orig) {
    const char *ty = jtype(m);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab"), *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (ty && strcmp(ty, "BPE") != 0) return unsupported(L, "model.type", ty, "BPE");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return ul_err(L->e, "%s: model: a BPE model needs \"vocab\" (object) and \"merges\" (array)", L->file);
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dr) && dr->valuedouble != 0.0) return ul_err(L->e, "%s: model.dropout %g is not supported", L->file, dr->valuedouble);
    const char *csp = jstr(m, "continuing_subword_prefix"), *eow = jstr(m, "end_of_word_suffix");
    if (csp && *csp) return unsupported(L, "model.continuing_subword_prefix", csp, "null");
    if (eow && *eow) return unsupported(L, "model.end_of_word_suffix", eow, "null");
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    if (t->byte_fallback && t->byte_level)
        return ul_err(L->e, "%s: model.byte_fallback with a ByteLevel pre_tokenizer is not supported", L->file);
    int nv = cJSON_GetArraySize(vocab);
    sm_init(orig, (size_t)nv);
    const cJSON *x;
    uint32_t maxid = 0;
    cJSON_ArrayForEach(x, vocab) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2147483647.0)
            return ul_err(L->e, "%s: model.vocab[\"%s\"] is not a token id", L->file, x->string);
        uint32_t id = (uint32_t)x->valuedouble;
        sm_put(orig, x->string, strlen(x->string), (int32_t)id);
        if (id + 1 > maxid) maxid = id + 1;
    }
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].id + 1 > maxid) maxid = t->added[k].id + 1;
    if (maxid > (1u << 26)) return ul_err(L->e, "%s: token ids up to %u: implausibly large vocabulary", L->file, maxid - 1);
    t->n_ids = maxid;
    t->id_str = ul_calloc(maxid ? maxid : 1, sizeof *t->id_str);
    cJSON_ArrayForEach(x, vocab) t->id_str[(uint32_t)x->valuedouble] = x->string;
    for (int k = 0; k < t->n_added; k++) t->id_str[t->added[k].id] = t->added[k].content;
    /* the strings stay owned by the JSON tree until copied below */
    for (uint32_t i = 0; i < maxid; i++)
        if (t->id_str[i]) t->id_str[i] = ul_strdup(t->id_str[i]);
    /* special tokens go by content, as tokenizers' is_special_token */
    t->is_special = ul_calloc(maxid ? maxid : 1, 1);
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].special) {
            int32_t id;
            t->is_special[t->added[k].id] = 1;
            if (sm_get(orig, t->added[k].content, t->added[k].len, &id)) t->is_special[id] = 1;
        }
    /* model-space vocabulary: byte-level strings back to raw bytes */
    if (t->byte_level) {
        sm_init(&t->vocab, (size_t)nv);
        Buf raw = {0};
        cJSON_ArrayForEach(x, vocab) {
            raw.n = 0;
            const uint8_t *s = (const uint8_t *)x->string;
            size_t n = strlen(x->string), l;
            int ok = 1;
            for (size_t j = 0; j < n && ok; j += l) {
                uint32_t c = u8decode(s + j, &l);
                ok = c < 324 && g_char_byte[c] >= 0;
                if (ok) buf_addc(&raw, (char)g_char_byte[c]);
            }
            if (ok && raw.n) sm_put(&t->vocab, raw.p, raw.n, (int32_t)x->valuedouble);
        }
        free(raw.p);
    }
    const StrMap *mv = t->byte_level ? &t->vocab : orig;
    for (int b = 0; b < 256; b++) {
        char c = (char)b, fb[8];
        t->byte_id[b] = -1;
        t->fallback_id[b] = -1;
        int32_t id;
        if ((t->byte_level || b < 0x80) && sm_get(mv, &c, 1, &id)) t->byte_id[b] = id;
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        if (t->byte_fallback && sm_get(orig, fb, 6, &id)) t->fallback_id[b] = id;
    }
    /* tokenizers gives an added token its model.vocab id when it has one, else the next id
     * after the vocabulary and the added tokens so far, whatever the file says: a file
     * that disagrees would silently change ids, so it is refused */
    int64_t max_added = -1;
    for (int k = 0; k < t->n_added; k++) {
        const AddedTok *a = &t->added[k];
        int32_t vid;
        int64_t want = -1;
        if (sm_get(orig, a->content, a->len, &vid)) want = vid;
        for (int q = 0; q < k && want < 0; q++)
            if (strcmp(t->added[q].content, a->content) == 0) want = t->added[q].id;
        if (want < 0) want = max_added >= nv ? max_added + 1 : nv;
        if (want != a->id)
            return ul_err(L->e, "%s: added_tokens[%d] (\"%s\") has id %u, but tokenizers gives it id %lld", L->file, k,
                          a->content, a->id, (long long)want);
        if (want > max_added) max_added = want;
    }
    const char *unk = jstr(m, "unk_token");
    t->unk_id = -1;
    if (unk) {
        int32_t id;
        if (!sm_get(orig, unk, strlen(unk), &id))
            return ul_err(L->e, "%s: model.unk_token \"%s\" is not in model.vocab", L->file, unk);
        t->unk_id = id;
    }
    /* merges: "a b" strings or [a, b] pairs; rank = position; a later duplicate wins */
    int nm = cJSON_GetArraySize(merges);
    t->merges.cap = 64;
    while (t->merges.cap < 2 * (size_t)nm + 16) t->merges.cap *= 2;
    t->merges.slots = ul_malloc(t->merges.cap * sizeof *t->merges.slots);
    for (size_t i = 0; i < t->merges.cap; i++) t->merges.slots[i].key = UINT64_MAX;
    Buf ab = {0};
    int rank = 0;
    cJSON_ArrayForEach(x, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(x)) {
            const char *sp = strchr(x->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(ab.p);
                return ul_err(L->e, "%s: model.merges[%d] \"%s\" is not two tokens", L->file, rank, x->valuestring);
            }
            a = x->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(cJSON_GetArrayItem(x, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(x, 1))) {
            a = cJSON_GetArrayItem(x, 0)->valuestring, la = strlen(a);
            b = cJSON_GetArrayItem(x, 1)->valuestring, lb = strlen(b);
        } else {
            free(ab.p);
            return ul_err(L->e, "%s: model.merges[%d] is neither \"a b\" nor [a, b]", L->file, rank);
        }
        ab.n = 0;
        buf_add(&ab, a, la);
        buf_add(&ab, b, lb);
        int32_t ia, ib, inew;
        if (!sm_get(orig, a, la, &ia) || !sm_get(orig, b, lb, &ib) || !sm_get(orig, ab.p, ab.n, &inew)) {
            int r = ul_err(L->e, "%s: model.merges[%d]: \"%.*s\", \"%.*s\" or their merge is not in model.vocab",
                           L->file, rank, (int)la, a, (int)lb, b);
            free(ab.p);
            return r;
        }
        MergeSlot *s = mm_find(&t->merges, (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib);
        *s = (MergeSlot){(uint64_t)(uint32_t)ia << 32 | (uint32_t)ib, (uint32_t)rank, (uint32_t)inew};
        rank++;
    }
    free(ab.p);
    if (!t->byte_level) {
        t->vocab = *orig;
        memset(orig, 0, sizeof *orig);
    }
    return 0;
}

static int load_added(HfTokenizer *t, Ld *L, const cJSON *a) {
    int n = cJSON_GetArraySize(a), i = 0;
    const cJSON *x;
    t->added = ul_calloc((size_t)n + 1, sizeof *t->added);
    cJSON_ArrayForEach(x, a) {
        const char *c = jstr(x, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        if (!c || !*c || !cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 2147483647.0)
            return ul_err(L->e, "%s: added_tokens[%d] needs a non-empty \"content\" and an \"id\"", L->file, i);
        AddedTok *k = &t->added[t->n_added++];
        k->single_word = jbool(x, "single_word", 0);
        k->lstrip = jbool(x, "lstrip", 0);
        k->rstrip = jbool(x, "rstrip", 0);
        k->content = ul_strdup(c);
        k->len = strlen(c);
        k->id = (uint32_t)id->valuedouble;
        k->special = jbool(x, "special", 0);
        k->normalized = jbool(x, "normalized", !k->special);
        i++;
    }
    return 0;
}

/* tokenizer_config.json beside tokenizer.json: its add_bos_token / add_eos_token (absent:
 * false) with its bos_token / eos_token. With from_config they replace tokenizer.json's
 * post-processor (what transformers 4's Llama tokenizers did); otherwise the ids follow
 * tokenizer.json (as tokenizers and transformers 5 do) and a disagreement is noted. */
static int load_config(HfTokenizer *t, Ld *L, const char *dir, const StrMap *orig, int from_config) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return from_config ? ul_err(L->e, "--bos-eos config: %s does not exist", path) : 0;
    char *text;
    if (ul_read_file(path, (size_t)64 << 20, &text, NULL, L->e)) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return ul_err(L->e, "%s: not valid JSON", path);
    const char *names[2] = {"bos_token", "eos_token"}, *flags[2] = {"add_bos_token", "add_eos_token"};
    int64_t id[2] = {-1, -1};
    int rc = 0, explicit = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        explicit |= cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, flags[k]));
        if (!jbool(j, flags[k], 0)) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[k]);
        const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
        id[k] = s ? token_id(t, orig, s) : -1;
        if (id[k] < 0)
            rc = ul_err(L->e, "%s: %s is true but %s %s%s%s is not a token of the tokenizer", path, flags[k], names[k],
                        s ? "\"" : "", s ? s : "is missing", s ? "\"" : "");
    }
    if (rc == 0 && from_config) {
        t->n_pre_ids = t->n_post_ids = 0;
        if (id[0] >= 0) push_id(&t->pre_ids, &t->n_pre_ids, (uint32_t)id[0]);
        if (id[1] >= 0) push_id(&t->post_ids, &t->n_post_ids, (uint32_t)id[1]);
        snprintf(t->note, sizeof t->note, " (--bos-eos config: %.400s)", path);
    } else if (rc == 0 && explicit) {
        int same = t->n_pre_ids == (id[0] >= 0) && t->n_post_ids == (id[1] >= 0) &&
                   (id[0] < 0 || t->pre_ids[0] == (uint32_t)id[0]) && (id[1] < 0 || t->post_ids[0] == (uint32_t)id[1]);
        if (!same)
            snprintf(t->note, sizeof t->note,
                     "; note: %.400s asks for add_bos_token %s, add_eos_token %s: --bos-eos config follows it",
                     path, id[0] >= 0 ? "true" : "false", id[1] >= 0 ? "true" : "false");
    }
    cJSON_Delete(j);
    return rc;
}

/* Every key and string of the tree is valid UTF-8 (a \u escape can make a lone surrogate). */
static const cJSON *bad_utf8_string(const cJSON *j) {
    for (const cJSON *c = j->child; c; c = c->next) {
        const char *ss[2] = {c->string, cJSON_IsString(c) ? c->valuestring : NULL};
        for (int k = 0; k < 2; k++) {
            if (!ss[k]) continue;
            const uint8_t *s = (const uint8_t *)ss[k];
            size_t n = strlen(ss[k]), prefix, l;
            for (size_t i = 0; i < n; i += l)
                if ((l = utf8_valid_len(s + i, n - i, &prefix)) == 0) return c;
        }
        const cJSON *b = bad_utf8_string(c);
        if (b) return b;
    }
    return NULL;
}

int hf_tok_load(const char *path, int bos_eos_from_config, HfTokenizer **out, UlError *e) {
    byte_map_init();
    *out = NULL;
    struct stat st;
    char file[4096], dir[4096] = "";
    if (stat(path, &st) != 0) return ul_err(e, "--tokenizer %s: no such file or directory", path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (stat(file, &st) != 0) return ul_err(e, "--tokenizer %s: the directory has no tokenizer.json", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    }
    char *text;
    size_t len;
    if (ul_read_file(file, (size_t)1 << 31, &text, &len, e)) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) return ul_err(e, "%s: not valid JSON", file);
    const cJSON *bad = bad_utf8_string(j);
    if (bad) {
        int r = ul_err(e, "%s: a key or string is not valid UTF-8 (a lone surrogate escape?)", file);
        cJSON_Delete(j);
        return r;
    }
    HfTokenizer *t = ul_calloc(1, sizeof *t);
    {
        int err;
        PCRE2_SIZE off;
        t->re_space = pcre2_compile((PCRE2_SPTR) "[" ONIG_SPACE "]", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                    &off, NULL);
        t->re_word = pcre2_compile((PCRE2_SPTR) "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                                   PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
        UL_ASSERT(t->re_space && t->re_word, "PCRE2: the \\s / \\w classes do not compile");
    }
    Ld L = {file, e};
    StrMap orig = {0};
    int rc = 0;
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "truncation"), *pd = cJSON_GetObjectItemCaseSensitive(j, "padding");
    if (tr && !cJSON_IsNull(tr)) rc = ul_err(e, "%s: truncation is set; only null is supported (documents are never truncated)", file);
    else if (pd && !cJSON_IsNull(pd)) rc = ul_err(e, "%s: padding is set; only null is supported", file);
    if (rc == 0) rc = load_added(t, &L, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"));
    if (rc == 0) rc = load_norm(t, &L, cJSON_GetObjectItemCaseSensitive(j, "normalizer"), "normalizer");
    if (rc == 0) rc = load_pre(t, &L, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), "pre_tokenizer");
    if (rc == 0) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
        rc = cJSON_IsObject(m) ? load_model(t, &L, m, &orig) : ul_err(e, "%s: no \"model\" object", file);
    }
    if (rc == 0) rc = load_post(t, &L, cJSON_GetObjectItemCaseSensitive(j, "post_processor"), "post_processor");
    if (rc == 0) rc = load_dec(t, &L, cJSON_GetObjectItemCaseSensitive(j, "decoder"), "decoder");
    if (rc == 0) rc = load_config(t, &L, dir, t->byte_level ? &orig : &t->vocab, bos_eos_from_config);
    for (int k = 0; rc == 0 && k < t->n_pre_ids + t->n_post_ids; k++) {
        uint32_t id = k < t->n_pre_ids ? t->pre_ids[k] : t->post_ids[k - t->n_pre_ids];
        if (id >= t->n_ids || !t->id_str[id])
            rc = ul_err(e, "%s: post_processor: special token id %u is not in the vocabulary", file, id);
    }
    if (rc == 0) {
        /* normalized added tokens are matched in their normalized form */
        HfTokScratch *sc = hf_tok_scratch_new(t);
        for (int k = 0; k < t->n_added; k++) {
            AddedTok *a = &t->added[k];
            if (!a->normalized || t->n_norms == 0) continue;
            sc->arena.n = 0;
            size_t off = arena_add(sc, a->content, a->len), nl, no = normalize(t, sc, off, a->len, &nl);
            char *c = ul_malloc(nl + 1);
            memcpy(c, sc->arena.p + no, nl);
            c[nl] = 0;
            free(a->content);
            a->content = c;
            a->len = nl;
            /* tokenizers keeps the normalized content: decode shows that form too */
            free(t->id_str[a->id]);
            t->id_str[a->id] = ul_strdup(c);
        }
        hf_tok_scratch_free(sc);
        added_set_build(t, &t->raw_set, 0);
        added_set_build(t, &t->norm_set, 1);
    }
    sm_free(&orig);
    cJSON_Delete(j);
    if (rc) {
        hf_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void hf_tok_free(HfTokenizer *t) {
    if (!t) return;
    sm_free(&t->vocab);
    for (uint32_t i = 0; i < t->n_ids; i++) free(t->id_str[i]);
    free(t->id_str);
    free(t->is_special);
    free(t->merges.slots);
    for (int k = 0; k < t->n_added; k++) free(t->added[k].content);
    free(t->added);
    free(t->raw_set.ix);
    free(t->norm_set.ix);
    for (int k = 0; k < t->n_norms; k++) {
        free(t->norms[k].s);
        pattern_free(&t->norms[k].pat);
    }
    free(t->norms);
    for (int k = 0; k < t->n_pres; k++) pattern_free(&t->pres[k].pat);
    free(t->pres);
    for (int k = 0; k < t->n_decs; k++) {
        free(t->decs[k].content);
        pattern_free(&t->decs[k].pat);
    }
    free(t->decs);
    free(t->pre_ids);
    free(t->post_ids);
    if (t->re_space) pcre2_code_free(t->re_space);
    if (t->re_word) pcre2_code_free(t->re_word);
    free(t);
}

uint32_t hf_tok_vocab_size(const HfTokenizer *t) { return t->n_ids; }

const char *hf_tok_specials_note(const HfTokenizer *t) {
    static _Thread_local char buf[1024];
    size_t n = 0;
    buf[0] = 0;
    for (int k = 0; k < t->n_pre_ids + t->n_post_ids; k++) {
        int pre = k < t->n_pre_ids;
        uint32_t id = pre ? t->pre_ids[k] : t->post_ids[k - t->n_pre_ids];
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s %s (id %u)", n ? ", " : "", pre ? "before" : "after",
                              t->id_str[id], id);
        if (n >= sizeof buf) break;
    }
    if (n == 0) snprintf(buf, sizeof buf, "none");
    if (t->note[0] && strlen(buf) + strlen(t->note) < sizeof buf) strcat(buf, t->note);
    return buf;
}
