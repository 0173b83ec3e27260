/* Hugging Face tokenizer.json in C: the BPE tokenizers of today's Llama-family
 * checkpoints, with ids identical to the Python `tokenizers` library (docs/formats.md,
 * "Hugging Face tokenizers").
 *
 * Supported (anything else in the file is one error naming the field and value):
 *   added_tokens    matched before everything else, leftmost-longest; "normalized": true
 *                   ones on the normalized text; single_word, lstrip, rstrip
 *   normalizer      NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace, Sequence
 *   pre_tokenizer   Split (PCRE2 for the Oniguruma regexes), ByteLevel (last), Metaspace,
 *                   Digits, Sequence
 *   model           BPE: merges by rank with a heap, byte_fallback, unk_token, fuse_unk,
 *                   ignore_merges
 *   post_processor  TemplateProcessing (single sequence), ByteLevel, Sequence
 *   decoder         ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence
 * BOS/EOS are the post-processor's; with bos_eos_from_config, those of tokenizer_config.json
 * beside tokenizer.json (add_bos_token / add_eos_token) instead.
 *
 * Text must be valid UTF-8: ul_utf8_sanitize makes it so the way Python reads a file with
 * errors='replace'. One HfTokenizer is shared read-only by any number of threads, each
 * with its own HfTokScratch. */
#ifndef UL_HF_TOKENIZER_H
#define UL_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct HfTokenizer HfTokenizer;
typedef struct HfTokScratch HfTokScratch;

typedef struct {
    uint32_t *v; /* [cap] */
    int64_t n, cap;
} HfIds;

/* path: a tokenizer.json, or a directory holding one. tokenizer_config.json beside it is
 * read for add_bos_token / add_eos_token: with bos_eos_from_config they replace the
 * post-processor's BOS/EOS, else a disagreement is only noted (hf_tok_specials_note). */
int hf_tok_load(const char *path, int bos_eos_from_config, HfTokenizer **out, UlError *e);
void hf_tok_free(HfTokenizer *t);
/* 1 + the largest id of the model's vocabulary and the added tokens. */
uint32_t hf_tok_vocab_size(const HfTokenizer *t);
/* One line for the user: the special ids added to each document, and a note when
 * tokenizer_config.json asks for others. */
const char *hf_tok_specials_note(const HfTokenizer *t);

HfTokScratch *hf_tok_scratch_new(const HfTokenizer *t);
void hf_tok_scratch_free(HfTokScratch *s);

/* Appends the ids of text[len] (valid UTF-8), post-processor included, to out: what
 * tokenizers' Tokenizer.encode(text).ids gives. */
void hf_tok_encode(const HfTokenizer *t, HfTokScratch *s, const char *text, size_t len, HfIds *out);
/* The same without the post-processor's ids: encode(text, add_special_tokens=False). */
void hf_tok_encode_text(const HfTokenizer *t, HfTokScratch *s, const char *text, size_t len, HfIds *out);
/* The ids the post-processor (or --bos-eos config) puts before and after each document. */
void hf_tok_special_ids(const HfTokenizer *t, const uint32_t **pre, int *n_pre, const uint32_t **post, int *n_post);
void hf_ids_push(HfIds *ids, uint32_t id);

/* ids -> text as tokenizers' Tokenizer.decode(ids, skip_special_tokens): a malloc'd,
 * NUL-terminated UTF-8 string. An id outside the vocabulary is an error. */
int hf_tok_decode(const HfTokenizer *t, const uint32_t *ids, int64_t n, int skip_special, char **out,
                  size_t *out_len, UlError *e);

/* Copies in[n] to a malloc'd buffer with every invalid UTF-8 sequence replaced by U+FFFD
 * (one per maximal invalid subpart, as Python's errors='replace' and Rust's
 * from_utf8_lossy do); NUL-terminated. Returns the number of replacements. */
size_t ul_utf8_sanitize(const char *in, size_t n, char **out, size_t *out_len);

#endif
