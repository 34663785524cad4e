/* tests/tools/test_cli_data.c - bad data files through the CLI (truncated, wrong format, bad label, missing paths): exit 2 with the file,
 * record, byte offset and expected vs found in the message; `nnc data info` on good files. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/common/cli_run.h"

static char *dir;

static void setup(void)
{
    dir = tcli_tmpdir();
    cr_assert(dir);
    cr_assert_eq(tcli_write_cifar10(dir, 64), 0);
}

static void teardown(void)
{
    tcli_rmrf(dir);
    free(dir);
}

static tcli_result info(void) { return tcli_run(30, "data", "info", "cifar10", "--data", dir, NULL); }

TestSuite(tools_cli_data, .init = setup, .fini = teardown, .timeout = 60);

Test(tools_cli_data, info_on_good_files)
{
    tcli_result r = info();
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "train: 50000 images, 3 x 32 x 32"), "%s", r.out);
    cr_assert(strstr(r.out, "test: 10000 images"), "%s", r.out);
    cr_assert(strstr(r.out, "airplane"), "class names: %s", r.out);
    tcli_free(&r);
}

Test(tools_cli_data, truncated_batch)
{
    char *p = tcli_path(dir, "data_batch_1.bin");
    cr_assert_eq(truncate(p, 30730000 - 100), 0);
    tcli_result r = info();
    cr_assert_eq(r.code, 2, "exit %d, stderr %s", r.code, r.err);
    cr_assert(strstr(r.err, p), "names the file: %s", r.err);
    cr_assert(strstr(r.err, "30730000") && strstr(r.err, "30729900"), "expected vs actual size: %s", r.err);
    cr_assert(strstr(r.err, "record 9999") && strstr(r.err, "offset"), "record and offset: %s", r.err);
    tcli_free(&r);
    free(p);
}

Test(tools_cli_data, cifar100_file_as_cifar10)
{
    char *p = tcli_path(dir, "data_batch_2.bin");
    cr_assert_eq(truncate(p, 10000L * 3074), 0);
    tcli_result r = info();
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "data_batch_2.bin") && strstr(r.err, "record size 3074 suggests CIFAR-100"), "%s", r.err);
    tcli_free(&r);
    free(p);
    /* and a CIFAR-10 folder loaded as cifar100 */
    r = tcli_run(30, "data", "info", "cifar100", "--data", dir, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "CIFAR-10"), "hint: %s", r.err);
    tcli_free(&r);
}

Test(tools_cli_data, label_255_in_record_17)
{
    char *p = tcli_path(dir, "data_batch_1.bin");
    int fd = open(p, O_WRONLY);
    unsigned char b = 255;
    cr_assert_eq(pwrite(fd, &b, 1, 17L * 3073), 1);
    close(fd);
    tcli_result r = info();
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "record 17") && strstr(r.err, "255") && strstr(r.err, "52241"), "%s", r.err);
    tcli_free(&r);
    free(p);
}

Test(tools_cli_data, missing_and_directory_paths)
{
    tcli_result r = tcli_run(30, "data", "info", "cifar10", "--data", "/nonexistent/cifar", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent/cifar") && strstr(r.err, "No such file or directory"), "%s", r.err);
    tcli_free(&r);
    char *p = tcli_path(dir, "test_batch.bin");
    cr_assert_eq(unlink(p), 0);
    cr_assert_eq(mkdir(p, 0755), 0);
    r = info();
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, p) && strstr(r.err, "Is a directory"), "%s", r.err);
    tcli_free(&r);
    rmdir(p);
    free(p);
    r = tcli_run(30, "data", "info", "cifar11", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "cifar11"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(30, "data", "fetch", "imagefolder", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "expected cifar10, cifar100, mnist or fashion-mnist"), "%s", r.err);
    tcli_free(&r);
}
