#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"

/* Raw F32/I32/I64 data is copied as host bytes. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

#define ST_MAX_HEADER (100u << 20) /* bytes; real headers are a few MB at most */

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {[UL_DT_F32] = {"F32", 4}, [UL_DT_BF16] = {"BF16", 2}, [UL_DT_I32] = {"I32", 4},
              [UL_DT_I64] = {"I64", 8}, [UL_DT_F16] = {"F16", 2}};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

static int dtype_ok(UlDtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES; }
size_t ul_dtype_size(UlDtype dt) { return dtype_ok(dt) ? DTYPES[dt].size : 0; }
const char *ul_dtype_name(UlDtype dt) { return dtype_ok(dt) ? DTYPES[dt].name : "?"; }

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_u53(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Fills t from one header entry; data_size = bytes after the header. */
static int parse_entry(const char *path, const cJSON *j, uint64_t data_size, StTensor *t, UlError *e) {
    const char *name = j->string;
    if (!cJSON_IsObject(j)) return ul_err(e, "%s: tensor \"%s\": header entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt)) return ul_err(e, "%s: tensor \"%s\": missing or non-string \"dtype\"", path, name);
    if (!cJSON_IsArray(shape)) return ul_err(e, "%s: tensor \"%s\": missing or non-array \"shape\"", path, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return ul_err(e, "%s: tensor \"%s\": \"data_offsets\" must be [begin, end]", path, name);
    int found = 0;
    for (int d = 0; d < N_DTYPES; d++)
        if (strcmp(dt->valuestring, DTYPES[d].name) == 0) {
            t->dtype = (UlDtype)d;
            found = 1;
        }
    if (!found) return ul_err(e, "%s: tensor \"%s\": unsupported dtype \"%s\"", path, name, dt->valuestring);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > UL_ST_MAX_DIMS)
        return ul_err(e, "%s: tensor \"%s\": %d dimensions (at most %d supported)", path, name, ndim, UL_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int k = 0;
    for (const cJSON *s = shape->child; s; s = s->next, k++) {
        uint64_t v;
        if (!json_u53(s, &v))
            return ul_err(e, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", path, name, k);
        if (__builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t)INT64_MAX)
            return ul_err(e, "%s: tensor \"%s\": shape product overflows", path, name);
        t->shape[k] = (int64_t)v;
    }
    t->numel = (int64_t)numel;
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)DTYPES[t->dtype].size, &nbytes))
        return ul_err(e, "%s: tensor \"%s\": byte size overflows", path, name);
    if (!json_u53(offs->child, &t->begin) || !json_u53(offs->child->next, &t->end))
        return ul_err(e, "%s: tensor \"%s\": data_offsets are not non-negative integers", path, name);
    if (t->begin > t->end || t->end - t->begin != nbytes)
        return ul_err(e, "%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, shape and dtype need %llu",
                      path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                      (unsigned long long)(t->end >= t->begin ? t->end - t->begin : 0), (unsigned long long)nbytes);
    if (t->end > data_size)
        return ul_err(e, "%s: tensor \"%s\": data ends at byte %llu of a %llu-byte data section (truncated?)", path,
                      name, (unsigned long long)t->end, (unsigned long long)data_size);
    return 0;
}

