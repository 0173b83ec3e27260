/* Hostile inputs for every file reader: truncations, random byte flips, crafted headers
 * (absurd lengths, offsets beyond EOF, shape/offset disagreement, overflowing shapes,
 * wrong JSON types). Each case must end in a clean error naming the file (or succeed,
 * the same way twice) without crashing; built also against ulcore_asan. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/params.h"
#include "formats/fileio.h"
#include "formats/hf_model.h"
#include "formats/tokens.h"
#include "testutil.h"

#define N_FLIPS 2000

static char g_tmp[64];

typedef struct {
    char s[256];
} Path;
static Path tp(const char *name) {
    Path p;
    snprintf(p.s, sizeof p.s, "%s/%s", g_tmp, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    unlink(path); /* a fresh file: ext4 flushes files truncated and rewritten (auto_da_alloc) */
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static uint8_t *slurp(const char *path, size_t *n) {
    char *buf;
    UlError e;
    if (ul_read_file(path, (size_t)1 << 30, &buf, n, &e)) UL_FATAL("%s", e.msg);
    return (uint8_t *)buf;
}

/* Flips 1..3 bytes of buf[n] to random values, mostly within the first `hot` bytes. */
static void mutate(uint8_t *buf, size_t n, size_t hot, UlRng *r) {
    int k = 1 + (int)(ul_rng_u64(r) % 3);
    for (int i = 0; i < k; i++) {
        size_t lim = (ul_rng_u64(r) % 4 != 0 && hot > 0) ? hot : n;
        size_t at = (size_t)(ul_rng_u64(r) % lim);
        uint64_t v = ul_rng_u64(r);
        buf[at] = (v & 256) ? (uint8_t)v : (uint8_t)(buf[at] ^ (1u << (v % 8)));
    }
}

/* ---------------------------------------------------------------- safetensors */

/* Opens path; on success reads every tensor (touching all its bytes). Returns rc and
 * checks that an error names the file and that a second open gives the same answer. */
static int try_st(const char *path) {
    int rc[2];
    UlError e[2] = {{{0}}, {{0}}};
    uint64_t sum[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        StFile f;
        rc[k] = st_open(&f, path, &e[k]);
        if (rc[k]) continue;
        for (int64_t i = 0; i < f.n; i++) {
            const StTensor *t = &f.tensors[i];
            if (t->dtype == UL_DT_F32 || t->dtype == UL_DT_BF16 || t->dtype == UL_DT_F16) {
                float *buf = ul_malloc((size_t)t->numel * sizeof(float) + 1); /* [numel] */
                CHECK(st_read_f32(&f, t, buf, &e[k]) == 0, "%s: read %s: %s", path, t->name, e[k].msg);
                for (int64_t j = 0; j < t->numel; j++) {
                    uint32_t u;
                    memcpy(&u, &buf[j], 4);
                    sum[k] += u;
                }
                free(buf);
            } else {
                const uint8_t *d = st_data(&f, t);
                for (uint64_t j = 0; j < t->end - t->begin; j++) sum[k] += d[j];
            }
            CHECK(st_find(&f, t->name) == t, "%s: st_find(%s)", path, t->name);
        }
        st_close(&f);
    }
    CHECK(rc[0] == rc[1] && sum[0] == sum[1] && strcmp(e[0].msg, e[1].msg) == 0, "%s: not deterministic", path);
    if (rc[0]) CHECK(strstr(e[0].msg, path) != NULL, "error does not name the file: '%s'", e[0].msg);
    return rc[0];
}

static uint8_t *make_header_file(const char *header, size_t data_bytes, size_t *n) {
    size_t h = strlen(header);
    *n = 8 + h + data_bytes;
    uint8_t *buf = ul_calloc(*n, 1); /* [n] */
    ul_store_le64(buf, h);
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + h + i] = (uint8_t)(i * 37 + 1);
    return buf;
}

