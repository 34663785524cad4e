/* tests/data/test_jpeg.c - JPEG decoding through libjpeg-turbo (data/image_jpeg.c): a committed
 * JPEG with known colours (tests/data/quadrants.jpg: 16x16, quality 95, 4:4:4; quadrants
 * TL (200,30,30), TR (30,200,30), BL (30,30,200), BR (220,220,40)), grey <-> RGB conversion,
 * progressive files, truncated files refused, the dimension cap checked before any allocation,
 * JPEG found by magic bytes, and image folders mixing PNG and JPEG. JPEG is lossy: values are
 * compared within a tolerance. Test JPEGs beyond the committed one are encoded with libjpeg. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>

#include "data/data_internal.h"
#include "nn/nnc.h"
#include "tests/common/datagen.h"

#include "tests/common/stb_write.h"

#define QUAD "tests/data/quadrants.jpg"
static const int quad_rgb[4][3] = {{200, 30, 30}, {30, 200, 30}, {30, 30, 200}, {220, 220, 40}};

static char tmp[64];
static void setup(void) { dg_tmpdir(tmp, "jpg"); }
static void teardown(void) { nnc__rmtree(tmp); }
TestSuite(data_jpeg, .init = setup, .fini = teardown, .timeout = 30);

/* Encode w x h x c pixels (c 1 grey or 3 RGB) as a 4:4:4 JPEG; the caller frees with free(). */
static unsigned char *encode(const uint8_t *px, int w, int h, int c, int progressive,
                             unsigned long *len)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    unsigned char *out = NULL;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    *len = 0;
    jpeg_mem_dest(&ci, &out, len);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 95, TRUE);
    for (int i = 0; i < ci.num_components; i++)
        ci.comp_info[i].h_samp_factor = ci.comp_info[i].v_samp_factor = 1;
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return out;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: run from the repository root", path);
    static uint8_t b[4096];
    *len = fread(b, 1, sizeof b, f);
    fclose(f);
    return b;
}

static void path_in_tmp(char *p, size_t n, const char *name) { snprintf(p, n, "%s/%s", tmp, name); }

static int near(int a, int b, int tol) { return abs(a - b) <= tol; }

/* out is CHW (3, 16, 16) of quadrants.jpg; checks every pixel of every quadrant. */
static void check_quadrants_rgb(const uint8_t *out, int tol)
{
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            for (int c = 0; c < 3; c++) {
                int want = quad_rgb[(y >= 8) * 2 + (x >= 8)][c], got = out[c * 256 + y * 16 + x];
                cr_assert(near(got, want, tol), "pixel (%d,%d) channel %d: %d, expected %d +- %d",
                          x, y, c, got, want, tol);
            }
}

Test(data_jpeg, committed_jpeg_decodes_to_known_colours)
{
    uint8_t out[3 * 16 * 16], grey[16 * 16];
    cr_assert_eq(nnc_image_load(QUAD, 3, 16, 64, out), NNC_OK, "%s", nnc_error_message());
    check_quadrants_rgb(out, 6);
    /* RGB JPEG to 1 channel: libjpeg's luma, Y = 0.299 R + 0.587 G + 0.114 B */
    cr_assert_eq(nnc_image_load(QUAD, 1, 16, 64, grey), NNC_OK, "%s", nnc_error_message());
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            const int *q = quad_rgb[(y >= 8) * 2 + (x >= 8)];
            int want = (int)(0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2] + 0.5);
            cr_assert(near(grey[y * 16 + x], want, 6), "(%d,%d): %d, expected %d", x, y,
                      grey[y * 16 + x], want);
        }
    /* downscaled 16 -> 2: each output pixel is one quadrant's colour */
    uint8_t small[3 * 2 * 2];
    cr_assert_eq(nnc_image_load(QUAD, 3, 2, 64, small), NNC_OK);
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) cr_assert(near(small[c * 4 + k], quad_rgb[k][c], 6));
    /* the fuzz corpus's 9x7 camera-style JPEG (4:2:0) decodes too */
    cr_assert_eq(nnc_image_load("tests/fuzz/corpus/image/small.jpg", 3, 8, 64, out), NNC_OK, "%s",
                 nnc_error_message());
}

Test(data_jpeg, grey_jpeg_to_rgb_and_progressive_rgb)
{
    uint8_t g[24 * 24];
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 24; x++) g[y * 24 + x] = (uint8_t)(40 + 60 * (y / 8) + 20 * (x / 8));
    unsigned long n;
    unsigned char *j = encode(g, 24, 24, 1, 0, &n);
    char p[256];
    path_in_tmp(p, sizeof p, "grey.jpg");
    dg_write_file(p, j, n);
    free(j);
    uint8_t out[3 * 24 * 24];
    cr_assert_eq(nnc_image_load(p, 3, 24, 64, out), NNC_OK, "%s", nnc_error_message());
    for (int i = 0; i < 24 * 24; i++) {
        cr_assert(near(out[i], g[i], 3), "pixel %d: %d, expected %d", i, out[i], g[i]);
        cr_assert_eq(out[i], out[576 + i], "grey replicated to G");
        cr_assert_eq(out[i], out[1152 + i], "grey replicated to B");
    }
    uint8_t rgb[16 * 16 * 3];
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            for (int c = 0; c < 3; c++) rgb[(y * 16 + x) * 3 + c] = (uint8_t)quad_rgb[(y >= 8) * 2 + (x >= 8)][c];
    j = encode(rgb, 16, 16, 3, 1, &n);
    path_in_tmp(p, sizeof p, "prog.jpg");
    dg_write_file(p, j, n);
    free(j);
    cr_assert_eq(nnc_image_load(p, 3, 16, 64, out), NNC_OK, "%s", nnc_error_message());
    check_quadrants_rgb(out, 6);
}

