#include "run/eval.h"

#include "formats/outputs.h"
#include "memory/plan.h"

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
    int64_t gpos = c->offset + i, w = c->T / EVAL_BUCKETS > 0 ? c->T / EVAL_BUCKETS : 1;
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

static void skip_row(void *u, int64_t i, const float *lg, int64_t V) {
    (void)u;
    (void)i;
    (void)lg;
    (void)V;
}

void eval_run(Model *m, Mesh *mesh, const SampleSource *src, int64_t T, int64_t first_g, int64_t n,
              EvalResult *r) {
    memset(r, 0, sizeof *r);
    int32_t *dist = malloc((size_t)T * sizeof(int32_t)); /* [T] */
    Sample s = {0};
    /* ZeRO-3: the forward gathers the weights over the shard group (several DP indices), so
     * every rank runs the same number of forwards: the ones past n repeat a sample, unscored */
    int64_t end = m->shards && n > 0 ? (n + mesh->dp - 1) / mesh->dp * mesh->dp : n;
    for (int64_t j = mesh->r_dp; j < end; j += mesh->dp) {
        source_sample(src, first_g + j % n, &s, dist);
        int64_t t = s.T / mesh->sp, off = mesh->r_sp * t;
        LocalSeq ls = {.T = s.T, .tokens = s.tokens + off, .labels = s.labels + off, .pos = s.pos + off,
                       .cu_seqlens = s.cu_seqlens, .n_docs = s.n_docs, .offset = off};
        RowCtx c = {ls.labels, dist, off, T, r};
        model_eval(m, &ls, j < n ? row : skip_row, &c);
    }
    /* sum everything over the world: the struct is doubles up to T */
    double *all = (double *)r;
    int64_t nd = (int64_t)(offsetof(EvalResult, T) / sizeof(double));
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, all, nd, UL_F64);
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, r->dist_n, 6 * EVAL_BUCKETS, UL_F64);
    r->T = T;
    r->samples = n;
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

/* "name": [v0, ...] with null where n[i] == 0 (an empty bucket has no accuracy or loss;
 * null, not nan, keeps the line valid JSON); n == NULL: every value */
static void arr(FILE *f, const char *name, const double *v, const double *n, int len) {
    fprintf(f, ", \"%s\": [", name);
    for (int i = 0; i < len; i++) {
        if (n && n[i] <= 0) fprintf(f, "%snull", i ? ", " : "");
        else fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
    }
    fprintf(f, "]");
}

void eval_write_json(FILE *f, const EvalResult *r, int64_t step) {
    fprintf(f, "{");
    if (step >= 0) fprintf(f, "\"step\": %lld, ", (long long)step);
    if (r->n > 0) fprintf(f, "\"eval_loss\": %.6g, \"answer_acc\": %.6g", r->loss, r->acc);
    else fprintf(f, "\"eval_loss\": null, \"answer_acc\": null");
    fprintf(f, ", \"samples\": %lld, \"answers\": %.0f, \"bucket_tokens\": %lld", (long long)r->samples, r->n,
            (long long)(r->T / EVAL_BUCKETS));
    arr(f, "acc_by_distance", r->dist_acc, r->dist_n, EVAL_BUCKETS);
    arr(f, "loss_by_distance", r->dist_loss, r->dist_n, EVAL_BUCKETS);
    arr(f, "n_by_distance", r->dist_n, NULL, EVAL_BUCKETS);
    arr(f, "acc_by_position", r->pos_acc, r->pos_n, EVAL_BUCKETS);
    arr(f, "loss_by_position", r->pos_loss, r->pos_n, EVAL_BUCKETS);
    arr(f, "n_by_position", r->pos_n, NULL, EVAL_BUCKETS);
    fprintf(f, "}\n");
    fflush(f);
}

#include <mpi.h>

#include "formats/hf_model.h"
#include "run/plot.h"
#include "run/setup.h"

