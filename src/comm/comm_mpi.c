/* MPI implementation of the comm interface (host buffers). Every call is checked:
 * a failing MPI call aborts the whole job with file:line and rank. */
#include <mpi.h>
#include <stdlib.h>

#include "comm/mesh.h"
#include "core/common.h"

#define MPI_CHECK(call)                                                           \
    do {                                                                          \
        int rc_ = (call);                                                         \
        if (rc_ != MPI_SUCCESS) {                                                 \
            char s_[MPI_MAX_ERROR_STRING];                                        \
            int l_ = 0;                                                           \
            MPI_Error_string(rc_, s_, &l_);                                       \
            UL_FATAL("MPI call failed: %s: %s", #call, s_);                       \
        }                                                                         \
    } while (0)

static MPI_Comm C(CommGroup *g) { return *(MPI_Comm *)g->impl; }

static MPI_Datatype T(UlCommType t) {
    switch (t) {
    case UL_F32: return MPI_FLOAT;
    case UL_F64: return MPI_DOUBLE;
    case UL_I64: return MPI_INT64_T;
    case UL_BF16: return MPI_UINT16_T; /* moved, never summed */
    }
    UL_FATAL("bad comm type %d", (int)t);
}

/* MPI counts are int: large transfers go in chunks (docs/design.md §13: 64-bit sizes everywhere). */
#define UL_MPI_CHUNK ((int64_t)1 << 30)

static void mpi_alltoall_raw(CommGroup *g, const void *send, void *recv, size_t bytes) {
    if (bytes <= (size_t)INT32_MAX) {
        MPI_CHECK(MPI_Alltoall(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, C(g)));
        return;
    }
    /* Very large chunks: a contiguous datatype of 1 KiB blocks keeps the count in range. */
    UL_ASSERT(bytes % 1024 == 0, "all-to-all of %zu bytes per rank is not a multiple of 1 KiB", bytes);
    MPI_Datatype kb;
    MPI_CHECK(MPI_Type_contiguous(1024, MPI_BYTE, &kb));
    MPI_CHECK(MPI_Type_commit(&kb));
    MPI_CHECK(MPI_Alltoall(send, (int)(bytes / 1024), kb, recv, (int)(bytes / 1024), kb, C(g)));
    MPI_CHECK(MPI_Type_free(&kb));
}

static size_t tsize(UlCommType t) { return t == UL_BF16 ? 2 : t == UL_F32 ? 4 : 8; }

static void mpi_allreduce_sum_raw(CommGroup *g, void *buf, int64_t n, UlCommType t) {
    UL_ASSERT(t != UL_BF16, "all-reduce of bf16 is not supported");
    if (g->size == 1) return;
    for (int64_t off = 0; off < n; off += UL_MPI_CHUNK) {
        int64_t k = n - off < UL_MPI_CHUNK ? n - off : UL_MPI_CHUNK;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * tsize(t), (int)k, T(t), MPI_SUM, C(g)));
    }
}

static void mpi_reduce_scatter_sum_raw(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType t) {
    UL_ASSERT(n % g->size == 0, "reduce-scatter of %lld elements over %d ranks", (long long)n, g->size);
    UL_ASSERT(t != UL_BF16, "reduce-scatter of bf16 is not supported");
    int64_t per = n / g->size;
    UL_ASSERT(per <= INT32_MAX, "reduce-scatter chunk too large");
    MPI_CHECK(MPI_Reduce_scatter_block(send, recv, (int)per, T(t), MPI_SUM, C(g)));
}

static void mpi_allgather_raw(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType t) {
    UL_ASSERT(n <= INT32_MAX, "all-gather chunk too large");
    MPI_CHECK(MPI_Allgather(send, (int)n, T(t), recv, (int)n, T(t), C(g)));
}

static void mpi_wait(CommGroup *g) { (void)g; } /* MPI collectives complete when they return */

static void mpi_broadcast_raw(CommGroup *g, void *buf, size_t bytes, int root) {
    for (size_t off = 0; off < bytes; off += (size_t)UL_MPI_CHUNK) {
        size_t k = bytes - off < (size_t)UL_MPI_CHUNK ? bytes - off : (size_t)UL_MPI_CHUNK;
        MPI_CHECK(MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, root, C(g)));
    }
}

static void mpi_barrier_raw(CommGroup *g) { MPI_CHECK(MPI_Barrier(C(g))); }

/* the same calls, timed (take_seconds) */
#define TIMED(call)                  \
    do {                             \
        double t0_ = MPI_Wtime();    \
        call;                        \
        g->seconds += MPI_Wtime() - t0_; \
    } while (0)
static void mpi_alltoall(CommGroup *g, const void *send, void *recv, size_t bytes) {
    TIMED(mpi_alltoall_raw(g, send, recv, bytes));
}
static void mpi_allreduce_sum(CommGroup *g, void *buf, int64_t n, UlCommType t) { TIMED(mpi_allreduce_sum_raw(g, buf, n, t)); }
static void mpi_reduce_scatter_sum(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType t) {
    TIMED(mpi_reduce_scatter_sum_raw(g, send, recv, n, t));
}
static void mpi_allgather(CommGroup *g, const void *send, void *recv, int64_t n, UlCommType t) {
    TIMED(mpi_allgather_raw(g, send, recv, n, t));
}
static void mpi_broadcast(CommGroup *g, void *buf, size_t bytes, int root) { TIMED(mpi_broadcast_raw(g, buf, bytes, root)); }
static void mpi_barrier(CommGroup *g) { TIMED(mpi_barrier_raw(g)); }
static double mpi_take_seconds(CommGroup *g) {
    double s = g->seconds;
    g->seconds = 0;
    return s;
}

