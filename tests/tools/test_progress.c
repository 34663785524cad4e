/* tests/tools/test_progress.c - status lines that fit the terminal: the field fitter, the
 * progress and round lines at several widths, and `nnc train` with 4 workers writing bounded
 * round lines to a pipe and every worker's values to RUN/train.log. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/cli_run.h"
#include "dist/dist.h"
#include "tools/cli.h"

static const int WIDTHS[] = {40, 60, 80, 120, 200};

static void assert_plain(const char *s)
{
    for (const char *c = s; *c; c++) cr_assert(*c >= 0x20 && *c < 0x7f, "printable ASCII: %s", s);
}

Test(tools_progress, fit_drops_least_important_first)
{
    nnc_field f[3] = {{"alpha-long", "a", 1}, {"beta", NULL, 9}, {"gamma-field", "g", 5}};
    char out[256];
    nnc_fit_fields(out, sizeof out, 200, f, 3);
    cr_assert_str_eq(out, "alpha-long beta gamma-field");
    nnc_fit_fields(out, sizeof out, 19, f, 3); /* 18 columns: abbreviate alpha, then gamma */
    cr_assert_str_eq(out, "a beta gamma-field");
    nnc_fit_fields(out, sizeof out, 9, f, 3);
    cr_assert_str_eq(out, "a beta g");
    nnc_fit_fields(out, sizeof out, 6, f, 3); /* only the most important one left */
    cr_assert_str_eq(out, "beta");
    nnc_fit_fields(out, sizeof out, 3, f, 3); /* and it is cut */
    cr_assert_str_eq(out, "be");
}

Test(tools_progress, progress_line_never_exceeds_width)
{
    const double losses[] = {2.302585, NAN, 1234.5678};
    const double ips[] = {31.5, 1234567.0};
    for (size_t w = 0; w < sizeof WIDTHS / sizeof *WIDTHS; w++)
        for (int bar = 0; bar < 2; bar++)
            for (int l = 0; l < 3; l++)
                for (int i = 0; i < 2; i++) {
                    char out[1100];
                    size_t len = nnc_format_progress(out, sizeof out, WIDTHS[w], bar, "epoch 123.45", 123456789,
                                                     987654321, losses[l], 0.8765, ips[i], 98765.0);
                    cr_assert_eq(len, strlen(out));
                    cr_assert_lt((int)len, WIDTHS[w], "width %d: %zu '%s'", WIDTHS[w], len, out);
                    assert_plain(out);
                    cr_assert(strstr(out, "123456789/987654321"), "the step always shows: %s", out);
                    if (WIDTHS[w] >= 80) cr_assert(strstr(out, "ETA") || strstr(out, "27:25:"), "%s", out);
                }
    char out[1100];
    nnc_format_progress(out, sizeof out, 200, 1, "epoch 0.50", 50, 100, 0.5, 0.75, 1000, 10);
    cr_assert(strstr(out, "[###############...............]") && strstr(out, "loss 0.5000") &&
                  strstr(out, "acc 75.0%") && strstr(out, "1000 img/s") && strstr(out, "ETA 00:10"),
              "all fields and a 30-cell bar at 200 columns: %s", out);
    nnc_format_progress(out, sizeof out, 80, 1, "epoch 0.50", 50, 100, 0.5, 0.75, 1000, 10);
    cr_assert(strchr(out, '[') && strlen(out) < 80, "a bar fits in 80 columns: %s", out);
}

static nnc_round_info sample_round(int workers)
{
    nnc_round_info r;
    memset(&r, 0, sizeof r);
    r.round = 123456;
    r.seconds = 3600.5;
    r.workers = workers;
    r.loss = 0.123456;
    r.sync_seconds = 0.0123;
    for (int i = 0; i < workers; i++) {
        r.norm[i] = 1000.0 / (i + 1);
        r.weight[i] = 1.0 / workers + 1e-4 * i;
        r.distance[i] = 0.001 * (i + 1);
        r.local_steps[i] = 32 - (i == workers - 1);
    }
    return r;
}

