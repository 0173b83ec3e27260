#define _GNU_SOURCE /* memmem */
#include "formats/hf_tokenize.h"

#include <cjson/cJSON.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/fileio.h"
#include "formats/hf_chat.h"
#include "formats/hf_tokenizer.h"
#include "formats/tokens.h"

/* One record of the input: a document to encode (docs/formats.md, "Inputs"). */
typedef enum { R_TEXT, R_PC, R_CHAT, R_IDS, R_KINDS } RecKind;

typedef struct {
    RecKind kind;
    int n;        /* strings: text 1; prompt, completion 2; chat role, content per message */
    char **s;     /* [n] sanitized UTF-8 (NUL-terminated; may hold NULs, see len) */
    size_t *len;  /* [n] */
    int owned;    /* s[i] malloc'd (JSONL), else inside the file's text */
    uint32_t *ids; /* R_IDS: [n_ids] */
    uint8_t *mask; /* R_IDS: [n_ids] or NULL (all ones) */
    int64_t n_ids;
    int64_t line; /* JSONL: 1-based line number */
} Rec;

typedef struct {
    Rec *v; /* [n] */
    int64_t n, cap;
} Recs;

static Rec *recs_add(Recs *r) {
    if (r->n == r->cap) {
        r->cap = 2 * r->cap + 64;
        r->v = ul_realloc(r->v, (size_t)r->cap * sizeof *r->v);
    }
    Rec *x = &r->v[r->n++];
    memset(x, 0, sizeof *x);
    return x;
}

static void rec_free(Rec *x) {
    for (int i = 0; x->owned && i < x->n; i++) free(x->s[i]);
    free(x->s);
    free(x->len);
    free(x->ids);
    free(x->mask);
    memset(x, 0, sizeof *x);
}

static void recs_clear(Recs *r) {
    for (int64_t i = 0; i < r->n; i++) rec_free(&r->v[i]);
    r->n = 0;
}

static void rec_strings(Rec *x, RecKind kind, int n, int owned) {
    x->kind = kind;
    x->n = n;
    x->owned = owned;
    x->s = ul_calloc((size_t)n + 1, sizeof *x->s);
    x->len = ul_calloc((size_t)n + 1, sizeof *x->len);
}

typedef struct {
    Recs *r;
    const char *text;
} BlockCtx;

static void add_block(void *ctx, int64_t start, int64_t len) {
    BlockCtx *c = ctx;
    Rec *x = recs_add(c->r);
    rec_strings(x, R_TEXT, 1, 0);
    x->s[0] = (char *)c->text + start;
    x->len[0] = (size_t)len;
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

typedef enum { L_OK, L_BAD, L_NO_FIELD, L_NUL_CLASH } LineStatus;

typedef struct {
    size_t a, b;  /* the line is text[a, b) */
    int64_t line; /* 1-based */
    LineStatus st;
    char why[200]; /* L_BAD */
    Rec rec;       /* L_OK */
    size_t bad_utf8;
} Line;

/* A JSON string -> sanitized UTF-8 (malloc'd), U+10FFFF back to NUL (escape_nul). */
static void take_string(const char *v, char **out, size_t *len, size_t *bad_utf8) {
    *bad_utf8 += ul_utf8_sanitize(v, strlen(v), out, len);
    char *d = *out;
    if (memmem(d, *len, NONCHAR, 4)) {
        size_t w = 0;
        for (size_t k = 0; k < *len; k++) {
            if (k + 4 <= *len && memcmp(d + k, NONCHAR, 4) == 0) {
                d[w++] = 0;
                k += 3;
            } else d[w++] = d[k];
        }
        *len = w;
    }
}

/* An integer array of JSON numbers: 0 and *n on success, else why is set. */
static int int_array(const cJSON *a, const char *key, int64_t lo, int64_t hi, int64_t **out, int64_t *n, char *why,
                     size_t wn) {
    if (!cJSON_IsArray(a)) return snprintf(why, wn, "\"%s\" is not an array", key), -1;
    *n = cJSON_GetArraySize(a);
    *out = ul_malloc((size_t)*n * sizeof **out + 1);
    int64_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        double v = cJSON_IsNumber(x) ? x->valuedouble : -1e300;
        if (!cJSON_IsNumber(x) || v != (double)(int64_t)v || v < (double)lo || v > (double)hi) {
            free(*out);
            *out = NULL;
            return snprintf(why, wn, "%s[%lld] is not an integer in [%lld, %lld]", key, (long long)i, (long long)lo,
                            (long long)hi),
                   -1;
        }
        (*out)[i++] = (int64_t)v;
    }
    return 0;
}

