/* NCCL implementation of the comm interface (device buffers), for the CUDA backend.
 *
 * One process per GPU. The world communicator is created from an ncclUniqueId that rank
 * 0 broadcasts over MPI; the mesh's groups are split from it (ncclCommSplit). Every group
 * owns a communication stream: a collective waits for the compute stream (event), runs on
 * the communication stream, and the compute stream waits for it in turn (event) — no
 * device-wide synchronization. Built only with the CUDA backend (UL_HAVE_CUDA). */
#include "comm/mesh.h"

#include <stdlib.h>

#include "core/common.h"

#ifdef UL_HAVE_CUDA
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#define CUDA_CHECK(call)                                                              \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) UL_FATAL("CUDA: %s: %s", #call, cudaGetErrorString(e_)); \
    } while (0)
#define NCCL_CHECK(call)                                                                \
    do {                                                                                \
        ncclResult_t r_ = (call);                                                       \
        if (r_ != ncclSuccess) UL_FATAL("NCCL: %s: %s", #call, ncclGetErrorString(r_)); \
    } while (0)

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;  /* communication stream */
    cudaStream_t compute; /* the backend's compute stream */
    cudaEvent_t ready, done;
    /* timing (take_seconds): a start and an end event around every collective */
    cudaEvent_t *tev; /* [2 * tcap] */
    int tn, tcap;     /* pairs recorded since the last take, pairs created */
    double tacc;      /* seconds folded in when the pairs ran out */
} NcclGroup;

static NcclGroup *G(CommGroup *g) { return (NcclGroup *)g->impl; }

/* seconds of the recorded pairs (waits for them); the pairs become free again */
static double fold_pairs(NcclGroup *n) {
    double s = 0;
    for (int i = 0; i < n->tn; i++) {
        float ms = 0;
        CUDA_CHECK(cudaEventSynchronize(n->tev[2 * i + 1]));
        CUDA_CHECK(cudaEventElapsedTime(&ms, n->tev[2 * i], n->tev[2 * i + 1]));
        s += ms * 1e-3;
    }
    n->tn = 0;
    return s;
}

#define UL_NCCL_TIMING_PAIRS 1024

/* compute -> comm ordering before a collective, comm -> compute after it; the
 * collective's start and end are timed on the communication stream */
static cudaStream_t enter(NcclGroup *n) {
    CUDA_CHECK(cudaEventRecord(n->ready, n->compute));
    CUDA_CHECK(cudaStreamWaitEvent(n->stream, n->ready, 0));
    if (n->tn == n->tcap) {
        if (n->tcap < UL_NCCL_TIMING_PAIRS) {
            int cap = n->tcap ? 2 * n->tcap : 16;
            n->tev = realloc(n->tev, (size_t)(2 * cap) * sizeof(cudaEvent_t));
            UL_ASSERT(n->tev, "out of host memory");
            for (int i = 2 * n->tcap; i < 2 * cap; i++) CUDA_CHECK(cudaEventCreate(&n->tev[i]));
            n->tcap = cap;
        } else {
            n->tacc += fold_pairs(n); /* more collectives than pairs between two takes */
        }
    }
    CUDA_CHECK(cudaEventRecord(n->tev[2 * n->tn], n->stream));
    return n->stream;
}
/* the end of the collective enter() started: its timing pair, and `done` */
static void mark_end(NcclGroup *n) {
    CUDA_CHECK(cudaEventRecord(n->tev[2 * n->tn + 1], n->stream));
    n->tn++;
    CUDA_CHECK(cudaEventRecord(n->done, n->stream));
}
static void leave(NcclGroup *n) {
    mark_end(n);
    CUDA_CHECK(cudaStreamWaitEvent(n->compute, n->done, 0));
}

static double nccl_take_seconds(CommGroup *g) {
    NcclGroup *n = G(g);
    double s = n->tacc + fold_pairs(n);
    n->tacc = 0;
    return s;
}

static ncclDataType_t T(UlCommType t) {
    switch (t) {
    case UL_F32: return ncclFloat32;
    case UL_F64: return ncclFloat64;
    case UL_I64: return ncclInt64;
    case UL_BF16: return ncclBfloat16;
    }
    UL_FATAL("bad comm type %d", (int)t);
}

static void nccl_alltoall(CommGroup *g, const void *send, void *recv, size_t bytes) {
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0)
    NCCL_CHECK(ncclAlltoAll(send, recv, bytes, ncclUint8, n->comm, s));
#else
    NCCL_CHECK(ncclGroupStart());
    for (int j = 0; j < g->size; j++) {
        NCCL_CHECK(ncclSend((const char *)send + (size_t)j * bytes, bytes, ncclUint8, j, n->comm, s));
        NCCL_CHECK(ncclRecv((char *)recv + (size_t)j * bytes, bytes, ncclUint8, j, n->comm, s));
    }
    NCCL_CHECK(ncclGroupEnd());
#endif
    leave(n);
}

static void nccl_allreduce_sum(CommGroup *g, void *buf, int64_t count, UlCommType t) {
    if (g->size == 1) return;
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
    NCCL_CHECK(ncclAllReduce(buf, buf, (size_t)count, T(t), ncclSum, n->comm, s));
    leave(n);
}

