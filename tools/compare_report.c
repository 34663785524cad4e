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

static FILE *open_out(const char *dir, const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) cli_error("cannot write %s: %s", path, strerror(errno));
    return f;
}

static int close_out(FILE *f, const char *path)
{
    if (fclose(f)) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void csv_num(FILE *f, double v, const char *fmt)
{
    fputc(',', f);
    if (isfinite(v)) fprintf(f, fmt, v);
}

int compare_write(const char *out_dir, const compare_run *runs, int n)
{
    char path[1100];
    FILE *f = open_out(out_dir, "compare.csv", path, sizeof path);
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
    if (close_out(f, path)) return -1;

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
    f = open_out(out_dir, "compare.md", path, sizeof path);
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
    if (close_out(f, path)) {
        free(center), free(avg), free(tmp);
        return -1;
    }

    /* compare.svg: per algorithm, accuracy at the k-th evaluation averaged over its seeds. */
    plot_series *series = calloc((size_t)(na ? na : 1), sizeof *series);
    double **xs = calloc((size_t)(na ? na : 1), sizeof *xs), **ys = calloc((size_t)(na ? na : 1), sizeof *ys);
    int ok = series && xs && ys;
    for (int a = 0; ok && a < na; a++) {
        int len = -1;
        for (int i = 0; i < n; i++)
            if (!strcmp(runs[i].algo, algos[a]) && !runs[i].exit_code && (len < 0 || runs[i].nevals < len))
                len = runs[i].nevals;
        if (len < 0) len = 0;
        xs[a] = calloc((size_t)len + 1, sizeof(double));
        ys[a] = calloc((size_t)len + 1, sizeof(double));
        if (!xs[a] || !ys[a]) {
            ok = 0;
            break;
        }
        for (int e = 0; e < len; e++) {
            int k = 0;
            double sx = 0;
            for (int i = 0; i < n; i++)
                if (!strcmp(runs[i].algo, algos[a]) && !runs[i].exit_code) {
                    sx += runs[i].eval_s[e];
                    tmp[k++] = 100 * runs[i].eval_acc[e];
                }
            double m, s;
            mean_std(tmp, k, &m, &s);
            xs[a][e] = sx / k;
            ys[a][e] = m;
        }
        series[a] = (plot_series){.name = algos[a], .x = xs[a], .y = ys[a], .n = len};
    }
    int rc = -1;
    if (ok) {
        f = open_out(out_dir, "compare.svg", path, sizeof path);
        if (f) {
            plot_panel p = {"test accuracy (mean over seeds)", "training seconds", "top-1 %", series, na, .span = 1};
            plot_svg(f, &p, 1);
            rc = close_out(f, path);
        }
    } else {
        errno = ENOMEM;
    }
    for (int a = 0; a < na && xs && ys; a++) free(xs[a]), free(ys[a]);
    free(xs), free(ys), free(series), free(center), free(avg), free(tmp);
    return rc;
}
