/* Checkpoint module units (run/checkpoint.h): the RoPE override flags, the JSONL
 * truncation used on resume, and a save -> load round trip of the training state on the
 * ranks of this job (each rank writes its part, every rank reassembles all of them;
 * bit-exact), and hostile edits of a checkpoint's files (each load fails with a message
 * or gives exactly the saved state). Run under mpirun -np W (any W).
 * Usage: test_checkpoint SCRATCH_DIR */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/params.h"
#include "formats/fileio.h"
#include "testutil.h"
#include "run/checkpoint.h"

static ModelConfig base(void) {
    ModelConfig c = {0};
    c.vocab_size = 40;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 4;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5;
    c.initializer_range = 0.02;
    c.rope_theta = 10000;
    c.rope_type = UL_ROPE_DEFAULT;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

static void test_rope_flags(void) {
    UlError e = {{0}};
    ModelConfig c = base();
    CHECK(ckpt_apply_rope_flags(&c, 0, NULL, 0, &e) == 0, "no flags: %s", e.msg);
    CHECK(c.rope_theta == 10000 && c.rope_type == UL_ROPE_DEFAULT, "no flags changed the config");

    c = base();
    CHECK(ckpt_apply_rope_flags(&c, 500000, "llama3:factor=8", 8192, &e) == 0, "llama3 factor only: %s", e.msg);
    CHECK(c.rope_theta == 500000 && c.rope_type == UL_ROPE_LLAMA3 && c.rope_factor == 8 &&
              c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4 &&
              c.rope_original_max_position_embeddings == 256 && c.max_position_embeddings == 8192,
          "llama3 defaults: theta %g factor %g low %g high %g orig %lld max %lld", c.rope_theta, c.rope_factor,
          c.rope_low_freq_factor, c.rope_high_freq_factor, (long long)c.rope_original_max_position_embeddings,
          (long long)c.max_position_embeddings);

    c = base();
    CHECK(ckpt_apply_rope_flags(&c, 0,
                                "llama3:factor=32,low_freq_factor=2,high_freq_factor=8,original_max_position_embeddings=64",
                                0, &e) == 0,
          "llama3 full: %s", e.msg);
    CHECK(c.rope_factor == 32 && c.rope_low_freq_factor == 2 && c.rope_high_freq_factor == 8 &&
              c.rope_original_max_position_embeddings == 64,
          "llama3 full spec not applied");
    /* on a llama3 config, keys not given keep its values */
    CHECK(ckpt_apply_rope_flags(&c, 0, "llama3:factor=4", 0, &e) == 0, "llama3 partial: %s", e.msg);
    CHECK(c.rope_factor == 4 && c.rope_low_freq_factor == 2 && c.rope_high_freq_factor == 8 &&
              c.rope_original_max_position_embeddings == 64,
          "llama3 partial spec should keep the other values");
    CHECK(ckpt_apply_rope_flags(&c, 0, "default", 0, &e) == 0 && c.rope_type == UL_ROPE_DEFAULT, "default: %s", e.msg);

    /* the frequencies change as transformers would compute them */
    ModelConfig a = base(), b = base();
    CHECK(ckpt_apply_rope_flags(&b, 0, "llama3:factor=8,original_max_position_embeddings=16", 0, &e) == 0, "%s", e.msg);
    double fa[2], fb[2];
    ul_rope_inv_freq(&a, fa);
    ul_rope_inv_freq(&b, fb);
    /* wavelength 2*pi (medium band: interpolated) and 200*pi (> original 16: divided by the factor) */
    CHECK(fb[0] < fa[0] && fb[0] > fa[0] / 8 && fabs(fb[1] - fa[1] / 8) < 1e-15, "llama3 inv_freq: %g %g vs %g %g",
          fa[0], fa[1], fb[0], fb[1]);

    const char *bad[] = {"llama3", "llama3:", "llama3:factor", "llama3:factor=x", "llama3:fator=2", "yarn:factor=2",
                         "llama3:factor=8,low_freq_factor=4,high_freq_factor=2",
                         "llama3:factor=8,original_max_position_embeddings=1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = base();
        e.msg[0] = 0;
        int rc = ckpt_apply_rope_flags(&c, 0, bad[i], 0, &e);
        CHECK(rc != 0 && strstr(e.msg, "--rope"), "'%s' should fail naming the flag, got rc %d '%s'", bad[i], rc, e.msg);
    }
    c = base();
    CHECK(ckpt_apply_rope_flags(&c, -1, NULL, 0, &e) != 0 && strstr(e.msg, "--rope-theta"), "negative theta: %s", e.msg);
    CHECK(ckpt_apply_rope_flags(&c, 0, NULL, -5, &e) != 0 && strstr(e.msg, "--max-position-embeddings"), "bad max: %s",
          e.msg);
}

static void count_line(void *u, int64_t step, const char *line) {
    int64_t *n = u;
    CHECK(strstr(line, "\"step\"") != NULL && step <= 3, "callback got step %lld: %s", (long long)step, line);
    (*n)++;
}

static void test_jsonl(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/m.jsonl", dir);
    const char *txt = "{\"step\": 1, \"loss\": 5}\n{\"step\": 2, \"loss\": 4}\n{\"step\": 3, \"loss\": 3}\n"
                      "{\"step\": 4, \"loss\": 2}\n{\"step\": 5, \"lo";
    UlError e = {{0}};
    CHECK(ul_write_file_atomic(p, txt, strlen(txt), &e) == 0, "%s", e.msg);
    int64_t n = 0;
    CHECK(ckpt_jsonl_truncate(p, 3, count_line, &n, &e) == 0, "truncate: %s", e.msg);
    CHECK(n == 3, "kept %lld lines, want 3", (long long)n);
    char *got;
    CHECK(ul_read_file(p, 1 << 20, &got, NULL, &e) == 0, "%s", e.msg);
    CHECK(strcmp(got, "{\"step\": 1, \"loss\": 5}\n{\"step\": 2, \"loss\": 4}\n{\"step\": 3, \"loss\": 3}\n") == 0,
          "truncated file: '%s'", got);
    free(got);
    snprintf(p, sizeof p, "%s/absent.jsonl", dir);
    CHECK(ckpt_jsonl_truncate(p, 3, NULL, NULL, &e) == 0, "a missing file is not an error");
}

/* Save the state of this job's ranks, load it back (fresh buffers), compare bits. */
static void test_roundtrip(const char *dir) {
    ModelConfig c = base();
    int64_t N = ul_param_numel(&c);
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    Mesh mesh;
    ul_mesh_init_mpi(&mesh, 1, 1, world);
    TrainOptions o;
    train_options_default(&o);
    o.dp_shard = world;
    o.batch = world;
    o.steps = 9;
    o.seed = 77;
    CkptRun run = {&o, &c, NULL, &mesh};
    float *buf[6];
    for (int k = 0; k < 6; k++) buf[k] = calloc((size_t)N, sizeof(float));
    UlRng r;
    ul_rng_seed(&r, 5); /* the same on every rank: the state is replicated */
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < N; i++) buf[k][i] = (float)ul_rng_normal(&r);
    CkptState s = {buf[0], buf[1], buf[2], N}, t = {buf[3], buf[4], buf[5], N};
    char root[4200], path[4400];
    snprintf(root, sizeof root, "%s/ck", dir);
    UlError e = {{0}};
    CHECK(ckpt_prepare(root, 0, &e) == 0, "prepare: %s", e.msg);
    CHECK(ckpt_save(root, &run, &s, 4, 0, &e) == 0, "save: %s", e.msg);
    CHECK(ckpt_save(root, &run, &s, 6, 0, &e) == 0, "save: %s", e.msg);
    CHECK(ckpt_resolve(root, path, sizeof path, &e) == 0, "resolve: %s", e.msg);
    CHECK(strstr(path, "step-00000006") != NULL, "resolve picked %s", path);
    int64_t step = -1;
    CHECK(ckpt_load(path, &run, &t, &step, &e) == 0, "load: %s", e.msg);
    CHECK(step == 6, "step %lld", (long long)step);
    for (int k = 0; k < 3; k++) CHECK(memcmp(buf[k], buf[k + 3], (size_t)N * sizeof(float)) == 0, "buffer %d differs", k);
    /* each part is a separate file, written by its rank */
    for (int q = 0; q < world; q++) {
        char pp[4500];
        snprintf(pp, sizeof pp, "%s/state/part-%05d-of-%05d.safetensors", path, q, world);
        CHECK(access(pp, F_OK) == 0, "missing %s", pp);
    }
    /* a fresh run refuses a root that holds checkpoints */
    CHECK(ckpt_prepare(root, 0, &e) != 0 && strstr(e.msg, "--ckpt-dir"), "prepare on a used root: %s", e.msg);
    /* changed flags are refused, naming the flag */
    o.lr = 1e-3;
    CHECK(ckpt_load(path, &run, &t, &step, &e) != 0 && strstr(e.msg, "--lr"), "--lr change: %s", e.msg);
    o.lr = 3e-4;
    /* rotation: keep the 2 newest */
    CHECK(ckpt_save(root, &run, &s, 8, 2, &e) == 0, "save: %s", e.msg);
    if (rank == 0) {
        char q[4300];
        snprintf(q, sizeof q, "%s/step-00000004", root);
        CHECK(access(q, F_OK) != 0, "step 4 should be rotated away");
        snprintf(q, sizeof q, "%s/step-00000006", root);
        CHECK(access(q, F_OK) == 0, "step 6 should be kept");
    }
    /* hostile edits of the small files: every load either fails with a message or gives
     * exactly the saved state (never a partial or shifted load); also under ASan */
    snprintf(path, sizeof path, "%s/step-00000008", root);
    const char *victims[] = {CKPT_STATE, CKPT_MARKER, "state/part-00000-of-00001.safetensors"};
    char victim_part[64];
    snprintf(victim_part, sizeof victim_part, "state/part-%05d-of-%05d.safetensors", world - 1, world);
    victims[2] = victim_part;
    int failed_loads = 0, good_loads = 0;
    for (int v = 0; v < 3; v++) {
        char vp[4600];
        snprintf(vp, sizeof vp, "%s/%s", path, victims[v]);
        char *orig = NULL;
        size_t len = 0;
        CHECK(ul_read_file(vp, 1 << 24, &orig, &len, &e) == 0, "%s", e.msg);
        MPI_Barrier(MPI_COMM_WORLD); /* every rank has its copy before rank 0 starts rewriting the file */
        size_t span = len;
        if (v == 2 && len >= 8) span = 8 + (size_t)ul_load_le64((const uint8_t *)orig); /* the header only */
        if (span > len) span = len;
        UlRng fr;
        ul_rng_seed(&fr, 100 + (uint64_t)v);
        for (int it = 0; it < 120; it++) {
            if (rank == 0) {
                char *mod = malloc(len + 1);
                memcpy(mod, orig, len);
                size_t n = len;
                if (it < 20 && v < 2) n = (size_t)(ul_rng_u64(&fr) % len); /* truncated (the marker's size check) */
                else mod[ul_rng_u64(&fr) % span] ^= (char)(1 + ul_rng_u64(&fr) % 255);
                FILE *f = fopen(vp, "wb");
                fwrite(mod, 1, n, f);
                fclose(f);
                free(mod);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            for (int k = 3; k < 6; k++) memset(buf[k], 0xff, (size_t)N * sizeof(float));
            e.msg[0] = 0;
            step = -1;
            if (ckpt_load(path, &run, &t, &step, &e) != 0) {
                failed_loads++;
                CHECK(e.msg[0] != 0, "a failed load without a message");
            } else {
                good_loads++;
                int same = step == 8;
                for (int k = 0; k < 3; k++) same = same && memcmp(buf[k], buf[k + 3], (size_t)N * sizeof(float)) == 0;
                CHECK(same, "%s edit %d: the load succeeded but the state differs", victims[v], it);
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        if (rank == 0) {
            FILE *f = fopen(vp, "wb");
            fwrite(orig, 1, len, f);
            fclose(f);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        free(orig);
    }
    CHECK(failed_loads > 200, "only %d of 360 hostile edits were refused", failed_loads);
    if (rank == 0) printf("hostile edits: %d refused, %d harmless (state identical)\n", failed_loads, good_loads);
    CHECK(ckpt_load(path, &run, &t, &step, &e) == 0, "restored checkpoint: %s", e.msg);

    for (int k = 0; k < 6; k++) free(buf[k]);
    ul_mesh_free(&mesh);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc < 2) {
        fprintf(stderr, "usage: test_checkpoint SCRATCH_DIR\n");
        return 2;
    }
    char dir[4096];
    int world;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    snprintf(dir, sizeof dir, "%s/w%d", argv[1], world);
    if (rank == 0) {
        mkdir(argv[1], 0755);
        ul_remove_tree(dir);
        mkdir(dir, 0755);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        test_rope_flags();
        test_jsonl(dir);
    }
    test_roundtrip(dir);
    int local = tu_failures, total = 0;
    MPI_Allreduce(&local, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int code = rank == 0 ? tu_finish("checkpoint") : 0;
    if (total && !code) code = 1;
    MPI_Finalize();
    return code;
}
