/* data/image.c - image files (PNG/BMP/PPM/PGM via stb_image, JPEG via libjpeg-turbo) and
 * image-folder datasets.
 *
 * JPEG (recognised by its magic bytes FF D8 FF, not by extension) goes to libjpeg-turbo
 * (data/image_jpeg.c), never to stb: Debian's stb_image 2.27 JPEG decoder writes out of bounds
 * on crafted Huffman tables (CVE-2021-28021; tests/fuzz/fuzz_image found it within a minute),
 * so stb is built without it. PNG and PNM headers are pre-checked here for other 2.27 bugs
 * (see png_check, pnm_check; 16-bit PNM is refused).
 * Safety: a file is read whole (cap 256 MiB), its header gives the dimensions
 * (stbi_info_from_memory, jpeg_read_header), and anything wider or taller than max_dim is
 * rejected before a pixel buffer is allocated.
 * Resizing: bilinear with pixel-centre alignment (PyTorch align_corners=False, no antialias),
 * output rounded to the nearest uint8; a same-size image is copied unchanged.
 *
 * Image-folder policy (DIR/<class>/<image>, classes = sub-folders sorted by name; hidden
 * entries ignored):
 *   - no class folder, or a class folder without any decodable image: error (NNC_EFORMAT);
 *   - zero-byte files, non-image files, entries that are not regular files (FIFO, device,
 *     socket: never opened for reading) and undecodable images: skipped, counted, and reported
 *     in one warning through the log hook ("skipped N of M files: ..., first: PATH");
 *   - a path longer than the 4096-byte path buffers: error (never silently truncated);
 *   - an image above max_dim: error naming the file and its size (never decoded).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb/stb_image.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define MAX_FILE_BYTES (256L << 20)

/* Kinds of skipped files; NOT_IMAGE also covers files stb cannot parse the header of. */
enum { SKIP_EMPTY, SKIP_NOT_IMAGE, SKIP_CORRUPT, SKIP_KINDS };

/* Read an image file whole (at most MAX_FILE_BYTES). A FIFO, device or socket is refused
 * without being opened for a blocking read (*not_regular = 1 then, so the image-folder loader
 * can skip it like any other non-image entry). */
static int read_file(const char *path, uint8_t **buf, size_t *len, int *not_regular)
{
    struct stat st;
    *not_regular = 0;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) *not_regular = 1;
    return nnc__data_read_small(path, "image", MAX_FILE_BYTES, buf, len);
}

/* HWC (w, h, c) -> CHW (c, size, size), bilinear, align_corners=False. */
static void resize_chw(const uint8_t *src, int w, int h, int c, int size, uint8_t *out)
{
    for (int ch = 0; ch < c; ch++) {
        uint8_t *o = out + (size_t)ch * size * size;
        for (int y = 0; y < size; y++) {
            float fy = ((float)y + 0.5f) * (float)h / (float)size - 0.5f;
            fy = fy < 0 ? 0 : fy;
            int y0 = (int)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
            float wy = fy - (float)y0;
            for (int x = 0; x < size; x++) {
                float fx = ((float)x + 0.5f) * (float)w / (float)size - 0.5f;
                fx = fx < 0 ? 0 : fx;
                int x0 = (int)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
                float wx = fx - (float)x0;
                float a = src[((size_t)y0 * w + x0) * c + ch],
                      b = src[((size_t)y0 * w + x1) * c + ch];
                float cc = src[((size_t)y1 * w + x0) * c + ch],
                      d = src[((size_t)y1 * w + x1) * c + ch];
                float v = (a * (1 - wx) + b * wx) * (1 - wy) + (cc * (1 - wx) + d * wx) * wy;
                int iv = (int)(v + 0.5f);
                o[(size_t)y * size + x] = (uint8_t)(iv > 255 ? 255 : iv);
            }
        }
    }
}

/* Binary PNM (P5/P6) header check, done before stb_image 2.27 sees the file: that version
 * overflows a signed int on header numbers of 10+ digits and ignores short pixel data (leaving
 * pixels uninitialised), and its 16-bit PNM path converts channels with the 8-bit routine
 * (heap overflow). Returns 1 (not a binary PNM, or consistent), 0 (pixel data shorter than
 * the header says), -1 (a header number longer than 9 digits), -2 (16-bit: maxval > 255,
 * unsupported). Tokenises like stb. */
