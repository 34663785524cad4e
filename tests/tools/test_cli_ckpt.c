/* tests/tools/test_cli_ckpt.c - `nnc train` checkpoint rotation (--keep, best.ckpt metric)
 * and the non-finite policy (--nan-policy stop and skip) through the binary, with the
 * test build's fault hooks (NNC_FAULT) on generated CIFAR-format files. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/checkpoint.h"
#include "tests/common/cli_run.h"

static char *data, *work;

static void setup(void)
{
    data = tcli_tmpdir();
    work = tcli_tmpdir();
    cr_assert(data && work);
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
}

static void teardown(void)
{
    unsetenv("NNC_FAULT");
    tcli_rmrf(data);
    tcli_rmrf(work);
    free(data);
    free(work);
}

TestSuite(tools_cli_ckpt, .init = setup, .fini = teardown, .timeout = 120);

/* 256 images, batch 32: 8 steps per epoch. */
#define TRAIN(run, ...)                                                                                        \
    tcli_run(60, "train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",      \
             "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1", "--log-every", "2", \
             "--run-dir", run, __VA_ARGS__, NULL)

static int has(const char *run, const char *name)
{
    char *p = tcli_path(run, name);
    int e = tcli_exists(p);
    free(p);
    return e;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

Test(tools_cli_ckpt, keep_and_best_metric)
{
    tcli_result r = tcli_run(10, "train", "--help", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "--keep") && strstr(r.out, "--nan-policy"), "%s", r.out);
    tcli_free(&r);
    char *run = tcli_path(work, "run");
    setenv("NNC_FAULT", "eval_acc:0.5/0.3/0.7/0.6", 1);
    r = TRAIN(run, "--epochs", "4", "--eval-every", "1", "--keep", "2");
    unsetenv("NNC_FAULT");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert_eq(count(r.out, "(best)"), 2, "0.5 and 0.7 improve, 0.3 and 0.6 do not: %s", r.out);
    tcli_free(&r);
    cr_assert(has(run, "epoch-0003.ckpt") && has(run, "epoch-0004.ckpt"));
    cr_assert(!has(run, "epoch-0001.ckpt") && !has(run, "epoch-0002.ckpt"));
    cr_assert(has(run, "last.ckpt") && has(run, "best.ckpt"));
    char *best = tcli_path(run, "best.ckpt");
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(best, &c), NNC_OK);
    const void *m;
    size_t n;
    cr_assert_eq(nnc_ckpt_get_bytes(c, "metric", &m, &n), NNC_OK);
    cr_assert(n == 17 && !memcmp(m, "test_acc=0.700000", n), "%.*s", (int)n, (const char *)m);
    nnc_ckpt_free(c);
    free(best);
    /* An epoch file is a complete checkpoint `nnc eval` accepts. */
    char *ep = tcli_path(run, "epoch-0003.ckpt");
    r = tcli_run(60, "eval", "cifar10", "--ckpt", ep, "--data", data, "--limit", "100", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    free(ep);
    char *run2 = tcli_path(work, "run2");
    r = TRAIN(run2, "--epochs", "1", "--keep", "-1");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--keep"), "%s", r.err);
    tcli_free(&r);
    free(run2);
    free(run);
}

Test(tools_cli_ckpt, nan_policy_exit_codes)
{
    /* stop (default): exit 3 at step 11 (epoch 2); last.ckpt of epoch 1 still loads. */
    char *run = tcli_path(work, "stop");
    setenv("NNC_FAULT", "loss_inf:11", 1);
    tcli_result r = TRAIN(run, "--epochs", "2", "--sched", "constant");
    cr_assert_eq(r.code, 3, "%d %s", r.code, r.err);
    cr_assert(strstr(r.err, "non-finite loss at step 11") && strstr(r.err, "--nan-policy stop"), "%s", r.err);
    tcli_free(&r);
    unsetenv("NNC_FAULT");
    char *last = tcli_path(run, "last.ckpt");
    r = tcli_run(60, "eval", "cifar10", "--ckpt", last, "--data", data, "--limit", "100", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    free(last);
    free(run);
    /* skip: the step is skipped, reported, counted in summary.json; the run finishes (exit 0). */
    run = tcli_path(work, "skip");
    setenv("NNC_FAULT", "loss_inf:11", 1);
    r = TRAIN(run, "--epochs", "2", "--sched", "constant", "--nan-policy", "skip");
    unsetenv("NNC_FAULT");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.err, "step 11: non-finite loss") && strstr(r.err, "step skipped"), "%s", r.err);
    cr_assert(strstr(r.out, "1 non-finite step(s) skipped"), "%s", r.out);
    tcli_free(&r);
    char *sp = tcli_path(run, "summary.json"), *summary = tcli_slurp(sp);
    cr_assert(summary && strstr(summary, "\"skipped_steps\": 1"), "%s", summary ? summary : "(none)");
    cr_assert(strstr(summary, "\"status\": \"ok\""), "%s", summary);
    free(summary), free(sp);
    /* skip is for one replica; unknown policies are usage errors. */
    r = TRAIN(run, "--epochs", "1", "--nan-policy", "skip", "--workers", "2", "--algo", "mgrawa");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--nan-policy skip") && strstr(r.err, "--workers 1"), "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--epochs", "1", "--nan-policy", "ignore");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--nan-policy") && strstr(r.err, "stop or skip") && strstr(r.err, "ignore"), "%s", r.err);
    tcli_free(&r);
    free(run);
}
