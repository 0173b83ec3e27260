/* ulysses command line: a thin layer that parses flags and calls the library. */
#include <mpi.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "cli/flags.h"
#include "core/term.h"
#include "comm/mesh.h"
#include "core/threads.h"
#include "formats/hf_tokenize.h"
#include "formats/tokens.h"
#include "kernels/kernels.h"
#include "run/eval.h"
#include "run/plot.h"
#include "data/task_kv.h"
#include "run/setup.h"
#include "run/train.h"

#define NFLAGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int g_rank = 0;

static int finish(int code) {
    MPI_Finalize();
    return code;
}

static int fail(const UlError *e) {
    if (g_rank == 0) fprintf(stderr, "ulysses: error: %s\n", e->msg);
    return finish(1);
}

/* The environment variables of the commands that run the attention kernels (train, demo,
 * eval): their accepted values from the tables the backend parses (kernels/kernels.h) */
static void env_help(void) {
    char kern[160], fwd[160], h[2][700];
    ul_attn_env_values(UL_ATTN_ENV_KERNEL, " | ", kern, sizeof kern);
    ul_attn_env_values(UL_ATTN_ENV_FWD, " | ", fwd, sizeof fwd);
    snprintf(h[0], sizeof h[0],
             "%s: the CUDA attention kernels (default: the Hopper kernels where they apply, the backward fused and "
             "not bitwise reproducible; deterministic: a bitwise reproducible attention backward, 0.7-0.8x the "
             "speed; simple: the portable kernels only; the others: README, \"GPUs\"). An unknown value is "
             "refused",
             kern);
    snprintf(h[1], sizeof h[1], "%s: the Hopper attention forward's variant (the kernel lab's: bench/attention)", fwd);
    const EnvHelp vars[2] = {{"UL_ATTN_KERNEL", h[0]}, {"UL_ATTN_FWD", h[1]}};
    flags_help_env(stdout, vars, 2);
}

/* train_run's outcome as the exit code: 0, 1 (an error, reported), or 128 + the signal
 * (SIGTERM 143, SIGINT 130) after a preemption that stopped the run at a step boundary. */
static int finish_train(int rc, const UlError *e) {
    if (rc < 0) return fail(e);
    return finish(rc);
}

#define PROGRESS_HELP                                                                                   \
    "progress on stderr: bar, a live line rewritten in place; lines, plain lines (for logs); auto (default): "  \
    "bar when stderr is a terminal, or under mpirun when mpirun's stderr is one, else lines"

static const char *ABOUT_TRAIN =
    "Train a Llama-family model (Hugging Face config and weights of LlamaForCausalLM,\n"
    "Qwen2ForCausalLM, Qwen3ForCausalLM or MistralForCausalLM) on token shards,\n"
    "with Ulysses sequence parallelism over the ranks of the job: launch with\n"
    "  mpirun -np W ulysses train ...   where W = dp-replicate x dp-shard x sp.\n"
    "--batch is the global batch in sequences per optimizer step: the same command means the\n"
    "same training on any mesh. Samples pack whole documents up to --seq-len tokens.\n"
    "Checkpoints (--save-every, --resume): docs/checkpoints.md. On SIGTERM or SIGINT the ranks stop at\n"
    "the next step boundary, write a checkpoint (with --save-every) and exit with 143 / 130.";