static void test_safetensors(UlRng *r) {
    float a[4 * 3], b[5]; /* a [4, 3], b [5] */
    int64_t l[2] = {1, -1};
    int32_t k[3] = {4, 5, 6};
    for (int i = 0; i < 12; i++) a[i] = (float)ul_rng_normal(r);
    for (int i = 0; i < 5; i++) b[i] = (float)ul_rng_normal(r);
    StWriteItem items[] = {{.name = "a", .dtype = UL_DT_F32, .ndim = 2, .shape = {4, 3}, .data = a},
                           {.name = "model.b", .dtype = UL_DT_BF16, .ndim = 1, .shape = {5}, .data = b},
                           {.name = "l", .dtype = UL_DT_I64, .ndim = 1, .shape = {2}, .data = l},
                           {.name = "k", .dtype = UL_DT_I32, .ndim = 2, .shape = {3, 1}, .data = k}};
    Path good = tp("good.safetensors"), bad = tp("bad.safetensors");
    UlError e;
    CHECK(st_write(good.s, items, 4, &e) == 0, "%s", e.msg);
    CHECK(try_st(good.s) == 0, "the valid file does not open");
    size_t n;
    uint8_t *orig = slurp(good.s, &n);
    size_t hot = 8 + (size_t)ul_load_le64(orig);

    int fails = 0;
    for (size_t len = 0; len < n; len++) { /* every truncation */
        write_bytes(bad.s, orig, len);
        fails += try_st(bad.s) != 0;
    }
    CHECK(fails == (int)n, "%d of %zu truncations opened", (int)n - fails, n);

    uint8_t *buf = ul_malloc(n); /* [n] */
    int opened = 0;
    for (int it = 0; it < N_FLIPS; it++) {
        memcpy(buf, orig, n);
        mutate(buf, n, hot, r);
        write_bytes(bad.s, buf, n);
        opened += try_st(bad.s) == 0;
    }
    CHECK(opened > 0 && opened < N_FLIPS, "byte flips: %d of %d opened (expected some of each)", opened, N_FLIPS);
    free(buf);
    free(orig);

    /* Crafted headers: {header, data bytes, expected to open}. */
    static const struct {
        const char *h;
        size_t data;
        int ok;
    } cases[] = {
        {"{}", 0, 1},
        {"  {\"__metadata__\":{\"format\":\"pt\"}}   ", 0, 1},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 1},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, 1},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[4,4]}}", 4, 1},
        {"{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[1,5]}}", 6, 1},
        {"{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 1},
        {"", 0, 0},
        {"[]", 0, 0},
        {"{", 0, 0},
        {"{}x", 0, 0},
        {"{}\1", 0, 0},
        {"{\"x\":1}", 0, 0},
        {"{\"x\":{}}", 0, 0},
        {"{\"__metadata__\":5}", 0, 0},
        {"{\"x\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, 0},
        {"{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"I64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, 1},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, 0},      /* shape/offsets disagree */
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, 0},      /* beyond EOF */
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e20,1e20]}}", 4, 0}, /* beyond EOF */
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,0]}}", 4, 0},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 8, 0}, /* overlap */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0}, /* duplicate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf = make_header_file(cases[i].h, cases[i].data, &n);
        write_bytes(bad.s, buf, n);
        int rc = try_st(bad.s);
        CHECK((rc == 0) == cases[i].ok, "header %s: %s", cases[i].h, rc ? "failed" : "opened");
        free(buf);
    }
    /* a NUL inside the header */
    buf = make_header_file("{}  ", 0, &n);
    buf[10] = 0;
    write_bytes(bad.s, buf, n);
    CHECK(try_st(bad.s) != 0, "NUL in header accepted");
    free(buf);

    /* Absurd header lengths. */
    const uint64_t lens[] = {0, 1, 9, 1ull << 31, 1ull << 40, 1ull << 63, ~0ull};
    uint8_t small[16] = "........{}      ";
    ul_store_le64(small, 8);
    write_bytes(bad.s, small, sizeof small);
    CHECK(try_st(bad.s) == 0, "header length 8 (\"{}\" + spaces) rejected");
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        ul_store_le64(small, lens[i]);
        write_bytes(bad.s, small, sizeof small);
        CHECK(try_st(bad.s) != 0, "header length %llu accepted", (unsigned long long)lens[i]);
    }
    /* a header length within the file but over the 100 MB sanity limit (sparse file) */
    ul_store_le64(small, (100ull << 20) + 1);
    write_bytes(bad.s, small, sizeof small);
    CHECK(truncate(bad.s, (101 << 20)) == 0, "truncate");
    UlError e2 = {{0}};
    StFile f;
    CHECK(st_open(&f, bad.s, &e2) != 0 && strstr(e2.msg, "implausible"), "huge header: '%s'", e2.msg);
    /* not a regular file */
    CHECK(st_open(&f, g_tmp, &e2) != 0 && strstr(e2.msg, g_tmp), "directory opened: '%s'", e2.msg);
    unlink(bad.s);
}

/* ---------------------------------------------------------------- config.json */

/* Parses json; checks the error names `what`, repeatability, and (on success) that the
 * result is valid. */
