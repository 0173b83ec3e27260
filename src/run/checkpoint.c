#include "run/checkpoint.h"

#include "formats/outputs.h"
#include "run/setup.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/params.h"
#include "formats/fileio.h"
#include "formats/hf_model.h"

#define PATH_CAP 4096
#define MAX_JSON_BYTES ((size_t)256 << 20)

/* ---------------------------------------------------------------- small helpers */

/* snprintf into dst[cap]; a path that does not fit is an error. */
static int pfmt(char *dst, size_t cap, UlError *e, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int pfmt(char *dst, size_t cap, UlError *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return ul_err(e, "path too long: %.200s...", dst);
    return 0;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Makes a rename or a new entry in dir durable. Best effort on filesystems that refuse. */
static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* "step-" followed by digits only: *step gets the number. */
static int parse_step_name(const char *name, int64_t *step) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *d = name + 5;
    int64_t v = 0;
    int n = 0;
    for (; *d; d++, n++) {
        if (*d < '0' || *d > '9' || n >= 18) return 0;
        v = v * 10 + (*d - '0');
    }
    if (n == 0) return 0;
    *step = v;
    return 1;
}

void ckpt_step_dir(char *dst, size_t cap, const char *root, int64_t step) {
    snprintf(dst, cap, "%s/step-%08lld", root, (long long)step);
}

typedef struct {
    int64_t step;
    int complete;
    char name[64];
} StepEnt;

static int cmp_step(const void *a, const void *b) {
    int64_t x = ((const StepEnt *)a)->step, y = ((const StepEnt *)b)->step;
    return (x > y) - (x < y);
}

/* The step-N directories of root, ascending; -1 if root cannot be read. */
static int64_t list_steps(const char *root, StepEnt **out) {
    *out = NULL;
    DIR *d = opendir(root);
    if (!d) return -1;
    int64_t n = 0, cap = 0;
    StepEnt *v = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t s;
        if (strlen(de->d_name) >= sizeof v->name || !parse_step_name(de->d_name, &s)) continue;
        char p[PATH_CAP];
        snprintf(p, sizeof p, "%s/%s", root, de->d_name);
        if (!is_dir(p)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            v = ul_realloc(v, (size_t)cap * sizeof *v);
        }
        v[n].step = s;
        snprintf(v[n].name, sizeof v[n].name, "%s", de->d_name);
        snprintf(p, sizeof p, "%s/%s/" CKPT_MARKER, root, de->d_name);
        v[n].complete = exists(p);
        n++;
    }
    closedir(d);
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_step);
    *out = v;
    return n;
}

static int my_rank(void) {
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

/* Fault injection for the tests: ULYSSES_DEBUG_CKPT_CRASH=STAGE kills the job (rank 0,
 * MPI_Abort, no cleanup) at that stage of a save, as a power cut or a killed job would. */
static void crash_point(const char *stage) {
    const char *s = getenv("ULYSSES_DEBUG_CKPT_CRASH");
    if (s && strcmp(s, stage) == 0 && my_rank() == 0) {
        fprintf(stderr, "ulysses: debug: crashing during a checkpoint save (stage %s)\n", stage);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 42);
    }
}

/* Rank r's slice [begin, end) of n elements over w ranks: floor(n*r/w) without overflow. */
static int64_t slice_at(int64_t n, int64_t w, int64_t r) { return n / w * r + n % w * r / w; }

void ckpt_part_range(int64_t n, int64_t world, int64_t rank, int64_t *begin, int64_t *end) {
    *begin = slice_at(n, world, rank);
    *end = slice_at(n, world, rank + 1);
}

void ckpt_part_chunk(int64_t n, int64_t world, int64_t rank, int64_t c, int64_t j, int64_t *lo, int64_t *hi) {
    int64_t a = slice_at(n, world, rank), b = slice_at(n, world, rank + 1);
    *lo = j < (b - a + c - 1) / c ? a + j * c : b;
    *hi = *lo + c < b ? *lo + c : b;
}

int64_t ckpt_part_chunks(int64_t n, int64_t world, int64_t c) {
    int64_t longest = 0;
    for (int64_t r = 0; r < world; r++) {
        int64_t len = slice_at(n, world, r + 1) - slice_at(n, world, r);
        if (len > longest) longest = len;
    }
    return (longest + c - 1) / c;
}

/* ---------------------------------------------------------------- JSON helpers */

