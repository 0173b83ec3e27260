#include "data/source.h"

void source_sample(const SampleSource *src, int64_t g, Sample *s, int32_t *dist) {
    if (src->kv) {
        kv_sample(src->kv, g, s, dist);
        return;
    }
    data_sample(src->dl, g, src->pad, src->fixed_len, s);
    if (dist)
        for (int64_t i = 0; i < s->T; i++) dist[i] = -1;
}
