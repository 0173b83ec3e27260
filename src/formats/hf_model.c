#include "formats/hf_model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/params.h"
#include "formats/fileio.h"

#define MAX_JSON_BYTES (64u << 20) /* config.json / index.json size limit */

/* ---------------------------------------------------------------- config.json */

/* Field getters: an absent or null field keeps *out (the default) unless required.
 * `obj_name` prefixes nested fields in messages ("rope_scaling.factor"). */
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(j) ? NULL : j;
}

/* A JSON value as a finite number / an integer; `key` (inside obj_name) names it in messages. */
static int num_value(const char *what, const cJSON *j, const char *obj_name, const char *key, double *out,
                     UlError *e) {
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return ul_err(e, "%s: field \"%s%s%s\" must be a number", what, obj_name, obj_name[0] ? "." : "", key);
    *out = j->valuedouble;
    return 0;
}

static int int_value(const char *what, const cJSON *j, const char *obj_name, const char *key, int64_t *out,
                     UlError *e) {
    double v = 0;
    if (num_value(what, j, obj_name, key, &v, e)) return -1;
    if (v != floor(v) || fabs(v) > 0x1p62)
        return ul_err(e, "%s: field \"%s%s%s\" must be an integer", what, obj_name, obj_name[0] ? "." : "", key);
    *out = (int64_t)v;
    return 0;
}

static int get_num(const char *what, const cJSON *obj, const char *obj_name, const char *key, int required,
                   double *out, UlError *e) {
    const cJSON *j = field(obj, key);
    if (!j)
        return required ? ul_err(e, "%s: missing required field \"%s%s%s\"", what, obj_name, obj_name[0] ? "." : "", key)
                        : 0;
    return num_value(what, j, obj_name, key, out, e);
}

static int get_int(const char *what, const cJSON *obj, const char *obj_name, const char *key, int required,
                   int64_t *out, UlError *e) {
    const cJSON *j = field(obj, key);
    if (!j)
        return required ? ul_err(e, "%s: missing required field \"%s%s%s\"", what, obj_name, obj_name[0] ? "." : "", key)
                        : 0;
    return int_value(what, j, obj_name, key, out, e);
}

