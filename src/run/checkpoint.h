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
 * Saving streams every file from chunks of the state (CkptSource): no rank holds more
 * than a chunk of it in host memory; loading reads, on each rank, only the parts that overlap the
 * ranges it asks for, so any mesh can resume any checkpoint. Every function here is collective (every rank calls it) and agrees on
 * errors with ul_agree: one message naming the file or flag on every rank. */
#ifndef UL_CHECKPOINT_H
#define UL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "comm/mesh.h"
#include "core/config.h"
#include "formats/safetensors.h"
#include "data/data.h"
#include "run/options.h"

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

/* CKPT_CHUNK, the elements a save moves at a time: memory/plan.h (the plan charges them). */

/* What a save writes, a chunk at a time: no rank needs more than a chunk of the state in
 * host memory. The callbacks are collective over the world: every rank calls them in the
 * same order, the same number of times (so they may gather over the ranks), and returns a
 * pointer to host memory that stays valid until the next call: a buffer of the source's,
 * or the state itself where it lives in host memory. */
typedef struct {
    int64_t n;          /* parameters */
    int64_t part_chunk; /* >= 1: elements of one part() call (ckpt_part_chunk) */
    int64_t chunk;      /* >= 1: elements of one weights() call */
    /* Chunk j of vector vec (0: fp32 master weights "params", 1: AdamW m "exp_avg", 2: v
     * "exp_avg_sq") of this rank's part: ckpt_part_chunk(n, world, rank, part_chunk, j);
     * [hi - lo] elements (unused when empty). */
    const float *(*part)(void *user, int vec, int64_t j);
    /* Flat [a, b) of the fp32 weights on world rank 0 ([b - a]; the result is unused on
     * other ranks, which take part in the gathering). */
    const float *(*weights)(void *user, int64_t a, int64_t b);
    void *user;
} CkptSource;
/* What one rank loads: flat elements [begin, end) of the three vectors into
 * params/mom1/mom2[0 : end - begin) (host). */
typedef struct {
    int64_t begin, end;
    float *params, *mom1, *mom2;
} CkptRange;

/* The part of rank `rank` of `world`: [floor(n*rank/world), floor(n*(rank+1)/world)). */
void ckpt_part_range(int64_t n, int64_t world, int64_t rank, int64_t *begin, int64_t *end);
/* Chunk j of that part in chunks of c elements: [begin + j c, min(end, begin + (j + 1) c))
 * ([lo, lo) when past its end); and how many chunks the longest part of the world has. */
void ckpt_part_chunk(int64_t n, int64_t world, int64_t rank, int64_t c, int64_t j, int64_t *lo, int64_t *hi);
int64_t ckpt_part_chunks(int64_t n, int64_t world, int64_t c);

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
/* The same from a source (CkptSource): each rank streams its part, then world rank 0
 * streams model.safetensors while the others feed the gathering. */
int ckpt_save_stream(const char *root, const CkptRun *r, const CkptSource *src, int64_t step, int64_t keep_last,
                     UlError *e);

/* --out: dir/model.safetensors, then dir/config.json written by world rank 0 from src's
 * weights (streamed; part() is not used), into dir (created with its parents if missing),
 * each file atomically; every other entry of dir is kept (the user's files, the data,
 * checkpoints): an output directory is never emptied. Collective, agreed. */
int ckpt_write_out(const char *dir, const ModelConfig *c, UlDtype dtype, const CkptSource *src,
                   UlError *e);

/* A JSONL file of per-step objects ({"step": N, ...}) on resume: keeps the lines with
 * step <= step (rewritten atomically), calls fn for each kept line (may be NULL). A
 * missing file is not an error. Not collective. */
typedef void (*CkptLineFn)(void *user, int64_t step, const char *line);
int ckpt_jsonl_truncate(const char *path, int64_t step, CkptLineFn fn, void *user, UlError *e);

/* Name of the checkpoint directory of `step` inside root. */
void ckpt_step_dir(char *dst, size_t cap, const char *root, int64_t step);

#endif
