/* Sequence + data parallelism against one process (docs/design.md §5, §11 step 3).
 * Run under mpirun -np sp*dp: every rank also computes the single-process reference
 * (the whole global batch through a model with no SP group) and checks that the
 * distributed loss and every parameter gradient match it (rel. err <= 1e-5).
 * Usage: test_sp SP DP HKV [FAMILY [mask]]   (FAMILY: llama (default), qwen2, qwen3, mistral; qwen3
 * with head_dim 6 != hidden / heads; mask: documents with loss masks, as SFT data has) */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "comm/mesh.h"
#include "testutil.h"
#include "data/data.h"
#include "model/model.h"

static ModelConfig tiny(int64_t Hkv, UlFamilyId fam) {
    ModelConfig c = {0};
    c.family = fam;
    c.vocab_size = 48;
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_layers = 2;
    c.num_heads = 8;
    c.num_kv_heads = Hkv;
    c.head_dim = fam == UL_FAM_QWEN3 ? 6 : 4;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5;
    c.initializer_range = 0.2;
    c.rope_theta = 10000;
    c.rope_type = UL_ROPE_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_original_max_position_embeddings = 16;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

/* Sample i of the global batch: documents that cross shard boundaries, a length-1
 * document, and (sample 1) a tail with no valid label at all on the last shards. With
 * masks, each document has a loss mask as prompt/completion data does (a prompt of random
 * length without loss), with a fifth of the other tokens masked out too. */
static void make_sample(Sample *s, int64_t i, int64_t sp, UlRng *r, int64_t V, int masked) {
    int64_t lens[4];
    int64_t n;
    if (i % 3 == 1) {
        lens[0] = 9;
        n = 1;
    } else {
        n = 1 + (int64_t)(ul_rng_u64(r) % 3);
        for (int64_t j = 0; j < n; j++) lens[j] = 1 + (int64_t)(ul_rng_u64(r) % 13);
    }
    int32_t *docs[4];
    uint8_t *masks[4] = {0};
    for (int64_t j = 0; j < n; j++) {
        docs[j] = malloc((size_t)lens[j] * sizeof(int32_t));
        for (int64_t q = 0; q < lens[j]; q++) docs[j][q] = (int32_t)(ul_rng_u64(r) % (uint64_t)V);
        if (!masked) continue;
        masks[j] = malloc((size_t)lens[j]);
        int64_t prompt = (int64_t)(ul_rng_u64(r) % (uint64_t)lens[j]);
        for (int64_t q = 0; q < lens[j]; q++) masks[j][q] = q >= prompt && ul_rng_u64(r) % 5 != 0;
    }
    int64_t fixed = i % 3 == 1 ? 16 : 0; /* 9 tokens padded to 16: with sp = 4 the last two shards hold no label */
    sample_from_docs(s, (const int32_t *const *)docs, masked ? (const uint8_t *const *)masks : NULL, lens, n, sp,
                     fixed);
    for (int64_t j = 0; j < n; j++) free(docs[j]), free(masks[j]);
}

/* Random weights (model_init_random), then biases and norm weights away from their init
 * (0 and 1), so that every optional tensor of a family changes the numbers. */
static void init_params(Model *m) {
    float *h = malloc((size_t)m->n_params * sizeof(float));
    model_random_range(&m->c, 7, 0, m->n_params, h);
    for (int64_t i = 0; i < ul_param_tensor_count(&m->c); i++) {
        ParamInfo p;
        ul_param_info(&m->c, i, &p);
        for (int64_t j = 0; p.kind != UL_P_MAT && j < p.numel; j++)
            h[p.offset + j] += 0.3f * ul_normal_at(11, (uint64_t)(p.offset + j));
    }
    model_set_params(m, h);
    free(h);
}

static LocalSeq shard(const Sample *s, int64_t sp, int64_t r) {
    int64_t t = s->T / sp, off = r * t;
    LocalSeq ls = {.T = s->T, .tokens = s->tokens + off, .labels = s->labels + off, .pos = s->pos + off,
                   .cu_seqlens = s->cu_seqlens, .n_docs = s->n_docs, .offset = off};
    return ls;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    UlFamilyId fam = UL_FAM_COUNT;
    for (int f = 0; f < UL_FAM_COUNT; f++)
        if (!strcmp(argc > 4 ? argv[4] : "llama", ul_families[f].model_type)) fam = (UlFamilyId)f;
    int masked = argc > 5 && !strcmp(argv[5], "mask");
    if (argc < 4 || fam == UL_FAM_COUNT || (argc > 5 && !masked)) {
        fprintf(stderr, "usage: test_sp SP DP HKV [llama|qwen2|qwen3|mistral [mask]]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int sp = atoi(argv[1]), dp = atoi(argv[2]);
    int64_t Hkv = atoll(argv[3]);
    Mesh mesh;
    ul_mesh_init_mpi(&mesh, sp, 1, dp);
    const KernelOps *k = ul_kernels_cpu();
    ModelConfig c = tiny(Hkv, fam);
    int64_t B = 3 * dp; /* global batch */
    Sample *smp = calloc((size_t)B, sizeof(Sample));
    UlRng r;
    ul_rng_seed(&r, 42);
    int64_t T_max = 0;
    for (int64_t i = 0; i < B; i++) {
        make_sample(&smp[i], i, sp, &r, c.vocab_size, masked);
        if (smp[i].T > T_max) T_max = smp[i].T;
    }

    /* single-process reference over the whole global batch */
    Model ref;
    model_init(&ref, &c, k, NULL, T_max, 0);
    init_params(&ref);
    int64_t n_global = 0;
    for (int64_t i = 0; i < B; i++) n_global += smp[i].n_valid;
    double ref_sum = 0;
    int64_t ref_cnt = 0;
    for (int64_t i = 0; i < B; i++) {
        LocalSeq ls = shard(&smp[i], 1, 0);
        model_step(&ref, &ls, (float)(1.0 / (double)n_global), 1, &ref_sum, &ref_cnt);
    }
    double ref_loss = ref_sum / (double)ref_cnt;

    /* distributed, with the memory features that must not change anything: per-layer
     * recompute for odd dp (keeping attention outputs when sp = 2), TiledMLP (tiles of 3 rows)
     * for sp >= 2, the saved activations offloaded to host memory when both */
    int rc = dp % 2 == 1 ? (sp == 2 ? 2 : 1) : 0;
    ModelMemOpts mo = {rc, sp >= 2 ? 3 : 0, rc >= 1 && sp >= 2, 0, 1, NULL}; /* offload the checkpoints when sp >= 2 */
    Model m;
    model_init_opts(&m, &c, k, &mesh.sp_g, T_max, &mo);
    init_params(&m);
    int64_t per = B / dp;
    double cnt = 0;
    for (int64_t j = 0; j < per; j++) {
        const Sample *s = &smp[mesh.r_dp * per + j];
        LocalSeq ls = shard(s, sp, mesh.r_sp);
        for (int64_t q = 0; q < s->T / sp; q++) cnt += ls.labels[q] != UL_IGNORE_INDEX;
    }
    mesh.world_g.ops->allreduce_sum(&mesh.world_g, &cnt, 1, UL_F64);
    CHECK((int64_t)cnt == n_global, "valid labels: distributed %.0f vs %lld", cnt, (long long)n_global);
    double acc[2] = {0, 0};
    for (int64_t j = 0; j < per; j++) {
        LocalSeq ls = shard(&smp[mesh.r_dp * per + j], sp, mesh.r_sp);
        int64_t ci = 0;
        model_step(&m, &ls, (float)(1.0 / cnt), 1, &acc[0], &ci);
        acc[1] += (double)ci;
    }
    mesh.world_g.ops->allreduce_sum(&mesh.world_g, acc, 2, UL_F64);
    mesh.world_g.ops->allreduce_sum(&mesh.world_g, m.grads, m.n_params, UL_F32);
    double loss = acc[0] / acc[1];
    CHECK(isfinite(loss) && fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss), "loss %.9g vs reference %.9g", loss,
          ref_loss);
    int64_t nt = ul_param_tensor_count(&c);
    double worst = 0;
    for (int64_t i = 0; i < nt; i++) {
        ParamInfo p;
        ul_param_info(&c, i, &p);
        double e = tu_rel_err_f32(m.grads + p.offset, ref.grads + p.offset, p.numel, 1e-12);
        if (e > worst) worst = e;
        CHECK(e <= 1e-5, "%s sp=%d dp=%d Hkv=%lld: gradient %s rel err %.3g", ul_families[fam].model_type, sp, dp,
              (long long)Hkv, p.name, e);
    }
    int fails = tu_failures;
    MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (mesh.rank == 0) {
        printf("%s sp=%d dp=%d Hkv=%lld%s: %lld tensors, %lld labelled tokens, loss %.9g (reference %.9g), worst "
               "gradient rel err %.3g\n",
               ul_families[fam].architecture, sp, dp, (long long)Hkv, masked ? " (loss masks)" : "", (long long)nt,
               (long long)n_global, loss, ref_loss, worst);
        tu_failures = fails;
        tu_finish("test_sp");
    }
    for (int64_t i = 0; i < B; i++) sample_free(&smp[i]);
    free(smp);
    model_free(&m);
    model_free(&ref);
    ul_mesh_free(&mesh);
    MPI_Finalize();
    return fails ? 1 : 0;
}
