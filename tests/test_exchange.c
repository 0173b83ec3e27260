/* The Ulysses exchange layout (docs/design.md §4), run under mpirun -np S:
 * seq->head puts q head h / kv head g of global token T_i exactly where §4 says,
 * head->seq inverts it, and the backward exchanges mirror them (replicated kv heads'
 * gradients summed). Values encode (token, head, dim) so every element is checked. */
#include <mpi.h>
#include <stdlib.h>

#include "comm/mesh.h"
#include "testutil.h"
#include "parallel/exchange.h"

static float code(int64_t tok, int64_t head, int64_t dim) { return (float)(tok * 1000 + head * 10 + dim); }

static void run(Mesh *m, int64_t H, int64_t Hkv, int64_t d, int64_t t) {
    const KernelOps *k = ul_kernels_cpu();
    Exchange x;
    int64_t S = m->sp, T = S * t, r = m->r_sp;
    int64_t rs = (H + 2 * Hkv) * d;
    void *staging = k->alloc((size_t)(T * rs) * sizeof(float)); /* [T, H + 2Hkv, d] >= [T, W_l, d] */
    exchange_init(&x, k, &m->sp_g, H, Hkv, d, staging);
    int64_t ws = x.W_l * d;
    float *qkv = k->alloc((size_t)(t * rs) * sizeof(float));    /* [t, H + 2Hkv, d] */
    float *qkvh = k->alloc((size_t)(T * ws) * sizeof(float));   /* [T, W_l, d] */
    float *o = k->alloc((size_t)(t * H * d) * sizeof(float));   /* [t, H*d] */
    float *oh = k->alloc((size_t)(T * x.Hq_l * d) * sizeof(float)); /* [T, Hq_l, d] */
    float *back = k->alloc((size_t)(t * rs) * sizeof(float));   /* [t, H + 2Hkv, d] */
    for (int64_t i = 0; i < t; i++)
        for (int64_t h = 0; h < H + 2 * Hkv; h++)
            for (int64_t e = 0; e < d; e++) qkv[i * rs + h * d + e] = code(r * t + i, h, e);

    exchange_qkv(&x, t, qkv, qkvh);
    int bad = 0;
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < x.W_l; h++)
            for (int64_t e = 0; e < d; e++) {
                int64_t src; /* head index in the [H + 2Hkv] numbering */
                if (h < x.Hq_l) src = r * x.Hq_l + h;
                else if (h < x.Hq_l + x.Hkv_l) src = H + exchange_kv_base(&x, r) + (h - x.Hq_l);
                else src = H + Hkv + exchange_kv_base(&x, r) + (h - x.Hq_l - x.Hkv_l);
                bad += qkvh[i * ws + h * d + e] != code(i, src, e);
            }
    CHECK(bad == 0, "sp=%lld H=%lld Hkv=%lld: %d elements misplaced after seq->head", (long long)S, (long long)H,
          (long long)Hkv, bad);
    /* every query head of this rank maps to a kv head of the group it belongs to */
    for (int64_t h = 0; h < x.Hq_l; h++) {
        int64_t gq = r * x.Hq_l + h, local_kv = h / (x.Hq_l / x.Hkv_l);
        CHECK(exchange_kv_base(&x, r) + local_kv == gq / (H / Hkv), "query head %lld served by the wrong kv head",
              (long long)gq);
    }

    /* head->seq of the q part is the identity on q */
    k->copy2d(oh, x.Hq_l * d, qkvh, ws, T, x.Hq_l * d);
    exchange_o(&x, t, oh, o);
    bad = 0;
    for (int64_t i = 0; i < t; i++)
        for (int64_t c = 0; c < H * d; c++) bad += o[i * H * d + c] != qkv[i * rs + c];
    CHECK(bad == 0, "seq->head->seq is not the identity on q (%d elements)", bad);

    /* backward of head->seq: dout -> doh returns the head-sharded layout */
    float *doh = k->alloc((size_t)(T * x.Hq_l * d) * sizeof(float));
    exchange_dout(&x, t, o, doh);
    bad = 0;
    for (int64_t i = 0; i < T * x.Hq_l * d; i++) bad += doh[i] != oh[i];
    CHECK(bad == 0, "dout seq->head does not mirror o head->seq (%d elements)", bad);

    /* backward of seq->head: q exact, kv summed over kv_rep replicas */
    exchange_dqkv(&x, t, qkvh, back);
    bad = 0;
    for (int64_t i = 0; i < t; i++)
        for (int64_t h = 0; h < H + 2 * Hkv; h++)
            for (int64_t e = 0; e < d; e++) {
                float want = qkv[i * rs + h * d + e] * (h < H ? 1.f : (float)x.kv_rep);
                bad += back[i * rs + h * d + e] != want;
            }
    CHECK(bad == 0, "dqkv head->seq wrong (%d elements, kv_rep %lld)", bad, (long long)x.kv_rep);
    k->free(qkv);
    k->free(qkvh);
    k->free(o);
    k->free(oh);
    k->free(back);
    k->free(doh);
    k->free(staging);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    Mesh m;
    ul_mesh_init_mpi(&m, world, 1, 1);
    int64_t cases[][3] = {{4, 4, 4}, {8, 2, 3}, {4, 1, 2}, {8, 8, 4}, {16, 4, 2}}; /* H, Hkv, d */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t H = cases[c][0], Hkv = cases[c][1];
        if (H % world || (Hkv % world && world % Hkv)) continue;
        run(&m, H, Hkv, cases[c][2], 5);
    }
    int fails = tu_failures;
    MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    tu_failures = fails;
    int rc = 0;
    if (m.rank == 0) rc = tu_finish("test_exchange");
    ul_mesh_free(&m);
    MPI_Finalize();
    return m.rank == 0 ? rc : (fails ? 1 : 0);
}
