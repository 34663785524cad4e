/* tests/data/test_image.c - image files and image-folder datasets: formats,
 * resizing, 1x1 and 4096x4096 images, the dimension cap checked before decoding, and
 * the documented policy (empty class folder: error; zero-byte / non-image files: skipped and
 * counted in one warning). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "nn/nnc.h"
#include "tests/common/datagen.h"

#include "tests/common/stb_write.h"

static char tmp[64];
static void setup(void) { dg_tmpdir(tmp, "img"); }
static void teardown(void) { nnc__rmtree(tmp); }
TestSuite(data_image, .init = setup, .fini = teardown, .timeout = 30);

static void mkdirf(const char *fmt, const char *a)
{
    char p[256];
    snprintf(p, sizeof p, fmt, tmp, a);
    mkdir(p, 0755);
}

/* Binary PNM (P5 grey / P6 rgb) of w x h with pixel(x, y, c) = fill or a gradient. */
static void write_pnm(const char *path, int w, int h, int c, int fill)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fprintf(f, "P%d\n%d %d\n255\n", c == 1 ? 5 : 6, w, h);
    size_t n = (size_t)w * h * c;
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = fill >= 0 ? (uint8_t)fill : (uint8_t)(i * 7);
    fwrite(b, 1, n, f);
    fclose(f);
    free(b);
}

static char logged[1024];
static void capture(nnc_log_level lv, const char *msg, void *ud)
{
    (void)lv, (void)ud;
    snprintf(logged, sizeof logged, "%s", msg);
}

Test(data_image, formats_resize_and_one_pixel_images)
{
    char p[256];
    mkdirf("%s/%s", "dog"), mkdirf("%s/%s", "cat");
    uint8_t rgb[4 * 4 * 3];
    for (int i = 0; i < 16; i++) rgb[3 * i] = 10, rgb[3 * i + 1] = 20, rgb[3 * i + 2] = 30;
    snprintf(p, sizeof p, "%s/cat/a.png", tmp);
    cr_assert(stbi_write_png(p, 4, 4, 3, rgb, 12));
    snprintf(p, sizeof p, "%s/cat/b.bmp", tmp);
    cr_assert(stbi_write_bmp(p, 1, 1, 3, rgb)); /* 1x1 */
    snprintf(p, sizeof p, "%s/dog/c.ppm", tmp);
    write_pnm(p, 8, 8, 3, -1); /* exact size: copied unchanged */
    snprintf(p, sizeof p, "%s/dog/d.pgm", tmp);
    write_pnm(p, 3, 5, 1, 77); /* grey, upscaled, replicated to 3 channels */
    snprintf(p, sizeof p, "%s/dog/.hidden", tmp);
    dg_write_file(p, "x", 1);
    nnc_imagefolder_config cfg = {8, 3, 64};
    nnc_dataset *d;
    logged[0] = 0;
    nnc_set_log_hook(capture, NULL);
    cr_assert_eq(nnc_imagefolder_load(tmp, &cfg, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_str_empty(logged, "hidden files are ignored silently: %s", logged);
    cr_assert_eq(d->n, 4);
    cr_assert_eq(d->num_classes, 2);
    cr_assert_str_eq(d->class_names[0], "cat");
    cr_assert_str_eq(d->class_names[1], "dog");
    int want_label[4] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) cr_assert_eq(d->labels[i], want_label[i]);
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 64; k++)
                cr_assert_eq(d->images[i * 192 + c * 64 + k], 10 * (c + 1));
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 64; k++) {
            cr_assert_eq(d->images[2 * 192 + c * 64 + k], (uint8_t)((k * 3 + c) * 7), "HWC -> CHW");
            cr_assert_eq(d->images[3 * 192 + c * 64 + k], 77);
        }
    nnc_dataset_free(d);
    uint8_t out[64];
    snprintf(p, sizeof p, "%s/dog/c.ppm", tmp);
    cr_assert_eq(nnc_image_load(p, 1, 8, 64, out), NNC_OK);
}

Test(data_image, skip_policy_counts_empty_and_non_image_files)
{
    char p[256];
    mkdirf("%s/%s", "a"), mkdirf("%s/%s", "b");
    snprintf(p, sizeof p, "%s/a/good.ppm", tmp);
    write_pnm(p, 2, 2, 3, 5);
    snprintf(p, sizeof p, "%s/a/empty.png", tmp);
    dg_write_file(p, "", 0);
    snprintf(p, sizeof p, "%s/b/notes.jpg", tmp);
    dg_write_file(p, "hello, not a jpeg", 17);
    {
        uint8_t px[16 * 16 * 3];
        for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 13);
        int len;
        unsigned char *png = tw_png_to_mem(px, 48, 16, 16, 3, &len);
        snprintf(p, sizeof p, "%s/b/cut.png", tmp);
        dg_write_file(p, png, (size_t)len / 2); /* valid header, data cut short */
        tw_free(png);
    }
    snprintf(p, sizeof p, "%s/b/good.pgm", tmp);
    write_pnm(p, 2, 2, 1, 9);
    snprintf(p, sizeof p, "%s/b/short.ppm", tmp);
    dg_write_file(p, "P6\n# c\n4 4\n255\nabc", 18); /* PNM header, pixel data cut short */
    logged[0] = 0;
    nnc_set_log_hook(capture, NULL);
    nnc_dataset *d;
    cr_assert_eq(nnc_imagefolder_load(tmp, NULL, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 2);
    cr_assert_eq(d->h, 32, "default size 32");
    cr_assert(strstr(logged, "skipped 4 of 6 files (1 empty, 1 not images, 2 undecodable)") &&
                  strstr(logged, "first: "),
              "%s", logged);
    nnc_dataset_free(d);
}

