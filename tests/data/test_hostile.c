/* tests/data/test_hostile.c - hostile inputs to the data loaders: FIFOs given as data files
 * (must be refused at once, never block), gzip bombs behind IDX headers (memory bounded by the
 * checked declaration), tar archives that collide with existing files or carry too many
 * entries, and an image folder holding a FIFO. Tests that used to hang carry a .timeout. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/nnc.h"
#include "tests/common/datagen.h"

static char tmp[64];

static void setup(void) { dg_tmpdir(tmp, "hostile"); }
static void teardown(void) { nnc__rmtree(tmp); }

TestSuite(data_hostile, .init = setup, .fini = teardown);

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void path_of(char *dst, size_t n, const char *name) { snprintf(dst, n, "%s/%s", tmp, name); }

static void make_fifo(const char *p) { cr_assert_eq(mkfifo(p, 0600), 0, "mkfifo %s", p); }

/* A valid IDX pair of n 2x2 images (labels i % 10), raw. */
static void write_idx(const char *ip, const char *lp, int n)
{
    uint8_t ib[16 + 4 * 64], lb[8 + 64];
    cr_assert(n <= 64);
    put32(ib, 0x803), put32(ib + 4, (uint32_t)n), put32(ib + 8, 2), put32(ib + 12, 2);
    memset(ib + 16, 7, (size_t)n * 4);
    put32(lb, 0x801), put32(lb + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) lb[8 + i] = (uint8_t)(i % 10);
    cr_assert_eq(dg_write_file(ip, ib, 16 + (size_t)n * 4), 0);
    cr_assert_eq(dg_write_file(lp, lb, 8 + (size_t)n), 0);
}

Test(data_hostile, fifo_as_idx_file_is_refused, .timeout = 20)
{
    char ip[128], lp[128], fifo[128];
    path_of(ip, sizeof ip, "img"), path_of(lp, sizeof lp, "lbl"), path_of(fifo, sizeof fifo, "fifo");
    write_idx(ip, lp, 3);
    make_fifo(fifo);
    nnc_dataset *d = NULL;
    cr_assert_eq(nnc_idx_load(fifo, lp, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), fifo) && strstr(nnc_error_message(), "a FIFO"), "%s",
              nnc_error_message());
    cr_assert_null(d);
    cr_assert_eq(nnc_idx_load(ip, fifo, &d), NNC_EIO); /* the labels file too */
    cr_assert(strstr(nnc_error_message(), "a FIFO"), "%s", nnc_error_message());
    cr_assert_eq(nnc_idx_load(ip, "/dev/zero", &d), NNC_EIO); /* a device streams forever */
    cr_assert(strstr(nnc_error_message(), "a character device"), "%s", nnc_error_message());
    cr_assert_eq(nnc_idx_load(ip, lp, &d), NNC_OK);
    cr_assert_eq(d->n, 3);
    nnc_dataset_free(d);
}

Test(data_hostile, fifo_as_image_is_refused, .timeout = 20)
{
    char fifo[128];
    path_of(fifo, sizeof fifo, "x.png");
    make_fifo(fifo);
    uint8_t out[3 * 4 * 4];
    cr_assert_eq(nnc_image_load(fifo, 3, 4, 64, out), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), fifo) && strstr(nnc_error_message(), "a FIFO"), "%s",
              nnc_error_message());
}

/* An image folder with a FIFO next to a real image: the FIFO is skipped (counted with the
 * non-images), the image loads. */
