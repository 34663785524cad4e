/* tests/tools/test_compare_stats.c - the statistics of `nnc compare` (tools/compare_report.c):
 * the t quantile, the paired t interval, time to a target accuracy, and compare.md/.csv built
 * from synthetic run folders (summary.json and metrics.csv fixtures) with hand-computed values. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/common/cli_run.h"
#include "tools/cli.h"
#include "tools/compare.h"

Test(tools_compare_stats, t_quantiles)
{
    /* Student's t, two-sided 95%: standard tables */
    static const struct {
        int df;
        double t;
    } ref[] = {{1, 12.706}, {2, 4.303}, {4, 2.776}, {9, 2.262}, {19, 2.093}, {30, 2.042},
               {40, 2.0211}, {60, 2.0003}, {99, 1.9842}, {120, 1.9799}, {1000, 1.9623}};
    for (size_t i = 0; i < sizeof ref / sizeof *ref; i++)
        cr_assert_float_eq(compare_t975(ref[i].df), ref[i].t, 1e-3, "df %d: %g vs %g", ref[i].df,
                           compare_t975(ref[i].df), ref[i].t);
    cr_assert(isnan(compare_t975(0)));
    for (int df = 1; df < 200; df++) cr_assert_gt(compare_t975(df), compare_t975(df + 1), "decreasing at df %d", df);
    cr_assert_gt(compare_t975(100000), 1.95996);
}

Test(tools_compare_stats, paired_interval_by_hand)
{
    /* differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, half-width 4.303 * 0.01 / sqrt(3) = 0.024843 */
    double a[] = {0.80, 0.82, 0.84, NAN}, b[] = {0.78, 0.79, 0.83, 0.9}, mean, lo, hi;
    cr_assert_eq(compare_paired(a, b, 4, &mean, &lo, &hi), 3, "the NaN pair is left out");
    cr_assert_float_eq(mean, 0.02, 1e-12);
    cr_assert_float_eq(lo, 0.02 - 4.303 * 0.01 / sqrt(3.0), 1e-9);
    cr_assert_float_eq(hi, 0.02 + 4.303 * 0.01 / sqrt(3.0), 1e-9);
    cr_assert_eq(compare_paired(a, b, 1, &mean, &lo, &hi), 1);
    cr_assert(isnan(lo) && isnan(hi), "one pair: no interval");
    cr_assert_float_eq(mean, 0.02, 1e-12);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char *p = tcli_path(dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f, "%s", p);
    fputs(text, f);
    fclose(f);
    free(p);
}

/* A finished run: summary.json and metrics.csv whose val rows reach acc[i] at 10, 20, 30 s. */
static void fixture(const char *out, const char *algo, int seed, int workers, double center, double bytes,
                    const double acc[3])
{
    char dir[1024], text[2048];
    snprintf(dir, sizeof dir, "%s/%s-s%d", out, algo, seed);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(text, sizeof text,
             "{\n  \"status\": \"ok\",\n  \"algo\": \"%s\",\n  \"workers\": %d,\n  \"test_acc\": %.6f,\n"
             "  \"center_test_acc\": %.6f,\n  \"average_test_acc\": %.6f,\n  \"seconds\": 30,\n"
             "  \"images_per_sec\": 1000,\n  \"steps\": 40,\n  \"rounds\": 20,\n  \"bytes_per_round\": %.0f,\n"
             "  \"local_steps\": [20, 20]\n}\n",
             algo, workers, center, center, center - 0.01, bytes);
    write_file(dir, "summary.json", text);
    snprintf(text, sizeof text,
             "kind,step,epoch,seconds,loss,acc,lr,img_per_s,extra\n"
             "train,5,0.5,5,1.2,0.4,0.1,1000,\n"
             "val,10,1,10,1.0,%.4f,,,center\n"
             "val_average,10,1,10,1.0,0.99,,,average\n"
             "round,10,,10,1.0,,,,round=1\n"
             "val,20,2,20,0.9,%.4f,,,center\n"
             "val,30,3,30,0.8,%.4f,,,center\n",
             acc[0], acc[1], acc[2]);
    write_file(dir, "metrics.csv", text);
}

