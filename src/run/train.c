#include "run/train.h"

#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/term.h"
#include "formats/hf_model.h"
#include "formats/outputs.h"
#include "run/checkpoint.h"
#include "run/setup.h"
#include "data/data.h"
#include "run/eval.h"
#include "model/model.h"
#include "model/phase.h"
#include "run/plot.h"
#include "data/source.h"
#include "data/task_kv.h"
#include "optim/zero.h"

/* Checks that need only flags and the config: identical outcome on every rank. */
static int validate(TrainOptions *o, const ModelConfig *c, int world, UlError *e) {
    if (ul_resolve_mesh(o, world, 0, c, e) || ul_check_memory_flags(o, e)) return -1;
    int64_t dp = o->dp_replicate * o->dp_shard;
    if (o->batch < 1 || o->grad_accum < 1 || o->batch % (dp * o->grad_accum) != 0)
        return ul_err(e, "--batch %lld: must be a positive multiple of dp (%lld) x --grad-accum (%lld)%s",
                      (long long)o->batch, (long long)dp, (long long)o->grad_accum,
                      o->resume ? " (on --resume the batch must stay the checkpoint's: choose a mesh whose dp divides it)"
                                : "");
    if (o->steps < 0) return ul_err(e, "--steps %lld: must be >= 0", (long long)o->steps);
    if (o->eval_data && o->task) return ul_err(e, "--eval-data: for --data runs (the kv task draws its own held-out samples)");
    if (o->eval_data && o->eval_every < 1) return ul_err(e, "--eval-data: needs --eval-every N (evaluate every N steps)");
    if (o->eval_samples < 0) return ul_err(e, "--eval-samples %lld: must be >= 1", (long long)o->eval_samples);
    if (o->no_exchange && o->checkpoint == 2)
        return ul_err(e, "--debug-no-exchange: not supported with --checkpoint 2 (use 0 or 1)");
    if (!(o->lr >= 0)) return ul_err(e, "--lr: must be >= 0");
    if (strcmp(o->save_dtype, "f32") != 0 && strcmp(o->save_dtype, "bf16") != 0)
        return ul_err(e, "--save-dtype %s: expected f32 or bf16", o->save_dtype);
    if (o->save_every < 0) return ul_err(e, "--save-every %lld: must be >= 0", (long long)o->save_every);
    if (o->offload_chunk < 0)
        return ul_err(e, "--debug-offload-chunk %lld: must be >= 0 (0: the default)", (long long)o->offload_chunk);
    if (o->keep_last < 0) return ul_err(e, "--keep-last %lld: must be >= 0", (long long)o->keep_last);
    if (o->stop_at < 0) return ul_err(e, "--stop-at %lld: must be >= 0", (long long)o->stop_at);
    if (o->save_every > 0 && !o->ckpt_dir && !o->out)
        return ul_err(e, "--save-every: needs --ckpt-dir DIR (or --out DIR) for the checkpoints");
    return 0;
}

#define F32B(n) ((size_t)(n) * sizeof(float))

/* --resume: the checkpoint's state becomes the optimizer's (and the model's weights).
 * Stage 0: the full vectors on every rank (in place on the CPU backend; each rank reads
 * its share of the parts, then broadcasts). Stages >= 1: each rank reads only its slice
 * ([per] x 3 host) from the parts that overlap it. Agreed. */
static int resume_state(const char *path, const CkptRun *cr, ZeroOpt *z, Model *m, Mesh *mesh, int on_gpu,
                        int64_t *first, UlError *e) {
    const int64_t N = m->n_params;
    int rc;
    if (z->stage == 0) {
        float *b[3] = {m->params, z->m1, z->m2};
        for (int i = 0; i < 3 && on_gpu; i++) b[i] = ul_malloc(F32B(N)); /* [N] each */
        CkptState s = {b[0], b[1], b[2], N};
        rc = ckpt_load(path, cr, &s, first, e);
        if (rc == 0) zero_start(z, m, b[0], b[1], b[2]);
        for (int i = 0; i < 3 && on_gpu; i++) free(b[i]);
        return rc;
    }
    /* the rank's slices [per] each: read straight into the optimizer's host memory with
     * --offload-optimizer (no copy), else into host buffers that are then uploaded */
    float *b[3] = {z->master, z->m1, z->m2};
    for (int i = 0; i < 3; i++) {
        if (z->offload)
            memset(b[i], 0, F32B(z->per)); /* zero padding */
        else
            b[i] = ul_calloc((size_t)z->per, sizeof(float)); /* [per] each, zero padding */
    }
    ZeroPiece *pc = ul_malloc((size_t)z->nu * sizeof *pc);                           /* [nu] */
    int64_t np = zero_slice_pieces(z, z->q, 0, N, pc);
    CkptRange *rg = ul_malloc((size_t)(np > 0 ? np : 1) * sizeof *rg); /* [np] */
    for (int64_t j = 0; j < np; j++)
        rg[j] = (CkptRange){pc[j].begin, pc[j].end, b[0] + pc[j].so, b[1] + pc[j].so, b[2] + pc[j].so};
    rc = ckpt_load_ranges(path, cr, N, rg, np, first, e);
    if (rc == 0) zero_start_slice(z, m, mesh, b[0], b[1], b[2]);
    free(rg);
    free(pc);
    for (int i = 0; i < 3 && !z->offload; i++) free(b[i]);
    return rc;
}

/* zero_start_fill's source for --init: the flat range [a, b) of the safetensors weights */
static void read_fill(void *ctx, int64_t a, int64_t b, float *out) { ul_weights_read_range(ctx, a, b, out); }

/* The chunks of a save or of --out (run/checkpoint.h CkptSource), from where the state
 * lives: in place where a chunk is host memory in one piece (the CPU backend without ZeRO;
 * with --offload-optimizer, a chunk inside one piece of the rank's own slice), else gathered
 * into one bounded host buffer per use by zero_host_range (stage 0: downloaded; stages >= 1:
 * the chunks of the whole shard group at once, point to point). Counts the host bytes. */
typedef struct {
    ZeroOpt *z;
    Model *m;
    Mesh *mesh;
    int on_gpu;
    int64_t S;               /* ranks that gather together: the shard group (stages >= 1), else 1 */
    int64_t part_chunk, chunk;
    int64_t part_len;        /* this rank's part, b - a */
    float *pbuf;             /* [min(part_chunk, part_len)] host, at the first chunk that needs it */
    float *wbuf;             /* [min(chunk, N)] host, likewise (world rank 0) */
    int64_t *want;           /* [2 S] the ranges each shard rank asks for */
    int64_t bytes[3];        /* host bytes: the part buffer, the largest staging, the weights buffer */
} SaveSrc;

