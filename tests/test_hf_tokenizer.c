/* The Hugging Face tokenizer in process: BPE merge order and UTF-8 replacement against
 * cases worked by hand from their definitions (the ids of real tokenizers are compared
 * with the `tokenizers` library by tests/tokenizer_test.sh), then hostile tokenizer.json
 * files: every truncation and random byte flips of a file using most features must end
 * in a clean error naming the file or load and encode/decode without fault (built also
 * against ulcore_asan). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/hf_tokenizer.h"
#include "testutil.h"

static char g_dir[64];

static void write_text(const char *path, const char *s, size_t n) {
    unlink(path); /* a fresh file: ext4 flushes files truncated and rewritten (auto_da_alloc) */
    FILE *f = fopen(path, "wb");
    UL_ASSERT(f && fwrite(s, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* ids of text with the tokenizer in JSON `json`; returns the count (-1: load failed). */
static int encode_with(const char *json, const char *text, uint32_t *ids, int cap) {
    char path[128];
    snprintf(path, sizeof path, "%s/t.json", g_dir);
    write_text(path, json, strlen(json));
    HfTokenizer *t;
    UlError e;
    if (hf_tok_load(path, 0, &t, &e)) {
        fprintf(stderr, "load: %s\n", e.msg);
        return -1;
    }
    HfTokScratch *s = hf_tok_scratch_new(t);
    HfIds out = {0};
    hf_tok_encode(t, s, text, strlen(text), &out);
    int n = (int)out.n;
    for (int i = 0; i < n && i < cap; i++) ids[i] = out.v[i];
    free(out.v);
    hf_tok_scratch_free(s);
    hf_tok_free(t);
    return n;
}

/* BPE by hand: merges apply lowest rank first, leftmost first among equal ranks. */
static void test_merge_order(void) {
    const char *fmt = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, "
                      "\"abc\": 5, \"aa\": 6}, \"merges\": [%s]}}";
    char json[512];
    uint32_t ids[16];
    /* b c first (rank 0), then a bc: one token */
    snprintf(json, sizeof json, fmt, "\"b c\", \"a b\", \"a bc\"");
    CHECK(encode_with(json, "abc", ids, 16) == 1 && ids[0] == 5, "abc with b c first: expected [5]");
    /* a b first, and no ab c merge: [ab, c] */
    snprintf(json, sizeof json, fmt, "\"a b\", \"b c\", \"a bc\"");
    CHECK(encode_with(json, "abc", ids, 16) == 2 && ids[0] == 3 && ids[1] == 2, "abc with a b first: expected [3, 2]");
    /* aaa: the leftmost pair merges first: [aa, a]; pairs as arrays */
    snprintf(json, sizeof json, fmt, "[\"a\", \"a\"]");
    CHECK(encode_with(json, "aaa", ids, 16) == 2 && ids[0] == 6 && ids[1] == 0, "aaa: expected [6, 0]");
    /* a character outside the vocabulary, no unk token: dropped (as tokenizers does), so
     * the a's around it become neighbours and merge */
    CHECK(encode_with(json, "axa", ids, 16) == 1 && ids[0] == 6, "axa: expected [6]");
    /* 100 000 a's: 50 000 aa tokens (the heap merge on a long word) */
    char *w = malloc(100001);
    memset(w, 'a', 100000);
    w[100000] = 0;
    uint32_t *many = malloc(60000 * sizeof *many);
    int n = encode_with(json, w, many, 60000), good = n == 50000;
    for (int i = 0; good && i < n; i++) good = many[i] == 6;
    CHECK(good, "100000 a's: %d tokens, expected 50000 x aa", n);
    free(w);
    free(many);
}

/* The maximal-subpart rule of the Unicode standard (ch. 3, U+FFFD substitution). */
static void test_sanitize(void) {
#define R "\xef\xbf\xbd"
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"ok \xc3\xa9", 5, "ok \xc3\xa9"}, {"\x80", 1, R},           {"\xe2\x82", 2, R},
        {"\xe2\x82x", 3, R "x"},           {"\xc0\xaf", 2, R R},      {"\xed\xa0\x80", 3, R R R},
        {"\xf0\x9f\x98", 3, R},           {"\xf4\x90\x80\x80", 4, R R R R}, {"\xff\xfe", 2, R R},
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"}, {"\xe0\x80\x80", 3, R R R}, {"\xe0\xa0", 2, R},
    };
#undef R
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *o;
        size_t ol;
        ul_utf8_sanitize(cases[i].in, cases[i].n, &o, &ol);
        CHECK(ol == strlen(cases[i].out) && memcmp(o, cases[i].out, ol) == 0, "case %zu: wrong replacement", i);
        free(o);
    }
    char *o;
    size_t ol;
    ul_utf8_sanitize("a\0b", 3, &o, &ol); /* NUL is a character */
    CHECK(ol == 3 && o[1] == 0 && o[2] == 'b', "NUL not kept");
    free(o);
}