/* The record of a JSON object (docs/formats.md, "Inputs"): messages, prompt + completion,
 * input_ids [+ labels], else the text field. */
static LineStatus parse_record(const cJSON *j, const char *field, uint32_t vocab, Line *l) {
    Rec *x = &l->rec;
    const cJSON *msgs = field ? NULL : cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *prompt = field ? NULL : cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *compl = field ? NULL : cJSON_GetObjectItemCaseSensitive(j, "completion");
    const cJSON *ids = field ? NULL : cJSON_GetObjectItemCaseSensitive(j, "input_ids");
    char *why = l->why;
    size_t wn = sizeof l->why;
    if (msgs) {
        int n = cJSON_GetArraySize(msgs);
        if (!cJSON_IsArray(msgs) || n == 0)
            return snprintf(why, wn, "\"messages\" is not a non-empty array"), L_BAD;
        rec_strings(x, R_CHAT, 2 * n, 1);
        int i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
                x->n = 2 * i;
                return snprintf(why, wn, "messages[%d] is not an object with string \"role\" and \"content\"", i),
                       L_BAD;
            }
            take_string(role->valuestring, &x->s[2 * i], &x->len[2 * i], &l->bad_utf8);
            take_string(content->valuestring, &x->s[2 * i + 1], &x->len[2 * i + 1], &l->bad_utf8);
            i++;
        }
        return L_OK;
    }
    if (prompt || compl) {
        if (!cJSON_IsString(prompt) || !cJSON_IsString(compl))
            return snprintf(why, wn, "\"prompt\" and \"completion\" must both be strings"), L_BAD;
        rec_strings(x, R_PC, 2, 1);
        take_string(prompt->valuestring, &x->s[0], &x->len[0], &l->bad_utf8);
        take_string(compl->valuestring, &x->s[1], &x->len[1], &l->bad_utf8);
        return L_OK;
    }
    if (ids) {
        int64_t *v = NULL, *lab = NULL, n = 0, nl = 0;
        if (int_array(ids, "input_ids", 0, vocab - 1, &v, &n, why, wn)) return L_BAD;
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
        if (labels && !cJSON_IsNull(labels)) {
            if (int_array(labels, "labels", -100, vocab - 1, &lab, &nl, why, wn)) return free(v), L_BAD;
            if (nl != n) {
                snprintf(why, wn, "\"labels\" has %lld entries, \"input_ids\" %lld", (long long)nl, (long long)n);
                return free(v), free(lab), L_BAD;
            }
        }
        int64_t *att = NULL, na = 0; /* attention_mask: its 0s (padding) are dropped */
        const cJSON *am = cJSON_GetObjectItemCaseSensitive(j, "attention_mask");
        if (am && !cJSON_IsNull(am)) {
            if (int_array(am, "attention_mask", 0, 1, &att, &na, why, wn)) return free(v), free(lab), L_BAD;
            if (na != n) {
                snprintf(why, wn, "\"attention_mask\" has %lld entries, \"input_ids\" %lld", (long long)na,
                         (long long)n);
                return free(v), free(lab), free(att), L_BAD;
            }
        }
        x->kind = R_IDS;
        x->ids = ul_malloc((size_t)n * sizeof *x->ids + 1);
        x->mask = lab ? ul_malloc((size_t)n + 1) : NULL;
        for (int64_t i = 0; i < n; i++) {
            if (lab && lab[i] != -100 && lab[i] != v[i]) {
                snprintf(why, wn, "labels[%lld] is %lld: neither -100 nor input_ids[%lld] (%lld)", (long long)i,
                         (long long)lab[i], (long long)i, (long long)v[i]);
                return free(v), free(lab), free(att), L_BAD;
            }
            if (att && !att[i]) continue;
            if (lab) x->mask[x->n_ids] = lab[i] != -100;
            x->ids[x->n_ids++] = (uint32_t)v[i];
        }
        free(v);
        free(lab);
        free(att);
        return L_OK;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, field ? field : "text");
    if (!cJSON_IsString(t)) return L_NO_FIELD;
    rec_strings(x, R_TEXT, 1, 1);
    take_string(t->valuestring, &x->s[0], &x->len[0], &l->bad_utf8);
    return L_OK;
}

