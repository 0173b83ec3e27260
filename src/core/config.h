/* Model configuration (the fields of a Hugging Face config.json that matter to the
 * computation) and the model families. Parsed and written by formats/hf_model.c. */
#ifndef UL_CONFIG_H
#define UL_CONFIG_H

#include <stdint.h>

#include "common.h"

typedef enum { UL_ROPE_DEFAULT = 0, UL_ROPE_LLAMA3 = 1 } UlRopeType;

/* The model families: every difference between them is a row of ul_families (config.c).
 * All are the Llama decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP); a family adds
 * optional tensors (core/params.h) and speaks its own config.json dialect. */
typedef enum { UL_FAM_LLAMA = 0, UL_FAM_QWEN2, UL_FAM_QWEN3, UL_FAM_MISTRAL, UL_FAM_COUNT } UlFamilyId;

/* config.json fields a family reads (UlFamily.fields); any family refuses MoE fields. */
enum {
    UL_CF_ATTN_BIAS = 1 << 0,   /* "attention_bias": false only */
    UL_CF_LLAMA = 1 << 1,       /* "mlp_bias": false only, "pretraining_tp": 1 only */
    UL_CF_USE_SW = 1 << 2,      /* "use_sliding_window": false only ("sliding_window" and
                                   "max_window_layers" then unused); "layer_types" all "full_attention" */
    UL_CF_SW_NULL = 1 << 3,     /* "sliding_window": null only */
};

typedef struct {
    const char *architecture; /* "architectures" entry and transformers class */
    const char *model_type;
    int qkv_bias; /* q_proj, k_proj, v_proj have a bias [out] */
    int qk_norm;  /* q_norm, k_norm: RMSNorm over head_dim of each q and k head, before RoPE */
    unsigned fields; /* UL_CF_* */
} UlFamily;

extern const UlFamily ul_families[UL_FAM_COUNT];

typedef struct {
    UlFamilyId family;          /* 0 = Llama */
    int64_t vocab_size;
    int64_t hidden_size;        /* D */
    int64_t intermediate_size;  /* I */
    int64_t num_layers;         /* L  (num_hidden_layers) */
    int64_t num_heads;          /* H  (num_attention_heads) */
    int64_t num_kv_heads;       /* Hkv (num_key_value_heads) */
    int64_t head_dim;           /* d  (head_dim, default D / H) */
    int64_t max_position_embeddings;
    double rms_norm_eps;
    double initializer_range;
    int tie_word_embeddings;
    /* RoPE */
    double rope_theta;
    UlRopeType rope_type;
    double rope_factor;            /* llama3 */
    double rope_low_freq_factor;   /* llama3 */
    double rope_high_freq_factor;  /* llama3 */
    int64_t rope_original_max_position_embeddings; /* llama3 */
    /* Passed through to the written config.json (not used by the math). */
    int64_t bos_token_id;  /* -1 when absent */
    int64_t eos_token_id;  /* -1 when absent */
} ModelConfig;

static inline const UlFamily *ul_family(const ModelConfig *c) { return &ul_families[c->family]; }

/* The Ulysses head split (docs/design.md §4), the one statement of the rule: each of sp ranks
 * takes H / sp query heads after the all-to-all; kv heads are split when Hkv % sp == 0, else
 * (sp % Hkv == 0) each kv head is replicated over sp / Hkv ranks, one per rank. */
static inline int ul_heads_split_ok(int64_t H, int64_t Hkv, int64_t sp) {
    return H % sp == 0 && (Hkv % sp == 0 || sp % Hkv == 0);
}
static inline int64_t ul_kv_heads_per_rank(int64_t Hkv, int64_t sp) { return Hkv % sp == 0 ? Hkv / sp : 1; }

/* Fills RoPE inverse frequencies inv_freq[d/2] exactly as transformers does
 * (default or llama3 scaling), computed in double. */
void ul_rope_inv_freq(const ModelConfig *c, double *inv_freq);

/* Checks internal consistency (positive sizes, H % Hkv == 0, even head_dim, ...).
 * `what` names the source (file or flag) in the message. */
int ul_config_validate(const ModelConfig *c, const char *what, UlError *e);

#endif
