/* tools/plot.c - SVG line charts, and the run folder's plot.svg from metrics.csv. */
#include "tools/plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

#define PW 460
#define PH 320
#define ML 60
#define MR 20
#define MT 30
#define MB 45

static const char *COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static void nice_range(double *lo, double *hi)
{
    if (!(*hi > *lo)) {
        *lo -= 0.5;
        *hi += 0.5;
    }
    double pad = (*hi - *lo) * 0.05;
    *lo -= pad;
    *hi += pad;
}

static void panel(FILE *f, const plot_panel *p, int ox)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < p->nseries; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            if (x < x0) x0 = x;
            if (x > x1) x1 = x;
            if (y < y0) y0 = y;
            if (y > y1) y1 = y;
        }
    if (!isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    nice_range(&x0, &x1);
    nice_range(&y0, &y1);
    double w = PW - ML - MR, h = PH - MT - MB;
    fprintf(f, "<g transform=\"translate(%d,0)\">\n", ox);
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\" text-anchor=\"middle\">%s</text>\n", PW / 2, p->title);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n", ML, MT, w, h);
    for (int t = 0; t <= 4; t++) {
        double fx = ML + w * t / 4, fy = MT + h - h * t / 4;
        fprintf(f, "<line x1=\"%g\" y1=\"%d\" x2=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>\n", fx, MT, fx, MT + h);
        fprintf(f, "<line x1=\"%d\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>\n", ML, fy, ML + w, fy);
        fprintf(f, "<text x=\"%g\" y=\"%g\" font-size=\"10\" text-anchor=\"middle\">%.4g</text>\n", fx, MT + h + 14,
                x0 + (x1 - x0) * t / 4);
        fprintf(f, "<text x=\"%d\" y=\"%g\" font-size=\"10\" text-anchor=\"end\">%.4g</text>\n", ML - 4, fy + 3,
                y0 + (y1 - y0) * t / 4);
    }
    fprintf(f, "<text x=\"%g\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", ML + w / 2, PH - 8,
            p->xlabel);
    fprintf(f, "<text x=\"14\" y=\"%g\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 14 %g)\">%s</text>\n",
            MT + h / 2, MT + h / 2, p->ylabel);
    for (int s = 0; s < p->nseries; s++) {
        const plot_series *se = &p->series[s];
        const char *col = COLORS[s % 8];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
            fprintf(f, "%.1f,%.1f ", ML + w * (se->x[i] - x0) / (x1 - x0), MT + h - h * (se->y[i] - y0) / (y1 - y0));
        }
        fprintf(f, "\"/>\n");
        if (se->n == 1)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", ML + w * (se->x[0] - x0) / (x1 - x0),
                    MT + h - h * (se->y[0] - y0) / (y1 - y0), col);
        fprintf(f, "<rect x=\"%g\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/>", ML + 8.0, MT + 6 + 14 * s, col);
        fprintf(f, "<text x=\"%g\" y=\"%d\" font-size=\"11\">%s</text>\n", ML + 22.0, MT + 15 + 14 * s, se->name);
    }
    fprintf(f, "</g>\n");
}

void plot_svg(FILE *f, const plot_panel *panels, int np)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\">\n",
            PW * np, PH);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    for (int i = 0; i < np; i++) panel(f, &panels[i], PW * i);
    fprintf(f, "</svg>\n");
}

typedef struct col {
    double *x, *y;
    int n, cap;
} col;

static void push(col *c, double x, double y)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->x = realloc(c->x, sizeof(double) * (size_t)c->cap);
        c->y = realloc(c->y, sizeof(double) * (size_t)c->cap);
    }
    c->x[c->n] = x;
    c->y[c->n++] = y;
}

static double field(char **p)
{
    char *s = *p, *e = strchr(s, ',');
    if (e) *e = 0;
    *p = e ? e + 1 : s + strlen(s);
    return *s ? strtod(s, NULL) : NAN;
}

int plot_metrics_svg(const char *run_dir)
{
    char path[1100], line[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *in = fopen(path, "r");
    if (!in) return -1;
    col tl = {0}, ta = {0}, vl = {0}, va = {0}, vt = {0}, tt = {0};
    while (fgets(line, sizeof line, in)) {
        char *p = strchr(line, ',');
        if (!p) continue;
        *p++ = 0;
        int train = !strcmp(line, "train"), val = !strcmp(line, "val");
        if (!train && !val) continue;
        double step = field(&p);
        field(&p); /* epoch */
        double secs = field(&p);
        double loss = field(&p), acc = field(&p);
        if (train) {
            if (isfinite(loss)) push(&tl, step, loss);
            if (isfinite(acc)) push(&ta, step, 100 * acc);
            if (isfinite(acc) && isfinite(secs)) push(&tt, secs, 100 * acc);
        } else {
            if (isfinite(loss)) push(&vl, step, loss);
            if (isfinite(acc)) push(&va, step, 100 * acc);
            if (isfinite(acc) && isfinite(secs)) push(&vt, secs, 100 * acc);
        }
    }
    fclose(in);
    plot_series ls[2] = {{"train", tl.x, tl.y, tl.n}, {"test", vl.x, vl.y, vl.n}};
    plot_series as[2] = {{"train", ta.x, ta.y, ta.n}, {"test", va.x, va.y, va.n}};
    plot_series ts[2] = {{"train", tt.x, tt.y, tt.n}, {"test", vt.x, vt.y, vt.n}};
    plot_panel panels[3] = {{"loss", "step", "cross-entropy", ls, 2},
                            {"accuracy", "step", "top-1 %", as, 2},
                            {"accuracy over time", "training seconds", "top-1 %", ts, 2}};
    snprintf(path, sizeof path, "%s/plot.svg", run_dir);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    int rc = -1;
    if (out) {
        plot_svg(out, panels, 3);
        rc = fclose(out) == 0 && rename(tmp, path) == 0 ? 0 : -1;
    }
    free(tl.x), free(tl.y), free(ta.x), free(ta.y), free(vl.x), free(vl.y), free(va.x), free(va.y);
    free(tt.x), free(tt.y), free(vt.x), free(vt.y);
    return rc;
}
