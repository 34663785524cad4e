/* data/idx.c - MNIST-style IDX files (images 0x00000803, labels 0x00000801), gzipped or raw.
 *
 * zlib's gzread reads both (raw files pass through transparently). Every header field is
 * validated before use: rows and cols 1..4096, count <= 10^8, and the image data the header
 * declares (count * rows * cols, computed overflow-checked in size_t) at most IDX_MAX_BYTES
 * (1 GiB). The decompressor is asked for exactly the declared bytes plus one: a stream that
 * holds more (a gzip bomb, trailing data) is refused after that one byte, so memory never
 * exceeds the checked declaration. Buffers grow as data arrives (never trusting the declared
 * size for the allocation), so a lying header costs at most about twice the data present.
 * Files are opened through nnc__data_open (a FIFO or device is refused, never read).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define IDX_MAX_DIM 4096         /* rows/cols cap */
#define IDX_MAX_ITEMS 100000000L /* count cap */
#define IDX_MAX_BYTES (1ULL << 30) /* image data cap: count * rows * cols */

long nnc__mem_read(void *ctx, void *dst, size_t n)
{
    nnc__mem_src *m = ctx;
    size_t left = m->len - m->pos;
    if (n > left) n = left;
    memcpy(dst, m->buf + m->pos, n);
    m->pos += n;
    return (long)n;
}

static long gz_read(void *ctx, void *dst, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done > (1u << 30) ? (1u << 30) : n - done;
        int r = gzread((gzFile)ctx, (char *)dst + done, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        done += (size_t)r;
    }
    return (long)done;
}

