/* Token shards: the project's binary format for tokenized documents.
 *
 *   offset  size              field
 *   0       8                 magic "ULYSTOK1"
 *   8       4  u32            version: 1, or 2 = with a loss mask
 *   12      4  u32            vocab_size (0 = unknown; else every token < vocab_size)
 *   16      8  u64            n_docs
 *   24      8  u64            n_tokens
 *   32      8*(n_docs+1) u64  doc_offsets: 0 = off[0] <= off[1] <= ... <= off[n_docs] = n_tokens
 *   ...     4*n_tokens  u32   tokens
 *   ...     n_tokens    u8    loss mask (version 2 only): 1 = the token is a target of
 *                             the loss (predicted from the tokens before it), 0 = not
 * All little-endian; the file size must be exactly the sum. Document i is
 * tokens[off[i], off[i+1]); empty documents are allowed but skipped by the loader.
 * A version 1 shard is a version 2 one whose mask is all ones (docs/formats.md). */
#ifndef UL_TOKENS_H
#define UL_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

#define UL_TOK_MAGIC "ULYSTOK1"
#define UL_TOK_VERSION 2u /* the newest version read; shards without a mask are written as 1 */
#define UL_TOK_HEADER_BYTES 32

typedef struct {
    char *path;
    void *map;
    size_t size;
    uint32_t vocab_size;
    int64_t n_docs, n_tokens;
    const uint64_t *doc_offsets; /* [n_docs + 1] */
    const uint32_t *tokens;      /* [n_tokens] */
    const uint8_t *mask;         /* [n_tokens] 0/1, or NULL (version 1): all ones */
} TokShard;

/* Maps and fully validates a shard (sizes, monotone offsets, tokens < vocab_size, mask 0/1). */
int tok_shard_open(TokShard *s, const char *path, UlError *e);
void tok_shard_close(TokShard *s);
/* Writes PATH.tmp then renames. mask [n_tokens] (0/1) or NULL; a shard whose mask is
 * NULL or all ones is written as version 1 (readable by older ulysses), else version 2. */
int tok_shard_write(const char *path, const uint32_t *tokens, int64_t n_tokens, const uint64_t *doc_offsets,
                    int64_t n_docs, uint32_t vocab_size, const uint8_t *mask, UlError *e);

/* Byte-level tokenizer (vocab 256, token = byte value). One document per file, or with
 * split_blank_lines one document per block separated by one or more blank lines
 * (the separating newlines are not part of any document). Writes one shard to out. */
int ul_tokenize_bytes(const char *const *files, int n_files, int split_blank_lines, const char *out, UlError *e);

/* The documents of --split-blank-lines: calls fn(ctx, start, len) for each maximal run of
 * non-blank lines of p[n] (a blank line holds only spaces, tabs, CR), from its first
 * line's start to its last line's end without that line's "\n" / "\r\n". */
void ul_blank_line_blocks(const uint8_t *p, int64_t n, void (*fn)(void *ctx, int64_t start, int64_t len), void *ctx);

#endif
