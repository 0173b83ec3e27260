/* Training-state checkpoints (docs/checkpoints.md): save, resume, rotate, validate.
 *
 * A checkpoint is a directory ROOT/step-NNNNNNNN holding
 *   config.json, model.safetensors   consolidated HF weights (transformers loads them, no SP)
 *   state.json                       step, schedule, optimizer, data stream, seed, mesh, parts
 *   state/part-RRRRR-of-WWWWW.safetensors
 *                                    rank R's slice [R*N/W, (R+1)*N/W) of the flat fp32
 *                                    buffers (core/params.h order): "params" (master
 *                                    weights), "exp_avg", "exp_avg_sq" (AdamW moments)
 *   COMPLETE                         written last: every file's byte size
 * Saving writes everything into ROOT/step-NNNNNNNN.tmp-PID (each rank its part, fsync),
 * agrees that every rank succeeded, then rank 0 writes the HF files, state.json and the
 * marker (all fsynced) and renames the directory to its final name: a name step-N only
 * ever appears complete, and a directory without a valid marker is never loaded.
 * Saving needs in host memory only the rank's part (and on rank 0 the full fp32 weights
 * for model.safetensors); loading reads, on each rank, only the parts that overlap the
 * ranges it asks for, so any mesh can resume any checkpoint. Every function here is collective (every rank calls it) and agrees on
 * errors with ul_agree: one message naming the file or flag on every rank. */
#ifndef UL_CHECKPOINT_H
#define UL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "core/config.h"
#include "formats/safetensors.h"
#include "train/data.h"
#include "train/train.h"

#define CKPT_MARKER "COMPLETE"
#define CKPT_STATE "state.json"
#define CKPT_FORMAT_VERSION 1

/* The run a checkpoint belongs to: what a resume must agree with. */
typedef struct {
    const TrainOptions *o;  /* flags (schedule, optimizer, data, seed); dp_shard resolved */
    const ModelConfig *c;
    const DataLoader *dl;   /* token shards, or NULL for --task */
    Mesh *mesh;
} CkptRun;

/* The training state: fully replicated flat buffers of n floats each. */
typedef struct {
    float *params, *mom1, *mom2;
    int64_t n;
} CkptState;

/* What one rank saves: its part [begin, end) = ckpt_part_range(n, world, rank) of the
 * three flat vectors, and on rank 0 the full fp32 weights for model.safetensors. */
typedef struct {
    const float *params, *mom1, *mom2; /* [end - begin] each */
    const float *model;                /* [n] on rank 0; unused elsewhere */
    int64_t n;
} CkptPart;

/* What one rank loads: flat elements [begin, end) of the three vectors into
 * params/mom1/mom2[0 : end - begin) (host). */
typedef struct {
    int64_t begin, end;
    float *params, *mom1, *mom2;
} CkptRange;

/* The part of rank `rank` of `world`: [floor(n*rank/world), floor(n*(rank+1)/world)). */
void ckpt_part_range(int64_t n, int64_t world, int64_t rank, int64_t *begin, int64_t *end);

/* --rope-theta X (0: keep), --rope-scaling SPEC (NULL: keep), --max-position-embeddings N
 * (0: keep) applied to c. SPEC: "default" (no scaling) or
 * "llama3:factor=F[,low_freq_factor=L][,high_freq_factor=H][,original_max_position_embeddings=N]";
 * keys not given keep c's llama3 values, else 1, 4 and c's max_position_embeddings (before
 * the override). Not collective; the error names the flag. */
int ckpt_apply_rope_flags(ModelConfig *c, double rope_theta, const char *rope_scaling, int64_t max_pos, UlError *e);

/* --resume ARG: a checkpoint directory, or a root holding step-N directories (then the
 * complete one with the largest N). path[cap] gets the checkpoint directory, the same on
 * every rank (rank 0 decides). */
int ckpt_resolve(const char *resume, char *path, size_t cap, UlError *e);

/* The model config of the run against PATH/config.json (architecture and RoPE); the
 * error names the file and the first field that differs. Not collective. */
int ckpt_check_config(const char *path, const ModelConfig *c, UlError *e);

/* Validates the checkpoint at path (marker, file sizes, state.json against the run, the
 * parts tiling the parameters) and loads s->params/mom1/mom2 on every rank; *step gets
 * the optimizer steps done. Nothing is modified unless everything validates... except s,
 * which is left undefined on error (the caller aborts the run). */
int ckpt_load(const char *path, const CkptRun *r, CkptState *s, int64_t *step, UlError *e);
/* The same validation, then each rank reads its ranges rg[nrg] (disjoint, inside [0, n);
 * n = the model's parameters) from the parts that overlap them: no full buffers, no
 * exchange between ranks (ZeRO slices). */
int ckpt_load_ranges(const char *path, const CkptRun *r, int64_t n, const CkptRange *rg, int64_t nrg, int64_t *step,
                     UlError *e);

/* Before training with checkpoints on: creates root, removes temporaries of interrupted
 * saves (step-*.tmp-*, step-*.del-*). A fresh run (resuming = 0) refuses a root that
 * already holds complete checkpoints (they would mix with this run's). */
int ckpt_prepare(const char *root, int resuming, UlError *e);

/* Writes ROOT/step-NNNNNNNN for `step` optimizer steps done (an existing one is replaced),
 * then, with keep_last > 0, removes the oldest complete checkpoints of steps <= step
 * beyond the keep_last newest. */
int ckpt_save(const char *root, const CkptRun *r, const CkptState *s, int64_t step, int64_t keep_last, UlError *e);
/* The same from each rank's part only (CkptPart). */
int ckpt_save_part(const char *root, const CkptRun *r, const CkptPart *p, int64_t step, int64_t keep_last, UlError *e);

/* Writes dir/config.json and dir/model.safetensors in place (dir created if missing;
 * each file atomically; other entries of dir are kept). Not collective. */
int ckpt_write_hf_files(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e);

/* A JSONL file of per-step objects ({"step": N, ...}) on resume: keeps the lines with
 * step <= step (rewritten atomically), calls fn for each kept line (may be NULL). A
 * missing file is not an error. Not collective. */
typedef void (*CkptLineFn)(void *user, int64_t step, const char *line);
int ckpt_jsonl_truncate(const char *path, int64_t step, CkptLineFn fn, void *user, UlError *e);

/* Name of the checkpoint directory of `step` inside root. */
void ckpt_step_dir(char *dst, size_t cap, const char *root, int64_t step);

#endif
