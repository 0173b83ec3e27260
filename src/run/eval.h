/* Evaluation: loss and answer accuracy (argmax == label over every labelled position)
 * overall, per bucket of distance between an answer and its evidence (kv task), and per
 * bucket of absolute position. Distributed like training: DP indices split the samples,
 * SP ranks their tokens. */
#ifndef UL_EVAL_H
#define UL_EVAL_H

#include <stdint.h>

#include "comm/mesh.h"
#include "model/model.h"
#include "data/source.h"

#define EVAL_BUCKETS 8

typedef struct {
    double loss;      /* mean CE over answers */
    double acc;       /* argmax == answer */
    double n;         /* answers evaluated */
    int64_t T;        /* bucket width = T / EVAL_BUCKETS (T: the maximum sample length) */
    int64_t samples;  /* samples evaluated */
    double dist_n[EVAL_BUCKETS], dist_acc[EVAL_BUCKETS], dist_loss[EVAL_BUCKETS];
    double pos_n[EVAL_BUCKETS], pos_acc[EVAL_BUCKETS], pos_loss[EVAL_BUCKETS];
} EvalResult;

/* Samples first_g .. first_g + n - 1 of the source; T_max bounds their length. Empty
 * buckets (n 0) keep accuracy and loss 0 here and are written as null. */
void eval_run(Model *m, Mesh *mesh, const SampleSource *src, int64_t T_max, int64_t first_g, int64_t n,
              EvalResult *r);

/* Appends the result as one JSON object line (with "step" when step >= 0); the accuracy
 * and loss of an empty bucket (or of no answers at all) are null. */
void eval_write_json(FILE *f, const EvalResult *r, int64_t step);


/* `ulysses eval`: a trained model directory on the kv task or on token shards. */
typedef struct {
    const char *model;   /* HF directory (config.json + weights) */
    const char *data;    /* token shards, or */
    const char *task;    /* "kv" */
    int64_t seq_len, samples, sp, seed;
    const char *out;     /* JSONL (one object) */
    const char *plot;    /* PNG */
    int no_exchange;
    const char *device;  /* cpu | cuda | NULL (auto) */
} EvalOptions;

int eval_command(const EvalOptions *o, UlError *e);

#endif
