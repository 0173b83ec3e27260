/* PNG plots through gnuplot (Debian's gnuplot-nox, pngcairo terminal); the environment
 * variable UL_GNUPLOT may name another gnuplot executable. */
#ifndef UL_PLOT_H
#define UL_PLOT_H

#include <stdint.h>

#include "core/common.h"

typedef struct {
    const char *label;
    const double *x, *y;
    int64_t n;
} PlotLine;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int logy;
    double ymin, ymax; /* ymin == ymax: automatic */
    const PlotLine *lines;
    int n_lines;
} PlotPanel;

/* 0 when gnuplot with the pngcairo terminal is installed; otherwise an error naming
 * `what` (the flag or file that asked for the plot). Cheap: run it before long work. */
int plot_check(const char *what, UlError *e);

/* Panels side by side in one PNG (up to 3 in a row, more in 2 rows; written to PATH.tmp.png,
 * then renamed). */
int plot_png(const char *path, const PlotPanel *panels, int n_panels, UlError *e);

#endif
