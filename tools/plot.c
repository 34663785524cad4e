/* tools/plot.c - SVG charts, and the run folder's plot.svg from metrics.csv: loss and accuracy
 * against steps, test accuracy against time (center and average model), and for a run with
 * several workers the per-worker weight, gradient norm, distance to the center, local steps and
 * synchronisation time over rounds. */
#include "tools/plot.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/fileio.h"
#include "tools/cli.h"

/* panel geometry (pixels): one grid cell; the legend column sits right of the plotting area */
#define CELL_W 520
#define CELL_H 360
#define M_LEFT 70
#define M_TOP 52
#define M_BOTTOM 56
#define M_RIGHT 18
#define LEGEND_W 132
#define HEADER_H 58

static const char *PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255"};
#define NPALETTE ((int)(sizeof PALETTE / sizeof *PALETTE))
#define GREY "#B8B8B8"

const char *plot_color(int i) { return PALETTE[(i < 0 ? -i : i) % NPALETTE]; }

void plot_xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

int nnc_nice_ticks(double lo, double hi, int target, double *ticks, int cap)
{
    if (cap <= 0) return 0;
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (lo > hi) {
        double t = lo;
        lo = hi, hi = t;
    }
    if (hi - lo <= 1e-12 * fmax(1, fmax(fabs(lo), fabs(hi)))) {
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= d, hi += d;
    }
    if (target < 2) target = 2;
    double range = hi - lo, raw = range / target;
    double mag = pow(10, floor(log10(raw)));
    static const double MULT[] = {1, 2, 5};
    double best_step = 0, best_score = INFINITY;
    for (int e = -1; e <= 1; e++)
        for (int m = 0; m < 3; m++) {
            double step = MULT[m] * mag * pow(10, e);
            double a = floor(lo / step + 1e-9), b = ceil(hi / step - 1e-9);
            double count = b - a + 1;
            if (count > cap || count < 2) continue;
            double coverage = range / ((b - a) * step);
            double score = fabs(count - (target + 1)) + 4 * (1 - coverage);
            if (score < best_score) best_score = score, best_step = step;
        }
    if (!(best_step > 0)) { /* cap too small for a 1-2-5 step: the ends only */
        ticks[0] = lo;
        if (cap > 1) ticks[1] = hi;
        return cap > 1 ? 2 : 1;
    }
    double a = floor(lo / best_step + 1e-9), b = ceil(hi / best_step - 1e-9);
    int n = 0;
    for (double k = a; k <= b + 0.5 && n < cap; k++) {
        double t = k * best_step;
        if (fabs(t) < best_step * 1e-9) t = 0; /* no "-0" */
        ticks[n++] = t;
    }
    return n;
}

/* A tick label for value v on an axis with ticks `step` apart: 0.2, 150, 20k, 1.5M. */
void plot_tick_label(char *buf, size_t n, double v, double step)
{
    if (v == 0) {
        snprintf(buf, n, "0");
        return;
    }
    if (step >= 1e6 - 0.5 || (fabs(v) >= 1e6 && step >= 1e5)) {
        snprintf(buf, n, "%gM", v / 1e6);
    } else if (step >= 1000 - 0.5) {
        snprintf(buf, n, "%gk", v / 1e3);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        if (dec > 8) dec = 8;
        snprintf(buf, n, "%.*f", dec, v);
    }
}

typedef struct axis {
    double lo, hi, step;
    double t[24];
    int n;
} axis;

static void make_axis(axis *a, double lo, double hi, int target)
{
    a->n = nnc_nice_ticks(lo, hi, target, a->t, 24);
    a->lo = a->t[0];
    a->hi = a->t[a->n - 1];
    a->step = a->n > 1 ? a->t[1] - a->t[0] : 1;
    if (!(a->hi > a->lo)) a->hi = a->lo + 1;
}

static int series_color(const plot_series *s, int index) { return s->color > 0 ? s->color - 1 : index; }

