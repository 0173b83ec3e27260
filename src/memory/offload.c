#include "memory/offload.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

/* device buffers: the ring slots of the offloaded items, then one per resident item */
int64_t actstore_dev_slots(int64_t n, int64_t n_off) {
    return (n_off < ACTSTORE_RING ? n_off : ACTSTORE_RING) + (n - n_off);
}
static int64_t n_ring(const ActStore *s) { return s->n_off < ACTSTORE_RING ? s->n_off : ACTSTORE_RING; }
static int64_t n_slots(const ActStore *s) { return actstore_dev_slots(s->n, s->n_off); }
static int resident(const ActStore *s, int64_t i) { return i >= s->n_off; }
static void *resident_buf(const ActStore *s, int64_t i) { return s->dev[n_ring(s) + (i - s->n_off)]; }

void actstore_init(ActStore *s, const KernelOps *k, int64_t n, size_t bytes, int64_t n_off, void *dev,
                   size_t dev_stride, void *host, size_t host_stride) {
    memset(s, 0, sizeof *s);
    s->k = k;
    s->n = n;
    s->bytes = bytes;
    s->n_off = n_off < 0 ? 0 : n_off < n ? n_off : n;
    s->offload = s->n_off > 0;
    int64_t ns = n_slots(s);
    UL_ASSERT((ns == 0 || dev) && (!s->offload || host) && dev_stride >= bytes && (!s->offload || host_stride >= bytes),
              "actstore_init: %lld slots and %lld host items of %zu bytes need their memory", (long long)ns,
              (long long)s->n_off, bytes);
    s->dev = ul_calloc((size_t)(ns > 0 ? ns : 1), sizeof(void *));
    for (int64_t i = 0; i < ns; i++) s->dev[i] = (char *)dev + i * dev_stride;
    for (int r = 0; r < ACTSTORE_RING; r++) s->slot_item[r] = -1;
    if (!s->offload) return;
    s->host = ul_calloc((size_t)s->n_off, sizeof(void *));
    for (int64_t i = 0; i < s->n_off; i++) s->host[i] = (char *)host + i * host_stride;
    for (int r = 0; r < ACTSTORE_RING; r++) {
        s->ev_copy[r] = k->event_create();
        s->ev_use[r] = k->event_create();
        /* recorded once so that the first waits have something to wait for */
        k->event_record(s->ev_copy[r], UL_STREAM_COPY);
        k->event_record(s->ev_use[r], UL_STREAM_COMPUTE);
    }
    s->ev_t0 = ul_calloc((size_t)(2 * s->n_off), sizeof(void *));
    s->ev_t1 = ul_calloc((size_t)(2 * s->n_off), sizeof(void *));
    for (int64_t j = 0; j < 2 * s->n_off; j++) {
        s->ev_t0[j] = k->event_create();
        s->ev_t1[j] = k->event_create();
    }
}

void actstore_free(ActStore *s) {
    const KernelOps *k = s->k;
    if (!k) return;
    free(s->dev);
    if (s->offload) {
        free(s->host);
        for (int r = 0; r < ACTSTORE_RING; r++) {
            k->event_destroy(s->ev_copy[r]);
            k->event_destroy(s->ev_use[r]);
        }
        for (int64_t j = 0; j < 2 * s->n_off; j++) {
            k->event_destroy(s->ev_t0[j]);
            k->event_destroy(s->ev_t1[j]);
        }
        free(s->ev_t0);
        free(s->ev_t1);
    }
    memset(s, 0, sizeof *s);
}

/* One copy on the copy stream, timed while the step's event pairs last. */
static void copy(ActStore *s, void *dst, const void *src, int to_host) {
    const KernelOps *k = s->k;
    int timed = s->n_copies < 2 * s->n_off;
    if (timed) k->event_record(s->ev_t0[s->n_copies], UL_STREAM_COPY);
    k->copy_async(dst, src, s->bytes, to_host);
    if (timed) k->event_record(s->ev_t1[s->n_copies++], UL_STREAM_COPY);
}

void *actstore_write(ActStore *s, int64_t i) {
    UL_ASSERT(i >= 0 && i < s->n, "saved activation %lld of %lld", (long long)i, (long long)s->n);
    if (resident(s, i)) return resident_buf(s, i);
    int r = (int)(i % ACTSTORE_RING);
    s->k->event_wait(UL_STREAM_COMPUTE, s->ev_copy[r]); /* the slot's previous item is out (or in) */
    s->slot_item[r] = i;
    return s->dev[r];
}

void actstore_saved(ActStore *s, int64_t i) {
    if (resident(s, i)) return;
    int r = (int)(i % ACTSTORE_RING);
    const KernelOps *k = s->k;
    k->event_record(s->ev_use[r], UL_STREAM_COMPUTE); /* item i is complete */
    k->event_wait(UL_STREAM_COPY, s->ev_use[r]);
    copy(s, s->host[i], s->dev[r], 1);
    k->event_record(s->ev_copy[r], UL_STREAM_COPY);
}

void actstore_prefetch(ActStore *s, int64_t i) {
    if (i < 0 || resident(s, i)) return;
    int r = (int)(i % ACTSTORE_RING);
    if (s->slot_item[r] == i) return; /* still there from the forward, or already fetched */
    const KernelOps *k = s->k;
    k->event_wait(UL_STREAM_COPY, s->ev_use[r]); /* compute released the slot's previous item */
    copy(s, s->dev[r], s->host[i], 0);
    k->event_record(s->ev_copy[r], UL_STREAM_COPY);
    s->slot_item[r] = i;
}

void *actstore_read(ActStore *s, int64_t i) {
    UL_ASSERT(i >= 0 && i < s->n, "saved activation %lld of %lld", (long long)i, (long long)s->n);
    if (resident(s, i)) return resident_buf(s, i);
    int r = (int)(i % ACTSTORE_RING);
    actstore_prefetch(s, i);
    /* the slot's last copy is either this item's H2D or its own D2H (reading alongside that
     * is harmless): waiting covers the first case */
    s->k->event_wait(UL_STREAM_COMPUTE, s->ev_copy[r]);
    return s->dev[r];
}

void actstore_release(ActStore *s, int64_t i) {
    if (resident(s, i)) return;
    s->k->event_record(s->ev_use[i % ACTSTORE_RING], UL_STREAM_COMPUTE);
}

double actstore_copy_seconds(ActStore *s) {
    double t = 0;
    for (int64_t j = 0; j < s->n_copies; j++) t += s->k->event_elapsed(s->ev_t0[j], s->ev_t1[j]);
    s->n_copies = 0;
    return t;
}

int64_t actstore_dev_bytes(const ActStore *s) { return n_slots(s) * (int64_t)s->bytes; }
int64_t actstore_host_bytes(const ActStore *s) { return s->n_off * (int64_t)s->bytes; }
