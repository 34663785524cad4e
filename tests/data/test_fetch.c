/* tests/data/test_fetch.c - nnc_dataset_fetch against the local test HTTP server: success
 * (then loads), redirect, wrong checksum, interrupted transfer, 404, already present, stale
 * temp folders, incomplete existing folder; the tar extractor's safety checks. Generated
 * CIFAR files use 20 records per 10000 (nnc__cifar_test_scale) to stay small. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "nn/nnc.h"
#include "tests/common/datagen.h"
#include "tests/common/httpd.h"

static char tmp[64], dir[128];
static uint8_t *tgz;
static size_t tgz_len;
static char tgz_md5[33];

static void setup(void)
{
    unsetenv("http_proxy"), unsetenv("HTTP_PROXY"), unsetenv("all_proxy"), unsetenv("ALL_PROXY");
    dg_tmpdir(tmp, "fetch");
    snprintf(dir, sizeof dir, "%s/data", tmp);
    nnc__cifar_test_scale(20);
    tgz = dg_cifar_tgz(0, 20, &tgz_len);
    nnc__md5 m;
    nnc__md5_init(&m);
    nnc__md5_update(&m, tgz, tgz_len);
    nnc__md5_final(&m, tgz_md5);
}

static void teardown(void)
{
    nnc__rmtree(tmp);
    free(tgz);
}

TestSuite(data_fetch, .init = setup, .fini = teardown, .timeout = 30);

/* Names in dir (excluding . and ..), for "nothing left behind" checks. */
static int entries(const char *d, char *first, size_t n)
{
    DIR *dp = opendir(d);
    if (!dp) return 0;
    struct dirent *e;
    int k = 0;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (k++ == 0 && first) snprintf(first, n, "%s", e->d_name);
        }
    closedir(dp);
    return k;
}

typedef struct prog {
    double last_done, last_total;
    int calls;
} prog;

static void on_progress(double done, double total, void *ud)
{
    prog *p = ud;
    p->last_done = done, p->last_total = total, p->calls++;
}

Test(data_fetch, success_then_loads_and_second_fetch_is_a_no_op)
{
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_FULL);
    cr_assert_not_null(h);
    char url[128];
    httpd_url(h, "/redirect", url, sizeof url); /* also checks that redirects are followed */
    prog p = {0};
    nnc_fetch_config cfg = {url, tgz_md5, on_progress, &p};
    cr_assert_eq(nnc_dataset_present("cifar10", dir), 0);
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(httpd_requests(h), 2, "302 + the body");
    cr_assert_gt(p.calls, 0);
    cr_assert_eq(p.last_done, (double)tgz_len);
    cr_assert_eq(p.last_total, (double)tgz_len);
    cr_assert_eq(nnc_dataset_present("cifar10", dir), 1);
    char first[256];
    cr_assert_eq(entries(dir, first, sizeof first), 1, "only the dataset folder remains");
    cr_assert_str_eq(first, "cifar-10-batches-bin");
    nnc_dataset *d;
    cr_assert_eq(nnc_dataset_load("cifar10", dir, 1, 0, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 100);
    cr_assert_eq(d->labels[23], 3 % 10, "record 3 of data_batch_2");
    cr_assert_eq(d->images[23 * 3072 + 1500], dg_pixel(3, 1500));
    cr_assert_str_eq(d->class_names[1], "car", "names come from batches.meta.txt");
    nnc_dataset_free(d);
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_OK);
    cr_assert_eq(httpd_requests(h), 2, "already present: no request");
    httpd_stop(h);
}

Test(data_fetch, wrong_checksum_leaves_nothing)
{
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_FULL);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    nnc_fetch_config cfg = {url, "0123456789abcdef0123456789abcdef", NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_ECHECKSUM);
    const char *m = nnc_error_message();
    cr_assert(strstr(m, "expected 0123456789abcdef0123456789abcdef") && strstr(m, tgz_md5) &&
                  strstr(m, url),
              "%s", m);
    cr_assert_eq(entries(dir, NULL, 0), 0, "nothing left behind");
    struct stat st;
    cr_assert_neq(stat(dir, &st), 0, "the data folder fetch created is removed again");
    cr_assert_eq(nnc_dataset_present("cifar10", dir), 0);
    httpd_stop(h);
}

