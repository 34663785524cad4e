/* tests/tools/test_cli_files.c - files nnc reads that a user (or another process) names or
 * plants: a FIFO given as a checkpoint or planted as a run folder's summary.json is refused at
 * once instead of blocking, and a run-folder path too long for nnc's buffers is refused rather
 * than truncated into another file's name. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/common/cli_run.h"
#include "tools/cli.h"

static char *work;
static void setup(void) { work = tcli_tmpdir(); }
static void teardown(void)
{
    tcli_rmrf(work);
    free(work);
}

TestSuite(tools_cli_files, .init = setup, .fini = teardown, .timeout = 30);

Test(tools_cli_files, eval_and_predict_refuse_a_fifo_checkpoint)
{
    char *fifo = tcli_path(work, "model.ckpt");
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    tcli_result r = tcli_run(10, "eval", "cifar10", "--ckpt", fifo, NULL);
    cr_assert(!r.timed_out, "eval waited on the FIFO");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "FIFO") && strstr(r.err, fifo), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "predict", "--ckpt", fifo, fifo, NULL);
    cr_assert(!r.timed_out, "predict waited on the FIFO");
    cr_assert_eq(r.code, 2, "%s", r.err);
    tcli_free(&r);
    free(fifo);
}

/* The reader of run-folder files (summary.json, dataset.json, config.json) takes regular files
 * only and bounds their size. */
Test(tools_cli_files, read_file_refuses_fifos_and_devices)
{
    char *fifo = tcli_path(work, "summary.json");
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    cr_assert_null(cli_read_file(fifo, NULL));
    cr_assert_null(cli_read_file("/dev/zero", NULL), "/dev/zero would be read until memory runs out");
    free(fifo);
    char *ok = tcli_path(work, "ok.json");
    FILE *f = fopen(ok, "w");
    fputs("{\"a\": 1}", f);
    fclose(f);
    size_t n = 0;
    char *t = cli_read_file(ok, &n);
    cr_assert(t && n == 8 && !strcmp(t, "{\"a\": 1}"));
    free(t);
    free(ok);
}

Test(tools_cli_files, overlong_run_folder_given_as_ckpt_is_refused)
{
    /* a real folder whose path is longer than the checkpoint path buffer */
    char path[1400];
    snprintf(path, sizeof path, "%s", work);
    while (strlen(path) < 1150) {
        strcat(path, "/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
        cr_assert(mkdir(path, 0755) == 0 || access(path, F_OK) == 0);
    }
    tcli_result r = tcli_run(10, "eval", "cifar10", "--ckpt", path, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "too long"), "%s", r.err);
    tcli_free(&r);
}
