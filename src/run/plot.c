#include "run/plot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* gnuplot, or the program UL_GNUPLOT names */
static const char *gnuplot_cmd(void) {
    const char *g = getenv("UL_GNUPLOT");
    return g && g[0] ? g : "gnuplot";
}

int plot_check(const char *what, UlError *e) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' -e 'set terminal pngcairo' >/dev/null 2>&1", gnuplot_cmd());
    FILE *g = popen(cmd, "w");
    if (!g || pclose(g) != 0)
        return ul_err(e, "%s: the plot needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox)", what);
    return 0;
}

int plot_png(const char *path, const PlotPanel *panels, int n_panels, UlError *e) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.png", path);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' >/dev/null 2>&1", gnuplot_cmd()); /* never a PNG on our stdout */
    FILE *g = popen(cmd, "w");
    if (!g) return ul_err(e, "%s: cannot start gnuplot (install gnuplot-nox)", path);
    /* one row of up to 3 panels; more in rows of ceil(n / 2) */
    int cols = n_panels <= 3 ? n_panels : (n_panels + 1) / 2, rows = (n_panels + cols - 1) / cols;
    fprintf(g, "set terminal pngcairo size %d,%d noenhanced font 'sans,10'\n", 520 * cols, 420 * rows);
    fprintf(g, "set output '%s'\nset multiplot layout %d,%d\nset grid\n", tmp, rows, cols);
    for (int p = 0; p < n_panels; p++) {
        const PlotPanel *pp = &panels[p];
        fprintf(g, "set title '%s'\nset xlabel '%s'\nset ylabel '%s'\n", pp->title, pp->xlabel, pp->ylabel);
        fprintf(g, pp->logy ? "set logscale y\n" : "unset logscale y\n");
        /* rising curves on a fixed range (accuracy) keep their legend out of the way */
        fprintf(g, pp->ymin < pp->ymax ? "set key bottom right\n" : "set key top right\n");
        if (pp->ymin < pp->ymax) fprintf(g, "set yrange [%g:%g]\n", pp->ymin, pp->ymax);
        else fprintf(g, "set yrange [*:*]\n");
        fprintf(g, "plot ");
        for (int l = 0; l < pp->n_lines; l++)
            fprintf(g, "%s'-' using 1:2 with linespoints pt 7 ps 0.5 title '%s'", l ? ", " : "", pp->lines[l].label);
        fprintf(g, "\n");
        for (int l = 0; l < pp->n_lines; l++) {
            for (int64_t i = 0; i < pp->lines[l].n; i++) fprintf(g, "%.9g %.9g\n", pp->lines[l].x[i], pp->lines[l].y[i]);
            fprintf(g, "e\n");
        }
    }
    fprintf(g, "unset multiplot\nset output\n");
    int rc = pclose(g);
    if (rc != 0 || access(tmp, F_OK) != 0) {
        unlink(tmp);
        return ul_err(e, "%s: gnuplot failed (is gnuplot-nox with the pngcairo terminal installed?)", path);
    }
    if (rename(tmp, path) != 0) return ul_err(e, "%s: cannot rename the plot into place", path);
    return 0;
}
