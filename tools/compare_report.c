/* tools/compare_report.c - compare.csv, compare.md and compare.svg from a list of runs. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/plot.h"

/* Mean and sample standard deviation of the finite values; returns how many there were. */
static int mean_std(const double *v, int n, double *mean, double *sd)
{
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) s += v[i], k++;
    *mean = k ? s / k : NAN;
    double q = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = k > 1 ? sqrt(q / (k - 1)) : k == 1 ? 0 : NAN;
    return k;
}

static void pct(FILE *f, const double *v, int n)
{
    double m, s;
    int k = mean_std(v, n, &m, &s);
    if (!k)
        fprintf(f, " - |");
    else if (k == 1) /* one run has no spread: say so rather than print a zero deviation */
        fprintf(f, " %.2f (1 run) |", 100 * m);
    else
        fprintf(f, " %.2f ± %.2f |", 100 * m, 100 * s);
}

/* A report file is built in memory and written with cli_write_atomic (a fresh temp file,
 * synced and renamed): a crash never leaves half a report, and a symlink planted in OUT is
 * never written through. */
typedef struct out_file {
    FILE *f;
    char *buf;
    size_t len;
} out_file;

static FILE *open_out(out_file *o, const char *dir, const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, name);
    o->buf = NULL;
    o->len = 0;
    o->f = open_memstream(&o->buf, &o->len);
    if (!o->f) cli_error("cannot write %s: %s", path, strerror(errno));
    return o->f;
}

static int close_out(out_file *o, const char *path)
{
    int rc = 0;
    if (fclose(o->f) || cli_write_atomic(path, o->buf, o->len)) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        rc = -1;
    }
    free(o->buf);
    o->buf = NULL;
    return rc;
}

static void csv_num(FILE *f, double v, const char *fmt)
{
    fputc(',', f);
    if (isfinite(v)) fprintf(f, fmt, v);
}

/* ---- compare.svg ---- */

#define GRID 60

/* One algorithm's curves: the mean over seeds on a common time grid with its min..max band,
 * every evaluation of every seed, and the final accuracies. */
typedef struct algo_curve {
    double gx[GRID], mean[GRID], lo[GRID], hi[GRID];
    int ng;
    double *rx, *ry; /* every evaluation of every seed */
    int nraw;
    double fx, fmean, fmin, fmax; /* final test accuracy (%) over seeds at category fx */
    int seeds;
} algo_curve;

/* Accuracy of run r at time t: linear between its evaluations, its last value after the last one,
 * NAN before the first. */
static double acc_at(const compare_run *r, double t)
{
    if (r->nevals <= 0 || t < r->eval_s[0]) return NAN;
    for (int i = 1; i < r->nevals; i++) {
        if (r->eval_s[i] < t) continue;
        double a = r->eval_s[i - 1], b = r->eval_s[i], u = b > a ? (t - a) / (b - a) : 1;
        return r->eval_acc[i - 1] + u * (r->eval_acc[i] - r->eval_acc[i - 1]);
    }
    return r->eval_acc[r->nevals - 1];
}

static int build_curve(algo_curve *c, const compare_run *runs, int n, const char *algo)
{
    memset(c, 0, sizeof *c);
    double t0 = -INFINITY, t1 = -INFINITY; /* every seed has been evaluated from t0 on */
    int total = 0;
    c->fmin = INFINITY, c->fmax = -INFINITY;
    double fs = 0;
    for (int i = 0; i < n; i++) {
        const compare_run *r = &runs[i];
        if (strcmp(r->algo, algo) || r->exit_code) continue;
        if (isfinite(r->test_acc)) {
            double v = 100 * r->test_acc;
            fs += v;
            if (v < c->fmin) c->fmin = v;
            if (v > c->fmax) c->fmax = v;
            c->seeds++;
        }
        if (r->nevals <= 0) continue;
        if (r->eval_s[0] > t0) t0 = r->eval_s[0];
        if (r->eval_s[r->nevals - 1] > t1) t1 = r->eval_s[r->nevals - 1];
        total += r->nevals;
    }
    c->fmean = c->seeds ? fs / c->seeds : NAN;
    if (!c->seeds) c->fmin = c->fmax = NAN;
    c->rx = malloc(sizeof(double) * (size_t)(total + 1));
    c->ry = malloc(sizeof(double) * (size_t)(total + 1));
    if (!c->rx || !c->ry) return -1;
    for (int i = 0; i < n; i++) {
        const compare_run *r = &runs[i];
        if (strcmp(r->algo, algo) || r->exit_code) continue;
        for (int e = 0; e < r->nevals; e++) {
            c->rx[c->nraw] = r->eval_s[e];
            c->ry[c->nraw++] = 100 * r->eval_acc[e];
        }
    }
    if (!total || !(t1 >= t0)) return 0;
    c->ng = t1 > t0 ? GRID : 1;
    for (int g = 0; g < c->ng; g++) {
        double t = c->ng > 1 ? t0 + (t1 - t0) * g / (c->ng - 1) : t0, s = 0;
        int k = 0;
        c->lo[g] = INFINITY, c->hi[g] = -INFINITY;
        for (int i = 0; i < n; i++) {
            const compare_run *r = &runs[i];
            if (strcmp(r->algo, algo) || r->exit_code || r->nevals <= 0) continue;
            double v = 100 * acc_at(r, t);
            if (!isfinite(v)) continue;
            s += v, k++;
            if (v < c->lo[g]) c->lo[g] = v;
            if (v > c->hi[g]) c->hi[g] = v;
        }
        c->gx[g] = t;
        c->mean[g] = k ? s / k : NAN;
        if (!k) c->lo[g] = c->hi[g] = NAN;
    }
    return 0;
}