Test(tools_progress, round_line_never_exceeds_width)
{
    const int workers[] = {2, 4, 64};
    for (size_t w = 0; w < sizeof WIDTHS / sizeof *WIDTHS; w++)
        for (int k = 0; k < 3; k++) {
            nnc_round_info r = sample_round(workers[k]);
            char out[1100];
            size_t len = nnc_format_round(out, sizeof out, WIDTHS[w], &r, "norm");
            cr_assert_lt((int)len, WIDTHS[w], "width %d: '%s'", WIDTHS[w], out);
            assert_plain(out);
            cr_assert(!strncmp(out, "round 123456 loss", 17), "%s", out);
            if (WIDTHS[w] >= 80) {
                cr_assert(strstr(out, "norm ") && strstr(out, ".."), "the norm range: %s", out);
                char slow[32];
                snprintf(slow, sizeof slow, "w%d", workers[k] - 1);
                cr_assert(strstr(out, slow), "the straggler: %s", out);
            }
            if (WIDTHS[w] >= 120)
                cr_assert(strstr(out, "weight ") && strstr(out, "dist ") && strstr(out, "steps 31..32") &&
                              strstr(out, "sync 0.012s"),
                          "%s", out);
        }
}

Test(tools_progress, full_round_line_has_every_worker)
{
    nnc_round_info r = sample_round(4);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nnc_format_round_full(f, &r, "norm");
    fclose(f);
    cr_assert(strstr(buf, "w0 norm 1000 weight 0.2500 dist 0.001 steps 32") &&
                  strstr(buf, "w3 norm 250 weight 0.2503 dist 0.004 steps 31"),
              "%s", buf);
    free(buf);
}

Test(tools_progress, fmt_time)
{
    char b[32];
    nnc_fmt_time(b, sizeof b, 75);
    cr_assert_str_eq(b, "01:15");
    nnc_fmt_time(b, sizeof b, 3725);
    cr_assert_str_eq(b, "1:02:05");
    nnc_fmt_time(b, sizeof b, -1);
    cr_assert_str_eq(b, "--:--");
}

Test(tools_progress, columns_env_when_not_a_terminal)
{
    setenv("COLUMNS", "57", 1);
    cr_assert_eq(nnc_term_width(-1), 57);
    setenv("COLUMNS", "junk", 1);
    cr_assert_eq(nnc_term_width(-1), 80);
    unsetenv("COLUMNS");
    cr_assert_eq(nnc_term_width(-1), 80);
}

/* stdout is a pipe: plain lines, each within COLUMNS - 1; train.log has every worker. */
Test(tools_progress, cli_round_lines_bounded_and_logged, .timeout = 120)
{
    char *data = tcli_tmpdir(), *work = tcli_tmpdir();
    cr_assert(data && work);
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
    char *run = tcli_path(work, "run");
    setenv("COLUMNS", "80", 1);
    tcli_result r = tcli_run(100, "train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch",
                             "16", "--limit-train", "256", "--limit-test", "64", "--threads", "1", "--log-every", "1",
                             "--epochs", "1", "--workers", "4", "--algo", "mgrawa", "--tau", "2", "--sync",
                             "lockstep", "--bn-batches", "1", "--run-dir", run, NULL);
    unsetenv("COLUMNS");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert_null(strchr(r.out, '\r'));
    cr_assert_null(strchr(r.out, '\033'));
    int rounds = 0;
    for (char *line = r.out; *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!strncmp(line, "round ", 6)) rounds++;
        if (!strncmp(line, "round ", 6) || !strncmp(line, "epoch ", 6) || !strncmp(line, "eval ", 5))
            cr_assert_lt(len, 80, "line of %zu columns: %.*s", len, (int)len, line);
        line += len + (end ? 1 : 0);
    }
    cr_assert_geq(rounds, 2, "%s", r.out);
    char *p = tcli_path(run, "train.log"), *log = tcli_slurp(p);
    cr_assert(log, "%s missing", p);
    cr_assert(strstr(log, "round 1 ") && strstr(log, " w0 norm ") && strstr(log, " w3 norm ") &&
                  strstr(log, " weight ") && strstr(log, " dist ") && strstr(log, " steps 2 |"),
              "%s", log);
    cr_assert(strstr(log, "eval epoch 1.00") && strstr(log, "step "), "%s", log);
    free(log), free(p), free(run);
    tcli_free(&r);
    tcli_rmrf(data), tcli_rmrf(work);
    free(data), free(work);
}
