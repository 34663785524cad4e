/* data/untar.c - a small, strict .tar.gz extractor for downloaded datasets, and rmtree.
 *
 * Reads POSIX ustar / GNU tar through zlib's gzread. Regular files and folders only; GNU long
 * names ('L') and pax path= records ('x') are honoured, global pax headers ('g') skipped; links,
 * devices and FIFOs are rejected. Names that are absolute or contain a ".." component are rejected
 * (path-traversal protection), every header checksum is verified, sizes are octal and capped (total
 * 4 GiB of headers and data, 100000 headers), and a short archive names the entry and the byte
 * offset where the data ends. The archive itself is opened through nnc__data_open (a FIFO or
 * device is refused) and files are created with O_EXCL | O_NOFOLLOW (an entry repeated or
 * colliding with an existing path is an error, never a write through a planted link). Files are
 * fsync'ed so a completeness check after a crash never sees right-sized files with lost contents.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define TAR_MAX_TOTAL (4ULL << 30) /* bytes of headers and data together */
#define TAR_MAX_NAME 1024
#define TAR_MAX_ENTRIES 100000 /* headers of any kind */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    remove(p);
    return 0;
}

void nnc__rmtree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int parse_octal(const uint8_t *p, int n, unsigned long long *out)
{
    unsigned long long v = 0;
    int i = 0, digits = 0;
    while (i < n && p[i] == ' ') i++;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; i++, digits++) {
        if (v >> 60) return -1;
        v = v * 8 + (unsigned)(p[i] - '0');
    }
    for (; i < n; i++)
        if (p[i] != 0 && p[i] != ' ') return -1;
    *out = v;
    return digits ? 0 : -1;
}

/* Safe relative name: not absolute, no ".." component, no empty result; strips "./". */
static int safe_name(char *name)
{
    while (name[0] == '.' && name[1] == '/') memmove(name, name + 2, strlen(name + 2) + 1);
    size_t len = strlen(name);
    while (len && name[len - 1] == '/') name[--len] = 0;
    if (len == 0 || name[0] == '/') return 0;
    for (const char *c = name; c;) {
        if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == 0)) return 0;
        c = strchr(c, '/');
        if (c) c++;
    }
    return 1;
}

static int mkdirs(const char *dest, const char *rel, int last_too)
{
    char p[TAR_MAX_NAME + 4096];
    int base = snprintf(p, sizeof p, "%s/", dest);
    if (base < 0 || (size_t)base + strlen(rel) >= sizeof p)
        return nnc__fail(NNC_EINVAL, "%s/%s: path too long", dest, rel);
    snprintf(p + base, sizeof p - (size_t)base, "%s", rel);
    for (char *c = p + base;; c++) {
        if (*c == '/' || (*c == 0 && last_too)) {
            char keep = *c;
            *c = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return nnc__fail_errno("cannot create", p, errno);
            *c = keep;
        }
        if (*c == 0) break;
    }
    return NNC_OK;
}