static int try_config(const char *json, size_t len) {
    char *text = ul_malloc(len + 1); /* [len + 1] */
    memcpy(text, json, len);
    text[len] = 0;
    ModelConfig c[2];
    UlError e[2] = {{{0}}, {{0}}};
    int rc = ul_config_parse(text, "cfg/config.json", &c[0], &e[0]);
    int rc2 = ul_config_parse(text, "cfg/config.json", &c[1], &e[1]);
    CHECK(rc == rc2 && strcmp(e[0].msg, e[1].msg) == 0, "config parse not deterministic");
    if (rc) {
        CHECK(strstr(e[0].msg, "cfg/config.json") != NULL, "config error lacks the file: '%s'", e[0].msg);
    } else {
        CHECK(ul_config_validate(&c[0], "x", &e[0]) == 0, "parsed config invalid: %s", e[0].msg);
        if (c[0].head_dim <= 4096) {
            double inv[2048]; /* [head_dim / 2] */
            ul_rope_inv_freq(&c[0], inv);
            int finite = 1;
            for (int64_t i = 0; i < c[0].head_dim / 2; i++) finite &= isfinite(inv[i]) && inv[i] > 0;
            CHECK(finite, "non-finite inv_freq from an accepted config");
        }
        char *back = ul_config_to_json(&c[0], "float32");
        ModelConfig c2;
        CHECK(ul_config_parse(back, "back", &c2, &e[1]) == 0, "to_json of an accepted config fails: %s", e[1].msg);
        free(back);
    }
    free(text);
    return rc;
}

static void test_config(UlRng *r) {
    ModelConfig c = {.vocab_size = 300, .hidden_size = 64, .intermediate_size = 96, .num_layers = 2, .num_heads = 4,
                     .num_kv_heads = 2, .head_dim = 16, .max_position_embeddings = 512, .rms_norm_eps = 1e-5,
                     .initializer_range = 0.02, .rope_theta = 500000, .rope_type = UL_ROPE_LLAMA3, .rope_factor = 8,
                     .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                     .rope_original_max_position_embeddings = 128, .bos_token_id = 1, .eos_token_id = 2};
    char *json = ul_config_to_json(&c, "bfloat16");
    size_t n = strlen(json);
    size_t last_brace = (size_t)(strrchr(json, '}') - json);
    int wrong = 0;
    for (size_t len = 0; len <= n; len++) wrong += (try_config(json, len) == 0) != (len > last_brace);
    CHECK(wrong == 0, "%d truncations of config.json gave the wrong outcome", wrong);

    char *buf = ul_malloc(n + 1); /* [n + 1] */
    int accepted = 0;
    for (int it = 0; it < N_FLIPS; it++) {
        memcpy(buf, json, n + 1);
        mutate((uint8_t *)buf, n, n, r);
        accepted += try_config(buf, strlen(buf)) == 0; /* a flip to 0 shortens the text */
    }
    CHECK(accepted > 0 && accepted < N_FLIPS, "config flips: %d of %d accepted", accepted, N_FLIPS);
    free(buf);

    /* Every field (top level and inside rope_scaling) replaced by values of every type. */
    static const char *values[] = {"\"str\"", "[]", "{}", "null", "-5", "0", "1e300", "4.5", "true",
                                   "9223372036854775807", "[1, 2]", "[\"x\"]", "-1e-300", "2147483648"};
    cJSON *root = cJSON_Parse(json);
    int n_fields = 0;
    for (int level = 0; level < 2; level++) {
        cJSON *obj = level ? cJSON_GetObjectItem(root, "rope_scaling") : root;
        for (cJSON *fld = obj->child; fld; fld = fld->next, n_fields++)
            for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
                char key[64];
                snprintf(key, sizeof key, "%s", fld->string);
                cJSON *saved = cJSON_Duplicate(fld, 1);
                cJSON_ReplaceItemInObjectCaseSensitive(obj, key, cJSON_Parse(values[v]));
                char *txt = cJSON_PrintUnformatted(root);
                try_config(txt, strlen(txt));
                cJSON_free(txt);
                cJSON_ReplaceItemInObjectCaseSensitive(obj, key, saved);
                fld = saved;
            }
    }
    CHECK(n_fields > 25, "only %d fields mutated", n_fields);
    cJSON_Delete(root);
    /* a few documents that are not configs at all */
    const char *junk[] = {"", "null", "[]", "3", "\"llama\"", "{\"a\":", "{}", "{\"vocab_size\":{}}"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        CHECK(try_config(junk[i], strlen(junk[i])) != 0, "junk config '%s' accepted", junk[i]);
    free(json);
}

/* ---------------------------------------------------------------- token shards */

