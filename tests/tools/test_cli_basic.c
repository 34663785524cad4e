/* tests/tools/test_cli_basic.c - the nnc binary's contract without training: help per
 * subcommand (G2), unknown flags with "did you mean" (G2), bad values naming the flag (G1),
 * config-file errors. Runs $NNC_BIN as a child process. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/cli_run.h"

TestSuite(tools_cli, .timeout = 60);

static const char *SUBCOMMANDS[] = {"train", "eval", "predict", "info", "compare"};

Test(tools_cli, top_level_help_and_unknown_command)
{
    tcli_result r = tcli_run(10, "--help", NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof *SUBCOMMANDS; i++)
        cr_assert(strstr(r.out, SUBCOMMANDS[i]), "help lists %s: %s", SUBCOMMANDS[i], r.out);
    cr_assert(strstr(r.out, "exit codes"));
    tcli_free(&r);
    r = tcli_run(10, "trian", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "unknown command 'trian'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, NULL);
    cr_assert_eq(r.code, 2);
    tcli_free(&r);
}

Test(tools_cli, help_per_subcommand_exits_0)
{
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof *SUBCOMMANDS; i++) {
        tcli_result r = tcli_run(10, SUBCOMMANDS[i], "--help", NULL);
        cr_assert_eq(r.code, 0, "nnc %s --help: %d %s", SUBCOMMANDS[i], r.code, r.err);
        char usage[64];
        snprintf(usage, sizeof usage, "usage: nnc %s", SUBCOMMANDS[i]);
        cr_assert(strstr(r.out, usage), "%s", r.out);
        cr_assert(strstr(r.out, "--help"));
        tcli_free(&r);
    }
    tcli_result r = tcli_run(10, "data", "--help", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "nnc data fetch"));
    tcli_free(&r);
    r = tcli_run(10, "data", "fetch", "--help", NULL);
    cr_assert_eq(r.code, 0);
    tcli_free(&r);
    r = tcli_run(10, "train", "--help", NULL);
    const char *need[] = {"--data", "--model", "--epochs", "--time-budget", "--batch", "--lr", "--momentum",
                          "--nesterov", "--wd", "--sched", "--warmup-epochs", "--milestones", "--drop-time",
                          "--seed", "--threads", "--run-dir", "--resume", "--limit-train", "--limit-test",
                          "--augment", "--workers", "--algo", "--sync", "--tau", "--pull", "--prox", "--norm",
                          "--bn-batches", "--sync-timeout", "--anomaly", "--config", "--download"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++) cr_assert(strstr(r.out, need[i]), "train --help lacks %s", need[i]);
    tcli_free(&r);
}

Test(tools_cli, unknown_flag_did_you_mean)
{
    struct {
        const char *cmd, *flag, *suggest;
    } cases[] = {{"train", "--epoch", "--epochs"}, {"train", "--lr-rate", NULL}, {"eval", "--ckp", "--ckpt"},
                 {"info", "--modle", "--model"},   {"compare", "--seed-count", NULL}, {"train", "--wokers", "--workers"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tcli_result r = tcli_run(10, cases[i].cmd, cases[i].flag, "3", NULL);
        cr_assert_eq(r.code, 2, "%s %s: %d", cases[i].cmd, cases[i].flag, r.code);
        cr_assert(strstr(r.err, "unknown flag"), "%s", r.err);
        cr_assert(strstr(r.err, cases[i].flag), "%s", r.err);
        if (cases[i].suggest) {
            char want[64];
            snprintf(want, sizeof want, "did you mean '%s'", cases[i].suggest);
            cr_assert(strstr(r.err, want), "%s", r.err);
        }
        tcli_free(&r);
    }
}

Test(tools_cli, bad_values_name_the_flag)
{
    tcli_result r = tcli_run(10, "train", "cifar10", "--batch", "abc", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--batch") && strstr(r.err, "expected an integer") && strstr(r.err, "'abc'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "cifar10", "--lr=0.1x", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--lr") && strstr(r.err, "expected a number"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "cifar10", "--nesterov=maybe", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "expected true or false"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "cifar10", "--epochs", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "needs a value"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "cifar10", "mnist", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "unexpected argument 'mnist'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "info", "--model", "resnet21", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "resnet21") && strstr(r.err, "resnet20"), "names the known models: %s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "--config", "/nonexistent/cfg.json", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent/cfg.json") && strstr(r.err, "No such file"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "eval", "cifar10", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--ckpt"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "eval", "cifar10", "--ckpt", "/nonexistent.ckpt", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent.ckpt"), "%s", r.err);
    tcli_free(&r);
}

Test(tools_cli, config_file_unknown_key)
{
    char *dir = tcli_tmpdir();
    char *cfg = tcli_path(dir, "c.json");
    FILE *f = fopen(cfg, "w");
    fputs("{\n  \"epochs\": 3,\n  \"learning-rate\": 0.1\n}\n", f);
    fclose(f);
    tcli_result r = tcli_run(10, "train", "cifar10", "--config", cfg, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "line 3") && strstr(r.err, "unknown key 'learning-rate'"), "%s", r.err);
    tcli_free(&r);
    free(cfg);
    tcli_rmrf(dir);
    free(dir);
}