/* Marker shape by palette index: circle, square, triangle, diamond. */
static void marker(FILE *f, double x, double y, int shape, const char *col, double r)
{
    switch (shape % 4) {
    case 0: fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"white\" stroke-width=\"1\"/>", x, y, r, col); break;
    case 1:
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"white\" stroke-width=\"1\"/>",
                x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r, col);
        break;
    case 2:
        fprintf(f, "<path d=\"M%.1f,%.1fL%.1f,%.1fL%.1f,%.1fZ\" fill=\"%s\" stroke=\"white\" stroke-width=\"1\"/>", x,
                y - 1.2 * r, x + 1.1 * r, y + 0.8 * r, x - 1.1 * r, y + 0.8 * r, col);
        break;
    default:
        fprintf(f, "<path d=\"M%.1f,%.1fL%.1f,%.1fL%.1f,%.1fL%.1f,%.1fZ\" fill=\"%s\" stroke=\"white\" stroke-width=\"1\"/>",
                x, y - 1.25 * r, x + 1.25 * r, y, x, y + 1.25 * r, x - 1.25 * r, y, col);
    }
}

static int has_legend(const plot_panel *p)
{
    for (int s = 0; s < p->nseries; s++)
        if (p->series[s].name) return 1;
    return 0;
}

static void panel(FILE *f, const plot_panel *p, double ox, double oy, int cellw, int id)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < p->nseries; s++) {
        const plot_series *se = &p->series[s];
        for (int i = 0; i < se->n; i++) {
            double x = se->x[i], ys[3] = {se->y[i], se->lo ? se->lo[i] : NAN, se->hi ? se->hi[i] : NAN};
            if (!isfinite(x)) continue;
            for (int k = 0; k < 3; k++) {
                if (!isfinite(ys[k])) continue;
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (ys[k] < y0) y0 = ys[k];
                if (ys[k] > y1) y1 = ys[k];
            }
        }
    }
    int empty = !isfinite(x0);
    if (empty) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (p->ymin < p->ymax) {
        if (p->ymin < y0) y0 = p->ymin;
        if (p->ymax > y1) y1 = p->ymax;
    }
    if (p->xmin < p->xmax) {
        if (p->xmin < x0) x0 = p->xmin;
        if (p->xmax > x1) x1 = p->xmax;
    }
    if (p->yzero && !empty) {
        if (y0 > 0) y0 = 0;
        if (y1 < 0) y1 = 0;
    }
    int legend = has_legend(p);
    double pw = cellw - M_LEFT - M_RIGHT - (legend ? LEGEND_W : 0), ph = CELL_H - M_TOP - M_BOTTOM;
    axis ax, ay;
    if (p->xcats && p->nxcats > 0) {
        ax.n = p->nxcats < 24 ? p->nxcats : 24;
        for (int i = 0; i < ax.n; i++) ax.t[i] = i;
        ax.lo = -0.5, ax.hi = ax.n - 0.5, ax.step = 1;
    } else {
        make_axis(&ax, x0, x1, pw > 600 ? 8 : 5);
    }
    make_axis(&ay, y0, y1, 5);
    double L = ox + M_LEFT, T = oy + M_TOP;
