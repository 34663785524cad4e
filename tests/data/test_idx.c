/* tests/data/test_idx.c - MNIST/Fashion-MNIST IDX loader: Debian's Fashion-MNIST, raw and
 * gzipped generated files, and every validation error (magic, dims, counts, truncation,
 * labels, missing paths). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "nn/nnc.h"

static char tmp[64];

static void mktmp(void)
{
    strcpy(tmp, "/tmp/nnc_idx_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void cleanup(void) { nnc__rmtree(tmp); }

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

/* Write an IDX pair (n images of r x c, labels i % 10) as raw or gz files; returns paths. */
static void write_pair(int n, int r, int c, int gz, char *ip, char *lp, uint32_t img_magic,
                       int label_count, long cut)
{
    size_t isz = 16 + (size_t)n * r * c, lsz = 8 + (size_t)label_count;
    uint8_t *ib = malloc(isz), *lb = malloc(lsz);
    put32(ib, img_magic), put32(ib + 4, n), put32(ib + 8, r), put32(ib + 12, c);
    for (size_t i = 16; i < isz; i++) ib[i] = (uint8_t)(i * 31);
    put32(lb, 0x801), put32(lb + 4, label_count);
    for (int i = 0; i < label_count; i++) lb[8 + i] = i % 10;
    if (cut > 0) isz -= cut;
    sprintf(ip, "%s/img%s", tmp, gz ? ".gz" : "");
    sprintf(lp, "%s/lbl%s", tmp, gz ? ".gz" : "");
    if (gz) {
        gzFile g = gzopen(ip, "wb1");
        gzwrite(g, ib, isz), gzclose(g);
        g = gzopen(lp, "wb1");
        gzwrite(g, lb, lsz), gzclose(g);
    } else {
        FILE *f = fopen(ip, "wb");
        fwrite(ib, 1, isz, f), fclose(f);
        f = fopen(lp, "wb");
        fwrite(lb, 1, lsz, f), fclose(f);
    }
    free(ib), free(lb);
}

TestSuite(data_idx, .init = mktmp, .fini = cleanup);

Test(data_idx, fashion_mnist_from_debian)
{
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("dataset-fashion-mnist not installed");
    nnc_dataset *d;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(nnc_dataset_load("fashion-mnist", NULL, 1, 0, &d), NNC_OK, "%s",
                 nnc_error_message());
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_log_info("fashion-mnist train load: %.3f s",
                (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec));
    cr_assert_eq(d->n, 60000);
    cr_assert_eq(d->c, 1);
    cr_assert_eq(d->h * d->w, 784);
    cr_assert_eq(d->num_classes, 10);
    cr_assert_str_eq(d->class_names[9], "Ankle boot");
    cr_assert_float_eq(d->mean[0], 0.2860f, 1e-7);
    cr_assert_float_eq(d->std[0], 0.3530f, 1e-7);
    int counts[10] = {0};
    double sum = 0;
    for (int i = 0; i < d->n; i++) counts[d->labels[i]]++;
    for (size_t i = 0; i < (size_t)d->n * 784; i++) sum += d->images[i];
    for (int k = 0; k < 10; k++) cr_assert_eq(counts[k], 6000, "class %d count", k);
    cr_assert_float_eq(sum / (d->n * 784.0) / 255.0, 0.2860, 5e-4, "published mean");
    nnc_dataset_free(d);
    cr_assert_eq(nnc_dataset_load("fashion-mnist", NULL, 0, 100, &d), NNC_OK);
    cr_assert_eq(d->n, 100, "limit keeps the first images");
    nnc_dataset_free(d);
}

Test(data_idx, raw_and_gzip_round_trip)
{
    char ip[128], lp[128];
    for (int gz = 0; gz < 2; gz++) {
        write_pair(25, 5, 7, gz, ip, lp, 0x803, 25, 0);
        nnc_dataset *d;
        cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_OK, "%s", nnc_error_message());
        cr_assert_eq(d->n, 25);
        cr_assert_eq(d->h * 10 + d->w, 57);
        cr_assert_eq(d->images[3 * 35 + 4], (uint8_t)((16 + 3 * 35 + 4) * 31));
        cr_assert_eq(d->labels[13], 3);
        nnc_dataset_free(d);
    }
}

Test(data_idx, validation_errors)
{
    char ip[128], lp[128];
    nnc_dataset *d;
    write_pair(10, 4, 4, 1, ip, lp, 0x802, 10, 0);
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_EFORMAT);
    cr_assert(
        strstr(nnc_error_message(), "bad magic 0x00000802 at byte offset 0, expected 0x00000803"),
        "%s", nnc_error_message());
    write_pair(10, 4, 4, 0, ip, lp, 0x803, 9, 0);
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "9 labels but") &&
                  strstr(nnc_error_message(), "has 10 images"),
              "%s", nnc_error_message());
    write_pair(10, 4, 4, 1, ip, lp, 0x803, 10, 20);
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "truncated: expected 160 bytes") &&
                  strstr(nnc_error_message(), "ends at byte offset 156"),
              "%s", nnc_error_message());
    write_pair(10, 0, 4, 0, ip, lp, 0x803, 10, 0);
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "rows 0 at byte offset 8"), "%s", nnc_error_message());
    write_pair(12, 4, 4, 0, ip, lp, 0x803, 12, 0);
    FILE *f = fopen(lp, "r+b");
    fseek(f, 8 + 11, SEEK_SET), fputc(200, f), fclose(f);
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_EFORMAT);
    cr_assert(
        strstr(nnc_error_message(), "label 200 of item 11 (byte offset 19) out of range [0, 10)"),
        "%s", nnc_error_message());
    char missing[160];
    sprintf(missing, "%s/nope", tmp);
    cr_assert_eq(nnc_idx_load(missing, lp, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), missing) &&
              strstr(nnc_error_message(), "No such file or directory"));
    cr_assert_eq(nnc_idx_load(tmp, lp, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "Is a directory"), "%s", nnc_error_message());
    cr_assert_eq(nnc_dataset_load("mnist", tmp, 1, 0, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "train-images-idx3-ubyte"), "%s", nnc_error_message());
    cr_assert_eq(nnc_dataset_load("imagenet", tmp, 1, 0, &d), NNC_EINVAL);
}

/* Header claims 1M images (784 MB, under the 1 GiB cap) but the data stops: memory use stays
 * bounded. */
Test(data_idx, lying_header_does_not_allocate_declared_size)
{
    uint8_t img[16 + 100], lbl[8];
    put32(img, 0x803), put32(img + 4, 1000000), put32(img + 8, 28), put32(img + 12, 28);
    memset(img + 16, 1, 100);
    put32(lbl, 0x801), put32(lbl + 4, 1000000);
    nnc__mem_src mi = {img, sizeof img, 0}, ml = {lbl, sizeof lbl, 0};
    nnc__reader ri = {nnc__mem_read, NULL, &mi}, rl = {nnc__mem_read, NULL, &ml};
    nnc_dataset *d;
    int64_t live = nnc_alloc_live_bytes();
    cr_assert_eq(nnc__idx_parse("img", &ri, "lbl", &rl, "mnist", &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "ends at byte offset 116"), "%s", nnc_error_message());
    cr_assert_eq(nnc_alloc_live_bytes(), live);
}
