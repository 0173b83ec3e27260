/* File formats: safetensors, HF model directories (config.json + weights), RoPE
 * frequencies, token shards and the byte tokenizer. CPU only, temp files under a
 * mkdtemp directory. */
#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/params.h"
#include "formats/fileio.h"
#include "formats/hf_model.h"
#include "formats/tokens.h"
#include "testutil.h"

static char g_tmp[64]; /* the test's temp directory */

/* A path inside the temp directory: TP("x") for use within one expression, or kept as
 * `Path p = tp("x");`. */
typedef struct {
    char s[256];
} Path;
static Path tp(const char *name) {
    Path p;
    snprintf(p.s, sizeof p.s, "%s/%s", g_tmp, name);
    return p;
}
#define TP(name) (tp(name).s)

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}
static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A safetensors file from a header text and raw data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t n) {
    uint8_t len[8];
    ul_store_le64(len, strlen(header));
    FILE *f = fopen(path, "wb");
    fwrite(len, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Reads a whole file; *n gets its size. */
static char *slurp(const char *path, size_t *n) {
    char *buf = NULL;
    UlError e;
    if (ul_read_file(path, (size_t)1 << 30, &buf, n, &e)) {
        *n = 0;
        return NULL;
    }
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static int has(const char *msg, const char *sub) { return strstr(msg, sub) != NULL; }

/* bf16 rounding done differently from ul_f32_to_bf16: keep 8 significant bits with
 * round-half-even in double (finite normal inputs only). */
static float ref_bf16(float x) {
    int ex;
    double m = frexp((double)x, &ex); /* x = m * 2^ex, 0.5 <= |m| < 1 */
    return (float)ldexp(nearbyint(m * 256.0) / 256.0, ex);
}

/* ---------------------------------------------------------------- safetensors */

static void test_safetensors(void) {
    UlRng rng;
    ul_rng_seed(&rng, 1);
    float w[3 * 5], b[7 * 4], scalar = 3.25f; /* w [3, 5], b [7, 4], scalar [] */
    for (int i = 0; i < 15; i++) w[i] = (float)ul_rng_normal(&rng);
    w[0] = 0.0f, w[1] = -0.0f, w[2] = INFINITY, w[3] = 1e-40f /* subnormal */, w[4] = -3e38f;
    for (int i = 0; i < 28; i++) b[i] = (float)(ul_rng_normal(&rng) * 100.0);
    b[0] = 1.00390625f; /* 1 + 2^-8: a tie, rounds to even (1.0) */
    b[1] = 1.01171875f; /* 1 + 3*2^-8: a tie, rounds up to 1 + 2^-6 */
    int32_t ints[4] = {-1, 0, 7, 2147483647};                   /* [2, 2] */
    int64_t longs[3] = {-5, 1ll << 40, 9223372036854775807ll}; /* [3] */
    StWriteItem items[] = {
        {.name = "w.weight", .dtype = UL_DT_F32, .ndim = 2, .shape = {3, 5}, .data = w},
        {.name = "b.bias", .dtype = UL_DT_BF16, .ndim = 2, .shape = {7, 4}, .data = b},
        {.name = "ints", .dtype = UL_DT_I32, .ndim = 2, .shape = {2, 2}, .data = ints},
        {.name = "longs", .dtype = UL_DT_I64, .ndim = 1, .shape = {3}, .data = longs},
        {.name = "scalar", .dtype = UL_DT_F32, .ndim = 0, .data = &scalar},
        {.name = "empty", .dtype = UL_DT_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
    };
    UlError e = {{0}};
    Path pa = tp("a.safetensors"), pb = tp("b.safetensors");
    const char *p1 = pa.s, *p2 = pb.s;
    CHECK(st_write(p1, items, 6, &e) == 0, "st_write: %s", e.msg);
    CHECK(access(TP("a.safetensors.tmp"), F_OK) != 0, "temp file left behind");
    CHECK(st_write(p2, items, 6, &e) == 0, "st_write: %s", e.msg);
    CHECK(same_file(p1, p2), "two writes of the same items differ");

    StFile f;
    int rc = st_open(&f, p1, &e);
    CHECK(rc == 0, "st_open: %s", e.msg);
    if (rc) return;
    CHECK(f.n == 6, "n = %lld", (long long)f.n);
    CHECK(f.data_off % 8 == 0, "data section at %llu, not 8-aligned", (unsigned long long)f.data_off);
    CHECK(memcmp(f.map + 8, "{\"__metadata__\":{\"format\":\"pt\"},\"b.bias\":", 41) == 0, "header starts %.50s",
          (const char *)f.map + 8);
    const StTensor *tw = st_find(&f, "w.weight"), *tb = st_find(&f, "b.bias"), *ti = st_find(&f, "ints");
    const StTensor *tl = st_find(&f, "longs"), *ts = st_find(&f, "scalar"), *te = st_find(&f, "empty");
    CHECK(tw && tb && ti && tl && ts && te, "tensor missing");
    CHECK(st_find(&f, "nope") == NULL && st_find(&f, "w.weigh") == NULL, "st_find found a missing tensor");
    if (tw && tb && ti && tl && ts && te) {
        /* data in item order */
        CHECK(tw->begin == 0 && tw->end == 60, "w at [%llu, %llu]", (unsigned long long)tw->begin,
              (unsigned long long)tw->end);
        CHECK(tb->begin == 60 && tb->end == 116 && ti->begin == 116 && tl->begin == 132 && ts->begin == 156 &&
                  te->begin == 160 && te->end == 160,
              "offsets not in item order");
        CHECK(tw->dtype == UL_DT_F32 && tw->ndim == 2 && tw->shape[0] == 3 && tw->shape[1] == 5 && tw->numel == 15,
              "w metadata");
        CHECK(tb->dtype == UL_DT_BF16 && tb->numel == 28, "b metadata");
        CHECK(ts->ndim == 0 && ts->numel == 1 && te->numel == 0, "scalar/empty metadata");
        float got[28];
        CHECK(st_read_f32(&f, tw, got, &e) == 0, "read w: %s", e.msg);
        CHECK(memcmp(got, w, sizeof w) == 0, "F32 values not bit-identical");
        CHECK(st_read_f32(&f, tb, got, &e) == 0, "read b: %s", e.msg);
        int bad = 0;
        double maxrel = 0;
        for (int i = 0; i < 28; i++) {
            bad += got[i] != ref_bf16(b[i]);
            maxrel = fmax(maxrel, fabs((double)got[i] - b[i]) / fabs((double)b[i]));
        }
        CHECK(bad == 0, "%d BF16 values differ from independent rounding", bad);
        CHECK(maxrel <= 1.0 / 256, "BF16 relative error %g > 2^-8", maxrel);
        CHECK(got[0] == 1.0f && got[1] == 1.015625f, "ties: %.9g %.9g", got[0], got[1]);
        /* ranges (a rank's slice): elements [i0, i0 + n) of the same conversion */
        for (int i0 = 0; i0 < 28; i0 += 5) {
            float part[28];
            int n = 28 - i0 < 9 ? 28 - i0 : 9;
            CHECK(st_read_f32_range(&f, tb, i0, n, part, &e) == 0 && memcmp(part, got + i0, (size_t)n * 4) == 0,
                  "BF16 range [%d, +%d) differs from the whole read", i0, n);
            CHECK(st_read_f32_range(&f, tw, i0 % 15, 15 - i0 % 15, part, &e) == 0 &&
                      memcmp(part, w + i0 % 15, (size_t)(15 - i0 % 15) * 4) == 0,
                  "F32 range [%d, 15) differs", i0 % 15);
        }
        CHECK(memcmp(st_data(&f, ti), ints, sizeof ints) == 0, "I32 data");
        CHECK(memcmp(st_data(&f, tl), longs, sizeof longs) == 0, "I64 data");
        CHECK(st_read_f32(&f, ts, got, &e) == 0 && got[0] == 3.25f, "scalar");
        e.msg[0] = 0;
        CHECK(st_read_f32(&f, ti, got, &e) != 0 && has(e.msg, "a.safetensors") && has(e.msg, "ints"),
              "reading I32 as float: '%s'", e.msg);
    }
    st_close(&f);

    /* writer refuses bad input, leaves no file */
    StWriteItem dup[] = {items[0], items[0]};
    e.msg[0] = 0;
    CHECK(st_write(TP("dup.safetensors"), dup, 2, &e) != 0 && has(e.msg, "w.weight"), "duplicate: '%s'", e.msg);
    StWriteItem neg = {.name = "x", .dtype = UL_DT_F32, .ndim = 1, .shape = {-1}, .data = w};
    CHECK(st_write(TP("neg.safetensors"), &neg, 1, &e) != 0, "negative shape accepted");
    StWriteItem f16 = {.name = "x", .dtype = UL_DT_F16, .ndim = 1, .shape = {1}, .data = w};
    CHECK(st_write(TP("f16w.safetensors"), &f16, 1, &e) != 0, "F16 write accepted");
    CHECK(access(TP("dup.safetensors"), F_OK) != 0 && access(TP("neg.safetensors"), F_OK) != 0,
          "failed write left a file");
}

/* The exact bytes of a small file, built by hand from the format (independent of the
 * writer): the header sorted by name, space padded to a multiple of 8, data in item order. */
static void test_st_golden(void) {
    const float b[2] = {1.0f, -2.0f}, a[3] = {1.5f, 1.00390625f, -0.0f}; /* b [2] F32, a [3] BF16 */
    StWriteItem items[] = {{.name = "b", .dtype = UL_DT_F32, .ndim = 1, .shape = {2}, .data = b},
                           {.name = "a", .dtype = UL_DT_BF16, .ndim = 1, .shape = {3}, .data = a}};
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":"
                      "[8,14]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t hl = strlen(hdr), pl = (hl + 7) / 8 * 8;
    uint8_t want[512]; /* [8 + pl + 14] */
    ul_store_le64(want, pl);
    memcpy(want + 8, hdr, hl);
    memset(want + 8 + hl, ' ', pl - hl);
    const uint8_t bf[6] = {0xc0, 0x3f, 0x80, 0x3f, 0x00, 0x80}; /* 1.5, 1.0 (the tie to even), -0.0 */
    memcpy(want + 8 + pl, b, 8);
    memcpy(want + 16 + pl, bf, 6);
    size_t wn = 8 + pl + 14, n[2];
    UlError e = {{0}};
    CHECK(st_write(TP("g1.safetensors"), items, 2, &e) == 0, "st_write: %s", e.msg);
    StStream *s = st_stream_open(TP("g2.safetensors"), items, 2, &e);
    CHECK(s != NULL, "st_stream_open: %s", e.msg);
    const float flat[5] = {1.0f, -2.0f, 1.5f, 1.00390625f, -0.0f}; /* both tensors' sources, in item order */
    for (int i = 0; i < 5 && s; i++) CHECK(st_stream_append(s, flat + i, 1, &e) == 0, "append: %s", e.msg);
    if (s) CHECK(st_stream_close(s, &e) == 0, "close: %s", e.msg);
    char *g1 = slurp(TP("g1.safetensors"), &n[0]), *g2 = slurp(TP("g2.safetensors"), &n[1]);
    CHECK(g1 && n[0] == wn && memcmp(g1, want, wn) == 0, "st_write's bytes are not the format's (%zu bytes)", n[0]);
    CHECK(g2 && n[1] == wn && memcmp(g2, want, wn) == 0, "the stream's bytes are not the format's (%zu bytes)", n[1]);
    free(g1);
    free(g2);
}

/* st_stream_*: the file st_write writes, whatever the pieces (one per tensor, one element at
 * a time, everything in one call, random pieces across tensors), and read back by st_open;
 * an incomplete or overlong stream is an error that leaves no file. */
static void test_st_stream(void) {
    UlRng rng;
    ul_rng_seed(&rng, 7);
    /* the sources, packed in item order: w [3, 5] F32, b [7, 4] BF16 (from f32), ints [2, 2]
     * I32, longs [3] I64, scalar [] F32, empty [0, 4] F32, tail [9] F32 */
    enum { NW = 15, NB = 28, NI = 4, NL = 3, NT = 9 };
    uint8_t packed[4 * NW + 4 * NB + 4 * NI + 8 * NL + 4 + 4 * NT]; /* [bytes of all sources] */
    float w[NW], b[NB], scalar = -7.5f, tail[NT];
    int32_t ints[NI] = {-1, 0, 7, 2147483647};
    int64_t longs[NL] = {-5, 1ll << 40, 9223372036854775807ll};
    for (int i = 0; i < NW; i++) w[i] = (float)ul_rng_normal(&rng);
    for (int i = 0; i < NB; i++) b[i] = (float)(ul_rng_normal(&rng) * 100.0);
    for (int i = 0; i < NT; i++) tail[i] = (float)i - 4.0f;
    StWriteItem items[] = {
        {.name = "w.weight", .dtype = UL_DT_F32, .ndim = 2, .shape = {3, 5}, .data = w},
        {.name = "b.bias", .dtype = UL_DT_BF16, .ndim = 2, .shape = {7, 4}, .data = b},
        {.name = "ints", .dtype = UL_DT_I32, .ndim = 2, .shape = {2, 2}, .data = ints},
        {.name = "longs", .dtype = UL_DT_I64, .ndim = 1, .shape = {3}, .data = longs},
        {.name = "scalar", .dtype = UL_DT_F32, .ndim = 0, .data = &scalar},
        {.name = "empty", .dtype = UL_DT_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
        {.name = "tail", .dtype = UL_DT_F32, .ndim = 1, .shape = {NT}, .data = tail},
    };
    const int ni = 7;
    const int64_t numel[7] = {NW, NB, NI, NL, 1, 0, NT};
    const size_t esz[7] = {4, 4, 4, 8, 4, 4, 4}; /* source bytes per element */
    int64_t total = 0;
    size_t off = 0;
    for (int i = 0; i < ni; i++) {
        if (numel[i]) memcpy(packed + off, items[i].data, (size_t)numel[i] * esz[i]);
        off += (size_t)numel[i] * esz[i];
        total += numel[i];
    }
    UlError e = {{0}};
    CHECK(st_write(TP("ref.safetensors"), items, ni, &e) == 0, "st_write: %s", e.msg);
    /* element k of the packed sources starts at byte at[k] */
    size_t at[NW + NB + NI + NL + 1 + NT + 1];
    off = 0;
    int64_t k = 0;
    for (int i = 0; i < ni; i++)
        for (int64_t j = 0; j < numel[i]; j++, k++) {
            at[k] = off;
            off += esz[i];
        }
    at[k] = off;
    for (int mode = 0; mode < 4; mode++) {
        Path pp = tp("stream.safetensors");
        StStream *s = st_stream_open(pp.s, items, ni, &e);
        CHECK(s != NULL, "st_stream_open: %s", e.msg);
        if (!s) return;
        int rc = 0;
        if (mode == 0) /* one piece per tensor, from the items */
            for (int i = 0; i < ni && rc == 0; i++) rc = st_stream_append(s, items[i].data, numel[i], &e);
        else
            for (int64_t p = 0; p < total && rc == 0;) {
                int64_t m = mode == 1 ? 1 : mode == 2 ? total : 1 + (int64_t)(ul_rng_uniform(&rng) * 11);
                if (m > total - p) m = total - p;
                rc = st_stream_append(s, packed + at[p], m, &e);
                p += m;
            }
        CHECK(rc == 0, "mode %d: append: %s", mode, e.msg);
        if (rc) {
            st_stream_abort(s);
            continue;
        }
        CHECK(access(TP("stream.safetensors.tmp"), F_OK) == 0, "mode %d: no temporary file while writing", mode);
        CHECK(st_stream_close(s, &e) == 0, "mode %d: close: %s", mode, e.msg);
        CHECK(access(TP("stream.safetensors.tmp"), F_OK) != 0, "mode %d: temporary file left", mode);
        CHECK(same_file(pp.s, TP("ref.safetensors")), "mode %d: the stream differs from st_write's file", mode);
        StFile f;
        CHECK(st_open(&f, pp.s, &e) == 0, "mode %d: st_open: %s", mode, e.msg);
        const StTensor *tt = st_find(&f, "tail"), *tw = st_find(&f, "w.weight");
        float got[NW];
        CHECK(tt && tw && st_read_f32(&f, tt, got, &e) == 0 && memcmp(got, tail, sizeof tail) == 0,
              "mode %d: tail read back", mode);
        CHECK(tw && st_read_f32(&f, tw, got, &e) == 0 && memcmp(got, w, sizeof w) == 0, "mode %d: w read back", mode);
        st_close(&f);
    }
    /* too little data: an error naming the tensor, no file; too much: an error */
    StStream *s = st_stream_open(TP("short.safetensors"), items, ni, &e);
    CHECK(s && st_stream_append(s, packed, total - 1, &e) == 0, "short: append: %s", e.msg);
    e.msg[0] = 0;
    if (s) CHECK(st_stream_close(s, &e) != 0 && has(e.msg, "tail"), "short stream closed: '%s'", e.msg);
    CHECK(access(TP("short.safetensors"), F_OK) != 0 && access(TP("short.safetensors.tmp"), F_OK) != 0,
          "an incomplete stream left a file");
    s = st_stream_open(TP("long.safetensors"), items, 1, &e);
    e.msg[0] = 0;
    CHECK(s && st_stream_append(s, w, NW + 1, &e) != 0 && has(e.msg, "long.safetensors"), "overlong: '%s'", e.msg);
    st_stream_abort(s);
    CHECK(access(TP("long.safetensors.tmp"), F_OK) != 0, "abort left the temporary file");
    StWriteItem dup[] = {items[0], items[0]};
    CHECK(st_stream_open(TP("dup.safetensors"), dup, 2, &e) == NULL && has(e.msg, "w.weight"), "dup: '%s'", e.msg);
}

/* An F16 file made by hand: decoding of normal, subnormal, negative and inf values. */
static void test_f16(void) {
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]}}";
    const uint16_t h[8] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3800, 0x7C00, 0x8000, 0x3555};
    const float want[8] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, 0.5f, INFINITY, -0.0f, 0.333251953125f};
    Path path = tp("f16.safetensors");
    const char *p = path.s;
    write_st(p, hdr, h, sizeof h); /* little-endian host */
    StFile f;
    UlError e;
    int rc = st_open(&f, p, &e);
    CHECK(rc == 0, "open F16 (unaligned data section): %s", e.msg);
    if (rc) return;
    float got[8];
    CHECK(st_read_f32(&f, st_find(&f, "h"), got, &e) == 0, "read F16: %s", e.msg);
    for (int i = 0; i < 8; i++)
        CHECK(got[i] == want[i] && signbit(got[i]) == signbit(want[i]), "F16 %04x -> %.9g, want %.9g", h[i], got[i],
              want[i]);
    st_close(&f);
}