#define SX(v) (L + pw * ((v) - ax.lo) / (ax.hi - ax.lo))
#define SY(v) (T + ph - ph * ((v) - ay.lo) / (ay.hi - ay.lo))
    fprintf(f, "<g>\n<clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n", id,
            L - 4, T - 4, pw + 8, ph + 8);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"15\" font-weight=\"bold\" fill=\"#222\">", L, oy + 22);
    plot_xml_text(f, p->title);
    fputs("</text>\n", f);
    if (p->note) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11.5\" fill=\"#666\">", L, oy + 39);
        plot_xml_text(f, p->note);
        fputs("</text>\n", f);
    }
    /* grid, ticks and labels */
    char lab[48];
    for (int i = 0; i < ax.n; i++) {
        double x = SX(ax.t[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#E8E8E8\"/>", x, T, x, T + ph);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>", x, T + ph, x, T + ph + 5);
        if (p->xcats && p->nxcats > 0) {
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" fill=\"#222\">", x, T + ph + 19);
            plot_xml_text(f, p->xcats[i]);
            fputs("</text>\n", f);
            continue;
        }
        plot_tick_label(lab, sizeof lab, ax.t[i], ax.step);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11.5\" text-anchor=\"middle\" fill=\"#333\">%s</text>\n", x,
                T + ph + 19, lab);
    }
    for (int i = 0; i < ay.n; i++) {
        double y = SY(ay.t[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#E8E8E8\"/>", L, y, L + pw, y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>", L - 5, y, L, y);
        plot_tick_label(lab, sizeof lab, ay.t[i], ay.step);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11.5\" text-anchor=\"end\" fill=\"#333\">%s</text>\n", L - 8,
                y + 4, lab);
    }
    fprintf(f, "<path d=\"M%.1f,%.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#555\"/>\n", L, T, T + ph, L + pw);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" fill=\"#222\">", L + pw / 2,
            T + ph + 42);
    plot_xml_text(f, p->xlabel);
    fputs("</text>\n", f);
    double yl = ox + 18, ym = T + ph / 2;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" fill=\"#222\" "
               "transform=\"rotate(-90 %.1f %.1f)\">", yl, ym, yl, ym);
    plot_xml_text(f, p->ylabel);
    fputs("</text>\n", f);
    if (empty)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" fill=\"#888\">no data yet</text>\n",
                L + pw / 2, T + ph / 2);
    /* bands first, then lines, then markers on top */
    fprintf(f, "<g clip-path=\"url(#clip%d)\">\n", id);
    for (int s = 0; s < p->nseries; s++) {
        const plot_series *se = &p->series[s];
        if (!se->lo || !se->hi) continue;
        const char *col = se->color < 0 ? GREY : plot_color(series_color(se, s));
        if (se->errbars) {
            for (int i = 0; i < se->n; i++) {
                if (!isfinite(se->x[i]) || !isfinite(se->lo[i]) || !isfinite(se->hi[i])) continue;
                double x = SX(se->x[i]), a = SY(se->lo[i]), b = SY(se->hi[i]);
                fprintf(f, "<path class=\"errbar\" d=\"M%.1f,%.1fV%.1fM%.1f,%.1fH%.1fM%.1f,%.1fH%.1f\" stroke=\"%s\" "
                           "stroke-width=\"2\" fill=\"none\"/>\n", x, a, b, x - 7, a, x + 7, x - 7, b, x + 7, col);
            }
            continue;
        }
        int i = 0;
        while (i < se->n) { /* one polygon per run of finite points */
            while (i < se->n && !(isfinite(se->x[i]) && isfinite(se->lo[i]) && isfinite(se->hi[i]))) i++;
            int a = i;
            while (i < se->n && isfinite(se->x[i]) && isfinite(se->lo[i]) && isfinite(se->hi[i])) i++;
            if (i - a < 2) continue;
            fprintf(f, "<polygon class=\"band\" fill=\"%s\" fill-opacity=\"0.18\" stroke=\"none\" points=\"", col);
            for (int k = a; k < i; k++) fprintf(f, "%.1f,%.1f ", SX(se->x[k]), SY(se->hi[k]));
            for (int k = i - 1; k >= a; k--) fprintf(f, "%.1f,%.1f ", SX(se->x[k]), SY(se->lo[k]));
            fputs("\"/>\n", f);
        }
    }
    for (int s = 0; s < p->nseries; s++) {
        const plot_series *se = &p->series[s];
        if (se->kind == PLOT_POINTS) continue;
        const char *col = se->color < 0 ? GREY : plot_color(series_color(se, s));
        double w = se->width > 0 ? se->width : 2;
        int open = 0, pts = 0;
        for (int i = 0; i <= se->n; i++) {
            int ok = i < se->n && isfinite(se->x[i]) && isfinite(se->y[i]);
            if (ok && !open) {
                fprintf(f, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
                           "stroke-linejoin=\"round\" stroke-linecap=\"round\"%s points=\"", col, w,
                        se->dashed ? " stroke-dasharray=\"6 4\"" : "");
                open = 1;
                pts = 0;
            }
            if (ok) {
                fprintf(f, "%.1f,%.1f ", SX(se->x[i]), SY(se->y[i]));
                pts++;
            } else if (open) {
                fputs("\"/>\n", f);
                open = 0;
            }
        }
        (void)pts;
    }
    for (int s = 0; s < p->nseries; s++) {
        const plot_series *se = &p->series[s];
        int lonely = 0; /* a single finite point of a line would be invisible: mark it */
        for (int i = 0; i < se->n; i++) lonely += isfinite(se->x[i]) && isfinite(se->y[i]);
        if (!se->markers && se->kind != PLOT_POINTS && lonely != 1) continue;
        int c = series_color(se, s);
        const char *col = se->color < 0 ? GREY : plot_color(c);
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
            fprintf(f, "<g class=\"marker\">");
            int dot = se->kind == PLOT_POINTS && !se->markers;
            marker(f, SX(se->x[i]), SY(se->y[i]), dot ? 0 : c, col, dot ? 2.6 : 4.5);
            fputs("</g>\n", f);
        }
    }
    fputs("</g>\n", f);
    /* legend, right of the plotting area */
    if (legend) {
        double lx = L + pw + 16, ly = T + 6;
        int shown = 0, total = 0;
        for (int s = 0; s < p->nseries; s++) total += p->series[s].name != NULL;
        int room = (int)(ph / 19);
        for (int s = 0; s < p->nseries; s++) {
            const plot_series *se = &p->series[s];
            if (!se->name) continue;
            if (shown == room - 1 && total > room) {
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#666\">+%d more</text>\n", lx,
                        ly + 19 * shown + 4, total - shown);
                break;
            }
            double y = ly + 19 * shown;
            int c = series_color(se, s);
            const char *col = se->color < 0 ? GREY : plot_color(c);
            if (se->lo && se->hi)
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"24\" height=\"12\" fill=\"%s\" fill-opacity=\"0.18\"/>", lx,
                        y - 6, col);
            if (se->kind != PLOT_POINTS)
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%.1f\"%s/>",
                        lx, y, lx + 24, y, col, se->width > 0 ? se->width : 2,
                        se->dashed ? " stroke-dasharray=\"6 4\"" : "");
            if (se->markers || se->kind == PLOT_POINTS)
                marker(f, lx + 12, y, se->kind == PLOT_POINTS ? 0 : c, col, se->kind == PLOT_POINTS ? 2.6 : 4);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#222\">", lx + 31, y + 4);
            char name[24];
            snprintf(name, sizeof name, "%s", se->name);
            if (strlen(se->name) > 17) strcpy(name + 15, "..");
            plot_xml_text(f, name);
            fputs("</text>\n", f);
            shown++;
        }
    }
    fputs("</g>\n", f);
