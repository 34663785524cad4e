/* tools/plot.h - small SVG line charts (a person can open plot.svg in any browser). */
#ifndef NNC_TOOLS_PLOT_H
#define NNC_TOOLS_PLOT_H

#include <stdio.h>

typedef struct plot_series {
    const char *name;
    const double *x, *y;
    int n;
} plot_series;

typedef struct plot_panel {
    const char *title, *xlabel, *ylabel;
    const plot_series *series;
    int nseries;
} plot_panel;

/* Write panels side by side into one SVG document. */
void plot_svg(FILE *f, const plot_panel *panels, int npanels);

#endif