/* A double as the shortest text that reads back to exactly the same value. */
static cJSON *jnum(double v) {
    char buf[48];
    if (!isfinite(v)) return cJSON_CreateNull();
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

static cJSON *jint(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return cJSON_CreateRaw(buf);
}

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int jdbl(const char *what, const cJSON *o, const char *k, double *out, UlError *e) {
    const cJSON *j = jget(o, k);
    if (!cJSON_IsNumber(j)) return ul_err(e, "%s: field \"%s\" missing or not a number", what, k);
    *out = j->valuedouble;
    return 0;
}

static int ji64(const char *what, const cJSON *o, const char *k, int64_t *out, UlError *e) {
    double v = 0;
    if (jdbl(what, o, k, &v, e)) return -1;
    if (v != floor(v) || fabs(v) > 0x1p53) return ul_err(e, "%s: field \"%s\" must be an integer", what, k);
    *out = (int64_t)v;
    return 0;
}

static int jbool(const char *what, const cJSON *o, const char *k, int *out, UlError *e) {
    const cJSON *j = jget(o, k);
    if (!cJSON_IsBool(j)) return ul_err(e, "%s: field \"%s\" missing or not true/false", what, k);
    *out = cJSON_IsTrue(j);
    return 0;
}

static const char *jstr(const char *what, const cJSON *o, const char *k, UlError *e) {
    const cJSON *j = jget(o, k);
    if (!cJSON_IsString(j)) {
        ul_err(e, "%s: field \"%s\" missing or not a string", what, k);
        return NULL;
    }
    return j->valuestring;
}

static const cJSON *jobj(const char *what, const cJSON *o, const char *k, UlError *e) {
    const cJSON *j = jget(o, k);
    if (!cJSON_IsObject(j)) {
        ul_err(e, "%s: field \"%s\" missing or not an object", what, k);
        return NULL;
    }
    return j;
}

static int load_json(const char *path, cJSON **root, UlError *e) {
    char *text;
    *root = NULL;
    if (ul_read_file(path, MAX_JSON_BYTES, &text, NULL, e)) return -1;
    *root = cJSON_Parse(text);
    free(text);
    if (!*root || !cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return ul_err(e, "%s: not a valid JSON object (truncated or corrupt)", path);
    }
    return 0;
}

/* A relative file name inside a checkpoint: no absolute paths, no "..". */
static int safe_rel_name(const char *s) {
    if (!s[0] || s[0] == '/' || strlen(s) > 256) return 0;
    for (const char *p = s; *p; p++)
        if (p[0] == '.' && p[1] == '.') return 0;
    return 1;
}

static char *json_text(cJSON *root) {
    char *t = cJSON_Print(root);
    UL_ASSERT(t, "cJSON_Print failed");
    size_t n = strlen(t);
    char *out = ul_malloc(n + 2); /* [n + 2]: text + "\n" + NUL */
    memcpy(out, t, n);
    memcpy(out + n, "\n", 2);
    cJSON_free(t);
    return out;
}

/* ---------------------------------------------------------------- RoPE flags */

int ckpt_apply_rope_flags(ModelConfig *c, double rope_theta, const char *spec, int64_t max_pos, UlError *e) {
    const int64_t orig_max = c->max_position_embeddings;
    if (rope_theta != 0) {
        if (!(rope_theta > 0 && isfinite(rope_theta))) return ul_err(e, "--rope-theta %g: must be positive", rope_theta);
        c->rope_theta = rope_theta;
    }
    if (spec) {
        if (strcmp(spec, "default") == 0 || strcmp(spec, "none") == 0) {
            c->rope_type = UL_ROPE_DEFAULT;
        } else if (strncmp(spec, "llama3", 6) == 0 && (spec[6] == 0 || spec[6] == ':')) {
            ModelConfig n = *c;
            if (c->rope_type != UL_ROPE_LLAMA3) {
                n.rope_factor = 0;
                n.rope_low_freq_factor = 1;
                n.rope_high_freq_factor = 4;
                n.rope_original_max_position_embeddings = orig_max;
            }
            n.rope_type = UL_ROPE_LLAMA3;
            const char *p = spec[6] ? spec + 7 : spec + 6;
            while (*p) {
                const char *end = strchr(p, ','), *eq = strchr(p, '=');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                if (!eq || eq >= p + len)
                    return ul_err(e, "--rope-scaling %s: expected key=value items after 'llama3:'", spec);
                char key[64], val[64];
                size_t kl = (size_t)(eq - p), vl = len - kl - 1;
                if (kl >= sizeof key || vl >= sizeof val || vl == 0)
                    return ul_err(e, "--rope-scaling %s: bad item '%.*s'", spec, (int)len, p);
                memcpy(key, p, kl);
                key[kl] = 0;
                memcpy(val, eq + 1, vl);
                val[vl] = 0;
                char *ve = NULL;
                errno = 0;
                double v = strtod(val, &ve);
                if (errno || *ve || !isfinite(v))
                    return ul_err(e, "--rope-scaling %s: %s=%s is not a number", spec, key, val);
                if (strcmp(key, "factor") == 0) n.rope_factor = v;
                else if (strcmp(key, "low_freq_factor") == 0) n.rope_low_freq_factor = v;
                else if (strcmp(key, "high_freq_factor") == 0) n.rope_high_freq_factor = v;
                else if (strcmp(key, "original_max_position_embeddings") == 0) {
                    if (v != floor(v) || v < 1 || v > 0x1p40)
                        return ul_err(e, "--rope-scaling %s: original_max_position_embeddings must be a positive integer",
                                      spec);
                    n.rope_original_max_position_embeddings = (int64_t)v;
                } else
                    return ul_err(e,
                                  "--rope-scaling %s: unknown key '%s' (known: factor, low_freq_factor, "
                                  "high_freq_factor, original_max_position_embeddings)",
                                  spec, key);
                p += len + (end ? 1 : 0);
            }
            if (!(n.rope_factor > 0))
                return ul_err(e, "--rope-scaling %s: llama3 needs factor=F (> 0)", spec);
            *c = n;
        } else {
            return ul_err(e,
                          "--rope-scaling %s: expected 'default' or "
                          "'llama3:factor=F[,low_freq_factor=L,high_freq_factor=H,original_max_position_embeddings=N]'",
                          spec);
        }
    }
    if (max_pos != 0) {
        if (max_pos < 1) return ul_err(e, "--max-position-embeddings %lld: must be positive", (long long)max_pos);
        c->max_position_embeddings = max_pos;
    }
    if (rope_theta == 0 && !spec && max_pos == 0) return 0;
    return ul_config_validate(c, "--rope-theta/--rope-scaling/--max-position-embeddings", e);
}

/* ---------------------------------------------------------------- model config */

int ckpt_check_config(const char *path, const ModelConfig *c, UlError *e) {
    char p[PATH_CAP];
    if (pfmt(p, sizeof p, e, "%s/config.json", path)) return -1;
    ModelConfig k;
    if (ul_config_load(p, &k, e)) return -1;
    const char *run = "this run's model config (--model / --init and the rope flags)";
#define CMP_I(f, name)                                                                                       \
    if (k.f != c->f)                                                                                         \
        return ul_err(e, "%s: %s is %lld in the checkpoint but %lld in %s", p, name, (long long)k.f, (long long)c->f, \
                      run);
#define CMP_D(f, name)                                                                                       \
    if (k.f != c->f) return ul_err(e, "%s: %s is %.10g in the checkpoint but %.10g in %s", p, name, k.f, c->f, run);
    if (k.family != c->family)
        return ul_err(e, "%s: the checkpoint is a %s, %s is a %s", p, ul_family(&k)->architecture, run,
                      ul_family(c)->architecture);
    CMP_I(vocab_size, "vocab_size")
    CMP_I(hidden_size, "hidden_size")
    CMP_I(intermediate_size, "intermediate_size")
    CMP_I(num_layers, "num_hidden_layers")
    CMP_I(num_heads, "num_attention_heads")
    CMP_I(num_kv_heads, "num_key_value_heads")
    CMP_I(head_dim, "head_dim")
    CMP_I(tie_word_embeddings, "tie_word_embeddings")
    CMP_D(rms_norm_eps, "rms_norm_eps")
    CMP_D(rope_theta, "rope_theta")
    if (k.rope_type != c->rope_type)
        return ul_err(e, "%s: rope_scaling is %s in the checkpoint but %s in %s", p,
                      k.rope_type == UL_ROPE_LLAMA3 ? "llama3" : "none", c->rope_type == UL_ROPE_LLAMA3 ? "llama3" : "none",
                      run);
    if (k.rope_type == UL_ROPE_LLAMA3) {
        CMP_D(rope_factor, "rope_scaling.factor")
        CMP_D(rope_low_freq_factor, "rope_scaling.low_freq_factor")
        CMP_D(rope_high_freq_factor, "rope_scaling.high_freq_factor")
        CMP_I(rope_original_max_position_embeddings, "rope_scaling.original_max_position_embeddings")
    }
    CMP_I(max_position_embeddings, "max_position_embeddings")
#undef CMP_I
#undef CMP_D
    return 0;
}

/* ---------------------------------------------------------------- HF files */

/* dir/config.json and dir/model.safetensors, written by world rank 0 (when ok: else it only
 * takes part) from src's weights in chunks; every rank runs the chunk loop, since fetching
 * a chunk may gather over the ranks. Rank 0's outcome (0 elsewhere); not agreed. */
static int stream_hf(const char *dir, const ModelConfig *c, UlDtype dtype, const CkptSource *src, int ok, UlError *e) {
    StStream *st = NULL;
    int rc = 0;
    if (my_rank() == 0 && ok) {
        st = ul_hf_weights_open(dir, c, dtype, e);
        if (!st) rc = -1;
    }
    for (int64_t a = 0; a < src->n; a += src->chunk) {
        int64_t b = src->n - a < src->chunk ? src->n : a + src->chunk;
        const float *w = src->weights(src->user, a, b); /* [b - a] on rank 0 */
        if (st && rc == 0) rc = st_stream_append(st, w, b - a, e);
    }
    if (st) {
        if (rc == 0) rc = st_stream_close(st, e);
        else st_stream_abort(st);
    }
    if (st && rc == 0) rc = ul_write_hf_config(dir, c, dtype, e); /* last: the weights it describes are in place */
    return rc;
}

int ckpt_write_out(const char *dir, const ModelConfig *c, UlDtype dtype, const CkptSource *src, UlError *e) {
    int rc = 0;
    if (my_rank() == 0) rc = ul_mkdir_p(dir, "--out", e);
    int rc2 = stream_hf(dir, c, dtype, src, rc == 0, e);
    if (rc == 0) rc = rc2;
    if (my_rank() == 0 && rc == 0) fsync_dir(dir);
    return ul_agree(rc, e);
}

/* ---------------------------------------------------------------- state.json */

static const char *part_name(char *dst, size_t cap, int64_t r, int64_t w) {
    snprintf(dst, cap, "state/part-%05lld-of-%05lld.safetensors", (long long)r, (long long)w);
    return dst;
}

static const char *run_source(const CkptRun *r) { return r->o->task ? r->o->task : "shards"; }

static char *state_json(const CkptRun *r, int64_t step, int64_t n) {
    const TrainOptions *o = r->o;
    const Mesh *m = r->mesh;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "ulysses-train-state");
    cJSON_AddItemToObject(root, "version", jint(CKPT_FORMAT_VERSION));
    cJSON_AddItemToObject(root, "step", jint(step));
    cJSON_AddItemToObject(root, "n_params", jint(n));
    cJSON *rng = cJSON_AddObjectToObject(root, "rng");
    char seed[32];
    snprintf(seed, sizeof seed, "%lld", (long long)o->seed);
    cJSON_AddStringToObject(rng, "seed", seed);
    cJSON_AddStringToObject(rng, "note",
                            "no RNG state is carried between steps: initialization, data order and the kv task "
                            "are pure functions of the seed (and the sample index)");
    cJSON *sch = cJSON_AddObjectToObject(root, "schedule");
    cJSON_AddItemToObject(sch, "steps", jint(o->steps));
    cJSON_AddItemToObject(sch, "lr", jnum(o->lr));
    cJSON_AddItemToObject(sch, "min_lr_ratio", jnum(o->min_lr_ratio));
    cJSON_AddItemToObject(sch, "warmup", jnum(o->warmup));
    cJSON *opt = cJSON_AddObjectToObject(root, "optimizer");
    cJSON_AddStringToObject(opt, "name", "adamw");
    cJSON_AddItemToObject(opt, "beta1", jnum(o->beta1));
    cJSON_AddItemToObject(opt, "beta2", jnum(o->beta2));
    cJSON_AddItemToObject(opt, "eps", jnum(o->adam_eps));
    cJSON_AddItemToObject(opt, "weight_decay", jnum(o->weight_decay));
    cJSON_AddItemToObject(opt, "clip", jnum(o->clip));
    cJSON_AddItemToObject(opt, "t", jint(step));
    cJSON *d = cJSON_AddObjectToObject(root, "data");
    cJSON_AddStringToObject(d, "source", run_source(r));
    cJSON_AddItemToObject(d, "seq_len", jint(o->seq_len));
    cJSON_AddItemToObject(d, "batch", jint(o->batch));
    cJSON_AddBoolToObject(d, "fixed_len", o->fixed_len != 0);
    cJSON_AddBoolToObject(d, "doc_per_sample", o->doc_per_sample != 0);
    cJSON_AddBoolToObject(d, "no_shuffle", o->no_shuffle != 0);
    cJSON_AddItemToObject(d, "next_sample", jint(step * o->batch));
    if (r->dl) {
        cJSON_AddItemToObject(d, "total_tokens", jint(r->dl->total_tokens));
        cJSON *sh = cJSON_AddArrayToObject(d, "shards");
        for (int i = 0; i < r->dl->n_shards; i++) {
            const TokShard *t = &r->dl->shards[i];
            const char *b = strrchr(t->path, '/');
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", b ? b + 1 : t->path);
            cJSON_AddItemToObject(x, "tokens", jint(t->n_tokens));
            cJSON_AddItemToObject(x, "docs", jint(t->n_docs));
            cJSON_AddItemToArray(sh, x);
        }
    }
    cJSON *me = cJSON_AddObjectToObject(root, "mesh");
    cJSON_AddItemToObject(me, "world", jint(m->world));
    cJSON_AddItemToObject(me, "dp_replicate", jint(m->dp_replicate));
    cJSON_AddItemToObject(me, "dp_shard", jint(m->dp_shard));
    cJSON_AddItemToObject(me, "sp", jint(m->sp));
    cJSON_AddItemToObject(me, "grad_accum", jint(o->grad_accum));
    cJSON *parts = cJSON_AddArrayToObject(root, "parts");
    for (int64_t q = 0; q < m->world; q++) {
        char nm[96];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "file", part_name(nm, sizeof nm, q, m->world));
        cJSON_AddItemToObject(x, "rank", jint(q));
        cJSON_AddItemToObject(x, "begin", jint(slice_at(n, m->world, q)));
        cJSON_AddItemToObject(x, "end", jint(slice_at(n, m->world, q + 1)));
        cJSON_AddItemToArray(parts, x);
    }
    cJSON *ts = cJSON_AddArrayToObject(root, "part_tensors");
    cJSON_AddItemToArray(ts, cJSON_CreateString("params"));
    cJSON_AddItemToArray(ts, cJSON_CreateString("exp_avg"));
    cJSON_AddItemToArray(ts, cJSON_CreateString("exp_avg_sq"));
    char *txt = json_text(root);
    cJSON_Delete(root);
    return txt;
}