typedef struct cmp_fig {
    plot_panel *panels;
    int np;
    char subtitle[256];
} cmp_fig;

static void draw_compare(FILE *f, void *ud)
{
    cmp_fig *c = ud;
    plot_figure_svg(f, "Algorithm comparison", c->subtitle, c->panels, c->np, 3);
}

static int compare_svg(const char *path, const compare_run *runs, int n, const char **algos, int na)
{
    algo_curve *cv = calloc((size_t)(na ? na : 1), sizeof *cv);
    /* series: overview (na), final (2 * na), small multiples (na * (na + 2)) */
    size_t nser = (size_t)na * (size_t)(na + 5) + 1;
    plot_series *se = calloc(nser, sizeof *se);
    plot_panel *panels = calloc((size_t)na + 3, sizeof *panels);
    double *fx = calloc((size_t)(2 * n + na + 1), sizeof(double)), *fy = calloc((size_t)(n + 1), sizeof(double));
    int rc = -1, seeds = 0;
    if (!cv || !se || !panels || !fx || !fy) goto out;
    for (int a = 0; a < na; a++) {
        if (build_curve(&cv[a], runs, n, algos[a])) goto out;
        if (cv[a].seeds > seeds) seeds = cv[a].seeds;
    }
    /* shared y range: every band and evaluation */
    double ylo = INFINITY, yhi = -INFINITY, xlo = INFINITY, xhi = -INFINITY;
    for (int a = 0; a < na; a++)
        for (int i = 0; i < cv[a].nraw; i++) {
            if (cv[a].rx[i] < xlo) xlo = cv[a].rx[i];
            if (cv[a].rx[i] > xhi) xhi = cv[a].rx[i];
            if (cv[a].ry[i] < ylo) ylo = cv[a].ry[i];
            if (cv[a].ry[i] > yhi) yhi = cv[a].ry[i];
        }
    int band = seeds > 1;
    size_t k = 0;
    int np = 0;
    plot_series *over = se + k;
    for (int a = 0; a < na; a++)
        se[k++] = (plot_series){.name = algos[a], .x = cv[a].gx, .y = cv[a].mean, .n = cv[a].ng,
                                .lo = band ? cv[a].lo : NULL, .hi = band ? cv[a].hi : NULL, .color = a + 1,
                                .markers = cv[a].ng == 1};
    panels[np++] = (plot_panel){"Test accuracy over training time", "training time (s)", "test accuracy (%)", over, na,
                                .span = 2,
                                .note = band ? "line: mean over seeds; band: min..max over seeds (linear between evaluations)"
                                             : "one seed per algorithm"};
    /* final accuracy: mean with min..max bars, every seed as a grey dot */
    plot_series *fin = se + k;
    int nd = 0;
    for (int a = 0; a < na; a++) {
        fx[a] = a;
        se[k++] = (plot_series){.x = fx + a, .y = &cv[a].fmean, .n = 1, .lo = &cv[a].fmin, .hi = &cv[a].fmax,
                                .errbars = seeds > 1, .markers = 1, .kind = PLOT_POINTS, .color = a + 1};
    }
    for (int i = 0; i < n; i++) {
        if (runs[i].exit_code || !isfinite(runs[i].test_acc)) continue;
        for (int a = 0; a < na; a++)
            if (!strcmp(runs[i].algo, algos[a])) fx[na + nd] = a + 0.18;
        fy[nd++] = 100 * runs[i].test_acc;
    }
    if (seeds > 1) se[k++] = (plot_series){.x = fx + na, .y = fy, .n = nd, .kind = PLOT_POINTS, .color = -1};
    panels[np++] = (plot_panel){"Final test accuracy", "", "test accuracy (%)", fin, (int)(se + k - fin),
                                .xcats = algos, .nxcats = na,
                                .note = seeds > 1 ? "mean, min..max bar; grey: each seed" : "one seed per algorithm"};
    /* small multiples: each algorithm against the others in grey */
    if (na >= 3) {
        for (int a = 0; a < na; a++) {
            plot_series *sm = se + k;
            for (int b = 0; b < na; b++)
                if (b != a)
                    se[k++] = (plot_series){.x = cv[b].gx, .y = cv[b].mean, .n = cv[b].ng, .color = -1, .width = 1.2};
            se[k++] = (plot_series){.x = cv[a].rx, .y = cv[a].ry, .n = cv[a].nraw, .kind = PLOT_POINTS, .color = a + 1};
            se[k++] = (plot_series){.x = cv[a].gx, .y = cv[a].mean, .n = cv[a].ng, .lo = band ? cv[a].lo : NULL,
                                    .hi = band ? cv[a].hi : NULL, .color = a + 1, .width = 2.4};
            panels[np++] = (plot_panel){algos[a], "training time (s)", "test accuracy (%)", sm, (int)(se + k - sm),
                                        .ymin = ylo, .ymax = yhi, .xmin = xlo, .xmax = xhi,
                                        .note = a == 0 ? "grey: the other algorithms; dots: each evaluation" : NULL};
        }
    }
    cmp_fig fig = {.panels = panels, .np = np};
    snprintf(fig.subtitle, sizeof fig.subtitle, "%d algorithm%s, %d seed%s each; test accuracy of the reported model", na,
             na == 1 ? "" : "s", seeds, seeds == 1 ? "" : "s");
    rc = plot_write_file(path, draw_compare, &fig);
out:
    for (int a = 0; cv && a < na; a++) free(cv[a].rx), free(cv[a].ry);
    free(cv), free(se), free(panels), free(fx), free(fy);
    if (rc && !errno) errno = ENOMEM;
    return rc;
}

