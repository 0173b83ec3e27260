/* Output locations checked before any work (outputs.h). */
#include "formats/outputs.h"

#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_PATH_CAP 4096

/* Lexical normal form: no repeated '/', no "." components, no trailing '/' ("" -> "."). */
static void norm_path(const char *in, char *out, size_t cap) {
    size_t n = 0;
    const char *p = in;
    int abs = *p == '/';
    if (abs && n + 1 < cap) out[n++] = '/';
    while (*p) {
        while (*p == '/') p++;
        const char *q = p;
        while (*q && *q != '/') q++;
        size_t len = (size_t)(q - p);
        if (len && !(len == 1 && *p == '.')) {
            if (n > (size_t)abs && n + 1 < cap) out[n++] = '/';
            for (size_t i = 0; i < len && n + 1 < cap; i++) out[n++] = p[i];
        }
        p = q;
    }
    if (n == 0) out[n++] = '.';
    out[n] = 0;
}

/* The parent of a normalized path ("a" -> ".", "/a" -> "/"). */
static void parent_of(const char *p, char *out, size_t cap) {
    snprintf(out, cap, "%s", p);
    char *s = strrchr(out, '/');
    if (!s) snprintf(out, cap, ".");
    else if (s == out) out[1] = 0;
    else *s = 0;
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* A writable, searchable directory? */
static int writable_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode) && access(p, W_OK | X_OK) == 0;
}

/* A directory that does not exist yet: its nearest existing ancestor must be a writable
 * directory (every component on the way is then created). */
static int check_creatable(const UlOutput *o, const char *norm, UlError *e) {
    char p[OUT_PATH_CAP];
    snprintf(p, sizeof p, "%s", norm);
    for (;;) {
        char up[OUT_PATH_CAP];
        parent_of(p, up, sizeof up);
        struct stat st;
        if (stat(up, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) return ul_err(e, "%s %s: %s is not a directory", o->flag, o->path, up);
            if (access(up, W_OK | X_OK) != 0)
                return ul_err(e, "%s %s: cannot create it: %s is not writable", o->flag, o->path, up);
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR) return ul_err(e, "%s %s: %s: %s", o->flag, o->path, up, strerror(errno));
        if (!strcmp(up, p)) return ul_err(e, "%s %s: no existing parent directory", o->flag, o->path);
        snprintf(p, sizeof p, "%s", up);
    }
}

/* Will the directory outputs create (or be) the directory d? */
static int made_by_outputs(const UlOutput *out, int n_out, const char *d) {
    size_t n = strlen(d);
    for (int i = 0; i < n_out; i++) {
        if (!out[i].path || out[i].kind != UL_OUT_DIR) continue;
        char p[OUT_PATH_CAP];
        norm_path(out[i].path, p, sizeof p);
        if (!strncmp(p, d, n) && (p[n] == 0 || p[n] == '/')) return 1;
    }
    return 0;
}

typedef struct {
    const char *flag;
    char *path; /* owned */
    struct stat st;
    int is_dir;
} InputEnt;

/* Appends path when it exists; returns whether it was added. */
static int add_input(InputEnt **v, int64_t *n, int64_t *cap, const char *flag, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (*n == *cap) *v = ul_realloc(*v, (size_t)(*cap *= 2) * sizeof **v);
    (*v)[(*n)++] = (InputEnt){flag, ul_strdup(path), st, S_ISDIR(st.st_mode)};
    return 1;
}

static void add_glob(InputEnt **v, int64_t *n, int64_t *cap, const char *flag, const char *pattern) {
    glob_t g;
    memset(&g, 0, sizeof g);
    if (glob(pattern, 0, NULL, &g) == 0)
        for (size_t j = 0; j < g.gl_pathc; j++) add_input(v, n, cap, flag, g.gl_pathv[j]);
    globfree(&g);
}

/* Every input that exists, stat'ed (globs and model directories expanded). */
static int64_t collect_inputs(const UlInput *in, int n_in, InputEnt **out) {
    int64_t n = 0, cap = 16;
    InputEnt *v = ul_malloc((size_t)cap * sizeof *v);
    for (int i = 0; i < n_in; i++) {
        if (!in[i].path) continue;
        if (in[i].kind == UL_IN_GLOB) {
            add_glob(&v, &n, &cap, in[i].flag, in[i].path);
            continue;
        }
        /* a model directory: its files too (the last entry is this input only when it was added) */
        if (add_input(&v, &n, &cap, in[i].flag, in[i].path) && in[i].kind == UL_IN_MODEL_DIR && v[n - 1].is_dir &&
            strlen(in[i].path) < OUT_PATH_CAP - 16) {
            char p[OUT_PATH_CAP + 16];
            snprintf(p, sizeof p, "%s/*.json", in[i].path);
            add_glob(&v, &n, &cap, in[i].flag, p);
            snprintf(p, sizeof p, "%s/*.safetensors", in[i].path);
            add_glob(&v, &n, &cap, in[i].flag, p);
        }
    }
    *out = v;
    return n;
}

static void free_inputs(InputEnt *v, int64_t n) {
    for (int64_t j = 0; j < n; j++) free(v[j].path);
    free(v);
}