/* Parses the JSON header into f->tensors (sorted by name) and validates it. */
static int parse_header(StFile *f, const char *json, size_t len, UlError *e) {
    const char *path = f->path, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return ul_err(e, "%s: header is not valid JSON", path);
    int rc = 0;
    for (const char *p = end; p < json + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = ul_err(e, "%s: trailing garbage after the JSON header", path);
            break;
        }
    if (rc == 0 && !cJSON_IsObject(root)) rc = ul_err(e, "%s: header is not a JSON object", path);
    int64_t n = 0;
    for (const cJSON *j = rc ? NULL : root->child; j; j = j->next) n += strcmp(j->string, "__metadata__") != 0;
    f->tensors = n ? ul_calloc((size_t)n, sizeof(StTensor)) : NULL; /* [n] */
    uint64_t data_size = f->size - f->data_off;
    for (const cJSON *j = rc ? NULL : root->child; j && rc == 0; j = j->next) {
        if (strcmp(j->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(j)) rc = ul_err(e, "%s: \"__metadata__\" is not an object", path);
            continue;
        }
        StTensor *t = &f->tensors[f->n++];
        t->name = ul_strdup(j->string);
        rc = parse_entry(path, j, data_size, t, e);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    if (f->n > 1) qsort(f->tensors, (size_t)f->n, sizeof(StTensor), cmp_name);
    for (int64_t i = 1; i < f->n; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return ul_err(e, "%s: tensor \"%s\" appears twice in the header", path, f->tensors[i].name);
    /* No two tensors may share bytes. */
    const StTensor **by_begin = n ? ul_malloc((size_t)n * sizeof *by_begin) : NULL; /* [n] */
    for (int64_t i = 0; i < n; i++) by_begin[i] = &f->tensors[i];
    if (n) qsort(by_begin, (size_t)n, sizeof *by_begin, cmp_begin);
    for (int64_t i = 1; i < n && rc == 0; i++)
        if (by_begin[i]->begin < by_begin[i - 1]->end)
            rc = ul_err(e, "%s: tensors \"%s\" and \"%s\" overlap in the data section", path, by_begin[i - 1]->name,
                        by_begin[i]->name);
    free(by_begin);
    return rc;
}

int st_open(StFile *f, const char *path, UlError *e) {
    memset(f, 0, sizeof *f);
    void *map;
    if (ul_map_file(path, &map, &f->size, e)) return -1;
    f->map = map;
    f->path = ul_strdup(path);
    int rc = 0;
    uint64_t hlen = f->size >= 8 ? ul_load_le64(f->map) : 0;
    if (f->size < 8)
        rc = ul_err(e, "%s: truncated: file has %zu bytes, a safetensors file needs at least 8", path, f->size);
    else if (hlen > f->size - 8)
        rc = ul_err(e, "%s: truncated: header says %llu bytes, file has %zu", path, (unsigned long long)hlen,
                    f->size);
    else if (hlen > ST_MAX_HEADER)
        rc = ul_err(e, "%s: header length %llu bytes is implausible (limit %u)", path, (unsigned long long)hlen,
                    ST_MAX_HEADER);
    else if (hlen < 2)
        rc = ul_err(e, "%s: header length %llu is too small for a JSON object", path, (unsigned long long)hlen);
    if (rc == 0) {
        f->data_off = 8 + hlen;
        char *json = ul_malloc((size_t)hlen + 1); /* [hlen + 1]: a NUL-terminated copy for the parser */
        memcpy(json, f->map + 8, (size_t)hlen);
        json[hlen] = 0;
        rc = parse_header(f, json, (size_t)hlen, e);
        free(json);
    }
    if (rc) st_close(f);
    return rc;
}

void st_close(StFile *f) {
    for (int64_t i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    ul_unmap_file(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    int64_t lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const void *st_data(const StFile *f, const StTensor *t) { return f->map + f->data_off + t->begin; }

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (ex == 0x1f) { /* inf / NaN */
        uint32_t u = sign | 0x7f800000u | (man << 13);
        memcpy(&v, &u, 4);
        return v;
    }
    v = ex == 0 ? ldexpf((float)man, -24) : ldexpf((float)(man | 0x400), (int)ex - 25);
    return sign ? -v : v;
}

int st_read_f32_range(const StFile *f, const StTensor *t, int64_t i0, int64_t n, float *out, UlError *e) {
    UL_ASSERT(i0 >= 0 && n >= 0 && i0 + n <= t->numel, "st_read_f32_range: [%lld, +%lld) outside %lld elements",
              (long long)i0, (long long)n, (long long)t->numel);
    const uint8_t *src = st_data(f, t); /* [numel * dtype size], possibly unaligned */
    switch (t->dtype) {
    case UL_DT_F32:
        if (n) memcpy(out, src + 4 * i0, (size_t)n * 4);
        return 0;
    case UL_DT_BF16:
        src += 2 * i0;
#pragma omp parallel for schedule(static) if (n > (1 << 20))
        for (int64_t i = 0; i < n; i++) out[i] = ul_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return 0;
    case UL_DT_F16:
        src += 2 * i0;
#pragma omp parallel for schedule(static) if (n > (1 << 20))
        for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return 0;
    default:
        return ul_err(e, "%s: tensor \"%s\" has dtype %s, expected a float type (F32, BF16, F16)", f->path, t->name,
                      ul_dtype_name(t->dtype));
    }
}

int st_read_f32(const StFile *f, const StTensor *t, float *out, UlError *e) {
    return st_read_f32_range(f, t, 0, t->numel, out, e);
}

/* ---------------------------------------------------------------- writer */

static int cmp_item_name(const void *a, const void *b) {
    return strcmp((*(const StWriteItem *const *)a)->name, (*(const StWriteItem *const *)b)->name);
}

/* Builds the padded header text (without the length prefix); *len gets its length
 * (a multiple of 8). offsets[n] are the items' data offsets in item order. */
static char *build_header(const StWriteItem *items, int64_t n, const uint64_t *offsets, const uint64_t *nbytes,
                          size_t *len) {
    const StWriteItem **sorted = n ? ul_malloc((size_t)n * sizeof *sorted) : NULL; /* [n] */
    for (int64_t i = 0; i < n; i++) sorted[i] = &items[i];
    if (n) qsort(sorted, (size_t)n, sizeof *sorted, cmp_item_name);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    for (int64_t s = 0; s < n; s++) {
        const StWriteItem *it = sorted[s];
        int64_t i = it - items;
        cJSON *o = cJSON_AddObjectToObject(root, it->name);
        cJSON_AddStringToObject(o, "dtype", ul_dtype_name(it->dtype));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < it->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)it->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offsets[i]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offsets[i] + nbytes[i])));
    }
    free(sorted);
    char *txt = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    UL_ASSERT(txt, "cJSON_PrintUnformatted failed");
    size_t l = strlen(txt), padded = (l + 7) / 8 * 8;
    char *out = ul_malloc(padded + 1); /* [padded + 1] */
    memcpy(out, txt, l);
    memset(out + l, ' ', padded - l);
    out[padded] = 0;
    cJSON_free(txt);
    *len = padded;
    return out;
}

