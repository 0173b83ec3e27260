#include "params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Global names have no %d; layer names have one. */
static void format_name(char *dst, size_t cap, const char *fmt, int layer) { snprintf(dst, cap, fmt, layer); }

/* Tensor i in flat order: head, layer 0..L-1, tail; zero-sized (tied) tensors skipped. */
static int64_t walk(const ModelConfig *c, int64_t want, ParamInfo *out) {
    int64_t idx = 0, off = 0;
#define UL_EMIT(f, n, r, k, dcy, L)                                     \
    do {                                                                \
        int64_t rows_ = (r), cols_ = (k);                               \
        if (rows_ * cols_ > 0) {                                        \
            if (idx == want && out) {                                   \
                format_name(out->name, sizeof out->name, n, (int)(L));     \
                out->rows = rows_;                                      \
                out->cols = cols_;                                      \
                out->numel = rows_ * cols_;                             \
                out->offset = off;                                      \
                out->kind = (dcy);                                      \
                out->decay = (dcy) == UL_P_MAT;                         \
                out->layer = (L);                                       \
            }                                                           \
            idx++;                                                      \
            off += rows_ * cols_;                                       \
        }                                                               \
    } while (0);
#define UL_G(f, n, r, k, dcy) UL_EMIT(f, n, r, k, dcy, -1)
#define UL_L(f, n, r, k, dcy) UL_EMIT(f, n, r, k, dcy, l)
    UL_PARAMS_HEAD(UL_G)
    for (int64_t l = 0; l < c->num_layers; l++) {
        UL_PARAMS_LAYER(UL_L)
    }
    UL_PARAMS_TAIL(UL_G)
#undef UL_G
#undef UL_L
#undef UL_EMIT
    return want < 0 ? off : idx;
}

int64_t ul_param_tensor_count(const ModelConfig *c) { return walk(c, INT64_MAX, NULL); }

int64_t ul_param_numel(const ModelConfig *c) { return walk(c, -1, NULL); }

void ul_param_info(const ModelConfig *c, int64_t i, ParamInfo *out) {
    UL_ASSERT(i >= 0 && i < ul_param_tensor_count(c), "parameter index %lld out of range", (long long)i);
    walk(c, i, out);
}

void ul_tensors_bind(ModelTensors *t, const ModelConfig *c, void *base, size_t eb) {
    memset(t, 0, sizeof *t);
    t->base = base;
    t->layers = ul_calloc((size_t)c->num_layers, sizeof(LayerTensors));
    int64_t off = 0;
#define UL_G(f, n, r, k, dcy)            \
    t->f = base && (r) > 0 ? (char *)base + (size_t)off * eb : NULL; \
    off += (int64_t)(r) * (int64_t)(k);
#define UL_L(f, n, r, k, dcy)                      \
    t->layers[l].f = base && (r) > 0 ? (char *)base + (size_t)off * eb : NULL; \
    off += (int64_t)(r) * (int64_t)(k);
    UL_PARAMS_HEAD(UL_G)
    for (int64_t l = 0; l < c->num_layers; l++) {
        UL_PARAMS_LAYER(UL_L)
    }
    UL_PARAMS_TAIL(UL_G)
#undef UL_G
#undef UL_L
    if (c->tie_word_embeddings) t->lm_head = t->wte;
}

void ul_tensors_free(ModelTensors *t) {
    free(t->layers);
    t->layers = NULL;
}

int64_t ul_param_unit_count(const ModelConfig *c) { return c->num_layers + 2; }

void ul_param_unit(const ModelConfig *c, int64_t u, int64_t *offset, int64_t *numel) {
    int64_t L = c->num_layers;
    UL_ASSERT(u >= 0 && u <= L + 1, "parameter unit %lld out of range", (long long)u);
    int64_t head = 0, layer = 0, tail = 0;
#define UL_X(f, n, r, k, dcy) head += (int64_t)(r) * (int64_t)(k);
    UL_PARAMS_HEAD(UL_X)
#undef UL_X
#define UL_X(f, n, r, k, dcy) layer += (int64_t)(r) * (int64_t)(k);
    UL_PARAMS_LAYER(UL_X)
#undef UL_X
#define UL_X(f, n, r, k, dcy) tail += (int64_t)(r) * (int64_t)(k);
    UL_PARAMS_TAIL(UL_X)
#undef UL_X
    if (u == 0) {
        *offset = 0;
        *numel = head;
    } else if (u <= L) {
        *offset = head + (u - 1) * layer;
        *numel = layer;
    } else {
        *offset = head + L * layer;
        *numel = tail;
    }
}

void ul_tensors_bind_unit(ModelTensors *t, const ModelConfig *c, int64_t u, void *unit_base, size_t eb) {
    int64_t L = c->num_layers, off = 0;
    UL_ASSERT(u >= 0 && u <= L + 1, "parameter unit %lld out of range", (long long)u);
#define UL_U(dst, r, k)                                 \
    dst = (r) > 0 ? (char *)unit_base + (size_t)off * eb : NULL; \
    off += (int64_t)(r) * (int64_t)(k);
#define UL_G(f, n, r, k, dcy) UL_U(t->f, r, k)
#define UL_L(f, n, r, k, dcy) UL_U(t->layers[u - 1].f, r, k)
    if (u == 0) {
        UL_PARAMS_HEAD(UL_G)
        if (c->tie_word_embeddings) t->lm_head = t->wte;
    } else if (u <= L) {
        UL_PARAMS_LAYER(UL_L)
    } else {
        void *lm = t->lm_head;
        UL_PARAMS_TAIL(UL_G)
        if (c->tie_word_embeddings) t->lm_head = lm;
    }
#undef UL_G
#undef UL_L
#undef UL_U
}