Test(data_hostile, fifo_in_image_folder_is_skipped, .timeout = 20)
{
    char p[256];
    snprintf(p, sizeof p, "%s/cls", tmp);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/cls/a.pgm", tmp);
    const char pgm[] = "P5\n2 2\n255\n\x10\x20\x30\x40";
    cr_assert_eq(dg_write_file(p, pgm, sizeof pgm - 1), 0);
    snprintf(p, sizeof p, "%s/cls/b.png", tmp);
    make_fifo(p);
    nnc_imagefolder_config cfg = {2, 1, 64};
    nnc_dataset *d = NULL;
    cr_assert_eq(nnc_imagefolder_load(tmp, &cfg, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 1);
    cr_assert_eq(d->images[0], 0x10);
    nnc_dataset_free(d);
}

/* CIFAR's class-name list is optional; a FIFO under its name must not block the load. */
Test(data_hostile, fifo_as_cifar_class_names_is_ignored, .timeout = 30)
{
    nnc__cifar_test_scale(2);
    cr_assert_eq(dg_write_cifar_dataset(tmp, 0, 2), 0);
    char p[256];
    snprintf(p, sizeof p, "%s/cifar-10-batches-bin/batches.meta.txt", tmp);
    unlink(p);
    make_fifo(p);
    nnc_dataset *d = NULL;
    cr_assert_eq(nnc_cifar_load(tmp, 0, 0, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_str_eq(d->class_names[0], "airplane"); /* the built-in names */
    nnc_dataset_free(d);
    snprintf(p, sizeof p, "%s/cifar-10-batches-bin/test_batch.bin", tmp);
    unlink(p);
    make_fifo(p);
    cr_assert_eq(nnc_cifar_load(tmp, 0, 0, &d), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "a FIFO"), "%s", nnc_error_message());
}

Test(data_hostile, fifo_as_archive_is_refused, .timeout = 20)
{
    char fifo[128], dest[128];
    path_of(fifo, sizeof fifo, "a.tar.gz"), path_of(dest, sizeof dest, "out");
    cr_assert_eq(mkdir(dest, 0755), 0);
    make_fifo(fifo);
    cr_assert_eq(nnc__untar_gz(fifo, dest), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "a FIFO"), "%s", nnc_error_message());
}

/* ---- gzip bomb ---- */

/* Allocation hook that records the largest request and refuses any above 32 MiB, so the test
 * process never grows towards the bomb's decompressed size. */
static size_t max_request, total_requested;
static void *spy_alloc(size_t size, size_t align, void *ud)
{
    (void)ud;
    if (size > max_request) max_request = size;
    total_requested += size;
    if (size > (32u << 20)) return NULL;
    void *p = NULL;
    return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size ? size : 1) ? NULL : p;
}
static void spy_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

/* gzip file: an IDX images header (count x 28 x 28) followed by `zeros` zero bytes. */
static void write_bomb(const char *path, uint32_t count, size_t zeros)
{
    gzFile g = gzopen(path, "wb9");
    cr_assert_not_null(g);
    uint8_t h[16];
    put32(h, 0x803), put32(h + 4, count), put32(h + 8, 28), put32(h + 12, 28);
    cr_assert_eq(gzwrite(g, h, 16), 16);
    static uint8_t z[1 << 20];
    for (size_t left = zeros; left;) {
        unsigned n = left < sizeof z ? (unsigned)left : (unsigned)sizeof z;
        cr_assert_eq(gzwrite(g, z, n), (int)n);
        left -= n;
    }
    cr_assert_eq(gzclose(g), Z_OK);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 128 MiB of zeros behind a small header and behind an absurd one: both are refused with
 * NNC_EFORMAT while reading at most the declared size, and no allocation exceeds it. */
Test(data_hostile, gzip_bomb_idx_is_bounded, .timeout = 60)
{
    char small[128], absurd[128], lp[128], lp2[128];
    path_of(small, sizeof small, "small.gz"), path_of(absurd, sizeof absurd, "absurd.gz");
    path_of(lp, sizeof lp, "lbl"), path_of(lp2, sizeof lp2, "lbl2");
    write_bomb(small, 10, 128u << 20);
    write_bomb(absurd, 100000000, 128u << 20);
    struct stat st;
    cr_assert_eq(stat(small, &st), 0);
    cr_assert_lt(st.st_size, 1 << 20, "the bomb is small on disk");
    uint8_t lb[8 + 10] = {0};
    put32(lb, 0x801), put32(lb + 4, 10);
    cr_assert_eq(dg_write_file(lp, lb, sizeof lb), 0);
    put32(lb + 4, 100000000); /* the absurd header's labels agree with it */
    cr_assert_eq(dg_write_file(lp2, lb, sizeof lb), 0);

    nnc_allocator spy = {spy_alloc, spy_free, NULL};
    nnc_set_allocator(&spy);
    nnc_dataset *d = NULL;
    double t0 = now();
    int s = nnc_idx_load(small, lp, &d);
    double dt_small = now() - t0;
    char msg_small[512];
    snprintf(msg_small, sizeof msg_small, "%s", nnc_error_message());
    size_t req_small = max_request, tot_small = total_requested;
    max_request = total_requested = 0;
    t0 = now();
    int s2 = nnc_idx_load(absurd, lp2, &d);
    double dt_absurd = now() - t0;
    nnc_set_allocator(NULL);

    cr_assert_eq(s, NNC_EFORMAT, "%s", msg_small);
    cr_assert(strstr(msg_small, "unexpected data after byte offset 7856"), "%s", msg_small);
    cr_assert_leq(req_small, 16384, "largest allocation %zu bytes", req_small);
    cr_assert_lt(tot_small, 1u << 20, "allocated %zu bytes in all", tot_small);
    cr_assert_lt(dt_small, 5.0);
    cr_assert_eq(s2, NNC_EFORMAT, "%s", nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "header declares 100000000 images of 28x28") &&
                  strstr(nnc_error_message(), "IDX cap"),
              "%s", nnc_error_message());
    cr_assert_eq(max_request, 0, "allocated %zu bytes for a refused header", max_request);
    cr_assert_lt(dt_absurd, 5.0);
}

