#include "formats/hf_chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/fileio.h"

/* The chat templates recognized, as their public definitions write them (Jinja source;
 * compared with white space outside string literals removed). */
static const struct {
    const char *name;
    UlChatFormat fmt;
    const char *default_system;
    const char *jinja;
} KNOWN[] = {
    {"Llama 3", UL_CHAT_LLAMA3, NULL,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
     "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"ChatML", UL_CHAT_CHATML, NULL,
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
     "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"Qwen2 (ChatML with a default system message)", UL_CHAT_CHATML, "You are a helpful assistant.",
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
     "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
     "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
     "%}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
};

/* s without white space outside quotes; a newline inside quotes becomes the escape \n. */
static char *squeeze(const char *s) {
    size_t n = strlen(s), w = 0;
    char *o = ul_malloc(2 * n + 1), q = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (q && c == '\\' && i + 1 < n) {
            o[w++] = c;
            o[w++] = s[++i];
            continue;
        }
        if (q && c == '\n') {
            o[w++] = '\\';
            o[w++] = 'n';
            continue;
        }
        if (!q && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) continue;
        if (c == '\'' || c == '"') q = q == c ? 0 : q ? q : c;
        o[w++] = c;
    }
    o[w] = 0;
    return o;
}

/* A token field of tokenizer_config.json: a string or {"content": string}. */
static char *token_text(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? ul_strdup(v->valuestring) : NULL;
}

int ul_chat_setup(const char *tok, const char *format, UlChat *c, UlError *e) {
    memset(c, 0, sizeof *c);
    if (format && strcmp(format, "llama3") != 0 && strcmp(format, "chatml") != 0)
        return ul_err(e, "--chat-format %s: llama3 or chatml", format);
    char path[4096];
    struct stat st;
    if (stat(tok, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(path, sizeof path, "%s/tokenizer_config.json", tok);
    else {
        const char *slash = strrchr(tok, '/');
        snprintf(path, sizeof path, "%.*stokenizer_config.json", slash ? (int)(slash - tok + 1) : 0, tok);
    }
    cJSON *j = NULL;
    if (stat(path, &st) == 0) {
        char *text;
        if (ul_read_file(path, (size_t)64 << 20, &text, NULL, e)) return -1;
        j = cJSON_Parse(text);
        free(text);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return ul_err(e, "%s: not a JSON object", path);
        }
        c->bos = token_text(j, "bos_token");
        c->eos = token_text(j, "eos_token");
    }
    if (format) {
        c->fmt = strcmp(format, "llama3") == 0 ? UL_CHAT_LLAMA3 : UL_CHAT_CHATML;
    } else {
        const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "chat_template") : NULL;
        if (cJSON_IsArray(t)) { /* [{"name", "template"}]: the "default" one, as transformers */
            const cJSON *d = NULL, *x;
            cJSON_ArrayForEach(x, t) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(x, "name");
                if (cJSON_IsString(nm) && strcmp(nm->valuestring, "default") == 0)
                    d = cJSON_GetObjectItemCaseSensitive(x, "template");
            }
            t = d;
        }
        if (!cJSON_IsString(t)) {
            if (j)
                snprintf(c->why, sizeof c->why,
                         "%.800s has no chat_template: give --chat-format llama3|chatml to format messages", path);
            else
                snprintf(c->why, sizeof c->why,
                         "%.800s: no tokenizer_config.json beside the tokenizer (no chat_template): give --chat-format "
                         "llama3|chatml to format messages",
                         tok);
        } else {
            char *have = squeeze(t->valuestring);
            for (size_t k = 0; k < sizeof KNOWN / sizeof KNOWN[0] && !c->fmt; k++) {
                char *want = squeeze(KNOWN[k].jinja);
                if (strcmp(have, want) == 0) c->fmt = KNOWN[k].fmt, c->default_system = KNOWN[k].default_system;
                free(want);
            }
            free(have);
            if (!c->fmt)
                snprintf(c->why, sizeof c->why,
                         "%.800s: its chat_template is not one ulysses formats natively (Llama 3, ChatML, Qwen2's "
                         "ChatML); --chat-format llama3|chatml formats the messages that way anyway (look at the "
                         "result with tokenize --decode --keep-special)",
                         path);
        }
    }
    if (c->fmt == UL_CHAT_LLAMA3 && !c->bos) c->bos = ul_strdup("<|begin_of_text|>");
    cJSON_Delete(j);
    return 0;
}

void ul_chat_free(UlChat *c) {
    free(c->bos);
    free(c->eos);
    memset(c, 0, sizeof *c);
}

/* Length of the white space code point (Python's str.isspace) at s[n], else 0. */
static size_t space_at(const unsigned char *s, size_t n) {
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20))) return 1;
    if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (n < 3) return 0;
    unsigned cp = ((unsigned)(s[0] & 0x0f) << 12) | ((unsigned)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
    if ((s[0] & 0xf0) != 0xe0) return 0;
    return cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
                   cp == 0x205f || cp == 0x3000
               ? 3
               : 0;
}

size_t ul_py_strip(const char *s, size_t n, size_t *start) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = n, l;
    while (a < b && (l = space_at(u + a, b - a))) a += l;
    for (;;) { /* the last code point: step back over continuation bytes */
        size_t k = b;
        while (k > a && (u[k - 1] & 0xc0) == 0x80) k--;
        if (k == a || (k > 0 && space_at(u + k - 1, b - k + 1) != b - k + 1)) break;
        b = k - 1;
    }
    *start = a;
    return b - a;
}
