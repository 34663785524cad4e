/* tests/tools/test_cli_info.c - `nnc info` figures, `nnc data fetch` without a network,
 * `nnc predict` argument errors. Runs $NNC_BIN as a child process. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/cli_run.h"

TestSuite(tools_cli_info, .timeout = 60);

Test(tools_cli_info, counts)
{
    tcli_result r = tcli_run(10, "info", "--model", "resnet20", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    /* torchvision-style CIFAR ResNet-20 (option A): 269,722 parameters, ~40.55 M MACs. */
    cr_assert(strstr(r.out, "parameters: 269722"), "%s", r.out);
    cr_assert(strstr(r.out, "MACs per image: 40551040"), "%s", r.out);
    cr_assert(strstr(r.out, "resnet20/c3/s32/k10"));
    tcli_free(&r);
    r = tcli_run(10, "info", "--model", "resnet20", "--classes", "100", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "parameters: 275572"), "64*100+100 - (64*10+10) more: %s", r.out);
    tcli_free(&r);
    r = tcli_run(10, "info", "--list", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "resnet56") && strstr(r.out, "vgg11"), "%s", r.out);
    tcli_free(&r);
}

Test(tools_cli_info, help_and_bad_flags)
{
    const char *cmds[][2] = {{"info", "--help"}, {"predict", "--help"}, {"data", "--help"}};
    for (int i = 0; i < 3; i++) {
        tcli_result r = tcli_run(10, cmds[i][0], cmds[i][1], NULL);
        cr_assert_eq(r.code, 0, "%s --help: %s", cmds[i][0], r.err);
        cr_assert(strstr(r.out, "usage: nnc"), "%s", r.out);
        tcli_free(&r);
    }
    tcli_result r = tcli_run(10, "info", "--modle", "resnet20", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "did you mean '--model'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "info", "--model", "resnet20", "--classes", "ten", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--classes") && strstr(r.err, "'ten'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "info", "--model", "resnet21", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "resnet21") && strstr(r.err, "resnet20"), "names the known models: %s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "data", "fecth", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "'fecth'"), "%s", r.err);
    tcli_free(&r);
}

Test(tools_cli_info, data_fetch_present_and_unreachable)
{
    char *dir = tcli_tmpdir();
    cr_assert_eq(tcli_write_cifar10(dir, 8), 0);
    tcli_result r = tcli_run(20, "data", "fetch", "cifar10", "--data", dir, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "already present"), "no download when present: %s", r.out);
    tcli_free(&r);
    char *empty = tcli_path(dir, "empty");
    r = tcli_run(20, "data", "fetch", "cifar10", "--data", empty, "--url", "http://127.0.0.1:1/cifar.tgz", NULL);
    cr_assert_eq(r.code, 1, "network failure is a runtime failure: %s", r.err);
    cr_assert(strstr(r.err, "http://127.0.0.1:1/cifar.tgz"), "names the URL: %s", r.err);
    cr_assert_null(strchr(r.out, '\r'));
    tcli_free(&r);
    r = tcli_run(20, "data", "fetch", "imagefolder", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "expected cifar10, cifar100, mnist or fashion-mnist, found 'imagefolder'"), "%s", r.err);
    tcli_free(&r);
    free(empty);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_info, predict_argument_errors)
{
    tcli_result r = tcli_run(10, "predict", "x.png", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--ckpt"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "predict", "--ckpt", "/nonexistent/last.ckpt", "x.png", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent/last.ckpt"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "predict", "--ckpt", "a.ckpt", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "no IMAGE"), "%s", r.err);
    tcli_free(&r);
}

/* `nnc info --topology`: a synthetic machine (HWLOC_SYNTHETIC reaches hwloc in the child) in
 * text and JSON, the oversubscription warning, bad values. */
Test(tools_cli_info, topology)
{
    setenv("HWLOC_SYNTHETIC", "pack:2 numa:1 core:8 pu:2", 1);
    tcli_result r = tcli_run(10, "info", "--topology", "--workers", "4", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "machine: 2 packages, 2 NUMA nodes, 16 cores, 32 hardware threads"), "%s", r.out);
    cr_assert(strstr(r.out, "plan: 4 workers x 4 threads, placement auto"), "%s", r.out);
    cr_assert(strstr(r.out, "worker 1: node 1, cpus 16,18,20,22"), "%s", r.out);
    tcli_free(&r);
    r = tcli_run(10, "info", "--topology", "--workers", "2", "--threads-per-worker", "8", "--json", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "{\"cores\": 16, \"nodes\": 2,"), "%s", r.out);
    cr_assert(strstr(r.out, "{\"worker\": 0, \"node\": 0, \"cpus\": [0, 2, 4, 6, 8, 10, 12, 14]}"), "%s", r.out);
    cr_assert(strstr(r.out, "{\"worker\": 1, \"node\": 1, \"cpus\": [16, 18,"), "%s", r.out);
    tcli_free(&r);
    /* one worker with one thread: its entry is there (the JSON buffer fits the header too) */
    r = tcli_run(10, "info", "--topology", "--workers", "1", "--threads-per-worker", "1", "--json", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\"workers\": [{\"worker\": 0, \"node\": 0, \"cpus\": [0]}]}"), "%s", r.out);
    tcli_free(&r);
    r = tcli_run(10, "info", "--topology", "--workers", "20", "--threads-per-worker", "1", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.err, "20 kernel threads on 16 cores: oversubscribed"), "%s", r.err);
    cr_assert(strstr(r.out, "(not pinned)"), "%s", r.out);
    tcli_free(&r);
    r = tcli_run(10, "info", "--topology", "--placement", "numa", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--placement: expected auto or none"), "%s", r.err);
    tcli_free(&r);
    unsetenv("HWLOC_SYNTHETIC");
}