/* A tokenizer.json touching most of the loader. */
static const char *FEATURES =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": false, \"special\": true},\n"
    "  {\"id\": 9, \"content\": \"caf\\u00e9\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true, \"special\": false}],\n"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"},"
    " {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"\\\\s+\"}, \"content\": \" \"}, {\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}]},\n"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\":"
    " \"\\\\p{N}{1,3}\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"Metaspace\", \"replacement\":"
    " \"\\u2581\", \"prepend_scheme\": \"first\", \"split\": true}, {\"type\": \"Digits\", \"individual_digits\": true}]},\n"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
    " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\","
    " \"ids\": [0], \"tokens\": [\"<s>\"]}}},\n"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"},"
    " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \","
    " \"start\": 1, \"stop\": 0}]},\n"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
    " \"ignore_merges\": false, \"vocab\": {\"<s>\": 0, \"<unk>\": 1, \"\\u2581\": 2, \"a\": 3, \"b\": 4, \"\\u2581a\": 5,"
    " \"ab\": 6, \"1\": 7, \"<0x7A>\": 8, \"caf\\u00e9\": 9}, \"merges\": [\"\\u2581 a\", \"a b\"]}}\n";

/* Loads path; on success encodes and decodes a text through every part. Returns rc and
 * checks that an error names the file. */
static int try_load(const char *path) {
    HfTokenizer *t;
    UlError e = {{0}};
    int rc = hf_tok_load(path, 0, &t, &e);
    if (rc) {
        CHECK(strstr(e.msg, path) != NULL, "error does not name the file: %s", e.msg);
        return rc;
    }
    static const char text[] = "<s>ab  a 1234 zz caf\xc3\xa9 cafe\xcc\x81 \xe2\x82\xac";
    HfTokScratch *s = hf_tok_scratch_new(t);
    HfIds ids = {0};
    hf_tok_encode(t, s, text, sizeof text - 1, &ids);
    char *out;
    size_t n;
    if (hf_tok_decode(t, ids.v, ids.n, 0, &out, &n, &e) == 0) free(out);
    free(ids.v);
    hf_tok_scratch_free(s);
    hf_tok_free(t);
    return 0;
}

static void test_hostile(UlRng *r) {
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", g_dir);
    size_t n = strlen(FEATURES);
    write_text(path, FEATURES, n);
    CHECK(try_load(path) == 0, "the feature file does not load");
    /* and its ids, worked by hand: BOS, <s>; "ab  1z cafe\u0301" is normalized to
     * "\u2581ab 1z caf\u00e9" (the added token "caf\u00e9" is matched in its normalized form,
     * "\u2581caf\u00e9", which is not there); split into "\u2581ab", "\u2581", "1", "z",
     * "\u2581caf\u00e9"; BPE: \u2581a b (the merge \u2581 a ranks first), \u2581, 1, z by byte fallback,
     * then \u2581 <unk> a <unk> (c has no byte token; f and \u00e9 fuse into one <unk>) */
    uint32_t ids[32];
    int k = encode_with(FEATURES, "<s>ab  1z caf\x65\xcc\x81", ids, 32);
    static const uint32_t want[] = {0, 0, 5, 4, 2, 7, 8, 2, 1, 3, 1};
    int same = k == (int)(sizeof want / sizeof want[0]);
    for (int i = 0; same && i < k; i++) same = ids[i] == want[i];
    CHECK(same, "feature file: %d ids, not the ones worked by hand", k);
    int wrong = 0;
    for (size_t len = 0; len + 2 < n; len++) { /* every truncation (the last bytes are "}\n") */
        write_text(path, FEATURES, len);
        wrong += try_load(path) == 0;
    }
    CHECK(wrong == 0, "%d truncations loaded", wrong);
    int loaded = 0;
    char *buf = malloc(n + 1);
    for (int i = 0; i < 1500; i++) {
        memcpy(buf, FEATURES, n + 1);
        int flips = 1 + (int)(ul_rng_u64(r) % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(ul_rng_u64(r) % n);
            uint64_t v = ul_rng_u64(r);
            buf[at] = (v & 256) ? (char)v : (char)(buf[at] ^ (1u << (v % 8)));
        }
        write_text(path, buf, n);
        loaded += try_load(path) == 0;
    }
    free(buf);
    CHECK(loaded > 0 && loaded < 1500, "flips: %d of 1500 loaded (expected some of each)", loaded);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ul_hftok_XXXXXX");
    if (!mkdtemp(g_dir)) UL_FATAL("mkdtemp");
    UlRng r;
    ul_rng_seed(&r, 18);
    test_merge_order();
    test_sanitize();
    test_hostile(&r);
    ul_remove_tree(g_dir);
    return tu_finish("hf_tokenizer");
}
