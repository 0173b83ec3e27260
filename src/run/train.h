/* The training loop (backend-independent): data -> model_step per sample -> fp32
 * gradient sum over all ranks -> clip -> AdamW -> metrics, progress, output. Its options:
 * run/options.h; what it shares with the other commands: run/setup.h. */
#ifndef UL_TRAIN_H
#define UL_TRAIN_H

#include "core/common.h"
#include "run/options.h"

/* Every rank calls it (after MPI_Init). User errors are agreed on by all ranks before
 * any work and returned in e (same message on every rank); returns 0 on success, -1 on
 * an error, or 128 + the signal number when SIGTERM or SIGINT stopped the run at a step
 * boundary (after a checkpoint where --save-every is set; no --out, no plot): the same on
 * every rank. A non-finite loss or gradient norm is an error naming the step. */
int train_run(const TrainOptions *o, UlError *e);

#endif