static int get_bool(const char *what, const cJSON *obj, const char *key, int *out, UlError *e) {
    const cJSON *j = field(obj, key);
    if (!j) return 0;
    if (!cJSON_IsBool(j)) return ul_err(e, "%s: field \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

/* Returns the string value, NULL when absent/null; *bad set on a non-string. */
static const char *get_str(const char *what, const cJSON *obj, const char *obj_name, const char *key, int *bad,
                           UlError *e) {
    const cJSON *j = field(obj, key);
    if (j && !cJSON_IsString(j)) {
        *bad = 1;
        ul_err(e, "%s: field \"%s%s%s\" must be a string", what, obj_name, obj_name[0] ? "." : "", key);
        return NULL;
    }
    return j ? j->valuestring : NULL;
}

/* bos/eos: an integer, null, or a list of integers (the first is kept). */
static int get_token_id(const char *what, const cJSON *obj, const char *key, int64_t *out, UlError *e) {
    const cJSON *j = field(obj, key);
    if (cJSON_IsArray(j)) j = j->child;
    return j ? int_value(what, j, "", key, out, e) : 0;
}

/* RoPE: transformers 4.x ("rope_theta" + "rope_scaling") or 5.x ("rope_parameters"). */
static int parse_rope(const char *what, const cJSON *root, ModelConfig *c, UlError *e) {
    const char *dname = "rope_scaling";
    const cJSON *rope = field(root, "rope_scaling");
    if (!rope) {
        dname = "rope_parameters";
        rope = field(root, "rope_parameters");
    }
    if (rope && !cJSON_IsObject(rope)) return ul_err(e, "%s: field \"%s\" must be an object or null", what, dname);
    if (get_num(what, root, "", "rope_theta", 0, &c->rope_theta, e)) return -1;
    double partial = 1.0;
    if (get_num(what, root, "", "partial_rotary_factor", 0, &partial, e)) return -1;
    if (!rope) return partial == 1.0 ? 0 : ul_err(e, "%s: partial_rotary_factor != 1 is not supported", what);
    if (get_num(what, rope, dname, "rope_theta", 0, &c->rope_theta, e)) return -1;
    if (get_num(what, rope, dname, "partial_rotary_factor", 0, &partial, e)) return -1;
    if (partial != 1.0) return ul_err(e, "%s: partial_rotary_factor != 1 is not supported", what);
    int bad = 0;
    const char *type = get_str(what, rope, dname, "rope_type", &bad, e);
    if (!type && !bad) type = get_str(what, rope, dname, "type", &bad, e);
    if (bad) return -1;
    if (!type || strcmp(type, "default") == 0) {
        c->rope_type = UL_ROPE_DEFAULT;
        return 0;
    }
    if (strcmp(type, "llama3") != 0)
        return ul_err(e, "%s: field \"%s.rope_type\": unsupported rope type \"%s\" (supported: default, llama3)", what,
                      dname, type);
    c->rope_type = UL_ROPE_LLAMA3;
    c->rope_original_max_position_embeddings = c->max_position_embeddings; /* transformers 5.x default */
    if (get_num(what, rope, dname, "factor", 1, &c->rope_factor, e) ||
        get_num(what, rope, dname, "low_freq_factor", 1, &c->rope_low_freq_factor, e) ||
        get_num(what, rope, dname, "high_freq_factor", 1, &c->rope_high_freq_factor, e) ||
        get_int(what, rope, dname, "original_max_position_embeddings", 0, &c->rope_original_max_position_embeddings,
                e))
        return -1;
    return 0;
}

/* The family: "architectures" and "model_type" name it (either may be absent, and then
 * the other decides; both absent: Llama); they must agree. */
static int parse_family(const char *what, const cJSON *root, ModelConfig *c, UlError *e) {
    int bad = 0, by_type = -1, by_arch = -1;
    char names[256] = "";
    for (int f = 0; f < UL_FAM_COUNT; f++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", f ? ", " : "", ul_families[f].architecture);
    const char *model_type = get_str(what, root, "", "model_type", &bad, e);
    if (bad) return -1;
    for (int f = 0; model_type && f < UL_FAM_COUNT; f++)
        if (!strcmp(model_type, ul_families[f].model_type)) by_type = f;
    if (model_type && by_type < 0)
        return ul_err(e, "%s: field \"model_type\" is \"%s\": not a supported family (%s)", what, model_type, names);
    const cJSON *arch = field(root, "architectures");
    if (arch) {
        if (!cJSON_IsArray(arch)) return ul_err(e, "%s: field \"architectures\" must be a list", what);
        for (const cJSON *a = arch->child; a && by_arch < 0; a = a->next)
            for (int f = 0; f < UL_FAM_COUNT && cJSON_IsString(a); f++)
                if (!strcmp(a->valuestring, ul_families[f].architecture)) by_arch = f;
        if (by_arch < 0) return ul_err(e, "%s: field \"architectures\" names no supported class (%s)", what, names);
    }
    if (by_arch >= 0 && by_type >= 0 && by_arch != by_type)
        return ul_err(e, "%s: field \"architectures\" (%s) does not match field \"model_type\" (\"%s\")", what,
                      ul_families[by_arch].architecture, model_type);
    c->family = by_arch >= 0 ? by_arch : by_type >= 0 ? by_type : UL_FAM_LLAMA;
    return 0;
}

/* The family's own fields (UlFamily.fields): what the families do not support is an error
 * naming the field. Any family: no mixture of experts. */
static int parse_family_fields(const char *what, const cJSON *root, const ModelConfig *c, UlError *e) {
    static const char *const moe[] = {"num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size",
                                      "num_experts_per_tok"};
    for (size_t i = 0; i < sizeof moe / sizeof moe[0]; i++) {
        const cJSON *j = field(root, moe[i]);
        if (j && !(cJSON_IsNumber(j) && j->valuedouble == 0))
            return ul_err(e, "%s: field \"%s\": mixture-of-experts models are not supported", what, moe[i]);
    }
    const UlFamily *fam = ul_family(c);
    int attention_bias = 0, mlp_bias = 0, use_sw = 0;
    if (fam->fields & UL_CF_ATTN_BIAS) {
        if (get_bool(what, root, "attention_bias", &attention_bias, e)) return -1;
        if (attention_bias)
            return ul_err(e, "%s: field \"attention_bias\" = true is not supported for %s", what, fam->architecture);
    }
    if (fam->fields & UL_CF_LLAMA) {
        if (get_bool(what, root, "mlp_bias", &mlp_bias, e)) return -1;
        if (mlp_bias) return ul_err(e, "%s: field \"mlp_bias\" = true is not supported", what);
        int64_t tp = 1;
        if (get_int(what, root, "", "pretraining_tp", 0, &tp, e)) return -1;
        if (tp != 1)
            return ul_err(e, "%s: field \"pretraining_tp\" = %lld is not supported (must be 1)", what, (long long)tp);
    }
    if (fam->fields & UL_CF_USE_SW) {
        if (get_bool(what, root, "use_sliding_window", &use_sw, e)) return -1;
        if (use_sw)
            return ul_err(e, "%s: field \"use_sliding_window\" = true: sliding-window attention is not supported", what);
        const cJSON *lt = field(root, "layer_types");
        if (lt && !cJSON_IsArray(lt)) return ul_err(e, "%s: field \"layer_types\" must be a list", what);
        for (const cJSON *a = lt ? lt->child : NULL; a; a = a->next)
            if (!cJSON_IsString(a) || strcmp(a->valuestring, "full_attention") != 0)
                return ul_err(e, "%s: field \"layer_types\": only \"full_attention\" layers are supported", what);
    }
    if ((fam->fields & UL_CF_SW_NULL) && field(root, "sliding_window"))
        return ul_err(e, "%s: field \"sliding_window\" is set: sliding-window attention is not supported (null only)",
                      what);
    return 0;
}

static int parse_root(const char *what, const cJSON *root, ModelConfig *c, UlError *e) {
    int bad = 0;
    if (parse_family(what, root, c, e) || parse_family_fields(what, root, c, e)) return -1;
    const char *act = get_str(what, root, "", "hidden_act", &bad, e);
    if (bad) return -1;
    if (act && strcmp(act, "silu") != 0)
        return ul_err(e, "%s: field \"hidden_act\" is \"%s\", only \"silu\" is supported", what, act);

    if (get_int(what, root, "", "vocab_size", 1, &c->vocab_size, e) ||
        get_int(what, root, "", "hidden_size", 1, &c->hidden_size, e) ||
        get_int(what, root, "", "intermediate_size", 1, &c->intermediate_size, e) ||
        get_int(what, root, "", "num_hidden_layers", 1, &c->num_layers, e) ||
        get_int(what, root, "", "num_attention_heads", 1, &c->num_heads, e))
        return -1;
    c->num_kv_heads = c->num_heads;
    if (get_int(what, root, "", "num_key_value_heads", 0, &c->num_kv_heads, e) ||
        get_int(what, root, "", "head_dim", 0, &c->head_dim, e) ||
        get_int(what, root, "", "max_position_embeddings", 0, &c->max_position_embeddings, e) ||
        get_num(what, root, "", "rms_norm_eps", 0, &c->rms_norm_eps, e) ||
        get_num(what, root, "", "initializer_range", 0, &c->initializer_range, e) ||
        get_bool(what, root, "tie_word_embeddings", &c->tie_word_embeddings, e) ||
        get_token_id(what, root, "bos_token_id", &c->bos_token_id, e) ||
        get_token_id(what, root, "eos_token_id", &c->eos_token_id, e))
        return -1;
    if (!field(root, "head_dim") && c->num_heads > 0) {
        if (c->hidden_size % c->num_heads != 0)
            return ul_err(e, "%s: no \"head_dim\" and hidden_size (%lld) is not a multiple of num_attention_heads (%lld)",
                          what, (long long)c->hidden_size, (long long)c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    }
    return parse_rope(what, root, c, e);
}

int ul_config_parse(const char *json, const char *what, ModelConfig *c, UlError *e) {
    *c = (ModelConfig){.max_position_embeddings = 2048,
                       .rms_norm_eps = 1e-6,
                       .initializer_range = 0.02,
                       .rope_theta = 10000.0,
                       .rope_type = UL_ROPE_DEFAULT,
                       .bos_token_id = -1,
                       .eos_token_id = -1};
    cJSON *root = cJSON_Parse(json);
    if (!root) return ul_err(e, "%s: not valid JSON", what);
    int rc = cJSON_IsObject(root) ? parse_root(what, root, c, e) : ul_err(e, "%s: not a JSON object", what);
    cJSON_Delete(root);
    return rc ? rc : ul_config_validate(c, what, e);
}

int ul_config_load(const char *path, ModelConfig *c, UlError *e) {
    char *text;
    if (ul_read_file(path, MAX_JSON_BYTES, &text, NULL, e)) return -1;
    int rc = ul_config_parse(text, path, c, e);
    free(text);
    return rc;
}

/* A float as Python's json writes it: shortest round-trip digits, always with a '.'
 * or exponent (transformers 4.x warns when llama3 rope factors are ints). */
static cJSON *json_float(double v) {
    UL_ASSERT(isfinite(v), "non-finite value in config");
    char buf[48];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".e")) strcat(buf, ".0");
    return cJSON_CreateRaw(buf);
}

static cJSON *json_id(int64_t id) { return id >= 0 ? cJSON_CreateNumber((double)id) : cJSON_CreateNull(); }

char *ul_config_to_json(const ModelConfig *c, const char *torch_dtype) {
    cJSON *o = cJSON_CreateObject(); /* keys in sorted order, as transformers writes them */
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    const UlFamily *fam = ul_family(c);
    cJSON_AddItemToArray(arch, cJSON_CreateString(fam->architecture));
    if (fam->fields & UL_CF_ATTN_BIAS) cJSON_AddFalseToObject(o, "attention_bias");
    cJSON_AddItemToObject(o, "attention_dropout", json_float(0.0));
    cJSON_AddItemToObject(o, "bos_token_id", json_id(c->bos_token_id));
    cJSON_AddItemToObject(o, "eos_token_id", json_id(c->eos_token_id));
    cJSON_AddNumberToObject(o, "head_dim", (double)c->head_dim);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden_size);
    cJSON_AddItemToObject(o, "initializer_range", json_float(c->initializer_range));
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)c->max_position_embeddings);
    if (fam->fields & UL_CF_USE_SW) cJSON_AddNumberToObject(o, "max_window_layers", (double)c->num_layers);
    if (fam->fields & UL_CF_LLAMA) cJSON_AddFalseToObject(o, "mlp_bias");
    cJSON_AddStringToObject(o, "model_type", fam->model_type);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)c->num_heads);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)c->num_layers);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)c->num_kv_heads);
    if (fam->fields & UL_CF_LLAMA) cJSON_AddNumberToObject(o, "pretraining_tp", 1);
    cJSON_AddItemToObject(o, "rms_norm_eps", json_float(c->rms_norm_eps));
    if (c->rope_type == UL_ROPE_LLAMA3) {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddItemToObject(rs, "factor", json_float(c->rope_factor));
        cJSON_AddItemToObject(rs, "high_freq_factor", json_float(c->rope_high_freq_factor));
        cJSON_AddItemToObject(rs, "low_freq_factor", json_float(c->rope_low_freq_factor));
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", (double)c->rope_original_max_position_embeddings);
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
    } else {
        cJSON_AddNullToObject(o, "rope_scaling");
    }
    cJSON_AddItemToObject(o, "rope_theta", json_float(c->rope_theta));
    if (fam->fields & (UL_CF_USE_SW | UL_CF_SW_NULL)) cJSON_AddNullToObject(o, "sliding_window");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings != 0);
    cJSON_AddStringToObject(o, "torch_dtype", torch_dtype);
    cJSON_AddTrueToObject(o, "use_cache");
    if (fam->fields & UL_CF_USE_SW) cJSON_AddFalseToObject(o, "use_sliding_window");
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    UL_ASSERT(txt, "cJSON_Print failed");
    /* cJSON indents with tabs; write transformers' layout (2 spaces, ": "). Strings
     * hold no raw tabs (cJSON escapes them). */
    size_t n = strlen(txt), k = 0;
    char *out = ul_malloc(2 * n + 2); /* [2n + 2]: every tab may become 2 chars, + "\n" + NUL */
    for (size_t i = 0; i < n; i++) {
        if (txt[i] != '\t') out[k++] = txt[i];
        else if (i > 0 && txt[i - 1] == ':') out[k++] = ' ';
        else out[k++] = ' ', out[k++] = ' ';
    }
    memcpy(out + k, "\n", 2);
    cJSON_free(txt);
    return out;
}

