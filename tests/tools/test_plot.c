/* tests/tools/test_plot.c - the charts: 1-2-5 tick values, plot.svg of a multi-worker run (center
 * vs average, per-worker panels, markers at evaluations), compare.svg (mean with a +-1 std band
 * when there are several seeds), and every SVG well-formed XML. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/cli_run.h"
#include "tools/cli.h"
#include "tools/compare.h"
#include "tools/plot.h"

/* Well-formed enough for a viewer: every element closed in order, quoted attributes, entities. */
static void assert_xml(const char *s)
{
    const char *stack[64];
    size_t lens[64];
    int depth = 0, roots = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            cr_assert(!strncmp(p, "&amp;", 5) || !strncmp(p, "&lt;", 4) || !strncmp(p, "&gt;", 4) ||
                          !strncmp(p, "&quot;", 6),
                      "bare &: %.40s", p);
            continue;
        }
        if (*p == '>') cr_assert_fail("stray >: %.40s", p);
        if (*p != '<') continue;
        if (p[1] == '/') {
            const char *name = p + 2;
            size_t n = strcspn(name, ">");
            cr_assert_gt(depth, 0, "close without open: %.40s", p);
            cr_assert(lens[depth - 1] == n && !strncmp(stack[depth - 1], name, n), "</%.*s> closes <%.*s>", (int)n,
                      name, (int)lens[depth - 1], stack[depth - 1]);
            depth--;
            p = name + n;
            continue;
        }
        const char *name = p + 1;
        size_t n = strcspn(name, " \t\n/>");
        cr_assert_gt(n, 0, "empty tag: %.40s", p);
        const char *q = name + n;
        int quote = 0;
        for (; *q && (quote || (*q != '>')); q++)
            if (*q == '"') quote = !quote;
            else if (quote && *q == '<') cr_assert_fail("< in an attribute: %.40s", p);
        cr_assert_eq(*q, '>', "unterminated tag: %.40s", p);
        if (q[-1] != '/') {
            cr_assert_lt(depth, 64);
            if (!depth) roots++;
            stack[depth] = name;
            lens[depth++] = n;
        } else if (!depth) {
            roots++;
        }
        p = q;
    }
    cr_assert_eq(depth, 0, "unclosed <%.*s>", depth ? (int)lens[depth - 1] : 0, depth ? stack[depth - 1] : "");
    cr_assert_eq(roots, 1, "one root element");
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static int is_125(double step)
{
    double mag = pow(10, floor(log10(step) + 1e-9)), m = step / mag;
    return fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6;
}

Test(tools_plot, nice_ticks_examples)
{
    double t[24];
    int n = nnc_nice_ticks(0, 494, 5, t, 24);
    cr_assert_eq(n, 6);
    for (int i = 0; i < n; i++) cr_assert_float_eq(t[i], 100.0 * i, 1e-9, "%g", t[i]);
    n = nnc_nice_ticks(0.078, 0.62, 5, t, 24);
    cr_assert_eq(n, 5);
    for (int i = 0; i < n; i++) cr_assert_float_eq(t[i], 0.2 * i, 1e-12, "%g", t[i]);
    n = nnc_nice_ticks(7.8, 250.9, 5, t, 24);
    cr_assert(t[0] == 0 && t[n - 1] >= 250.9 && t[1] == 50, "%g %g %g", t[0], t[1], t[n - 1]);
    n = nnc_nice_ticks(-3.2, 0, 5, t, 24);
    cr_assert(t[0] == -4 && t[n - 1] == 0 && !signbit(t[n - 1]), "%g..%g", t[0], t[n - 1]);
    char lab[32];
    plot_tick_label(lab, sizeof lab, 0.6000000000000001, 0.2);
    cr_assert_str_eq(lab, "0.6");
    plot_tick_label(lab, sizeof lab, 20000, 5000);
    cr_assert_str_eq(lab, "20k");
    plot_tick_label(lab, sizeof lab, 150, 50);
    cr_assert_str_eq(lab, "150");
}

Test(tools_plot, nice_ticks_cover_any_range)
{
    unsigned seed = 7;
    for (int k = 0; k < 5000; k++) {
        seed = seed * 1103515245u + 12345u;
        double scale = pow(10, (int)(seed >> 8) % 13 - 6);
        seed = seed * 1103515245u + 12345u;
        double lo = ((int)(seed >> 8) % 2000 - 1000) / 100.0 * scale;
        seed = seed * 1103515245u + 12345u;
        double hi = lo + ((seed >> 8) % 1000 + (k % 7 == 0 ? 0 : 1)) / 100.0 * scale;
        double t[24];
        int n = nnc_nice_ticks(lo, hi, 5, t, 24);
        cr_assert(n >= 2 && n <= 12, "[%g, %g]: %d ticks", lo, hi, n);
        double step = t[1] - t[0], eps = 1e-6 * step; /* rounding noise of lo / step */
        cr_assert(t[0] <= lo + eps && t[n - 1] >= hi - eps, "[%.17g, %.17g] -> %g..%g", lo, hi, t[0], t[n - 1]);
        cr_assert(is_125(step), "[%g, %g]: step %g", lo, hi, step);
        for (int i = 0; i < n; i++) {
            cr_assert_float_eq(t[i] / step, round(t[i] / step), 1e-6, "a multiple of the step: %g", t[i]);
            if (i) cr_assert_float_eq(t[i] - t[i - 1], step, step * 1e-6);
        }
        /* the range is used well: at least 40% of the axis carries data */
        if (hi > lo) cr_assert_geq((hi - lo) / (t[n - 1] - t[0]), 0.4, "[%g, %g] -> %g..%g", lo, hi, t[0], t[n - 1]);
    }
}