static int cmd_train(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    int64_t checkpoint = INT64_MIN; /* not given */
    const char *tiled = NULL, *offl = NULL, *offg = NULL, *ckev = NULL, *offp = NULL, *progress = NULL;
    Flag flags[] = {
        {"--model", FLAG_STRING, &o.model, "CONFIG|DIR", "model architecture: a config.json or a directory holding one"},
        {"--init", FLAG_STRING, &o.init, "DIR", "start from the weights of this HF model directory (else random init)"},
        {"--rope-theta", FLAG_DOUBLE, &o.rope_theta, "X", "override the config's rope_theta (long-context extension)"},
        {"--rope-scaling", FLAG_STRING, &o.rope_scaling, "SPEC",
         "override rope scaling: default | llama3:factor=F[,low_freq_factor=L,high_freq_factor=H,"
         "original_max_position_embeddings=N]"},
        {"--max-position-embeddings", FLAG_INT, &o.max_position_embeddings, "N", "override the config's max_position_embeddings"},
        {"--data", FLAG_STRING, &o.data, "GLOB", "token shards (quote the glob), made by `ulysses tokenize`"},
        {"--seq-len", FLAG_INT, &o.seq_len, "N", "maximum tokens per sample (default 2048)"},
        {"--fixed-len", FLAG_BOOL, &o.fixed_len, NULL, "pad every sample to --seq-len (default: variable length)"},
        {"--doc-per-sample", FLAG_BOOL, &o.doc_per_sample, NULL, "one document per sample instead of packing"},
        {"--no-shuffle", FLAG_BOOL, &o.no_shuffle, NULL, "keep the documents in file order"},
        {"--batch", FLAG_INT, &o.batch, "B", "global batch: sequences per optimizer step (default 1)"},
        {"--grad-accum", FLAG_INT, &o.grad_accum, "A", "micro-steps per optimizer step (default 1)"},
        {"--steps", FLAG_INT, &o.steps, "S", "optimizer steps (default 100)"},
        {"--lr", FLAG_DOUBLE, &o.lr, "LR", "peak learning rate (default 3e-4)"},
        {"--min-lr-ratio", FLAG_DOUBLE, &o.min_lr_ratio, "R", "cosine decays to lr*R (default 0.1)"},
        {"--warmup", FLAG_DOUBLE, &o.warmup, "W", "linear warmup steps (default 0)"},
        {"--weight-decay", FLAG_DOUBLE, &o.weight_decay, "WD", "AdamW decoupled weight decay, not on norms (default 0.1)"},
        {"--beta1", FLAG_DOUBLE, &o.beta1, "B1", "AdamW beta1 (default 0.9)"},
        {"--beta2", FLAG_DOUBLE, &o.beta2, "B2", "AdamW beta2 (default 0.95)"},
        {"--adam-eps", FLAG_DOUBLE, &o.adam_eps, "EPS", "AdamW epsilon (default 1e-8)"},
        {"--clip", FLAG_DOUBLE, &o.clip, "C", "global gradient-norm clipping, 0 = off (default 1.0)"},
        {"--seed", FLAG_INT, &o.seed, "K", "seed for init and data order (default 1234)"},
        {"--sp", FLAG_INT, &o.sp, "N", "sequence-parallel (Ulysses) degree (default 1)"},
        {"--dp-replicate", FLAG_INT, &o.dp_replicate, "R", "data-parallel replicas (default 1)"},
        {"--dp-shard", FLAG_INT, &o.dp_shard, "S", "data-parallel shard degree (default: world / (sp x R))"},
        {"--device", FLAG_STRING, &o.device, "cpu|cuda",
         "backend (default: cuda when built with it and a GPU is visible, else cpu)"},
        {"--tiled-mlp", FLAG_STRING, &tiled, "auto|off|ROWS",
         "TiledMLP: run the MLP over tiles of ROWS tokens, recomputed in backward; no [tokens, intermediate] "
         "buffer. auto (default): untiled when the memory plan fits --gpu-mem, else the largest tile (a multiple "
         "of 64 rows) taking at most half of the memory the rest of the plan leaves; 0 or off: never"},
        {"--checkpoint", FLAG_INT, &checkpoint, "0|1|2",
         "per-layer activation checkpointing: 1 keeps only layer inputs and recomputes each layer in backward; 2 "
         "also keeps each layer's attention output + lse so the recompute skips the attention (default 0: off)"},
        {"--checkpoint-every", FLAG_STRING, &ckev, "K|auto",
         "with --checkpoint 1: keep only every K-th layer's input; the backward recomputes each segment of K "
         "layers from it (K - 1 more layer forwards per K layers, K - 1 recomputed inputs on the GPU); auto: the "
         "smallest K whose memory plan fits (default 1: every layer's)"},
        {"--offload-checkpoints", FLAG_BOOL, &o.offload_checkpoints, NULL,
         "keep the checkpointed layer inputs (and --checkpoint 2's attention outputs) in pinned host memory, "
         "copied on a side stream and prefetched one layer ahead in backward (needs --checkpoint 1|2)"},
        {"--offload-layers", FLAG_STRING, &offl, "K|auto|all",
         "with --offload-checkpoints: offload only the first K layers' saved activations, the rest stay on the GPU "
         "(for a host whose memory holds only part of them); auto: as many as --host-mem holds with the rest of "
         "the plan (without --host-mem: 90% of the node's physical memory); all (default)"},
        {"--gpu-mem", FLAG_DOUBLE, &o.gpu_mem, "GiB",
         "memory per GPU the plan must fit, else train refuses up front (default: the GPU's total on CUDA, "
         "no limit on CPU); see `ulysses plan`"},
        {"--host-mem", FLAG_DOUBLE, &o.host_mem, "GiB",
         "host memory per node the plan must fit, else train refuses up front (default: no check; "
         "--offload-layers auto then plans for 90% of the node's physical memory)"},
        {"--reserve-gib", FLAG_DOUBLE, &o.reserve_gib, "GiB",
         "CUDA context + cuBLASLt + NCCL reserve counted in the plan (default 3)"},
        {"--zero", FLAG_INT, &o.zero, "0|1|2|3",
         "ZeRO over the shard group (dp-shard x sp ranks): 1 shards the fp32 master weights and AdamW moments, 2 "
         "also reduce-scatters the gradients, 3 also shards the weights (gathered per layer, gradients "
         "reduce-scattered per layer) (default 0: replicated)"},
        {"--offload-optimizer", FLAG_BOOL, &o.offload_optimizer, NULL,
         "with --zero 1|2|3: keep the fp32 master slice and AdamW moments in (pinned) host memory, updated by a "
         "multithreaded CPU AdamW"},
        {"--offload-gradients", FLAG_STRING, &offg, "auto|all|off|K",
         "with --offload-optimizer: each gather unit's fp32 gradients (reduced over the ranks) leave for host "
         "memory right after its backward (overlapped with the next unit's) and accumulate there for the CPU "
         "AdamW; K (--zero 3): only the first K units' (the embedding, then layers 0, 1, ...), the rest stay on "
         "the GPU; auto (default): as many as --host-mem holds (before --offload-layers auto's checkpoints; "
         "without --host-mem: 90% of the node's physical memory); with --zero 1|2 all or none, and auto sends "
         "them only when the plan does not fit --gpu-mem without (each unit is then all-reduced on its own, "
         "every sample)"},
        {"--offload-params", FLAG_STRING, &offp, "auto|on|off",
         "with --zero 3 --offload-optimizer on one GPU (--sp 1 --dp-shard 1): keep the bf16 weights in pinned "
         "host memory, each layer copied in before its forward and backward, the next one prefetched on the "
         "copy stream; auto (default): only when the memory plan fits with it and not without"},
        {"--out", FLAG_STRING, &o.out, "DIR",
         "write the trained model here (config.json + model.safetensors, each replaced by rename; nothing else "
         "in DIR is touched)"},
        {"--save-dtype", FLAG_STRING, &o.save_dtype, "f32|bf16", "dtype of the written weights (default f32)"},
        {"--save-every", FLAG_INT, &o.save_every, "N",
         "training-state checkpoint every N steps and at the end, in --ckpt-dir/step-NNNNNNNN (default 0: none)"},
        {"--ckpt-dir", FLAG_STRING, &o.ckpt_dir, "DIR", "where checkpoints go (default: --out)"},
        {"--keep-last", FLAG_INT, &o.keep_last, "K", "keep only the K newest checkpoints (default 0: all)"},
        {"--resume", FLAG_STRING, &o.resume, "DIR",
         "continue exactly from a checkpoint (or the latest complete one under a --ckpt-dir); same flags, any mesh"},
        {"--stop-at", FLAG_INT, &o.stop_at, "STEP", "end this run after step STEP (the schedule still spans --steps)"},
        {"--metrics", FLAG_STRING, &o.metrics, "FILE", "JSONL metrics, one object per optimizer step"},
        {"--plot", FLAG_STRING, &o.plot, "FILE.png", "plot of the loss (and answer accuracy) against step"},
        {"--task", FLAG_STRING, &o.task, "kv", "train on the built-in synthetic key->value task instead of --data"},
        {"--eval-data", FLAG_STRING, &o.eval_data, "GLOB",
         "held-out token shards: every --eval-every steps their loss (token-weighted, forward only, on the "
         "training mesh) goes into the metrics (eval_loss, eval_tokens) and the progress line"},
        {"--eval-every", FLAG_INT, &o.eval_every, "N",
         "evaluate every N steps and at the end: --eval-data's loss, or the kv task's answer accuracy"},
        {"--eval-samples", FLAG_INT, &o.eval_samples, "N",
         "samples per evaluation (default: every sample of --eval-data once; kv task: 16 held-out samples)"},
        {"--eval-out", FLAG_STRING, &o.eval_out, "FILE",
         "JSONL of every evaluation with its buckets (position; kv task: also distance)"},
        {"--progress", FLAG_STRING, &progress, "auto|bar|lines", PROGRESS_HELP},
        {"--log-every", FLAG_INT, &o.log_every, "N", "with plain lines: one every N steps (default 1)"},
        {"--quiet", FLAG_BOOL, &o.quiet, NULL, "no progress output"},
        {"--profile", FLAG_BOOL, &o.profile, NULL,
         "metrics get attn_s, loss_s, optim_s: device time of the attention kernels, the tiled loss head and the "
         "optimizer step (events, no synchronization inside the step)"},
        {"--debug-no-exchange", FLAG_BOOL, &o.no_exchange, NULL,
         "debug: skip the all-to-all, each rank attends within its own shard only"},
        {"--debug-offload-chunk", FLAG_INT, &o.offload_chunk, "N",
         "debug: --offload-optimizer moves the gradient slice to the CPU AdamW in chunks of N elements (default "
         "64 Mi; the tests use small chunks)"},
    };
    UlError e = {{0}};
    int rc = flags_parse(flags, NFLAGS(flags), argc, argv, &e);
    if (rc == 1) {
        if (g_rank == 0) {
            flags_help(stdout, "ulysses train --model CONFIG --data GLOB [flags]", ABOUT_TRAIN, flags, NFLAGS(flags));
            env_help();
        }
        return finish(0);
    }
    if (checkpoint != INT64_MIN) /* checked with the rest in train_run (run/options.h) */
        o.checkpoint = checkpoint < -1 ? -1 : checkpoint > 99 ? 99 : (int)checkpoint;
    if (rc == 0) rc = ul_parse_tiled_mlp(tiled, &o.mlp_tile, &e);
    if (rc == 0) rc = ul_parse_offload_layers(offl, &o.offload_layers, &e);
    if (rc == 0) rc = ul_parse_offload_grads(offg, &o, &e);
    if (rc == 0) rc = ul_parse_ckpt_every(ckev, &o.ckpt_every, &e);
    if (rc == 0) rc = ul_parse_offload_params(offp, &o.offload_params, &e);
    if (rc == 0) rc = ul_parse_progress(progress, &o.progress, &e);
    if (rc) return fail(&e);
    return finish_train(train_run(&o, &e), &e);
}

