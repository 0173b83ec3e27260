/* Model configuration (the fields of a Hugging Face LlamaForCausalLM config.json that
 * matter to the computation). Parsed and written by formats/hf_model.c. */
#ifndef UL_CONFIG_H
#define UL_CONFIG_H

#include <stdint.h>

#include "common.h"

typedef enum { UL_ROPE_DEFAULT = 0, UL_ROPE_LLAMA3 = 1 } UlRopeType;

typedef struct {
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

/* Fills RoPE inverse frequencies inv_freq[d/2] exactly as transformers does
 * (default or llama3 scaling), computed in double. */
void ul_rope_inv_freq(const ModelConfig *c, double *inv_freq);

/* Checks internal consistency (positive sizes, H % Hkv == 0, even head_dim, ...).
 * `what` names the source (file or flag) in the message. */
int ul_config_validate(const ModelConfig *c, const char *what, UlError *e);

#endif