static int pnm_check(const uint8_t *buf, size_t len)
{
    if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6')) return 1;
    size_t i = 2;
    unsigned long long v[3];
    for (int k = 0; k < 3; k++) {
        for (;;) { /* whitespace and # comments */
            while (i < len && (buf[i] == ' ' || (buf[i] >= '\t' && buf[i] <= '\r'))) i++;
            if (i < len && buf[i] == '#')
                while (i < len && buf[i] != '\n' && buf[i] != '\r') i++;
            else
                break;
        }
        int digits = 0;
        v[k] = 0;
        while (i < len && buf[i] >= '0' && buf[i] <= '9') {
            if (++digits > 9) return -1;
            v[k] = v[k] * 10 + (unsigned)(buf[i++] - '0');
        }
    }
    if (v[2] > 255) return -2;
    i++; /* the single whitespace before the data */
    unsigned long long need = v[0] * v[1] * (buf[1] == '6' ? 3 : 1);
    return len >= i && len - i >= need;
}

/* PNG chunk walk: stb_image 2.27 grows its IDAT buffer to a chunk's declared length before
 * reading it, so a 100-byte file can demand 512 MiB. Returns 0 when a chunk declares more
 * bytes than the file holds, 1 otherwise (including non-PNG input). */
static int png_check(const uint8_t *b, size_t len)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(b, sig, 8) != 0) return 1;
    for (size_t i = 8; i + 8 <= len;) {
        size_t n = (size_t)b[i] << 24 | (size_t)b[i + 1] << 16 | (size_t)b[i + 2] << 8 | b[i + 3];
        if (n > len - i - 8) return 0;
        if (memcmp(b + i + 4, "IEND", 4) == 0) return 1;
        i += 12 + n; /* length, type, data, CRC */
    }
    return 1;
}

/* Decode an in-memory image into (channels, size, size); *skip_kind set for data problems. */
int nnc__image_decode_mem(const char *path, const uint8_t *buf, size_t len, int channels, int size,
                          int max_dim, uint8_t *out, int *skip_kind)
{
    int w, h, comp;
    *skip_kind = -1;
    if (len == 0) {
        *skip_kind = SKIP_EMPTY;
        return nnc__fail(NNC_EFORMAT, "%s: empty file (0 bytes)", path);
    }
    if (nnc__jpeg_is(buf, len)) {
        uint8_t *px;
        int jw, jh;
        int s = nnc__jpeg_decode(path, buf, len, channels, max_dim, &px, &jw, &jh, skip_kind);
        if (s) return s;
        resize_chw(px, jw, jh, channels, size, out);
        nnc__free(px);
        return NNC_OK;
    }
    int pnm = pnm_check(buf, len);
    if (!png_check(buf, len)) {
        *skip_kind = SKIP_CORRUPT;
        return nnc__fail(NNC_EFORMAT, "%s: cannot decode PNG (a chunk is longer than the file)",
                         path);
    }
    if (len > (size_t)0x7fffffff || pnm < 0 ||
        !stbi_info_from_memory(buf, (int)len, &w, &h, &comp)) {
        *skip_kind = SKIP_NOT_IMAGE;
        return nnc__fail(NNC_EFORMAT, "%s: not a PNG/JPEG/BMP/PPM/PGM image (%s)", path,
                         pnm == -1   ? "PNM header number too long"
                         : pnm == -2 ? "16-bit PNM is not supported"
                                     : stbi_failure_reason());
    }
    if (w < 1 || h < 1) {
        *skip_kind = SKIP_CORRUPT;
        return nnc__fail(NNC_EFORMAT, "%s: image is %dx%d", path, w, h);
    }
    if (w > max_dim || h > max_dim)
        return nnc__fail(NNC_EFORMAT, "%s: image is %dx%d, above the %d-pixel max_dim cap", path, w,
                         h, max_dim);
    int gw, gh;
    uint8_t *px = NULL;
    if (pnm == 0) {
        *skip_kind = SKIP_CORRUPT;
        return nnc__fail(NNC_EFORMAT, "%s: cannot decode %dx%d image (PNM pixel data truncated)",
                         path, w, h);
    }
    px = stbi_load_from_memory(buf, (int)len, &gw, &gh, &comp, channels);
    if (px && (gw < 1 || gh < 1 || gw != w || gh != h)) { /* stb 2.27 accepts 0-row PNMs */
        stbi_image_free(px);
        *skip_kind = SKIP_CORRUPT;
        return nnc__fail(NNC_EFORMAT, "%s: decoder returned a %dx%d image for a %dx%d header", path,
                         gw, gh, w, h);
    }
    if (!px) {
        *skip_kind = SKIP_CORRUPT;
        return nnc__fail(NNC_EFORMAT, "%s: cannot decode %dx%d image (%s)", path, w, h,
                         stbi_failure_reason());
    }
    resize_chw(px, gw, gh, channels, size, out);
    stbi_image_free(px);
    return NNC_OK;
}