static const char *ABOUT_PLAN =
    "The memory plan of a training run, without running it (one process, no GPU needed): every\n"
    "buffer per GPU and per host by name, the table of buffers the model and the optimizer are\n"
    "carved from (arena, shape, dtype, offset, bytes), and the largest --seq-len that fits\n"
    "--gpu-mem (and --host-mem). train computes the same plan and refuses up front what does\n"
    "not fit.\n"
    "With --device cpu the device buffers are each rank's share of host memory, with no limit\n"
    "unless --gpu-mem gives one. Line items and formulas: docs/memory.md.\n"
    "Exit status: 0 when the run fits, 2 when it does not, 1 on an error (flag or file).";

static int cmd_plan(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    int64_t gpus = 0, checkpoint = 0, zero = 0, per_host = 0;
    const char *device = "cuda", *tiled = NULL, *offl = NULL, *offg = NULL, *ckev = NULL, *offp = NULL;
    int offload_opt = 0;
    double gpu_mem = -1; /* not given: 139 (an H200) on CUDA, no limit on the CPU */
    Flag flags[] = {
        {"--model", FLAG_STRING, &o.model, "CONFIG|DIR", "model architecture: a config.json or a directory holding one"},
        {"--gpus", FLAG_INT, &gpus, "N", "GPUs (ranks) of the job (default: sp x dp-replicate x dp-shard)"},
        {"--gpus-per-host", FLAG_INT, &per_host, "G", "GPUs per host, for the per-host total (default: min(N, 8))"},
        {"--sp", FLAG_INT, &o.sp, "S", "sequence-parallel degree (default 1)"},
        {"--dp-replicate", FLAG_INT, &o.dp_replicate, "R", "data-parallel replicas (default 1)"},
        {"--dp-shard", FLAG_INT, &o.dp_shard, "K", "data-parallel shard degree (default: N / (sp x R))"},
        {"--seq-len", FLAG_INT, &o.seq_len, "T", "tokens per sample (default 2048)"},
        {"--checkpoint", FLAG_INT, &checkpoint, "0|1|2", "per-layer activation checkpointing, as in train (default 0)"},
        {"--checkpoint-every", FLAG_STRING, &ckev, "K|auto",
         "with --checkpoint 1: keep every K-th layer's input, recompute segments of K layers; auto: the smallest "
         "K that fits (default 1)"},
        {"--offload-checkpoints", FLAG_BOOL, &o.offload_checkpoints, NULL, "saved activations in pinned host memory"},
        {"--offload-layers", FLAG_STRING, &offl, "K|auto|all",
         "with --offload-checkpoints: only the first K layers'; auto: as many as --host-mem holds (default: all)"},
        {"--tiled-mlp", FLAG_STRING, &tiled, "auto|off|ROWS",
         "TiledMLP rows per tile; auto (default): chosen from --gpu-mem as train does (untiled when it fits)"},
        {"--zero", FLAG_INT, &zero, "0|1|2|3", "ZeRO stage over the shard group (dp-shard x sp ranks) (default 0)"},
        {"--offload-optimizer", FLAG_BOOL, &offload_opt, NULL, "fp32 master weights and AdamW moments in host memory"},
        {"--offload-gradients", FLAG_STRING, &offg, "auto|all|off|K",
         "with --offload-optimizer: the fp32 gradients of all, none or (--zero 3) the first K gather units in "
         "host memory; auto (default): --zero 3 as many as --host-mem holds, before --offload-layers auto's "
         "checkpoints; --zero 1|2 all, only when the plan does not fit the GPU without"},
        {"--offload-params", FLAG_STRING, &offp, "auto|on|off",
         "with --zero 3 --offload-optimizer on one GPU: the bf16 weights in pinned host memory, streamed in per "
         "unit; auto (default): only when the plan fits with it and not without"},
        {"--device", FLAG_STRING, &device, "cuda|cpu",
         "cuda: bf16 activations, the CUDA buffers and context reserve; cpu: fp32 (default cuda)"},
        {"--gpu-mem", FLAG_DOUBLE, &gpu_mem, "GiB",
         "device memory per rank: per GPU with --device cuda (default 139: an H200 as cudaMemGetInfo reports "
         "it), per rank with --device cpu (default: no limit)"},
        {"--host-mem", FLAG_DOUBLE, &o.host_mem, "GiB",
         "host memory per host the plan must fit (default: no limit; --offload-layers auto then offloads all)"},
        {"--reserve-gib", FLAG_DOUBLE, &o.reserve_gib, "GiB", "CUDA context + cuBLASLt + NCCL reserve (default 3)"},
    };
    UlError e = {{0}};
    int rc = flags_parse(flags, NFLAGS(flags), argc, argv, &e);
    if (rc == 1) {
        if (g_rank == 0)
            flags_help(stdout, "ulysses plan --model CONFIG --gpus N --sp S --seq-len T [flags]", ABOUT_PLAN, flags,
                       NFLAGS(flags));
        return finish(0);
    }
    ModelConfig c;
    if (rc == 0) rc = ul_load_model_config(o.model, NULL, NULL, &c, &e);
    int cuda = strcmp(device, "cuda") == 0;
    if (rc == 0 && !cuda && strcmp(device, "cpu") != 0) rc = ul_err(&e, "--device %s: expected cuda or cpu", device);
    if (rc == 0 && gpu_mem != -1 && !(gpu_mem > 0)) rc = ul_err(&e, "--gpu-mem: must be > 0 GiB");
    if (rc == 0 && gpu_mem == -1) gpu_mem = cuda ? 139.0 : 0;
    if (rc == 0) rc = ul_parse_tiled_mlp(tiled, &o.mlp_tile, &e);
    if (rc == 0) rc = ul_parse_offload_layers(offl, &o.offload_layers, &e);
    o.checkpoint = checkpoint < -1 ? -1 : checkpoint > 99 ? 99 : (int)checkpoint;
    o.zero = zero;
    o.offload_optimizer = offload_opt;
    if (rc == 0) rc = ul_parse_offload_grads(offg, &o, &e);
    if (rc == 0) rc = ul_parse_ckpt_every(ckev, &o.ckpt_every, &e);
    if (rc == 0) rc = ul_parse_offload_params(offp, &o.offload_params, &e);
    /* the same resolution and checks as train (run/options.h) */
    if (rc == 0) rc = ul_resolve_mesh(&o, gpus, 1, &c, &e);
    if (rc == 0) rc = ul_check_memory_flags(&o, &e);
    if (rc == 0 && gpus <= 0) gpus = o.sp * o.dp_replicate * o.dp_shard;
    if (rc == 0 && per_host < 0) rc = ul_err(&e, "--gpus-per-host %lld: must be >= 1", (long long)per_host);
    if (rc) return fail(&e);
    if (per_host == 0) per_host = gpus < 8 ? gpus : 8;
    PlanInput in;
    ul_plan_input(&o, &c, cuda ? 2 : 4, cuda, &in);
    int64_t lim = (int64_t)(gpu_mem * PLAN_GIB), hlim = (int64_t)(o.host_mem * PLAN_GIB);
    in.dev_limit = lim; /* --tiled-mlp auto chooses its tile for it (0: no limit) */
    in.host_limit = hlim; /* --offload-layers auto fills it (no limit: all layers) */
    in.ranks_per_host = per_host;
    Plan p;
    plan_compute(&in, &p);
    int fits = (lim <= 0 || p.dev_total <= lim) && (hlim <= 0 || p.host_total * per_host <= hlim);
    if (g_rank == 0) {
        const char *unit = cuda ? "GPU" : "rank";
        char mlp[64], od[64], ckpt_off[96] = "";
        plan_mlp_desc(&p, mlp, sizeof mlp);
        plan_offload_desc(&p, c.num_layers, od, sizeof od);
        if (o.offload_checkpoints) snprintf(ckpt_off, sizeof ckpt_off, " (offloaded: %s)", od);
        if (p.ckpt_every > 1 || p.ckpt_auto)
            snprintf(ckpt_off + strlen(ckpt_off), sizeof ckpt_off - strlen(ckpt_off), ", every %s%lld layers",
                     p.ckpt_auto ? "auto: " : "", (long long)p.ckpt_every);
        printf("memory plan: %lld %ss (sp %lld, dp_replicate %lld, dp_shard %lld), seq_len %lld (%lld tokens per %s), "
               "%s, checkpoint %lld%s, tiled-mlp %s, zero %lld%s\n\n",
               (long long)gpus, unit, (long long)o.sp, (long long)o.dp_replicate, (long long)o.dp_shard, (long long)p.T,
               (long long)p.t, unit, cuda ? "CUDA bf16" : "CPU fp32", (long long)checkpoint,
               ckpt_off, mlp, (long long)zero,
               offload_opt ? ", optimizer offloaded" : "");
        if (p.units && zero >= 1 && offload_opt) {
            char gd[64];
            plan_grads_desc(&p, gd, sizeof gd);
            printf("gradients in host memory: %s", gd);
            if (zero == 3 && o.sp * o.dp_shard == 1) /* --offload-params: one GPU per shard group */
                printf("; weights in host memory: %s%s", p.param_auto ? "auto: " : "", p.param_host ? "yes" : "no");
            printf("\n\n");
        }
        plan_print(stdout, &p, per_host, unit);
        plan_print_buffers(stdout, &p, unit);
        printf("\n");
        if (lim <= 0 && hlim <= 0) {
            printf("fits: yes (no memory limit given: --gpu-mem GiB per %s, --host-mem GiB per host)\n", unit);
            printf("largest seq_len that fits: no limit given\n");
        } else {
            char what[96] = "";
            if (lim > 0) snprintf(what, sizeof what, "%.4g GiB per %s%s", gpu_mem, unit, hlim > 0 ? " and " : "");
            if (hlim > 0) snprintf(what + strlen(what), sizeof what - strlen(what), "--host-mem");
            printf("fits %s: %s\n", what, fits ? "yes" : "NO");
            printf("largest seq_len that fits: %lld\n",
                   (long long)plan_max_seq_len(&in, lim > 0 ? lim : INT64_MAX, hlim, per_host));
        }
    }
    return finish(fits ? 0 : 2); /* 2: does not fit (documented in the help) */
}