/* ---------------------------------------------------------------- config.json */

static const char *CFG4 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"hidden_act\": \"silu\","
    " \"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336,"
    " \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"pretraining_tp\": 1,"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0\","
    " \"use_cache\": true, \"vocab_size\": 128256}";

static const char *CFG5 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 128000, \"dtype\": \"bfloat16\","
    " \"eos_token_id\": 128001, \"head_dim\": 128, \"hidden_size\": 4096, \"intermediate_size\": 14336,"
    " \"max_position_embeddings\": 131072, \"model_type\": \"llama\", \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05,"
    " \"rope_parameters\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0, \"rope_type\": \"llama3\"},"
    " \"tie_word_embeddings\": false, \"vocab_size\": 128256}";

static void check_llama31(const ModelConfig *c, const char *tag) {
    CHECK(c->vocab_size == 128256 && c->hidden_size == 4096 && c->intermediate_size == 14336 && c->num_layers == 32 &&
              c->num_heads == 32 && c->num_kv_heads == 8 && c->head_dim == 128 && c->max_position_embeddings == 131072,
          "%s: sizes", tag);
    CHECK(c->rms_norm_eps == 1e-5 && c->initializer_range == 0.02 && !c->tie_word_embeddings, "%s: eps/init/tie", tag);
    CHECK(c->rope_type == UL_ROPE_LLAMA3 && c->rope_theta == 500000.0 && c->rope_factor == 8.0 &&
              c->rope_low_freq_factor == 1.0 && c->rope_high_freq_factor == 4.0 &&
              c->rope_original_max_position_embeddings == 8192,
          "%s: rope", tag);
    CHECK(c->bos_token_id == 128000 && c->eos_token_id == 128001, "%s: bos/eos %lld %lld", tag,
          (long long)c->bos_token_id, (long long)c->eos_token_id);
}