int nnc_image_load(const char *path, int channels, int size, int max_dim, uint8_t *out)
{
    if (channels != 1 && channels != 3)
        return nnc__fail(NNC_EINVAL, "image channels %d, expected 1 or 3", channels);
    if (size < 1 || max_dim < 1)
        return nnc__fail(NNC_EINVAL, "image size %d / max_dim %d, expected >= 1", size, max_dim);
    uint8_t *buf;
    size_t len;
    int not_regular, s = read_file(path, &buf, &len, &not_regular);
    if (s) return s;
    int kind;
    s = nnc__image_decode_mem(path, buf, len, channels, size, max_dim, out, &kind);
    nnc__free(buf);
    return s;
}

/* ---- folder walking ---- */

typedef struct strlist {
    char **v;
    int n, cap;
} strlist;

static int strlist_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 16;
        char **nv = nnc__alloc((size_t)ncap * sizeof(char *));
        if (!nv) return nnc__fail(NNC_ENOMEM, "image folder: out of memory");
        if (l->n) memcpy(nv, l->v, (size_t)l->n * sizeof(char *));
        nnc__free(l->v);
        l->v = nv, l->cap = ncap;
    }
    size_t len = strlen(s);
    char *c = nnc__alloc(len + 1);
    if (!c) return nnc__fail(NNC_ENOMEM, "image folder: out of memory");
    memcpy(c, s, len + 1);
    l->v[l->n++] = c;
    return NNC_OK;
}