static int try_shard(const char *path) {
    int rc[2];
    UlError e[2] = {{{0}}, {{0}}};
    uint64_t sum[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        TokShard s;
        rc[k] = tok_shard_open(&s, path, &e[k]);
        if (rc[k]) continue;
        for (int64_t d = 0; d < s.n_docs; d++)
            for (uint64_t t = s.doc_offsets[d]; t < s.doc_offsets[d + 1]; t++)
                sum[k] += s.tokens[t] + 1 + (s.mask ? s.mask[t] : 1);
        CHECK(s.vocab_size == 0 || s.n_tokens == 0 || sum[k] > 0, "accepted shard unreadable");
        tok_shard_close(&s);
    }
    CHECK(rc[0] == rc[1] && sum[0] == sum[1] && strcmp(e[0].msg, e[1].msg) == 0, "%s: not deterministic", path);
    if (rc[0]) CHECK(strstr(e[0].msg, path) != NULL, "error does not name the file: '%s'", e[0].msg);
    return rc[0];
}

/* A version 1 shard (masked = 0) or a version 2 one with a loss mask. */
static void test_tokens(UlRng *r, int masked) {
    uint32_t tok[20]; /* [20] */
    uint8_t mask[20]; /* [20] */
    for (int i = 0; i < 20; i++) tok[i] = (uint32_t)(ul_rng_u64(r) % 50), mask[i] = i % 3 != 0;
    const uint64_t off[4] = {0, 5, 5, 20}; /* [n_docs + 1] */
    Path good = tp("good.tok"), bad = tp("bad.tok");
    UlError e;
    CHECK(tok_shard_write(good.s, tok, 20, off, 3, 50, masked ? mask : NULL, &e) == 0, "%s", e.msg);
    CHECK(try_shard(good.s) == 0, "valid shard does not open");
    size_t n;
    uint8_t *orig = slurp(good.s, &n);
    int fails = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(bad.s, orig, len);
        fails += try_shard(bad.s) != 0;
    }
    CHECK(fails == (int)n, "%d truncations opened", (int)n - fails);
    uint8_t *buf = ul_calloc(n + 8, 1); /* [n + 8] */
    memcpy(buf, orig, n);
    for (size_t extra = 1; extra <= 8; extra++) {
        write_bytes(bad.s, buf, n + extra);
        CHECK(try_shard(bad.s) != 0, "shard with %zu extra bytes opened", extra);
    }
    int opened = 0;
    for (int it = 0; it < N_FLIPS; it++) {
        memcpy(buf, orig, n);
        mutate(buf, n, 32 + 8 * 4, r);
        write_bytes(bad.s, buf, n);
        opened += try_shard(bad.s) == 0;
    }
    CHECK(opened > 0 && opened < N_FLIPS, "shard flips: %d of %d opened", opened, N_FLIPS);

    /* Crafted header fields on the valid file: {byte offset, u64 value}. */
    static const struct {
        int at;
        uint64_t v;
    } patches[] = {
        {16, 1ull << 63},       {16, ~0ull},        {16, (1ull << 61) - 1}, /* 8*(n_docs+1) wraps to 0 */
        {24, 1ull << 62},       {24, ~0ull},        {24, (1ull << 62) + 20}, /* 4*n_tokens wraps */
        {16, 2},                {24, 19},           {32, 1},               /* off[0] != 0 */
        {40, 6},                                                            /* off[1] > off[2] */
        {56, 21},                                                           /* off[n] != n_tokens */
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        memcpy(buf, orig, n);
        ul_store_le64(buf + patches[i].at, patches[i].v);
        write_bytes(bad.s, buf, n);
        CHECK(try_shard(bad.s) != 0, "patch %zu (offset %d = %llu) accepted", i, patches[i].at,
              (unsigned long long)patches[i].v);
    }
    for (uint32_t v = 0; v < 4; v++) { /* unknown versions, and 1 <-> 2 (with / without a mask) */
        if (v == (masked ? 2u : 1u)) continue;
        memcpy(buf, orig, n);
        ul_store_le32(buf + 8, v);
        write_bytes(bad.s, buf, n);
        CHECK(try_shard(bad.s) != 0, "version %u accepted", v);
    }
    memcpy(buf, orig, n);
    ul_store_le32(buf + 12, 10); /* vocab smaller than the tokens */
    write_bytes(bad.s, buf, n);
    CHECK(try_shard(bad.s) != 0, "token >= vocab accepted");
    ul_store_le32(buf + 12, 0); /* unknown vocab: fine */
    write_bytes(bad.s, buf, n);
    CHECK(try_shard(bad.s) == 0, "vocab 0 rejected");
    free(buf);
    free(orig);
    unlink(bad.s);
}