/* One JSONL line s[n] -> its record (thread-safe). */
static LineStatus parse_line(const char *s, size_t n, const char *field, uint32_t vocab, Line *l) {
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
    if (!j) st = L_BAD, snprintf(l->why, sizeof l->why, "not valid JSON");
    else {
        while (end && end < src + srclen && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
        if (end && end < src + srclen) st = L_BAD, snprintf(l->why, sizeof l->why, "text after the JSON value");
        else if (!cJSON_IsObject(j)) st = L_BAD, snprintf(l->why, sizeof l->why, "not a JSON object");
        else st = parse_record(j, field, vocab, l);
    }
    free(esc);
    cJSON_Delete(j);
    if (st != L_OK) rec_free(&l->rec);
    return st;
}

/* JSONL: one record per line; blank lines are ignored. Lines are parsed in parallel; the
 * first bad one (in file order) is the error. */
static int read_jsonl(const HfTokenizeOptions *o, uint32_t vocab, const char *path, const char *text, size_t len,
                      Recs *r, int64_t *bad_lines, size_t *bad_utf8, UlError *e) {
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
        memset(&lines[n], 0, sizeof lines[n]);
        lines[n].a = a, lines[n].b = le, lines[n].line = line;
        n++;
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; i++)
        lines[i].st = parse_line(text + lines[i].a, lines[i].b - lines[i].a, o->field, vocab, &lines[i]);
    int rc = 0;
    for (int64_t i = 0; i < n; i++) {
        Line *l = &lines[i];
        if (rc) {
            rec_free(&l->rec);
        } else if (l->st == L_OK) {
            *bad_utf8 += l->bad_utf8;
            l->rec.line = l->line;
            *recs_add(r) = l->rec;
        } else if (!o->skip_bad_lines || l->st == L_NUL_CLASH) {
            if (l->st == L_NO_FIELD)
                rc = ul_err(e,
                            "%s:%lld: no string field \"%s\"%s (--skip-bad-lines skips such lines)", path,
                            (long long)l->line, o->field ? o->field : "text",
                            o->field ? "" : " (nor messages, prompt + completion or input_ids); --field NAME reads "
                                            "another key");
            else if (l->st == L_NUL_CLASH)
                rc = ul_err(e, "%s:%lld: a \\u0000 and a U+10FFFF in one line are not supported", path,
                            (long long)l->line);
            else
                rc = ul_err(e, "%s:%lld: %s (--skip-bad-lines skips such lines)", path, (long long)l->line, l->why);
        } else (*bad_lines)++;
    }
    free(lines);
    return rc;
}

/* ---------------------------------------------------------------- encoding records */

/* The ids of one record and their loss mask. */
typedef struct {
    HfIds ids;
    uint8_t *m; /* [ids.cap] */
    int64_t mcap;
    int masked; /* some mask bit is 0 */
} Enc;

/* The mask of ids [from, to) (to < 0: to the end) is bit. */
static void enc_mark_range(Enc *o, int64_t from, int64_t to, int bit) {
    if (o->mcap < o->ids.cap) {
        o->mcap = o->ids.cap;
        o->m = ul_realloc(o->m, (size_t)o->mcap);
    }
    if (to < 0) to = o->ids.n;
    for (int64_t i = from; i < to; i++) o->m[i] = (uint8_t)bit;
    if (!bit && from < to) o->masked = 1;
}

static void enc_mark(Enc *o, int64_t from, int bit) { enc_mark_range(o, from, -1, bit); }

static void enc_ids(Enc *o, const uint32_t *ids, int n, int bit) {
    int64_t at = o->ids.n;
    for (int i = 0; i < n; i++) hf_ids_push(&o->ids, ids[i]);
    enc_mark(o, at, bit);
}

typedef struct {
    const HfTokenizer *t;
    const UlChat *chat;
    int64_t eos; /* prompt/completion: the id appended after the completion, or -1 */
} EncCtx;