static char *slurp_in(const char *dir, const char *name)
{
    char *p = tcli_path(dir, name), *t = tcli_slurp(p);
    free(p);
    cr_assert(t, "%s/%s", dir, name);
    return t;
}

Test(tools_compare_stats, report_from_run_folders)
{
    char *out = tcli_tmpdir();
    /* mgrawa: center 0.80, 0.82, 0.84; dp (best baseline): 0.78, 0.79, 0.83; easgd: 0.70 x 3;
     * lgrawa: one seed only. Target 0.75: mgrawa reaches it at 20, 20, 10 s; dp at 30, 20 s
     * and not at all in seed 3; easgd never. */
    static const double acc_m[3][3] = {{0.6, 0.76, 0.80}, {0.7, 0.8, 0.82}, {0.75, 0.8, 0.84}};
    static const double acc_d[3][3] = {{0.6, 0.7, 0.78}, {0.6, 0.79, 0.79}, {0.6, 0.7, 0.74}};
    static const double acc_e[3] = {0.5, 0.6, 0.7}, acc_l[3] = {0.8, 0.85, 0.86};
    static const double cm[3] = {0.80, 0.82, 0.84}, cd[3] = {0.78, 0.79, 0.83};
    for (int s = 0; s < 3; s++) {
        fixture(out, "mgrawa", s + 1, 2, cm[s], 1e6, acc_m[s]);
        fixture(out, "dp", s + 1, 2, cd[s], 2e6, acc_d[s]);
        fixture(out, "easgd", s + 1, 2, 0.70, 1e6, acc_e);
    }
    fixture(out, "lgrawa", 1, 2, 0.86, 1e6, acc_l);
    static const char *algos[] = {"mgrawa", "dp", "easgd", "lgrawa"};
    compare_run runs[10];
    double *es[10], *ea[10];
    int n = 0;
    for (int a = 0; a < 4; a++)
        for (int s = 1; s <= (a == 3 ? 1 : 3); s++, n++) {
            char dir[1024];
            snprintf(dir, sizeof dir, "%s/%s-s%d", out, algos[a], s);
            cr_assert_eq(compare_run_load(dir, algos[a], s, &runs[n], &es[n], &ea[n]), 0);
            cr_assert_eq(runs[n].exit_code, 0);
            cr_assert_eq(runs[n].nevals, 3, "the val rows only, not val_average");
            runs[n].flat_lambda = 10.0 + a + s, runs[n].flat_topk = 50.0 + a;
        }
    cr_assert_float_eq(runs[0].center_acc, 0.80, 1e-9);
    cr_assert_eq(runs[0].rounds, 20);
    cr_assert_eq(runs[0].local_steps, 40);
    cr_assert_float_eq(compare_time_to(&runs[0], 0.75), 20.0, 1e-12);
    cr_assert(isnan(compare_time_to(&runs[5], 0.75)), "dp seed 3 never reaches 0.75");
    compare_opts o = {.target_acc = 0.75, .flatness = 1, .flat_k = 10};
    cr_assert_eq(compare_write_opts(out, runs, n, &o), 0);
    char *md = slurp_in(out, "compare.md"), *csv = slurp_in(out, "compare.csv");
    cr_log_info("%s", md);
    /* main table: accuracy mean +- sd, MB moved = 20 rounds x 1 MB, time to 75% over the seeds that reached it */
    cr_assert(strstr(md, "| mgrawa | 3 | 82.00 ± 2.00 |"), "%s", md);
    cr_assert(strstr(md, "| 20.0 ± 0.0 | 16.7 ± 5.8 (3/3) |"), "mgrawa: 20, 20, 10 s: %s", md);
    cr_assert(strstr(md, "| 40.0 ± 0.0 | 25.0 ± 7.1 (2/3) |"), "dp: 30, 20 s, one seed short: %s", md);
    cr_assert(strstr(md, "not reached (0/3)"), "easgd: %s", md);
    cr_assert(strstr(md, "| 12 ± 1 | 50 ± 0 |"), "mgrawa flatness 11, 12, 13: %s", md);
    cr_assert(strstr(md, "time to 75% (s)") && strstr(md, "lambda_max | top-10 sum"), "%s", md);
    /* paired comparison with dp, the best baseline (dp 80.0 > easgd 70.0 on average) */
    cr_assert(strstr(md, "Best baseline: **dp**"), "%s", md);
    cr_assert(strstr(md, "paired t test"), "says which test: %s", md);
    /* mgrawa - dp: 2, 3, 1 points: +2.00 [2 - 4.303/sqrt 3, 2 + 4.303/sqrt 3] = [-0.48, +4.48];
     * time: pairs (20, 30), (20, 20): differences -10, 0: mean -5, sd 7.071, t(1) 12.706: +-63.53 */
    cr_assert(strstr(md, "| mgrawa | 3 | +2.00 | [-0.48, +4.48] | 2 | -5.00 s | [-68.53, +58.53] |"), "%s", md);
    cr_assert(strstr(md, "| dp | - | (reference) |"), "%s", md);
    /* easgd - dp: -8, -9, -13: mean -10, sd 2.6458, half 4.303 * 2.6458 / sqrt 3 = 6.57 */
    cr_assert(strstr(md, "| easgd | 3 | -10.00 | [-16.57, -3.43] | 0 | n/a | n/a |"), "%s", md);
    /* lgrawa: one paired seed: n/a */
    cr_assert(strstr(md, "| lgrawa | 1 | n/a | n/a |"), "%s", md);
    cr_assert(strstr(csv, "bytes_per_round,mb_moved,time_to_target,lambda_max,topk_sum,comm_model_seconds\n"), "%s", csv);
    cr_assert(strstr(csv, "\nmgrawa,1,0,0.800000,0.800000,0.790000,20,40,1000.0,30.000,1000000,20.000,20.000,11,50,0.000\n"),
              "%s", csv);
    cr_assert(strstr(csv, "\ndp,3,0,0.830000,0.830000,0.820000,20,40,1000.0,30.000,2000000,40.000,,14,51,0.000\n"), "%s",
              csv);
    free(md), free(csv);
    /* without options: no time or flatness columns; no baseline: said so */
    cr_assert_eq(compare_write_opts(out, runs, 3, NULL), 0);
    md = slurp_in(out, "compare.md");
    cr_assert_null(strstr(md, "time to"), "%s", md);
    cr_assert_null(strstr(md, "lambda_max"), "%s", md);
    cr_assert_null(strstr(md, "Paired"), "one algorithm: nothing to pair: %s", md);
    cr_assert_null(strstr(md, "comm s"), "no link: no modelled-communication column: %s", md);
    free(md);
    /* a modelled link: the comm column (mean +- sd over seeds) and the csv value */
    for (int i = 0; i < 3; i++) runs[i].comm_s = 2.0 + i;
    cr_assert_eq(compare_write_opts(out, runs, 3, NULL), 0);
    md = slurp_in(out, "compare.md");
    csv = slurp_in(out, "compare.csv");
    cr_assert(strstr(md, "| comm s (modelled) |") && strstr(md, "| 3.0 ± 1.0 |"), "%s", md);
    cr_assert(strstr(csv, ",4.000\n"), "%s", csv);
    free(md), free(csv);
    for (int i = 0; i < 3; i++) runs[i].comm_s = 0.0;
    compare_run two[2] = {runs[0], runs[9]};
    cr_assert_eq(compare_write_opts(out, two, 2, NULL), 0);
    md = slurp_in(out, "compare.md");
    cr_assert(strstr(md, "No baseline"), "%s", md);
    free(md);
    for (int i = 0; i < n; i++) free(es[i]), free(ea[i]);
    tcli_rmrf(out);
    free(out);
}