/* Whether flat [a, b) of shard rank p's state is host memory in one piece (for stages >= 1
 * every rank of the group answers alike for every p); *so: its offset in the rank's vectors
 * (stage 0: the full vectors; stages >= 1: the slice). */
static int host_piece(const SaveSrc *s, int64_t p, int64_t a, int64_t b, int64_t *so) {
    *so = a;
    if (s->z->stage == 0) return !s->on_gpu;
    if (!s->z->offload) return 0;
    if (b <= a) return 1;
    ZeroPiece *pc = ul_malloc((size_t)s->z->nu * sizeof *pc); /* [nu] */
    int one = zero_slice_pieces(s->z, p, a, b, pc) == 1 && pc[0].begin == a && pc[0].end == b;
    if (one) *so = pc[0].so;
    free(pc);
    return one;
}

/* Vector vec's host memory on this rank (valid where host_piece says so). */
static const float *host_vec(const SaveSrc *s, int vec) {
    const ZeroOpt *z = s->z;
    const float *v[3] = {z->stage ? z->master : s->m->params, z->m1, z->m2};
    return v[vec];
}

/* Moves what s->want asks for (vector vec) into *buf (allocated with n elements at its first
 * use, counted in bytes[slot]) where this rank asks; collective over the shard group. */
static float *save_gather(SaveSrc *s, int vec, float **buf, int64_t n, int slot, int asks) {
    if (asks && !*buf) {
        *buf = ul_malloc(F32B(n)); /* [n] */
        s->bytes[slot] = (int64_t)F32B(n);
    }
    float *out[3] = {NULL, NULL, NULL};
    out[vec] = asks ? *buf : NULL;
    int64_t stg = zero_host_range(s->z, s->m, s->mesh, s->want, 1 << vec, out);
    if (stg > s->bytes[1]) s->bytes[1] = stg;
    return out[vec];
}

static const float *save_part(void *user, int vec, int64_t j) {
    SaveSrc *s = user;
    const Mesh *mesh = s->mesh;
    const int64_t N = s->m->n_params, mine = s->z->stage ? s->z->q : 0;
    const float *at_hand = NULL;
    int here_mine = 0;
    for (int64_t p = 0; p < s->S; p++) { /* the group's chunks j: each rank's own, or nothing where it is at hand */
        int64_t r = s->z->stage ? (int64_t)mesh->r_rep * s->S + p : mesh->rank, lo, hi, so;
        ckpt_part_chunk(N, mesh->world, r, s->part_chunk, j, &lo, &hi);
        int here = host_piece(s, p, lo, hi, &so);
        s->want[2 * p] = here ? 0 : lo;
        s->want[2 * p + 1] = here ? 0 : hi;
        if (p == mine && here) {
            here_mine = 1;
            at_hand = hi > lo ? host_vec(s, vec) + so : NULL;
        }
    }
    if (here_mine && s->z->stage == 0) return at_hand;
    int64_t n = s->part_len < s->part_chunk ? s->part_len : s->part_chunk;
    int asks = !here_mine && s->want[2 * mine + 1] > s->want[2 * mine];
    const float *got = save_gather(s, vec, &s->pbuf, n, 0, asks); /* where at hand, the others may still gather */
    return here_mine ? at_hand : got;
}

static const float *save_weights(void *user, int64_t a, int64_t b) {
    SaveSrc *s = user;
    const int64_t N = s->m->n_params;
    if (s->z->stage == 0 ? s->mesh->rank != 0 : s->mesh->r_rep != 0) return NULL; /* replica 0 gathers for rank 0 */
    for (int64_t p = 0; p < 2 * s->S; p++) s->want[p] = 0;
    int64_t so;
    int here = host_piece(s, 0, a, b, &so); /* shard rank 0 is world rank 0 */
    if (!here) {
        s->want[0] = a;
        s->want[1] = b;
    }
    if (here && s->z->stage == 0) return host_vec(s, 0) + so;
    const float *got = save_gather(s, 0, &s->wbuf, N < s->chunk ? N : s->chunk, 2, !here && s->mesh->rank == 0);
    return here && s->mesh->rank == 0 ? host_vec(s, 0) + so : got;
}

/* Chunk sizes: CKPT_CHUNK, or ULYSSES_DEBUG_SAVE_CHUNK (the tests' small chunks; the same on
 * every rank, as mpirun passes it to all). */
static void save_src_init(SaveSrc *s, ZeroOpt *z, Model *m, Mesh *mesh, int on_gpu) {
    const char *dbg = getenv("ULYSSES_DEBUG_SAVE_CHUNK");
    int64_t c = dbg && atoll(dbg) > 0 ? (int64_t)atoll(dbg) : CKPT_CHUNK;
    *s = (SaveSrc){.z = z, .m = m, .mesh = mesh, .on_gpu = on_gpu, .S = z->stage ? z->S : 1, .chunk = c};
    s->part_chunk = c / s->S > 0 ? c / s->S : 1; /* one exchange moves at most c elements */
    int64_t a, b;
    ckpt_part_range(m->n_params, mesh->world, mesh->rank, &a, &b);
    s->part_len = b - a;
    s->want = ul_calloc((size_t)(2 * s->S), sizeof(int64_t)); /* [2 S] */
}

static void save_src_free(SaveSrc *s) {
    free(s->pbuf);
    free(s->wbuf);
    free(s->want);
}

/* A checkpoint after `step` steps, streamed (checkpoint.h ckpt_save_stream) from SaveSrc's
 * chunks: no rank holds more than its chunk buffers and the staging of one exchange. Unless
 * quiet, rank 0 prints every rank's host bytes (tests/zero_test.sh asserts them). Agreed. */
static int save_state(const char *root, const CkptRun *cr, ZeroOpt *z, Model *m, Mesh *mesh, int on_gpu, int64_t step,
                      UlError *e) {
    const TrainOptions *o = cr->o;
    SaveSrc s;
    save_src_init(&s, z, m, mesh, on_gpu);
    CkptSource src = {m->n_params, s.part_chunk, s.chunk, save_part, save_weights, &s};
    int rc = ckpt_save_stream(root, cr, &src, step, o->keep_last, e);
    if (!o->quiet) {
        CommGroup *g = &mesh->world_g;
        int64_t *all = ul_malloc((size_t)(3 * mesh->world) * sizeof(int64_t)); /* [world, 3] */
        g->ops->allgather(g, s.bytes, all, 3, UL_I64);
        if (mesh->rank == 0) {
            fprintf(stderr, "ulysses: checkpoint host bytes (part+staging+weights):");
            for (int r = 0; r < mesh->world; r++)
                fprintf(stderr, " rank%d=%lld+%lld+%lld", r, (long long)all[3 * r], (long long)all[3 * r + 1],
                        (long long)all[3 * r + 2]);
            fprintf(stderr, "\n");
        }
        free(all);
    }
    save_src_free(&s);
    return rc;
}

