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

/* Mesh (docs/design.md §2): world = dp_replicate x dp_shard x sp, sp fastest:
 *   rank = (r_rep * dp_shard + r_shard) * sp + r_sp */
typedef struct {
    int world, rank;
    int sp, dp_replicate, dp_shard;
    int r_sp, r_shard, r_rep;
    int dp;      /* dp_replicate * dp_shard: number of distinct sample streams */
    int r_dp;    /* r_rep * dp_shard + r_shard */
    CommGroup world_g; /* all ranks */
    CommGroup sp_g;    /* same (r_rep, r_shard) */
    CommGroup dp_g;    /* same r_sp */
    CommGroup shard_g; /* same r_rep: the ZeRO shard group (dp_shard * sp ranks), rank r_shard * sp + r_sp */
    CommGroup rep_g;   /* same (r_shard, r_sp): one rank of each replica, the ones holding the same ZeRO slice */
    /* Groups for buffers in the backend's memory: the MPI groups above on the CPU, NCCL
     * groups with the CUDA backend (ul_mesh_init_nccl). Host scalars always use MPI. */
    CommGroup *dev_world, *dev_sp, *dev_dp, *dev_shard, *dev_rep;
} Mesh;

/* This process's rank among the ranks of its node, and their number (collective over
 * MPI_COMM_WORLD). */
void ul_node_rank(int *rank, int *size);

/* MPI backend. ul_mesh_init_mpi splits MPI_COMM_WORLD; the caller has validated
 * world == R*S*N. */
const CommOps *ul_comm_mpi(void);
void ul_mesh_init_mpi(Mesh *m, int sp, int dp_replicate, int dp_shard);
void ul_mesh_free(Mesh *m);

/* One message of a host exchange: bytes at buf to or from group rank peer. */
typedef struct {
    int peer;
    void *buf;
    int64_t bytes;
} UlHostMsg;
/* Point-to-point exchange of host buffers on an MPI group (g: one of the Mesh's MPI groups,
 * e.g. shard_g): posts every receive recv[0 : nr) and send send[0 : ns), then waits for all.
 * Messages between two ranks match in the order they are listed on each side (64-bit sizes,
 * sent in chunks). Collective over the ranks that exchange messages. */
void ul_mpi_exchange(CommGroup *g, const UlHostMsg *send, int64_t ns, const UlHostMsg *recv, int64_t nr);

/* NCCL groups for device buffers (CUDA backend builds only): world, sp, dp, shard and rep groups
 * split like the MPI ones; compute_stream is the backend's compute stream. */
int ul_nccl_available(void);
void ul_mesh_init_nccl(Mesh *m, void *compute_stream);
void ul_mesh_free_nccl(Mesh *m);

#endif
