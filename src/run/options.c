/* The options of a training run (run/options.h): their defaults, the parsing of the
 * memory flags, train's memory plan (memory/plan.h) from them, and the up-front refusal
 * of a run that will not fit, with what to change. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/mesh.h"
#include "run/options.h"
#include "run/setup.h"

void train_options_default(TrainOptions *o) {
    memset(o, 0, sizeof *o);
    o->seq_len = 2048;
    o->batch = 1;
    o->grad_accum = 1;
    o->steps = 100;
    o->lr = 3e-4;
    o->min_lr_ratio = 0.1;
    o->warmup = 0;
    o->weight_decay = 0.1;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->adam_eps = 1e-8;
    o->clip = 1.0;
    o->seed = 1234;
    o->sp = 1;
    o->dp_replicate = 1;
    o->dp_shard = 0; /* 0: world / (sp * dp_replicate) */
    o->save_dtype = "f32";
    o->log_every = 1;
    o->offload_layers = -1;
    o->offload_grads = PLAN_OFFLOAD_AUTO;
    o->ckpt_every = 1;
    o->offload_params = PLAN_OFFLOAD_AUTO;
    o->eval_samples = 0; /* kv: 16; --eval-data: all of it */
    o->mlp_tile = PLAN_MLP_AUTO;
}

int ul_derive_dp_shard(TrainOptions *o, int64_t world, int gpus_flag, UlError *e) {
    if (o->dp_shard == 0) {
        int64_t q = o->sp * o->dp_replicate;
        o->dp_shard = gpus_flag && world <= 0 ? 1 : q > 0 && world % q == 0 ? world / q : -1;
        if (o->dp_shard < 1)
            return gpus_flag ? ul_err(e, "--gpus %lld: not divisible by --sp %lld x --dp-replicate %lld", (long long)world,
                                      (long long)o->sp, (long long)o->dp_replicate)
                             : ul_err(e, "mesh: %lld ranks (mpirun -np) are not divisible by --sp %lld x --dp-replicate %lld",
                                      (long long)world, (long long)o->sp, (long long)o->dp_replicate);
    }
    return 0;
}

int ul_resolve_mesh(TrainOptions *o, int64_t world, int gpus_flag, const ModelConfig *c, UlError *e) {
    if (ul_derive_dp_shard(o, world, gpus_flag, e)) return -1;
    if (gpus_flag && world <= 0) world = o->sp * o->dp_replicate * o->dp_shard;
    return ul_check_mesh(o->sp, o->dp_replicate, o->dp_shard, o->seq_len, c, (int)world, e);
}

int ul_check_memory_flags(const TrainOptions *o, UlError *e) {
    if (o->checkpoint < 0 || o->checkpoint > 2)
        return ul_err(e, "--checkpoint %d: expected 0, 1 or 2", o->checkpoint);
    if (o->ckpt_every != 1 && o->checkpoint != 1)
        return ul_err(e, "--checkpoint-every: needs --checkpoint 1 (a segment of layers is recomputed from its "
                         "first layer's input)");
    if (o->mlp_tile < 0 && o->mlp_tile != PLAN_MLP_AUTO)
        return ul_err(e, "--tiled-mlp %lld: must be >= 0 (or auto)", (long long)o->mlp_tile);
    if (o->offload_checkpoints && o->checkpoint < 1)
        return ul_err(e, "--offload-checkpoints: needs --checkpoint 1 or 2 (the saved layer inputs are what goes to host)");
    if ((o->offload_layers < -1 && o->offload_layers != PLAN_OFFLOAD_AUTO) ||
        (o->offload_layers != -1 && !o->offload_checkpoints))
        return ul_err(e, "--offload-layers: needs --offload-checkpoints");
    if (!(o->gpu_mem >= 0)) return ul_err(e, "--gpu-mem: must be >= 0 GiB");
    if (!(o->host_mem >= 0)) return ul_err(e, "--host-mem: must be >= 0 GiB");
    if (!(o->reserve_gib >= 0)) return ul_err(e, "--reserve-gib: must be >= 0 GiB");
    if (o->zero < 0 || o->zero > 3) return ul_err(e, "--zero %lld: expected 0, 1, 2 or 3", (long long)o->zero);
    if (o->offload_optimizer && o->zero < 1)
        return ul_err(e, "--offload-optimizer: needs --zero 1, 2 or 3 (the offloaded state is the rank's ZeRO slice)");
    if (o->offload_params == 1 && !(o->zero == 3 && o->offload_optimizer))
        return ul_err(e, "--offload-params on: needs --zero 3 --offload-optimizer");
    if (o->offload_params == 1 && o->sp * o->dp_shard != 1)
        return ul_err(e, "--offload-params on: needs a shard group of one GPU (--sp 1 --dp-shard 1); with more "
                         "the weights are sharded over the group already");
    if (o->offload_grads_given && !o->offload_optimizer)
        return ul_err(e, "--offload-gradients: needs --offload-optimizer (the gradients go to the CPU AdamW unit by "
                         "unit)");
    if (o->offload_grads_given && o->zero < 3 && o->offload_grads > 0)
        return ul_err(e, "--offload-gradients %lld: with --zero 1 or 2 the gradients go to host all or none (all, "
                         "off or auto); a count of units needs --zero 3", (long long)o->offload_grads);
    return 0;
}