static int check_one(const UlOutput *o, const UlOutput *out, int n_out, const InputEnt *inp, int64_t n_inp,
                     UlError *e) {
    char norm[OUT_PATH_CAP];
    if (!o->path[0]) return ul_err(e, "%s: empty path", o->flag);
    norm_path(o->path, norm, sizeof norm);
    struct stat st;
    int exists = stat(norm, &st) == 0;
    if (!exists && errno != ENOENT && errno != ENOTDIR) return ul_err(e, "%s %s: %s", o->flag, o->path, strerror(errno));
    if (o->kind == UL_OUT_DIR) {
        if (exists && !S_ISDIR(st.st_mode))
            return ul_err(e, "%s %s: exists and is not a directory", o->flag, o->path);
        if (exists && access(norm, W_OK | X_OK) != 0)
            return ul_err(e, "%s %s: the directory is not writable", o->flag, o->path);
        if (!exists && check_creatable(o, norm, e)) return -1;
        for (int64_t j = 0; exists && j < n_inp; j++) {
            if (inp[j].is_dir && same_file(&st, &inp[j].st))
                return ul_err(e, "%s %s: is the %s directory %s, an input; choose another directory", o->flag,
                              o->path, inp[j].flag, inp[j].path);
            for (const char *const *w = o->writes; w && *w; w++) {
                char f[2 * OUT_PATH_CAP];
                struct stat fs;
                snprintf(f, sizeof f, "%s/%s", norm, *w);
                if (!inp[j].is_dir && stat(f, &fs) == 0 && same_file(&fs, &inp[j].st))
                    return ul_err(e, "%s %s: writing %s there would overwrite the %s input %s; choose another directory",
                                  o->flag, o->path, *w, inp[j].flag, inp[j].path);
            }
        }
        return 0;
    }
    /* a file */
    if (exists && S_ISDIR(st.st_mode)) return ul_err(e, "%s %s: is a directory (a file name is needed)", o->flag, o->path);
    char up[OUT_PATH_CAP];
    parent_of(norm, up, sizeof up);
    if (!made_by_outputs(out, n_out, up)) {
        struct stat ps;
        if (stat(up, &ps) != 0) return ul_err(e, "%s %s: the directory %s does not exist", o->flag, o->path, up);
        if (!S_ISDIR(ps.st_mode)) return ul_err(e, "%s %s: %s is not a directory", o->flag, o->path, up);
        if (!writable_dir(up)) return ul_err(e, "%s %s: the directory %s is not writable", o->flag, o->path, up);
    }
    if (exists && access(norm, W_OK) != 0) return ul_err(e, "%s %s: the file is not writable", o->flag, o->path);
    for (int64_t j = 0; exists && j < n_inp; j++)
        if (same_file(&st, &inp[j].st))
            return ul_err(e, "%s %s: is the %s input %s; choose another file", o->flag, o->path, inp[j].flag,
                          inp[j].path);
    return 0;
}

int ul_outputs_check(const UlOutput *out, int n_out, const UlInput *in, int n_in, UlError *e) {
    InputEnt *inp = NULL;
    int64_t n_inp = collect_inputs(in, n_in, &inp);
    int rc = 0;
    for (int i = 0; i < n_out && rc == 0; i++) {
        if (!out[i].path) continue;
        rc = check_one(&out[i], out, n_out, inp, n_inp, e);
        /* two outputs that are one file (or one a directory output and the other a file in its place) */
        for (int j = 0; j < i && rc == 0; j++) {
            if (!out[j].path || (out[i].kind == UL_OUT_DIR && out[j].kind == UL_OUT_DIR)) continue;
            char a[OUT_PATH_CAP], b[OUT_PATH_CAP];
            norm_path(out[i].path, a, sizeof a);
            norm_path(out[j].path, b, sizeof b);
            struct stat sa, sb;
            int same = !strcmp(a, b) || (stat(a, &sa) == 0 && stat(b, &sb) == 0 && same_file(&sa, &sb));
            if (same)
                rc = ul_err(e, "%s %s and %s %s: the same path for two outputs", out[j].flag, out[j].path, out[i].flag,
                            out[i].path);
        }
    }
    free_inputs(inp, n_inp);
    return rc;
}

int ul_mkdir_p(const char *dir, const char *flag, UlError *e) {
    char p[OUT_PATH_CAP];
    if (strlen(dir) >= sizeof p) return ul_err(e, "%s %s: path too long", flag, dir);
    norm_path(dir, p, sizeof p);
    for (char *q = p + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return ul_err(e, "%s %s: cannot create %s: %s", flag, dir, p, strerror(errno));
            *q = '/';
        }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return ul_err(e, "%s %s: cannot create the directory: %s", flag, dir, strerror(errno));
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) return ul_err(e, "%s %s: exists and is not a directory", flag, dir);
    return 0;
}

int ul_outputs_make_dirs(const UlOutput *out, int n_out, UlError *e) {
    for (int i = 0; i < n_out; i++)
        if (out[i].path && out[i].kind == UL_OUT_DIR && ul_mkdir_p(out[i].path, out[i].flag, e)) return -1;
    return 0;
}