int compare_write(const char *out_dir, const compare_run *runs, int n)
{
    char path[1100];
    out_file of;
    FILE *f = open_out(&of, out_dir, "compare.csv", path, sizeof path);
    if (!f) return -1;
    fprintf(f, "algo,seed,exit_code,test_acc,center_test_acc,average_test_acc,rounds,local_steps,img_per_s,seconds\n");
    for (int i = 0; i < n; i++) {
        const compare_run *r = &runs[i];
        fprintf(f, "%s,%ld,%d", r->algo, r->seed, r->exit_code);
        csv_num(f, r->test_acc, "%.6f");
        csv_num(f, r->center_acc, "%.6f");
        csv_num(f, r->average_acc, "%.6f");
        fprintf(f, ",%ld,%ld", r->rounds, r->local_steps);
        csv_num(f, r->img_per_s, "%.1f");
        csv_num(f, r->seconds, "%.3f");
        fputc('\n', f);
    }
    if (close_out(&of, path)) return -1;

    /* Algorithms in order of first appearance. */
    const char *algos[64];
    int na = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int a = 0; a < na; a++) seen |= !strcmp(algos[a], runs[i].algo);
        if (!seen && na < 64) algos[na++] = runs[i].algo;
    }
    double *center = malloc(sizeof(double) * (size_t)(n ? n : 1)), *avg = malloc(sizeof(double) * (size_t)(n ? n : 1));
    double *tmp = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!center || !avg || !tmp) {
        free(center), free(avg), free(tmp);
        errno = ENOMEM;
        return -1;
    }
    f = open_out(&of, out_dir, "compare.md", path, sizeof path);
    if (!f) {
        free(center), free(avg), free(tmp);
        return -1;
    }
    fprintf(f, "| algorithm | runs | center test acc %% | average test acc %% | rounds | local steps | img/s |\n");
    fprintf(f, "|---|---|---|---|---|---|---|\n");
    for (int a = 0; a < na; a++) {
        int k = 0, failed = 0;
        double rounds = 0, steps = 0, ips = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(runs[i].algo, algos[a])) continue;
            if (runs[i].exit_code) {
                failed++;
                continue;
            }
            /* one replica: the reported model is the "center" */
            center[k] = isfinite(runs[i].center_acc) ? runs[i].center_acc : runs[i].test_acc;
            avg[k] = runs[i].average_acc;
            rounds += (double)runs[i].rounds;
            steps += (double)runs[i].local_steps;
            ips += runs[i].img_per_s;
            k++;
        }
        fprintf(f, "| %s | %d%s |", algos[a], k, failed ? " (+ failed)" : "");
        pct(f, center, k);
        pct(f, avg, k);
        if (k)
            fprintf(f, " %.0f | %.0f | %.0f |\n", rounds / k, steps / k, ips / k);
        else
            fprintf(f, " - | - | - |\n");
    }
    fprintf(f, "\nmean ± sample standard deviation over seeds; accuracies on the test split at the end of each run.\n");
    if (close_out(&of, path)) {
        free(center), free(avg), free(tmp);
        return -1;
    }

    free(center), free(avg), free(tmp);
    snprintf(path, sizeof path, "%s/compare.svg", out_dir);
    if (compare_svg(path, runs, n, algos, na)) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