/* The run's outputs (formats/outputs.h): checked on every rank before any work, created
 * by rank 0 once every check has passed. */
static const char *const HF_FILES[] = {"config.json", "model.safetensors", NULL};

static int train_outputs(const TrainOptions *o, UlOutput out[5]) {
    int n = 0;
    out[n++] = (UlOutput){"--out", o->out, UL_OUT_DIR, HF_FILES};
    if (o->save_every > 0) out[n++] = (UlOutput){"--ckpt-dir", o->ckpt_dir, UL_OUT_DIR, NULL};
    out[n++] = (UlOutput){"--metrics", o->metrics, UL_OUT_FILE, NULL};
    out[n++] = (UlOutput){"--plot", o->plot, UL_OUT_FILE, NULL};
    if (o->task || o->eval_data) out[n++] = (UlOutput){"--eval-out", o->eval_out, UL_OUT_FILE, NULL};
    return n;
}

static int check_outputs(const TrainOptions *o, const char *resume, UlError *e) {
    UlOutput out[5];
    int n = train_outputs(o, out);
    UlInput in[5] = {{"--model", o->model, UL_IN_MODEL_DIR}, {"--init", o->init, UL_IN_MODEL_DIR},
                     {"--data", o->data, UL_IN_GLOB}, {"--resume", resume[0] ? resume : NULL, UL_IN_MODEL_DIR},
                     {"--eval-data", o->eval_data, UL_IN_GLOB}};
    return ul_outputs_check(out, n, in, 5, e);
}

/* SIGTERM / SIGINT (preemption, Ctrl-C): the handler only records the signal; the ranks
 * agree at the next step boundary, write a checkpoint where one is configured and exit
 * with 128 + the signal's number (docs/checkpoints.md, "Preemption"). A second signal
 * ends the process at once. The one global of the run layer: a handler has no context. */
static volatile sig_atomic_t g_stop_signal = 0;

static void on_stop_signal(int sig) {
    if (g_stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop_signal = sig;
}

static void install_stop_handlers(void) {
    g_stop_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void remove_stop_handlers(void) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
}

/* The signal every rank agrees on at a step boundary: 0, SIGTERM or SIGINT (TERM wins). */
static int agreed_stop_signal(Mesh *mesh) {
    double v[2] = {g_stop_signal == SIGTERM, g_stop_signal == SIGINT};
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, v, 2, UL_F64);
    return v[0] > 0 ? SIGTERM : v[1] > 0 ? SIGINT : 0;
}

/* A JSON number, or null where it is not finite (JSON has no nan or inf). */
static const char *jnum(char *buf, size_t cap, const char *fmt, double v) {
    if (!isfinite(v)) return "null";
    snprintf(buf, cap, fmt, v);
    return buf;
}

/* Warmup (linear, from lr/W at the first step) then cosine down to lr * min_lr_ratio. */
static double lr_at(const TrainOptions *o, int64_t step) {
    if (o->warmup > 0 && step < o->warmup) return o->lr * (double)(step + 1) / o->warmup;
    double span = (double)o->steps - o->warmup;
    double p = span > 1 ? ((double)step - o->warmup) / (span - 1) : 1.0;
    if (p > 1) p = 1;
    double lo = o->lr * o->min_lr_ratio;
    return lo + (o->lr - lo) * 0.5 * (1.0 + cos(M_PI * p));
}

/* A live line on a terminal (bar, step, loss, answer accuracy, tok/s, ETA); plain lines
 * otherwise (--progress chooses). */
static void progress(const TrainOptions *o, int tty, int64_t first, int64_t end, int64_t step, double loss, double gn,
                     double lr, double tok_s, double elapsed, double acc, double eval_loss) {
    if (o->quiet) return;
    int64_t done = step + 1; /* first: the step this run started at (resume) */
    double eta = done > first ? elapsed / (double)(done - first) * (double)(end - done) : 0;
    char accs[32] = "";
    if (acc >= 0) snprintf(accs, sizeof accs, "  acc %.1f%%", 100 * acc);
    else if (eval_loss >= 0) snprintf(accs, sizeof accs, "  eval_loss %.4f", eval_loss);
    if (tty) {
        char bar[21];
        int fill = (int)(20 * done / (o->steps > 0 ? o->steps : 1));
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
        bar[20] = 0;
        fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f%s  gnorm %.2f  lr %.1e  %.0f tok/s  ETA %.0fs   ", bar,
                (long long)done, (long long)o->steps, loss, accs, gn, lr, tok_s, eta);
        if (done == end) fprintf(stderr, "\n");
    } else if (done % o->log_every == 0 || done == end) {
        fprintf(stderr, "step %lld/%lld loss %.4f%s gnorm %.3f lr %.2e tok/s %.0f eta %.0fs\n", (long long)done,
                (long long)o->steps, loss, accs, gn, lr, tok_s, eta);
    }
    fflush(stderr);
}

/* Loss and answer-accuracy history (for the plot), refilled from the metrics on resume. */
typedef struct {
    double *step, *loss, *estep, *acc, *eloss; /* eloss: --eval-data's loss at estep */
    int64_t n_eval, n_known, cap;
} TrainHist;

static void hist_line(void *user, int64_t step, const char *line) {
    TrainHist *h = user;
    const char *l = strstr(line, "\"loss\": "), *a = strstr(line, "\"answer_acc\": ");
    const char *el = strstr(line, "\"eval_loss\": ");
    if (step < 1 || step > h->cap || !l) return;
    h->step[step - 1] = (double)step;
    h->loss[step - 1] = strtod(l + 8, NULL);
    h->n_known++;
    if ((a || el) && h->n_eval < h->cap) {
        h->estep[h->n_eval] = (double)step;
        h->acc[h->n_eval] = a ? strtod(a + 14, NULL) : -1;
        h->eloss[h->n_eval++] = el ? strtod(el + 13, NULL) : -1;
    }
}