Test(data_fetch, interrupted_transfer_is_a_network_error)
{
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_TRUNCATE);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    nnc_fetch_config cfg = {url, tgz_md5, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_ENET);
    const char *m = nnc_error_message();
    cr_assert(strstr(m, url) && strstr(m, "transfer closed"), "%s", m);
    cr_assert_eq(entries(dir, NULL, 0), 0);
    cr_assert_eq(nnc_dataset_present("cifar10", dir), 0);
    httpd_stop(h);
}

Test(data_fetch, http_404_is_a_network_error)
{
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_404);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    nnc_fetch_config cfg = {url, tgz_md5, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_ENET);
    cr_assert(strstr(nnc_error_message(), "404") && strstr(nnc_error_message(), url), "%s",
              nnc_error_message());
    cr_assert_eq(entries(dir, NULL, 0), 0);
    httpd_stop(h);
}

Test(data_fetch, connection_refused_names_url)
{
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_FULL);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    httpd_stop(h); /* nothing listens on that port any more */
    nnc_fetch_config cfg = {url, tgz_md5, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_ENET);
    cr_assert(strstr(nnc_error_message(), url), "%s", nnc_error_message());
}

Test(data_fetch, stale_temp_removed_and_incomplete_folder_reported)
{
    char p[256];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/.nnc-fetch-abc123", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/.nnc-fetch-abc123/archive.tar.gz", dir);
    dg_write_file(p, "xx", 2);
    httpd *h = httpd_start(tgz, tgz_len, HTTPD_FULL);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    nnc_fetch_config cfg = {url, tgz_md5, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(entries(dir, NULL, 0), 1, "stale temp folder removed");
    snprintf(p, sizeof p, "%s/cifar-10-batches-bin/data_batch_3.bin", dir);
    truncate(p, 1000);
    cr_assert_eq(nnc_dataset_present("cifar10", dir), 0, "a short file makes the set incomplete");
    int s = nnc_dataset_fetch("cifar10", dir, &cfg);
    cr_assert_neq(s, NNC_OK);
    cr_assert(strstr(nnc_error_message(), "exists but is incomplete") &&
                  strstr(nnc_error_message(), "data_batch_3.bin"),
              "%s", nnc_error_message());
    cr_assert_eq(nnc_dataset_fetch("imagefolder", dir, NULL), NNC_EUNSUPPORTED);
    cr_assert(strstr(nnc_error_message(), "mnist"), "%s", nnc_error_message());
    cr_assert_eq(nnc_dataset_present("mnist", dir), 0);
    /* mnist from a mirror serving the wrong files: the published MD5 refuses them */
    char base[128];
    httpd_url(h, "/", base, sizeof base);
    nnc_fetch_config mc = {base, NULL, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("mnist", dir, &mc), NNC_ECHECKSUM, "%s", nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "f68b3c2dcbeaaa9fbdd348bbdeb94873"), "%s", nnc_error_message());
    cr_assert_eq(nnc_dataset_present("mnist", dir), 0);
    struct stat fm;
    if (stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &fm) == 0) {
        cr_assert_eq(nnc_dataset_present("fashion-mnist", NULL), 1);
        cr_assert_eq(nnc_dataset_fetch("fashion-mnist", NULL, NULL), NNC_OK, "installed: no-op");
    }
    httpd_stop(h);
}

Test(data_fetch, archive_without_the_dataset_is_rejected)
{
    dg_buf b = {0};
    dg_tar_add(&b, "cifar-10-batches-bin/readme.html", '0', "hi", 2);
    dg_tar_end(&b);
    size_t n;
    uint8_t *gz = dg_gzip(b.p, b.n, &n);
    char md5[33];
    nnc__md5 m;
    nnc__md5_init(&m), nnc__md5_update(&m, gz, n), nnc__md5_final(&m, md5);
    httpd *h = httpd_start(gz, n, HTTPD_FULL);
    char url[128];
    httpd_url(h, "/data", url, sizeof url);
    nnc_fetch_config cfg = {url, md5, NULL, NULL};
    cr_assert_eq(nnc_dataset_fetch("cifar10", dir, &cfg), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "not a complete cifar10") &&
                  strstr(nnc_error_message(), "data_batch_1.bin"),
              "%s", nnc_error_message());
    cr_assert_eq(entries(dir, NULL, 0), 0);
    httpd_stop(h);
    free(gz), free(b.p);
}