#undef SX
#undef SY
}

void plot_figure_svg(FILE *f, const char *title, const char *subtitle, const plot_panel *panels, int np, int cols)
{
    if (cols <= 0) {
        cols = 0;
        for (int i = 0; i < np; i++) cols += panels[i].span > 0 ? panels[i].span : 1;
        if (cols < 1) cols = 1;
    }
    /* place panels row by row */
    int rows = 0, used = cols;
    for (int i = 0; i < np; i++) {
        int span = panels[i].span > 0 ? (panels[i].span < cols ? panels[i].span : cols) : 1;
        if (used + span > cols) rows++, used = 0;
        used += span;
    }
    int head = title || subtitle ? HEADER_H : 8;
    int W = cols * CELL_W, H = head + rows * CELL_H;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    if (title) {
        fputs("<text x=\"16\" y=\"28\" font-size=\"19\" font-weight=\"bold\" fill=\"#111\">", f);
        plot_xml_text(f, title);
        fputs("</text>\n", f);
    }
    if (subtitle) {
        fputs("<text x=\"16\" y=\"48\" font-size=\"13\" fill=\"#555\">", f);
        plot_xml_text(f, subtitle);
        fputs("</text>\n", f);
    }
    int row = -1;
    used = cols;
    for (int i = 0; i < np; i++) {
        int span = panels[i].span > 0 ? (panels[i].span < cols ? panels[i].span : cols) : 1;
        if (used + span > cols) row++, used = 0;
        panel(f, &panels[i], used * CELL_W, head + row * CELL_H, span * CELL_W, i);
        used += span;
    }
    fprintf(f, "</svg>\n");
}

void plot_svg(FILE *f, const plot_panel *panels, int np) { plot_figure_svg(f, NULL, NULL, panels, np, 0); }

/* ---- plot.svg from metrics.csv ---- */

typedef struct col {
    double *x, *y;
    int n, cap;
} col;

static int push(col *c, double x, double y)
{
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 256;
        double *nx = realloc(c->x, sizeof(double) * (size_t)cap);
        if (!nx) return -1;
        c->x = nx;
        double *ny = realloc(c->y, sizeof(double) * (size_t)cap);
        if (!ny) return -1;
        c->y = ny;
        c->cap = cap;
    }
    c->x[c->n] = x;
    c->y[c->n++] = y;
    return 0;
}

static void col_free(col *c)
{
    free(c->x);
    free(c->y);
}

