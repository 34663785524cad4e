/* tests/tools/test_cli_hostile.c - the CLI on hostile inputs: `nnc predict` with a checkpoint of
 * more classes than any fixed table holds, with a FIFO given as the image (refused at once,
 * exit 2) or sitting where dataset.json is looked for. Runs $NNC_BIN as a child process. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/models.h"
#include "nn/checkpoint.h"
#include "tests/common/cli_run.h"

static char *dir;

static void setup(void)
{
    dir = tcli_tmpdir();
    cr_assert(dir);
}

static void teardown(void)
{
    tcli_rmrf(dir);
    free(dir);
}

TestSuite(tools_cli_hostile, .init = setup, .fini = teardown, .timeout = 120);

/* A grey 4x4 "tiny" checkpoint with `classes` classes whose meta/json names them cls0, cls1, ... */
static char *write_ckpt_full(int channels, int classes, int with_meta)
{
    nnc_model_config mc = {.in_channels = channels, .image_size = 4, .num_classes = classes};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 1, &m), 0);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_new(nnc_model_arch(m), &c), 0);
    cr_assert_eq(nnc_ckpt_add_params(c, "", nnc_model_params(m)), 0);
    size_t cap = 256 + (size_t)classes * 16, n = 0;
    char *json = malloc(cap);
    n += (size_t)snprintf(json + n, cap - n, "{\"mean\": [");
    for (int i = 0; i < channels; i++) n += (size_t)snprintf(json + n, cap - n, "%s0.5", i ? "," : "");
    n += (size_t)snprintf(json + n, cap - n, "], \"std\": [");
    for (int i = 0; i < channels; i++) n += (size_t)snprintf(json + n, cap - n, "%s0.25", i ? "," : "");
    n += (size_t)snprintf(json + n, cap - n, "], \"classes\": [");
    for (int i = 0; i < classes; i++)
        n += (size_t)snprintf(json + n, cap - n, "%s\"cls%d\"", i ? "," : "", i);
    n += (size_t)snprintf(json + n, cap - n, "]}");
    cr_assert_lt(n, cap);
    if (with_meta) cr_assert_eq(nnc_ckpt_add_bytes(c, "meta/json", json, n), 0);
    char *p = tcli_path(dir, "many.ckpt");
    cr_assert_eq(nnc_ckpt_save(c, p), 0);
    free(json);
    nnc_ckpt_free(c);
    nnc_model_free(m);
    return p;
}

static char *write_ckpt_meta(int classes, int with_meta) { return write_ckpt_full(1, classes, with_meta); }
static char *write_ckpt(int classes) { return write_ckpt_full(1, classes, 1); }

static char *write_pgm(void)
{
    char *p = tcli_path(dir, "x.pgm");
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    fprintf(f, "P5\n4 4\n255\n");
    for (int i = 0; i < 16; i++) fputc(i * 16, f);
    fclose(f);
    return p;
}

/* 1500 classes (above the 1000 of the old fixed name table): names are shown, no crash. */
Test(tools_cli_hostile, predict_with_more_than_1000_classes)
{
    char *ck = write_ckpt(1500), *img = write_pgm();
    tcli_result r = tcli_run(60, "predict", "--ckpt", ck, img, "--top", "3", NULL);
    cr_assert_eq(r.code, 0, "exit %d\n%s", r.code, r.err);
    cr_assert(strstr(r.out, "  1. cls") && strstr(r.out, "  3. cls"), "%s", r.out);
    tcli_free(&r);
    free(ck), free(img);
}

Test(tools_cli_hostile, predict_with_fifo_image_is_refused)
{
    char *ck = write_ckpt(3), *fifo = tcli_path(dir, "fifo.png");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    tcli_result r = tcli_run(20, "predict", "--ckpt", ck, fifo, NULL);
    cr_assert_eq(r.timed_out, 0, "predict blocked on a FIFO");
    cr_assert_eq(r.code, 2, "exit %d\n%s", r.code, r.err);
    cr_assert(strstr(r.err, fifo) && strstr(r.err, "a FIFO"), "%s", r.err);
    tcli_free(&r);
    free(ck), free(fifo);
}

/* No meta/json in the checkpoint and a FIFO where dataset.json would be: reported, not read
 * (reading would block), and --mean/--std are used. */
Test(tools_cli_hostile, predict_with_fifo_dataset_json_does_not_block)
{
    char *ck = write_ckpt_meta(3, 0), *img = write_pgm(), *fifo = tcli_path(dir, "dataset.json");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    tcli_result r = tcli_run(20, "predict", "--ckpt", ck, img, "--mean", "0.5", "--std", "0.25", NULL);
    cr_assert_eq(r.timed_out, 0, "predict blocked on a FIFO");
    cr_assert_eq(r.code, 0, "exit %d\n%s", r.code, r.err);
    cr_assert(strstr(r.err, "dataset.json") && strstr(r.err, "a FIFO"), "%s", r.err);
    cr_assert(strstr(r.out, "(class "), "%s", r.out);
    tcli_free(&r);
    free(ck), free(img), free(fifo);
}

/* A 4-channel model: its metadata lists 4 means and stds, more than the 3 predict holds. */
Test(tools_cli_hostile, predict_with_four_channel_model_is_refused)
{
    char *ck = write_ckpt_full(4, 3, 1), *img = write_pgm();
    tcli_result r = tcli_run(30, "predict", "--ckpt", ck, img, NULL);
    cr_assert_eq(r.code, 2, "exit %d\n%s", r.code, r.err);
    cr_assert(strstr(r.err, "model takes 4 input channels"), "%s", r.err);
    tcli_free(&r);
    free(ck), free(img);
}