/* ------------------------------------------------------------------ the run, in phases
 *
 * train_run reads as its phases. Each phase creates what it owns in the TrainRun and says
 * so (a pointer set, a have_ flag); run_teardown releases exactly what was created. Every
 * phase that can fail on user input agrees on the outcome across ranks (ul_agree). */

typedef struct {
    TrainOptions opt;       /* the options, mesh resolved (dp_shard) */
    const TrainOptions *o;  /* &opt */
    int world, rank;
    char resume[4096];      /* the checkpoint resumed from ("" when none) */
    ModelConfig c;
    /* data */
    DataLoader dl;          /* token shards (not with --task) */
    DataLoader dl_eval;     /* --eval-data's held-out shards */
    int64_t eval_n;         /* samples per evaluation */
    KvTask kv, kv_eval;     /* the kv task's training and held-out samples */
    SampleSource source, eval_source;
    /* backend, plan, mesh, model, optimizer */
    const KernelOps *k;
    int on_gpu;
    Plan plan;
    UlMemStats mem0, mem1;  /* the backend's bytes before and after model + optimizer */
    Mesh mesh;
    Model m;
    ZeroOpt zo;
    int have_mesh, have_model, have_zo;
    int64_t init_staging;   /* host bytes of the initial weights' staging (logged) */
    /* progress of the run */
    CkptRun crun;
    const char *ckpt_root;
    int64_t first, end;     /* the steps this run does: [first, end) */
    int finished;           /* resumed at the end of the run: nothing to do */
    FILE *mf, *ef;          /* --metrics, --eval-out (rank 0) */
    TrainHist hist;         /* loss and accuracy history for the plot */
    int64_t plot_first;
    Sample *smp;            /* [per_rank] this DP index's samples of one step */
    int64_t per_rank, per_micro;
    PhaseTimer t_opt;       /* --profile: the optimizer step's device time */
    int have_timer;
    int tty;                /* the live bar, or plain lines */
    double t_start, train_time, last_acc, last_eval_loss;
    int stopped;            /* the signal the ranks agreed to stop on */
} TrainRun;

/* Everything a user can get wrong in the flags, the config, the checkpoint and the output
 * locations, agreed before any work. */
static int run_resolve(TrainRun *r, const TrainOptions *o_in, UlError *e) {
    r->opt = *o_in;
    r->o = &r->opt;
    TrainOptions *o = &r->opt;
    MPI_Comm_size(MPI_COMM_WORLD, &r->world);
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    if (ul_agree(ul_derive_dp_shard(o, r->world, 0, e), e))
        return -1; /* the mesh first: a world it does not divide is refused before any file is read */
    if (o->resume && ckpt_resolve(o->resume, r->resume, sizeof r->resume, e)) return -1;
    int rc = r->resume[0] && !o->model && !o->init && !o->config /* the checkpoint's own config.json */
                 ? ul_load_model_config(NULL, r->resume, NULL, &r->c, e)
                 : ul_load_model_config(o->model, o->init, o->config, &r->c, e);
    if (rc == 0) rc = ckpt_apply_rope_flags(&r->c, o->rope_theta, o->rope_scaling, o->max_position_embeddings, e);
    if (rc == 0 && r->resume[0]) rc = ckpt_check_config(r->resume, &r->c, e);
    if (rc == 0) rc = validate(o, &r->c, r->world, e);
    if (rc == 0) rc = check_outputs(o, r->resume, e); /* every rank: each writes into some of them */
    /* the plot is drawn after training: find out now whether it can be */
    if (rc == 0 && r->rank == 0 && o->plot) rc = plot_check("--plot", e);
    return ul_agree(rc, e);
}

/* The samples: the kv task, or the token shards checked against the vocabulary. */
static int run_data(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    int rc;
    r->kv = (KvTask){.T = o->seq_len, .seed = (uint64_t)o->seed};
    if (o->task) {
        if (strcmp(o->task, "kv") != 0) rc = ul_err(e, "--task %s: unknown (known: kv)", o->task);
        else if (o->data) rc = ul_err(e, "--task and --data: give one of them");
        else if (r->c.vocab_size < KV_VOCAB) rc = ul_err(e, "--task kv: needs vocab_size >= %d", KV_VOCAB);
        else if (o->seq_len % o->sp) rc = ul_err(e, "--task kv: --seq-len must be a multiple of --sp");
        else rc = kv_validate(&r->kv, e);
    } else {
        rc = o->data ? 0 : ul_err(e, "--data: required (a glob of token shards; see `ulysses tokenize`)");
        if (ul_agree(rc, e)) return -1;
        rc = ul_open_data(o->data, o->seq_len, !o->doc_per_sample, !o->no_shuffle, (uint64_t)o->seed, &r->c, &r->dl, e);
    }
    if (ul_agree(rc, e)) return -1;
    r->kv_eval = r->kv;
    r->kv_eval.seed = r->kv.seed ^ 0x5eed5eed5eedULL; /* held-out samples */
    r->source = (SampleSource){o->task ? NULL : &r->dl, o->task ? &r->kv : NULL, o->sp, o->fixed_len};
    r->eval_source = (SampleSource){NULL, &r->kv_eval, o->sp, 0};
    r->eval_n = o->eval_samples > 0 ? o->eval_samples : 16;
    if (o->eval_data) { /* packed as the training data, in file order; every sample once per evaluation */
        rc = ul_open_data(o->eval_data, o->seq_len, !o->doc_per_sample, 0, 0, &r->c, &r->dl_eval, e);
        int64_t all = rc == 0 ? data_epoch_samples(&r->dl_eval) : 0;
        if (rc == 0 && all < 1) rc = ul_err(e, "--eval-data %s: no samples", o->eval_data);
        if (ul_agree(rc, e)) return -1;
        r->eval_n = o->eval_samples > 0 && o->eval_samples < all ? o->eval_samples : all;
        r->eval_source = (SampleSource){&r->dl_eval, NULL, o->sp, o->fixed_len};
    }
    return 0;
}

/* The backend, the memory plan (refusing what will not fit, before anything is
 * allocated), the mesh, the model's buffers and the optimizer state. */