static double field(char **p)
{
    char *s = *p, *e = strchr(s, ',');
    if (e) *e = 0;
    *p = e ? e + 1 : s + strlen(s);
    return *s ? strtod(s, NULL) : NAN;
}

/* Per-worker values of the `round` rows: vals[k][r * M + w] for k = norm, weight, dist, local. */
typedef struct rounds {
    int m;             /* workers (from the first round row) */
    int n, cap;
    double *round, *sync, *v[4];
} rounds;

/* "a;b;c" -> out[0..m) (missing values NAN); returns how many were present. */
static int split_values(const char *s, double *out, int m)
{
    int k = 0;
    for (int i = 0; i < m; i++) out[i] = NAN;
    while (s && *s && *s != ' ' && k < m) {
        char *end;
        double v = strtod(s, &end);
        out[k++] = end == s ? NAN : v;
        s = end;
        while (*s && *s != ';' && *s != ' ') s++;
        if (*s == ';') s++;
    }
    return k;
}

/* The value of "key=" in the space-separated extra column, or NULL. */
static const char *extra_value(const char *extra, const char *key)
{
    size_t k = strlen(key);
    for (const char *p = extra; p && *p;) {
        if (!strncmp(p, key, k) && p[k] == '=') return p + k + 1;
        p = strchr(p, ' ');
        if (p) p++;
    }
    return NULL;
}

static const char *worker_name(int w)
{
    static char names[64][8];
    if (w < 0 || w >= 64) return "w?";
    snprintf(names[w], sizeof names[w], "w%d", w);
    return names[w];
}

static void round_row(rounds *r, const char *extra)
{
    static const char *KEYS[4] = {"norm", "weight", "dist", "local"};
    const char *w = extra_value(extra, "weight");
    if (!w) return;
    if (!r->m) {
        int m = 1;
        for (const char *p = w; *p && *p != ' '; p++) m += *p == ';';
        r->m = m > 64 ? 64 : m;
    }
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 64;
        double *nr = realloc(r->round, sizeof(double) * (size_t)cap);
        if (!nr) return;
        r->round = nr;
        double *ns = realloc(r->sync, sizeof(double) * (size_t)cap);
        if (!ns) return;
        r->sync = ns;
        for (int k = 0; k < 4; k++) {
            double *nv = realloc(r->v[k], sizeof(double) * (size_t)cap * (size_t)r->m);
            if (!nv) return;
            r->v[k] = nv;
        }
        r->cap = cap;
    }
    const char *rs = extra_value(extra, "round"), *ss = extra_value(extra, "sync_s");
    r->round[r->n] = rs ? strtod(rs, NULL) : r->n + 1;
    r->sync[r->n] = ss ? strtod(ss, NULL) : NAN;
    for (int k = 0; k < 4; k++) split_values(extra_value(extra, KEYS[k]), r->v[k] + (size_t)r->n * (size_t)r->m, r->m);
    r->n++;
}

/* "key": "value" from a small flat JSON text (config.json), or "" when absent. */
static void json_field(const char *text, const char *key, char *out, size_t n)
{
    char pat[64];
    out[0] = 0;
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = text ? strstr(text, pat) : NULL;
    if (!p) return;
    p += strlen(pat);
    while (*p == ' ' || *p == ':') p++;
    size_t o = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"' && o + 1 < n; p++) out[o++] = *p;
    } else {
        for (; *p && *p != ',' && *p != '\n' && *p != '}' && o + 1 < n; p++) out[o++] = *p;
    }
    out[o] = 0;
}

static char *slurp(const char *path)
{
    int status;
    FILE *f = nnc__fopen_regular(path, "metrics", &status); /* never a FIFO planted in the folder */
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + len, chunk, got);
        len += got;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    return buf;
}