/* Image data above the 1 GiB cap is refused from the header alone, before any read. */
Test(data_hostile, idx_declared_size_cap)
{
    uint8_t img[16], lbl[8];
    put32(img, 0x803), put32(img + 4, 70000), put32(img + 8, 128), put32(img + 12, 128);
    put32(lbl, 0x801), put32(lbl + 4, 70000);
    nnc__mem_src mi = {img, sizeof img, 0}, ml = {lbl, sizeof lbl, 0};
    nnc__reader ri = {nnc__mem_read, NULL, &mi}, rl = {nnc__mem_read, NULL, &ml};
    nnc_dataset *d = NULL;
    uint64_t before = nnc_alloc_count();
    cr_assert_eq(nnc__idx_parse("img", &ri, "lbl", &rl, "mnist", &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "1146880000 bytes of pixels"), "%s", nnc_error_message());
    cr_assert_eq(nnc_alloc_count(), before);
}

/* ---- tar ---- */

/* An entry whose path already exists under dest (here: the archive being extracted, as in
 * fetch's temp folder) is an error; the existing file is never truncated or overwritten. */
Test(data_hostile, tar_entry_never_overwrites_existing_file)
{
    dg_buf b = {0};
    dg_tar_add(&b, "keep.txt", '0', "evil", 4);
    dg_tar_end(&b);
    size_t gzlen;
    uint8_t *gz = dg_gzip(b.p, b.n, &gzlen);
    char arch[128], keep[128];
    path_of(arch, sizeof arch, "a.tar.gz"), path_of(keep, sizeof keep, "keep.txt");
    cr_assert_eq(dg_write_file(arch, gz, gzlen), 0);
    cr_assert_eq(dg_write_file(keep, "original", 8), 0);
    cr_assert_eq(nnc__untar_gz(arch, tmp), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "keep.txt") && strstr(nnc_error_message(), "File exists"),
              "%s", nnc_error_message());
    FILE *f = fopen(keep, "rb");
    char got[16] = {0};
    cr_assert_not_null(f);
    cr_assert_eq(fread(got, 1, sizeof got, f), 8);
    fclose(f);
    cr_assert_str_eq(got, "original");
    /* the same name twice in one archive: the second is refused too */
    b.n = 0;
    dg_tar_add(&b, "x/dup", '0', "one", 3);
    dg_tar_add(&b, "x/dup", '0', "two", 3);
    dg_tar_end(&b);
    nnc__mem_src m = {b.p, b.n, 0};
    nnc__reader r = {nnc__mem_read, NULL, &m};
    char dest[128];
    path_of(dest, sizeof dest, "out");
    cr_assert_eq(mkdir(dest, 0755), 0);
    cr_assert_eq(nnc__untar("t.tar", &r, dest), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "dup") && strstr(nnc_error_message(), "File exists"), "%s",
              nnc_error_message());
    free(gz);
    free(b.p);
}

/* 100001 empty entries: over the entry cap (inode exhaustion from a small download). */
Test(data_hostile, tar_entry_count_is_capped, .timeout = 60)
{
    dg_buf b = {0};
    char name[32];
    for (int i = 0; i <= 100000; i++) {
        snprintf(name, sizeof name, "f%d", i);
        dg_tar_add(&b, name, '0', "", 0);
    }
    dg_tar_end(&b);
    nnc__mem_src m = {b.p, b.n, 0};
    nnc__reader r = {nnc__mem_read, NULL, &m};
    cr_assert_eq(nnc__untar("many.tar", &r, NULL), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "more than 100000 entries"), "%s", nnc_error_message());
    free(b.p);
}