static const char *ABOUT_TOKENIZE =
    "Turn text into a token shard (format: docs/formats.md) with the byte-level vocabulary (--bytes)\n"
    "or a Hugging Face tokenizer (--tokenizer: tokenizer.json or a model directory, then the input\n"
    "files; ids equal to the `tokenizers` library, BOS/EOS as its post-processor adds them).\n"
    "Inputs: *.jsonl, one JSON object per line: \"messages\" (role/content; loss on the assistant\n"
    "turns), \"prompt\" + \"completion\" (loss on the completion), \"input_ids\" [+ \"labels\", -100 =\n"
    "no loss] or \"text\" (or --field); any other file is plain text, one document per file or\n"
    "per blank-line block. The loss mask goes into the shard (docs/formats.md). Invalid UTF-8\n"
    "becomes U+FFFD, as Python reading with errors='replace'. --decode prints a shard as text.";

static int cmd_tokenize(int argc, char **argv) {
    const char **files = calloc((size_t)argc + 1, sizeof(char *));
    const char **tfiles = calloc((size_t)argc + 1, sizeof(char *));
    FlagStrings fs = {files, 0}, ts = {tfiles, 0};
    const char *out = NULL, *field = NULL, *bos_eos = NULL, *chat_format = NULL;
    int blank = 0, skip_bad = 0, decode = 0, jsonl = 0, keep_special = 0;
    Flag flags[] = {
        {"--bytes", FLAG_STRINGS, &fs, "FILE...", "text files to tokenize with the byte-level vocabulary (256)"},
        {"--tokenizer", FLAG_STRINGS, &ts, "TOK FILE...",
         "a Hugging Face tokenizer.json or model directory, then the files to tokenize (or shards, with --decode)"},
        {"-o", FLAG_STRING, &out, "OUT", "output token shard (with --decode: text file, default stdout)"},
        {"--split-blank-lines", FLAG_BOOL, &blank, NULL, "one document per blank-line-separated block (default: per file)"},
        {"--field", FLAG_STRING, &field, "NAME",
         "JSONL: read only this string field as each document's text (default: messages, prompt + completion, "
         "input_ids [+ labels] or text, whichever the line has)"},
        {"--chat-format", FLAG_STRING, &chat_format, "llama3|chatml",
         "JSONL messages: format them as Llama 3 or ChatML (Qwen) (default: recognized from the chat_template of "
         "tokenizer_config.json; loss on the assistant turns)"},
        {"--skip-bad-lines", FLAG_BOOL, &skip_bad, NULL,
         "JSONL: skip and count malformed lines (default: the first one is an error naming file:line)"},
        {"--bos-eos", FLAG_STRING, &bos_eos, "json|config",
         "BOS/EOS per document: json (default) as tokenizer.json's post-processor, like tokenizers and transformers 5; "
         "config: add_bos_token / add_eos_token of tokenizer_config.json beside it, like transformers 4"},
        {"--decode", FLAG_BOOL, &decode, NULL, "print the documents of token shards as text (with --tokenizer)"},
        {"--jsonl", FLAG_BOOL, &jsonl, NULL, "--decode: one {\"text\": ...} line per document (default: text, blank line after each)"},
        {"--keep-special", FLAG_BOOL, &keep_special, NULL, "--decode: keep special tokens (default: dropped, as tokenizers' decode)"},
    };
    UlError e = {{0}};
    int rc = flags_parse(flags, NFLAGS(flags), argc, argv, &e);
    if (rc != 1 && argc > 0 && argv[0][0] != '-') /* files first: the tokenizer was not named */
        rc = ul_err(&e, "tokenize %s: name the tokenizer before the files: --bytes FILE... (byte-level) or "
                        "--tokenizer TOK FILE... (a Hugging Face tokenizer.json or model directory)", argv[0]);
    if (rc == 1) {
        if (g_rank == 0)
            flags_help(stdout,
                       "ulysses tokenize (--bytes FILE... | --tokenizer TOK FILE...) -o OUT.tok\n"
                       "       ulysses tokenize --decode --tokenizer TOK SHARD.tok... [-o OUT.txt]",
                       ABOUT_TOKENIZE, flags, NFLAGS(flags));
        free(files);
        free(tfiles);
        return finish(0);
    }
    if (rc == 0 && (fs.n > 0) == (ts.n > 0)) rc = ul_err(&e, "give either --bytes FILE... or --tokenizer TOK FILE...");
    if (rc == 0 && ts.n == 1) rc = ul_err(&e, "--tokenizer %s: no input files after the tokenizer", ts.v[0]);
    if (rc == 0 && decode && fs.n) rc = ul_err(&e, "--decode needs --tokenizer TOK SHARD...");
    if (rc == 0 && !decode && !out) rc = ul_err(&e, "-o: the output shard path is required");
    if (rc == 0 && fs.n && (field || skip_bad || chat_format))
        rc = ul_err(&e, "--field, --chat-format and --skip-bad-lines go with --tokenizer (JSONL input)");
    if (rc == 0 && !decode && (jsonl || keep_special)) rc = ul_err(&e, "--jsonl and --keep-special go with --decode");
    if (rc == 0 && decode && chat_format) rc = ul_err(&e, "--chat-format goes with tokenizing, not --decode");
    if (rc == 0 && bos_eos && ((strcmp(bos_eos, "json") != 0 && strcmp(bos_eos, "config") != 0) || !ts.n || decode))
        rc = ul_err(&e, "--bos-eos %s: json or config, with --tokenizer (not --decode)", bos_eos);
    if (rc == 0 && g_rank == 0) {
        if (fs.n) rc = ul_tokenize_bytes(files, fs.n, blank, out, &e);
        else if (decode) rc = ul_detokenize(ts.v[0], ts.v + 1, ts.n - 1, keep_special, jsonl, out, &e);
        else {
            HfTokenizeOptions o = {ts.v[0], ts.v + 1, ts.n - 1, blank, field, skip_bad, out,
                                   bos_eos && strcmp(bos_eos, "config") == 0, chat_format};
            rc = ul_tokenize_hf(&o, &e);
        }
    }
    free(files);
    free(tfiles);
    if (ul_agree(rc, &e)) return fail(&e);
    return finish(0);
}