typedef struct {
    int64_t n;
    char **file; /* [n] relative names */
    int64_t *begin, *end;
} Parts;

static void parts_free(Parts *p) {
    for (int64_t i = 0; i < p->n; i++) free(p->file[i]);
    free(p->file);
    free(p->begin);
    free(p->end);
    memset(p, 0, sizeof *p);
}

/* A flag value against the checkpoint's. */
static int same_d(const char *sp, const char *flag, double have, const cJSON *o, const char *k, const char *why,
                  UlError *e) {
    double v = 0;
    if (jdbl(sp, o, k, &v, e)) return -1;
    if (v != have)
        return ul_err(e, "%s: %s %.10g differs from the checkpoint's %.10g (%s)", sp, flag, have, v, why);
    return 0;
}

static int same_i(const char *sp, const char *flag, int64_t have, const cJSON *o, const char *k, const char *why,
                  UlError *e) {
    int64_t v = 0;
    if (ji64(sp, o, k, &v, e)) return -1;
    if (v != have)
        return ul_err(e, "%s: %s %lld differs from the checkpoint's %lld (%s)", sp, flag, (long long)have, (long long)v,
                      why);
    return 0;
}

static int same_b(const char *sp, const char *flag, int have, const cJSON *o, const char *k, const char *why,
                  UlError *e) {
    int v = 0;
    if (jbool(sp, o, k, &v, e)) return -1;
    if (v != (have != 0))
        return ul_err(e, "%s: %s is %s here but %s in the checkpoint (%s)", sp, flag, have ? "given" : "not given",
                      v ? "given" : "not given", why);
    return 0;
}