/* ---------------------------------------------------------------- weights */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = ul_malloc(a + b + 2); /* [a + 1 + b + 1] */
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* The safetensors files of a model directory, opened on first use. */
typedef struct {
    const char *dir;
    char *index_path;   /* NULL for a single model.safetensors */
    cJSON *weight_map;  /* tensor name -> shard file name (sharded only) */
    cJSON *index_root;
    int n;
    char **names;       /* [n] file names */
    StFile *files;      /* [n] */
} ShardSet;

static int shardset_open(ShardSet *s, const char *dir, UlError *e) {
    memset(s, 0, sizeof *s);
    s->dir = dir;
    char *single = path_join(dir, "model.safetensors");
    int have_single = access(single, F_OK) == 0;
    free(single);
    if (have_single) return 0;
    s->index_path = path_join(dir, "model.safetensors.index.json");
    if (access(s->index_path, F_OK) != 0)
        return ul_err(e, "%s: no model.safetensors or model.safetensors.index.json", dir);
    char *text;
    if (ul_read_file(s->index_path, MAX_JSON_BYTES, &text, NULL, e)) return -1;
    s->index_root = cJSON_Parse(text);
    free(text);
    if (!s->index_root) return ul_err(e, "%s: not valid JSON", s->index_path);
    s->weight_map = cJSON_GetObjectItemCaseSensitive(s->index_root, "weight_map");
    if (!cJSON_IsObject(s->weight_map)) return ul_err(e, "%s: missing \"weight_map\" object", s->index_path);
    return 0;
}