/* A run of text between the chat format's special tokens: pre (no loss) then body (loss
 * when `loss`), encoded as one text, as the template's output is. The tokens of pre alone
 * that begin the run are outside the loss; a token spanning pre and body counts as body. */
static void enc_run(const EncCtx *c, HfTokScratch *sc, Enc *o, const char *pre, size_t np, const char *body,
                    size_t nb, int loss, HfIds *tmp) {
    char *cat = ul_malloc(np + nb + 1);
    memcpy(cat, pre, np);
    if (nb) memcpy(cat + np, body, nb);
    int64_t at = o->ids.n, k = 0;
    hf_tok_encode_text(c->t, sc, cat, np + nb, &o->ids);
    if (np && nb) {
        tmp->n = 0;
        hf_tok_encode_text(c->t, sc, pre, np, tmp);
        while (k < tmp->n && at + k < o->ids.n && tmp->v[k] == o->ids.v[at + k]) k++;
    } else k = nb ? 0 : o->ids.n - at;
    enc_mark_range(o, at, at + k, 0);
    enc_mark(o, at + k, loss);
    free(cat);
}

/* s = a + b + c + d (any may be NULL), malloc'd; *n its length. */
static char *cat4(const char *a, size_t na, const char *b, size_t nb, const char *c, size_t nc, const char *d,
                  size_t *n) {
    size_t nd = d ? strlen(d) : 0;
    *n = na + nb + nc + nd;
    char *s = ul_malloc(*n + 1), *w = s;
    if (na) memcpy(w, a, na), w += na;
    if (nb) memcpy(w, b, nb), w += nb;
    if (nc) memcpy(w, c, nc), w += nc;
    if (nd) memcpy(w, d, nd);
    s[*n] = 0;
    return s;
}

/* messages in the chat format, as the template renders them, loss on the assistant turns
 * (their content and end-of-turn token). */
static void enc_chat(const EncCtx *c, HfTokScratch *sc, const Rec *x, Enc *o, HfIds *tmp) {
    const UlChat *ch = c->chat;
    int llama = ch->fmt == UL_CHAT_LLAMA3;
    for (int i = 0; 2 * i < x->n; i++) {
        const char *role = x->s[2 * i], *content = x->s[2 * i + 1];
        size_t nr = x->len[2 * i], ncontent = x->len[2 * i + 1], np, nb, start = 0;
        int loss = nr == 9 && memcmp(role, "assistant", 9) == 0;
        char *pre, *body;
        if (llama) {
            const char *bos = i == 0 ? ch->bos : "";
            pre = cat4(bos, strlen(bos), "<|start_header_id|>", 19, role, nr, "<|end_header_id|>\n\n", &np);
            ncontent = ul_py_strip(content, ncontent, &start); /* the template's | trim */
            body = cat4(content + start, ncontent, NULL, 0, NULL, 0, "<|eot_id|>", &nb);
        } else {
            if (i == 0 && ch->default_system && !(nr == 6 && memcmp(role, "system", 6) == 0)) {
                char *sys = cat4("<|im_start|>system\n", 19, ch->default_system, strlen(ch->default_system), NULL, 0,
                                 "<|im_end|>\n", &np);
                enc_run(c, sc, o, sys, np, NULL, 0, 0, tmp);
                free(sys);
            }
            pre = cat4("<|im_start|>", 12, role, nr, NULL, 0, "\n", &np);
            body = cat4(content, ncontent, NULL, 0, NULL, 0, "<|im_end|>", &nb);
        }
        enc_run(c, sc, o, pre, np, body, nb, loss, tmp);
        if (!llama) enc_run(c, sc, o, "\n", 1, NULL, 0, 0, tmp);
        free(pre);
        free(body);
    }
}

