/* tools/compare_report.c - compare.csv, compare.md and compare.svg from a list of runs. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/plot.h"

static const char *const BASELINES[] = {"sgd", "local-sgd", "easgd", "lsgd", "dp", "dp-sam"};

int compare_is_baseline(const char *algo)
{
    for (size_t i = 0; i < sizeof BASELINES / sizeof *BASELINES; i++)
        if (!strcmp(algo, BASELINES[i])) return 1;
    return 0;
}

double compare_t975(int df)
{
    static const double table[31] = {NAN,   12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                     2.201, 2.179,  2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080,
                                     2.074, 2.069,  2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    if (df < 1) return NAN;
    if (df <= 30) return table[df];
    /* Cornish-Fisher expansion of the t quantile around the normal one, z = 1.959964 */
    double z = 1.959963985, z2 = z * z, v = df;
    return z + z * (z2 + 1) / (4 * v) + z * ((5 * z2 + 16) * z2 + 3) / (96 * v * v) +
           z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / (384 * v * v * v);
}

int compare_paired(const double *a, const double *b, int n, double *mean, double *lo, double *hi)
{
    double s = 0, q = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(a[i]) && isfinite(b[i])) s += a[i] - b[i], k++;
    *mean = k ? s / k : NAN;
    for (int i = 0; i < n; i++)
        if (isfinite(a[i]) && isfinite(b[i])) q += (a[i] - b[i] - *mean) * (a[i] - b[i] - *mean);
    if (k < 2) {
        *lo = *hi = NAN;
        return k;
    }
    double half = compare_t975(k - 1) * sqrt(q / (k - 1)) / sqrt((double)k);
    *lo = *mean - half;
    *hi = *mean + half;
    return k;
}

double compare_time_to(const compare_run *r, double target)
{
    for (int i = 0; i < r->nevals; i++)
        if (r->eval_acc[i] >= target) return r->eval_s[i];
    return NAN;
}

