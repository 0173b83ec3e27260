/* What every command needs before its work (train, eval, demo; plan uses the config and
 * mesh checks): errors agreed across ranks, the model config, the mesh checks, the data
 * shards, the backend. Below the commands: it includes none of them. */
#ifndef UL_SETUP_H
#define UL_SETUP_H

#include <stdint.h>

#include "core/common.h"
#include "core/config.h"
#include "data/data.h"
#include "kernels/kernels.h"

/* Shared by the commands: the model config from --model / --init (or a built-in one);
 * the mesh checks of docs/design.md §2, §4; the data shards checked against the vocabulary. */
int ul_load_model_config(const char *model, const char *init, const ModelConfig *builtin, ModelConfig *c,
                         UlError *e);
int ul_check_mesh(int64_t sp, int64_t rep, int64_t shard, int64_t seq_len, const ModelConfig *c, int world,
                  UlError *e);
int ul_open_data(const char *glob, int64_t seq_len, int pack, int shuffle, uint64_t seed, const ModelConfig *c,
                 DataLoader *dl, UlError *e);

/* The backend for --device (cpu | cuda | NULL: cuda when built with it and a GPU is
 * visible, else cpu); binds this rank to its GPU. NULL with e filled when unavailable, or
 * when UL_ATTN_KERNEL or UL_ATTN_FWD has an unknown value (kernels.h). */
const KernelOps *ul_select_backend(const char *device, UlError *e);

/* Collective agreement on an error: if any rank of the world has rc != 0, every rank
 * gets the message of the lowest such rank in e and -1 is returned. */
int ul_agree(int rc, UlError *e);

#endif
