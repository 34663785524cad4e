/* tools/plot.h - SVG charts (a person can open plot.svg in any browser): a grid of panels, each
 * with round 1-2-5 ticks, labelled axes, its legend to the right of the plotting area, optional
 * markers and shaded bands, in colour-blind-safe colours (Okabe-Ito). */
#ifndef NNC_TOOLS_PLOT_H
#define NNC_TOOLS_PLOT_H

#include <stdio.h>

enum { PLOT_LINE = 0, PLOT_POINTS = 1 };

typedef struct plot_series {
    const char *name;    /* legend entry; NULL = none */
    const double *x, *y; /* non-finite points break the line */
    int n;
    const double *lo, *hi; /* optional band from lo to hi at the same x (e.g. min..max over seeds) */
    int markers;         /* 1: a marker at every point (evaluations) */
    int dashed;
    int kind;            /* PLOT_LINE or PLOT_POINTS (markers only) */
    int errbars;         /* with lo/hi: a vertical bar lo..hi at every point instead of a band */
    int color;           /* palette index + 1; 0 = by position in the panel; -1 = grey context */
    double width;        /* stroke width, 0 = 2 */
} plot_series;

typedef struct plot_panel {
    const char *title, *xlabel, *ylabel;
    const plot_series *series;
    int nseries;
    int span;            /* grid columns the panel takes (0 = 1) */
    double ymin, ymax;   /* when ymin < ymax: the y range always includes them */
    double xmin, xmax;   /* when xmin < xmax: the x range always includes them */
    int yzero;           /* the y range includes 0 */
    const char *note;    /* small grey line under the title, or NULL */
    const char *const *xcats; /* categorical x axis: x = 0..nxcats-1 labelled with these names */
    int nxcats;
} plot_panel;

/* Write the panels into one SVG document, `cols` panel columns per row (0 = all in one row), with
 * an optional figure title and subtitle (NULL = none). */
void plot_figure_svg(FILE *f, const char *title, const char *subtitle, const plot_panel *panels, int npanels,
                     int cols);
/* The panels side by side, no figure title. */
void plot_svg(FILE *f, const plot_panel *panels, int npanels);
/* The colour of palette index i (i >= 0). */
const char *plot_color(int i);
/* A tick value as text for ticks `step` apart: as few decimals as the step needs, k/M for
 * thousands and millions ("0.6", "20k", "150"). */
void plot_tick_label(char *buf, size_t n, double v, double step);
/* Write path through a fresh temp file (nnc__create_temp) renamed over it: draw(f, ud) writes
 * the content. Returns 0 or -1 (errno set). */
int plot_write_file(const char *path, void (*draw)(FILE *f, void *ud), void *ud);
/* Write text with &, <, >, " escaped. */
void plot_xml_text(FILE *f, const char *s);

#endif