static void enc_record(const EncCtx *c, HfTokScratch *sc, const Rec *x, Enc *o, HfIds *tmp) {
    const uint32_t *pre, *post;
    int npre, npost;
    hf_tok_special_ids(c->t, &pre, &npre, &post, &npost);
    switch (x->kind) {
    case R_TEXT:
        hf_tok_encode(c->t, sc, x->s[0], x->len[0], &o->ids);
        enc_mark(o, 0, 1);
        break;
    case R_PC: { /* pre, prompt (no loss); completion, EOS, post (loss) */
        enc_ids(o, pre, npre, 0);
        hf_tok_encode_text(c->t, sc, x->s[0], x->len[0], &o->ids);
        enc_mark(o, 0, 0);
        int64_t at = o->ids.n;
        hf_tok_encode_text(c->t, sc, x->s[1], x->len[1], &o->ids);
        int has_eos = c->eos < 0 || (o->ids.n > at && o->ids.v[o->ids.n - 1] == (uint32_t)c->eos);
        for (int k = 0; k < npost; k++) has_eos |= post[k] == (uint32_t)c->eos;
        if (!has_eos) hf_ids_push(&o->ids, (uint32_t)c->eos);
        enc_ids(o, post, npost, 1);
        enc_mark(o, at, 1);
        break;
    }
    case R_CHAT:
        enc_chat(c, sc, x, o, tmp);
        break;
    case R_IDS:
        for (int64_t i = 0; i < x->n_ids; i++) hf_ids_push(&o->ids, x->ids[i]);
        enc_mark(o, 0, 1);
        if (x->mask) {
            memcpy(o->m, x->mask, (size_t)x->n_ids);
            for (int64_t i = 0; i < x->n_ids; i++) o->masked |= !x->mask[i];
        }
        break;
    default:
        break;
    }
}

/* id of a text that is exactly one token, else -1. */
static int64_t single_token(const HfTokenizer *t, HfTokScratch *sc, const char *s) {
    HfIds ids = {0};
    hf_tok_encode_text(t, sc, s, strlen(s), &ids);
    int64_t id = ids.n == 1 ? (int64_t)ids.v[0] : -1;
    free(ids.v);
    return id;
}

static const char *KIND_NAMES[R_KINDS] = {"text", "prompt/completion", "chat", "pre-tokenized"};

