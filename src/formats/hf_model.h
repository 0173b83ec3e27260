/* Hugging Face model directories: config.json (LlamaForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM, MistralForCausalLM: the families of core/config.h) + model.safetensors
 * (or a sharded model.safetensors.index.json). */
#ifndef UL_HF_MODEL_H
#define UL_HF_MODEL_H

#include "core/config.h"
#include "formats/safetensors.h"

/* Parses a config.json (file path) / JSON text. Unsupported fields or values
 * (architectures or model_type of no supported family, attention_bias/mlp_bias true, a
 * sliding window, MoE fields, hidden_act other than silu, unknown rope type, ...) are errors
 * naming the file and field. */
int ul_config_load(const char *path, ModelConfig *c, UlError *e);
int ul_config_parse(const char *json, const char *what, ModelConfig *c, UlError *e);
/* Serializes c as a config.json that transformers loads with the family's own class;
 * torch_dtype is "float32" or "bfloat16". Returns a malloc'd string. */
char *ul_config_to_json(const ModelConfig *c, const char *torch_dtype);

/* Loads every parameter tensor named by the parameter table (core/params.h) from the
 * directory's safetensors into params[ul_param_numel(c)] (f32). Shapes must match the
 * config exactly; a missing tensor is an error; extra tensors (e.g. rotary inv_freq)
 * are ignored; a tied model's lm_head.weight, if present, is ignored. */
int ul_load_weights(const char *dir, const ModelConfig *c, float *params, UlError *e);
/* The same a range at a time, for ranks that need only their slice: ul_weights_open opens
 * the directory and checks every tensor (name, shape, float dtype) as ul_load_weights does
 * (NULL and e set on failure); ul_weights_read_range converts the flat parameter elements
 * [a, b) into out[b - a] (f32; it cannot fail after the open). */
typedef struct UlWeightsReader UlWeightsReader;
UlWeightsReader *ul_weights_open(const char *dir, const ModelConfig *c, UlError *e);
void ul_weights_read_range(UlWeightsReader *r, int64_t a, int64_t b, float *out);
/* After reads: -1 with e naming the file, the tensor and the element when a value read so
 * far was NaN or infinite (a model is never trained from such weights), else 0. */
int ul_weights_check_finite(const UlWeightsReader *r, UlError *e);
void ul_weights_close(UlWeightsReader *r);

/* Writes model.safetensors, then config.json into the existing directory dir, each file
 * atomically (temporary name, then rename). */
int ul_write_hf_files(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e);
/* The same in steps, for weights that are never whole in memory: dir/config.json, then
 * dir/model.safetensors opened as a stream (formats/safetensors.h) whose data is the flat
 * float32 parameter vector [ul_param_numel(c)] in order (the tensors of the parameter table
 * tile it), appended in pieces of any size; st_stream_close commits it. Writers of a
 * directory write config.json last. */
int ul_write_hf_config(const char *dir, const ModelConfig *c, UlDtype dtype, UlError *e);
StStream *ul_hf_weights_open(const char *dir, const ModelConfig *c, UlDtype dtype, UlError *e);

/* Writes DIR/model.safetensors, then DIR/config.json (dtype F32 or BF16), each file by a
 * temporary name and a rename; DIR is created when missing (not its parents). Nothing
 * else in DIR is touched: an output directory is never emptied or replaced. */
int ul_save_hf_dir(const char *dir, const ModelConfig *c, const float *params, UlDtype dtype, UlError *e);

#endif