static const char *ABOUT_DEMO =
    "Train a small Llama on the built-in long-context key->value task (README: \"The demo\"),\n"
    "with Ulysses sequence parallelism over the ranks of the job (run it under mpirun -np 2).\n"
    "Queries sit in the second half of each sequence and their answers in the first half, on\n"
    "another SP rank: the task is solvable only through the all-to-all exchange. Writes the\n"
    "model (HF directory), metrics JSONL, evaluation JSONL and a PNG plot into --dir.";

static int cmd_demo(int argc, char **argv) {
    TrainOptions o;
    train_options_default(&o);
    ModelConfig cfg = kv_demo_config();
    const char *dir = "runs/demo";
    o.task = "kv";
    /* chance (1/8) to above 99% answer accuracy, about 3 minutes on 2 idle cores (mpirun -np 2);
     * 800 steps, not 600: with 600 the answer accuracy ends anywhere from 92% to 100% with
     * the random draw of the initial weights (docs/demo.md) */
    o.seq_len = 2048;
    o.steps = 800;
    o.batch = 2;
    o.lr = 3e-3;
    o.warmup = 20;
    o.weight_decay = 0.0;
    o.eval_every = 50;
    o.eval_samples = 8;
    o.seed = 1;
    o.log_every = 25; /* plain progress lines when not on a terminal */
    int64_t sp = 0;
    const char *progress = NULL;
    Flag flags[] = {
        {"--dir", FLAG_STRING, &dir, "DIR", "where the outputs go (default runs/demo)"},
        {"--steps", FLAG_INT, &o.steps, "S", "optimizer steps (default 800)"},
        {"--seq-len", FLAG_INT, &o.seq_len, "N", "tokens per sample (default 2048)"},
        {"--batch", FLAG_INT, &o.batch, "B", "sequences per step (default 2)"},
        {"--lr", FLAG_DOUBLE, &o.lr, "LR", "peak learning rate (default 3e-3)"},
        {"--eval-every", FLAG_INT, &o.eval_every, "N", "answer accuracy every N steps (default 50)"},
        {"--eval-samples", FLAG_INT, &o.eval_samples, "N", "held-out samples per evaluation (default 8)"},
        {"--seed", FLAG_INT, &o.seed, "K", "seed (default 1)"},
        {"--sp", FLAG_INT, &sp, "N", "sequence-parallel degree (default: all ranks)"},
        {"--device", FLAG_STRING, &o.device, "cpu|cuda", "backend (default: cuda when available, else cpu)"},
        {"--progress", FLAG_STRING, &progress, "auto|bar|lines", PROGRESS_HELP " (every 25 steps)"},
        {"--quiet", FLAG_BOOL, &o.quiet, NULL, "no progress output"},
        {"--debug-no-exchange", FLAG_BOOL, &o.no_exchange, NULL,
         "the control: skip the all-to-all, each rank attends within its own shard (accuracy stays at chance)"},
    };
    UlError e = {{0}};
    int rc = flags_parse(flags, NFLAGS(flags), argc, argv, &e);
    if (rc == 1) {
        if (g_rank == 0) {
            flags_help(stdout, "mpirun -np 2 ulysses demo [flags]", ABOUT_DEMO, flags, NFLAGS(flags));
            env_help();
        }
        return finish(0);
    }
    if (rc == 0) rc = ul_parse_progress(progress, &o.progress, &e);
    if (rc) return fail(&e);
    int world;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    o.sp = sp > 0 ? sp : world;
    o.config = &cfg;
    static char model[4096], metrics[4096], evals[4096], plot[4096];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    snprintf(evals, sizeof evals, "%s/eval.jsonl", dir);
    snprintf(plot, sizeof plot, "%s/demo.png", dir);
    o.out = model;
    o.metrics = metrics;
    o.eval_out = evals;
    o.plot = plot;
    /* the plot is a convenience: without gnuplot the demo still trains and writes the rest */
    int can_plot = 1;
    if (g_rank == 0) can_plot = plot_check("demo.png", &e) == 0;
    MPI_Bcast(&can_plot, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!can_plot) {
        if (g_rank == 0) fprintf(stderr, "ulysses: note: %s; the demo runs without it\n", e.msg);
        o.plot = NULL;
        snprintf(plot, sizeof plot, "(none: gnuplot missing)");
    }
    /* train_run checks every output location and creates --dir (outputs.h) */
    rc = train_run(&o, &e);
    if (rc != 0) return finish_train(rc, &e);
    if (g_rank == 0)
        printf("demo outputs:\n  model    %s  (transformers: LlamaForCausalLM.from_pretrained)\n  metrics  %s\n"
               "  evals    %s\n  plot     %s\n",
               model, metrics, evals, plot);
    return finish(0);
}