static void shardset_close(ShardSet *s) {
    for (int i = 0; i < s->n; i++) {
        st_close(&s->files[i]);
        free(s->names[i]);
    }
    free(s->files);
    free(s->names);
    free(s->index_path);
    cJSON_Delete(s->index_root);
}

/* Finds tensor `name`: sets *file and *t, or returns an error. */
static int shardset_find(ShardSet *s, const char *name, const StFile **file, const StTensor **t, UlError *e) {
    const char *fname = "model.safetensors";
    if (s->index_path) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(s->weight_map, name);
        if (!j) return ul_err(e, "%s: tensor \"%s\" missing from weight_map", s->index_path, name);
        if (!cJSON_IsString(j) || !j->valuestring[0] || strchr(j->valuestring, '/') ||
            !strcmp(j->valuestring, "..") || !strcmp(j->valuestring, "."))
            return ul_err(e, "%s: weight_map entry of \"%s\" is not a file name", s->index_path, name);
        fname = j->valuestring;
    }
    int k = 0;
    while (k < s->n && strcmp(s->names[k], fname) != 0) k++;
    if (k == s->n) {
        s->files = ul_realloc(s->files, (size_t)(s->n + 1) * sizeof *s->files);
        s->names = ul_realloc(s->names, (size_t)(s->n + 1) * sizeof *s->names);
        char *path = path_join(s->dir, fname);
        int rc = st_open(&s->files[k], path, e);
        free(path);
        if (rc) return -1;
        s->names[k] = ul_strdup(fname);
        s->n++;
    }
    *file = &s->files[k];
    *t = st_find(*file, name);
    if (!*t) return ul_err(e, "%s: tensor \"%s\" not found", (*file)->path, name);
    return 0;
}

