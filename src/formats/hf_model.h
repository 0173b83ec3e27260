/* Hugging Face model directories: config.json (LlamaForCausalLM) + model.safetensors
 * (or a sharded model.safetensors.index.json). */
#ifndef UL_HF_MODEL_H
#define UL_HF_MODEL_H

#include "core/config.h"
#include "formats/safetensors.h"

/* Parses a config.json (file path) / JSON text. Unsupported fields or values
 * (architectures other than LlamaForCausalLM, attention_bias/mlp_bias true,
 * hidden_act other than silu, unknown rope type, ...) are errors naming the file and field. */
int ul_config_load(const char *path, ModelConfig *c, UlError *e);
int ul_config_parse(const char *json, const char *what, ModelConfig *c, UlError *e);
/* Serializes c as a config.json that transformers.LlamaForCausalLM loads;
 * torch_dtype is "float32" or "bfloat16". Returns a malloc'd string. */
char *ul_config_to_json(const ModelConfig *c, const char *torch_dtype);

/* Loads every parameter tensor named by the parameter table (core/params.h) from the
 * directory's safetensors into params[ul_param_numel(c)] (f32). Shapes must match the
 * config exactly; a missing tensor is an error; extra tensors (e.g. rotary inv_freq)
 * are ignored; a tied model's lm_head.weight, if present, is ignored. */
int ul_load_weights(const char *dir, const ModelConfig *c, float *params, UlError *e);

/* Writes config.json and model.safetensors into the existing directory dir, each file
 * atomically (temporary name, then rename). */
int ul_write_hf_files(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e);

/* Writes DIR/config.json and DIR/model.safetensors (dtype F32 or BF16) atomically:
 * everything goes to DIR.tmp-XXXX first and is renamed to DIR when complete (an
 * existing DIR is replaced). */
int ul_save_hf_dir(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e);

#endif
