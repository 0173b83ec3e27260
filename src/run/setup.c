/* What every command needs before its work (train, eval, demo; plan uses the config and
 * mesh checks): errors agreed across ranks, the model config, the mesh checks, the data,
 * the backend. */
#include "run/setup.h"

#include <limits.h>
#include <mpi.h>
#include <string.h>
#include <sys/stat.h>

#include "comm/mesh.h"
#include "formats/hf_model.h"

int ul_open_data(const char *glob, int64_t seq_len, int pack, int shuffle, uint64_t seed, const ModelConfig *c,
                 DataLoader *dl, UlError *e) {
    if (data_open(dl, glob, seq_len, pack, shuffle, seed, e)) return -1;
    int rc = 0;
    if (dl->vocab_size > (uint32_t)c->vocab_size)
        rc = ul_err(e, "--data %s: the shards' vocabulary (%u) is larger than the model's vocab_size (%lld)", glob,
                    dl->vocab_size, (long long)c->vocab_size);
    for (int i = 0; i < dl->n_shards && rc == 0 && dl->vocab_size == 0; i++)
        for (int64_t j = 0; j < dl->shards[i].n_tokens; j++)
            if (dl->shards[i].tokens[j] >= (uint32_t)c->vocab_size) {
                rc = ul_err(e, "%s: token %u at position %lld is outside the model's vocab_size %lld",
                            dl->shards[i].path, dl->shards[i].tokens[j], (long long)j, (long long)c->vocab_size);
                break;
            }
    if (rc) data_close(dl);
    return rc;
}

const KernelOps *ul_select_backend(const char *device, UlError *e) {
    /* checked on any device, since the same command may run on a GPU */
    if (ul_attn_env_check(e)) return NULL;
    if (device && strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) {
        ul_err(e, "--device %s: expected cpu or cuda", device);
        return NULL;
    }
    if (device && strcmp(device, "cpu") == 0) return ul_kernels_cpu();
    int local = 0, node_size = 1;
    ul_node_rank(&local, &node_size); /* GPU local rank % GPUs of the node */
    int dev = ul_kernels_cuda_select(local);
    const KernelOps *kc = dev >= 0 ? ul_kernels_cuda() : NULL;
    if (kc) return kc;
    if (!device) return ul_kernels_cpu();
    ul_err(e, "--device cuda: %s", dev == -2 ? "this build has no CUDA backend" : "no GPU is visible");
    return NULL;
}

int ul_agree(int rc, UlError *e) {
    int rank, bad, first;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    bad = rc != 0 ? rank : INT_MAX;
    MPI_Allreduce(&bad, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == INT_MAX) return 0;
    MPI_Bcast(e->msg, (int)sizeof e->msg, MPI_CHAR, first, MPI_COMM_WORLD);
    return -1;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --model (config.json or dir) and --init (dir): the architecture, and whether they agree. */
int ul_load_model_config(const char *model, const char *init, const ModelConfig *builtin, ModelConfig *c,
                         UlError *e) {
    const char *src = model ? model : init;
    if (!src && builtin) {
        *c = *builtin;
        return ul_config_validate(c, "built-in config", e);
    }
    if (!src) return ul_err(e, "--model: required (a config.json, or a directory holding one), or --init DIR");
    char path[4096];
    snprintf(path, sizeof path, is_dir(src) ? "%s/config.json" : "%s", src);
    if (ul_config_load(path, c, e) != 0) return -1;
    if (model && init) {
        ModelConfig ci;
        char ipath[4096];
        snprintf(ipath, sizeof ipath, "%s/config.json", init);
        if (ul_config_load(ipath, &ci, e) != 0) return -1;
        if (ci.family != c->family)
            return ul_err(e, "--init %s: its config.json describes a %s, --model %s a %s", init,
                          ul_family(&ci)->architecture, model, ul_family(c)->architecture);
        if (ci.vocab_size != c->vocab_size || ci.hidden_size != c->hidden_size ||
            ci.intermediate_size != c->intermediate_size || ci.num_layers != c->num_layers ||
            ci.num_heads != c->num_heads || ci.num_kv_heads != c->num_kv_heads || ci.head_dim != c->head_dim ||
            ci.tie_word_embeddings != c->tie_word_embeddings)
            return ul_err(e, "--init %s: its config.json describes a different architecture than --model %s", init,
                          model);
    }
    return 0;
}

/* The mesh of docs/design.md §2 against the job and the model: identical outcome on every rank. */
int ul_check_mesh(int64_t sp, int64_t rep, int64_t shard, int64_t seq_len, const ModelConfig *c, int world,
                  UlError *e) {
    if (sp < 1) return ul_err(e, "--sp %lld: must be >= 1", (long long)sp);
    if (rep < 1) return ul_err(e, "--dp-replicate %lld: must be >= 1", (long long)rep);
    if (shard < 1) return ul_err(e, "--dp-shard %lld: must be >= 1", (long long)shard);
    if (sp * rep * shard != world)
        return ul_err(e,
                      "mesh: --dp-replicate %lld x --dp-shard %lld x --sp %lld = %lld ranks, but the job has %d "
                      "(mpirun -np)",
                      (long long)rep, (long long)shard, (long long)sp, (long long)(sp * rep * shard), world);
    if (c->num_heads % sp != 0)
        return ul_err(e, "--sp %lld: the model's %lld attention heads are not divisible by sp", (long long)sp,
                      (long long)c->num_heads);
    if (c->num_kv_heads % sp != 0 && sp % c->num_kv_heads != 0)
        return ul_err(e, "--sp %lld: the model's %lld kv heads neither divide by sp nor divide sp", (long long)sp,
                      (long long)c->num_kv_heads);
    if (seq_len < sp) return ul_err(e, "--seq-len %lld: shorter than --sp %lld", (long long)seq_len, (long long)sp);
    if (seq_len > INT32_MAX) return ul_err(e, "--seq-len %lld: too large", (long long)seq_len);
    return 0;
}