static void strlist_free(strlist *l)
{
    for (int i = 0; i < l->n; i++) nnc__free(l->v[i]);
    nnc__free(l->v);
    l->v = NULL, l->n = l->cap = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* dst = "a/b" or "a/b/c" (c may be NULL); NNC_EINVAL instead of a truncated path. */
static int join(char *dst, size_t n, const char *a, const char *b, const char *c)
{
    int k = c ? snprintf(dst, n, "%s/%s/%s", a, b, c) : snprintf(dst, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n)
        return nnc__fail(NNC_EINVAL, "image folder: path %s/%s%s%s is longer than %zu bytes", a,
                         b, c ? "/" : "", c ? c : "", n - 1);
    return NNC_OK;
}

/* Sorted names of non-hidden entries of dir that are folders (want_dirs) or not. */
static int list_dir(const char *dir, int want_dirs, strlist *out)
{
    DIR *dp = opendir(dir);
    if (!dp) return nnc__fail_errno("cannot open folder", dir, errno);
    struct dirent *e;
    char p[4096];
    int s = NNC_OK;
    while (!s && (e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        s = join(p, sizeof p, dir, e->d_name, NULL);
        if (s) break;
        if (stat(p, &st) != 0) continue;
        if ((S_ISDIR(st.st_mode) != 0) == (want_dirs != 0)) s = strlist_push(out, e->d_name);
    }
    closedir(dp);
    if (!s && out->n > 1) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return s;
}

static int imagefolder_classes(const char *dir, strlist *classes)
{
    int s = list_dir(dir, 1, classes);
    if (s) return s;
    if (classes->n == 0)
        return nnc__fail(NNC_EFORMAT,
                         "image folder %s: no class sub-folders (expected DIR/<class>/<image>)",
                         dir);
    if (classes->n > NNC_DATA_MAX_CLASSES)
        return nnc__fail(NNC_EFORMAT, "image folder %s: %d classes, at most %d", dir, classes->n,
                         NNC_DATA_MAX_CLASSES);
    return NNC_OK;
}

int nnc_imagefolder_load(const char *dir, const nnc_imagefolder_config *cfg, nnc_dataset **out)
{
    *out = NULL;
    nnc_imagefolder_config c = {32, 3, 4096};
    if (cfg) {
        if (cfg->size) c.size = cfg->size;
        if (cfg->channels) c.channels = cfg->channels;
        if (cfg->max_dim) c.max_dim = cfg->max_dim;
    }
    if (c.channels != 1 && c.channels != 3)
        return nnc__fail(NNC_EINVAL, "image folder: channels %d, expected 1 or 3", c.channels);
    if (c.size < 1 || c.size > 4096 || c.max_dim < 1)
        return nnc__fail(NNC_EINVAL, "image folder: size %d (1..4096) / max_dim %d (>= 1)", c.size,
                         c.max_dim);
    strlist classes = {0}, files = {0};
    int *class_end = NULL, s = imagefolder_classes(dir, &classes);
    if (!s) {
        class_end = nnc__calloc((size_t)classes.n, sizeof(int));
        if (!class_end) s = nnc__fail(NNC_ENOMEM, "image folder: out of memory");
    }
    char p[4096];
    for (int k = 0; !s && k < classes.n; k++) {
        strlist here = {0};
        s = join(p, sizeof p, dir, classes.v[k], NULL);
        if (!s) s = list_dir(p, 0, &here);
        if (!s && here.n == 0)
            s = nnc__fail(NNC_EFORMAT, "image folder %s: class folder '%s' is empty", dir,
                          classes.v[k]);
        for (int i = 0; !s && i < here.n; i++) {
            s = join(p, sizeof p, dir, classes.v[k], here.v[i]);
            if (!s) s = strlist_push(&files, p);
        }
        class_end[k] = files.n;
        strlist_free(&here);
    }
    nnc_dataset *d = NULL;
    if (!s) s = nnc__dataset_new("imagefolder", files.n, c.channels, c.size, c.size, classes.n, &d);
    int skipped[SKIP_KINDS] = {0}, first_skip = -1, n = 0;
    int *seen = NULL;
    if (!s) {
        seen = nnc__calloc((size_t)classes.n, sizeof(int));
        if (!seen) s = nnc__fail(NNC_ENOMEM, "image folder: out of memory");
    }
    size_t img = (size_t)c.channels * c.size * c.size;
    for (int i = 0, k = 0; !s && i < files.n; i++) {
        while (i >= class_end[k]) k++;
        uint8_t *buf;
        size_t len;
        int kind = SKIP_NOT_IMAGE, not_regular;
        s = read_file(files.v[i], &buf, &len, &not_regular);
        if (s && not_regular) { /* a FIFO, device or socket among the images */
            skipped[kind]++;
            if (first_skip < 0) first_skip = i;
            s = NNC_OK;
            nnc__clear_error();
            continue;
        }
        if (s) break;
        s = nnc__image_decode_mem(files.v[i], buf, len, c.channels, c.size, c.max_dim,
                                  d->images + (size_t)n * img, &kind);
        nnc__free(buf);
        if (s && kind >= 0) {
            skipped[kind]++;
            if (first_skip < 0) first_skip = i;
            s = NNC_OK;
            nnc__clear_error();
            continue;
        }
        if (s) break;
        d->labels[n++] = k;
        seen[k]++;
    }
    for (int k = 0; !s && k < classes.n; k++)
        if (seen[k] == 0)
            s = nnc__fail(NNC_EFORMAT, "image folder %s: class folder '%s' has no decodable image",
                          dir, classes.v[k]);
    if (!s && first_skip >= 0)
        nnc__log(NNC_LOG_WARN,
                 "image folder %s: skipped %d of %d files (%d empty, %d not images, %d "
                 "undecodable), first: %s",
                 dir, skipped[0] + skipped[1] + skipped[2], files.n, skipped[SKIP_EMPTY],
                 skipped[SKIP_NOT_IMAGE], skipped[SKIP_CORRUPT], files.v[first_skip]);
    if (!s) {
        d->n = n;
        s = nnc__dataset_set_class_names(d, (const char *const *)classes.v, classes.n);
    }
    nnc__free(seen);
    nnc__free(class_end);
    strlist_free(&files);
    strlist_free(&classes);
    if (s) {
        nnc_dataset_free(d);
        return s;
    }
    *out = d;
    return NNC_OK;
}

int nnc__imagefolder_load_split(const char *dir, int train, nnc_dataset **out)
{
    *out = NULL;
    char p[4096], q[4096];
    int s = join(p, sizeof p, dir, train ? "train" : "test", NULL);
    if (!s) s = join(q, sizeof q, dir, train ? "test" : "train", NULL);
    if (!s) s = nnc_imagefolder_load(p, NULL, out);
    if (s) return s;
    struct stat st;
    if (stat(q, &st) != 0 || !S_ISDIR(st.st_mode)) return NNC_OK;
    strlist other = {0};
    s = imagefolder_classes(q, &other);
    nnc_dataset *d = *out;
    if (!s && other.n != d->num_classes)
        s = nnc__fail(NNC_EFORMAT, "image folder %s: %d classes in %s but %d in %s", dir,
                      d->num_classes, p, other.n, q);
    for (int k = 0; !s && k < other.n; k++)
        if (strcmp(other.v[k], d->class_names[k]) != 0)
            s = nnc__fail(NNC_EFORMAT, "image folder %s: class %d is '%s' in %s but '%s' in %s",
                          dir, k, d->class_names[k], p, other.v[k], q);
    strlist_free(&other);
    if (s) {
        nnc_dataset_free(d);
        *out = NULL;
    }
    return s;
}
