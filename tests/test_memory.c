/* Activation-checkpoint offload and the memory planner (issue 8, docs/design.md §8), CPU backend.
 * Run as one process or under mpirun -np 2 (then sp = 2 over the two ranks):
 *  - every combination of --checkpoint 0/1/2, TiledMLP on/off and offload on/off gives
 *    the same loss and gradients as the plain model (rel <= 1e-5), and offload gives
 *    bitwise the same as the same configuration without it; two steps in a row agree
 *    (the offload ring carries no state between steps). 5 layers: the ring of 2 slots
 *    wraps several times in forward and backward.
 *  - the planner's exact items equal the bytes model_init allocated through the backend
 *    (device and host, byte for byte; KernelOps.mem_stats): true by construction, the
 *    model carving its buffers from the plan's table (memory/plan.h), and checked here;
 *  - plan_max_seq_len: the answer fits, one more sp step does not, monotone in the limit;
 *  - --tiled-mlp auto: untiled when the plan fits; under a tighter limit the largest
 *    multiple of 64 rows within half the headroom, which fits where the untiled plan does
 *    not, shrinking with the limit (training with it: tests/cli_test.sh plan). */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "comm/mesh.h"
#include "testutil.h"
#include "data/data.h"
#include "model/model.h"
#include "memory/plan.h"