void ul_plan_input(const TrainOptions *o, const ModelConfig *c, size_t act_bytes, int cuda, PlanInput *in) {
    plan_input_default(in);
    in->c = *c;
    in->sp = o->sp;
    in->dp_replicate = o->dp_replicate;
    in->dp_shard = o->dp_shard;
    in->seq_len = o->seq_len;
    in->act_bytes = (int64_t)act_bytes;
    in->cuda = cuda;
    in->checkpoint = o->checkpoint;
    in->ckpt_every = o->ckpt_every;
    in->mlp_tile = o->mlp_tile;
    in->offload_checkpoints = o->offload_checkpoints;
    in->offload_layers = o->offload_layers;
    in->zero = (int)o->zero;
    in->offload_optimizer = o->offload_optimizer;
    in->offload_chunk = o->offload_chunk;
    in->offload_grads = o->offload_grads;
    in->offload_params = o->offload_params;
    in->eval = (o->task || o->eval_data) && o->eval_every > 0;
    in->save_state = o->save_every > 0 || o->resume;
    in->resume = o->resume != NULL;
    in->save_out = o->out != NULL;
    if (o->reserve_gib > 0) in->reserve_gib = o->reserve_gib;
}

/* s is w1 (-> v1), w2 (-> v2) or a count >= 0: 0 with *out set, -1 otherwise */
static int word_or_count(const char *s, const char *w1, int64_t v1, const char *w2, int64_t v2, int64_t *out) {
    if (strcmp(s, w1) == 0 || strcmp(s, w2) == 0) {
        *out = strcmp(s, w1) == 0 ? v1 : v2;
        return 0;
    }
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0) return -1;
    *out = v;
    return 0;
}

int ul_parse_offload_layers(const char *s, int64_t *k, UlError *e) {
    if (s && word_or_count(s, "auto", PLAN_OFFLOAD_AUTO, "all", -1, k))
        return ul_err(e, "--offload-layers %s: expected auto, all, or a layer count >= 0", s);
    return 0;
}

int ul_parse_offload_params(const char *s, int64_t *v, UlError *e) {
    if (!s) return 0;
    if (strcmp(s, "auto") == 0 || strcmp(s, "on") == 0 || strcmp(s, "off") == 0) {
        *v = s[0] == 'a' ? PLAN_OFFLOAD_AUTO : s[1] == 'n';
        return 0;
    }
    return ul_err(e, "--offload-params %s: expected auto, on or off", s);
}

int ul_parse_ckpt_every(const char *s, int64_t *k, UlError *e) {
    if (s && (word_or_count(s, "auto", PLAN_CKPT_AUTO, "auto", PLAN_CKPT_AUTO, k) || *k == 0))
        return ul_err(e, "--checkpoint-every %s: expected auto or a layer count >= 1", s);
    return 0;
}

int ul_parse_offload_grads(const char *s, TrainOptions *o, UlError *e) {
    if (!s) return 0;
    int64_t k;
    if (strcmp(s, "off") == 0)
        k = 0;
    else if (word_or_count(s, "auto", PLAN_OFFLOAD_AUTO, "all", -1, &k))
        return ul_err(e, "--offload-gradients %s: expected auto, all, off, or a count of gather units >= 0", s);
    o->offload_grads = k;
    o->offload_grads_given = 1;
    return 0;
}

int ul_parse_tiled_mlp(const char *s, int64_t *rows, UlError *e) {
    if (s && word_or_count(s, "auto", PLAN_MLP_AUTO, "off", 0, rows))
        return ul_err(e, "--tiled-mlp %s: expected auto, off, or rows per tile (an integer >= 0; 0 = off)", s);
    return 0;
}

static double gib(int64_t b) { return (double)b / PLAN_GIB; }

/* ", FLAG (X GiB)" when the changed input fits the limit. */
static size_t suggest(char *buf, size_t o, size_t n, const PlanInput *in, int64_t lim, const char *flag) {
    Plan p;
    plan_compute(in, &p);
    if (p.dev_total > lim || o >= n) return o;
    return o + (size_t)snprintf(buf + o, n - o, "%s%s (%.2f GiB)", o ? ", " : "", flag, gib(p.dev_total));
}

