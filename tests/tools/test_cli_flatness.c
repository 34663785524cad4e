/* tests/tools/test_cli_flatness.c - `nnc flatness` through the binary: the text and --json
 * reports of a trained run folder (dataset and data folder taken from the run), determinism for
 * one seed, and exit code 2 for bad flags, missing or FIFO checkpoints and unknown datasets. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/common/cli_run.h"
#include "tools/cli.h"

static char *data, *work, *run;

static void setup(void)
{
    data = tcli_tmpdir();
    work = tcli_tmpdir();
    cr_assert(data && work);
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
    run = tcli_path(work, "run");
    tcli_result r = tcli_run(60, "train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",
                             "--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--threads", "1",
                             "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
}

static void teardown(void)
{
    tcli_rmrf(data);
    tcli_rmrf(work);
    free(data);
    free(work);
    free(run);
}

TestSuite(tools_cli_flatness, .init = setup, .fini = teardown, .timeout = 120);

#define FLAT(...) tcli_run(60, "flatness", "--images", "64", "--iters", "6", "--batch", "32", __VA_ARGS__, NULL)

Test(tools_cli_flatness, json_report_of_a_run_folder)
{
    /* no DATASET, no --data: both come from the run (meta/json in the checkpoint, config.json) */
    tcli_result r = FLAT("--ckpt", run, "--starts", "2", "--probes", "3", "--k", "4", "--json");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    static const char *keys[] = {"ckpt", "arch", "trained_on", "dataset", "images", "iters", "k", "starts",
                                 "probes", "seed", "lambda_max", "lambda_max_sd", "lambda_max_starts", "topk_sum",
                                 "topk_sum_starts", "trace", "trace_se", "seconds"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char k[64];
        snprintf(k, sizeof k, "\"%s\":", keys[i]);
        cr_assert(strstr(r.out, k), "no %s in %s", k, r.out);
    }
    double lm, top, n, starts[4], tr, se;
    char arch[64], ds[64];
    cr_assert_eq(jr_num(r.out, "lambda_max", &lm), 0);
    cr_assert_eq(jr_num(r.out, "topk_sum", &top), 0);
    cr_assert_eq(jr_num(r.out, "images", &n), 0);
    cr_assert_eq(jr_num(r.out, "trace", &tr), 0);
    cr_assert_eq(jr_num(r.out, "trace_se", &se), 0);
    cr_assert_eq(jr_nums(r.out, "lambda_max_starts", starts, 4), 2);
    cr_assert_eq(jr_str(r.out, "arch", arch, sizeof arch), 0);
    cr_assert_eq(jr_str(r.out, "dataset", ds, sizeof ds), 0);
    cr_assert_str_eq(arch, "tiny/c3/s32/k10");
    cr_assert_str_eq(ds, "cifar10");
    cr_assert_eq(n, 64);
    cr_assert(isfinite(lm) && lm > 0, "lambda_max %g", lm);
    cr_assert_float_eq(lm, (starts[0] + starts[1]) / 2, 1e-4 * lm, "mean of the starts");
    cr_assert(isfinite(tr) && se > 0, "trace %g +- %g", tr, se);
    cr_assert(strstr(r.out, "best.ckpt"), "a run folder means its best.ckpt: %s", r.out);
    /* the same seed gives the same numbers */
    tcli_result r2 = FLAT("--ckpt", run, "--starts", "2", "--probes", "3", "--k", "4", "--json");
    cr_assert_eq(r2.code, 0);
    double starts2[4];
    cr_assert_eq(jr_nums(r2.out, "lambda_max_starts", starts2, 4), 2);
    cr_assert(starts2[0] == starts[0] && starts2[1] == starts[1], "deterministic for one seed");
    tcli_free(&r2);
    tcli_free(&r);
}

Test(tools_cli_flatness, text_report_and_explicit_dataset)
{
    char *ck = tcli_path(run, "last.ckpt");
    tcli_result r = FLAT("--ckpt", ck, "cifar10", "--data", data, "--starts", "1", "--probes", "0");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.out, "lambda_max") && strstr(r.out, "top-10 sum") && strstr(r.out, "first 64 cifar10"), "%s",
              r.out);
    cr_assert_null(strstr(r.out, "Hutchinson"), "--probes 0: no trace: %s", r.out);
    tcli_free(&r);
    free(ck);
    r = tcli_run(10, "flatness", "--help", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "--probes") && strstr(r.out, "--starts") && strstr(r.out, "--json"), "%s", r.out);
    tcli_free(&r);
    r = tcli_run(10, "--help", NULL);
    cr_assert(strstr(r.out, "flatness"), "listed among the commands: %s", r.out);
    tcli_free(&r);
}

Test(tools_cli_flatness, bad_input_exits_2)
{
    static const struct {
        const char *flag, *value, *msg;
    } bad[] = {
        {"--images", "0", "--images: expected"}, {"--iters", "0", "--iters: expected"},
        {"--k", "0", "--k: expected"},           {"--starts", "33", "--starts: expected"},
        {"--probes", "-1", "--probes: expected"}, {"--batch", "0", "--batch: expected"},
        {"--eps", "0", "--eps: expected"},       {"--eps", "abc", "--eps"},
        {"--seed", "-3", "--seed: expected"},    {"--imagez", "3", "did you mean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tcli_result r = tcli_run(20, "flatness", "--ckpt", run, bad[i].flag, bad[i].value, NULL);
        cr_assert_eq(r.code, 2, "%s %s: exit %d %s", bad[i].flag, bad[i].value, r.code, r.err);
        cr_assert(strstr(r.err, bad[i].msg), "%s %s: %s", bad[i].flag, bad[i].value, r.err);
        tcli_free(&r);
    }
    tcli_result r = tcli_run(10, "flatness", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--ckpt"), "%s", r.err);
    tcli_free(&r);
    char *missing = tcli_path(work, "nope.ckpt");
    r = tcli_run(10, "flatness", "--ckpt", missing, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, missing), "%s", r.err);
    tcli_free(&r);
    free(missing);
    char *fifo = tcli_path(work, "fifo.ckpt");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    r = tcli_run(10, "flatness", "--ckpt", fifo, NULL);
    cr_assert(!r.timed_out, "flatness waited on the FIFO");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "FIFO"), "%s", r.err);
    tcli_free(&r);
    free(fifo);
    r = tcli_run(10, "flatness", "--ckpt", run, "cifar11", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "unknown dataset 'cifar11'") && strstr(r.err, "cifar10"), "%s", r.err);
    tcli_free(&r);
    /* another dataset whose files are not there: a data error */
    char *empty = tcli_path(work, "empty");
    mkdir(empty, 0700);
    r = tcli_run(10, "flatness", "--ckpt", run, "cifar100", "--data", empty, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    tcli_free(&r);
    free(empty);
}
