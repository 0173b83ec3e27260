#include "model/phase.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define PHASE_MAX_PAIRS 1024

void phase_init(PhaseTimer *p, const KernelOps *k, int on) {
    memset(p, 0, sizeof *p);
    p->k = k;
    p->on = on;
}

void phase_free(PhaseTimer *p) {
    for (int i = 0; i < 2 * p->cap; i++) p->k->event_destroy(p->ev[i]);
    free(p->ev);
    memset(p, 0, sizeof *p);
}

static double fold(PhaseTimer *p) {
    double s = 0;
    for (int i = 0; i < p->n; i++) s += p->k->event_elapsed(p->ev[2 * i], p->ev[2 * i + 1]);
    p->n = 0;
    return s;
}

void phase_begin(PhaseTimer *p) {
    if (!p->on) return;
    if (p->n == p->cap) {
        if (p->cap < PHASE_MAX_PAIRS) {
            int cap = p->cap ? 2 * p->cap : 16;
            void **ev = realloc(p->ev, (size_t)(2 * cap) * sizeof(void *));
            UL_ASSERT(ev, "out of host memory");
            p->ev = ev;
            for (int i = 2 * p->cap; i < 2 * cap; i++) p->ev[i] = p->k->event_create();
            p->cap = cap;
        } else {
            p->acc += fold(p); /* more phases than pairs between two takes */
        }
    }
    p->k->event_record(p->ev[2 * p->n], UL_STREAM_COMPUTE);
}

void phase_end(PhaseTimer *p) {
    if (!p->on) return;
    p->k->event_record(p->ev[2 * p->n + 1], UL_STREAM_COMPUTE);
    p->n++;
}

double phase_take(PhaseTimer *p) {
    if (!p->on) return 0;
    double s = p->acc + fold(p);
    p->acc = 0;
    return s;
}