int ul_tokenize_hf(const HfTokenizeOptions *o, UlError *e) {
    HfTokenizer *t;
    if (hf_tok_load(o->tokenizer, o->bos_eos_from_config, &t, e)) return -1;
    UlChat chat;
    if (ul_chat_setup(o->tokenizer, o->chat_format, &chat, e)) {
        hf_tok_free(t);
        return -1;
    }
    double t0 = ul_now();
    int nt = omp_get_max_threads();
    HfTokScratch **sc = ul_calloc((size_t)nt, sizeof *sc);
    for (int i = 0; i < nt; i++) sc[i] = hf_tok_scratch_new(t);
    int rc = 0;
    if (chat.fmt) { /* the format's special tokens must be tokens of this tokenizer */
        const char *need[4] = {"<|im_start|>", "<|im_end|>", NULL, NULL};
        if (chat.fmt == UL_CHAT_LLAMA3)
            need[0] = "<|start_header_id|>", need[1] = "<|end_header_id|>", need[2] = "<|eot_id|>", need[3] = chat.bos;
        for (int k = 0; rc == 0 && k < 4 && need[k]; k++)
            if (single_token(t, sc[0], need[k]) < 0)
                rc = ul_err(e, "%s: the %s chat format needs the token %s, which this tokenizer does not have%s",
                            o->tokenizer, chat.fmt == UL_CHAT_LLAMA3 ? "llama3" : "chatml", need[k],
                            o->chat_format ? " (--chat-format)" : "");
    }
    EncCtx ec = {t, &chat, chat.eos ? single_token(t, sc[0], chat.eos) : -1};
    Recs recs = {0};
    HfIds all = {0};
    uint8_t *all_mask = NULL; /* [all.cap], once some record has a 0 */
    uint64_t *off = ul_malloc(sizeof *off);
    int64_t n_docs = 0, bad_lines = 0, per_kind[R_KINDS] = {0}, n_loss = 0;
    size_t bad_utf8 = 0;
    off[0] = 0;
    for (int f = 0; f < o->n_files && rc == 0; f++) {
        const char *path = o->files[f];
        char *raw, *text = NULL;
        size_t rlen, len = 0;
        if ((rc = ul_read_file(path, (size_t)1 << 40, &raw, &rlen, e))) break;
        recs_clear(&recs);
        if (ends_with(path, ".jsonl")) {
            rc = read_jsonl(o, hf_tok_vocab_size(t), path, raw, rlen, &recs, &bad_lines, &bad_utf8, e);
        } else {
            bad_utf8 += ul_utf8_sanitize(raw, rlen, &text, &len);
            BlockCtx c = {&recs, text};
            if (o->split_blank_lines) ul_blank_line_blocks((const uint8_t *)text, (int64_t)len, add_block, &c);
            else add_block(&c, 0, (int64_t)len);
        }
        free(raw);
        for (int64_t i = 0; rc == 0 && i < recs.n; i++)
            if (recs.v[i].kind == R_CHAT && !chat.fmt)
                rc = ul_err(e, "%s:%lld: messages need a chat format: %s", path, (long long)recs.v[i].line, chat.why);
        if (rc == 0) {
            Enc *enc = ul_calloc((size_t)recs.n + 1, sizeof *enc); /* [recs.n] */
#pragma omp parallel
            {
                HfIds tmp = {0};
#pragma omp for schedule(dynamic, 1)
                for (int64_t i = 0; i < recs.n; i++) enc_record(&ec, sc[omp_get_thread_num()], &recs.v[i], &enc[i], &tmp);
                free(tmp.v);
            }
            off = ul_realloc(off, (size_t)(n_docs + recs.n + 1) * sizeof *off);
            for (int64_t i = 0; i < recs.n; i++) {
                Enc *x = &enc[i];
                if (all.n + x->ids.n > all.cap) {
                    all.cap = 2 * (all.n + x->ids.n) + 4096;
                    all.v = ul_realloc(all.v, (size_t)all.cap * sizeof *all.v);
                    if (all_mask) all_mask = ul_realloc(all_mask, (size_t)all.cap);
                }
                if (x->masked && !all_mask) {
                    all_mask = ul_malloc((size_t)all.cap);
                    memset(all_mask, 1, (size_t)all.n);
                }
                if (x->ids.n) memcpy(all.v + all.n, x->ids.v, (size_t)x->ids.n * sizeof *all.v);
                if (all_mask && x->ids.n) memcpy(all_mask + all.n, x->m, (size_t)x->ids.n);
                for (int64_t k = 1; k < x->ids.n; k++) n_loss += x->m[k];
                all.n += x->ids.n;
                free(x->ids.v);
                free(x->m);
                off[++n_docs] = (uint64_t)all.n;
                per_kind[recs.v[i].kind]++;
            }
            free(enc);
        }
        free(text);
    }
    recs_clear(&recs);
    free(recs.v);
    if (rc == 0) rc = tok_shard_write(o->out, all.v, all.n, off, n_docs, hf_tok_vocab_size(t), all_mask, e);
    if (rc == 0) {
        double dt = ul_now() - t0;
        char kinds[256] = "";
        for (int k = 0, w = 0; k < R_KINDS; k++)
            if (per_kind[k])
                w += snprintf(kinds + w, sizeof kinds - (size_t)w, "%s%lld %s%s", w ? ", " : "", (long long)per_kind[k],
                              KIND_NAMES[k],
                              k == R_CHAT ? (chat.fmt == UL_CHAT_LLAMA3 ? " (llama3)" : " (chatml)") : "");
        fprintf(stderr,
                "tokenize: %d file(s), %lld documents (%s), %lld tokens (%lld with loss) in %.2f s (%.0f tokens/s, "
                "%d threads) -> %s\n"
                "tokenize: vocab size %u; special tokens per document: %s\n",
                o->n_files, (long long)n_docs, kinds, (long long)all.n, (long long)n_loss, dt,
                dt > 0 ? (double)all.n / dt : 0.0, nt, o->out, hf_tok_vocab_size(t), hf_tok_specials_note(t));
        if (bad_lines) fprintf(stderr, "tokenize: skipped %lld malformed JSONL line(s)\n", (long long)bad_lines);
        if (bad_utf8)
            fprintf(stderr, "tokenize: replaced %zu invalid UTF-8 sequence(s) by U+FFFD\n", bad_utf8);
    }
    for (int i = 0; i < nt; i++) hf_tok_scratch_free(sc[i]);
    free(sc);
    free(all.v);
    free(all_mask);
    free(off);
    ul_chat_free(&chat);
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