/* state.json against the run; fills parts. */
static int check_state(const char *sp, const cJSON *st, const CkptRun *r, int64_t marker_step, Parts *parts,
                       int64_t *step, UlError *e) {
    const TrainOptions *o = r->o;
    const char *fmt = jstr(sp, st, "format", e);
    if (!fmt) return -1;
    if (strcmp(fmt, "ulysses-train-state") != 0) return ul_err(e, "%s: not a ulysses training state", sp);
    int64_t ver, n;
    if (ji64(sp, st, "version", &ver, e)) return -1;
    if (ver != CKPT_FORMAT_VERSION)
        return ul_err(e, "%s: format version %lld, this build reads version %d", sp, (long long)ver, CKPT_FORMAT_VERSION);
    if (ji64(sp, st, "step", step, e) || ji64(sp, st, "n_params", &n, e)) return -1;
    if (*step != marker_step)
        return ul_err(e, "%s: step %lld, but " CKPT_MARKER " says %lld", sp, (long long)*step, (long long)marker_step);
    if (*step < 0) return ul_err(e, "%s: negative step", sp);
    int64_t want_n = ul_param_numel(r->c);
    if (n != want_n)
        return ul_err(e, "%s: the state holds %lld parameters, this model has %lld", sp, (long long)n, (long long)want_n);
    if (*step > o->steps)
        return ul_err(e, "%s: --steps %lld is below the checkpoint's step %lld", sp, (long long)o->steps,
                      (long long)*step);

    const char *why_s = "the learning-rate schedule would change; resume with the same flags";
    const cJSON *sch = jobj(sp, st, "schedule", e);
    /* --steps may differ (extend or shorten a run, as HF Trainer's max_steps on resume): the
     * schedule is the one for the new total from the checkpoint's step on */
    int64_t ck_steps = 0;
    if (!sch || ji64(sp, sch, "steps", &ck_steps, e)) return -1;
    if (ck_steps != o->steps && my_rank() == 0 && !o->quiet)
        fprintf(stderr,
                "ulysses: note: --steps %lld, the checkpoint's run had %lld: the learning-rate schedule is now the one "
                "for %lld steps, from step %lld on\n",
                (long long)o->steps, (long long)ck_steps, (long long)o->steps, (long long)*step);
    if (same_d(sp, "--lr", o->lr, sch, "lr", why_s, e) ||
        same_d(sp, "--min-lr-ratio", o->min_lr_ratio, sch, "min_lr_ratio", why_s, e) ||
        same_d(sp, "--warmup", o->warmup, sch, "warmup", why_s, e))
        return -1;
    const char *why_o = "the optimizer would change; resume with the same flags";
    const cJSON *opt = jobj(sp, st, "optimizer", e);
    if (!opt || same_d(sp, "--beta1", o->beta1, opt, "beta1", why_o, e) ||
        same_d(sp, "--beta2", o->beta2, opt, "beta2", why_o, e) ||
        same_d(sp, "--adam-eps", o->adam_eps, opt, "eps", why_o, e) ||
        same_d(sp, "--weight-decay", o->weight_decay, opt, "weight_decay", why_o, e) ||
        same_d(sp, "--clip", o->clip, opt, "clip", why_o, e))
        return -1;
    const char *why_d = "the data stream would differ; resume with the same data and flags";
    const cJSON *rng = jobj(sp, st, "rng", e);
    const char *seed = rng ? jstr(sp, rng, "seed", e) : NULL;
    if (!seed) return -1;
    char have_seed[32];
    snprintf(have_seed, sizeof have_seed, "%lld", (long long)o->seed);
    if (strcmp(seed, have_seed) != 0)
        return ul_err(e, "%s: --seed %s differs from the checkpoint's %s (%s)", sp, have_seed, seed, why_d);
    const cJSON *d = jobj(sp, st, "data", e);
    if (!d) return -1;
    const char *src = jstr(sp, d, "source", e);
    if (!src) return -1;
    if (strcmp(src, run_source(r)) != 0)
        return ul_err(e, "%s: the checkpoint trained on %s%s, this run on %s%s (%s)", sp,
                      strcmp(src, "shards") ? "--task " : "--data ", src, r->o->task ? "--task " : "--data ",
                      run_source(r), why_d);
    if (same_i(sp, "--seq-len", o->seq_len, d, "seq_len", why_d, e) || same_i(sp, "--batch", o->batch, d, "batch", why_d, e) ||
        same_b(sp, "--fixed-len", o->fixed_len, d, "fixed_len", why_d, e) ||
        same_b(sp, "--doc-per-sample", o->doc_per_sample, d, "doc_per_sample", why_d, e) ||
        same_b(sp, "--no-shuffle", o->no_shuffle, d, "no_shuffle", why_d, e))
        return -1;
    if (r->dl) {
        const cJSON *sh = jget(d, "shards");
        if (!cJSON_IsArray(sh)) return ul_err(e, "%s: field \"data.shards\" missing or not a list", sp);
        int ns = cJSON_GetArraySize(sh);
        if (ns != r->dl->n_shards)
            return ul_err(e, "%s: --data %s matches %d shard files, the checkpoint trained on %d (%s)", sp, o->data,
                          r->dl->n_shards, ns, why_d);
        for (int i = 0; i < ns; i++) {
            const cJSON *x = cJSON_GetArrayItem(sh, i);
            const TokShard *t = &r->dl->shards[i];
            const char *b = strrchr(t->path, '/');
            b = b ? b + 1 : t->path;
            const char *nm = jstr(sp, x, "name", e);
            int64_t nt, nd;
            if (!nm || ji64(sp, x, "tokens", &nt, e) || ji64(sp, x, "docs", &nd, e)) return -1;
            if (strcmp(nm, b) != 0 || nt != t->n_tokens || nd != t->n_docs)
                return ul_err(e,
                              "%s: data shard %d is %s (%lld tokens, %lld documents) here but %s (%lld tokens, %lld "
                              "documents) in the checkpoint (%s)",
                              sp, i, t->path, (long long)t->n_tokens, (long long)t->n_docs, nm, (long long)nt,
                              (long long)nd, why_d);
        }
    }
    /* the parts: they must tile [0, n) in order, one per rank of the saving mesh */
    const cJSON *me = jobj(sp, st, "mesh", e);
    int64_t old_world;
    if (!me || ji64(sp, me, "world", &old_world, e)) return -1;
    const cJSON *pa = jget(st, "parts");
    if (!cJSON_IsArray(pa)) return ul_err(e, "%s: field \"parts\" missing or not a list", sp);
    int64_t np = cJSON_GetArraySize(pa);
    if (np != old_world || np < 1)
        return ul_err(e,
                      "%s: %lld state parts for a saving mesh of %lld ranks: the state cannot be reassembled for "
                      "this mesh",
                      sp, (long long)np, (long long)old_world);
    parts->n = np;
    parts->file = ul_calloc((size_t)np, sizeof(char *));
    parts->begin = ul_calloc((size_t)np, sizeof(int64_t));
    parts->end = ul_calloc((size_t)np, sizeof(int64_t));
    int64_t at = 0;
    for (int64_t i = 0; i < np; i++) {
        const cJSON *x = cJSON_GetArrayItem(pa, (int)i);
        const char *f = jstr(sp, x, "file", e);
        if (!f || ji64(sp, x, "begin", &parts->begin[i], e) || ji64(sp, x, "end", &parts->end[i], e)) return -1;
        if (!safe_rel_name(f)) return ul_err(e, "%s: part %lld has a bad file name", sp, (long long)i);
        parts->file[i] = ul_strdup(f);
        if (parts->begin[i] != at || parts->end[i] < parts->begin[i] || parts->end[i] > n)
            return ul_err(e,
                          "%s: part %lld covers [%lld, %lld), expected to start at %lld: the parts do not tile the "
                          "%lld parameters, the state cannot be reassembled for this mesh",
                          sp, (long long)i, (long long)parts->begin[i], (long long)parts->end[i], (long long)at,
                          (long long)n);
        at = parts->end[i];
    }
    if (at != n)
        return ul_err(e, "%s: the parts end at %lld of %lld parameters: the state cannot be reassembled for this mesh", sp,
                      (long long)at, (long long)n);
    return 0;
}

