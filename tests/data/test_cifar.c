/* tests/data/test_cifar.c - CIFAR-10/100 binary loaders: layout and labels of generated files,
 * official sizes, and the error cases: truncation, the wrong-format hint, a label
 * out of range, missing/unreadable/directory paths. Full-size files are sparse
 * (ftruncate), so they cost no disk writes. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "nn/nnc.h"
#include "tests/common/datagen.h"

static char tmp[64];
static void setup(void) { dg_tmpdir(tmp, "cifar"); }
static void teardown(void) { nnc__rmtree(tmp); }
TestSuite(data_cifar, .init = setup, .fini = teardown, .timeout = 30);

/* A sparse file of `size` bytes (all zero: label 0, black pixels). */
static void sparse(const char *path, long long size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, size), 0);
    close(fd);
}

static void poke(const char *path, long long off, uint8_t v)
{
    int fd = open(path, O_WRONLY);
    cr_assert_eq(pwrite(fd, &v, 1, off), 1);
    close(fd);
}

Test(data_cifar, generated_cifar10_layout_labels_and_names)
{
    nnc__cifar_test_scale(20);
    cr_assert_eq(dg_write_cifar_dataset(tmp, 0, 20), 0);
    nnc_dataset *d;
    char sub[128];
    snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", tmp);
    for (int variant = 0; variant < 2; variant++) { /* parent folder and extracted folder */
        cr_assert_eq(nnc_dataset_load("cifar10", variant ? sub : tmp, 1, 0, &d), NNC_OK, "%s",
                     nnc_error_message());
        cr_assert_eq(d->n, 100);
        cr_assert_eq(d->c * 100 + d->h, 332);
        for (int i = 0; i < 100; i += 7) {
            int rec = i % 20;
            cr_assert_eq(d->labels[i], rec % 10);
            cr_assert_eq(d->images[(size_t)i * 3072 + 2048 + 33], dg_pixel(rec, 2048 + 33),
                         "B plane, row 1, col 1");
        }
        cr_assert_str_eq(d->class_names[0], "airplane", "built-in names without batches.meta.txt");
        cr_assert_float_eq(d->mean[1], 0.4822f, 1e-7);
        cr_assert_float_eq(d->std[2], 0.2616f, 1e-7);
        nnc_dataset_free(d);
    }
    cr_assert_eq(nnc_dataset_load("cifar10", tmp, 0, 5, &d), NNC_OK);
    cr_assert_eq(d->n, 5);
    nnc_dataset_free(d);
}