static void fmt_shape(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && o < n; d++) o += (size_t)snprintf(buf + o, n - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

struct UlWeightsReader {
    ShardSet set;
    ModelConfig c;
    int64_t n;               /* parameter tensors */
    int *file;               /* [n] the file holding tensor i: index into set.files (which grows) */
    const StTensor **tensor; /* [n] */
    int64_t bad_tensor, bad_elem; /* the first non-finite value read (-1: none yet) */
    float bad_value;
};

UlWeightsReader *ul_weights_open(const char *dir, const ModelConfig *c, UlError *e) {
    if (ul_config_validate(c, dir, e)) return NULL;
    UlWeightsReader *r = ul_calloc(1, sizeof *r);
    r->c = *c;
    r->n = ul_param_tensor_count(c);
    r->file = ul_calloc((size_t)r->n, sizeof *r->file);     /* [n] */
    r->tensor = ul_calloc((size_t)r->n, sizeof *r->tensor); /* [n] */
    r->bad_tensor = -1;
    int rc = shardset_open(&r->set, dir, e);
    for (int64_t i = 0; i < r->n && rc == 0; i++) {
        ParamInfo p;
        ul_param_info(c, i, &p);
        const StFile *f = NULL;
        const StTensor *t = NULL;
        if ((rc = shardset_find(&r->set, p.name, &f, &t, e))) break;
        int64_t want[2] = {p.rows, p.cols};
        int want_ndim = p.cols == 1 ? 1 : 2;
        int ok = t->ndim == want_ndim;
        for (int d = 0; ok && d < want_ndim; d++) ok = t->shape[d] == want[d];
        if (!ok) {
            char a[64], b[160];
            fmt_shape(a, sizeof a, want, want_ndim);
            fmt_shape(b, sizeof b, t->shape, t->ndim);
            rc = ul_err(e, "%s: tensor \"%s\": expected shape %s, found %s", f->path, p.name, a, b);
            break;
        }
        if (t->dtype != UL_DT_F32 && t->dtype != UL_DT_BF16 && t->dtype != UL_DT_F16) {
            rc = ul_err(e, "%s: tensor \"%s\" has dtype %s, expected a float type (F32, BF16, F16)", f->path, p.name,
                        ul_dtype_name(t->dtype));
            break;
        }
        r->file[i] = (int)(f - r->set.files); /* f moves when a later shard is opened */
        r->tensor[i] = t;                     /* the file's own tensor table: stays */
    }
    if (rc) {
        ul_weights_close(r);
        return NULL;
    }
    return r;
}

void ul_weights_read_range(UlWeightsReader *r, int64_t a, int64_t b, float *out) {
    for (int64_t i = 0; i < r->n; i++) {
        ParamInfo p;
        ul_param_info(&r->c, i, &p);
        int64_t x = p.offset > a ? p.offset : a, y = p.offset + p.numel < b ? p.offset + p.numel : b;
        if (x >= y) continue;
        UlError e = {{0}};
        int rc = st_read_f32_range(&r->set.files[r->file[i]], r->tensor[i], x - p.offset, y - x, out + (x - a), &e);
        UL_ASSERT(rc == 0, "%s", e.msg); /* the dtypes were checked at open */
        const float *v = out + (x - a);
        for (int64_t j = 0; j < y - x && (r->bad_tensor < 0 || r->bad_tensor > i); j++)
            if (!isfinite(v[j])) {
                r->bad_tensor = i;
                r->bad_elem = x - p.offset + j;
                r->bad_value = v[j];
                break;
            }
    }
}

int ul_weights_check_finite(const UlWeightsReader *r, UlError *e) {
    if (r->bad_tensor < 0) return 0;
    ParamInfo p;
    ul_param_info(&r->c, r->bad_tensor, &p);
    return ul_err(e, "%s: tensor \"%s\" holds a non-finite value (%s at element %lld): refusing to start from it",
                  r->set.files[r->file[r->bad_tensor]].path, p.name, isnan(r->bad_value) ? "nan" : "inf",
                  (long long)r->bad_elem);
}

void ul_weights_close(UlWeightsReader *r) {
    if (!r) return;
    shardset_close(&r->set);
    free(r->file);
    free(r->tensor);
    free(r);
}

int ul_load_weights(const char *dir, const ModelConfig *c, float *params, UlError *e) {
    UlWeightsReader *r = ul_weights_open(dir, c, e);
    if (!r) return -1;
    ul_weights_read_range(r, 0, ul_param_numel(c), params);
    int rc = ul_weights_check_finite(r, e);
    ul_weights_close(r);
    return rc;
}

int ul_write_hf_config(const char *dir, const ModelConfig *c, UlDtype dtype, UlError *e) {
    char *cfg = ul_config_to_json(c, dtype == UL_DT_BF16 ? "bfloat16" : "float32");
    char *path = path_join(dir, "config.json");
    int rc = ul_write_file_atomic(path, cfg, strlen(cfg), e);
    free(cfg);
    free(path);
    return rc;
}

StStream *ul_hf_weights_open(const char *dir, const ModelConfig *c, UlDtype dtype, UlError *e) {
    const int64_t n = ul_param_tensor_count(c);
    ParamInfo *info = ul_calloc((size_t)n, sizeof *info);     /* [n] */
    StWriteItem *items = ul_calloc((size_t)n, sizeof *items); /* [n] */
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        ul_param_info(c, i, &info[i]);
        /* the file's data is the flat vector itself: the tensors tile [0, N) in order */
        UL_ASSERT(info[i].offset == off, "parameter %s at %lld, not at %lld", info[i].name, (long long)info[i].offset,
                  (long long)off);
        off += info[i].rows * info[i].cols;
        items[i] = (StWriteItem){.name = info[i].name, .dtype = dtype, .ndim = info[i].cols == 1 ? 1 : 2,
                                 .shape = {info[i].rows, info[i].cols}};
    }
    char *path = path_join(dir, "model.safetensors");
    StStream *s = st_stream_open(path, items, n, e);
    free(path);
    free(items);
    free(info);
    return s;
}

int ul_write_hf_files(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e) {
    StStream *s = ul_hf_weights_open(dir, c, dtype, e);
    if (!s) return -1;
    if (st_stream_append(s, params, ul_param_numel(c), e)) {
        st_stream_abort(s);
        return -1;
    }
    if (st_stream_close(s, e)) return -1;
    return ul_write_hf_config(dir, c, dtype, e); /* last: the weights it describes are in place */
}

int ul_save_hf_dir(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e) {
    if (dtype != UL_DT_F32 && dtype != UL_DT_BF16)
        return ul_err(e, "%s: model dtype must be F32 or BF16, got %s", dir, ul_dtype_name(dtype));
    if (ul_config_validate(c, dir, e)) return -1;
    struct stat st;
    if (stat(dir, &st) != 0 && mkdir(dir, 0755) != 0)
        return ul_err(e, "%s: cannot create the directory: %s", dir, strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return ul_err(e, "%s: exists and is not a directory", dir);
    return ul_write_hf_files(dir, c, params, dtype, e);
}