Test(tools_compare_stats, load_refuses_a_missing_summary)
{
    char *out = tcli_tmpdir();
    compare_run r;
    double *es, *ea;
    cr_assert_eq(compare_run_load(out, "dp", 1, &r, &es, &ea), -1);
    cr_assert_neq(r.exit_code, 0);
    cr_assert(es == NULL && ea == NULL);
    /* an interrupted run is not a finished one */
    write_file(out, "summary.json", "{\"status\": \"interrupted\", \"workers\": 1, \"test_acc\": 0.5}");
    cr_assert_eq(compare_run_load(out, "dp", 1, &r, &es, &ea), 0);
    cr_assert_neq(r.exit_code, 0);
    cr_assert_eq(r.bytes_per_round, 0, "one replica sends nothing");
    cr_assert(isnan(r.center_acc));
    free(es), free(ea);
    tcli_rmrf(out);
    free(out);
}

/* Through the binary: the report flags are checked before anything is written, and a small
 * comparison gets its time, flatness and paired columns. */
Test(tools_compare_stats, cli_flags_and_columns, .timeout = 180)
{
    char *work = tcli_tmpdir(), *data = tcli_path(work, "data"), *out = tcli_path(work, "cmp");
    mkdir(data, 0700);
    static const struct {
        const char *flag, *value, *msg;
    } bad[] = {{"--target-acc", "85", "--target-acc: expected a test accuracy as a fraction in (0, 1]"},
               {"--target-acc", "-0.5", "found -0.5"},
               {"--flatness-images", "0", "--images: expected"},
               {"--flatness-k", "0", "--k: expected"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tcli_result r = tcli_run(20, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--flatness",
                                 bad[i].flag, bad[i].value, "--out", out, NULL);
        cr_assert_eq(r.code, 2, "%s %s: %d %s", bad[i].flag, bad[i].value, r.code, r.err);
        cr_assert(strstr(r.err, bad[i].msg), "%s", r.err);
        cr_assert_not(tcli_exists(out), "nothing written");
        tcli_free(&r);
    }
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
    tcli_result r = tcli_run(150, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch",
                             "32", "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--epochs", "1",
                             "--time-budget", "0", "--sched", "constant", "--workers", "2", "--tau", "2", "--algos",
                             "mgrawa,dp", "--seeds", "2", "--seed", "0", "--target-acc", "0.05", "--flatness",
                             "--flatness-images", "32", "--flatness-iters", "3", "--flatness-k", "2", "--out", out, NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.out, "== flatness: dp seed 1"), "%s", r.out);
    tcli_free(&r);
    char *md = slurp_in(out, "compare.md"), *csv = slurp_in(out, "compare.csv");
    cr_assert(strstr(md, "time to 5% (s)") && strstr(md, "(2/2)"), "every run beats 5%%: %s", md);
    cr_assert(strstr(md, "lambda_max | top-2 sum") && strstr(md, "Best baseline: **dp**"), "%s", md);
    cr_assert(strstr(md, "| mgrawa | 2 | "), "%s", md);
    /* every run has a finite lambda_max in the csv (second-to-last column) */
    int rows = 0;
    for (char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char *end = strchr(line + 1, '\n'), *c = end;
        int commas = 0;
        while (c > line && commas < 2) commas += *--c == ',';
        cr_assert(c[1] != ',', "lambda_max empty in %.*s", (int)(end - line - 1), line + 1);
        rows++;
    }
    cr_assert_eq(rows, 4);
    /* --resume of the finished comparison trains nothing and measures no flatness again: every
     * run's flatness.json is reused, and the report comes out the same. */
    char *fj = tcli_path(out, "dp-s1/flatness.json");
    cr_assert(tcli_exists(fj), "flatness.json written");
    free(fj);
    r = tcli_run(150, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",
                 "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--epochs", "1", "--time-budget", "0",
                 "--sched", "constant", "--workers", "2", "--tau", "2", "--algos", "mgrawa,dp", "--seeds", "2", "--seed",
                 "0", "--target-acc", "0.05", "--flatness", "--flatness-images", "32", "--flatness-iters", "3",
                 "--flatness-k", "2", "--out", out, "--resume", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    int nothing = 0;
    for (const char *q = r.out; (q = strstr(q, "nothing to do")); q++) nothing++;
    cr_assert_eq(nothing, 4, "every run (async mgrawa too) had finished: %s", r.out);
    cr_assert(strstr(r.out, "from ") && strstr(r.out, "dp-s1/flatness.json"), "%s", r.out);
    cr_assert_not(strstr(r.out, "== flatness: dp seed 1 (4/4)\n"), "measured again: %s", r.out);
    tcli_free(&r);
    char *csv2 = slurp_in(out, "compare.csv");
    cr_assert_str_eq(csv2, csv, "the report from the files equals the first one:\n%s\n%s", csv, csv2);
    free(csv2);
    free(md), free(csv);
    tcli_rmrf(work);
    free(work), free(data), free(out);
}