int ul_plan_check(const TrainOptions *o, const ModelConfig *c, const KernelOps *k, int on_gpu, Plan *p, UlError *e) {
    PlanInput in;
    ul_plan_input(o, c, k->act_bytes, on_gpu, &in);
    /* the limit: --gpu-mem, else the smallest GPU of the job (the auto TiledMLP tile is
     * chosen from it: every rank must choose the same) */
    int64_t lim = 0;
    if (o->gpu_mem > 0)
        lim = (int64_t)(o->gpu_mem * PLAN_GIB);
    else if (on_gpu) {
        long long mine = k->device_mem_total(), least = 0;
        int mrc = MPI_Allreduce(&mine, &least, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
        UL_ASSERT(mrc == MPI_SUCCESS, "MPI_Allreduce (the smallest GPU memory of the job) failed: %d", mrc);
        lim = (int64_t)least;
    }
    in.dev_limit = lim;
    int node_rank = 0, node_size = 1;
    ul_node_rank(&node_rank, &node_size);
    if (in.offload_layers == PLAN_OFFLOAD_AUTO || in.offload_grads == PLAN_OFFLOAD_AUTO ||
        in.ckpt_every == PLAN_CKPT_AUTO) {
        /* --offload-layers auto and --offload-gradients auto fill --host-mem, else 90 % of the node's memory (the
         * smallest node's: every rank chooses the same) */
        long long mine = o->host_mem > 0 ? (long long)(o->host_mem * PLAN_GIB)
                                         : (long long)(0.9 * (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE));
        long long least = 0;
        int mrc = MPI_Allreduce(&mine, &least, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
        UL_ASSERT(mrc == MPI_SUCCESS, "MPI_Allreduce (the smallest host memory of the job) failed: %d", mrc);
        in.host_limit = (int64_t)least;
        in.ranks_per_host = node_size;
    }
    plan_compute(&in, p);
    if (o->host_mem > 0 && gib(p->host_total) * node_size > o->host_mem)
        return ul_err(e,
                      "memory plan: %.2f GiB of host memory per rank x %d ranks on this node is more than --host-mem "
                      "%.2f GiB (leave out --offload-checkpoints, offload fewer layers with --offload-layers K or auto, "
                      "fewer gradients with --offload-gradients K or auto, or use more nodes)",
                      gib(p->host_total), node_size, o->host_mem);
    if (lim <= 0 || p->dev_total <= lim) return 0;
    char lim_s[96], top[320], fix[400] = "";
    if (o->gpu_mem > 0)
        snprintf(lim_s, sizeof lim_s, "--gpu-mem %.2f GiB", o->gpu_mem);
    else
        snprintf(lim_s, sizeof lim_s, "the GPU's %.2f GiB (set --gpu-mem to plan for another)", gib(lim));
    plan_top_items(p, 3, top, sizeof top);
    size_t f = 0;
    PlanInput q = in;
    if (in.checkpoint == 0) {
        q.checkpoint = 1;
        f = suggest(fix, f, sizeof fix, &q, lim, "--checkpoint 1");
    }
    if (in.checkpoint == 1 && in.ckpt_every != PLAN_CKPT_AUTO) { /* sparser checkpoints */
        PlanInput ke = in;
        ke.ckpt_every = PLAN_CKPT_AUTO;
        f = suggest(fix, f, sizeof fix, &ke, lim, "--checkpoint-every auto");
    }
    if (!in.offload_checkpoints) {
        q.offload_checkpoints = 1;
        f = suggest(fix, f, sizeof fix, &q, lim, in.checkpoint ? "--offload-checkpoints" : "--checkpoint 1 --offload-checkpoints");
    }
    if (q.mlp_tile != PLAN_MLP_AUTO) {
        q.mlp_tile = PLAN_MLP_AUTO;
        f = suggest(fix, f, sizeof fix, &q, lim, "... --tiled-mlp auto");
    }
    if (in.zero < 3) { /* the weights and gradients sharded as well */
        PlanInput z3 = in;
        z3.zero = 3;
        f = suggest(fix, f, sizeof fix, &z3, lim, "--zero 3");
    }
    PlanInput s2 = in;
    s2.sp = in.sp * 2;
    if (ul_heads_split_ok(c->num_heads, c->num_kv_heads, s2.sp)) {
        char flag[64];
        snprintf(flag, sizeof flag, "--sp %lld on twice the GPUs", (long long)s2.sp);
        f = suggest(fix, f, sizeof fix, &s2, lim, flag);
    }
    int64_t T = plan_max_seq_len(&in, lim, 0, 1);
    if (f < sizeof fix)
        snprintf(fix + f, sizeof fix - f, "%s%s", f ? ", or " : "",
                 T > 0 ? "" : "nothing at this mesh: more GPUs (--sp)");
    char tmax[64] = "";
    if (T > 0) snprintf(tmax, sizeof tmax, "--seq-len <= %lld", (long long)T);
    return ul_err(e, "memory plan: %.2f GiB per GPU does not fit %s; largest: %s; to fit: %s%s", gib(p->dev_total),
                  lim_s, top, fix, tmax);
}
