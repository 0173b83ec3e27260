/* Table-driven command-line flags: one table per command gives each flag's name, kind,
 * destination and help text; parsing and --help are generated from it, so the help
 * always documents every flag. */
#ifndef UL_FLAGS_H
#define UL_FLAGS_H

#include <stdint.h>

#include "core/common.h"

typedef enum { FLAG_INT, FLAG_DOUBLE, FLAG_STRING, FLAG_BOOL, FLAG_STRINGS } FlagKind;

typedef struct {
    const char *name;  /* "--seq-len" */
    FlagKind kind;
    void *dst;         /* int64_t*, double*, const char**, int*, or FlagStrings* */
    const char *arg;   /* placeholder in help, e.g. "N" */
    const char *help;
} Flag;

typedef struct {
    const char **v;
    int n;
} FlagStrings; /* FLAG_STRINGS: every following non-flag word */

/* Returns 0, 1 when --help was given, -1 on error (message in e names the flag). */
int flags_parse(const Flag *flags, int n_flags, int argc, char **argv, UlError *e);
void flags_help(FILE *f, const char *usage, const char *about, const Flag *flags, int n_flags);
/* "environment:" and one row per variable, as flags_help lays out its rows: the
 * environment variables a command reads (names[i], its accepted values and what they do) */
typedef struct {
    const char *name, *help;
} EnvHelp;
void flags_help_env(FILE *f, const EnvHelp *vars, int n);

#endif
