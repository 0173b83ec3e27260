#include "core/term.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ul_parse_progress(const char *s, int *mode, UlError *e) {
    if (!s || strcmp(s, "auto") == 0) *mode = UL_PROGRESS_AUTO;
    else if (strcmp(s, "bar") == 0) *mode = UL_PROGRESS_BAR;
    else if (strcmp(s, "lines") == 0) *mode = UL_PROGRESS_LINES;
    else return ul_err(e, "--progress %s: expected auto, bar or lines", s);
    return 0;
}

/* Open MPI's launchers, which forward their ranks' output (4.x: mpirun = mpiexec = orterun,
 * node daemon orted; 5.x: prterun, prted). A rank on another node than mpirun has orted
 * as its parent, whose stderr is no terminal: plain lines there. */
static int is_launcher(const char *comm) {
    static const char *const names[] = {"mpirun", "mpiexec", "orterun", "orted", "prterun", "prted"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(comm, names[i]) == 0) return 1;
    return 0;
}

int ul_stderr_is_terminal(void) {
    if (isatty(2)) return 1;
    pid_t pp = getppid();
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pp);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(comm, sizeof comm, f) != NULL;
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    if (!ok || !is_launcher(comm)) return 0;
    /* the launcher's stderr: only a character device can be a terminal (opening a pipe or
     * a FIFO here could block or disturb it) */
    snprintf(path, sizeof path, "/proc/%d/fd/2", (int)pp);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISCHR(st.st_mode)) return 0;
    int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return 0;
    int tty = isatty(fd);
    close(fd);
    return tty;
}
