#include "fixture.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/params.h"
#include "formats/hf_model.h"

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
    int32_t *v = malloc((size_t)(*n + 8) * sizeof(int32_t));
    for (int64_t i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, (int)i)->valuedouble;
    return v;
}

int fixture_load(Fixture *f, const char *dir) {
    memset(f, 0, sizeof *f);
    char path[4096];
    UlError e = {{0}};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (ul_config_load(path, &f->c, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/batch.json", dir);
    char *js = slurp(path);
    cJSON *b = js ? cJSON_Parse(js) : NULL;
    if (!b) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(js);
        return -1;
    }
    int64_t n2, n3, ncu;
    f->tokens = int_array(b, "tokens", &f->T);
    f->labels = int_array(b, "labels", &n2);
    f->pos = int_array(b, "position_ids", &n3);
    int32_t *cu32 = int_array(b, "cu_seqlens", &ncu);
    f->cu = malloc((size_t)(ncu + 2) * sizeof(int64_t));
    for (int64_t i = 0; i < ncu; i++) f->cu[i] = cu32[i];
    free(cu32);
    f->n_docs = ncu - 1;
    f->loss = cJSON_GetObjectItemCaseSensitive(b, "loss")->valuedouble;
    f->n_valid = (int64_t)cJSON_GetObjectItemCaseSensitive(b, "n_valid")->valuedouble;
    cJSON_Delete(b);
    free(js);
    f->weights = malloc((size_t)ul_param_numel(&f->c) * sizeof(float));
    if (ul_load_weights(dir, &f->c, f->weights, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    if (st_open(&f->grads, path, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

void fixture_pad(Fixture *f, int64_t m) {
    int64_t T = (f->T + m - 1) / m * m;
    if (T == f->T) return;
    for (int64_t i = f->T; i < T; i++) {
        f->tokens[i] = 0;
        f->labels[i] = -100;
        f->pos[i] = (int32_t)(i - f->T);
    }
    f->cu[++f->n_docs] = T;
    f->T = T;
}

void fixture_free(Fixture *f) {
    free(f->tokens);
    free(f->labels);
    free(f->pos);
    free(f->cu);
    free(f->weights);
    st_close(&f->grads);
    memset(f, 0, sizeof *f);
}