Test(data_jpeg, truncated_jpeg_fails_with_a_clear_message)
{
    size_t len;
    const uint8_t *b = slurp(QUAD, &len);
    char p[256];
    uint8_t out[3 * 16 * 16];
    size_t sos = 0;
    for (size_t i = 2; i + 4 < len && !sos; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xDA) sos = i;
    cr_assert(sos, "SOS marker in " QUAD);
    size_t data = sos + 2 + ((size_t)b[sos + 2] << 8 | b[sos + 3]);
    cr_assert_lt(data + 10, len - 2);
    path_in_tmp(p, sizeof p, "cut.jpg");
    dg_write_file(p, b, data + 10); /* header complete, 10 bytes of scan data */
    cr_assert_eq(nnc_image_load(p, 3, 16, 64, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "cut.jpg: cannot decode 16x16 JPEG (Premature end of "
                                          "JPEG file)"),
              "%s", nnc_error_message());
    path_in_tmp(p, sizeof p, "head.jpg");
    dg_write_file(p, b, 100); /* inside the quantisation tables */
    cr_assert_eq(nnc_image_load(p, 3, 16, 64, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "head.jpg: bad JPEG header ("), "%s",
              nnc_error_message());
    /* magic bytes and then garbage: a JPEG by content, undecodable */
    path_in_tmp(p, sizeof p, "junk.bin");
    dg_write_file(p, "\xff\xd8\xff\x01 not really", 14);
    cr_assert_eq(nnc_image_load(p, 3, 16, 64, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "junk.bin: bad JPEG header ("), "%s",
              nnc_error_message());
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

Test(data_jpeg, header_claiming_5000x5000_rejected_before_allocation)
{
    size_t len;
    uint8_t b[4096];
    const uint8_t *src = slurp(QUAD, &len);
    memcpy(b, src, len);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len && !sof; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xC0) sof = i;
    cr_assert(sof, "SOF0 marker in " QUAD);
    b[sof + 5] = 5000 >> 8, b[sof + 6] = 5000 & 255; /* height */
    b[sof + 7] = 5000 >> 8, b[sof + 8] = 5000 & 255; /* width */
    char p[256];
    path_in_tmp(p, sizeof p, "huge.jpg");
    dg_write_file(p, b, len);
    nnc_allocator spy = {spy_alloc, spy_free, NULL};
    nnc_set_allocator(&spy);
    int64_t live = nnc_alloc_live_bytes();
    uint8_t out[3 * 16 * 16];
    max_request = 0;
    cr_assert_eq(nnc_image_load(p, 3, 16, 4096, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(),
                     "huge.jpg: image is 5000x5000, above the 4096-pixel max_dim cap"),
              "%s", nnc_error_message());
    cr_assert_eq(nnc_alloc_live_bytes(), live);
    cr_assert_lt(max_request, 1u << 20, "largest allocation %zu bytes", max_request);
    /* control: with the cap raised the 75 MB pixel buffer is requested (the spy sees it), then
     * decoding fails on the missing scan data and everything is freed */
    cr_assert_eq(nnc_image_load(p, 3, 16, 8192, out), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "cannot decode 5000x5000 JPEG"), "%s",
              nnc_error_message());
    cr_assert_geq(max_request, (size_t)5000 * 5000 * 3);
    cr_assert_eq(nnc_alloc_live_bytes(), live);
    nnc_set_allocator(NULL);
}

static char logged[1024];
static void capture(nnc_log_level lv, const char *msg, void *ud)
{
    (void)lv, (void)ud;
    snprintf(logged, sizeof logged, "%s", msg);
}

Test(data_jpeg, image_folder_mixes_png_and_jpeg_by_content)
{
    char p[256];
    path_in_tmp(p, sizeof p, "a"), mkdir(p, 0755);
    path_in_tmp(p, sizeof p, "b"), mkdir(p, 0755);
    size_t len;
    const uint8_t *q = slurp(QUAD, &len);
    path_in_tmp(p, sizeof p, "a/1.jpg");
    dg_write_file(p, q, len);
    path_in_tmp(p, sizeof p, "b/2.png"); /* a JPEG with a .png name: found by magic bytes */
    dg_write_file(p, q, len);
    uint8_t rgb[16 * 16 * 3];
    for (int i = 0; i < 256; i++) rgb[3 * i] = 11, rgb[3 * i + 1] = 22, rgb[3 * i + 2] = 33;
    path_in_tmp(p, sizeof p, "b/3.jpg"); /* a PNG with a .jpg name */
    cr_assert(stbi_write_png(p, 16, 16, 3, rgb, 48));
    path_in_tmp(p, sizeof p, "b/4.jpeg"); /* truncated JPEG: skipped as undecodable */
    dg_write_file(p, q, len / 2);
    nnc_imagefolder_config cfg = {16, 3, 64};
    nnc_dataset *d;
    logged[0] = 0;
    nnc_set_log_hook(capture, NULL);
    cr_assert_eq(nnc_imagefolder_load(tmp, &cfg, &d), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(d->n, 3);
    cr_assert_eq(d->labels[0], 0);
    cr_assert_eq(d->labels[1], 1);
    cr_assert_eq(d->labels[2], 1);
    check_quadrants_rgb(d->images, 6);
    check_quadrants_rgb(d->images + 768, 6);
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 256; k++) cr_assert_eq(d->images[2 * 768 + c * 256 + k], 11 * (c + 1));
    cr_assert(strstr(logged, "skipped 1 of 4 files (0 empty, 0 not images, 1 undecodable)") &&
                  strstr(logged, "4.jpeg"),
              "%s", logged);
    nnc_dataset_free(d);
}
