/* Data loader (docs/design.md §3): token shards -> packed samples -> this rank's sequence shard.
 *
 * Documents longer than seq_len are cut into pieces of at most seq_len tokens; each piece
 * is a document of its own (positions restart). Every epoch the pieces are shuffled with
 * (seed, epoch) and packed greedily into samples of at most seq_len tokens (or, with
 * pack = 0, one piece per sample). Sample number g of the stream is a pure function of
 * (data, seq_len, seed, g): the same on every rank and every mesh.
 *
 * Labels: label[t] = token[t+1] when t+1 is in the same document piece and the shard's loss
 * mask of token t+1 is 1 (shards without a mask: always); else -100 (a piece's last token,
 * padding, tokens before a masked-out one). This is Hugging Face's labels = input_ids with
 * -100 where there is no loss, shifted by one as its models do inside the loss. */
#ifndef UL_DATA_H
#define UL_DATA_H

#include <stdint.h>

#include "core/common.h"
#include "formats/tokens.h"

typedef struct {
    int32_t shard;
    int64_t start; /* token offset in the shard */
    int64_t len;
} DocPiece;

typedef struct {
    int n_shards;
    TokShard *shards;     /* [n_shards] */
    int64_t n_pieces;
    DocPiece *pieces;     /* [n_pieces] */
    int64_t total_tokens;
    uint32_t vocab_size;  /* max over shards (0 = unknown) */
    int64_t seq_len;
    int pack;             /* 1: pack pieces; 0: one piece per sample */
    int shuffle;
    uint64_t seed;
    /* the plan of the epoch in memory */
    int64_t epoch;          /* -1 = none yet */
    int64_t *order;         /* [n_pieces] permuted piece ids */
    int64_t n_samples;      /* samples in one epoch */
    int64_t *sample_first;  /* [n_samples + 1] index into order */
    /* epochs pack differently once shuffled: the first global sample index of each epoch
     * planned so far ([n_epoch_first]; epoch_first[e + 1] - epoch_first[e] = its samples) */
    int64_t *epoch_first;
    int64_t n_epoch_first;
} DataLoader;

/* A whole sample (every SP rank holds all of it; it is small next to activations). */
typedef struct {
    int64_t T;           /* padded length: multiple of pad_multiple (or seq_len in fixed mode) */
    int64_t n_real;      /* tokens before padding */
    int32_t *tokens;     /* [T] */
    int32_t *labels;     /* [T] label[t] = token[t+1] inside a document when the loss mask of
                          * token t+1 is 1 (no mask: always), else -100 */
    int32_t *pos;        /* [T] position ids, restart at 0 per document */
    int64_t n_docs;      /* documents incl. a trailing padding document */
    int64_t *cu_seqlens; /* [n_docs + 1] */
    int64_t n_valid;     /* labels != -100 */
    int64_t cap;         /* allocated capacity in tokens */
} Sample;

/* Opens the shards matching a glob (sorted), builds the piece table. */
int data_open(DataLoader *d, const char *glob_pattern, int64_t seq_len, int pack, int shuffle, uint64_t seed,
              UlError *e);
void data_close(DataLoader *d);

/* Fills s with sample number g of the stream, padded to a multiple of pad_multiple, or
 * to exactly seq_len when fixed_len. */
void data_sample(DataLoader *d, int64_t g, int64_t pad_multiple, int fixed_len, Sample *s);

/* Samples in the first epoch (in file order without shuffling: every sample of the data once). */
int64_t data_epoch_samples(DataLoader *d);
void sample_free(Sample *s);

/* Builds a sample from explicit documents (tests, eval): docs are concatenated in order.
 * masks: [n_docs] loss masks (each [lens[i]], 0/1; NULL entries or masks = NULL: all ones). */
void sample_from_docs(Sample *s, const int32_t *const *docs, const uint8_t *const *masks, const int64_t *lens,
                      int64_t n_docs, int64_t pad_multiple, int64_t fixed_T);

#endif
