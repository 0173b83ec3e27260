#include "train/eval.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const int32_t *labels; /* [t] local */
    const int32_t *dist;   /* [T] global */
    int64_t offset, T;
    EvalResult *r;
} RowCtx;

static void row(void *u, int64_t i, const float *lg, int64_t V) {
    RowCtx *c = u;
    int32_t y = c->labels[i];
    float mx = lg[0];
    int64_t arg = 0;
    for (int64_t v = 1; v < V; v++)
        if (lg[v] > mx) {
            mx = lg[v];
            arg = v;
        }
    double se = 0;
    for (int64_t v = 0; v < V; v++) se += exp((double)lg[v] - (double)mx);
    double ce = log(se) + (double)mx - (double)lg[y];
    double ok = arg == y;
    int64_t gpos = c->offset + i, w = c->T / EVAL_BUCKETS;
    int64_t bp = gpos / w, bd = c->dist[gpos] / w;
    if (bp >= EVAL_BUCKETS) bp = EVAL_BUCKETS - 1;
    if (bd >= EVAL_BUCKETS) bd = EVAL_BUCKETS - 1;
    EvalResult *r = c->r;
    r->n += 1;
    r->acc += ok;
    r->loss += ce;
    r->pos_n[bp] += 1;
    r->pos_acc[bp] += ok;
    r->pos_loss[bp] += ce;
    if (c->dist[gpos] >= 0) {
        r->dist_n[bd] += 1;
        r->dist_acc[bd] += ok;
        r->dist_loss[bd] += ce;
    }
}

void eval_kv(Model *m, Mesh *mesh, const KvTask *task, int64_t first_g, int64_t n, EvalResult *r) {
    memset(r, 0, sizeof *r);
    int64_t T = task->T, t = T / mesh->sp, off = mesh->r_sp * t;
    int32_t *dist = malloc((size_t)T * sizeof(int32_t)); /* [T] */
    Sample s = {0};
    for (int64_t j = mesh->r_dp; j < n; j += mesh->dp) {
        kv_sample(task, first_g + j, &s, dist);
        LocalSeq ls = {.T = s.T, .tokens = s.tokens + off, .labels = s.labels + off, .pos = s.pos + off,
                       .cu_seqlens = s.cu_seqlens, .n_docs = s.n_docs, .offset = off};
        RowCtx c = {ls.labels, dist, off, T, r};
        model_eval(m, &ls, row, &c);
    }
    /* sum everything over the world: the struct is doubles up to T */
    double *all = (double *)r;
    int64_t nd = (int64_t)(offsetof(EvalResult, T) / sizeof(double));
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, all, nd, UL_F64);
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, r->dist_n, 6 * EVAL_BUCKETS, UL_F64);
    r->T = T;
    if (r->n > 0) {
        r->loss /= r->n;
        r->acc /= r->n;
    }
    for (int b = 0; b < EVAL_BUCKETS; b++) {
        if (r->dist_n[b] > 0) {
            r->dist_acc[b] /= r->dist_n[b];
            r->dist_loss[b] /= r->dist_n[b];
        }
        if (r->pos_n[b] > 0) {
            r->pos_acc[b] /= r->pos_n[b];
            r->pos_loss[b] /= r->pos_n[b];
        }
    }
    sample_free(&s);
    free(dist);
}

static void arr(FILE *f, const char *name, const double *v, int n) {
    fprintf(f, ", \"%s\": [", name);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
    fprintf(f, "]");
}

void eval_write_json(FILE *f, const EvalResult *r, int64_t step) {
    fprintf(f, "{");
    if (step >= 0) fprintf(f, "\"step\": %lld, ", (long long)step);
    fprintf(f, "\"eval_loss\": %.6g, \"answer_acc\": %.6g, \"answers\": %.0f, \"bucket_tokens\": %lld", r->loss,
            r->acc, r->n, (long long)(r->T / EVAL_BUCKETS));
    arr(f, "acc_by_distance", r->dist_acc, EVAL_BUCKETS);
    arr(f, "loss_by_distance", r->dist_loss, EVAL_BUCKETS);
    arr(f, "n_by_distance", r->dist_n, EVAL_BUCKETS);
    arr(f, "acc_by_position", r->pos_acc, EVAL_BUCKETS);
    arr(f, "loss_by_position", r->pos_loss, EVAL_BUCKETS);
    arr(f, "n_by_position", r->pos_n, EVAL_BUCKETS);
    fprintf(f, "}\n");
    fflush(f);
}