static int cmd_eval(int argc, char **argv) {
    EvalOptions o = {0};
    o.seq_len = 2048;
    o.samples = 16;
    o.seed = 7;
    Flag flags[] = {
        {"--model", FLAG_STRING, &o.model, "DIR", "model directory (config.json + safetensors)"},
        {"--task", FLAG_STRING, &o.task, "kv", "evaluate on the built-in key->value task (docs/demo.md)"},
        {"--data", FLAG_STRING, &o.data, "GLOB", "or on token shards (packed, file order): next-token loss and accuracy"},
        {"--seq-len", FLAG_INT, &o.seq_len, "N", "tokens per sample (default 2048)"},
        {"--samples", FLAG_INT, &o.samples, "N",
         "samples to evaluate (default 16); on token shards each at most once: all of them when the data holds "
         "fewer"},
        {"--seed", FLAG_INT, &o.seed, "K", "kv task: seed of the evaluation samples (default 7)"},
        {"--sp", FLAG_INT, &o.sp, "N", "sequence-parallel degree (default: all ranks)"},
        {"--out", FLAG_STRING, &o.out, "FILE", "JSONL result with the per-bucket numbers"},
        {"--plot", FLAG_STRING, &o.plot, "FILE.png", "accuracy and loss against distance and position"},
        {"--device", FLAG_STRING, &o.device, "cpu|cuda", "backend (default: cuda when available, else cpu)"},
        {"--debug-no-exchange", FLAG_BOOL, &o.no_exchange, NULL, "debug: skip the all-to-all (attend within the shard)"},
    };
    UlError e = {{0}};
    int rc = flags_parse(flags, NFLAGS(flags), argc, argv, &e);
    if (rc == 1) {
        if (g_rank == 0)
            flags_help(stdout, "[mpirun -np N] ulysses eval --model DIR (--task kv | --data GLOB) [flags]",
                       "Loss and answer accuracy of a model, overall, per bucket of distance between an answer\n"
                       "and its evidence (kv task) and per bucket of position.",
                       flags, NFLAGS(flags));
        if (g_rank == 0) env_help();
        return finish(0);
    }
    if (rc) return fail(&e);
    if (eval_command(&o, &e) != 0) return fail(&e);
    return finish(0);
}

