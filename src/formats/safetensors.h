/* safetensors reader/writer (https://huggingface.co/docs/safetensors format):
 *   u64 little-endian header length N | N bytes of JSON header | raw tensor data.
 * Header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *          "__metadata__": {"format": "pt"}}; offsets relative to the data section.
 * Every offset, shape and length is validated against the file size: a truncated or
 * corrupt file is a clean error naming the file, never a crash. */
#ifndef UL_SAFETENSORS_H
#define UL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef enum { UL_DT_F32 = 0, UL_DT_BF16 = 1, UL_DT_I32 = 2, UL_DT_I64 = 3, UL_DT_F16 = 4 } UlDtype;

size_t ul_dtype_size(UlDtype dt);
const char *ul_dtype_name(UlDtype dt); /* "F32", "BF16", ... */

#define UL_ST_MAX_DIMS 8

typedef struct {
    char *name;
    UlDtype dtype;
    int ndim;
    int64_t shape[UL_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte offsets into the data section */
} StTensor;

typedef struct {
    char *path;
    uint8_t *map;     /* whole file (mmap, read-only) */
    size_t size;      /* file size in bytes */
    uint64_t data_off; /* 8 + header length */
    int64_t n;
    StTensor *tensors; /* [n] */
} StFile;

int st_open(StFile *f, const char *path, UlError *e);
void st_close(StFile *f);
/* NULL if absent. */
const StTensor *st_find(const StFile *f, const char *name);
/* Converts F32/BF16/F16 data to f32 into out[numel]. Error if the dtype is not a float type. */
int st_read_f32(const StFile *f, const StTensor *t, float *out, UlError *e);
/* The same for elements [i0, i0 + n) of the tensor (row-major flat order) into out[n]. */
int st_read_f32_range(const StFile *f, const StTensor *t, int64_t i0, int64_t n, float *out, UlError *e);
/* Raw bytes of the tensor (inside the mapping). */
const void *st_data(const StFile *f, const StTensor *t);

typedef struct {
    const char *name;
    UlDtype dtype;      /* dtype written to the file */
    int ndim;
    int64_t shape[UL_ST_MAX_DIMS];
    const void *data;   /* float32 source when dtype is F32 or BF16 (converted on write);
                           raw source of the same dtype for I32 / I64 */
} StWriteItem;

/* Writes items in the given order (data laid out in that order; the JSON header lists
 * them sorted by name, deterministic bytes). Writes PATH.tmp then renames. */
int st_write(const char *path, const StWriteItem *items, int64_t n, UlError *e);

/* The same file written as a stream, without the whole data in memory: st_stream_open
 * writes the header for items[n] (names, dtypes, shapes; their .data is not read) to
 * PATH.tmp; st_stream_append then takes the data in item order, numel elements at a time
 * (of the items' source types, as st_write's .data: float32 for F32 / BF16), in pieces of
 * any size that may run on from one tensor into the next; st_stream_close checks that every
 * tensor is complete, fsyncs and renames PATH.tmp onto PATH (an incomplete stream is an
 * error and leaves nothing). The bytes equal st_write's for the same items and data (st_write
 * is this stream in one piece per item). After an error from append, call st_stream_abort
 * (removes PATH.tmp). open returns NULL on error; close and abort free the stream. */
typedef struct StStream StStream;
StStream *st_stream_open(const char *path, const StWriteItem *items, int64_t n, UlError *e);
int st_stream_append(StStream *s, const void *data, int64_t numel, UlError *e);
int st_stream_close(StStream *s, UlError *e);
void st_stream_abort(StStream *s); /* NULL: nothing */

#endif