static ModelConfig small(void) {
    ModelConfig c = {0};
    c.vocab_size = 40;
    c.hidden_size = 24;
    c.intermediate_size = 36;
    c.num_layers = 5;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 6;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5;
    c.initializer_range = 0.2;
    c.rope_theta = 10000;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

typedef struct {
    double loss;
    float *grads; /* [n_params] */
} Result;

/* Two steps on the same sample; checks the plan against the allocation on the way. */
static Result run(const ModelConfig *c, CommGroup *sp_g, const Sample *s, int sp, int r_sp, const ModelMemOpts *mo) {
    const KernelOps *k = ul_kernels_cpu();
    UlMemStats a, b;
    k->mem_stats(&a);
    Model m;
    model_init_opts(&m, c, k, sp_g, s->T, mo);
    k->mem_stats(&b);
    PlanInput in;
    plan_input_default(&in);
    in.c = *c;
    in.sp = sp;
    in.seq_len = s->T;
    in.checkpoint = mo->recompute;
    in.ckpt_every = mo->ckpt_every;
    in.mlp_tile = mo->mlp_tile;
    in.offload_checkpoints = mo->offload > 0;
    in.offload_layers = mo->offload == INT64_MAX ? -1 : mo->offload;
    Plan p;
    plan_compute(&in, &p);
    int64_t dev = b.dev_cur - a.dev_cur, host = b.host_cur - a.host_cur;
    int64_t want_dev = p.dev_exact - p.dev_group[PG_OPTIM]; /* the optimizer is train_run's */
    CHECK(dev == want_dev && host == p.host_exact,
          "recompute %d tile %lld offload %lld sp %d: model_init allocated %lld device + %lld host bytes, the plan "
          "says %lld + %lld",
          mo->recompute, (long long)mo->mlp_tile, (long long)mo->offload, sp, (long long)dev, (long long)host,
          (long long)want_dev, (long long)p.host_exact);
    CHECK(m.loss_tile == p.loss_tile && m.mlp_tile == p.mlp_tile, "tiles: model %lld/%lld, plan %lld/%lld",
          (long long)m.loss_tile, (long long)m.mlp_tile, (long long)p.loss_tile, (long long)p.mlp_tile);

    model_init_random(&m, 5);
    int64_t t = s->T / sp, off = r_sp * t;
    LocalSeq ls = {.T = s->T, .tokens = s->tokens + off, .labels = s->labels + off, .pos = s->pos + off,
                   .cu_seqlens = s->cu_seqlens, .n_docs = s->n_docs, .offset = off};
    Result res = {0, malloc((size_t)m.n_params * sizeof(float))};
    for (int step = 0; step < 2; step++) {
        k->zero(m.grads, (size_t)m.n_params * sizeof(float));
        double acc[2] = {0, 0};
        int64_t cnt = 0;
        model_step(&m, &ls, 1.0f / (float)s->n_real, 1, &acc[0], &cnt);
        acc[1] = (double)cnt;
        if (sp_g) {
            MPI_Allreduce(MPI_IN_PLACE, acc, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, m.grads, (int)m.n_params, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        double loss = acc[0] / acc[1];
        if (step == 0) {
            res.loss = loss;
            memcpy(res.grads, m.grads, (size_t)m.n_params * sizeof(float));
        } else {
            CHECK(loss == res.loss && memcmp(res.grads, m.grads, (size_t)m.n_params * sizeof(float)) == 0,
                  "recompute %d offload %lld: the second step differs from the first", mo->recompute,
                  (long long)mo->offload);
        }
    }
    if (mo->offload) {
        int64_t nck = plan_ckpt_items(plan_ckpt_every(mo->ckpt_every, c->num_layers), c->num_layers);
        int64_t items = mo->offload < nck ? mo->offload : nck;
        CHECK(actstore_host_bytes(&m.xin) == items * t * c->hidden_size * 4, "offloaded bytes");
        CHECK(model_offload_seconds(&m) >= 0, "offload copy time");
    }
    model_free(&m);
    UlMemStats z;
    k->mem_stats(&z);
    CHECK(z.dev_cur == a.dev_cur && z.host_cur == a.host_cur, "model_free left %lld device + %lld host bytes",
          (long long)(z.dev_cur - a.dev_cur), (long long)(z.host_cur - a.host_cur));
    return res;
}

static void check_max_seq(const ModelConfig *c, int sp) {
    PlanInput in;
    plan_input_default(&in);
    in.c = *c;
    in.sp = sp;
    in.checkpoint = 1;
    int64_t prev = 0;
    for (int64_t mib = 1; mib <= 64; mib *= 2) {
        int64_t lim = mib << 20;
        int64_t T = plan_max_seq_len(&in, lim, 0, 1);
        CHECK(T >= prev && T % sp == 0, "max seq_len %lld at %lld MiB (previous %lld)", (long long)T, (long long)mib,
              (long long)prev);
        Plan p;
        in.seq_len = T;
        plan_compute(&in, &p);
        CHECK(T == 0 || p.dev_total <= lim, "max seq_len %lld does not fit %lld MiB", (long long)T, (long long)mib);
        in.seq_len = T + sp;
        plan_compute(&in, &p);
        CHECK(p.dev_total > lim, "seq_len %lld also fits %lld MiB", (long long)(T + sp), (long long)mib);
        prev = T;
    }
    CHECK(prev > 0, "nothing fits 64 MiB");
}

/* The plan's default input for model c on sp ranks, seq_len tokens, --checkpoint ck. */
static PlanInput plan_in(const ModelConfig *c, int sp, int64_t seq_len, int ck) {
    PlanInput in;
    plan_input_default(&in);
    in.c = *c;
    in.sp = sp;
    in.seq_len = seq_len;
    in.checkpoint = ck;
    return in;
}

/* --offload-layers auto (PLAN_OFFLOAD_AUTO): the most layers whose checkpoints fit the host
 * limit, the same plan as asking for that count; no limit: all. */
static void check_auto_offload(const ModelConfig *c, int sp) {
    PlanInput in = plan_in(c, sp, 64 * sp, 2);
    in.offload_checkpoints = 1;
    int64_t L = c->num_layers;
    for (int64_t want = 0; want <= L + 1; want++) {
        Plan ex, au;
        in.offload_layers = want;
        in.host_limit = 0;
        plan_compute(&in, &ex);
        in.offload_layers = PLAN_OFFLOAD_AUTO;
        in.host_limit = 2 * ex.host_total; /* two ranks on the host: exactly K = want fits */
        in.ranks_per_host = 2;
        plan_compute(&in, &au);
        CHECK(au.offload_auto && au.offload_items == want && au.dev_total == ex.dev_total &&
                  au.host_total == ex.host_total,
              "auto offload, host limit of %lld layers: chose %lld (device %lld vs %lld)", (long long)want,
              (long long)au.offload_items, (long long)au.dev_total, (long long)ex.dev_total);
        in.host_limit = 2 * ex.host_total - 1; /* one byte less: one layer fewer */
        plan_compute(&in, &au);
        CHECK(want == 0 || au.offload_items == want - 1, "auto offload, 1 byte under %lld layers: chose %lld",
              (long long)want, (long long)au.offload_items);
    }
    Plan all;
    in.host_limit = 0;
    plan_compute(&in, &all);
    CHECK(all.offload_items == L + 1, "auto offload without a host limit: %lld items", (long long)all.offload_items);
}

/* --tiled-mlp auto (plan.h PLAN_MLP_AUTO) at t = 1000 tokens per rank. */
static void check_auto_tile(const ModelConfig *c, int sp) {
    PlanInput in = plan_in(c, sp, 1000 * sp, 1);
    Plan full, p, q;
    plan_compute(&in, &full); /* mlp_tile 0: untiled */
    in.mlp_tile = PLAN_MLP_AUTO;
    in.dev_limit = 0;
    plan_compute(&in, &p);
    CHECK(p.mlp_auto && p.mlp_tile == 0 && p.dev_total == full.dev_total, "auto, no limit: tile %lld",
          (long long)p.mlp_tile);
    in.dev_limit = full.dev_total;
    plan_compute(&in, &p);
    CHECK(p.mlp_tile == 0, "auto, limit = the untiled plan: tile %lld", (long long)p.mlp_tile);
    int64_t per_row = 3 * c->intermediate_size * in.act_bytes, prev = 1000; /* the tile's g, u, h */
    int64_t mlp_full = 3 * 1000 * c->intermediate_size * in.act_bytes; /* [t, I] x 3 with recompute */
    for (int64_t cut = 1; cut < mlp_full; cut += mlp_full / 7) {
        in.dev_limit = full.dev_total - cut;
        plan_compute(&in, &p);
        int64_t r = p.mlp_tile, rest = p.dev_total - r * per_row, head = in.dev_limit - rest;
        CHECK(r > 0 && r < 1000 && r % PLAN_MLP_ALIGN == 0 && r <= prev,
              "auto, limit %lld below the untiled plan: tile %lld (previous %lld)", (long long)cut, (long long)r,
              (long long)prev);
        if (head >= 2 * PLAN_MLP_ALIGN * per_row) /* half the headroom, the largest such multiple of 64 */
            CHECK(2 * r * per_row <= head && (2 * (r + PLAN_MLP_ALIGN) * per_row > head || r == 960),
                  "auto tile %lld: headroom %lld bytes, %lld per row", (long long)r, (long long)head,
                  (long long)per_row);
        CHECK(p.dev_total <= in.dev_limit || r == PLAN_MLP_ALIGN, "auto tile %lld: %lld bytes over limit %lld",
              (long long)r, (long long)p.dev_total, (long long)in.dev_limit);
        in.mlp_tile = r; /* the same plan when asked for explicitly */
        plan_compute(&in, &q);
        in.mlp_tile = PLAN_MLP_AUTO;
        CHECK(q.dev_total == p.dev_total && !q.mlp_auto, "tile %lld: auto %lld bytes, explicit %lld", (long long)r,
              (long long)p.dev_total, (long long)q.dev_total);
        prev = r;
    }
    CHECK(prev < 1000 / 2, "the tightest limit still gave tile %lld", (long long)prev);
    /* nothing fits: the smallest tile, and the plan says so */
    in.dev_limit = full.dev_total - mlp_full - 1;
    plan_compute(&in, &p);
    CHECK(p.mlp_tile == PLAN_MLP_ALIGN && p.dev_total > in.dev_limit, "auto, nothing fits: tile %lld, %lld bytes",
          (long long)p.mlp_tile, (long long)p.dev_total);
    /* the largest seq_len with auto is at least the untiled one */
    int64_t lim = full.dev_total;
    in.mlp_tile = 0;
    int64_t T0 = plan_max_seq_len(&in, lim, 0, 1);
    in.mlp_tile = PLAN_MLP_AUTO;
    int64_t Ta = plan_max_seq_len(&in, lim, 0, 1);
    CHECK(T0 == 1000 * sp && Ta > T0, "largest seq_len at the untiled plan's bytes: untiled %lld, auto %lld",
          (long long)T0, (long long)Ta);
}

/* --checkpoint-every: K kept inputs ceil(L / K) + 1 plus K - 1 recomputed ones; auto takes the
 * smallest K that fits, the same plan as asking for it, and 1 without a limit. */
static void check_ckpt_every(const ModelConfig *c, int sp) {
    PlanInput in = plan_in(c, sp, 64 * sp, 1);
    int64_t L = c->num_layers, item = 64 * c->hidden_size * in.act_bytes;
    Plan p1, pk, au;
    in.ckpt_every = 1;
    plan_compute(&in, &p1);
    int64_t tot[64];
    for (int64_t K = 1; K <= L && K < 64; K++) {
        in.ckpt_every = K;
        plan_compute(&in, &pk);
        tot[K] = pk.dev_total;
        int64_t want = p1.dev_total - (L + 1) * item + ((L + K - 1) / K + 1 + K - 1) * item;
        CHECK(pk.dev_total == want && pk.ckpt_every == K, "checkpoint-every %lld: %lld bytes, expected %lld",
              (long long)K, (long long)pk.dev_total, (long long)want);
    }
    for (int64_t K = 1; K <= L && K < 64; K++) { /* auto at exactly K's bytes: the smallest K' that fits them */
        int64_t k0 = 1;
        while (tot[k0] > tot[K]) k0++;
        in.ckpt_every = PLAN_CKPT_AUTO;
        in.dev_limit = tot[K];
        plan_compute(&in, &au);
        CHECK(au.ckpt_auto && au.ckpt_every == k0 && au.dev_total == tot[k0],
              "checkpoint-every auto at K=%lld's %lld bytes: chose %lld (%lld bytes), expected %lld", (long long)K,
              (long long)tot[K], (long long)au.ckpt_every, (long long)au.dev_total, (long long)k0);
    }
    in.dev_limit = 0;
    in.ckpt_every = PLAN_CKPT_AUTO;
    plan_compute(&in, &au);
    CHECK(au.ckpt_every == 1, "checkpoint-every auto without a limit: %lld", (long long)au.ckpt_every);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    Mesh mesh;
    ul_mesh_init_mpi(&mesh, world, 1, 1);
    ModelConfig c = small();
    /* one sample of 3 documents, 20 * world tokens */
    UlRng r;
    ul_rng_seed(&r, 9);
    int64_t lens[3] = {7 * world, 9 * world, 4 * world};
    int32_t *docs[3];
    for (int j = 0; j < 3; j++) {
        docs[j] = malloc((size_t)lens[j] * sizeof(int32_t));
        for (int64_t q = 0; q < lens[j]; q++) docs[j][q] = (int32_t)(ul_rng_u64(&r) % (uint64_t)c.vocab_size);
    }
    Sample s;
    memset(&s, 0, sizeof s);
    sample_from_docs(&s, (const int32_t *const *)docs, NULL, lens, 3, world, 0);
    CommGroup *g = world > 1 ? &mesh.sp_g : NULL;

    ModelMemOpts plain = {0, 0, 0, 0, 1, NULL};
    Result ref = run(&c, g, &s, world, mesh.r_sp, &plain);
    int64_t N = ul_param_numel(&c);
    for (int rc = 0; rc <= 2; rc++)
        for (int tile = 0; tile <= 1; tile++) {
            ModelMemOpts mo = {rc, tile ? 5 : 0, 0, 0, 1, NULL};
            Result a = run(&c, g, &s, world, mesh.r_sp, &mo);
            double gl = fabs(a.loss - ref.loss) / fabs(ref.loss), ge = tu_rel_err_f32(a.grads, ref.grads, N, 1e-30);
            CHECK(gl <= 1e-5 && ge <= 1e-5, "recompute %d tile %d vs plain: loss rel %.3g, gradients rel %.3g", rc,
                  tile, gl, ge);
            /* offload of every layer's saved activations, then of the first 1 and 2 only (the
             * rest stays on the device): bitwise the same */
            int64_t offs[3] = {INT64_MAX, 1, 2};
            for (int oi = 0; oi < 3 && rc >= 1; oi++) {
                mo.offload = offs[oi];
                Result b = run(&c, g, &s, world, mesh.r_sp, &mo);
                CHECK(b.loss == a.loss && memcmp(a.grads, b.grads, (size_t)N * sizeof(float)) == 0,
                      "recompute %d tile %d offload %lld: changes the result (loss %.9g vs %.9g, gradients rel %.3g)",
                      rc, tile, (long long)offs[oi], b.loss, a.loss, tu_rel_err_f32(b.grads, a.grads, N, 1e-30));
                free(b.grads);
            }
            /* --checkpoint-every K (5 layers: segments of 2 + 2 + 1, 3 + 2, and all 5): the
             * recomputed segment inputs are the forward's, so bitwise the same, offloaded or not */
            int64_t ks[3] = {2, 3, 5}, koffs[3] = {0, INT64_MAX, 1};
            for (int ki = 0; ki < 3 && rc == 1; ki++)
                for (int oi = 0; oi < 3; oi++) {
                    ModelMemOpts mk = mo;
                    mk.ckpt_every = ks[ki];
                    mk.offload = koffs[oi];
                    Result b = run(&c, g, &s, world, mesh.r_sp, &mk);
                    CHECK(b.loss == a.loss && memcmp(a.grads, b.grads, (size_t)N * sizeof(float)) == 0,
                          "checkpoint-every %lld tile %d offload %lld: changes the result (loss %.9g vs %.9g, "
                          "gradients rel %.3g)", (long long)ks[ki], tile, (long long)koffs[oi], b.loss, a.loss,
                          tu_rel_err_f32(b.grads, a.grads, N, 1e-30));
                    free(b.grads);
                }
            free(a.grads);
        }
    free(ref.grads);
    /* the families' optional tensors and activations (q, k before their norms, rstd) in the
     * plan: Qwen3 (q/k norm, head_dim 8 != hidden / heads), Qwen2 (q/k/v bias) */
    for (int f = UL_FAM_QWEN2; f <= UL_FAM_QWEN3; f++) {
        ModelConfig cf = c;
        cf.family = (UlFamilyId)f;
        if (f == UL_FAM_QWEN3) cf.head_dim = 8;
        ModelMemOpts p0 = {0, 0, 0, 0, 1, NULL}, p2 = {2, 5, INT64_MAX, 0, 1, NULL}, p1 = {1, 0, 0, 0, 1, NULL};
        Result a = run(&cf, g, &s, world, mesh.r_sp, &p0), b = run(&cf, g, &s, world, mesh.r_sp, &p2);
        Result d = run(&cf, g, &s, world, mesh.r_sp, &p1);
        int64_t Nf = ul_param_numel(&cf);
        CHECK(fabs(b.loss - a.loss) <= 1e-5 * fabs(a.loss) && tu_rel_err_f32(b.grads, a.grads, Nf, 1e-30) <= 1e-5 &&
                  fabs(d.loss - a.loss) <= 1e-5 * fabs(a.loss) && tu_rel_err_f32(d.grads, a.grads, Nf, 1e-30) <= 1e-5,
              "%s: recompute, TiledMLP and offload change the result", ul_families[f].architecture);
        free(a.grads), free(b.grads), free(d.grads);
    }
    check_max_seq(&c, world);
    check_ckpt_every(&c, world);
    check_auto_tile(&c, world);
    check_auto_offload(&c, world);

    int fails = tu_failures;
    MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("test_memory (sp %d): offload and plan checks done\n", world);
        tu_failures = fails;
        tu_finish("test_memory");
    }
    for (int j = 0; j < 3; j++) free(docs[j]);
    sample_free(&s);
    ul_mesh_free(&mesh);
    MPI_Finalize();
    return fails ? 1 : 0;
}
