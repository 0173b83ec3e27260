/* Output locations of a command (--out, --ckpt-dir, --metrics, --plot, eval outputs, the
 * demo's --dir), checked before any work so that nothing runs for nothing and nothing of
 * the user's is lost (docs/formats.md, "Output locations"):
 *  - a directory output is created with its missing parents (as HF Trainer's output_dir);
 *    it is refused when it exists but is not a directory or not writable, when its nearest
 *    existing ancestor is not a writable directory, when it is an input directory (--init,
 *    --model DIR, the --resume checkpoint), or when a file the command writes into it is
 *    an input file (DIR/config.json of --model, say). It is never emptied: the command
 *    replaces only the files it writes there, each by a temporary name and a rename.
 *  - a file output needs an existing, writable parent directory, or one that a directory
 *    output of the same command creates; it is refused when it is a directory, an input
 *    file, or the same file as another output.
 * The check reads the file system only; ul_outputs_make_dirs then creates the directories. */
#ifndef UL_OUTPUTS_H
#define UL_OUTPUTS_H

#include "core/common.h"

typedef enum { UL_OUT_DIR, UL_OUT_FILE } UlOutKind;

typedef struct {
    const char *flag;          /* "--out", for the messages */
    const char *path;          /* NULL: not given, skipped */
    UlOutKind kind;
    const char *const *writes; /* UL_OUT_DIR: the file names written into it, NULL-terminated (or NULL) */
} UlOutput;

typedef enum {
    UL_IN_PATH,      /* a file or a directory */
    UL_IN_GLOB,      /* a glob of files (--data) */
    UL_IN_MODEL_DIR, /* a file, or a model directory: the directory and its *.json and *.safetensors */
} UlInKind;

typedef struct {
    const char *flag; /* "--init" */
    const char *path; /* NULL: not given */
    UlInKind kind;
} UlInput;

/* Checks every output against the rules above and the inputs; local (no communication).
 * 0, or -1 with e naming the flag and the path. */
int ul_outputs_check(const UlOutput *out, int n_out, const UlInput *in, int n_in, UlError *e);

/* Creates the directory outputs and their missing parents (mode 0755). */
int ul_outputs_make_dirs(const UlOutput *out, int n_out, UlError *e);

/* Creates dir and its missing parents; refuses a path component that is not a directory.
 * flag names the option in the message. */
int ul_mkdir_p(const char *dir, const char *flag, UlError *e);

#endif
