/* The Hugging Face fixtures of tests/fixtures (scripts/make_hf_fixtures.py): config,
 * weights, one packed batch, the loss, logits and every gradient. */
#ifndef UL_TEST_FIXTURE_H
#define UL_TEST_FIXTURE_H

#include <stdint.h>

#include "core/config.h"
#include "formats/safetensors.h"

typedef struct {
    ModelConfig c;
    int64_t T;                     /* tokens in the batch */
    int32_t *tokens, *labels, *pos; /* [T] */
    int64_t *cu;                   /* [n_docs + 1] */
    int64_t n_docs, n_valid;
    double loss;                   /* transformers' loss */
    float *weights;                /* [ul_param_numel(c)] */
    StFile grads;                  /* "logits" [T, V] and the gradient of every parameter */
} Fixture;

/* 0 on success; on failure prints why and returns -1. */
int fixture_load(Fixture *f, const char *dir);
void fixture_free(Fixture *f);
/* Pads the batch to a multiple of m with one extra padding document (label -100). */
void fixture_pad(Fixture *f, int64_t m);

#endif