static int run_build(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    /* CUDA (bf16, NCCL) when asked for, or by default when built with it and a GPU is
     * visible; else the CPU reference */
    r->k = ul_select_backend(o->device, e);
    if (ul_agree(r->k ? 0 : -1, e)) return -1;
    r->on_gpu = r->k->on_device;
    if (ul_agree(ul_plan_check(o, &r->c, r->k, r->on_gpu, &r->plan, e), e)) return -1;
    r->k->mem_stats(&r->mem0);
    ul_mesh_init_mpi(&r->mesh, (int)o->sp, (int)o->dp_replicate, (int)o->dp_shard);
    if (r->on_gpu) ul_mesh_init_nccl(&r->mesh, r->k->compute_stream());
    r->have_mesh = 1;
    int64_t T_max = plan_padded_len(o->seq_len, o->sp);
    int sharded = o->zero == 3 ? 1 : r->plan.grad_units > 0 ? 2 : 0; /* 2: ZeRO 1, 2 with the gradient offload */
    ModelMemOpts mo = {o->checkpoint, r->plan.mlp_tile, r->plan.offload_items, sharded, r->plan.ckpt_every,
                       &r->plan}; /* the plan's tile, offload and segments (auto resolved), its table */
    model_init_opts(&r->m, &r->c, r->k, r->mesh.dev_sp, T_max, &mo);
    r->m.no_exchange = o->no_exchange;
    r->have_model = 1;
    /* the optimizer state, sharded with --zero (optim/zero.h); pads the model: before the weights */
    zero_init(&r->zo, (int)o->zero, o->offload_optimizer, o->offload_chunk, r->plan.grad_units, r->plan.param_host,
              &r->m, &r->mesh);
    r->have_zo = 1;
    r->k->mem_stats(&r->mem1);
    return 0;
}

/* The initial state: the checkpoint's, --init's or random weights. With ZeRO >= 1 each
 * rank draws (random) or reads (--init, ranges of the safetensors) only its slice; ZeRO 0
 * stages all [N] on the host (memory/plan.c, "initial weights host staging"). */
static int run_weights(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    const int init_slices = !r->resume[0] && r->zo.stage >= 1;
    r->crun = (CkptRun){o, &r->c, o->task ? NULL : &r->dl, &r->mesh};
    int rc = 0;
    if (r->resume[0])
        return resume_state(r->resume, &r->crun, &r->zo, &r->m, &r->mesh, r->on_gpu, &r->first, e); /* agreed */
    if (init_slices && o->init) { /* every tensor checked at the open, then each rank reads its slice */
        UlWeightsReader *wread = ul_weights_open(o->init, &r->c, e);
        if (ul_agree(wread ? 0 : -1, e)) return -1;
        r->init_staging = zero_start_fill(&r->zo, &r->m, &r->mesh, read_fill, wread);
        rc = ul_weights_check_finite(wread, e);
        ul_weights_close(wread);
        return ul_agree(rc, e);
    }
    if (init_slices) {
        r->init_staging = zero_start_random(&r->zo, &r->m, &r->mesh, (uint64_t)o->seed);
        return 0;
    }
    r->init_staging = (int64_t)F32B(r->m.n_params); /* ZeRO 0: the model's own [N] from host memory */
    if (o->init)
        rc = model_load_weights(&r->m, o->init, e);
    else
        model_init_random(&r->m, (uint64_t)o->seed);
    if (ul_agree(rc, e)) return -1;
    zero_start(&r->zo, &r->m, NULL, NULL, NULL); /* the optimizer takes its slice of the fresh weights */
    return 0;
}

/* The steps of this run, the checkpoint directory's last check, then (every check has
 * passed) the output directories, the metrics and the samples' buffers. */
static int run_outputs(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    r->end = o->stop_at > 0 && o->stop_at < o->steps ? o->stop_at : o->steps;
    if (r->first > r->end)
        return ul_agree(ul_err(e, "--stop-at %lld: the checkpoint %s is already at step %lld", (long long)o->stop_at,
                               r->resume, (long long)r->first),
                        e);
    if (r->resume[0] && r->first >= o->steps) { /* a finished run: nothing is trained or rewritten */
        if (r->rank == 0)
            fprintf(stderr,
                    "ulysses: nothing to do: the checkpoint %s is at step %lld, the end of the run (--steps %lld); "
                    "pass a larger --steps to continue training. No file was written.\n",
                    r->resume, (long long)r->first, (long long)o->steps);
        r->finished = 1;
        return 0;
    }
    r->ckpt_root = o->ckpt_dir ? o->ckpt_dir : o->out;
    int rc = 0;
    if (o->save_every > 0) rc = ckpt_prepare(r->ckpt_root, r->resume[0] != 0, e); /* agreed */
    if (rc == 0 && r->rank == 0) {
        UlOutput outs[5];
        rc = ul_outputs_make_dirs(outs, train_outputs(o, outs), e);
    }
    if (ul_agree(rc, e)) return -1;
    /* the history, and on resume the metrics of the steps before the checkpoint */
    TrainHist *h = &r->hist;
    size_t n = (size_t)o->steps + 1;
    *h = (TrainHist){ul_calloc(n, sizeof(double)), ul_calloc(n, sizeof(double)), ul_calloc(n, sizeof(double)),
                     ul_calloc(n, sizeof(double)), ul_calloc(n, sizeof(double)), 0, 0, o->steps};
    if (r->rank == 0 && o->metrics) {
        if (r->resume[0]) rc = ckpt_jsonl_truncate(o->metrics, r->first, hist_line, h, e);
        r->mf = rc == 0 ? fopen(o->metrics, r->resume[0] ? "a" : "w") : NULL;
        if (rc == 0 && !r->mf) rc = ul_err(e, "--metrics %s: cannot open for writing", o->metrics);
    }
    if (rc == 0 && r->rank == 0 && (o->task || o->eval_data) && o->eval_out) {
        if (r->resume[0]) rc = ckpt_jsonl_truncate(o->eval_out, r->first, NULL, NULL, e);
        if (rc == 0) r->ef = fopen(o->eval_out, r->resume[0] ? "a" : "w");
    }
    if (ul_agree(rc, e)) return -1;
    r->plot_first = r->resume[0] && h->n_known < r->first ? r->first : 0; /* the first step whose loss is known */
    r->per_rank = o->batch / r->mesh.dp; /* sequences per step on this DP index */
    r->per_micro = r->per_rank / o->grad_accum;
    r->smp = ul_calloc((size_t)r->per_rank, sizeof(Sample));
    return 0;
}

