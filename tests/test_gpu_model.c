/* The whole model on the CUDA backend (bf16) against the CPU reference (fp32) and the
 * Hugging Face fixture, under mpirun -np W with sp = W (one GPU per rank): the loss within
 * bf16 tolerance, every parameter gradient with cosine similarity >= 0.999 to the CPU
 * run's; plain, and with per-layer recompute (--checkpoint 1, 2), TiledMLP, the checkpoints
 * offloaded to host memory and --checkpoint-every 2. With W = 2 this is "sp = 2 on 2 GPUs against one process".
 * Usage: test_gpu_model FIXTURE_DIR. Exits 77 (skipped) without enough GPUs or without
 * the CUDA backend. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "comm/mesh.h"
#include "fixture.h"
#include "testutil.h"
#include "model/model.h"

static double cosine(const float *a, const float *b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

/* One GPU run with the memory options mo (sp = world) against the CPU reference: the loss,
 * every parameter gradient (cosine), the report line. */
static void gpu_variant(const Fixture *f, Mesh *mesh, const KernelOps *kc, const Model *ref, double rloss,
                        const ModelMemOpts *mo, const char *label, const char *fixture) {
    int world = mesh->world, rank = mesh->rank;
    const ModelConfig *c = &f->c;
    float dscale = (float)(1.0 / (double)f->n_valid);
    Model m;
    model_init_opts(&m, c, kc, mesh->dev_sp, f->T, mo);
    model_set_params(&m, f->weights);
    int64_t t = f->T / world, off = rank * t;
    LocalSeq ls = {.T = f->T, .tokens = f->tokens + off, .labels = f->labels + off, .pos = f->pos + off,
                   .cu_seqlens = f->cu, .n_docs = f->n_docs, .offset = off};
    double acc[2] = {0, 0};
    int64_t cnt = 0;
    kc->zero(m.grads, (size_t)m.n_params * sizeof(float));
    model_step(&m, &ls, dscale, 1, &acc[0], &cnt);
    acc[1] = (double)cnt;
    mesh->world_g.ops->allreduce_sum(&mesh->world_g, acc, 2, UL_F64);
    mesh->dev_world->ops->allreduce_sum(mesh->dev_world, m.grads, m.n_params, UL_F32);
    float *g = malloc((size_t)m.n_params * sizeof(float)); /* [n_params] */
    model_get_grads(&m, g);

    double loss = acc[0] / acc[1];
    double le = fabs(loss - rloss) / rloss, he = fabs(loss - f->loss) / f->loss;
    CHECK(acc[1] == (double)f->n_valid, "%s: valid labels %.0f vs %lld", label, acc[1], (long long)f->n_valid);
    CHECK(le <= 2e-2, "%s: GPU loss %.6g vs CPU %.6g (rel %.3g)", label, loss, rloss, le);
    CHECK(he <= 2e-2, "%s: GPU loss %.6g vs transformers %.6g (rel %.3g)", label, loss, f->loss, he);
    double worst = 1;
    const char *worst_name = "";
    int64_t nt = ul_param_tensor_count(c);
    for (int64_t i = 0; i < nt; i++) {
        ParamInfo p;
        ul_param_info(c, i, &p);
        double cs = cosine(g + p.offset, ref->grads + p.offset, p.numel);
        if (cs < worst) {
            worst = cs;
            worst_name = p.name;
        }
        CHECK(cs >= 0.999, "%s: gradient %s: cosine %.6f to the CPU reference", label, p.name, cs);
    }
    double all = cosine(g, ref->grads, m.n_params);
    CHECK(all >= 0.999, "%s: whole gradient: cosine %.6f", label, all);
    if (rank == 0) {
        char line[1024];
        snprintf(line, sizeof line,
                 "gpu sp=%d %s %s: loss %.6f (CPU %.6f, transformers %.6f), gradient cosine %.6f, worst %.6f (%s)\n",
                 world, fixture, label, loss, rloss, f->loss, all, worst, worst_name);
        fputs(line, stdout);
        const char *rp = getenv("UL_TEST_REPORT"); /* scripts/gpu_test.sh's table */
        FILE *rf = rp ? fopen(rp, "a") : NULL;
        if (rf) {
            fputs(line, rf);
            fclose(rf);
        }
    }
    free(g);
    model_free(&m);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int local = 0, node_size = 1;
    ul_node_rank(&local, &node_size);
    int dev = ul_kernels_cuda_select(local);
    const KernelOps *kc = dev >= 0 ? ul_kernels_cuda() : NULL;
    int ok = kc != NULL, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    int gpus = 0; /* distinct GPUs: one per rank needed (NCCL refuses two ranks on one GPU) */
    MPI_Allreduce(&dev, &gpus, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (!all_ok || gpus + 1 < world || argc < 2) {
        if (rank == 0) printf("test_gpu_model: needs %d GPUs and the CUDA backend: skipped\n", world);
        MPI_Finalize();
        return 77;
    }
    Fixture f;
    if (fixture_load(&f, argv[1]) != 0) MPI_Abort(MPI_COMM_WORLD, 1);
    fixture_pad(&f, world);
    const ModelConfig *c = &f.c;
    LocalSeq whole = {.T = f.T, .tokens = f.tokens, .labels = f.labels, .pos = f.pos, .cu_seqlens = f.cu,
                      .n_docs = f.n_docs};
    float dscale = (float)(1.0 / (double)f.n_valid);

    /* CPU fp32 reference, one process */
    Model ref;
    model_init(&ref, c, ul_kernels_cpu(), NULL, f.T, 0);
    model_set_params(&ref, f.weights);
    double rsum = 0;
    int64_t rcnt = 0;
    model_step(&ref, &whole, dscale, 1, &rsum, &rcnt);

    /* GPU, sp = world, with each memory feature: the same loss and gradients (the features
     * share buffers between phases, e.g. the MLP's gradients over its activations, the final
     * norm's output in the recomputed layer's; memory/plan.c) */
    Mesh mesh;
    ul_mesh_init_mpi(&mesh, world, 1, 1);
    ul_mesh_init_nccl(&mesh, kc->compute_stream());
    double rloss = rsum / (double)rcnt;
    static const struct {
        const char *label;
        ModelMemOpts mo;
    } variants[] = {
        {"plain", {0, 0, 0, 0, 1, NULL}},
        {"checkpoint 1", {1, 0, 0, 0, 1, NULL}},
        {"checkpoint 1 + TiledMLP 7", {1, 7, 0, 0, 1, NULL}},
        {"checkpoint 2", {2, 0, 0, 0, 1, NULL}},
        {"checkpoint 1 offloaded", {1, 0, INT64_MAX, 0, 1, NULL}},
        {"checkpoint 2 offloaded", {2, 0, INT64_MAX, 0, 1, NULL}},
        {"checkpoint 1 every 2", {1, 0, 0, 0, 2, NULL}},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++)
        gpu_variant(&f, &mesh, kc, &ref, rloss, &variants[v].mo, variants[v].label, argv[1]);
    int fails = tu_failures;
    MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    model_free(&ref);
    ul_mesh_free(&mesh);
    fixture_free(&f);
    if (rank == 0) {
        tu_failures = fails;
        tu_finish("test_gpu_model");
    }
    MPI_Finalize();
    return fails ? 1 : 0;
}