Test(data_cifar, generated_cifar100_uses_fine_labels)
{
    nnc__cifar_test_scale(20);
    cr_assert_eq(dg_write_cifar_dataset(tmp, 1, 20), 0);
    nnc_dataset *d;
    cr_assert_eq(nnc_dataset_load("cifar100", tmp, 1, 0, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 100);
    cr_assert_eq(d->num_classes, 100);
    cr_assert_eq(d->labels[57], 57, "fine label (coarse is 57 %% 20)");
    cr_assert_eq(d->images[57 * 3072 + 5], dg_pixel(57, 5));
    cr_assert_str_eq(d->class_names[99], "worm");
    cr_assert_float_eq(d->mean[0], 0.5071f, 1e-7);
    nnc_dataset_free(d);
}

Test(data_cifar, official_size_test_batch_loads)
{
    char p[128];
    snprintf(p, sizeof p, "%s/test_batch.bin", tmp);
    sparse(p, 30730000);
    poke(p, 9999LL * 3073, 9);
    poke(p, 9999LL * 3073 + 1 + 3071, 200);
    nnc_dataset *d;
    cr_assert_eq(nnc_cifar_load(tmp, 0, 0, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 10000);
    cr_assert_eq(d->labels[9999], 9);
    cr_assert_eq(d->images[9999LL * 3072 + 3071], 200);
    nnc_dataset_free(d);
}

Test(data_cifar, truncated_batch_names_record_and_offset)
{
    char p[128];
    snprintf(p, sizeof p, "%s/data_batch_1.bin", tmp);
    sparse(p, 30730000 - 100);
    nnc_dataset *d;
    cr_assert_eq(nnc_cifar_load(tmp, 0, 1, &d), NNC_EFORMAT);
    const char *m = nnc_error_message();
    cr_assert(strstr(m, p), "names the file: %s", m);
    cr_assert(strstr(m, "expected 30730000 bytes"), "%s", m);
    cr_assert(strstr(m, "actual size 30729900"), "%s", m);
    cr_assert(strstr(m, "record 9999 is incomplete"), "%s", m);
    cr_assert(strstr(m, "byte offset 30729900"), "%s", m);
    cr_assert_null(d);
}

Test(data_cifar, other_format_hint_both_ways)
{
    char p[128];
    nnc_dataset *d;
    snprintf(p, sizeof p, "%s/data_batch_1.bin", tmp);
    sparse(p, 10000LL * 3074); /* a CIFAR-100 test.bin under a CIFAR-10 name */
    cr_assert_eq(nnc_cifar_load(tmp, 0, 1, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "record size 3074 suggests CIFAR-100"), "%s",
              nnc_error_message());
    unlink(p);
    snprintf(p, sizeof p, "%s/test.bin", tmp);
    sparse(p, 10000LL * 3073); /* a CIFAR-10 batch passed as CIFAR-100 */
    cr_assert_eq(nnc_cifar_load(tmp, 1, 0, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "record size 3073 suggests CIFAR-10"), "%s",
              nnc_error_message());
    /* a CIFAR-100 folder given to the CIFAR-10 loader */
    cr_assert_eq(nnc_cifar_load(tmp, 0, 1, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "looks like CIFAR-100"), "%s", nnc_error_message());
}

Test(data_cifar, label_out_of_range_names_record_and_value)
{
    char p[128];
    snprintf(p, sizeof p, "%s/test_batch.bin", tmp);
    sparse(p, 30730000);
    poke(p, 17LL * 3073, 255);
    nnc_dataset *d;
    cr_assert_eq(nnc_cifar_load(tmp, 0, 0, &d), NNC_EFORMAT);
    const char *m = nnc_error_message();
    cr_assert(strstr(m, "record 17 ") && strstr(m, "label byte 255") && strstr(m, "[0, 10)"), "%s",
              m);
    cr_assert(strstr(m, "byte offset 52241"), "%s", m);
    snprintf(p, sizeof p, "%s/test.bin", tmp);
    sparse(p, 30740000);
    poke(p, 17LL * 3074 + 1, 100);
    cr_assert_eq(nnc_cifar_load(tmp, 1, 0, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "record 17 ") &&
                  strstr(nnc_error_message(), "label byte 100 out of range [0, 100)"),
              "%s", nnc_error_message());
}

Test(data_cifar, missing_directory_and_unreadable_paths)
{
    char p[160];
    nnc_dataset *d;
    snprintf(p, sizeof p, "%s/nowhere", tmp);
    cr_assert_eq(nnc_cifar_load(p, 0, 1, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "nowhere/data_batch_1.bin: No such file or directory"),
              "%s", nnc_error_message());
    snprintf(p, sizeof p, "%s/data_batch_1.bin", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/test_batch.bin", tmp);
    sparse(p, 30730000);
    cr_assert_eq(nnc_cifar_load(tmp, 0, 1, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "data_batch_1.bin: Is a directory"), "%s",
              nnc_error_message());
    snprintf(p, sizeof p, "%s/test_batch.bin/x", tmp); /* a file used as a folder */
    cr_assert_eq(nnc_cifar_load(p, 0, 0, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "Not a directory"), "%s", nnc_error_message());
    if (geteuid() == 0) {
        nnc__rmtree(tmp); /* Criterion skips .fini after cr_skip_test */
        cr_skip_test("running as root: permission bits do not stop reads");
    }
    snprintf(p, sizeof p, "%s/test_batch.bin", tmp);
    chmod(p, 0);
    cr_assert_eq(nnc_cifar_load(tmp, 0, 0, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "Permission denied"), "%s", nnc_error_message());
}
