/* Chat formats for `ulysses tokenize` (docs/formats.md, "Chat messages"): the Llama 3 and
 * ChatML (Qwen) formats in C, chosen by --chat-format or recognized from the chat_template
 * of tokenizer_config.json beside tokenizer.json. A template that is not one of those is
 * never guessed at: messages then need --chat-format. */
#ifndef UL_HF_CHAT_H
#define UL_HF_CHAT_H

#include <stddef.h>

#include "core/common.h"

typedef enum { UL_CHAT_NONE, UL_CHAT_LLAMA3, UL_CHAT_CHATML } UlChatFormat;

typedef struct {
    UlChatFormat fmt;
    const char *default_system; /* ChatML: system message put first when the first is not one (Qwen2), or NULL */
    char *bos;                  /* tokenizer_config.json's bos_token (NULL: none) */
    char *eos;                  /* its eos_token (NULL: none) */
    char why[1200];             /* fmt NONE: the error for the first `messages` line */
} UlChat;

/* tok: the --tokenizer argument (tokenizer.json or its directory). format: "llama3",
 * "chatml" or NULL (recognize the chat_template). Errors: a bad --chat-format value, an
 * unreadable tokenizer_config.json; an unknown template only sets why. */
int ul_chat_setup(const char *tok, const char *format, UlChat *c, UlError *e);
void ul_chat_free(UlChat *c);

/* Python's str.strip() (Jinja's trim) on UTF-8 s[n]: *start and the length of what is left. */
size_t ul_py_strip(const char *s, size_t n, size_t *start);

#endif