static long gz_read(void *ctx, void *dst, size_t n)
{
    size_t done = 0;
    while (done < n) {
        int r = gzread((gzFile)ctx, (char *)dst + done, (unsigned)(n - done));
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

/* pax extended header records "LEN key=value\n": path= becomes the next entry's name; size=
 * (files over 8 GiB) is refused; other keys are ignored. */
static int pax_path(const char *tgz, unsigned long long off, const char *p, size_t n, char *name)
{
    size_t i = 0;
    while (i < n) {
        size_t len = 0, j = i;
        while (j < n && p[j] >= '0' && p[j] <= '9' && len < 100000)
            len = len * 10 + (size_t)(p[j++] - '0');
        if (j >= n || p[j] != ' ' || len <= j - i + 1 || len > n - i || p[i + len - 1] != '\n')
            return nnc__fail(NNC_EFORMAT, "%s: malformed pax record before byte offset %llu", tgz,
                             off);
        const char *kv = p + j + 1;
        size_t kvlen = i + len - 1 - (j + 1);
        if (kvlen >= 5 && memcmp(kv, "path=", 5) == 0) {
            if (kvlen - 5 > TAR_MAX_NAME || memchr(kv + 5, 0, kvlen - 5))
                return nnc__fail(NNC_EFORMAT, "%s: bad pax path before byte offset %llu", tgz, off);
            memcpy(name, kv + 5, kvlen - 5);
            name[kvlen - 5] = 0;
        } else if (kvlen >= 5 && memcmp(kv, "size=", 5) == 0) {
            return nnc__fail(
                NNC_EFORMAT,
                "%s: pax size override (file over 8 GiB) before byte offset %llu unsupported", tgz,
                off);
        }
        i += len;
    }
    return NNC_OK;
}

static int read_fail(nnc__reader *r, const char *path, unsigned long long off)
{
    return nnc__fail(NNC_EFORMAT, "%s: corrupt data near archive byte offset %llu: %s", path, off,
                     r->error ? r->error(r->ctx) : "read error");
}

int nnc__untar_gz(const char *tgz, const char *dest)
{
    int fd = nnc__data_open(tgz, "archive", NULL);
    if (fd < 0) return fd;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return nnc__fail(NNC_ENOMEM, "%s: out of memory opening the gzip stream", tgz);
    }
    gzbuffer(g, 1u << 17);
    nnc__reader r = {gz_read, gz_error, g};
    int s = nnc__untar(tgz, &r, dest);
    gzclose(g);
    return s;
}

int nnc__untar(const char *tgz, nnc__reader *rd, const char *dest)
{
    uint8_t h[512];
    static const size_t CH = 1u << 16;
    uint8_t *buf = nnc__alloc(CH);
    char name[TAR_MAX_NAME + 1], longname[TAR_MAX_NAME + 1] = "", pax[4 * TAR_MAX_NAME + 1];
    unsigned long long off = 0, total = 0;
    int s = buf ? NNC_OK : nnc__fail(NNC_ENOMEM, "untar: out of memory"), entries = 0, headers = 0;
    while (!s) {
        long r = rd->read(rd->ctx, h, 512);
        if (r < 0) {
            s = read_fail(rd, tgz, off);
            break;
        }
        if (r < 512) {
            s = nnc__fail(NNC_EFORMAT, "%s: archive ends at byte offset %llu inside a header%s",
                          tgz, off + (unsigned long long)r, entries ? "" : " (not a tar file?)");
            break;
        }
        int zero = 1;
        for (int i = 0; i < 512 && zero; i++) zero = h[i] == 0;
        if (zero) break; /* end-of-archive marker */
        unsigned long long sum = 0, want, size;
        long long ssum = 0; /* some old tars sum signed chars */
        for (int i = 0; i < 512; i++) {
            sum += (i >= 148 && i < 156) ? ' ' : h[i];
            ssum += (i >= 148 && i < 156) ? ' ' : (signed char)h[i];
        }
        if (parse_octal(h + 148, 8, &want) || (want != sum && (long long)want != ssum)) {
            s = nnc__fail(
                NNC_EFORMAT,
                "%s: bad tar header checksum at byte offset %llu (stored %.8s, computed %llo)", tgz,
                off, (const char *)h + 148, sum);
            break;
        }
        if (parse_octal(h + 124, 12, &size)) {
            s = nnc__fail(NNC_EFORMAT, "%s: bad size field in tar header at byte offset %llu", tgz,
                          off);
            break;
        }
        char type = (char)h[156];
        if (longname[0]) {
            snprintf(name, sizeof name, "%s", longname);
            longname[0] = 0;
        } else if (memcmp(h + 257, "ustar\0", 6) == 0 && h[345]) { /* POSIX prefix field */
            snprintf(name, sizeof name, "%.155s/%.100s", (const char *)h + 345, (const char *)h);
        } else {
            snprintf(name, sizeof name, "%.100s", (const char *)h);
        }
        off += 512;
        total += 512 + size; /* size < 8^12: no overflow */
        if (++headers > TAR_MAX_ENTRIES) {
            s = nnc__fail(NNC_EFORMAT, "%s: more than %d entries (at byte offset %llu)", tgz,
                          TAR_MAX_ENTRIES, off - 512);
            break;
        }
        if (total > TAR_MAX_TOTAL) {
            s = nnc__fail(NNC_EFORMAT, "%s: archive expands beyond %llu bytes (entry %s)", tgz,
                          TAR_MAX_TOTAL, name);
            break;
        }
        int fd = -1;
        char path[TAR_MAX_NAME + 4096];
        if (type == 'L' || type == 'x') {
            if (size > (type == 'L' ? TAR_MAX_NAME : 4 * TAR_MAX_NAME)) {
                s = nnc__fail(NNC_EFORMAT, "%s: %s of %llu bytes at byte offset %llu", tgz,
                              type == 'L' ? "long name" : "pax header", size, off);
                break;
            }
        } else if (type == '0' || type == 0 || type == '5') {
            if (!safe_name(name)) {
                s = nnc__fail(NNC_EFORMAT,
                              "%s: unsafe entry name '%s' at byte offset %llu (absolute or '..')",
                              tgz, name, off - 512);
                break;
            }
            entries++;
            if (dest) s = mkdirs(dest, name, type == '5');
            if (s || type == '5' || !dest) {
                if (!s && size && type == '5')
                    s = nnc__fail(NNC_EFORMAT, "%s: folder entry %s has data", tgz, name);
                if (s || type == '5') continue;
            }
            if (dest && (size_t)snprintf(path, sizeof path, "%s/%s", dest, name) >= sizeof path) {
                s = nnc__fail(NNC_EINVAL, "%s/%s: path too long", dest, name);
                break;
            }
            if (dest)
                fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (dest && fd < 0) {
                s = nnc__fail_errno("cannot create", path, errno);
                break;
            }
        } else if (type != 'g') {
            s = nnc__fail(NNC_EFORMAT,
                          "%s: entry '%s' at byte offset %llu has unsupported type '%c' (only "
                          "files and folders)",
                          tgz, name, off - 512, type);
            break;
        }
        unsigned long long left = (size + 511) / 512 * 512, data = size;
        size_t lpos = 0;
        while (left && !s) {
            size_t want_n = left < CH ? (size_t)left : CH;
            long got = rd->read(rd->ctx, buf, want_n);
            if (got < 0)
                s = read_fail(rd, tgz, off);
            else if ((size_t)got < want_n)
                s = nnc__fail(NNC_EFORMAT,
                              "%s: archive truncated: entry '%s' ends at byte offset %llu, "
                              "expected %llu data bytes",
                              tgz, name, off + (unsigned long long)got, size);
            if (s) break;
            size_t use = data < (unsigned long long)got ? (size_t)data : (size_t)got;
            if (fd >= 0 && use && write(fd, buf, use) != (ssize_t)use)
                s = nnc__fail_errno("cannot write", path, errno);
            if ((type == 'L' || type == 'x') && use) {
                memcpy((type == 'L' ? longname : pax) + lpos, buf, use);
                lpos += use;
                (type == 'L' ? longname : pax)[lpos] = 0;
            }
            data -= use, left -= (unsigned long long)got, off += (unsigned long long)got;
        }
        if (type == 'x' && !s) s = pax_path(tgz, off, pax, lpos, longname);
        if (fd >= 0 && !s && fsync(fd) != 0) s = nnc__fail_errno("cannot sync", path, errno);
        if (fd >= 0 && close(fd) != 0 && !s) s = nnc__fail_errno("cannot write", path, errno);
    }
    if (!s && entries == 0) s = nnc__fail(NNC_EFORMAT, "%s: archive has no files", tgz);
    nnc__free(buf);
    return s;
}
