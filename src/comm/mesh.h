/* The mesh of a job (docs/design.md §2) and its process groups: built over MPI (host
 * buffers, scalars) and, with the CUDA backend, over NCCL (device buffers); this process's
 * place on its node; point-to-point exchange of host buffers. The collectives themselves
 * are the interface of comm/comm.h. */
#ifndef UL_MESH_H
#define UL_MESH_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"

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
