/* The whole model against Hugging Face transformers (docs/design.md §11, step 2): a fixture
 * made by scripts/make_hf_fixtures.py (float64 reference of LlamaForCausalLM) gives
 * weights, one packed batch, the logits, the loss and every parameter gradient.
 * Usage: test_model_hf FIXTURE_DIR */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "testutil.h"
#include "model/model.h"

typedef struct {
    const float *ref; /* [T, V] */
    double worst;
} LogitCheck;

static void check_row(void *u, int64_t i, const float *row, int64_t V) {
    LogitCheck *lc = u;
    double e = tu_rel_err_f32(row, lc->ref + i * V, V, 1.0);
    if (e > lc->worst) lc->worst = e;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_model_hf FIXTURE_DIR\n");
        return 2;
    }
    Fixture f;
    CHECK(fixture_load(&f, argv[1]) == 0, "cannot load the fixture %s", argv[1]);
    if (tu_failures) return tu_finish("test_model_hf");
    const ModelConfig *c = &f.c;
    UlError e = {{0}};
    float *grads0 = malloc((size_t)ul_param_numel(c) * sizeof(float)); /* variant 0's gradients */
    double loss0 = 0;
    /* variant 0: plain; 1: per-layer recompute; 2: TiledMLP (tiles of 7 rows) + recompute;
     * 3: recompute keeping the attention outputs; 4, 5: 1 and 3 with the saved activations
     * offloaded to host memory (a ring of 2 device slots); 6, 7: the same with only the first
     * layer's offloaded (partial offload). The memory features must give the same loss and
     * gradients as variant 0 (rel <= 1e-5). */
    for (int variant = 0; variant <= 7; variant++) {
        int recompute = variant == 3 || variant == 5 || variant == 7 ? 2 : variant >= 1;
        ModelMemOpts mo = {recompute, variant == 2 ? 7 : 0, variant >= 6 ? 1 : variant >= 4 ? INT64_MAX : 0, 0, 1, NULL};
        Model m;
        model_init_opts(&m, c, ul_kernels_cpu(), NULL, f.T, &mo);
        model_set_params(&m, f.weights);
        LocalSeq ls = {.T = f.T, .tokens = f.tokens, .labels = f.labels, .pos = f.pos, .cu_seqlens = f.cu,
                       .n_docs = f.n_docs};
        double sum = 0;
        int64_t cnt = 0;
        model_step(&m, &ls, (float)(1.0 / (double)f.n_valid), 1, &sum, &cnt);
        double loss = sum / (double)cnt;
        CHECK(cnt == f.n_valid, "valid labels %lld vs %lld", (long long)cnt, (long long)f.n_valid);
        double le = fabs(loss - f.loss) / fabs(f.loss);
        CHECK(le <= 1e-5, "loss %.9g vs transformers %.9g (rel err %.3g)", loss, f.loss, le);
        printf("%s variant %d (recompute %d, tiled MLP %lld, offload %lld): loss %.9g vs transformers %.9g (rel err "
               "%.2e)\n",
               argv[1], variant, recompute, (long long)m.mlp_tile, (long long)m.offload, loss, f.loss, le);
        if (m.offload) { /* the offloaded items went to the host; the ring and the other items stayed */
            int64_t L = c->num_layers, host = actstore_host_bytes(&m.xin) + actstore_host_bytes(&m.keep_oh) +
                                                 actstore_host_bytes(&m.keep_lse);
            int64_t nx = m.offload < L + 1 ? m.offload : L + 1, nk = m.offload < L ? m.offload : L;
            int64_t ring = nx < 2 ? nx : 2;
            int64_t want = nx * f.T * c->hidden_size * 4 +
                           (recompute == 2 ? nk * f.T * c->num_heads * (c->head_dim + 1) * 4 : 0);
            CHECK(host == want && actstore_dev_bytes(&m.xin) == (ring + L + 1 - nx) * f.T * c->hidden_size * 4,
                  "offload %lld: %lld bytes on the host, expected %lld", (long long)m.offload, (long long)host,
                  (long long)want);
            CHECK(model_offload_seconds(&m) >= 0, "offload copy time");
        }
        if (variant == 0) {
            loss0 = loss;
            memcpy(grads0, m.grads, (size_t)m.n_params * sizeof(float));
        } else {
            double vl = fabs(loss - loss0) / fabs(loss0), vg = tu_rel_err_f32(m.grads, grads0, m.n_params, 1e-30);
            CHECK(vl <= 1e-5 && vg <= 1e-5, "variant %d vs plain: loss rel %.3g, gradients rel %.3g", variant, vl, vg);
        }

        /* logits of every valid row */
        const StTensor *lt = st_find(&f.grads, "logits");
        CHECK(lt != NULL, "fixture has no logits");
        if (lt) {
            float *ref = malloc((size_t)lt->numel * sizeof(float));
            st_read_f32(&f.grads, lt, ref, &e);
            LogitCheck lc = {ref, 0};
            model_eval(&m, &ls, check_row, &lc);
            CHECK(lc.worst <= 1e-5, "logits rel err %.3g", lc.worst);
            printf("  logits worst rel err %.2e\n", lc.worst);
            free(ref);
        }

        int64_t nt = ul_param_tensor_count(c);
        double worst = 0;
        for (int64_t i = 0; i < nt; i++) {
            ParamInfo p;
            ul_param_info(c, i, &p);
            const StTensor *gt = st_find(&f.grads, p.name);
            CHECK(gt && gt->numel == p.numel, "fixture lacks gradient %s", p.name);
            if (!gt || gt->numel != p.numel) continue;
            float *ref = malloc((size_t)p.numel * sizeof(float));
            st_read_f32(&f.grads, gt, ref, &e);
            double ge = tu_rel_err_f32(m.grads + p.offset, ref, p.numel, 1e-30);
            if (ge > worst) worst = ge;
            CHECK(ge <= 1e-4, "gradient %s rel err %.3g", p.name, ge);
            free(ref);
        }
        printf("  %lld gradients, worst rel err %.2e\n", (long long)nt, worst);
        model_free(&m);
    }
    free(grads0);
    fixture_free(&f);
    return tu_finish("test_model_hf");
}