/* Write the figure through a fresh temp file renamed over path; 0 or -1. */
int plot_write_file(const char *path, void (*draw)(FILE *f, void *ud), void *ud)
{
    char tmp[1200];
    int fd = nnc__create_temp(path, tmp, sizeof tmp);
    if (fd < 0) return -1;
    FILE *out = fdopen(fd, "w");
    if (!out) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    draw(out, ud);
    if (fclose(out) || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

typedef struct run_fig {
    const char *title;
    char subtitle[512];
    plot_panel *panels;
    int np, cols;
} run_fig;

static void draw_run(FILE *f, void *ud)
{
    run_fig *r = ud;
    plot_figure_svg(f, r->title, r->subtitle, r->panels, r->np, r->cols);
}

int plot_metrics_svg(const char *run_dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    int status;
    FILE *in = nnc__fopen_regular(path, "metrics", &status);
    if (!in) return -1;
    /* train, val (center or the one model), val_average: loss and accuracy by step and seconds */
    col tl = {0}, ta = {0}, vl = {0}, va = {0}, al = {0}, aa = {0}, vt = {0}, at = {0};
    rounds rd = {0};
    char *line = NULL;
    size_t cap = 0;
    int nomem = 0;
    while (getline(&line, &cap, in) > 0) {
        line[strcspn(line, "\r\n")] = 0;
        char *p = strchr(line, ',');
        if (!p) continue;
        *p++ = 0;
        int train = !strcmp(line, "train"), val = !strcmp(line, "val"), avg = !strcmp(line, "val_average");
        int round = !strcmp(line, "round");
        if (!train && !val && !avg && !round) continue;
        double step = field(&p);
        field(&p); /* epoch */
        double secs = field(&p), loss = field(&p), acc = field(&p);
        if (round) {
            field(&p), field(&p); /* lr, img/s: the extra column follows */
            round_row(&rd, p);
            continue;
        }
        col *L = train ? &tl : val ? &vl : &al, *A = train ? &ta : val ? &va : &aa, *T = val ? &vt : avg ? &at : NULL;
        if (isfinite(loss)) nomem |= push(L, step, loss);
        if (isfinite(acc)) nomem |= push(A, step, 100 * acc);
        if (T && isfinite(acc) && isfinite(secs)) nomem |= push(T, secs, 100 * acc);
    }
    free(line);
    fclose(in);

    snprintf(path, sizeof path, "%s/config.json", run_dir);
    char *cfg = slurp(path);
    char dataset[64], model[64], algo[64], workers[16];
    json_field(cfg, "dataset", dataset, sizeof dataset);
    json_field(cfg, "model", model, sizeof model);
    json_field(cfg, "algo", algo, sizeof algo);
    json_field(cfg, "workers", workers, sizeof workers);
    free(cfg);
    int m = rd.m > 1 ? rd.m : 0;
    int multi = m > 1 || aa.n > 0;
    run_fig fig = {.title = "Training run"};
    if (*model)
        snprintf(fig.subtitle, sizeof fig.subtitle, "%s on %s, %s worker%s, algorithm %s  -  %s", model,
                 *dataset ? dataset : "?", *workers ? workers : "1", atoi(workers) > 1 ? "s" : "", *algo ? algo : "?",
                 run_dir);
    else
        snprintf(fig.subtitle, sizeof fig.subtitle, "%s", run_dir);

    const char *test_name = multi ? "test (center)" : "test";
    plot_series ls[3] = {{.name = "train", .x = tl.x, .y = tl.y, .n = tl.n, .width = 1.5, .color = 1},
                         {.name = test_name, .x = vl.x, .y = vl.y, .n = vl.n, .markers = 1, .color = 2},
                         {.name = "test (average)", .x = al.x, .y = al.y, .n = al.n, .markers = 1, .dashed = 1, .color = 3}};
    plot_series as[3] = {{.name = "train", .x = ta.x, .y = ta.y, .n = ta.n, .width = 1.5, .color = 1},
                         {.name = test_name, .x = va.x, .y = va.y, .n = va.n, .markers = 1, .color = 2},
                         {.name = "test (average)", .x = aa.x, .y = aa.y, .n = aa.n, .markers = 1, .dashed = 1, .color = 3}};
    plot_series ts[2] = {{.name = multi ? "center model" : "model", .x = vt.x, .y = vt.y, .n = vt.n, .markers = 1, .color = 2},
                         {.name = "worker average", .x = at.x, .y = at.y, .n = at.n, .markers = 1, .dashed = 1, .color = 3}};
    int nls = al.n ? 3 : 2;
    plot_panel panels[9];
    int np = 0;
    panels[np++] = (plot_panel){"Loss", "step", "cross-entropy loss", ls, nls, .note = "train: running mean; markers: test evaluations"};
    panels[np++] = (plot_panel){"Accuracy", "step", "top-1 accuracy (%)", as, nls, .span = 1};
    panels[np++] = (plot_panel){multi ? "Center vs average model" : "Test accuracy over time", "training time (s)",
                                "test accuracy (%)", ts, at.n ? 2 : 1,
                                .note = multi ? "evaluated on the test split" : NULL};

    /* per-worker panels: one series per worker over rounds */
    plot_series *ws = NULL;
    double ux[2], uy[2];
    if (m > 1 && rd.n > 0) {
        ws = calloc((size_t)(m + 1) * 4 + 1, sizeof *ws);
        double *cols[4] = {NULL, NULL, NULL, NULL};
        for (int k = 0; k < 4 && ws; k++) cols[k] = malloc(sizeof(double) * (size_t)rd.n * (size_t)m);
        if (ws && cols[0] && cols[1] && cols[2] && cols[3]) {
            /* worker-major, so that each worker's values are contiguous */
            for (int k = 0; k < 4; k++) {
                for (int w = 0; w < m; w++)
                    for (int i = 0; i < rd.n; i++) cols[k][(size_t)w * rd.n + i] = rd.v[k][(size_t)i * m + w];
                free(rd.v[k]);
                rd.v[k] = cols[k];
                cols[k] = NULL;
            }
            static const char *TITLE[4] = {"Gradient norm per worker", "Weight in the center", "Distance to the center",
                                           "Local steps per round"};
            static const char *YL[4] = {"smoothed gradient norm", "weight", "L2 distance to the center", "local steps"};
            static const int ORDER[4] = {1, 0, 2, 3};
            int marks = rd.n <= 40, lsgd = !strcmp(algo, "lsgd");
            for (int oi = 0; oi < 4; oi++) {
                int k = ORDER[oi], any = 0;
                for (size_t i = 0; i < (size_t)rd.n * (size_t)m; i++) any |= isfinite(rd.v[k][i]) && rd.v[k][i] != 0;
                if (!any) continue;
                plot_series *s = ws + (size_t)k * (m + 1);
                int ns = m;
                for (int w = 0; w < m; w++)
                    s[w] = (plot_series){.name = worker_name(w), .x = rd.round, .y = rd.v[k] + (size_t)w * rd.n,
                                         .n = rd.n, .markers = marks, .width = 1.6, .color = w + 1};
                const char *title = TITLE[k], *yl = YL[k], *note = NULL;
                if (k == 0 && lsgd) title = "Training loss per worker", yl = "loss";
                if (k == 1) { /* uniform averaging for reference */
                    ux[0] = rd.round[0], ux[1] = rd.round[rd.n - 1];
                    uy[0] = uy[1] = 1.0 / m;
                    s[ns++] = (plot_series){.name = "1/M", .x = ux, .y = uy, .n = 2, .dashed = 1, .color = -1,
                                            .width = 1.5};
                    note = "grey dashed: uniform averaging (1/M)";
                }
                if (k == 3) note = "fewer steps than the others: a straggler";
                panels[np++] = (plot_panel){title, "round", yl, s, ns, .note = note, .yzero = k != 1};
            }
            double top = 0;
            for (int i = 0; i < rd.n; i++)
                if (isfinite(rd.sync[i]) && rd.sync[i] > top) top = rd.sync[i];
            int ms = top < 1;
            for (int i = 0; ms && i < rd.n; i++) rd.sync[i] *= 1000;
            plot_series *ss = ws + (size_t)4 * (m + 1);
            ss[0] = (plot_series){.name = "all workers", .x = rd.round, .y = rd.sync, .n = rd.n, .markers = marks,
                                  .color = 7, .width = 1.6};
            panels[np++] = (plot_panel){"Synchronisation time per round", "round",
                                        ms ? "time in the synchroniser (ms)" : "time in the synchroniser (s)", ss, 1,
                                        .yzero = 1};
        }
        for (int k = 0; k < 4; k++) free(cols[k]);
    }
    fig.panels = panels;
    fig.np = np;
    fig.cols = 3;
    snprintf(path, sizeof path, "%s/plot.svg", run_dir);
    int rc = nomem ? -1 : plot_write_file(path, draw_run, &fig);
    col_free(&tl), col_free(&ta), col_free(&vl), col_free(&va), col_free(&al), col_free(&aa), col_free(&vt);
    col_free(&at);
    free(rd.round), free(rd.sync);
    for (int k = 0; k < 4; k++) free(rd.v[k]);
    free(ws);
    return rc;
}
