/* data/image_jpeg.c - JPEG decoding for data/image.c through Debian's libjpeg-turbo (libjpeg
 * API, pkg-config libjpeg), a decoder fuzzed continuously by OSS-Fuzz; stb_image 2.27's JPEG
 * decoder is not used (CVE-2021-28021).
 * Safety: libjpeg's error_exit is replaced by a longjmp back here (libjpeg would exit()), and
 * its corrupt-data warnings (premature end of file, bad Huffman code, data segment cut short,
 * ...) are errors too, so a truncated file fails instead of decoding as grey. The header is read
 * and width/height checked against max_dim before jpeg_start_decompress, where libjpeg
 * allocates its per-image buffers; at most 100 progressive scans are decoded (a file can
 * declare thousands, each a full pass). The pixel buffer handed back comes from nnc__alloc;
 * libjpeg's own working memory comes from its internal memory manager (malloc, freed by
 * jpeg_destroy_decompress; the API has no allocator hook) and is bounded by the checked size.
 * Thread-safety: reentrant, all state is per call.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>

#include <jerror.h>
#include <jpeglib.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define MAX_SCANS 100

typedef struct jpeg_err {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void on_error(j_common_ptr c)
{
    jpeg_err *e = (jpeg_err *)c->err;
    e->pub.format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level -1) about corrupt entropy data or a truncated file end the decode; the ones
 * about metadata only (unknown JFIF version, Adobe transform, ICC marker, stray bytes between
 * markers) are ignored. Trace messages (level >= 0) are ignored. */
static void on_message(j_common_ptr c, int level)
{
    if (level >= 0) return;
    int code = c->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC ||
        code == JWRN_EXTRANEOUS_DATA)
        return;
    on_error(c);
}

static void on_progress(j_common_ptr c)
{
    jpeg_err *e = (jpeg_err *)c->err;
    int scans = ((j_decompress_ptr)c)->input_scan_number;
    if (scans > MAX_SCANS) {
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

int nnc__jpeg_is(const uint8_t *buf, size_t len)
{
    return len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
}

int nnc__jpeg_decode(const char *path, const uint8_t *buf, size_t len, int channels, int max_dim,
                     uint8_t **px_out, int *w_out, int *h_out, int *skip_kind)
{
    struct jpeg_decompress_struct d;
    jpeg_err e;
    uint8_t *volatile px = NULL;
    volatile int stage = 0; /* 0 header, 1 pixel data */
    *px_out = NULL, *w_out = *h_out = 0, *skip_kind = -1;
    if (len > 0xffffffffu) {
        *skip_kind = 2;
        return nnc__fail(NNC_EFORMAT, "%s: JPEG of %zu bytes is too large", path, len);
    }
    d.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = on_error;
    e.pub.emit_message = on_message;
    e.msg[0] = 0;
    if (setjmp(e.jb)) {
        int w = (int)d.image_width, h = (int)d.image_height;
        jpeg_destroy_decompress(&d);
        nnc__free(px);
        *skip_kind = 2;
        if (stage == 0) return nnc__fail(NNC_EFORMAT, "%s: bad JPEG header (%s)", path, e.msg);
        return nnc__fail(NNC_EFORMAT, "%s: cannot decode %dx%d JPEG (%s)", path, w, h, e.msg);
    }
    jpeg_create_decompress(&d);
    e.progress.progress_monitor = on_progress;
    d.progress = &e.progress;
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    int w = (int)d.image_width, h = (int)d.image_height;
    if (w > max_dim || h > max_dim) {
        jpeg_destroy_decompress(&d);
        return nnc__fail(NNC_EFORMAT, "%s: image is %dx%d, above the %d-pixel max_dim cap", path, w,
                         h, max_dim);
    }
    if (d.num_components != 1 && d.num_components != 3) {
        int nc = d.num_components;
        jpeg_destroy_decompress(&d);
        *skip_kind = 2;
        return nnc__fail(NNC_EFORMAT,
                         "%s: JPEG with %d colour components, expected 1 (grey) or 3 (YCbCr/RGB; "
                         "CMYK is not supported)",
                         path, nc);
    }
    stage = 1;
    d.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&d);
    if ((int)d.output_width != w || (int)d.output_height != h || d.output_components != channels) {
        snprintf(e.msg, sizeof e.msg, "libjpeg output is %ux%ux%d", d.output_width,
                 d.output_height, d.output_components); /* not expected at scale 1/1 */
        longjmp(e.jb, 1);
    }
    size_t stride = (size_t)w * (size_t)channels;
    px = nnc__alloc(stride * (size_t)h);
    if (!px) {
        jpeg_destroy_decompress(&d);
        return nnc__fail(NNC_ENOMEM, "%s: out of memory for a %dx%d JPEG", path, w, h);
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = px + stride * d.output_scanline;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_destroy_decompress(&d); /* every row is in; what follows the last scan is not read */
    *px_out = px, *w_out = w, *h_out = h;
    return NNC_OK;
}