static char *write_run(const char *dir)
{
    char *p = tcli_path(dir, "metrics.csv");
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fputs("kind,step,epoch,seconds,loss,acc,lr,img_per_s,extra\n", f);
    for (int s = 1; s <= 12; s++) {
        fprintf(f, "train,%d,%.3f,%.3f,%.4f,%.4f,0.1,500.0,\n", s * 10, s / 4.0, s * 1.5, 2.0 / s, 0.1 + 0.05 * s);
        fprintf(f, "round,%d,,%.3f,%.4f,,,,round=%d norm=%.3f;%.3f;%.3f weight=0.3;0.33;0.37 dist=0.1;0.2;nan "
                   "local=4;4;3 sync_s=0.0012\n",
                s * 10, s * 1.5, 2.0 / s, s, 10.0 / s, 9.0 / s, 8.0 / s);
        if (s % 4 == 0) {
            fprintf(f, "val,%d,%.4f,%.3f,%.4f,%.4f,,,center\n", s * 10, s / 4.0, s * 1.5, 1.5 / s, 0.2 + 0.05 * s);
            fprintf(f, "val_average,%d,%.4f,%.3f,%.4f,%.4f,,,average\n", s * 10, s / 4.0, s * 1.5, 1.6 / s,
                    0.19 + 0.05 * s);
        }
    }
    fclose(f);
    free(p);
    p = tcli_path(dir, "config.json");
    f = fopen(p, "w");
    fputs("{\n  \"dataset\": \"cifar10\",\n  \"model\": \"tiny <&>\",\n  \"workers\": 3,\n  \"algo\": \"mgrawa\"\n}\n", f);
    fclose(f);
    free(p);
    if (plot_metrics_svg(dir)) return NULL;
    p = tcli_path(dir, "plot.svg");
    char *svg = tcli_slurp(p);
    free(p);
    return svg;
}

Test(tools_plot, run_plot_has_worker_panels_and_markers)
{
    char *dir = tcli_tmpdir();
    char *svg = write_run(dir);
    cr_assert(svg, "plot.svg written");
    assert_xml(svg);
    cr_assert(strstr(svg, "Weight in the center") && strstr(svg, "Gradient norm per worker") &&
                  strstr(svg, "Distance to the center") && strstr(svg, "Center vs average model"),
              "per-worker and center/average panels");
    cr_assert(strstr(svg, ">w0<") && strstr(svg, ">w2<") && strstr(svg, ">1/M<"), "per-worker legend");
    cr_assert(strstr(svg, "tiny &lt;&amp;&gt;"), "escaped text");
    /* 3 evaluations x (center, average) in loss, accuracy and over time; 12 rounds x 3 workers x 4 */
    cr_assert_geq(count(svg, "class=\"marker\""), 3 * 2 * 3 + 12 * 3 * 4);
    cr_assert_geq(count(svg, "class=\"series\""), 3 + 3 + 3 + 1 + 1);
    /* round y ticks on the loss axis: 0, 0.5, ... */
    cr_assert(strstr(svg, ">0.5</text>") && strstr(svg, ">cross-entropy loss</text>"));
    cr_assert_null(strstr(svg, "nan"), "no NaN coordinates");
    free(svg);
    DIR *d = opendir(dir); /* no temp file left behind */
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) files += e->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(files, 3, "metrics.csv, config.json, plot.svg");
    tcli_rmrf(dir);
    free(dir);
}

static const double ES[3] = {5, 10, 15}, EA1[3] = {0.5, 0.6, 0.7}, EA2[3] = {0.45, 0.62, 0.69}, EB[3] = {0.4, 0.5, 0.55};

static char *compare_svg_of(const char *dir, int seeds)
{
    compare_run runs[4];
    int n = 0;
    for (int a = 0; a < 2; a++)
        for (int s = 0; s < seeds; s++) {
            compare_run *r = &runs[n++];
            memset(r, 0, sizeof *r);
            snprintf(r->algo, sizeof r->algo, "%s", a ? "dp" : "mgrawa");
            r->seed = s;
            r->eval_s = ES;
            r->eval_acc = a ? EB : s ? EA2 : EA1;
            r->nevals = 3;
            r->test_acc = r->eval_acc[2];
            r->center_acc = r->average_acc = NAN;
            r->img_per_s = 100, r->seconds = 15;
        }
    cr_assert_eq(compare_write(dir, runs, n), 0);
    char *p = tcli_path(dir, "compare.svg"), *svg = tcli_slurp(p);
    free(p);
    return svg;
}

Test(tools_plot, compare_bands_with_seeds)
{
    char *dir = tcli_tmpdir();
    char *svg = compare_svg_of(dir, 2);
    cr_assert(svg);
    assert_xml(svg);
    cr_assert_geq(count(svg, "class=\"band\""), 1, "a band for mgrawa's two different seeds");
    cr_assert(strstr(svg, "mean +- 1 standard deviation over seeds"), "the band is named in the figure");
    cr_assert_geq(count(svg, "class=\"errbar\""), 2, "final accuracy: min..max bars");
    cr_assert(strstr(svg, ">mgrawa<") && strstr(svg, ">dp<") && strstr(svg, "Final test accuracy"));
    free(svg);
    svg = compare_svg_of(dir, 1);
    assert_xml(svg);
    cr_assert_eq(count(svg, "class=\"band\""), 0, "one seed: no band");
    free(svg);
    tcli_rmrf(dir);
    free(dir);
}
