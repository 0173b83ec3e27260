/* PNG plots through gnuplot (Debian's gnuplot-nox, pngcairo or png terminal). */
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

/* Panels side by side in one PNG (written to PATH.tmp.png, then renamed). */
int plot_png(const char *path, const PlotPanel *panels, int n_panels, UlError *e);

#endif
