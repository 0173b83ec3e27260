/* Device time of a phase of the step (attention kernels, loss head, optimizer), measured
 * with the backend's events on the compute stream: begin/end record a pair of events
 * (no synchronization), phase_take() waits for them and returns the summed seconds. On the CPU
 * the events hold wall-clock times, so the same code measures host time. Off (no events,
 * phase_take() returns 0) unless phase_init was called with on = 1. */
#ifndef UL_PHASE_H
#define UL_PHASE_H

#include "kernels/kernels.h"

typedef struct {
    const KernelOps *k;
    int on;
    void **ev;   /* [2 * cap] start, end of every pair */
    int n, cap;  /* pairs recorded since the last take, pairs created */
    double acc;  /* seconds folded in when the pairs ran out */
} PhaseTimer;

void phase_init(PhaseTimer *p, const KernelOps *k, int on);
void phase_free(PhaseTimer *p);
void phase_begin(PhaseTimer *p);
void phase_end(PhaseTimer *p);
/* seconds of the pairs since the last take (waits for them) */
double phase_take(PhaseTimer *p);

#endif
