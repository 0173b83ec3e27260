/* The communication interface: collectives on a process group. The MPI implementation
 * (comm_mpi.c) serves CPU ranks; an NCCL implementation plugs in behind the same table.
 * Buffers live where the backend's kernels keep data (host for CPU, device for CUDA). */
#ifndef UL_COMM_H
#define UL_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct CommGroup CommGroup;

/* UL_BF16: 2-byte elements, for all-gathers of bf16 act buffers (no sums on it). */
typedef enum { UL_F32 = 0, UL_F64 = 1, UL_I64 = 2, UL_BF16 = 3 } UlCommType;

typedef struct CommOps {
    const char *name;
    /* Equal-chunk all-to-all: chunk j of send (bytes_per_rank bytes) goes to rank j,
     * chunk i of recv comes from rank i. Like every collective here but allgather_start,
     * the compute issued after it waits for it (NCCL: its stream is joined back). */
    void (*alltoall)(CommGroup *g, const void *send, void *recv, size_t bytes_per_rank);
    /* In-place sum over the group. */
    void (*allreduce_sum)(CommGroup *g, void *buf, int64_t n, UlCommType type);
    /* recv[n/size] = sum over ranks of send[rank*n/size ...] (n divisible by size). */
    void (*reduce_scatter_sum)(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType type);
    /* recv[n*size] = concat over ranks of send[n]. */
    void (*allgather)(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType type);
    /* allgather whose result later work does not wait for until wait(g): NCCL runs it on the
     * group's stream after the compute queued so far and returns, so compute issued next
     * overlaps it (a prefetch); MPI runs it at once. */
    void (*allgather_start)(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType type);
    /* the compute issued from now on waits for every collective issued on g so far */
    void (*wait)(CommGroup *g);
    void (*broadcast)(CommGroup *g, void *buf, size_t bytes, int root);
    void (*barrier)(CommGroup *g);
    /* Seconds this group's collectives took since the previous call (0 at first): wall
     * time inside the calls (MPI); device time on the communication stream between the
     * start and end of each collective, waiting for its peers included (NCCL; waits for
     * the collectives queued so far). */
    double (*take_seconds)(CommGroup *g);
} CommOps;

struct CommGroup {
    const CommOps *ops;
    int size, rank;
    void *impl; /* backend handle (an MPI_Comm*, an ncclComm_t, ...) */
    double seconds; /* MPI: wall time in collectives not yet taken (take_seconds) */
};

#endif