/* The start-up lines (tests assert on the allocation, ZeRO and staging numbers). */
static void run_report(TrainRun *r) {
    const TrainOptions *o = r->o;
    const ModelConfig *c = &r->c;
    const int rank = r->rank;
    const ZeroOpt *zo = &r->zo;
    if (rank == 0 && !o->quiet && r->resume[0])
        fprintf(stderr, "ulysses: resuming from %s at step %lld\n", r->resume, (long long)r->first);
    if (rank == 0 && !o->quiet) {
        fprintf(stderr,
                "ulysses: %lld params, %lld layers, mesh dp_replicate=%lld dp_shard=%lld sp=%lld, %lld steps of %lld "
                "sequences (seq_len %lld)\n",
                (long long)r->m.n_params, (long long)c->num_layers, (long long)o->dp_replicate,
                (long long)o->dp_shard, (long long)o->sp, (long long)o->steps, (long long)o->batch,
                (long long)o->seq_len);
        char sum[512], mlp[64];
        plan_summary(&r->plan, r->on_gpu ? "GPU" : "rank", sum, sizeof sum);
        plan_mlp_desc(&r->plan, mlp, sizeof mlp);
        /* allocated: what model and optimizer took through the backend; the plan's exact items must equal it */
        fprintf(stderr,
                "ulysses: memory plan %s, tiled-mlp %s; allocated %lld device + %lld host bytes (plan: %lld + %lld)\n",
                sum, mlp, (long long)(r->mem1.dev_cur - r->mem0.dev_cur), (long long)(r->mem1.host_cur - r->mem0.host_cur),
                (long long)r->plan.dev_exact, (long long)r->plan.host_exact);
        if (o->offload_checkpoints) {
            char od[64];
            plan_offload_desc(&r->plan, c->num_layers, od, sizeof od);
            fprintf(stderr, "ulysses: checkpoint offload: %lld bytes of saved activations in pinned host memory (%s)\n",
                    (long long)(actstore_host_bytes(&r->m.xin) + actstore_host_bytes(&r->m.keep_oh) +
                                actstore_host_bytes(&r->m.keep_lse)),
                    od);
        }
        if (o->checkpoint == 1 && (r->plan.ckpt_every > 1 || r->plan.ckpt_auto))
            fprintf(stderr, "ulysses: checkpoint-every %s%lld layers: %lld kept layer inputs, the rest recomputed\n",
                    r->plan.ckpt_auto ? "auto: " : "", (long long)r->plan.ckpt_every, (long long)r->plan.ckpt_items);
        if (r->zo.stage >= 1 && r->zo.offload) {
            char gd[64];
            plan_grads_desc(&r->plan, gd, sizeof gd);
            fprintf(stderr, "ulysses: gradient offload: %lld bytes of fp32 gradients in host memory (%s)\n",
                    (long long)(r->zo.so_host * (int64_t)sizeof(float)), gd);
            if (r->zo.param_host)
                fprintf(stderr, "ulysses: parameter offload%s: %lld bytes of weights in pinned host memory\n",
                        r->plan.param_auto ? " (auto)" : "", (long long)(r->zo.per * (int64_t)r->k->act_bytes));
        }
    }
    r->k->mem_reset_peak();
    if (rank == 0 && !o->quiet) /* tests assert on these numbers (tests/zero_test.sh) */
        fprintf(stderr,
                "ulysses: zero %d%s: shard group of %d ranks, slice %lld of %lld params (padded %lld); per-rank "
                "state bytes: weights=%lld master=%lld grads=%lld moments=%lld host=%lld\n",
                zo->stage, zo->offload ? " offload-optimizer" : "", zo->stage ? r->mesh.shard_g.size : 1,
                (long long)zo->per, (long long)r->m.n_params, (long long)zo->n_pad, (long long)zo->bytes.weights,
                (long long)zo->bytes.master, (long long)zo->bytes.grads, (long long)zo->bytes.moments,
                (long long)zo->bytes.host);
    if (!o->quiet && !r->resume[0]) { /* every rank's start-up host staging of the initial weights */
        CommGroup *g = &r->mesh.world_g;
        int64_t *all = ul_malloc((size_t)r->mesh.world * sizeof(int64_t)); /* [world] */
        g->ops->allgather(g, &r->init_staging, all, 1, UL_I64);
        if (rank == 0) {
            fprintf(stderr, "ulysses: initial weights (%s) host staging bytes:", o->init ? "--init" : "random");
            for (int q = 0; q < r->mesh.world; q++) fprintf(stderr, " rank%d=%lld", q, (long long)all[q]);
            fprintf(stderr, "\n");
        }
        free(all);
    }
}

/* What one optimizer step measured, for the metrics and the progress line. */
typedef struct {
    double loss, gn, lr, tokens, valid, dt, a2a_s, attn_s, loss_s, optim_s, offload_s;
    int bad;     /* the loss or the norm is not finite (the same on every rank) */
    int do_eval;
    EvalResult ev;
} StepStats;

/* One metrics line (rank 0): valid JSON, a non-finite number written as null. */
static void write_metrics(TrainRun *r, int64_t step, const StepStats *s) {
    const TrainOptions *o = r->o;
    FILE *mf = r->mf;
    char b1[32], b2[32], b3[32], b4[32];
    double tok_s = s->dt > 0 ? s->tokens / s->dt : 0;
    fprintf(mf,
            "{\"step\": %lld, \"loss\": %s, \"grad_norm\": %s, \"lr\": %.8g, \"tokens\": %.0f, "
            "\"valid_tokens\": %.0f, \"tok_per_s\": %.2f, \"step_s\": %.6f, \"a2a_s\": %.6f, \"elapsed_s\": %.3f",
            (long long)(step + 1), jnum(b1, sizeof b1, "%.8g", s->loss), jnum(b2, sizeof b2, "%.8g", s->gn), s->lr,
            s->tokens, s->valid, tok_s, s->dt, s->a2a_s, ul_now() - r->t_start);
    if (s->do_eval && o->task)
        fprintf(mf, ", \"eval_loss\": %s, \"answer_acc\": %s", jnum(b3, sizeof b3, "%.6g", s->ev.loss),
                jnum(b4, sizeof b4, "%.6g", s->ev.acc));
    else if (s->do_eval) /* token-weighted over the whole evaluation, as the training loss */
        fprintf(mf, ", \"eval_loss\": %s, \"eval_tokens\": %.0f", jnum(b3, sizeof b3, "%.8g", s->ev.loss), s->ev.n);
    if (r->on_gpu) fprintf(mf, ", \"gpu_mem_gib\": %.3f", r->k->device_mem_used_gib());
    UlMemStats ms;
    r->k->mem_stats(&ms);
    fprintf(mf, ", \"alloc_peak_gib\": %.4f, \"plan_gib\": %.4f", (double)ms.dev_peak / PLAN_GIB,
            (double)r->plan.dev_total / PLAN_GIB);
    if (o->offload_checkpoints) fprintf(mf, ", \"offload_s\": %.6f", s->offload_s);
    if (o->profile) fprintf(mf, ", \"attn_s\": %.6f, \"loss_s\": %.6f, \"optim_s\": %.6f", s->attn_s, s->loss_s, s->optim_s);
    fprintf(mf, "}\n");
    fflush(mf);
}