static const CommOps MPI_OPS = {
    .name = "mpi",
    .alltoall = mpi_alltoall,
    .allreduce_sum = mpi_allreduce_sum,
    .reduce_scatter_sum = mpi_reduce_scatter_sum,
    .allgather = mpi_allgather,
    .allgather_start = mpi_allgather,
    .wait = mpi_wait,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .take_seconds = mpi_take_seconds,
};

const CommOps *ul_comm_mpi(void) { return &MPI_OPS; }

/* Messages of one list as MPI requests of at most UL_MPI_CHUNK bytes each: how many. */
static int64_t chunk_count(const UlHostMsg *v, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += (v[i].bytes + UL_MPI_CHUNK - 1) / UL_MPI_CHUNK;
    return k;
}

void ul_mpi_exchange(CommGroup *g, const UlHostMsg *send, int64_t ns, const UlHostMsg *recv, int64_t nr) {
    UL_ASSERT(g->ops == &MPI_OPS, "ul_mpi_exchange: not an MPI group");
    int64_t nreq = chunk_count(send, ns) + chunk_count(recv, nr), k = 0;
    MPI_Request *req = ul_malloc((size_t)(nreq > 0 ? nreq : 1) * sizeof(MPI_Request)); /* [nreq] */
    const int tag = 7301;
    double t0 = MPI_Wtime();
    for (int64_t i = 0; i < nr; i++)
        for (int64_t off = 0; off < recv[i].bytes; off += UL_MPI_CHUNK) {
            int64_t b = recv[i].bytes - off < UL_MPI_CHUNK ? recv[i].bytes - off : UL_MPI_CHUNK;
            MPI_CHECK(MPI_Irecv((char *)recv[i].buf + off, (int)b, MPI_BYTE, recv[i].peer, tag, C(g), &req[k++]));
        }
    for (int64_t i = 0; i < ns; i++)
        for (int64_t off = 0; off < send[i].bytes; off += UL_MPI_CHUNK) {
            int64_t b = send[i].bytes - off < UL_MPI_CHUNK ? send[i].bytes - off : UL_MPI_CHUNK;
            MPI_CHECK(MPI_Isend((char *)send[i].buf + off, (int)b, MPI_BYTE, send[i].peer, tag, C(g), &req[k++]));
        }
    if (k > 0) MPI_CHECK(MPI_Waitall((int)k, req, MPI_STATUSES_IGNORE));
    g->seconds += MPI_Wtime() - t0;
    free(req);
}

void ul_node_rank(int *rank, int *size) {
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, rank));
    MPI_CHECK(MPI_Comm_size(node, size));
    MPI_CHECK(MPI_Comm_free(&node));
}

static void group_from_split(CommGroup *g, int color, int key) {
    MPI_Comm *c = ul_malloc(sizeof(MPI_Comm));
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color, key, c));
    g->ops = &MPI_OPS;
    g->impl = c;
    MPI_CHECK(MPI_Comm_size(*c, &g->size));
    MPI_CHECK(MPI_Comm_rank(*c, &g->rank));
}

void ul_mesh_init_mpi(Mesh *m, int sp, int dp_replicate, int dp_shard) {
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &m->world));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &m->rank));
    UL_ASSERT(m->world == sp * dp_replicate * dp_shard, "mesh %d x %d x %d != world %d", dp_replicate, dp_shard,
              sp, m->world);
    m->sp = sp;
    m->dp_replicate = dp_replicate;
    m->dp_shard = dp_shard;
    m->r_sp = m->rank % sp;
    m->r_shard = (m->rank / sp) % dp_shard;
    m->r_rep = m->rank / (sp * dp_shard);
    m->dp = dp_replicate * dp_shard;
    m->r_dp = m->r_rep * dp_shard + m->r_shard;
    group_from_split(&m->world_g, 0, m->rank);
    group_from_split(&m->sp_g, m->r_dp, m->r_sp);
    group_from_split(&m->dp_g, m->r_sp, m->r_dp);
    group_from_split(&m->shard_g, m->r_rep, m->r_shard * sp + m->r_sp);
    group_from_split(&m->rep_g, m->r_shard * sp + m->r_sp, m->r_rep);
    m->dev_world = &m->world_g;
    m->dev_sp = &m->sp_g;
    m->dev_dp = &m->dp_g;
    m->dev_shard = &m->shard_g;
    m->dev_rep = &m->rep_g;
}

static void group_free(CommGroup *g) {
    if (!g->impl) return;
    MPI_Comm_free((MPI_Comm *)g->impl);
    free(g->impl);
    g->impl = NULL;
}

void ul_mesh_free(Mesh *m) {
    if (m->dev_world && m->dev_world != &m->world_g) ul_mesh_free_nccl(m);
    group_free(&m->world_g);
    group_free(&m->sp_g);
    group_free(&m->dp_g);
    group_free(&m->shard_g);
    group_free(&m->rep_g);
}