Test(data_image, empty_class_folder_is_an_error)
{
    char p[256];
    mkdirf("%s/%s", "full"), mkdirf("%s/%s", "empty");
    snprintf(p, sizeof p, "%s/full/x.ppm", tmp);
    write_pnm(p, 2, 2, 3, 1);
    nnc_dataset *d;
    cr_assert_eq(nnc_imagefolder_load(tmp, NULL, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "class folder 'empty' is empty"), "%s",
              nnc_error_message());
    snprintf(p, sizeof p, "%s/empty/junk.txt", tmp);
    dg_write_file(p, "junk", 4);
    cr_assert_eq(nnc_imagefolder_load(tmp, NULL, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "class folder 'empty' has no decodable image"), "%s",
              nnc_error_message());
    char sub[128];
    snprintf(sub, sizeof sub, "%s/full", tmp);
    cr_assert_eq(nnc_imagefolder_load(sub, NULL, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "no class sub-folders"), "%s", nnc_error_message());
}

static size_t max_request;
static void *spy_alloc(size_t size, size_t align, void *ud)
{
    (void)ud;
    if (size > max_request) max_request = size;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}
static void spy_free(void *p, void *ud) { (void)ud, free(p); }

Test(data_image, dimension_cap_checked_before_decoding)
{
    nnc_allocator spy = {spy_alloc, spy_free, NULL};
    nnc_set_allocator(&spy); /* every library and stb_image allocation is seen */
    char p[256];
    mkdirf("%s/%s", "c");
    snprintf(p, sizeof p, "%s/c/huge.pgm", tmp);
    dg_write_file(p, "P5\n50000 40000\n255\n", 19); /* header only: 2 GB if decoded */
    nnc_dataset *d;
    int64_t live = nnc_alloc_live_bytes();
    cr_assert_eq(nnc_imagefolder_load(tmp, NULL, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(),
                     "huge.pgm: image is 50000x40000, above the 4096-pixel max_dim cap"),
              "%s", nnc_error_message());
    cr_assert_eq(nnc_alloc_live_bytes(), live);
    cr_assert_lt(max_request, 1u << 20, "largest allocation %zu bytes: nothing sized by the header",
                 max_request);
    uint8_t out[3 * 32 * 32];
    cr_assert_eq(nnc_image_load(p, 3, 32, 4096, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "max_dim"));
    cr_assert_lt(max_request, 1u << 20);
    nnc_set_allocator(NULL);
}

Test(data_image, image_4096_square_at_the_cap)
{
    char p[256];
    mkdirf("%s/%s", "c");
    snprintf(p, sizeof p, "%s/c/big.pgm", tmp);
    write_pnm(p, 4096, 4096, 1, 200);
    uint8_t out[32 * 32];
    cr_assert_eq(nnc_image_load(p, 1, 32, 4096, out), NNC_OK, "%s", nnc_error_message());
    for (int i = 0; i < 1024; i++) cr_assert_eq(out[i], 200);
    cr_assert_eq(nnc_image_load(p, 1, 32, 4095, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "4096x4096, above the 4095-pixel max_dim cap"), "%s",
              nnc_error_message());
}

Test(data_image, image_load_errors)
{
    char p[256];
    uint8_t out[3 * 4 * 4];
    snprintf(p, sizeof p, "%s/missing.png", tmp);
    cr_assert_eq(nnc_image_load(p, 3, 4, 64, out), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "missing.png: No such file or directory"), "%s",
              nnc_error_message());
    cr_assert_eq(nnc_image_load(tmp, 3, 4, 64, out), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "Is a directory"));
    snprintf(p, sizeof p, "%s/t.txt", tmp);
    dg_write_file(p, "text", 4);
    cr_assert_eq(nnc_image_load(p, 3, 4, 64, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "not a PNG/JPEG/BMP/PPM/PGM image"), "%s",
              nnc_error_message());
    cr_assert_eq(nnc_image_load(p, 2, 4, 64, out), NNC_EINVAL);
}

Test(data_image, dataset_splits_must_share_classes)
{
    char p[256];
    mkdirf("%s/%s", "train"), mkdirf("%s/%s", "test");
    mkdirf("%s/train/%s", "x"), mkdirf("%s/test/%s", "x"), mkdirf("%s/train/%s", "y"),
        mkdirf("%s/test/%s", "z");
    const char *files[] = {"train/x/1.ppm", "train/y/1.ppm", "test/x/1.ppm", "test/z/1.ppm"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, files[i]);
        write_pnm(p, 3, 3, 3, i);
    }
    nnc_dataset *d;
    cr_assert_eq(nnc_dataset_load("imagefolder", tmp, 1, 0, &d), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "class 1 is 'y'") && strstr(nnc_error_message(), "'z'"),
              "%s", nnc_error_message());
    snprintf(p, sizeof p, "%s/test/z", tmp);
    char q[256];
    snprintf(q, sizeof q, "%s/test/y", tmp);
    rename(p, q);
    cr_assert_eq(nnc_dataset_load("imagefolder", tmp, 0, 0, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 2);
    cr_assert_eq(d->labels[1], 1);
    cr_assert_float_eq(d->mean[0], 0.485f, 1e-7);
    nnc_dataset_free(d);
}
