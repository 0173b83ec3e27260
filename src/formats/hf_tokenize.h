/* `ulysses tokenize --tokenizer`: text and JSONL files -> one token shard with a Hugging
 * Face tokenizer (hf_tokenizer.h), documents encoded in parallel; and back (--decode). */
#ifndef UL_HF_TOKENIZE_H
#define UL_HF_TOKENIZE_H

#include "core/common.h"

typedef struct {
    const char *tokenizer;       /* tokenizer.json or a directory holding one */
    const char *const *files;    /* [n_files]; *.jsonl: one JSON object per line, else plain text */
    int n_files;
    int split_blank_lines;       /* plain text: one document per blank-line-separated block */
    const char *field;           /* JSONL: the string field holding the document (default "text") */
    int skip_bad_lines;          /* JSONL: skip and count malformed lines instead of failing */
    const char *out;             /* the shard */
    int bos_eos_from_config;     /* BOS/EOS per tokenizer_config.json, not the post-processor */
    const char *chat_format;     /* "llama3", "chatml", or NULL: recognized from tokenizer_config.json */
} HfTokenizeOptions;

/* Writes one shard (PATH.tmp, then renamed); a summary line goes to stderr. */
int ul_tokenize_hf(const HfTokenizeOptions *o, UlError *e);

/* Writes the documents of the shards as text to out (NULL: stdout): each document
 * followed by a blank line, or with jsonl one {"text": ...} object per line. Ids -> text
 * as tokenizers' decode, special tokens dropped unless keep_special. */
int ul_detokenize(const char *tokenizer, const char *const *shards, int n_shards, int keep_special, int jsonl,
                  const char *out, UlError *e);

#endif