/* Writes m elements of one tensor's data from src (float32 for F32 and BF16, converted
 * to BF16 by round-to-nearest-even; raw for I32 / I64). */
static int write_data(UlAtomicFile *af, UlDtype dt, const void *src, int64_t m, UlError *e) {
    if (dt != UL_DT_BF16) return ul_afile_write(af, src, (size_t)m * ul_dtype_size(dt), e);
    enum { CHUNK = 16384 };
    uint16_t buf[CHUNK]; /* [CHUNK] bf16 */
    const float *f = src; /* [m] */
    for (int64_t i = 0; i < m; i += CHUNK) {
        int64_t c = m - i < CHUNK ? m - i : CHUNK;
        for (int64_t k = 0; k < c; k++) buf[k] = ul_f32_to_bf16(f[i + k]);
        if (ul_afile_write(af, buf, (size_t)c * 2, e)) return -1;
    }
    return 0;
}

/* Bytes per element of an item's source data: float32 for F32 and BF16. */
static size_t src_size(UlDtype dt) { return dt == UL_DT_BF16 ? 4 : ul_dtype_size(dt); }

struct StStream {
    UlAtomicFile af;
    int64_t n;        /* tensors */
    UlDtype *dtype;   /* [n] */
    int64_t *numel;   /* [n] */
    char **name;      /* [n] */
    int64_t cur;      /* the tensor being written */
    int64_t done;     /* elements of tensor cur written so far */
};

static void stream_free(StStream *s) {
    for (int64_t i = 0; i < s->n; i++) free(s->name[i]);
    free(s->name);
    free(s->dtype);
    free(s->numel);
    free(s);
}

/* Checks the items (names, dtypes, shapes; data where need_data) and gives each one's
 * element count, byte count and data offset (numel, nbytes, offsets: [n] each). */
static int check_items(const char *path, const StWriteItem *items, int64_t n, int need_data, int64_t *numel,
                       uint64_t *nbytes, uint64_t *offsets, UlError *e) {
    uint64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const StWriteItem *it = &items[i];
        if (!it->name || !it->name[0] || strcmp(it->name, "__metadata__") == 0)
            return ul_err(e, "%s: item %lld has an invalid name", path, (long long)i);
        if (it->dtype != UL_DT_F32 && it->dtype != UL_DT_BF16 && it->dtype != UL_DT_I32 && it->dtype != UL_DT_I64)
            return ul_err(e, "%s: tensor \"%s\": cannot write dtype %s", path, it->name, ul_dtype_name(it->dtype));
        if (it->ndim < 0 || it->ndim > UL_ST_MAX_DIMS)
            return ul_err(e, "%s: tensor \"%s\": bad ndim %d", path, it->name, it->ndim);
        uint64_t m = 1;
        for (int d = 0; d < it->ndim; d++)
            if (it->shape[d] < 0 || __builtin_mul_overflow(m, (uint64_t)it->shape[d], &m) || m > (1ull << 53))
                return ul_err(e, "%s: tensor \"%s\": bad shape", path, it->name);
        if (need_data && m > 0 && !it->data) return ul_err(e, "%s: tensor \"%s\": no data", path, it->name);
        numel[i] = (int64_t)m;
        nbytes[i] = m * ul_dtype_size(it->dtype);
        offsets[i] = off;
        off += nbytes[i];
        if (off > (1ull << 53)) return ul_err(e, "%s: total data too large", path);
    }
    /* Names must be unique (the header is a JSON object). */
    int rc = 0;
    const StWriteItem **sorted = n ? ul_malloc((size_t)n * sizeof *sorted) : NULL; /* [n] */
    for (int64_t i = 0; i < n; i++) sorted[i] = &items[i];
    if (n) qsort(sorted, (size_t)n, sizeof *sorted, cmp_item_name);
    for (int64_t i = 1; i < n && rc == 0; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            rc = ul_err(e, "%s: tensor \"%s\" given twice", path, sorted[i]->name);
    free(sorted);
    return rc;
}