/* ---------------------------------------------------------------- marker */

/* Reads path/COMPLETE, checks every listed file's size. */
static int check_marker(const char *path, cJSON **files_out, int64_t *step, UlError *e) {
    char mp[PATH_CAP];
    *files_out = NULL;
    if (pfmt(mp, sizeof mp, e, "%s/" CKPT_MARKER, path)) return -1;
    if (!exists(mp))
        return ul_err(e, "%s: missing: the checkpoint is incomplete (its save did not finish); not loading it", mp);
    cJSON *root;
    if (load_json(mp, &root, e)) return -1;
    int rc = 0;
    const char *fmt = jstr(mp, root, "format", e);
    if (!fmt) rc = -1;
    else if (strcmp(fmt, "ulysses-checkpoint-complete") != 0) rc = ul_err(e, "%s: not a ulysses completion marker", mp);
    if (rc == 0) rc = ji64(mp, root, "step", step, e);
    const cJSON *files = rc == 0 ? jobj(mp, root, "files", e) : NULL;
    if (rc == 0 && !files) rc = -1;
    const char *need[] = {"config.json", "model.safetensors", CKPT_STATE};
    for (int i = 0; i < 3 && rc == 0; i++)
        if (!jget(files, need[i])) rc = ul_err(e, "%s: does not list %s", mp, need[i]);
    for (const cJSON *f = files ? files->child : NULL; f && rc == 0; f = f->next) {
        char fp[PATH_CAP];
        if (!safe_rel_name(f->string)) {
            rc = ul_err(e, "%s: bad file name \"%s\"", mp, f->string);
            break;
        }
        if (!cJSON_IsNumber(f)) {
            rc = ul_err(e, "%s: size of %s is not a number", mp, f->string);
            break;
        }
        if ((rc = pfmt(fp, sizeof fp, e, "%s/%s", path, f->string))) break;
        struct stat st;
        if (stat(fp, &st) != 0) rc = ul_err(e, "%s: missing (listed in %s)", fp, mp);
        else if ((double)st.st_size != f->valuedouble)
            rc = ul_err(e, "%s: %lld bytes, but %s recorded %.0f: truncated or modified", fp, (long long)st.st_size, mp,
                        f->valuedouble);
    }
    if (rc == 0) {
        *files_out = cJSON_DetachItemFromObjectCaseSensitive(root, "files");
    }
    cJSON_Delete(root);
    return rc;
}

/* ---------------------------------------------------------------- resolve */