/* ---------------------------------------------------------------- model directories */

static int try_load(const char *dir, const ModelConfig *c, float *params) {
    UlError e = {{0}};
    int rc = ul_load_weights(dir, c, params, &e);
    if (rc) CHECK(strstr(e.msg, dir) != NULL, "load error lacks the directory: '%s'", e.msg);
    return rc;
}

static void test_model_dir(UlRng *r) {
    ModelConfig c = {.vocab_size = 13, .hidden_size = 8, .intermediate_size = 12, .num_layers = 1, .num_heads = 2,
                     .num_kv_heads = 1, .head_dim = 4, .max_position_embeddings = 32, .rms_norm_eps = 1e-5,
                     .rope_theta = 10000, .bos_token_id = -1, .eos_token_id = -1};
    int64_t n = ul_param_numel(&c), nt = ul_param_tensor_count(&c);
    float *p = ul_calloc((size_t)n, sizeof(float)); /* [n] */
    for (int64_t i = 0; i < n; i++) p[i] = (float)ul_rng_normal(r);
    Path dir = tp("model"), st = tp("model/model.safetensors");
    UlError e;
    CHECK(ul_save_hf_dir(dir.s, &c, p, UL_DT_BF16, &e) == 0, "%s", e.msg);
    CHECK(try_load(dir.s, &c, p) == 0, "valid model dir does not load");
    size_t len;
    uint8_t *orig = slurp(st.s, &len), *buf = ul_malloc(len); /* [len] each */
    int loaded = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(buf, orig, len);
        mutate(buf, len, 8 + (size_t)ul_load_le64(orig), r);
        write_bytes(st.s, buf, len);
        loaded += try_load(dir.s, &c, p) == 0;
    }
    CHECK(loaded > 0 && loaded < 300, "model flips: %d of 300 loaded", loaded);
    free(buf);

    /* Sharded layout with broken index files. */
    unlink(st.s);
    Path shard = tp("model/s1.safetensors"), index = tp("model/model.safetensors.index.json");
    write_bytes(shard.s, orig, len);
    free(orig);
    char ok_map[4096];
    int o = snprintf(ok_map, sizeof ok_map, "{\"weight_map\": {");
    for (int64_t i = 0; i < nt; i++) {
        ParamInfo q;
        ul_param_info(&c, i, &q);
        o += snprintf(ok_map + o, sizeof ok_map - (size_t)o, "%s\"%s\": \"s1.safetensors\"", i ? ", " : "", q.name);
    }
    snprintf(ok_map + o, sizeof ok_map - (size_t)o, "}}");
    write_bytes(index.s, ok_map, strlen(ok_map));
    CHECK(try_load(dir.s, &c, p) == 0, "valid sharded dir does not load");
    const char *bad_entries[] = {"\"s2.safetensors\"", "\"../s1.safetensors\"", "\"\"", "\".\"", "\"..\"", "5",
                                 "null", "{}", "\"model\""};
    char text[4096];
    for (size_t i = 0; i < sizeof bad_entries / sizeof bad_entries[0]; i++) {
        const char *at = strstr(ok_map, "\"lm_head.weight\": ") + strlen("\"lm_head.weight\": ");
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - ok_map), ok_map, bad_entries[i],
                 at + strlen("\"s1.safetensors\""));
        write_bytes(index.s, text, strlen(text));
        CHECK(try_load(dir.s, &c, p) != 0, "index entry %s accepted", bad_entries[i]);
    }
    const char *bad_index[] = {"", "{", "[]", "{}", "{\"weight_map\": []}", "{\"weight_map\": {}}"};
    for (size_t i = 0; i < sizeof bad_index / sizeof bad_index[0]; i++) {
        write_bytes(index.s, bad_index[i], strlen(bad_index[i]));
        CHECK(try_load(dir.s, &c, p) != 0, "index '%s' accepted", bad_index[i]);
    }
    for (size_t l = 0; l + 2 < strlen(ok_map); l += 7) { /* truncated index */
        write_bytes(index.s, ok_map, l);
        CHECK(try_load(dir.s, &c, p) != 0, "index truncated to %zu accepted", l);
    }
    free(p);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ul_test_corrupt_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    UlRng r;
    ul_rng_seed(&r, 20240611);
    test_safetensors(&r);
    test_config(&r);
    test_tokens(&r, 0);
    test_tokens(&r, 1);
    test_model_dir(&r);
    ul_remove_tree(g_tmp);
    return tu_finish("test_corrupt");
}
