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

/* "  LEFT  help": the help column at `col` (the widest flag + 2) for every flag, the help
 * wrapped at word boundaries within HELP_WIDTH columns, continuation lines indented to it */
#define HELP_WIDTH 100

static void help_row(FILE *out, const char *left, const char *help, int col) {
    fprintf(out, "  %-*s", col - 2, left);
    int at = col, room = HELP_WIDTH - col > 30 ? HELP_WIDTH - col : 30;
    const char *p = help;
    int used = 0;
    while (*p) {
        while (*p == ' ') p++;
        int w = (int)strcspn(p, " ");
        if (w == 0) break;
        if (used > 0 && used + 1 + w > room) {
            fprintf(out, "\n%*s", at, "");
            used = 0;
        }
        fprintf(out, "%s%.*s", used ? " " : "", w, p);
        used += (used ? 1 : 0) + w;
        p += w;
    }
    fprintf(out, "\n");
}

void flags_help(FILE *out, const char *usage, const char *about, const Flag *flags, int n_flags) {
    fprintf(out, "usage: %s\n\n%s\n\nflags:\n", usage, about);
    char left[96];
    int col = 2 + (int)strlen("--help") + 2;
    for (int i = 0; i < n_flags; i++) {
        int w = snprintf(left, sizeof left, "%s%s%s", flags[i].name, flags[i].arg ? " " : "", flags[i].arg ? flags[i].arg : "");
        if (2 + w + 2 > col) col = 2 + w + 2;
    }
    for (int i = 0; i < n_flags; i++) {
        snprintf(left, sizeof left, "%s%s%s", flags[i].name, flags[i].arg ? " " : "", flags[i].arg ? flags[i].arg : "");
        help_row(out, left, flags[i].help, col);
    }
    help_row(out, "--help", "show this help", col);
}

void flags_help_env(FILE *out, const EnvHelp *vars, int n) {
    int col = 0;
    for (int i = 0; i < n; i++)
        if (2 + (int)strlen(vars[i].name) + 2 > col) col = 2 + (int)strlen(vars[i].name) + 2;
    fprintf(out, "\nenvironment:\n");
    for (int i = 0; i < n; i++) help_row(out, vars[i].name, vars[i].help, col);
}