static int resolve_local(const char *arg, char *out, size_t cap, UlError *e) {
    char p[PATH_CAP];
    if (pfmt(p, sizeof p, e, "%s", arg)) return -1;
    for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--) p[n - 1] = 0;
    struct stat st;
    if (stat(p, &st) != 0) return ul_err(e, "--resume %s: no such directory", arg);
    if (!S_ISDIR(st.st_mode)) return ul_err(e, "--resume %s: not a directory", arg);
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    int64_t s;
    char q[PATH_CAP], m[PATH_CAP];
    if (pfmt(q, sizeof q, e, "%s/" CKPT_STATE, p) || pfmt(m, sizeof m, e, "%s/" CKPT_MARKER, p)) return -1;
    if (parse_step_name(base, &s) || exists(q) || exists(m)) return pfmt(out, cap, e, "%s", p);
    StepEnt *v = NULL;
    int64_t n = list_steps(p, &v);
    if (n < 0) return ul_err(e, "--resume %s: cannot read the directory: %s", arg, strerror(errno));
    int64_t best = -1, incomplete = -1;
    for (int64_t i = 0; i < n; i++) {
        if (v[i].complete) best = i;
        else incomplete = i;
    }
    int rc;
    if (best >= 0) { /* say what is skipped: newer step directories without the marker, interrupted saves */
        for (int64_t i = best + 1; i < n; i++)
            fprintf(stderr, "ulysses: --resume %s: skipping the incomplete checkpoint %s/%s (no " CKPT_MARKER
                            " marker: its save did not finish)\n", arg, p, v[i].name);
        DIR *d = opendir(p);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            int64_t s = -1;
            char *dot = strstr(de->d_name, ".tmp-");
            if (!dot || strncmp(de->d_name, "step-", 5) != 0) continue;
            char base[64];
            snprintf(base, sizeof base, "%.*s", (int)(dot - de->d_name), de->d_name);
            if (parse_step_name(base, &s) && s > v[best].step)
                fprintf(stderr, "ulysses: --resume %s: skipping the incomplete checkpoint %s/%s (an interrupted "
                                "save of step %lld; it is removed when checkpoints are next written)\n",
                        arg, p, de->d_name, (long long)s);
        }
        if (d) closedir(d);
        rc = pfmt(out, cap, e, "%s/%s", p, v[best].name);
    }
    else if (incomplete >= 0)
        rc = ul_err(e,
                    "--resume %s: no complete checkpoint in it (%s/%s has no " CKPT_MARKER
                    " marker: its save was interrupted)",
                    arg, p, v[incomplete].name);
    else
        rc = ul_err(e, "--resume %s: no checkpoint in it (neither a checkpoint directory nor a root holding "
                       "step-NNNNNNNN directories)", arg);
    free(v);
    return rc;
}

int ckpt_resolve(const char *resume, char *path, size_t cap, UlError *e) {
    char buf[PATH_CAP] = {0};
    int rc = my_rank() == 0 ? resolve_local(resume, buf, sizeof buf, e) : 0;
    if (rc == 0 && strlen(buf) >= cap) rc = ul_err(e, "--resume %s: path too long", resume);
    if (ul_agree(rc, e)) return -1;
    MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    snprintf(path, cap, "%s", buf);
    return 0;
}

/* ---------------------------------------------------------------- load */

/* Copies flat [lo, hi) of the three buffers from part i into dst[k][0 : hi - lo). */
static int read_part(const char *path, const Parts *pa, int64_t i, int64_t lo, int64_t hi, float *const dst[3],
                     UlError *e) {
    char fp[PATH_CAP];
    if (pfmt(fp, sizeof fp, e, "%s/%s", path, pa->file[i])) return -1;
    StFile f;
    if (st_open(&f, fp, e)) return -1;
    const char *names[3] = {"params", "exp_avg", "exp_avg_sq"};
    int64_t len = pa->end[i] - pa->begin[i];
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        const StTensor *t = st_find(&f, names[k]);
        if (!t) rc = ul_err(e, "%s: tensor \"%s\" missing", fp, names[k]);
        else if (t->dtype != UL_DT_F32 || t->ndim != 1 || t->shape[0] != len)
            rc = ul_err(e, "%s: tensor \"%s\" must be F32 of shape [%lld] (the part's slice)", fp, names[k],
                        (long long)len);
        else
            memcpy(dst[k], (const char *)st_data(&f, t) + (size_t)(lo - pa->begin[i]) * sizeof(float),
                   (size_t)(hi - lo) * sizeof(float)); /* the data may be unaligned */
    }
    st_close(&f);
    return rc;
}

/* Everything but the tensors: marker, sizes, state.json against the run; fills pa. Agreed. */
static int load_validate(const char *path, const CkptRun *r, Parts *pa, int64_t *step, UlError *e) {
    cJSON *files = NULL, *st = NULL;
    int64_t mstep = -1;
    char sp[PATH_CAP];
    int rc = check_marker(path, &files, &mstep, e);
    if (rc == 0) rc = pfmt(sp, sizeof sp, e, "%s/" CKPT_STATE, path);
    if (rc == 0) rc = load_json(sp, &st, e);
    if (rc == 0) rc = check_state(sp, st, r, mstep, pa, step, e);
    for (int64_t i = 0; i < pa->n && rc == 0; i++)
        if (!jget(files, pa->file[i]))
            rc = ul_err(e, "%s/" CKPT_MARKER ": does not list the state part %s", path, pa->file[i]);
    cJSON_Delete(files);
    cJSON_Delete(st);
    if (ul_agree(rc, e)) {
        parts_free(pa);
        return -1;
    }
    return 0;
}

/* Reads the ranges rg[nrg] from the parts that overlap them (pa: validated). Not agreed. */
static int read_ranges(const char *path, const Parts *pa, const CkptRange *rg, int64_t nrg, UlError *e) {
    int rc = 0;
    for (int64_t j = 0; j < nrg && rc == 0; j++) {
        const CkptRange *g = &rg[j];
        for (int64_t i = 0; i < pa->n && rc == 0; i++) {
            int64_t a = pa->begin[i] > g->begin ? pa->begin[i] : g->begin;
            int64_t b = pa->end[i] < g->end ? pa->end[i] : g->end;
            if (a >= b) continue;
            float *const dst[3] = {g->params + (a - g->begin), g->mom1 + (a - g->begin), g->mom2 + (a - g->begin)};
            rc = read_part(path, pa, i, a, b, dst, e);
        }
    }
    return rc;
}