static void nccl_reduce_scatter_sum(CommGroup *g, const void *send, void *recv, int64_t count, UlCommType t) {
    UL_ASSERT(count % g->size == 0, "reduce-scatter of %lld elements over %d ranks", (long long)count, g->size);
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
    NCCL_CHECK(ncclReduceScatter(send, recv, (size_t)(count / g->size), T(t), ncclSum, n->comm, s));
    leave(n);
}

static void nccl_allgather(CommGroup *g, const void *send, void *recv, int64_t count, UlCommType t) {
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
    NCCL_CHECK(ncclAllGather(send, recv, (size_t)count, T(t), n->comm, s));
    leave(n);
}

/* as nccl_allgather without the compute stream's wait: nccl_wait adds it */
static void nccl_allgather_start(CommGroup *g, const void *send, void *recv, int64_t count, UlCommType t) {
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
    NCCL_CHECK(ncclAllGather(send, recv, (size_t)count, T(t), n->comm, s));
    mark_end(n);
}

/* done marks the group stream's last collective; the stream runs them in order */
static void nccl_wait(CommGroup *g) { CUDA_CHECK(cudaStreamWaitEvent(G(g)->compute, G(g)->done, 0)); }

static void nccl_broadcast(CommGroup *g, void *buf, size_t bytes, int root) {
    NcclGroup *n = G(g);
    cudaStream_t s = enter(n);
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->comm, s));
    leave(n);
}

static void nccl_barrier(CommGroup *g) {
    NcclGroup *n = G(g);
    CUDA_CHECK(cudaStreamSynchronize(n->stream));
    CUDA_CHECK(cudaStreamSynchronize(n->compute));
    MPI_Barrier(MPI_COMM_WORLD); /* every group's ranks are in the world */
}

static const CommOps NCCL_OPS = {
    .name = "nccl",
    .alltoall = nccl_alltoall,
    .allreduce_sum = nccl_allreduce_sum,
    .reduce_scatter_sum = nccl_reduce_scatter_sum,
    .allgather = nccl_allgather,
    .allgather_start = nccl_allgather_start,
    .wait = nccl_wait,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .take_seconds = nccl_take_seconds,
};

static void group_init(CommGroup *g, ncclComm_t comm, cudaStream_t compute) {
    NcclGroup *n = ul_calloc(1, sizeof(NcclGroup));
    n->comm = comm;
    n->compute = compute;
    CUDA_CHECK(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming));
    NCCL_CHECK(ncclCommCount(comm, &g->size));
    NCCL_CHECK(ncclCommUserRank(comm, &g->rank));
    g->ops = &NCCL_OPS;
    g->impl = n;
}

static void group_free(CommGroup *g) {
    NcclGroup *n = G(g);
    if (!n) return;
    cudaStreamSynchronize(n->stream);
    ncclCommDestroy(n->comm);
    cudaStreamDestroy(n->stream);
    cudaEventDestroy(n->ready);
    cudaEventDestroy(n->done);
    for (int i = 0; i < 2 * n->tcap; i++) cudaEventDestroy(n->tev[i]);
    free(n->tev);
    free(n);
    g->impl = NULL;
}

int ul_nccl_available(void) { return 1; }

void ul_mesh_init_nccl(Mesh *m, void *compute_stream) {
    cudaStream_t cs = (cudaStream_t)compute_stream;
    ncclUniqueId id;
    if (m->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t world;
    NCCL_CHECK(ncclCommInitRank(&world, m->world, id, m->rank));
    ncclComm_t sp, dp, shard, rep;
    int r_in_shard = m->r_shard * m->sp + m->r_sp; /* as the MPI shard_g / rep_g */
    NCCL_CHECK(ncclCommSplit(world, m->r_dp, m->r_sp, &sp, NULL));
    NCCL_CHECK(ncclCommSplit(world, m->r_sp, m->r_dp, &dp, NULL));
    NCCL_CHECK(ncclCommSplit(world, m->r_rep, r_in_shard, &shard, NULL));
    NCCL_CHECK(ncclCommSplit(world, r_in_shard, m->r_rep, &rep, NULL));
    m->dev_world = ul_calloc(1, sizeof(CommGroup));
    m->dev_sp = ul_calloc(1, sizeof(CommGroup));
    m->dev_dp = ul_calloc(1, sizeof(CommGroup));
    m->dev_shard = ul_calloc(1, sizeof(CommGroup));
    m->dev_rep = ul_calloc(1, sizeof(CommGroup));
    group_init(m->dev_world, world, cs);
    group_init(m->dev_sp, sp, cs);
    group_init(m->dev_dp, dp, cs);
    group_init(m->dev_shard, shard, cs);
    group_init(m->dev_rep, rep, cs);
}

void ul_mesh_free_nccl(Mesh *m) {
    CommGroup **gs[] = {&m->dev_world, &m->dev_sp, &m->dev_dp, &m->dev_shard, &m->dev_rep};
    for (int i = 0; i < 5; i++) {
        if (*gs[i] && (*gs[i])->ops == &NCCL_OPS) {
            group_free(*gs[i]);
            free(*gs[i]);
        }
        *gs[i] = NULL;
    }
}

#else /* no CUDA backend */

int ul_nccl_available(void) { return 0; }
void ul_mesh_init_nccl(Mesh *m, void *compute_stream) {
    (void)m;
    (void)compute_stream;
    UL_FATAL("this build has no CUDA backend (NCCL)");
}
void ul_mesh_free_nccl(Mesh *m) { (void)m; }

#endif
