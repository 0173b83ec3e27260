#include "config.h"

#include <math.h>

/* The families (docs/formats.md, "Model families"). */
const UlFamily ul_families[UL_FAM_COUNT] = {
    [UL_FAM_LLAMA] = {"LlamaForCausalLM", "llama", 0, 0, UL_CF_ATTN_BIAS | UL_CF_LLAMA},
    [UL_FAM_QWEN2] = {"Qwen2ForCausalLM", "qwen2", 1, 0, UL_CF_USE_SW},
    [UL_FAM_QWEN3] = {"Qwen3ForCausalLM", "qwen3", 0, 1, UL_CF_ATTN_BIAS | UL_CF_USE_SW},
    [UL_FAM_MISTRAL] = {"MistralForCausalLM", "mistral", 0, 0, UL_CF_SW_NULL},
};

/* transformers' _compute_default_rope_parameters and _compute_llama3_parameters. */
void ul_rope_inv_freq(const ModelConfig *c, double *inv_freq) {
    const int64_t d = c->head_dim;
    for (int64_t i = 0; i < d / 2; i++) inv_freq[i] = 1.0 / pow(c->rope_theta, (double)(2 * i) / (double)d);
    if (c->rope_type != UL_ROPE_LLAMA3) return;
    const double factor = c->rope_factor, low = c->rope_low_freq_factor, high = c->rope_high_freq_factor;
    const double orig = (double)c->rope_original_max_position_embeddings;
    const double low_freq_wavelen = orig / low, high_freq_wavelen = orig / high;
    for (int64_t i = 0; i < d / 2; i++) {
        double inv = inv_freq[i], wavelen = 2.0 * M_PI / inv;
        if (wavelen > low_freq_wavelen) {
            inv_freq[i] = inv / factor;
        } else if (!(wavelen < high_freq_wavelen)) { /* medium band: interpolate */
            double smooth = (orig / wavelen - low) / (high - low);
            inv_freq[i] = (1.0 - smooth) * inv / factor + smooth * inv;
        }
    }
}

#define UL_MAX_DIM ((int64_t)1 << 31) /* any single size; keeps every product in int64 */

int ul_config_validate(const ModelConfig *c, const char *what, UlError *e) {
    if ((unsigned)c->family >= UL_FAM_COUNT) return ul_err(e, "%s: unknown model family %d", what, (int)c->family);
    const struct {
        const char *name;
        int64_t v;
    } sizes[] = {{"vocab_size", c->vocab_size},
                 {"hidden_size", c->hidden_size},
                 {"intermediate_size", c->intermediate_size},
                 {"num_hidden_layers", c->num_layers},
                 {"num_attention_heads", c->num_heads},
                 {"num_key_value_heads", c->num_kv_heads},
                 {"head_dim", c->head_dim},
                 {"max_position_embeddings", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0 || sizes[i].v >= UL_MAX_DIM)
            return ul_err(e, "%s: %s = %lld, must be in [1, 2^31)", what, sizes[i].name, (long long)sizes[i].v);
    if (c->num_heads % c->num_kv_heads != 0)
        return ul_err(e, "%s: num_attention_heads (%lld) is not a multiple of num_key_value_heads (%lld)", what,
                      (long long)c->num_heads, (long long)c->num_kv_heads);
    if (c->head_dim % 2 != 0) return ul_err(e, "%s: head_dim = %lld must be even for RoPE", what, (long long)c->head_dim);
    /* Total parameter count bound, in double so absurd configs cannot overflow. */
    double D = (double)c->hidden_size, qkvo = (double)(2 * c->num_heads + 2 * c->num_kv_heads) * (double)c->head_dim;
    double total = (double)c->vocab_size * D * (c->tie_word_embeddings ? 1 : 2) + D +
                   (double)c->num_layers * (2 * D + qkvo * (D + 1) + 3 * D * (double)c->intermediate_size);
    if (total > 0x1p50) return ul_err(e, "%s: model has %.3g parameters, more than supported", what, total);
    if (!(c->rms_norm_eps > 0 && isfinite(c->rms_norm_eps)))
        return ul_err(e, "%s: rms_norm_eps = %g must be positive", what, c->rms_norm_eps);
    if (!(c->initializer_range >= 0 && isfinite(c->initializer_range)))
        return ul_err(e, "%s: initializer_range = %g must be non-negative", what, c->initializer_range);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return ul_err(e, "%s: rope_theta = %g must be positive", what, c->rope_theta);
    if (c->rope_type != UL_ROPE_DEFAULT && c->rope_type != UL_ROPE_LLAMA3)
        return ul_err(e, "%s: unknown rope type %d", what, (int)c->rope_type);
    if (c->rope_type == UL_ROPE_LLAMA3) {
        if (!(c->rope_factor > 0 && isfinite(c->rope_factor)))
            return ul_err(e, "%s: rope_scaling.factor = %g must be positive", what, c->rope_factor);
        if (!(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
              isfinite(c->rope_high_freq_factor)))
            return ul_err(e, "%s: rope_scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g)", what,
                          c->rope_low_freq_factor, c->rope_high_freq_factor);
        if (c->rope_original_max_position_embeddings <= 0)
            return ul_err(e, "%s: rope_scaling.original_max_position_embeddings = %lld must be positive", what,
                          (long long)c->rope_original_max_position_embeddings);
    }
    return 0;
}