static void usage(FILE *f) {
    fprintf(f,
            "ulysses: long-sequence training of Llama, Qwen2, Qwen3 and Mistral models with Ulysses\n"
            "sequence parallelism (ALST)\n\n"
            "usage: [mpirun -np W] ulysses COMMAND [flags]\n\n"
            "commands:\n"
            "  demo       train on the built-in long-context task (mpirun -np 2 ulysses demo)\n"
            "  train      train a model\n"
            "  eval       loss and answer accuracy of a trained model\n"
            "  plan       memory plan of a run: per-GPU and per-host buffers, largest seq_len that fits\n"
            "  tokenize   turn text or JSONL into a token shard (byte-level or a Hugging Face tokenizer)\n"
            "  help       this text; `ulysses help COMMAND` or `ulysses COMMAND --help`: that command's flags\n"
            "  --version  the version, the git commit of the build and the backends built in\n");
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} COMMANDS[] = {{"demo", cmd_demo}, {"train", cmd_train}, {"eval", cmd_eval}, {"plan", cmd_plan}, {"tokenize", cmd_tokenize}};

#ifndef UL_VERSION
#define UL_VERSION "unknown"
#endif
#if __has_include("ul_git_commit.h")
#include "ul_git_commit.h"
#endif
#ifndef UL_GIT_COMMIT
#define UL_GIT_COMMIT ""
#endif