int compare_run_load(const char *run_dir, const char *algo, long seed, compare_run *r, double **es, double **ea)
{
    memset(r, 0, sizeof *r);
    snprintf(r->algo, sizeof r->algo, "%s", algo);
    r->seed = seed;
    r->test_acc = r->center_acc = r->average_acc = r->img_per_s = r->seconds = NAN;
    r->bytes_per_round = r->flat_lambda = r->flat_topk = NAN;
    r->exit_code = EXIT_RUNTIME;
    *es = *ea = NULL;
    char path[RUN_DIR_MAX + 32];
    if (run_path(path, sizeof path, run_dir, "summary.json")) return -1;
    char *t = cli_read_file(path, NULL);
    if (!t) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    char status[32] = "";
    double v, ls[256];
    jr_str(t, "status", status, sizeof status);
    r->exit_code = !strcmp(status, "ok") ? 0 : EXIT_RUNTIME;
    int workers = !jr_num(t, "workers", &v) ? (int)v : 1;
    if (!jr_num(t, "test_acc", &v)) r->test_acc = v;
    if (workers > 1 && !jr_num(t, "center_test_acc", &v)) r->center_acc = v;
    if (workers > 1 && !jr_num(t, "average_test_acc", &v)) r->average_acc = v;
    if (!jr_num(t, "rounds", &v)) r->rounds = (long)v;
    if (workers <= 1)
        r->bytes_per_round = 0; /* one replica: nothing is sent */
    else if (!jr_num(t, "bytes_per_round", &v))
        r->bytes_per_round = v;
    if (!jr_num(t, "images_per_sec", &v)) r->img_per_s = v;
    if (!jr_num(t, "seconds", &v)) r->seconds = v;
    if (!jr_num(t, "comm_model_seconds", &v)) r->comm_s = v;   /* absent: a run without a link */
    int nl = jr_nums(t, "local_steps", ls, 256);
    for (int i = 0; i < nl; i++) r->local_steps += (long)ls[i];
    if (!r->local_steps && !jr_num(t, "steps", &v)) r->local_steps = (long)v;
    free(t);
    if (run_path(path, sizeof path, run_dir, "metrics.csv")) return 0;
    t = cli_read_file(path, NULL);
    int cap = 0;
    for (char *save = NULL, *line = t ? strtok_r(t, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        double f[5];
        int k = 0;
        if (strncmp(line, "val,", 4)) continue; /* the reported model's evaluations */
        for (char *p = line + 4; k < 5; k++) { /* step,epoch,seconds,loss,acc */
            char *e;
            f[k] = strtod(p, &e);
            if (e == p || (*e != ',' && *e)) break;
            p = *e ? e + 1 : e;
        }
        if (k < 5 || !isfinite(f[2]) || !isfinite(f[4])) continue;
        if (r->nevals == cap) {
            cap = cap ? 2 * cap : 16;
            double *a = realloc(*es, sizeof(double) * (size_t)cap), *b = a ? realloc(*ea, sizeof(double) * (size_t)cap) : NULL;
            if (a) *es = a;
            if (b) *ea = b;
            if (!a || !b) break;
        }
        (*es)[r->nevals] = f[2];
        (*ea)[r->nevals++] = f[4];
    }
    free(t);
    r->eval_s = *es;
    r->eval_acc = *ea;
    return 0;
}

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

/* " mean ± sd |" of the finite values (scale times each), "(1 run)" for one, "-" for none. */
static void cell(FILE *f, const double *v, int n, double scale, const char *fmt)
{
    double m, s;
    int k = mean_std(v, n, &m, &s);
    fputc(' ', f);
    if (!k) {
        fprintf(f, "- |");
        return;
    }
    fprintf(f, fmt, scale * m);
    if (k == 1)
        fprintf(f, " (1 run)");
    else {
        fprintf(f, " ± ");
        fprintf(f, fmt, scale * s);
    }
    fprintf(f, " |");
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

/* One algorithm's curves: the mean over seeds on a common time grid with its +-1 std band,
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
        double t = c->ng > 1 ? t0 + (t1 - t0) * g / (c->ng - 1) : t0, v[256];
        int k = 0;
        for (int i = 0; i < n && k < 256; i++) {
            const compare_run *r = &runs[i];
            if (strcmp(r->algo, algo) || r->exit_code || r->nevals <= 0) continue;
            v[k] = 100 * acc_at(r, t);
            if (isfinite(v[k])) k++;
        }
        double m = NAN, sd = NAN;
        mean_std(v, k, &m, &sd);
        if (!isfinite(sd)) sd = 0; /* one seed: no spread */
        c->gx[g] = t;
        c->mean[g] = m;
        c->lo[g] = k ? m - sd : NAN;
        c->hi[g] = k ? m + sd : NAN;
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
                                .note = band ? "line: mean over seeds; band: mean +- 1 standard deviation over seeds (linear between evaluations)"
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

int compare_write(const char *out_dir, const compare_run *runs, int n) { return compare_write_opts(out_dir, runs, n, NULL); }

/* The accuracy compared across algorithms: the center of a multi-worker run, else the model. */
static double reported_acc(const compare_run *r) { return isfinite(r->center_acc) ? r->center_acc : r->test_acc; }

static double moved_mb(const compare_run *r)
{
    return isfinite(r->bytes_per_round) ? (double)r->rounds * r->bytes_per_round / 1e6 : NAN;
}

/* The completed run of algo with seed, or NULL. */
static const compare_run *run_of(const compare_run *runs, int n, const char *algo, long seed)
{
    for (int i = 0; i < n; i++)
        if (!runs[i].exit_code && runs[i].seed == seed && !strcmp(runs[i].algo, algo)) return &runs[i];
    return NULL;
}

static void signed_interval(FILE *f, int k, double mean, double lo, double hi, double scale, const char *unit)
{
    if (k < 2)
        fprintf(f, " %d | n/a | n/a |", k);
    else
        fprintf(f, " %d | %+.2f%s | [%+.2f, %+.2f] |", k, scale * mean, unit, scale * lo, scale * hi);
}

/* The paired comparison of every algorithm with the best baseline (compare.md, second table). */
static void paired_section(FILE *f, const compare_run *runs, int n, const char **algos, int na, const compare_opts *o,
                           double *a, double *b)
{
    int best = -1;
    double best_mean = -INFINITY;
    char names[512] = "";
    for (int i = 0; i < na; i++) {
        if (!compare_is_baseline(algos[i])) continue;
        double s = 0;
        int k = 0;
        for (int r = 0; r < n; r++)
            if (!runs[r].exit_code && !strcmp(runs[r].algo, algos[i]) && isfinite(reported_acc(&runs[r])))
                s += reported_acc(&runs[r]), k++;
        size_t at = strlen(names);
        snprintf(names + at, sizeof names - at, "%s%s", at ? ", " : "", algos[i]);
        if (k && s / k > best_mean) best_mean = s / k, best = i;
    }
    fprintf(f, "\n## Paired comparison with the best baseline\n\n");
    if (best < 0) {
        fprintf(f, "No baseline (%s) with a finished run in this comparison: nothing to compare with.\n",
                "sgd, local-sgd, easgd, lsgd, dp, dp-sam");
        return;
    }
    const char *ref = algos[best];
    fprintf(f, "Best baseline: **%s** (highest mean test accuracy among the baselines here: %s).\n", ref, names);
    fprintf(f, "Each algorithm minus %s on the same seed, over the seeds where both runs finished; mean and 95%% "
               "confidence interval of the paired t test (mean ± t(0.975, n-1) · sd / sqrt(n), sd the sample standard "
               "deviation of the n differences). n/a: fewer than 2 paired seeds. An interval that excludes 0 is a "
               "difference at the 5%% level.\n\n", ref);
    fprintf(f, "| algorithm | seeds | test acc difference (points) | 95%% interval |");
    if (o && o->target_acc > 0)
        fprintf(f, " seeds (both reached %.4g%%) | time to %.4g%% difference (s) | 95%% interval |", 100 * o->target_acc,
                100 * o->target_acc);
    fprintf(f, "\n|---|---|---|---|%s\n", o && o->target_acc > 0 ? "---|---|---|" : "");
    for (int i = 0; i < na; i++) {
        fprintf(f, "| %s |", algos[i]);
        if (i == best) {
            fprintf(f, " - | (reference) | |%s\n", o && o->target_acc > 0 ? " - | (reference) | |" : "");
            continue;
        }
        int m = 0;
        for (int r = 0; r < n; r++) {
            if (runs[r].exit_code || strcmp(runs[r].algo, algos[i])) continue;
            const compare_run *q = run_of(runs, n, ref, runs[r].seed);
            a[m] = reported_acc(&runs[r]);
            b[m++] = q ? reported_acc(q) : NAN;
        }
        double mean, lo, hi;
        int k = compare_paired(a, b, m, &mean, &lo, &hi);
        signed_interval(f, k, mean, lo, hi, 100, "");
        if (o && o->target_acc > 0) {
            m = 0;
            for (int r = 0; r < n; r++) {
                if (runs[r].exit_code || strcmp(runs[r].algo, algos[i])) continue;
                const compare_run *q = run_of(runs, n, ref, runs[r].seed);
                a[m] = compare_time_to(&runs[r], o->target_acc);
                b[m++] = q ? compare_time_to(q, o->target_acc) : NAN;
            }
            k = compare_paired(a, b, m, &mean, &lo, &hi);
            signed_interval(f, k, mean, lo, hi, 1, " s");
        }
        fputc('\n', f);
    }
}

int compare_write_opts(const char *out_dir, const compare_run *runs, int n, const compare_opts *o)
{
    char path[1100];
    out_file of;
    int target = o && o->target_acc > 0, flat = o && o->flatness, comm = 0;
    for (int i = 0; i < n; i++) comm |= runs[i].comm_s > 0;
    FILE *f = open_out(&of, out_dir, "compare.csv", path, sizeof path);
    if (!f) return -1;
    fprintf(f, "algo,seed,exit_code,test_acc,center_test_acc,average_test_acc,rounds,local_steps,img_per_s,seconds,"
               "bytes_per_round,mb_moved,time_to_target,lambda_max,topk_sum,comm_model_seconds\n");
    for (int i = 0; i < n; i++) {
        const compare_run *r = &runs[i];
        fprintf(f, "%s,%ld,%d", r->algo, r->seed, r->exit_code);
        csv_num(f, r->test_acc, "%.6f");
        csv_num(f, r->center_acc, "%.6f");
        csv_num(f, r->average_acc, "%.6f");
        fprintf(f, ",%ld,%ld", r->rounds, r->local_steps);
        csv_num(f, r->img_per_s, "%.1f");
        csv_num(f, r->seconds, "%.3f");
        csv_num(f, r->bytes_per_round, "%.0f");
        csv_num(f, moved_mb(r), "%.3f");
        csv_num(f, target ? compare_time_to(r, o->target_acc) : NAN, "%.3f");
        csv_num(f, flat ? r->flat_lambda : NAN, "%.6g");
        csv_num(f, flat ? r->flat_topk : NAN, "%.6g");
        csv_num(f, r->comm_s, "%.3f");
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
    size_t cnt = (size_t)(n ? n : 1);
    double *v[9];
    int bad = 0;
    for (int i = 0; i < 9; i++) bad |= !(v[i] = malloc(sizeof(double) * cnt));
    if (bad) {
        for (int i = 0; i < 9; i++) free(v[i]);
        errno = ENOMEM;
        return -1;
    }
    double *center = v[0], *avg = v[1], *mb = v[2], *ttt = v[3], *lam = v[4], *top = v[5], *cs = v[8];
    f = open_out(&of, out_dir, "compare.md", path, sizeof path);
    if (!f) {
        for (int i = 0; i < 9; i++) free(v[i]);
        return -1;
    }
    fprintf(f, "| algorithm | runs | center test acc %% | average test acc %% | rounds | local steps | img/s | MB moved |");
    if (comm) fprintf(f, " comm s (modelled) |");
    if (target) fprintf(f, " time to %.4g%% (s) |", 100 * o->target_acc);
    if (flat) fprintf(f, " lambda_max | top-%d sum |", o->flat_k);
    fprintf(f, "\n|---|---|---|---|---|---|---|---|%s%s%s\n", comm ? "---|" : "", target ? "---|" : "",
            flat ? "---|---|" : "");
    for (int a = 0; a < na; a++) {
        int k = 0, failed = 0, reached = 0;
        double rounds = 0, steps = 0, ips = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(runs[i].algo, algos[a])) continue;
            if (runs[i].exit_code) {
                failed++;
                continue;
            }
            /* one replica: the reported model is the "center" */
            center[k] = reported_acc(&runs[i]);
            avg[k] = runs[i].average_acc;
            mb[k] = moved_mb(&runs[i]);
            cs[k] = runs[i].comm_s;
            ttt[k] = target ? compare_time_to(&runs[i], o->target_acc) : NAN;
            reached += isfinite(ttt[k]);
            lam[k] = runs[i].flat_lambda;
            top[k] = runs[i].flat_topk;
            rounds += (double)runs[i].rounds;
            steps += (double)runs[i].local_steps;
            ips += runs[i].img_per_s;
            k++;
        }
        fprintf(f, "| %s | %d%s |", algos[a], k, failed ? " (+ failed)" : "");
        pct(f, center, k);
        pct(f, avg, k);
        if (k)
            fprintf(f, " %.0f | %.0f | %.0f |", rounds / k, steps / k, ips / k);
        else
            fprintf(f, " - | - | - |");
        cell(f, mb, k, 1, "%.1f");
        if (comm) cell(f, cs, k, 1, "%.1f");
        if (target) {
            if (!k)
                fprintf(f, " - |");
            else if (!reached)
                fprintf(f, " not reached (0/%d) |", k);
            else {
                double m, s;
                mean_std(ttt, k, &m, &s);
                if (reached > 1)
                    fprintf(f, " %.1f ± %.1f (%d/%d) |", m, s, reached, k);
                else
                    fprintf(f, " %.1f (%d/%d) |", m, reached, k);
            }
        }
        if (flat) {
            cell(f, lam, k, 1, "%.4g");
            cell(f, top, k, 1, "%.4g");
        }
        fputc('\n', f);
    }
    fprintf(f, "\nmean ± sample standard deviation over seeds; accuracies on the test split at the end of each run. "
               "MB moved: rounds x bytes per round (summary.json), all workers together.");
    if (comm)
        fprintf(f, " comm s (modelled): seconds the runs waited for the modelled interconnect (--link, "
                   "summary.json comm_model_seconds), part of the training time; a model, not a measurement.");
    if (target)
        fprintf(f, " Time to %.4g%%: training seconds (evaluation excluded) of the first evaluation of the reported "
                   "model at or above %.4g%% (metrics.csv `val` rows), mean ± sd over the seeds that reached it "
                   "(reached/finished).", 100 * o->target_acc, 100 * o->target_acc);
    if (flat)
        fprintf(f, " lambda_max, top-%d sum: largest Hessian eigenvalues of the training loss at the reported model "
                   "(best.ckpt; `nnc flatness`); smaller is flatter.", o->flat_k);
    fputc('\n', f);
    if (na > 1) paired_section(f, runs, n, algos, na, o, v[6], v[7]);
    int rc = close_out(&of, path);
    for (int i = 0; i < 9; i++) free(v[i]);
    if (rc) return -1;

    snprintf(path, sizeof path, "%s/compare.svg", out_dir);
    if (compare_svg(path, runs, n, algos, na)) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
