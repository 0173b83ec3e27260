#include "cli/flags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const Flag *find(const Flag *flags, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(flags[i].name, name) == 0) return &flags[i];
    return NULL;
}

int flags_parse(const Flag *flags, int n_flags, int argc, char **argv, UlError *e) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        char name[128];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        const Flag *f = find(flags, n_flags, name);
        if (!f) return ul_err(e, "%s: unknown flag (see --help)", name);
        if (f->kind == FLAG_BOOL) {
            if (val) return ul_err(e, "%s: takes no value", name);
            *(int *)f->dst = 1;
            continue;
        }
        if (f->kind == FLAG_STRINGS) {
            FlagStrings *fs = f->dst;
            if (val) fs->v[fs->n++] = val;
            while (i + 1 < argc && !(argv[i + 1][0] == '-' && argv[i + 1][1])) fs->v[fs->n++] = argv[++i];
            if (fs->n == 0) return ul_err(e, "%s: expects at least one value", name);
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) return ul_err(e, "%s: missing value (%s)", name, f->arg);
            val = argv[++i];
        }
        char *end = NULL;
        errno = 0;
        switch (f->kind) {
        case FLAG_INT: {
            long long v = strtoll(val, &end, 10);
            if (errno || end == val || *end) return ul_err(e, "%s: expected an integer, got '%s'", name, val);
            *(int64_t *)f->dst = v;
            break;
        }
        case FLAG_DOUBLE: {
            double v = strtod(val, &end);
            if (errno || end == val || *end) return ul_err(e, "%s: expected a number, got '%s'", name, val);
            *(double *)f->dst = v;
            break;
        }
        case FLAG_STRING: *(const char **)f->dst = val; break;
        default: break;
        }
    }
    return 0;
}

void flags_help(FILE *out, const char *usage, const char *about, const Flag *flags, int n_flags) {
    fprintf(out, "usage: %s\n\n%s\n\nflags:\n", usage, about);
    for (int i = 0; i < n_flags; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", flags[i].name, flags[i].arg ? " " : "", flags[i].arg ? flags[i].arg : "");
        fprintf(out, "  %-24s %s\n", left, flags[i].help);
    }
    fprintf(out, "  %-24s %s\n", "--help", "show this help");
}