static const char *gz_error(void *ctx)
{
    int code;
    const char *m = gzerror((gzFile)ctx, &code);
    return code == Z_ERRNO ? strerror(errno) : m;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read exactly `total` bytes into a growing buffer; *got = bytes actually present. */
static int read_all(const char *name, nnc__reader *r, size_t total, size_t hdr, uint8_t **out)
{
    size_t cap = total < (1u << 20) ? total : (1u << 20), got = 0;
    uint8_t *buf = nnc__alloc(cap);
    if (!buf) return nnc__fail(NNC_ENOMEM, "%s: out of memory", name);
    while (got < total) {
        if (got == cap) {
            size_t ncap = cap * 2 > total ? total : cap * 2;
            uint8_t *nb = nnc__alloc(ncap);
            if (!nb) {
                nnc__free(buf);
                return nnc__fail(NNC_ENOMEM, "%s: out of memory (%zu bytes)", name, ncap);
            }
            memcpy(nb, buf, got);
            nnc__free(buf);
            buf = nb, cap = ncap;
        }
        long n = r->read(r->ctx, buf + got, cap - got);
        if (n < 0) {
            nnc__free(buf);
            return nnc__fail(NNC_EFORMAT, "%s: read error at byte offset %zu: %s", name, hdr + got,
                             r->error ? r->error(r->ctx) : "unknown");
        }
        if (n == 0) {
            nnc__free(buf);
            return nnc__fail(NNC_EFORMAT,
                             "%s: truncated: expected %zu bytes of data after the %zu-byte "
                             "header, file ends at byte offset %zu",
                             name, total, hdr, hdr + got);
        }
        got += (size_t)n;
    }
    uint8_t extra;
    long n = r->read(r->ctx, &extra, 1); /* one byte past the declaration, never more */
    if (n != 0) {
        nnc__free(buf);
        if (n < 0)
            return nnc__fail(NNC_EFORMAT, "%s: corrupt data after byte offset %zu: %s", name,
                             hdr + total, r->error ? r->error(r->ctx) : "read error");
        return nnc__fail(NNC_EFORMAT,
                         "%s: unexpected data after byte offset %zu (the header declares %zu "
                         "bytes of data, the file holds more)",
                         name, hdr + total, total);
    }
    *out = buf;
    return NNC_OK;
}

/* Header of an IDX unsigned-byte file with `dims` dimensions; dim sizes into d[]. */
static int read_header(const char *name, nnc__reader *r, int dims, uint32_t *d)
{
    uint8_t h[16];
    size_t want = 4 + 4 * (size_t)dims;
    long n = r->read(r->ctx, h, want);
    if (n < 0)
        return nnc__fail(NNC_EFORMAT, "%s: read error in header: %s", name,
                         r->error ? r->error(r->ctx) : "unknown");
    if ((size_t)n < want)
        return nnc__fail(NNC_EFORMAT, "%s: truncated header: %ld of %zu bytes", name, n, want);
    uint32_t magic = be32(h), expect = 0x800u | (uint32_t)dims;
    if (magic != expect) {
        return nnc__fail(NNC_EFORMAT,
                         "%s: bad magic 0x%08x at byte offset 0, expected 0x%08x (%s IDX file "
                         "of unsigned bytes)",
                         name, magic, expect, dims == 3 ? "images" : "labels");
    }
    for (int i = 0; i < dims; i++) d[i] = be32(h + 4 + 4 * i);
    return NNC_OK;
}

int nnc__idx_parse(const char *img_name, nnc__reader *img, const char *lbl_name, nnc__reader *lbl,
                   const char *dsname, nnc_dataset **out)
{
    *out = NULL;
    uint32_t di[3], dl[1];
    int s = read_header(img_name, img, 3, di);
    if (s) return s;
    s = read_header(lbl_name, lbl, 1, dl);
    if (s) return s;
    if (di[0] > IDX_MAX_ITEMS)
        return nnc__fail(NNC_EFORMAT, "%s: image count %u at byte offset 4 exceeds %ld", img_name,
                         di[0], IDX_MAX_ITEMS);
    for (int i = 1; i < 3; i++)
        if (di[i] == 0 || di[i] > IDX_MAX_DIM)
            return nnc__fail(NNC_EFORMAT, "%s: %s %u at byte offset %d, expected 1..%d", img_name,
                             i == 1 ? "rows" : "cols", di[i], 4 + 4 * i, IDX_MAX_DIM);
    if (dl[0] != di[0])
        return nnc__fail(NNC_EFORMAT, "%s: %u labels but %s has %u images", lbl_name, dl[0],
                         img_name, di[0]);
    size_t pix = (size_t)di[1] * di[2], total;
    if (nnc__mul_size(pix, di[0], &total) || (unsigned long long)total > IDX_MAX_BYTES)
        return nnc__fail(NNC_EFORMAT,
                         "%s: header declares %u images of %ux%u (%llu bytes of pixels), above "
                         "the %llu-byte IDX cap",
                         img_name, di[0], di[1], di[2],
                         (unsigned long long)pix * (unsigned long long)di[0], IDX_MAX_BYTES);
    uint8_t *pixels = NULL, *labels = NULL;
    s = read_all(img_name, img, total, 16, &pixels);
    if (s) return s;
    s = read_all(lbl_name, lbl, dl[0], 8, &labels);
    if (s) {
        nnc__free(pixels);
        return s;
    }
    int classes = 10;
    for (uint32_t i = 0; i < dl[0]; i++)
        if (labels[i] >= classes) {
            s = nnc__fail(NNC_EFORMAT,
                          "%s: label %u of item %u (byte offset %u) out of range [0, %d)", lbl_name,
                          labels[i], i, 8 + i, classes);
            nnc__free(pixels);
            nnc__free(labels);
            return s;
        }
    nnc_dataset *d = NULL;
    s = nnc__dataset_new(dsname, (int)di[0], 1, (int)di[1], (int)di[2], classes, &d);
    if (!s) {
        memcpy(d->images, pixels, total);
        for (uint32_t i = 0; i < dl[0]; i++) d->labels[i] = labels[i];
    }
    nnc__free(pixels);
    nnc__free(labels);
    *out = d;
    return s;
}

static int open_gz(const char *path, gzFile *out)
{
    int fd = nnc__data_open(path, "IDX file", NULL);
    if (fd < 0) return fd;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return nnc__fail(NNC_ENOMEM, "%s: out of memory opening the gzip stream", path);
    }
    gzbuffer(g, 1u << 17);
    *out = g;
    return NNC_OK;
}

int nnc_idx_load(const char *images_path, const char *labels_path, nnc_dataset **out)
{
    *out = NULL;
    gzFile gi = NULL, gl = NULL;
    int s = open_gz(images_path, &gi);
    if (s) return s;
    s = open_gz(labels_path, &gl);
    if (s) {
        gzclose(gi);
        return s;
    }
    nnc__reader ri = {gz_read, gz_error, gi}, rl = {gz_read, gz_error, gl};
    s = nnc__idx_parse(images_path, &ri, labels_path, &rl, "mnist", out);
    gzclose(gi);
    gzclose(gl);
    return s;
}