static StStream *stream_open(const char *path, const StWriteItem *items, int64_t n, int need_data, UlError *e) {
    if (n < 0) {
        ul_err(e, "%s: negative tensor count", path);
        return NULL;
    }
    uint64_t *offsets = n ? ul_malloc((size_t)n * sizeof(uint64_t)) : NULL; /* [n] */
    uint64_t *nbytes = n ? ul_malloc((size_t)n * sizeof(uint64_t)) : NULL;  /* [n] */
    StStream *s = ul_calloc(1, sizeof *s);
    s->numel = n ? ul_malloc((size_t)n * sizeof(int64_t)) : NULL; /* [n] */
    int rc = check_items(path, items, n, need_data, s->numel, nbytes, offsets, e);
    if (rc == 0) {
        s->n = n;
        s->dtype = n ? ul_malloc((size_t)n * sizeof(UlDtype)) : NULL; /* [n] */
        s->name = n ? ul_malloc((size_t)n * sizeof(char *)) : NULL;   /* [n] */
        for (int64_t i = 0; i < n; i++) {
            s->dtype[i] = items[i].dtype;
            s->name[i] = ul_strdup(items[i].name);
        }
        size_t hlen;
        char *hdr = build_header(items, n, offsets, nbytes, &hlen);
        uint8_t pre[8];
        ul_store_le64(pre, hlen);
        rc = ul_afile_open(&s->af, path, e);
        if (rc == 0) {
            rc = ul_afile_write(&s->af, pre, 8, e);
            if (rc == 0) rc = ul_afile_write(&s->af, hdr, hlen, e);
            if (rc) ul_afile_abort(&s->af);
        }
        free(hdr);
    }
    free(offsets);
    free(nbytes);
    if (rc) {
        stream_free(s);
        return NULL;
    }
    return s;
}

StStream *st_stream_open(const char *path, const StWriteItem *items, int64_t n, UlError *e) {
    return stream_open(path, items, n, 0, e);
}

/* Moves past the tensors that are complete (and the empty ones). */
static void stream_skip_full(StStream *s) {
    while (s->cur < s->n && s->done == s->numel[s->cur]) {
        s->cur++;
        s->done = 0;
    }
}

int st_stream_append(StStream *s, const void *data, int64_t numel, UlError *e) {
    const uint8_t *src = data; /* [numel] elements of the tensors' source types */
    while (numel > 0) {
        stream_skip_full(s);
        if (s->cur == s->n)
            return ul_err(e, "%s: %lld elements more than the header's tensors hold", s->af.path, (long long)numel);
        int64_t m = s->numel[s->cur] - s->done;
        if (m > numel) m = numel;
        if (write_data(&s->af, s->dtype[s->cur], src, m, e)) return -1;
        src += (size_t)m * src_size(s->dtype[s->cur]);
        s->done += m;
        numel -= m;
    }
    return 0;
}

int st_stream_close(StStream *s, UlError *e) {
    stream_skip_full(s);
    int rc = 0;
    if (s->cur < s->n) {
        rc = ul_err(e, "%s: tensor \"%s\" has %lld of its %lld elements (the stream ended early)", s->af.path,
                    s->name[s->cur], (long long)s->done, (long long)s->numel[s->cur]);
        ul_afile_abort(&s->af);
    } else {
        rc = ul_afile_commit(&s->af, e);
    }
    stream_free(s);
    return rc;
}

void st_stream_abort(StStream *s) {
    if (!s) return;
    ul_afile_abort(&s->af);
    stream_free(s);
}

int st_write(const char *path, const StWriteItem *items, int64_t n, UlError *e) {
    StStream *s = stream_open(path, items, n, 1, e);
    if (!s) return -1;
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) rc = st_stream_append(s, items[i].data, s->numel[i], e);
    if (rc) {
        st_stream_abort(s);
        return rc;
    }
    return st_stream_close(s, e);
}
