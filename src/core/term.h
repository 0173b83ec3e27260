/* The progress display: a live line (rewritten in place with \r) when the user watches a
 * terminal, plain lines otherwise (logs, pipes, batch jobs). */
#ifndef UL_TERM_H
#define UL_TERM_H

#include "core/common.h"

typedef enum { UL_PROGRESS_AUTO = 0, UL_PROGRESS_BAR = 1, UL_PROGRESS_LINES = 2 } UlProgress;

/* "auto" | "bar" | "lines" (NULL: auto); an error names --progress. */
int ul_parse_progress(const char *s, int *mode, UlError *e);

/* Whether this process's stderr ends on a terminal: stderr itself is one, or, under Open
 * MPI's launcher (mpirun/mpiexec/orterun/prterun, which forwards a rank's stderr through a
 * pipe), the launcher's own stderr is one. Linux /proc; 0 where it cannot tell. */
int ul_stderr_is_terminal(void);

#endif
