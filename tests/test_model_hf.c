/* The whole model against Hugging Face transformers (verification ladder 2): a fixture
 * made by scripts/make_hf_fixtures.py (float64 reference of LlamaForCausalLM) gives
 * weights, one packed batch, the logits, the loss and every parameter gradient.
 * Usage: test_model_hf FIXTURE_DIR */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/hf_model.h"
#include "testutil.h"
#include "train/model.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static int32_t *int_array(cJSON *root, const char *key, int64_t *n) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)*n * sizeof(int32_t));
    for (int64_t i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, (int)i)->valuedouble;
    return v;
}

typedef struct {
    const float *ref; /* [T, V] */
    int64_t V;
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
    const char *dir = argv[1];
    char path[4096];
    UlError e = {{0}};
    ModelConfig c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (ul_config_load(path, &c, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/batch.json", dir);
    char *js = slurp(path);
    CHECK(js != NULL, "cannot read %s", path);
    if (!js) return tu_finish("test_model_hf");
    cJSON *b = cJSON_Parse(js);
    int64_t T, n2, n3, ncu;
    int32_t *tok = int_array(b, "tokens", &T);
    int32_t *lab = int_array(b, "labels", &n2);
    int32_t *pos = int_array(b, "position_ids", &n3);
    int32_t *cu32 = int_array(b, "cu_seqlens", &ncu);
    int64_t *cu = malloc((size_t)ncu * sizeof(int64_t));
    for (int64_t i = 0; i < ncu; i++) cu[i] = cu32[i];
    double ref_loss = cJSON_GetObjectItemCaseSensitive(b, "loss")->valuedouble;
    int64_t n_valid = (int64_t)cJSON_GetObjectItemCaseSensitive(b, "n_valid")->valuedouble;

    StFile gf;
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    int rc = st_open(&gf, path, &e);
    CHECK(rc == 0, "%s", e.msg);
    if (rc) return tu_finish("test_model_hf");

    for (int recompute = 0; recompute <= 1; recompute++) {
        Model m;
        model_init(&m, &c, ul_kernels_cpu(), NULL, T, recompute);
        rc = ul_load_weights(dir, &c, m.params, &e);
        CHECK(rc == 0, "load weights: %s", e.msg);
        LocalSeq ls = {.T = T, .tokens = tok, .labels = lab, .pos = pos, .cu_seqlens = cu, .n_docs = ncu - 1};
        double sum = 0;
        int64_t cnt = 0;
        model_step(&m, &ls, (float)(1.0 / (double)n_valid), 1, &sum, &cnt);
        double loss = sum / (double)cnt;
        CHECK(cnt == n_valid, "valid labels %lld vs %lld", (long long)cnt, (long long)n_valid);
        double le = fabs(loss - ref_loss) / fabs(ref_loss);
        CHECK(le <= 1e-5, "loss %.9g vs transformers %.9g (rel err %.3g)", loss, ref_loss, le);
        printf("%s recompute=%d: loss %.9g vs transformers %.9g (rel err %.2e)\n", dir, recompute, loss, ref_loss, le);

        /* logits of every valid row */
        const StTensor *lt = st_find(&gf, "logits");
        CHECK(lt != NULL, "fixture has no logits");
        if (lt) {
            float *ref = malloc((size_t)lt->numel * sizeof(float));
            st_read_f32(&gf, lt, ref, &e);
            LogitCheck lc = {ref, c.vocab_size, 0};
            model_eval(&m, &ls, check_row, &lc);
            CHECK(lc.worst <= 1e-5, "logits rel err %.3g", lc.worst);
            printf("  logits worst rel err %.2e\n", lc.worst);
            free(ref);
        }

        int64_t nt = ul_param_tensor_count(&c);
        double worst = 0;
        for (int64_t i = 0; i < nt; i++) {
            ParamInfo p;
            ul_param_info(&c, i, &p);
            const StTensor *gt = st_find(&gf, p.name);
            CHECK(gt && gt->numel == p.numel, "fixture lacks gradient %s", p.name);
            if (!gt || gt->numel != p.numel) continue;
            float *ref = malloc((size_t)p.numel * sizeof(float));
            st_read_f32(&gf, gt, ref, &e);
            double ge = tu_rel_err_f32(m.grads + p.offset, ref, p.numel, 1e-30);
            if (ge > worst) worst = ge;
            CHECK(ge <= 1e-4, "gradient %s rel err %.3g", p.name, ge);
            free(ref);
        }
        printf("  %lld gradients, worst rel err %.2e\n", (long long)nt, worst);
        model_free(&m);
    }
    st_close(&gf);
    cJSON_Delete(b);
    free(js);
    free(tok);
    free(lab);
    free(pos);
    free(cu32);
    free(cu);
    return tu_finish("test_model_hf");
}
