/* Evaluation on the kv task: loss and answer accuracy overall, per bucket of distance
 * between the answer and the value it retrieves, and per bucket of absolute position.
 * Distributed like training: DP indices split the samples, SP ranks their tokens. */
#ifndef UL_EVAL_H
#define UL_EVAL_H

#include <stdint.h>

#include "comm/comm.h"
#include "train/model.h"
#include "train/task_kv.h"

#define EVAL_BUCKETS 8

typedef struct {
    double loss;      /* mean CE over answers */
    double acc;       /* argmax == answer */
    double n;         /* answers evaluated */
    int64_t T;        /* bucket width = T / EVAL_BUCKETS */
    double dist_n[EVAL_BUCKETS], dist_acc[EVAL_BUCKETS], dist_loss[EVAL_BUCKETS];
    double pos_n[EVAL_BUCKETS], pos_acc[EVAL_BUCKETS], pos_loss[EVAL_BUCKETS];
} EvalResult;

/* Samples first_g .. first_g + n - 1 of the task. */
void eval_kv(Model *m, Mesh *mesh, const KvTask *task, int64_t first_g, int64_t n, EvalResult *r);

/* Appends the result as one JSON object line (with "step" when step >= 0). */
void eval_write_json(FILE *f, const EvalResult *r, int64_t step);

#endif
