/* Where samples come from: token shards (DataLoader) or the built-in kv task. */
#ifndef UL_SOURCE_H
#define UL_SOURCE_H

#include "data/data.h"
#include "data/task_kv.h"

typedef struct {
    DataLoader *dl;     /* token shards, or */
    const KvTask *kv;   /* the synthetic task */
    int64_t pad;        /* pad samples to a multiple of this (sp) */
    int fixed_len;      /* shards: pad every sample to seq_len */
} SampleSource;

/* Sample number g. dist (nullable, >= seq_len entries): the kv task's answer distances,
 * -1 everywhere for shards. */
void source_sample(const SampleSource *src, int64_t g, Sample *s, int32_t *dist);

#endif