/* One optimizer step: this DP index's samples of the global batch, forward + backward of
 * each, the gradient reduction, clipping and AdamW (optim/zero.h), the held-out evaluation
 * when due. Fills s; the loss and the norm are global (the same on every rank). */
static void run_step(TrainRun *r, int64_t step, StepStats *s) {
    const TrainOptions *o = r->o;
    Mesh *mesh = &r->mesh;
    Model *m = &r->m;
    double t0 = ul_now();
    phase_take(&m->t_attn); /* drop what evaluation did between steps */
    phase_take(&m->t_loss);
    double cnt[2] = {0, 0}; /* [valid labels in local shards, real tokens] */
    for (int64_t a = 0; a < o->grad_accum; a++)
        for (int64_t j = 0; j < r->per_micro; j++) {
            int64_t g = step * o->batch + a * (o->batch / o->grad_accum) + mesh->r_dp * r->per_micro + j;
            Sample *sm = &r->smp[a * r->per_micro + j];
            source_sample(&r->source, g, sm, NULL);
            int64_t t = sm->T / o->sp, off = mesh->r_sp * t;
            for (int64_t i = 0; i < t; i++) cnt[0] += sm->labels[off + i] != UL_IGNORE_INDEX;
            if (mesh->r_sp == 0) cnt[1] += (double)sm->n_real;
        }
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, cnt, 2, UL_F64);
    double n_global = cnt[0];
    float dscale = n_global > 0 ? (float)(1.0 / n_global) : 0.f;

    /* all-to-all time of this step: the SP group's collectives (device time with NCCL) */
    CommGroup *spg = mesh->sp > 1 ? mesh->dev_sp : NULL;
    if (spg) spg->ops->take_seconds(spg); /* drop what eval or setup did */
    zero_clear_grads(&r->zo, m);
    double loss_acc[2] = {0, 0}; /* [CE sum, count] */
    for (int64_t i = 0; i < r->per_rank; i++) {
        Sample *sm = &r->smp[i];
        int64_t t = sm->T / o->sp, off = mesh->r_sp * t;
        LocalSeq ls = {.T = sm->T, .tokens = sm->tokens + off, .labels = sm->labels + off, .pos = sm->pos + off,
                       .cu_seqlens = sm->cu_seqlens, .n_docs = sm->n_docs, .offset = off};
        model_step(m, &ls, dscale, 1, NULL, NULL); /* the loss stays on the device until the last one */
    }
    int64_t cnt_l = 0;
    model_loss_take(m, &loss_acc[0], &cnt_l);
    loss_acc[1] = (double)cnt_l;
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, loss_acc, 2, UL_F64);
    s->loss = loss_acc[1] > 0 ? loss_acc[0] / loss_acc[1] : 0.0;
    s->lr = lr_at(o, step);
    /* gradient reduction (all-reduce or reduce-scatter), clipping, AdamW, new weights */
    ZeroHyper hy = {s->lr, o->beta1, o->beta2, o->adam_eps, o->weight_decay, o->clip, step + 1};
    phase_begin(&r->t_opt);
    s->gn = zero_step(&r->zo, m, mesh, &hy, n_global > 0);
    phase_end(&r->t_opt);
    s->attn_s = phase_take(&m->t_attn);
    s->loss_s = phase_take(&m->t_loss);
    s->optim_s = phase_take(&r->t_opt);
    s->offload_s = o->offload_checkpoints ? model_offload_seconds(m) : 0; /* device time of the copies */
    s->dt = ul_now() - t0;
    s->a2a_s = spg ? spg->ops->take_seconds(spg) : 0;
    s->tokens = cnt[1];
    s->valid = n_global;
    r->train_time += s->dt;
    s->bad = !isfinite(s->loss) || !isfinite(s->gn);
    s->do_eval = !s->bad && (o->task || o->eval_data) && o->eval_every > 0 &&
                 ((step + 1) % o->eval_every == 0 || step + 1 == o->steps);
    if (s->do_eval) { /* forward only, on the training mesh (sp included) */
        eval_run(m, mesh, &r->eval_source, plan_padded_len(o->seq_len, o->sp), 0, r->eval_n, &s->ev);
        if (o->task) r->last_acc = s->ev.acc;
        else r->last_eval_loss = s->ev.loss;
        r->hist.estep[r->hist.n_eval] = (double)(step + 1);
        r->hist.acc[r->hist.n_eval] = o->task ? s->ev.acc : -1;
        r->hist.eloss[r->hist.n_eval++] = o->task ? -1 : s->ev.loss;
    }
    r->hist.step[step] = (double)(step + 1);
    r->hist.loss[step] = s->loss;
}

/* A non-finite loss or norm: the error naming the step and the latest good checkpoint.
 * Nothing is saved from this state. */
static int nonfinite_error(const TrainRun *r, int64_t step, const StepStats *s, UlError *e) {
    const TrainOptions *o = r->o;
    char last[4200] = "";
    int64_t saved = o->save_every > 0 ? step / o->save_every * o->save_every : 0; /* newest of this run */
    if (saved > r->first) ckpt_step_dir(last, sizeof last, r->ckpt_root, saved);
    else if (r->resume[0]) snprintf(last, sizeof last, "%s", r->resume);
    return ul_err(e,
                  "step %lld: the %s is not finite (loss %.6g, gradient norm %.6g): training stopped, and no model "
                  "or checkpoint is written from this state%s%s (lower --lr, raise --warmup, or check the data and "
                  "--init)",
                  (long long)(step + 1), !isfinite(s->loss) ? "loss" : "gradient norm", fabs(s->loss), fabs(s->gn),
                  last[0] ? "; the latest good checkpoint stays " : "", last);
}

/* The checkpoint of step (step + 1) when due, and the agreed stop on SIGTERM / SIGINT
 * (a checkpoint there too). 1: stop the loop; 0: go on; -1: an error (agreed). */