int ckpt_load(const char *path, const CkptRun *r, CkptState *s, int64_t *step, UlError *e) {
    Parts pa = {0};
    if (load_validate(path, r, &pa, step, e)) return -1;
    /* this rank reads its slice of the new mesh from the parts that overlap it ... */
    Mesh *m = r->mesh;
    int64_t n = s->n, lo = slice_at(n, m->world, m->rank), hi = slice_at(n, m->world, m->rank + 1);
    CkptRange mine = {lo, hi, s->params + lo, s->mom1 + lo, s->mom2 + lo};
    int rc = read_ranges(path, &pa, &mine, 1, e);
    parts_free(&pa);
    if (ul_agree(rc, e)) return -1;
    /* ... and every rank gets every slice (the state is replicated: ZeRO stage 0). */
    CommGroup *g = &m->world_g;
    float *bufs[3] = {s->params, s->mom1, s->mom2};
    for (int k = 0; k < 3; k++)
        for (int q = 0; q < m->world; q++) {
            int64_t a = slice_at(n, m->world, q), b = slice_at(n, m->world, q + 1);
            if (b > a) g->ops->broadcast(g, bufs[k] + a, (size_t)(b - a) * sizeof(float), q);
        }
    return 0;
}

int ckpt_load_ranges(const char *path, const CkptRun *r, int64_t n, const CkptRange *rg, int64_t nrg, int64_t *step,
                     UlError *e) {
    for (int64_t j = 0; j < nrg; j++)
        UL_ASSERT(rg[j].begin >= 0 && rg[j].begin <= rg[j].end && rg[j].end <= n, "ckpt_load_ranges: bad range");
    Parts pa = {0};
    if (load_validate(path, r, &pa, step, e)) return -1;
    int rc = read_ranges(path, &pa, rg, nrg, e);
    parts_free(&pa);
    return ul_agree(rc, e);
}

/* ---------------------------------------------------------------- save, rotate */

/* Removes root/name: renamed away first (a half-deleted directory never keeps the
 * name of a checkpoint), then deleted. */
static int remove_ckpt(const char *root, const char *name) {
    char p[PATH_CAP], d[PATH_CAP];
    snprintf(p, sizeof p, "%s/%s", root, name);
    snprintf(d, sizeof d, "%s/%s.del-%ld", root, name, (long)getpid());
    if (rename(p, d) != 0) return -1;
    fsync_dir(root);
    return ul_remove_tree(d);
}

static void rotate(const char *root, int64_t keep_last, int64_t step) {
    StepEnt *v = NULL;
    int64_t n = list_steps(root, &v);
    int64_t kept = 0;
    for (int64_t i = n - 1; i >= 0; i--) {
        if (!v[i].complete || v[i].step > step) continue;
        if (++kept <= keep_last) continue;
        if (remove_ckpt(root, v[i].name) != 0)
            fprintf(stderr, "ulysses: warning: --keep-last: cannot remove %s/%s: %s\n", root, v[i].name, strerror(errno));
    }
    free(v);
}

/* This rank's part, streamed from src chunk by chunk (every rank runs the whole loop:
 * fetching a chunk may gather over the ranks, and a rank whose write failed keeps taking
 * part). Not agreed. */
static int write_part(const char *tmp, const CkptSource *src, int64_t r, int64_t w, UlError *e) {
    char nm[96], fp[PATH_CAP];
    int rc = pfmt(fp, sizeof fp, e, "%s/%s", tmp, part_name(nm, sizeof nm, r, w));
    int64_t a = slice_at(src->n, w, r), b = slice_at(src->n, w, r + 1);
    StWriteItem it[3] = {
        {.name = "params", .dtype = UL_DT_F32, .ndim = 1, .shape = {b - a}},
        {.name = "exp_avg", .dtype = UL_DT_F32, .ndim = 1, .shape = {b - a}},
        {.name = "exp_avg_sq", .dtype = UL_DT_F32, .ndim = 1, .shape = {b - a}},
    };
    StStream *st = rc == 0 ? st_stream_open(fp, it, 3, e) : NULL;
    if (rc == 0 && !st) rc = -1;
    const int64_t nj = ckpt_part_chunks(src->n, w, src->part_chunk);
    for (int vec = 0; vec < 3; vec++)
        for (int64_t j = 0; j < nj; j++) {
            int64_t lo, hi;
            ckpt_part_chunk(src->n, w, r, src->part_chunk, j, &lo, &hi);
            const float *d = src->part(src->user, vec, j); /* [hi - lo] */
            if (rc == 0 && hi > lo) rc = st_stream_append(st, d, hi - lo, e);
        }
    if (st) {
        if (rc == 0) rc = st_stream_close(st, e); /* fsyncs and renames */
        else st_stream_abort(st);
    }
    return rc;
}

/* Rank 0, after every part and the HF files are on disk: state.json, marker, rename, rotation. */
static int finish_save(const char *root, const char *tmp, const char *final, const CkptRun *r, int64_t n,
                       int64_t step, int64_t keep_last, UlError *e) {
    char p[PATH_CAP];
    char *sj = state_json(r, step, n);
    int rc = pfmt(p, sizeof p, e, "%s/" CKPT_STATE, tmp);
    if (rc == 0) rc = ul_write_file_atomic(p, sj, strlen(sj), e);
    free(sj);
    if (rc) return rc;
    crash_point("files");
    /* the marker: every file and its size, written last */
    cJSON *mk = cJSON_CreateObject();
    cJSON_AddStringToObject(mk, "format", "ulysses-checkpoint-complete");
    cJSON_AddItemToObject(mk, "version", jint(CKPT_FORMAT_VERSION));
    cJSON_AddItemToObject(mk, "step", jint(step));
    cJSON *files = cJSON_AddObjectToObject(mk, "files");
    const char *fixed[] = {"config.json", "model.safetensors", CKPT_STATE};
    for (int64_t i = 0; i < 3 + r->mesh->world && rc == 0; i++) {
        char nm[96];
        const char *f = i < 3 ? fixed[i] : part_name(nm, sizeof nm, i - 3, r->mesh->world);
        struct stat st;
        rc = pfmt(p, sizeof p, e, "%s/%s", tmp, f);
        if (rc == 0 && stat(p, &st) != 0) rc = ul_err(e, "%s: missing after writing it: %s", p, strerror(errno));
        if (rc == 0) cJSON_AddItemToObject(files, f, jint((int64_t)st.st_size));
    }
    char *txt = json_text(mk);
    cJSON_Delete(mk);
    if (rc == 0) {
        if (pfmt(p, sizeof p, e, "%s/state", tmp) == 0) fsync_dir(p);
        rc = pfmt(p, sizeof p, e, "%s/" CKPT_MARKER, tmp);
    }
    if (rc == 0) rc = ul_write_file_atomic(p, txt, strlen(txt), e);
    free(txt);
    if (rc) return rc;
    fsync_dir(tmp);
    crash_point("marker");
    /* publish: the final name appears only now, complete */
    char old[PATH_CAP] = "";
    if (exists(final)) {
        if (pfmt(old, sizeof old, e, "%s.del-%ld", final, (long)getpid())) return -1;
        if (rename(final, old) != 0)
            return ul_err(e, "%s: cannot move the existing checkpoint away: %s", final, strerror(errno));
    }
    if (rename(tmp, final) != 0) {
        rc = ul_err(e, "%s: cannot rename %s into place: %s", final, tmp, strerror(errno));
        if (old[0]) rename(old, final);
        return rc;
    }
    fsync_dir(root);
    if (old[0]) ul_remove_tree(old);
    if (keep_last > 0) rotate(root, keep_last, step);
    return 0;
}

