/* The parameter table: the ONE place where every parameter tensor is listed.
 * Struct fields, shapes, sizes, HF names, checkpoint order and weight-decay flags are
 * all generated from these two X-macro lists.
 *
 *   X(field, hf_name, rows, cols, kind)
 *
 * rows/cols are expressions in the ModelConfig `c` (2-D [rows, cols], row-major, as
 * torch stores nn.Linear weights [out, in]; 1-D tensors have cols = 1). A tensor whose
 * rows are 0 is absent (not in the flat vector nor in files, its pointer NULL): tied
 * lm_head, and the tensors of other families (ul_family(c), core/config.h).
 * kind: UL_P_MAT (weight decay, normal init), UL_P_NORM (no decay, init 1), UL_P_BIAS (no
 * decay, init 0), as transformers initializes them and HF Trainer excludes biases and
 * norm weights from weight decay.
 * Global tensors are listed in two parts so the flat order is: embedding, layers, tail. */
#ifndef UL_PARAMS_H
#define UL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum { UL_P_MAT = 0, UL_P_NORM = 1, UL_P_BIAS = 2 };

#define UL_PARAMS_HEAD(X) \
    X(wte, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, UL_P_MAT)

/* bq, bk, bv are adjacent (one [(H + 2Hkv) d] bias over the interleaved qkv rows). */
#define UL_QKV_BIAS(c, n) (ul_family(c)->qkv_bias ? (n) * (c)->head_dim : 0)
#define UL_QK_NORM(c) (ul_family(c)->qk_norm ? (c)->head_dim : 0)
#define UL_PARAMS_LAYER(X)                                                                                 \
    X(ln1, "model.layers.%d.input_layernorm.weight", c->hidden_size, 1, UL_P_NORM)                         \
    X(wq, "model.layers.%d.self_attn.q_proj.weight", c->num_heads * c->head_dim, c->hidden_size, UL_P_MAT) \
    X(wk, "model.layers.%d.self_attn.k_proj.weight", c->num_kv_heads * c->head_dim, c->hidden_size, UL_P_MAT) \
    X(wv, "model.layers.%d.self_attn.v_proj.weight", c->num_kv_heads * c->head_dim, c->hidden_size, UL_P_MAT) \
    X(bq, "model.layers.%d.self_attn.q_proj.bias", UL_QKV_BIAS(c, c->num_heads), 1, UL_P_BIAS)             \
    X(bk, "model.layers.%d.self_attn.k_proj.bias", UL_QKV_BIAS(c, c->num_kv_heads), 1, UL_P_BIAS)          \
    X(bv, "model.layers.%d.self_attn.v_proj.bias", UL_QKV_BIAS(c, c->num_kv_heads), 1, UL_P_BIAS)          \
    X(qn, "model.layers.%d.self_attn.q_norm.weight", UL_QK_NORM(c), 1, UL_P_NORM)                          \
    X(kn, "model.layers.%d.self_attn.k_norm.weight", UL_QK_NORM(c), 1, UL_P_NORM)                          \
    X(wo, "model.layers.%d.self_attn.o_proj.weight", c->hidden_size, c->num_heads * c->head_dim, UL_P_MAT) \
    X(ln2, "model.layers.%d.post_attention_layernorm.weight", c->hidden_size, 1, UL_P_NORM)                \
    X(wg, "model.layers.%d.mlp.gate_proj.weight", c->intermediate_size, c->hidden_size, UL_P_MAT)          \
    X(wu, "model.layers.%d.mlp.up_proj.weight", c->intermediate_size, c->hidden_size, UL_P_MAT)            \
    X(wd, "model.layers.%d.mlp.down_proj.weight", c->hidden_size, c->intermediate_size, UL_P_MAT)

/* lm_head has 0 rows when the embedding is tied (it is then absent from files). */
#define UL_PARAMS_TAIL(X)                                           \
    X(lnf, "model.norm.weight", c->hidden_size, 1, UL_P_NORM)       \
    X(lm_head, "lm_head.weight", (c->tie_word_embeddings ? 0 : c->vocab_size), c->hidden_size, UL_P_MAT)

/* Pointers into one flat buffer (parameters, gradients, optimizer moments all share
 * this layout; the element type is the buffer's: fp32 or the backend's act dtype). */
typedef struct {
#define UL_X(f, n, r, k, dcy) void *f;
    UL_PARAMS_LAYER(UL_X)
#undef UL_X
} LayerTensors;

typedef struct {
#define UL_X(f, n, r, k, dcy) void *f;
    UL_PARAMS_HEAD(UL_X)
    UL_PARAMS_TAIL(UL_X)
#undef UL_X
    LayerTensors *layers; /* [L] */
    void *base;           /* the flat buffer */
} ModelTensors;

typedef struct {
    char name[96];   /* HF tensor name */
    int64_t rows, cols;
    int64_t numel;
    int64_t offset;  /* in elements, in the flat buffer */
    int kind;        /* UL_P_MAT, UL_P_NORM, UL_P_BIAS */
    int decay;       /* AdamW weight decay applies (UL_P_MAT) */
    int layer;       /* -1 for global tensors */
} ParamInfo;

/* Number of tensors present (tied lm_head excluded), total elements, and the info of
 * tensor i in flat (= checkpoint) order. */
int64_t ul_param_tensor_count(const ModelConfig *c);
int64_t ul_param_numel(const ModelConfig *c);
void ul_param_info(const ModelConfig *c, int64_t i, ParamInfo *out);

/* Points t's fields into base (numel elements of elem_bytes each, laid out as
 * ul_param_info says); absent tensors are NULL. t->layers is allocated here; free with
 * ul_tensors_free. With a tied embedding t->lm_head aliases t->wte. */
void ul_tensors_bind(ModelTensors *t, const ModelConfig *c, void *base, size_t elem_bytes);
void ul_tensors_free(ModelTensors *t);

/* Units (the ZeRO-3 gather units, optim/zero.h): contiguous ranges of the flat order.
 * Unit 0 is the embedding, unit 1 + l decoder layer l, unit L + 1 the tail (final norm and,
 * when untied, lm_head). ul_param_unit gives unit u's [offset, offset + numel) range. */
int64_t ul_param_unit_count(const ModelConfig *c);
void ul_param_unit(const ModelConfig *c, int64_t u, int64_t *offset, int64_t *numel);
/* Points the tensors of unit u in t (bound with ul_tensors_bind, any base) into unit_base,
 * which holds the unit's range alone ([numel] elements of elem_bytes). With a tied embedding
 * unit 0 also sets lm_head (= wte), and unit L + 1 leaves it. */
void ul_tensors_bind_unit(ModelTensors *t, const ModelConfig *c, int64_t u, void *unit_base, size_t elem_bytes);

#endif