static int run_boundary(TrainRun *r, int64_t step, UlError *e) {
    const TrainOptions *o = r->o;
    const int64_t done = step + 1;
    char dir[4200];
    ckpt_step_dir(dir, sizeof dir, r->ckpt_root ? r->ckpt_root : "", done);
    const int due = o->save_every > 0 && (done % o->save_every == 0 || done == r->end);
    if (due) {
        if (save_state(r->ckpt_root, &r->crun, &r->zo, &r->m, &r->mesh, r->on_gpu, done, e)) return -1;
        if (r->rank == 0 && !o->quiet)
            fprintf(stderr, "%sulysses: checkpoint written to %s\n", r->tty && done != r->end ? "\n" : "", dir);
    }
    if (done >= r->end || (r->stopped = agreed_stop_signal(&r->mesh)) == 0) return 0;
    if (o->save_every > 0 && !due && save_state(r->ckpt_root, &r->crun, &r->zo, &r->m, &r->mesh, r->on_gpu, done, e))
        return -1;
    if (r->rank == 0)
        fprintf(stderr, "%sulysses: stopped by %s after step %lld of %lld; %s%s%s%s; exit code %d\n", r->tty ? "\n" : "",
                r->stopped == SIGTERM ? "SIGTERM" : "SIGINT", (long long)done, (long long)o->steps,
                o->save_every > 0 ? "checkpoint " : "no checkpoint is configured (--save-every), none was written",
                o->save_every > 0 ? dir : "",
                o->save_every > 0 ? " is complete: continue with the same command and --resume " : "",
                o->save_every > 0 ? r->ckpt_root : "", 128 + r->stopped);
    return 1;
}

/* The optimizer steps [first, end): each step, its metrics and progress, a non-finite
 * loss stops the run, checkpoints and preemption at the step boundaries. */
static int run_loop(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    /* the live bar where the user watches a terminal (also through mpirun), else plain lines */
    r->tty = o->progress == UL_PROGRESS_BAR || (o->progress == UL_PROGRESS_AUTO && ul_stderr_is_terminal());
    r->t_start = ul_now();
    r->last_acc = -1;
    r->last_eval_loss = -1;
    phase_init(&r->t_opt, r->k, o->profile);
    r->have_timer = 1;
    model_set_timing(&r->m, o->profile);
    install_stop_handlers();
    int rc = 0;
    for (int64_t step = r->first; step < r->end && rc == 0; step++) {
        StepStats s;
        run_step(r, step, &s);
        if (r->rank == 0) {
            if (r->mf) write_metrics(r, step, &s);
            if (s.do_eval && r->ef) eval_write_json(r->ef, &s.ev, step + 1);
            if (!s.bad)
                progress(o, r->tty, r->first, r->end, step, s.loss, s.gn, s.lr, s.dt > 0 ? s.tokens / s.dt : 0,
                         r->train_time, r->last_acc, r->last_eval_loss);
        }
        if (s.bad) { /* every rank: loss and norm are global */
            rc = nonfinite_error(r, step, &s, e);
            break;
        }
        rc = run_boundary(r, step, e);
    }
    remove_stop_handlers();
    return rc < 0 ? -1 : 0;
}

/* The end of a finished run: --out (streamed from the state, as a checkpoint's
 * model.safetensors), the metrics closed, the plot. Agreed. */
static int run_finish(TrainRun *r, UlError *e) {
    const TrainOptions *o = r->o;
    int rc = 0;
    if (o->out) {
        SaveSrc s;
        save_src_init(&s, &r->zo, &r->m, &r->mesh, r->on_gpu);
        CkptSource src = {r->m.n_params, s.part_chunk, s.chunk, save_part, save_weights, &s};
        UlDtype dt = strcmp(o->save_dtype, "bf16") == 0 ? UL_DT_BF16 : UL_DT_F32;
        /* its two files, each replaced atomically; nothing else in the directory is touched */
        rc = ckpt_write_out(o->out, &r->c, dt, &src, e);
        if (rc == 0 && r->rank == 0 && !o->quiet) fprintf(stderr, "ulysses: model written to %s\n", o->out);
        save_src_free(&s);
    }
    if (rc == 0 && r->rank == 0 && o->plot) {
        const TrainHist *h = &r->hist;
        PlotLine ll[2] = {{"train loss", h->step + r->plot_first, h->loss + r->plot_first, r->end - r->plot_first},
                          {"held-out loss (--eval-data)", h->estep, h->eloss, h->n_eval}};
        PlotLine al = {"answer accuracy (held out)", h->estep, h->acc, h->n_eval};
        PlotPanel panels[2] = {{"training loss", "step", "loss", 1, 0, 0, ll, o->eval_data && h->n_eval > 0 ? 2 : 1},
                               {"answer accuracy", "step", "accuracy", 0, 0, 1, &al, 1}};
        rc = plot_png(o->plot, panels, o->task && h->n_eval > 0 ? 2 : 1, e);
        if (rc == 0 && !o->quiet) fprintf(stderr, "ulysses: plot written to %s\n", o->plot);
    }
    return ul_agree(rc, e);
}

/* Releases what the phases created, in reverse order. */
static void run_teardown(TrainRun *r) {
    if (r->mf) fclose(r->mf);
    if (r->ef) fclose(r->ef);
    free(r->hist.step);
    free(r->hist.loss);
    free(r->hist.estep);
    free(r->hist.acc);
    free(r->hist.eloss);
    for (int64_t i = 0; r->smp && i < r->per_rank; i++) sample_free(&r->smp[i]);
    free(r->smp);
    if (r->have_timer) phase_free(&r->t_opt);
    if (r->have_zo) zero_free(&r->zo);
    if (r->have_model) model_free(&r->m);
    if (r->have_mesh) ul_mesh_free(&r->mesh);
    data_close(&r->dl);
    data_close(&r->dl_eval);
}

int train_run(const TrainOptions *o, UlError *e) {
    TrainRun *r = ul_calloc(1, sizeof *r);
    int rc = run_resolve(r, o, e);
    if (rc == 0) rc = run_data(r, e);
    if (rc == 0) rc = run_build(r, e);
    if (rc == 0) rc = run_weights(r, e);
    if (rc == 0) rc = run_outputs(r, e);
    if (rc == 0 && !r->finished) {
        run_report(r);
        rc = run_loop(r, e);
        if (rc == 0 && !r->stopped) rc = run_finish(r, e);
        rc = ul_agree(rc, e);
        if (rc == 0 && r->stopped) rc = 128 + r->stopped; /* train.h: preempted, a documented exit code */
    }
    run_teardown(r);
    free(r);
    return rc;
}