/* ckpt_save's source: the replicated full buffers themselves. */
typedef struct {
    const CkptState *s;
    const Mesh *m;
} StateSource;

static const float *state_part(void *user, int vec, int64_t j) {
    const StateSource *ss = user;
    const float *v[3] = {ss->s->params, ss->s->mom1, ss->s->mom2};
    int64_t lo, hi;
    ckpt_part_chunk(ss->s->n, ss->m->world, ss->m->rank, CKPT_CHUNK, j, &lo, &hi);
    return v[vec] + lo;
}

static const float *state_weights(void *user, int64_t a, int64_t b) {
    (void)b;
    return ((const StateSource *)user)->s->params + a;
}

int ckpt_save(const char *root, const CkptRun *r, const CkptState *s, int64_t step, int64_t keep_last, UlError *e) {
    StateSource ss = {s, r->mesh};
    CkptSource src = {s->n, CKPT_CHUNK, CKPT_CHUNK, state_part, state_weights, &ss};
    return ckpt_save_stream(root, r, &src, step, keep_last, e);
}

int ckpt_save_stream(const char *root, const CkptRun *r, const CkptSource *src, int64_t step, int64_t keep_last,
                     UlError *e) {
    const Mesh *m = r->mesh;
    char final[PATH_CAP], tmp[PATH_CAP] = {0}, sub[PATH_CAP];
    ckpt_step_dir(final, sizeof final, root, step);
    int rc = 0;
    if (m->rank == 0) {
        rc = pfmt(tmp, sizeof tmp, e, "%s.tmp-%ld", final, (long)getpid());
        if (rc == 0 && exists(tmp)) ul_remove_tree(tmp);
        if (rc == 0) rc = pfmt(sub, sizeof sub, e, "%s/state", tmp);
        if (rc == 0 && (mkdir(tmp, 0755) != 0 || mkdir(sub, 0755) != 0))
            rc = ul_err(e, "%s: cannot create: %s", tmp, strerror(errno));
        if (rc && tmp[0]) ul_remove_tree(tmp);
    }
    if (ul_agree(rc, e)) return -1;
    MPI_Bcast(tmp, (int)sizeof tmp, MPI_CHAR, 0, MPI_COMM_WORLD);
    rc = write_part(tmp, src, m->rank, m->world, e);
    if (ul_agree(rc, e)) { /* every rank is past its write: the temporary can go */
        if (m->rank == 0) ul_remove_tree(tmp);
        return -1;
    }
    crash_point("parts");
    UlDtype dt = strcmp(r->o->save_dtype, "bf16") == 0 ? UL_DT_BF16 : UL_DT_F32;
    rc = stream_hf(tmp, r->c, dt, src, 1, e); /* every rank takes part; rank 0 writes */
    if (m->rank == 0) {
        if (rc == 0) rc = finish_save(root, tmp, final, r, src->n, step, keep_last, e);
        if (rc) ul_remove_tree(tmp);
    }
    return ul_agree(rc, e);
}

int ckpt_prepare(const char *root, int resuming, UlError *e) {
    int rc = 0;
    if (my_rank() == 0) {
        rc = ul_mkdir_p(root, "--ckpt-dir", e);
        DIR *d = rc == 0 ? opendir(root) : NULL;
        if (rc == 0 && !d) rc = ul_err(e, "--ckpt-dir %s: cannot read the directory: %s", root, strerror(errno));
        struct dirent *de;
        while (d && (de = readdir(d))) { /* leftovers of interrupted saves and rotations */
            if (strncmp(de->d_name, "step-", 5) != 0) continue;
            if (!strstr(de->d_name, ".tmp-") && !strstr(de->d_name, ".del-")) continue;
            char p[PATH_CAP];
            if (pfmt(p, sizeof p, e, "%s/%s", root, de->d_name) == 0) ul_remove_tree(p);
        }
        if (d) closedir(d);
        if (rc == 0 && !resuming) {
            StepEnt *v = NULL;
            int64_t n = list_steps(root, &v);
            for (int64_t i = n - 1; i >= 0 && rc == 0; i--)
                if (v[i].complete)
                    rc = ul_err(e,
                                "--ckpt-dir %s: already holds checkpoints of another run (%s/%s): continue it with "
                                "--resume %s, or choose another --ckpt-dir",
                                root, root, v[i].name, root);
            free(v);
        }
    }
    return ul_agree(rc, e);
}

/* ---------------------------------------------------------------- JSONL on resume */

int ckpt_jsonl_truncate(const char *path, int64_t step, CkptLineFn fn, void *user, UlError *e) {
    if (!exists(path)) return 0;
    char *text;
    size_t len;
    if (ul_read_file(path, (size_t)1 << 34, &text, &len, e)) return -1;
    char *out = ul_malloc(len + 1); /* [len + 1] the kept lines */
    size_t k = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char save = line[n];
        line[n] = 0;
        const char *sk = strstr(line, "\"step\":");
        if (sk && nl) { /* a line without its newline was cut by a crash: dropped */
            long long s = strtoll(sk + 7, NULL, 10);
            if (s <= step) {
                if (fn) fn(user, (int64_t)s, line);
                memcpy(out + k, line, n);
                out[k + n] = '\n';
                k += n + 1;
            }
        }
        line[n] = save;
        line += n + (nl ? 1 : 0);
    }
    int rc = ul_write_file_atomic(path, out, k, e);
    free(out);
    free(text);
    return rc;
}
