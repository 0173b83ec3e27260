/* Saved activations of the per-layer checkpointing (docs/design.md §8), optionally offloaded to
 * host memory: n items of `bytes` each (the layer inputs xin[0..L], or with --checkpoint 2
 * each layer's attention output / lse), written in forward order and read back in reverse.
 *
 * Without offload every item has its own device slot. With offload the first n_off items
 * (all, or fewer when host memory is short: the partial offload) live in page-locked host
 * memory and share a ring of ACTSTORE_RING device slots, item i
 * < n_off in slot i % ACTSTORE_RING; the items from n_off on keep their own device buffers
 * (the last ones written, the first read back: no copy and no wait for them). An offloaded
 * item goes through:
 *   forward   p = actstore_write(s, i)   compute waits until the slot's previous content
 *                                        has reached the host (its D2H copy finished)
 *             ... compute writes p ...
 *             actstore_saved(s, i)       the D2H copy of item i, on the copy stream, after
 *                                        the compute that produced it (event)
 *   backward  p = actstore_read(s, i)    the item is in its slot (copied back if needed);
 *                                        compute waits for that copy
 *             actstore_prefetch(s, i-1)  the H2D copy of the next item starts now, after
 *                                        the compute released its slot, and overlaps the
 *                                        rest of item i's backward
 *             ... compute reads p ...
 *             actstore_release(s, i)     compute is done with the slot
 * Ordering is by events only (no device-wide sync). On the CPU backend copies are plain
 * memcpy and waits no-ops, so the same code runs (and is tested) there. */
#ifndef UL_OFFLOAD_H
#define UL_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#define ACTSTORE_RING 2

typedef struct {
    const KernelOps *k;
    int64_t n;              /* items */
    size_t bytes;           /* per item */
    int64_t n_off;          /* items offloaded: [0, n_off) */
    int offload;            /* n_off > 0 */
    void **dev;             /* [min(n_off, ACTSTORE_RING) + n - n_off]: the ring slots, then the resident items */
    void **host;            /* [n_off] page-locked host copies */
    int64_t slot_item[ACTSTORE_RING]; /* item held by each slot, -1: none */
    void *ev_copy[ACTSTORE_RING];     /* the last copy into / out of the slot is done */
    void *ev_use[ACTSTORE_RING];      /* compute done producing / reading the slot */
    void **ev_t0, **ev_t1;  /* [2 n_off] start/end of every copy of the current step (timing) */
    int64_t n_copies;       /* copies timed since the last actstore_copy_seconds */
} ActStore;

/* Device slots of a store of n items with n_off offloaded: the ring's, then one per resident item. */
int64_t actstore_dev_slots(int64_t n, int64_t n_off);
/* n_off: items [0, n_off) offloaded (clamped to [0, n]; 0: none, n or more: all). The memory
 * is the caller's (the model's arenas, memory/plan.h): dev holds actstore_dev_slots(n, n_off)
 * slots dev_stride bytes apart, host the n_off offloaded items host_stride bytes apart
 * (page-locked: KernelOps.host_alloc); both strides >= bytes. */
void actstore_init(ActStore *s, const KernelOps *k, int64_t n, size_t bytes, int64_t n_off, void *dev,
                   size_t dev_stride, void *host, size_t host_stride);
/* Its events and bookkeeping; the memory is the caller's (freeing host memory waits for the
 * copies in flight: the model frees its arenas first). */
void actstore_free(ActStore *s);
void *actstore_write(ActStore *s, int64_t i);
void actstore_saved(ActStore *s, int64_t i);
void *actstore_read(ActStore *s, int64_t i);
void actstore_prefetch(ActStore *s, int64_t i); /* no-op for i < 0 */
void actstore_release(ActStore *s, int64_t i);
/* Device time spent in copies since the last call (waits for them); 0 without offload. */
double actstore_copy_seconds(ActStore *s);
/* Bytes this store keeps on the device and in host memory. */
int64_t actstore_dev_bytes(const ActStore *s);
int64_t actstore_host_bytes(const ActStore *s);

#endif