static int untar_bytes(dg_buf *b, const char *dest)
{
    size_t n;
    uint8_t *gz = dg_gzip(b->p, b->n, &n);
    char p[256];
    snprintf(p, sizeof p, "%s/a.tgz", tmp);
    dg_write_file(p, gz, n);
    free(gz);
    mkdir(dest, 0755);
    return nnc__untar_gz(p, dest);
}

Test(data_fetch, untar_rejects_traversal_links_and_truncation)
{
    char dest[128], p[256];
    snprintf(dest, sizeof dest, "%s/x", tmp);
    struct stat st;
    const char *bad[] = {"../evil", "a/../../evil", "/tmp/evil_abs"};
    for (int i = 0; i < 3; i++) {
        dg_buf b = {0};
        dg_tar_add(&b, bad[i], '0', "boom", 4);
        dg_tar_end(&b);
        cr_assert_eq(untar_bytes(&b, dest), NNC_EFORMAT);
        cr_assert(strstr(nnc_error_message(), "unsafe entry name"), "%s", nnc_error_message());
        free(b.p);
    }
    snprintf(p, sizeof p, "%s/evil", tmp);
    cr_assert_neq(stat(p, &st), 0, "nothing written outside dest");
    dg_buf b = {0};
    dg_tar_add(&b, "link", '2', NULL, 0);
    dg_tar_end(&b);
    cr_assert_eq(untar_bytes(&b, dest), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "unsupported type '2'"), "%s", nnc_error_message());
    b.n = 0;
    dg_tar_add(&b, "dir/file.bin", '0', "0123456789", 10);
    b.p[148] ^= 1; /* corrupt the header checksum */
    cr_assert_eq(untar_bytes(&b, dest), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "bad tar header checksum at byte offset 0"), "%s",
              nnc_error_message());
    b.n = 0;
    static uint8_t big[3000];
    dg_tar_add(&b, "dir/file.bin", '0', big, sizeof big);
    b.n = 512 + 1000; /* cut inside the data */
    cr_assert_eq(untar_bytes(&b, dest), NNC_EFORMAT);
    cr_assert(
        strstr(nnc_error_message(), "entry 'dir/file.bin' ends at byte offset 1512, expected 3000"),
        "%s", nnc_error_message());
    b.n = 0;
    dg_tar_add(&b, "./ok/f.txt", '0', "hello", 5);
    dg_tar_end(&b);
    cr_assert_eq(untar_bytes(&b, dest), NNC_OK, "%s", nnc_error_message());
    snprintf(p, sizeof p, "%s/ok/f.txt", dest);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_size, 5);
    free(b.p);
}

/* Long names written by Python's tarfile: GNU 'L' records and pax path= records. */
Test(data_fetch, untar_long_names_gnu_and_pax)
{
    const char *arch[2] = {"tests/fuzz/corpus/untar/gnu_longname.tar",
                           "tests/fuzz/corpus/untar/pax.tar"};
    char want[2][256], dest[128], p[512];
    memset(want, 0, sizeof want);
    memset(want[0], 'l', 150), strcat(want[0], "/f.txt");
    memset(want[1], 'x', 120);
    const long size[2] = {5, 3};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(arch[k], "rb");
        cr_assert_not_null(f, "run from the repository root");
        dg_buf b = {0};
        uint8_t chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) dg_append(&b, chunk, n);
        fclose(f);
        snprintf(dest, sizeof dest, "%s/x%d", tmp, k);
        cr_assert_eq(untar_bytes(&b, dest), NNC_OK, "%s: %s", arch[k], nnc_error_message());
        snprintf(p, sizeof p, "%s/%s", dest, want[k]);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0, "%s: %s missing", arch[k], want[k]);
        cr_assert_eq(st.st_size, size[k]);
        free(b.p);
    }
}