static int configs_equal(const ModelConfig *a, const ModelConfig *b) {
    return a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_layers == b->num_layers &&
           a->num_heads == b->num_heads && a->num_kv_heads == b->num_kv_heads && a->head_dim == b->head_dim &&
           a->max_position_embeddings == b->max_position_embeddings && a->rms_norm_eps == b->rms_norm_eps &&
           a->initializer_range == b->initializer_range && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->rope_theta == b->rope_theta && a->rope_type == b->rope_type && a->bos_token_id == b->bos_token_id &&
           a->eos_token_id == b->eos_token_id &&
           (a->rope_type == UL_ROPE_DEFAULT ||
            (a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor &&
             a->rope_high_freq_factor == b->rope_high_freq_factor &&
             a->rope_original_max_position_embeddings == b->rope_original_max_position_embeddings));
}

/* Parses `base` with one textual substitution; expects an error mentioning `field`. */
static void expect_error_in(const char *base, const char *from, const char *to, const char *field) {
    const char *at = strstr(base, from);
    CHECK(at != NULL, "test bug: '%s' not in the config", from);
    if (!at) return;
    char json[4096];
    snprintf(json, sizeof json, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    ModelConfig c;
    UlError e = {{0}};
    int rc = ul_config_parse(json, "my/config.json", &c, &e);
    CHECK(rc != 0, "accepted %s -> %s", from, to);
    CHECK(has(e.msg, "my/config.json") && has(e.msg, field), "%s -> %s: message '%s' lacks '%s'", from, to, e.msg,
          field);
}
static void expect_config_error(const char *from, const char *to, const char *field) {
    expect_error_in(CFG4, from, to, field);
}

/* Released configs of the other families (as on the Hub, transformers 4.x layout): Qwen2.5-7B
 * (sliding_window set but use_sliding_window false), Qwen3-4B (head_dim 128 != 2560 / 32, tied),
 * Mistral-7B-v0.3 (sliding_window null). Their parameter counts are transformers' own
 * (sum of numel over the model built on the meta device). */
static const char *CFG_QWEN2 =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643,"
    " \"eos_token_id\": 151645, \"hidden_act\": \"silu\", \"hidden_size\": 3584, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 18944, \"max_position_embeddings\": 32768, \"max_window_layers\": 28,"
    " \"model_type\": \"qwen2\", \"num_attention_heads\": 28, \"num_hidden_layers\": 28, \"num_key_value_heads\": 4,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"sliding_window\": 131072, \"tie_word_embeddings\": false,"
    " \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 152064}";
static const char *CFG_QWEN3 =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151645, \"head_dim\": 128, \"hidden_act\": \"silu\","
    " \"hidden_size\": 2560, \"initializer_range\": 0.02, \"intermediate_size\": 9728,"
    " \"max_position_embeddings\": 40960, \"max_window_layers\": 36, \"model_type\": \"qwen3\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 36, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": null, \"rope_theta\": 1000000, \"sliding_window\": null, \"tie_word_embeddings\": true,"
    " \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 151936}";
static const char *CFG_MISTRAL =
    "{\"architectures\": [\"MistralForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1,"
    " \"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 1000000.0, \"sliding_window\": null, \"tie_word_embeddings\": false,"
    " \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"vocab_size\": 32768}";

static void test_families(void) {
    const struct {
        const char *json;
        UlFamilyId fam;
        int64_t head_dim, numel, tensors;
        const char *has, *lacks; /* in the written config.json */
    } cases[] = {
        {CFG4, UL_FAM_LLAMA, 128, 8030261248, 291, "\"pretraining_tp\": 1", "use_sliding_window"},
        {CFG_QWEN2, UL_FAM_QWEN2, 128, 7615616512, 339, "\"use_sliding_window\": false", "attention_bias"},
        {CFG_QWEN3, UL_FAM_QWEN3, 128, 4022468096, 398, "\"use_sliding_window\": false", "mlp_bias"},
        {CFG_MISTRAL, UL_FAM_MISTRAL, 128, 7248023552, 291, "\"sliding_window\": null", "attention_bias"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ModelConfig c, back;
        UlError e = {{0}};
        int rc = ul_config_parse(cases[i].json, "fam", &c, &e);
        CHECK(rc == 0, "family %zu: %s", i, e.msg);
        if (rc) continue;
        const char *arch = ul_families[cases[i].fam].architecture;
        CHECK(c.family == cases[i].fam && c.head_dim == cases[i].head_dim, "%s: family %d head_dim %lld", arch,
              (int)c.family, (long long)c.head_dim);
        CHECK(ul_param_numel(&c) == cases[i].numel && ul_param_tensor_count(&c) == cases[i].tensors,
              "%s: %lld parameters in %lld tensors, transformers has %lld in %lld", arch,
              (long long)ul_param_numel(&c), (long long)ul_param_tensor_count(&c), (long long)cases[i].numel,
              (long long)cases[i].tensors);
        char *json = ul_config_to_json(&c, "float32");
        CHECK(ul_config_parse(json, "roundtrip", &back, &e) == 0 && configs_equal(&c, &back) &&
                  back.family == c.family,
              "%s: round trip: %s", arch, e.msg);
        char want[64];
        snprintf(want, sizeof want, "\"%s\"", ul_families[cases[i].fam].model_type);
        CHECK(has(json, arch) && has(json, want) && has(json, cases[i].has) && !has(json, cases[i].lacks),
              "%s: written config.json:\n%s", arch, json);
        free(json);
    }
    /* a config with no architectures and no model_type is a Llama; model_type alone decides */
    ModelConfig c;
    UlError e = {{0}};
    const char *bare = "{\"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8,"
                       " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"model_type\": \"qwen3\"}";
    CHECK(ul_config_parse(bare, "bare", &c, &e) == 0 && c.family == UL_FAM_QWEN3, "model_type alone: %s", e.msg);

    expect_error_in(CFG_QWEN2, "\"use_sliding_window\": false", "\"use_sliding_window\": true", "use_sliding_window");
    expect_error_in(CFG_QWEN2, "\"model_type\": \"qwen2\"", "\"model_type\": \"qwen2_moe\"", "model_type");
    expect_error_in(CFG_QWEN2, "[\"Qwen2ForCausalLM\"]", "[\"Qwen2MoeForCausalLM\"]", "architectures");
    expect_error_in(CFG_QWEN2, "\"max_window_layers\": 28", "\"num_experts\": 60", "num_experts");
    expect_error_in(CFG_QWEN3, "\"attention_bias\": false", "\"attention_bias\": true", "attention_bias");
    expect_error_in(CFG_QWEN3, "\"use_sliding_window\": false", "\"use_sliding_window\": false, \"layer_types\": "
                    "[\"full_attention\", \"sliding_attention\"]", "layer_types");
    expect_error_in(CFG_QWEN3, "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen2\"", "model_type");
    expect_error_in(CFG_MISTRAL, "\"sliding_window\": null", "\"sliding_window\": 4096", "sliding_window");
    expect_error_in(CFG_MISTRAL, "\"eos_token_id\": 2", "\"eos_token_id\": 2, \"num_local_experts\": 8",
                    "num_local_experts");
}

static void test_config(void) {
    ModelConfig c4, c5, c;
    UlError e = {{0}};
    CHECK(ul_config_parse(CFG4, "cfg4", &c4, &e) == 0, "4.x style: %s", e.msg);
    check_llama31(&c4, "4.x");
    CHECK(ul_config_parse(CFG5, "cfg5", &c5, &e) == 0, "5.x style: %s", e.msg);
    check_llama31(&c5, "5.x");
    CHECK(configs_equal(&c4, &c5), "4.x and 5.x styles disagree");

    /* defaults as transformers' LlamaConfig */
    const char *minimal = "{\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 96,"
                          " \"num_hidden_layers\": 2, \"num_attention_heads\": 4}";
    CHECK(ul_config_parse(minimal, "min", &c, &e) == 0, "minimal: %s", e.msg);
    CHECK(c.num_kv_heads == 4 && c.head_dim == 16 && c.max_position_embeddings == 2048 && c.rms_norm_eps == 1e-6 &&
              c.initializer_range == 0.02 && c.rope_theta == 10000.0 && c.rope_type == UL_ROPE_DEFAULT &&
              !c.tie_word_embeddings && c.bos_token_id == -1 && c.eos_token_id == -1,
          "minimal: defaults");
    /* old "type" key, top-level rope_theta, null optional fields, llama3 without
     * original_max_position_embeddings (transformers 5.x falls back to max_position_embeddings) */
    const char *old = "{\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"num_key_value_heads\": null, \"head_dim\": null,"
                      " \"max_position_embeddings\": 4096, \"rope_theta\": 1234.5, \"tie_word_embeddings\": true,"
                      " \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 2, \"low_freq_factor\": 1,"
                      " \"high_freq_factor\": 2}}";
    CHECK(ul_config_parse(old, "old", &c, &e) == 0, "old style: %s", e.msg);
    CHECK(c.rope_type == UL_ROPE_LLAMA3 && c.rope_theta == 1234.5 && c.rope_factor == 2.0 &&
              c.rope_original_max_position_embeddings == 4096 && c.num_kv_heads == 4 && c.tie_word_embeddings,
          "old style values");
    /* rope_scaling null + rope_parameters default */
    const char *dflt = "{\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
                       " \"num_attention_heads\": 4, \"rope_scaling\": null,"
                       " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 777.0}}";
    CHECK(ul_config_parse(dflt, "dflt", &c, &e) == 0 && c.rope_type == UL_ROPE_DEFAULT && c.rope_theta == 777.0,
          "default rope_parameters: %s", e.msg);

    /* to_json -> parse round trip (llama3 and default rope, tied) */
    for (int k = 0; k < 2; k++) {
        ModelConfig src = k ? c : c4, back;
        char *json = ul_config_to_json(&src, "bfloat16");
        CHECK(ul_config_parse(json, "roundtrip", &back, &e) == 0, "round trip parse: %s", e.msg);
        CHECK(configs_equal(&src, &back), "round trip changed the config (case %d)", k);
        CHECK(has(json, "\"LlamaForCausalLM\"") && has(json, "\"torch_dtype\": \"bfloat16\""), "json content");
        if (k == 0) CHECK(has(json, "\"factor\": 8.0") && has(json, "\"rope_theta\": 500000.0"), "floats need '.0'");
        if (k == 1) CHECK(has(json, "\"rope_scaling\": null") && has(json, "\"bos_token_id\": null"), "nulls");
        free(json);
    }

    expect_config_error("\"model_type\": \"llama\"", "\"model_type\": \"mistral\"", "model_type"); /* mismatch */
    expect_config_error("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", "model_type");
    expect_config_error("[\"LlamaForCausalLM\"]", "[\"GPT2LMHeadModel\"]", "architectures");
    expect_config_error("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act");
    expect_config_error("\"attention_bias\": false", "\"attention_bias\": true", "attention_bias");
    expect_config_error("\"mlp_bias\": false", "\"mlp_bias\": true", "mlp_bias");
    expect_config_error("\"pretraining_tp\": 1", "\"pretraining_tp\": 2", "pretraining_tp");
    expect_config_error("\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"", "rope_type");
    expect_config_error("\"factor\": 8.0,", "", "factor");
    expect_config_error("\"hidden_size\": 4096", "\"hidden_size\": \"4096\"", "hidden_size");
    expect_config_error("\"hidden_size\": 4096", "\"hidden_size\": 4096.5", "hidden_size");
    expect_config_error("\"hidden_size\": 4096", "\"hidden_size\": 0", "hidden_size");
    expect_config_error("\"num_hidden_layers\": 32", "\"num_hidden_layers\": -1", "num_hidden_layers");
    expect_config_error("\"vocab_size\": 128256", "\"vocab_sizes\": 128256", "vocab_size");
    expect_config_error("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5", "num_key_value_heads");
    expect_config_error("\"hidden_size\": 4096", "\"hidden_size\": 4096, \"head_dim\": 127", "head_dim");
    expect_config_error("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0", "tie_word_embeddings");
    expect_config_error("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1", "rms_norm_eps");
    expect_config_error("\"rope_scaling\": {", "\"rope_scaling\": [], \"x\": {", "rope_scaling");
    expect_config_error("\"vocab_size\": 128256}", "\"vocab_size\": 128256", "config.json"); /* bad JSON */

    e.msg[0] = 0;
    CHECK(ul_config_load(TP("missing/config.json"), &c, &e) != 0 && has(e.msg, "missing/config.json"),
          "missing file: '%s'", e.msg);
    write_text(TP("config.json"), CFG5);
    CHECK(ul_config_load(TP("config.json"), &c, &e) == 0 && configs_equal(&c, &c5), "load file: %s", e.msg);
}

/* ---------------------------------------------------------------- RoPE */

static void test_rope(void) {
    ModelConfig c;
    UlError e;
    CHECK(ul_config_parse(CFG4, "cfg4", &c, &e) == 0, "%s", e.msg);
    double got[64], ref[64]; /* [head_dim / 2] */
    ul_rope_inv_freq(&c, got);
    /* independent: exp/log form, bands decided by frequency instead of wavelength */
    const double orig = 8192, lo = 1, hi = 4, factor = 8, two_pi = 6.283185307179586;
    int n_low = 0, n_mid = 0, n_high = 0;
    for (int i = 0; i < 64; i++) {
        double f = exp(-log(500000.0) * (2.0 * i) / 128.0);
        double cycles = orig * f / two_pi; /* = orig / wavelen */
        if (cycles > hi) ref[i] = f, n_high++;
        else if (cycles < lo) ref[i] = f / factor, n_low++;
        else {
            double s = (cycles - lo) / (hi - lo);
            ref[i] = f * ((1 - s) / factor + s), n_mid++;
        }
    }
    CHECK(n_low > 0 && n_mid > 0 && n_high > 0, "bands: %d %d %d", n_low, n_mid, n_high);
    double maxrel = 0;
    for (int i = 0; i < 64; i++) maxrel = fmax(maxrel, fabs(got[i] - ref[i]) / ref[i]);
    CHECK(maxrel < 1e-13, "llama3 inv_freq rel err %g", maxrel);
    double last = pow(500000.0, -126.0 / 128) / 8;
    CHECK(got[0] == 1.0 && fabs(got[63] - last) < 1e-14 * last, "llama3 endpoints %g %g", got[0], got[63]);
    c.rope_type = UL_ROPE_DEFAULT;
    ul_rope_inv_freq(&c, got);
    maxrel = 0;
    for (int i = 0; i < 64; i++) maxrel = fmax(maxrel, fabs(got[i] - exp(-log(500000.0) * i / 64.0)) * exp(log(500000.0) * i / 64.0));
    CHECK(maxrel < 1e-13, "default inv_freq rel err %g", maxrel);
}

/* ---------------------------------------------------------------- model directories */

static ModelConfig tiny_config(int tied, int rope_llama3) {
    ModelConfig c = {.vocab_size = 11, .hidden_size = 8, .intermediate_size = 12, .num_layers = 2, .num_heads = 4,
                     .num_kv_heads = 2, .head_dim = 4, .max_position_embeddings = 64, .rms_norm_eps = 1e-5,
                     .initializer_range = 0.02, .tie_word_embeddings = tied, .rope_theta = 10000.0,
                     .rope_type = rope_llama3 ? UL_ROPE_LLAMA3 : UL_ROPE_DEFAULT, .rope_factor = 8,
                     .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                     .rope_original_max_position_embeddings = 16, .bos_token_id = 1, .eos_token_id = 2};
    return c;
}

static float *random_params(const ModelConfig *c, uint64_t seed) {
    int64_t n = ul_param_numel(c);
    float *p = ul_malloc((size_t)n * sizeof(float)); /* [n] */
    UlRng r;
    ul_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(ul_rng_normal(&r) * 0.5);
    return p;
}

static int no_siblings_left(void) { /* no DIR.tmp-* / DIR.old-* next to the model dirs */
    int left = 0;
    const char *pat[2] = {"*.tmp-*", "*.old-*"};
    for (int i = 0; i < 2; i++) {
        glob_t g;
        if (glob(TP(pat[i]), 0, NULL, &g) == 0) left += (int)g.gl_pathc;
        globfree(&g);
    }
    return left == 0;
}

static void test_model_dir(void) {
    UlError e = {{0}};
    for (int tied = 0; tied < 2; tied++) {
        ModelConfig c = tiny_config(tied, !tied);
        int64_t n = ul_param_numel(&c);
        float *p = random_params(&c, 7 + tied), *q = ul_calloc((size_t)n, sizeof(float)); /* [n] each */
        Path p1 = tp("m1"), p2 = tp("m2/"), p3 = tp("m3");
        const char *d1 = p1.s, *d2 = p2.s, *d3 = p3.s;
        /* F32: exact; save -> load -> save is byte-identical */
        CHECK(ul_save_hf_dir(d1, &c, p, UL_DT_F32, &e) == 0, "save: %s", e.msg);
        CHECK(ul_load_weights(d1, &c, q, &e) == 0, "load: %s", e.msg);
        CHECK(memcmp(p, q, (size_t)n * sizeof(float)) == 0, "F32 weights changed in the round trip");
        CHECK(ul_save_hf_dir(d2, &c, q, UL_DT_F32, &e) == 0, "save 2: %s", e.msg);
        CHECK(same_file(TP("m1/model.safetensors"), TP("m2/model.safetensors")) &&
                  same_file(TP("m1/config.json"), TP("m2/config.json")),
              "save->load->save not byte-identical (tied=%d)", tied);
        ModelConfig back;
        CHECK(ul_config_load(TP("m1/config.json"), &back, &e) == 0 && configs_equal(&c, &back),
              "config.json round trip: %s", e.msg);
        StFile f;
        if (st_open(&f, TP("m1/model.safetensors"), &e) == 0) {
            CHECK(f.n == ul_param_tensor_count(&c), "tensor count %lld", (long long)f.n);
            CHECK((st_find(&f, "lm_head.weight") != NULL) == !tied, "lm_head presence (tied=%d)", tied);
            const StTensor *t = st_find(&f, "model.layers.1.input_layernorm.weight");
            CHECK(t && t->ndim == 1 && t->shape[0] == 8, "norm weights are 1-D");
            t = st_find(&f, "model.layers.0.self_attn.k_proj.weight");
            CHECK(t && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == 8, "k_proj shape [Hkv*d, D]");
            st_close(&f);
        } else {
            CHECK(0, "open saved: %s", e.msg);
        }

        /* BF16: values rounded; a second round trip is byte-identical */
        CHECK(ul_save_hf_dir(d3, &c, p, UL_DT_BF16, &e) == 0, "save bf16: %s", e.msg);
        CHECK(ul_load_weights(d3, &c, q, &e) == 0, "load bf16: %s", e.msg);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += q[i] != ref_bf16(p[i]);
        CHECK(bad == 0, "%d bf16 weights differ from rounding", bad);
        CHECK(ul_save_hf_dir(d2, &c, q, UL_DT_BF16, &e) == 0, "replace existing dir: %s", e.msg);
        CHECK(same_file(TP("m3/model.safetensors"), TP("m2/model.safetensors")), "bf16 save->load->save differs");
        size_t len;
        char *cfg = slurp(TP("m2/config.json"), &len);
        CHECK(cfg && has(cfg, "\"bfloat16\""), "torch_dtype bfloat16");
        free(cfg);
        CHECK(no_siblings_left(), "temporary or old directories left behind");

        /* shape mismatch names tensor, file and shapes */
        ModelConfig wrong = c;
        wrong.intermediate_size = 16;
        float *big = ul_calloc((size_t)ul_param_numel(&wrong), sizeof(float));
        e.msg[0] = 0;
        CHECK(ul_load_weights(d1, &wrong, big, &e) != 0 && has(e.msg, "mlp.gate_proj.weight") &&
                  has(e.msg, "m1/model.safetensors") && has(e.msg, "[16, 8]") && has(e.msg, "[12, 8]"),
              "shape mismatch message: '%s'", e.msg);
        free(big);
        /* a tied checkpoint loaded as untied: lm_head missing */
        if (tied) {
            ModelConfig untied = c;
            untied.tie_word_embeddings = 0;
            big = ul_calloc((size_t)ul_param_numel(&untied), sizeof(float));
            e.msg[0] = 0;
            CHECK(ul_load_weights(d1, &untied, big, &e) != 0 && has(e.msg, "lm_head.weight"), "missing: '%s'", e.msg);
            free(big);
        }
        free(p);
        free(q);
        ul_remove_tree(d1), ul_remove_tree(d2), ul_remove_tree(d3);
    }
    e.msg[0] = 0;
    ModelConfig c = tiny_config(0, 0);
    float x;
    CHECK(ul_load_weights(TP("nothing"), &c, &x, &e) != 0 && has(e.msg, "nothing"), "empty dir: '%s'", e.msg);
    CHECK(ul_save_hf_dir(TP("x"), &c, &x, UL_DT_I32, &e) != 0, "I32 model accepted");
    write_text(TP("afile"), "x");
    float *p = random_params(&c, 3);
    CHECK(ul_save_hf_dir(TP("afile"), &c, p, UL_DT_F32, &e) != 0 && has(e.msg, "afile"), "over a file: '%s'", e.msg);
    CHECK(no_siblings_left(), "failed save left a directory behind");
    free(p);
}

/* A sharded checkpoint: tensors split over two files + model.safetensors.index.json. */
static void test_sharded(void) {
    ModelConfig c = tiny_config(0, 1);
    int64_t n = ul_param_numel(&c), nt = ul_param_tensor_count(&c);
    float *p = random_params(&c, 11), *q = ul_calloc((size_t)n, sizeof(float)); /* [n] */
    ParamInfo *info = ul_calloc((size_t)nt, sizeof *info);                        /* [nt] */
    StWriteItem *items = ul_calloc((size_t)nt, sizeof *items);                    /* [nt] */
    mkdir(TP("sh"), 0755);
    char index[8192];
    int o = snprintf(index, sizeof index, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int64_t i = 0; i < nt; i++) {
        ul_param_info(&c, i, &info[i]);
        items[i] = (StWriteItem){.name = info[i].name, .dtype = UL_DT_F32, .ndim = info[i].cols == 1 ? 1 : 2,
                                 .shape = {info[i].rows, info[i].cols}, .data = p + info[i].offset};
        o += snprintf(index + o, sizeof index - (size_t)o, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                      i ? ", " : "", info[i].name, i < nt / 2 ? 1 : 2);
    }
    snprintf(index + o, sizeof index - (size_t)o, "}}");
    UlError e = {{0}};
    CHECK(st_write(TP("sh/model-00001-of-00002.safetensors"), items, nt / 2, &e) == 0, "%s", e.msg);
    CHECK(st_write(TP("sh/model-00002-of-00002.safetensors"), items + nt / 2, nt - nt / 2, &e) == 0, "%s", e.msg);
    write_text(TP("sh/model.safetensors.index.json"), index);
    CHECK(ul_load_weights(TP("sh"), &c, q, &e) == 0, "sharded load: %s", e.msg);
    CHECK(memcmp(p, q, (size_t)n * sizeof(float)) == 0, "sharded weights differ");
    /* a weight_map entry pointing outside the directory */
    char *at = strstr(index, "model-00002-of-00002");
    memcpy(at, "../x", 4);
    write_text(TP("sh/model.safetensors.index.json"), index);
    e.msg[0] = 0;
    CHECK(ul_load_weights(TP("sh"), &c, q, &e) != 0 && has(e.msg, "index.json"), "path escape: '%s'", e.msg);
    free(p), free(q), free(info), free(items);
}

/* ---------------------------------------------------------------- token shards */

static void test_tokens(void) {
    uint32_t tok[100];      /* [100] */
    uint64_t off[5] = {0, 10, 10, 55, 100}; /* [n_docs + 1]: documents 10, 0 (empty), 45, 45 */
    UlRng r;
    ul_rng_seed(&r, 5);
    for (int i = 0; i < 100; i++) tok[i] = (uint32_t)(ul_rng_u64(&r) % 1000);
    tok[7] = 999;
    UlError e = {{0}};
    Path tpth = tp("t.tok");
    const char *path = tpth.s;
    CHECK(tok_shard_write(path, tok, 100, off, 4, 1000, NULL, &e) == 0, "write: %s", e.msg);
    TokShard s;
    int rc = tok_shard_open(&s, path, &e);
    CHECK(rc == 0, "open: %s", e.msg);
    if (rc == 0) {
        CHECK(s.size == 32 + 8 * 5 + 4 * 100, "size %zu", s.size);
        CHECK(s.n_docs == 4 && s.n_tokens == 100 && s.vocab_size == 1000, "header");
        CHECK(memcmp(s.doc_offsets, off, sizeof off) == 0 && memcmp(s.tokens, tok, sizeof tok) == 0, "contents");
        CHECK(memcmp(s.map, "ULYSTOK1\1\0\0\0\xe8\x03\0\0\4\0\0\0\0\0\0\0d\0\0\0\0\0\0\0", 32) == 0,
              "header bytes");
        tok_shard_close(&s);
    }
    /* version 2: a loss mask after the tokens; a mask value other than 0/1 is refused */
    uint8_t mask[100]; /* [100] */
    for (int i = 0; i < 100; i++) mask[i] = i % 7 != 0;
    CHECK(tok_shard_write(TP("m.tok"), tok, 100, off, 4, 1000, mask, &e) == 0 && tok_shard_open(&s, TP("m.tok"), &e) == 0,
          "masked shard: %s", e.msg);
    if (s.map) {
        CHECK(s.size == 32 + 8 * 5 + 4 * 100 + 100 && ((const uint8_t *)s.map)[8] == 2 && s.mask &&
                  memcmp(s.mask, mask, 100) == 0 && memcmp(s.tokens, tok, sizeof tok) == 0,
              "version 2 layout");
        tok_shard_close(&s);
    }
    mask[3] = 2;
    CHECK(tok_shard_write(TP("bad.tok"), tok, 100, off, 4, 1000, mask, &e) != 0 && has(e.msg, "loss mask of token 3"),
          "mask 2: '%s'", e.msg);
    /* empty shard */
    uint64_t zero = 0;
    CHECK(tok_shard_write(TP("e.tok"), NULL, 0, &zero, 0, 0, NULL, &e) == 0 && tok_shard_open(&s, TP("e.tok"), &e) == 0,
          "empty shard: %s", e.msg);
    if (s.map) tok_shard_close(&s);
    /* writer validation */
    e.msg[0] = 0;
    CHECK(tok_shard_write(TP("bad.tok"), tok, 100, off, 4, 999, NULL, &e) != 0 && has(e.msg, "bad.tok") &&
              has(e.msg, "999"),
          "token >= vocab: '%s'", e.msg);
    uint64_t dec[5] = {0, 10, 5, 55, 100};
    CHECK(tok_shard_write(TP("bad.tok"), tok, 100, dec, 4, 0, NULL, &e) != 0 && has(e.msg, "decrease"), "'%s'", e.msg);
    uint64_t short_end[5] = {0, 10, 10, 55, 99};
    CHECK(tok_shard_write(TP("bad.tok"), tok, 100, short_end, 4, 0, NULL, &e) != 0, "offsets not ending at n_tokens");
    CHECK(access(TP("bad.tok"), F_OK) != 0, "failed write left a file");
    /* reader: a vocab smaller than a token, patched into a valid file */
    size_t n;
    char *bytes = slurp(path, &n);
    bytes[12] = (char)0xe7; /* vocab_size 999 */
    FILE *f = fopen(TP("v.tok"), "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    free(bytes);
    e.msg[0] = 0;
    CHECK(tok_shard_open(&s, TP("v.tok"), &e) != 0 && has(e.msg, "v.tok") && has(e.msg, "vocabulary"), "'%s'",
          e.msg);
}

/* Reads shard `path` and checks it holds exactly the documents docs[n]. */
static void check_docs(const char *path, const char *const *docs, int n) {
    TokShard s;
    UlError e;
    int rc = tok_shard_open(&s, path, &e);
    CHECK(rc == 0, "open %s: %s", path, e.msg);
    if (rc) return;
    CHECK(s.n_docs == n && s.vocab_size == 256, "%s: %lld documents, want %d", path, (long long)s.n_docs, n);
    for (int i = 0; i < n && i < s.n_docs; i++) {
        int64_t len = (int64_t)(s.doc_offsets[i + 1] - s.doc_offsets[i]);
        int ok = len == (int64_t)strlen(docs[i]);
        for (int64_t k = 0; ok && k < len; k++) ok = s.tokens[s.doc_offsets[i] + k] == (uint8_t)docs[i][k];
        CHECK(ok, "%s: document %d differs from \"%s\"", path, i, docs[i]);
    }
    tok_shard_close(&s);
}

static void test_tokenizer(void) {
    write_text(TP("a.txt"), "hello\n");
    write_text(TP("b.txt"), "\n\na\nb\n\n\n  \nc d\r\n\r\n\xc3\xa9 e\n");
    write_text(TP("c.txt"), "");
    Path fa = tp("a.txt"), fb = tp("b.txt"), fc = tp("c.txt"), fm = tp("nope.txt");
    const char *files[3] = {fa.s, fb.s, fc.s};
    UlError e = {{0}};
    CHECK(ul_tokenize_bytes(files, 3, 0, TP("per_file.tok"), &e) == 0, "per file: %s", e.msg);
    const char *per_file[3] = {"hello\n", "\n\na\nb\n\n\n  \nc d\r\n\r\n\xc3\xa9 e\n", ""};
    check_docs(TP("per_file.tok"), per_file, 3);
    CHECK(ul_tokenize_bytes(files, 3, 1, TP("blank.tok"), &e) == 0, "blank lines: %s", e.msg);
    const char *blank[4] = {"hello", "a\nb", "c d", "\xc3\xa9 e"};
    check_docs(TP("blank.tok"), blank, 4);
    const char *missing[1] = {fm.s};
    e.msg[0] = 0;
    CHECK(ul_tokenize_bytes(missing, 1, 0, TP("x.tok"), &e) != 0 && has(e.msg, "nope.txt"), "'%s'", e.msg);
    CHECK(access(TP("x.tok"), F_OK) != 0, "failed tokenize wrote output");
}

/* ---------------------------------------------------------------- error messages */

static void test_errors(void) {
    UlError e = {{0}};
    StFile f;
    write_bytes(TP("model.safetensors"), "\xd2\x04\0\0\0\0\0\0{}", 10); /* header says 1234 */
    CHECK(st_open(&f, TP("model.safetensors"), &e) != 0 && has(e.msg, "model.safetensors: truncated") &&
              has(e.msg, "1234") && has(e.msg, "10"),
          "'%s'", e.msg);
    CHECK(st_open(&f, TP("none.safetensors"), &e) != 0 && has(e.msg, "none.safetensors"), "'%s'", e.msg);
    write_st(TP("s2.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "1234", 4);
    CHECK(st_open(&f, TP("s2.safetensors"), &e) != 0 && has(e.msg, "s2.safetensors") && has(e.msg, "\"x\""),
          "offsets beyond EOF: '%s'", e.msg);
    write_st(TP("s3.safetensors"), "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", "12345678", 8);
    CHECK(st_open(&f, TP("s3.safetensors"), &e) != 0 && has(e.msg, "F64"), "unknown dtype: '%s'", e.msg);
    TokShard s;
    const char badtok[40] = "ULYSTOK2\1"; /* a zero shard's bytes but the magic */
    write_bytes(TP("bad.tok"), badtok, sizeof badtok);
    CHECK(tok_shard_open(&s, TP("bad.tok"), &e) != 0 && has(e.msg, "bad.tok") && has(e.msg, "magic"), "'%s'",
          e.msg);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ul_test_formats_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_safetensors();
    test_st_golden();
    test_st_stream();
    test_f16();
    test_config();
    test_families();
    test_rope();
    test_model_dir();
    test_sharded();
    test_tokens();
    test_tokenizer();
    test_errors();
    ul_remove_tree(g_tmp);
    return tu_finish("test_formats");
}