int eval_command(const EvalOptions *o, UlError *e) {
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ModelConfig c;
    int rc = o->model ? 0 : ul_err(e, "--model: required (a model directory with config.json and weights)");
    if (rc == 0) rc = ul_load_model_config(NULL, o->model, NULL, &c, e);
    int64_t sp = o->sp > 0 ? o->sp : world;
    if (rc == 0 && world % sp) rc = ul_err(e, "--sp %lld: does not divide the %d ranks of the job", (long long)sp, world);
    if (rc == 0) rc = ul_check_mesh(sp, 1, world / sp, o->seq_len, &c, world, e);
    if (rc == 0 && o->samples < 1) rc = ul_err(e, "--samples %lld: must be >= 1", (long long)o->samples);
    if (rc == 0 && !!o->task == !!o->data) rc = ul_err(e, "--task kv or --data GLOB: give exactly one");
    KvTask kv = {.T = o->seq_len, .seed = (uint64_t)o->seed};
    if (rc == 0 && o->task) {
        if (strcmp(o->task, "kv") != 0) rc = ul_err(e, "--task %s: unknown (known: kv)", o->task);
        else if (c.vocab_size < KV_VOCAB) rc = ul_err(e, "--task kv: the model's vocab_size is below %d", KV_VOCAB);
        else if (o->seq_len % sp) rc = ul_err(e, "--seq-len %lld: must be a multiple of --sp", (long long)o->seq_len);
        else rc = kv_validate(&kv, e);
    }
    int wrank;
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    if (rc == 0) { /* every output location, on every rank, before the work (formats/outputs.h) */
        UlOutput out[2] = {{"--out", o->out, UL_OUT_FILE, NULL}, {"--plot", o->plot, UL_OUT_FILE, NULL}};
        UlInput in[2] = {{"--model", o->model, UL_IN_MODEL_DIR}, {"--data", o->data, UL_IN_GLOB}};
        rc = ul_outputs_check(out, 2, in, 2, e);
    }
    if (rc == 0 && o->plot && wrank == 0) rc = plot_check("--plot", e); /* before the work, not after */
    if (ul_agree(rc, e)) return -1;
    DataLoader dl;
    memset(&dl, 0, sizeof dl);
    if (o->data) rc = ul_open_data(o->data, o->seq_len, 1, 0, 0, &c, &dl, e);
    if (ul_agree(rc, e)) return -1;

    const KernelOps *k = ul_select_backend(o->device, e);
    if (ul_agree(k ? 0 : -1, e)) {
        data_close(&dl);
        return -1;
    }
    Mesh mesh;
    ul_mesh_init_mpi(&mesh, (int)sp, 1, world / (int)sp);
    if (k->on_device) ul_mesh_init_nccl(&mesh, k->compute_stream());
    int64_t T_max = plan_padded_len(o->seq_len, sp);
    Model m;
    model_init(&m, &c, k, mesh.dev_sp, T_max, 0);
    m.no_exchange = o->no_exchange;
    rc = model_load_weights(&m, o->model, e);
    if (ul_agree(rc, e) == 0) {
        SampleSource src = {o->data ? &dl : NULL, o->task ? &kv : NULL, sp, 0};
        /* token shards: each sample at most once (samples past the data's end would wrap
         * around to its start); the kv task draws as many as asked */
        int64_t held = o->data ? data_epoch_samples(&dl) : o->samples;
        int64_t n = o->samples < held ? o->samples : held;
        EvalResult r;
        double t0 = ul_now();
        eval_run(&m, &mesh, &src, T_max, 0, n, &r);
        double dt = ul_now() - t0;
        if (rank == 0) {
            char more[160] = "";
            if (n < o->samples)
                snprintf(more, sizeof more, " (the data holds %lld; --samples %lld asked for more)", (long long)held,
                         (long long)o->samples);
            printf("eval %s: evaluated %lld samples%s, %.0f answers, loss %.4f, answer accuracy %.2f%% (%.1fs)\n",
                   o->model, (long long)n, more, r.n, r.loss, 100 * r.acc, dt);
            int64_t w = r.T / EVAL_BUCKETS;
            for (int tab = 0; tab < 2; tab++) { /* distance (kv task only), then position */
                const double *bn = tab ? r.pos_n : r.dist_n, *ba = tab ? r.pos_acc : r.dist_acc,
                             *bl = tab ? r.pos_loss : r.dist_loss;
                if (!tab && !o->task) continue;
                printf("  %-22s %10s %10s %10s\n", tab ? "position (bucket)" : "tokens back (bucket)", "answers",
                       "accuracy", "loss");
                for (int b = 0; b < EVAL_BUCKETS; b++) {
                    char range[48], acc[16] = "-", loss[16] = "-"; /* '-': an empty bucket */
                    snprintf(range, sizeof range, "%lld..%lld", (long long)(b * w), (long long)((b + 1) * w - 1));
                    if (bn[b] > 0) {
                        snprintf(acc, sizeof acc, "%.2f%%", 100 * ba[b]);
                        snprintf(loss, sizeof loss, "%.4f", bl[b]);
                    }
                    printf("  %-22s %10.0f %10s %10s\n", range, bn[b], acc, loss);
                }
            }
            if (o->out) {
                char tmp[4200];
                snprintf(tmp, sizeof tmp, "%s.tmp", o->out);
                FILE *f = fopen(tmp, "w");
                if (!f) rc = ul_err(e, "--out %s: cannot open for writing", o->out);
                else {
                    eval_write_json(f, &r, -1);
                    fclose(f);
                    if (rename(tmp, o->out) != 0) rc = ul_err(e, "--out %s: cannot rename into place", o->out);
                }
            }
            if (rc == 0 && o->plot) {
                /* accuracy and loss against distance (kv task) and position; empty buckets left out */
                double x[2][EVAL_BUCKETS], a[2][EVAL_BUCKETS], l[2][EVAL_BUCKETS];
                int cnt[2] = {0, 0};
                for (int b = 0; b < EVAL_BUCKETS; b++)
                    for (int k = 0; k < 2; k++) {
                        double bn = k ? r.pos_n[b] : r.dist_n[b];
                        if (bn <= 0) continue;
                        x[k][cnt[k]] = (b + 0.5) * (double)w;
                        a[k][cnt[k]] = k ? r.pos_acc[b] : r.dist_acc[b];
                        l[k][cnt[k]++] = k ? r.pos_loss[b] : r.dist_loss[b];
                    }
                PlotLine la[2], ll[2];
                PlotPanel panels[4];
                int np = 0;
                const char *xl[2] = {"tokens between answer and evidence", "position in the sequence"};
                const char *ta[2] = {"accuracy against distance", "accuracy against position"};
                const char *tl[2] = {"loss against distance", "loss against position"};
                for (int k = 0; k < 2; k++) {
                    if (cnt[k] == 0) continue; /* distance: kv task only */
                    la[k] = (PlotLine){"accuracy", x[k], a[k], cnt[k]};
                    ll[k] = (PlotLine){"loss", x[k], l[k], cnt[k]};
                    panels[np++] = (PlotPanel){ta[k], xl[k], "accuracy", 0, 0, 1, &la[k], 1};
                    panels[np++] = (PlotPanel){tl[k], xl[k], "loss", 0, 0, 0, &ll[k], 1};
                }
                if (np > 0) rc = plot_png(o->plot, panels, np, e);
                else rc = ul_err(e, "--plot %s: nothing to plot (no labelled tokens)", o->plot);
            }
        }
        rc = ul_agree(rc, e);
    } else {
        rc = -1;
    }
    model_free(&m);
    ul_mesh_free(&mesh);
    data_close(&dl);
    return rc;
}