static void version(void) {
    printf("ulysses %s%s%s%s\n", UL_VERSION, UL_GIT_COMMIT[0] ? " (git " : "", UL_GIT_COMMIT, UL_GIT_COMMIT[0] ? ")" : "");
#ifdef UL_HAVE_CUDA
    printf("backends: cpu, cuda\n");
#else
    printf("backends: cpu (built without the CUDA backend)\n");
#endif
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    ul_set_log_rank(g_rank);
    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        if (g_rank == 0) version();
        return finish(0);
    }
    int node_rank = 0, on_node = 1;
    ul_node_rank(&node_rank, &on_node); /* the host's cores are shared by the ranks on it */
    ul_threads_setup(node_rank, on_node);
    const char *name = argc >= 2 ? argv[1] : NULL;
    int is_help = name && (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0);
    if (!name || (is_help && argc < 3)) {
        if (g_rank == 0) usage(name ? stdout : stderr);
        return finish(name ? 0 : 2);
    }
    if (is_help) name = argv[2]; /* `ulysses help train`: train's help */
    for (int i = 0; i < NFLAGS(COMMANDS); i++)
        if (strcmp(name, COMMANDS[i].name) == 0) {
            if (!is_help) return COMMANDS[i].run(argc - 2, argv + 2);
            char help[] = "--help", *args[] = {help, NULL};
            return COMMANDS[i].run(1, args);
        }
    if (g_rank == 0) fprintf(stderr, "ulysses: error: unknown command '%s' (see `ulysses help`)\n", name);
    return finish(2);
}
