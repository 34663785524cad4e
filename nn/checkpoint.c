/* nn/checkpoint.c - the nnc checkpoint file: writer, atomic save, validating loader, lookups.
 * Format and guarantees: nn/checkpoint.h. Every size read from a file is checked against the
 * bytes that remain before anything is allocated or copied, so a hostile file cannot make the
 * loader allocate more than a small multiple of its own size. */
#include "nn/checkpoint.h"

#include "nn/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "nn/fault.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "nn/checkpoint.c stores float data in host order and assumes a little-endian host"
#endif

#define MAGIC "NNCCKPT1"
#define TRAILER "NNCEND\0\0"
#define ARCH_MAX 4096
#define KIND_FLOATS 0u
#define KIND_BYTES 1u
/* Smallest possible section: name_len, 1-byte name, kind, ndim, nbytes, crc. */
#define SECTION_MIN (4 + 1 + 4 + 4 + 8 + 4)

typedef struct section {
    char *name;        /* NUL-terminated; own allocation (writer) or in c->names (loaded) */
    uint32_t kind;
    int ndim;
    int shape[NNC_MAX_DIMS];
    uint64_t nbytes;
    const void *data;  /* caller memory (writer) or inside c->buf (loaded) */
    size_t offset;     /* file offset of the section (loaded) */
} section;

struct nnc_ckpt {
    char *arch;
    char *label;       /* file or source name for messages */
    section *sec;
    int nsec, cap;
    int loaded;
    unsigned char *buf;/* the file's bytes (loaded) */
    char *names;       /* pool of loaded names */
    int *order;        /* section indices sorted by name (loaded) */
};

uint32_t nnc_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    uLong c = crc;
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static char *dup_str(const char *s, size_t n)
{
    char *d = nnc__alloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static const char *shape_str(int ndim, const int *shape, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%d", i ? "," : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* ---------------------------------------------------------------- writer */

int nnc_ckpt_new(const char *arch, nnc_ckpt **out)
{
    *out = NULL;
    size_t n = strlen(arch);
    if (n > ARCH_MAX) return nnc__fail(NNC_EINVAL, "checkpoint arch string is %zu bytes (max %d)", n, ARCH_MAX);
    nnc_ckpt *c = nnc__calloc(1, sizeof *c);
    if (!c || !(c->arch = dup_str(arch, n)) || !(c->label = dup_str("(unsaved)", 9))) {
        nnc_ckpt_free(c);
        return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
    }
    *out = c;
    return NNC_OK;
}

void nnc_ckpt_free(nnc_ckpt *c)
{
    if (!c) return;
    if (!c->loaded)
        for (int i = 0; i < c->nsec; i++) nnc__free(c->sec[i].name);
    nnc__free(c->sec);
    nnc__free(c->arch);
    nnc__free(c->label);
    nnc__free(c->buf);
    nnc__free(c->names);
    nnc__free(c->order);
    nnc__free(c);
}

const char *nnc_ckpt_arch(const nnc_ckpt *c) { return c->arch; }

static int find(const nnc_ckpt *c, const char *name)
{
    if (c->order) {
        int lo = 0, hi = c->nsec - 1;
        while (lo <= hi) {
            int mid = lo + (hi - lo) / 2, k = c->order[mid];
            int r = strcmp(c->sec[k].name, name);
            if (r == 0) return k;
            if (r < 0)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return -1;
    }
    for (int i = 0; i < c->nsec; i++)
        if (strcmp(c->sec[i].name, name) == 0) return i;
    return -1;
}

static int add_section(nnc_ckpt *c, const char *name, uint32_t kind, int ndim, const int *shape,
                       uint64_t nbytes, const void *data)
{
    NNC_ASSERT(!c->loaded, "adding section '%s' to a loaded checkpoint", name);
    size_t len = strlen(name);
    if (len == 0 || len >= NNC_CKPT_NAME_MAX)
        return nnc__fail(NNC_EINVAL, "checkpoint section name '%s' must be 1..%d bytes", name, NNC_CKPT_NAME_MAX - 1);
    if (find(c, name) >= 0) return nnc__fail(NNC_EINVAL, "duplicate checkpoint section '%s'", name);
    if (c->nsec == c->cap) {
        int cap = c->cap ? c->cap * 2 : 32;
        section *s = nnc__alloc(sizeof *s * (size_t)cap);
        if (!s) return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
        if (c->nsec) memcpy(s, c->sec, sizeof *s * (size_t)c->nsec);
        nnc__free(c->sec);
        c->sec = s;
        c->cap = cap;
    }
    section *s = &c->sec[c->nsec];
    memset(s, 0, sizeof *s);
    if (!(s->name = dup_str(name, len))) return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
    s->kind = kind;
    s->ndim = ndim;
    for (int i = 0; i < ndim; i++) s->shape[i] = shape[i];
    s->nbytes = nbytes;
    s->data = data;
    c->nsec++;
    return NNC_OK;
}

int nnc_ckpt_add_floats(nnc_ckpt *c, const char *name, int ndim, const int *shape, const float *data)
{
    if (ndim < 1 || ndim > NNC_MAX_DIMS)
        return nnc__fail(NNC_EINVAL, "checkpoint section '%s': ndim %d not in 1..%d", name, ndim, NNC_MAX_DIMS);
    size_t n = sizeof(float);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return nnc__fail(NNC_EINVAL, "checkpoint section '%s': dimension %d is %d", name, i, shape[i]);
        if (nnc__mul_size(n, (size_t)shape[i], &n))
            return nnc__fail(NNC_EINVAL, "checkpoint section '%s': size overflows", name);
    }
    return add_section(c, name, KIND_FLOATS, ndim, shape, n, data);
}

int nnc_ckpt_add_bytes(nnc_ckpt *c, const char *name, const void *data, size_t nbytes)
{
    return add_section(c, name, KIND_BYTES, 0, NULL, nbytes, data);
}

static int prefixed(char *dst, const char *prefix, const char *mid, const char *name)
{
    int n = snprintf(dst, NNC_CKPT_NAME_MAX, "%s%s%s", prefix, mid, name);
    if (n < 0 || n >= NNC_CKPT_NAME_MAX)
        return nnc__fail(NNC_EINVAL, "checkpoint section name '%s%s%s' longer than %d", prefix, mid, name,
                         NNC_CKPT_NAME_MAX - 1);
    return NNC_OK;
}

int nnc_ckpt_add_params(nnc_ckpt *c, const char *prefix, const nnc_params *p)
{
    NNC_ASSERT(p->finalized, "checkpointing unfinalized params");
    char name[NNC_CKPT_NAME_MAX];
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        int buffer = (e->flags & NNC_PARAM_BUFFER) != 0;
        int s = prefixed(name, prefix, buffer ? "buf/" : "param/", e->name);
        if (!s) s = nnc_ckpt_add_floats(c, name, e->ndim, e->shape, (buffer ? p->buf : p->data) + e->offset);
        if (s) return s;
    }
    return NNC_OK;
}

int nnc_ckpt_add_params_like(nnc_ckpt *c, const char *prefix, const nnc_params *p, const float *data)
{
    NNC_ASSERT(p->finalized, "checkpointing unfinalized params");
    char name[NNC_CKPT_NAME_MAX];
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) continue;
        int s = prefixed(name, prefix, "", e->name);
        if (!s) s = nnc_ckpt_add_floats(c, name, e->ndim, e->shape, data + e->offset);
        if (s) return s;
    }
    return NNC_OK;
}

/* ---------------------------------------------------------------- save */

static unsigned char *put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
    return b + 4;
}

static unsigned char *put_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return b + 8;
}

#define WBUF (64 * 1024)

/* Buffered writer over the temp file; the first failure sticks in err. */
typedef struct writer {
    int fd;
    const char *path;
    unsigned char buf[WBUF];
    size_t used;
    int slow_ms;  /* test hook ckpt_slow_write:MS: sleep between written chunks */
    int err;
} writer;

static void w_flush(writer *w)
{
    size_t done = 0;
    while (!w->err && done < w->used) {
        ssize_t k = write(w->fd, w->buf + done, w->used - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            w->err = nnc__fail(NNC_EIO, "writing '%s': %s", w->path, k < 0 ? strerror(errno) : "short write");
            break;
        }
        done += (size_t)k;
    }
    w->used = 0;
    if (w->slow_ms > 0 && !w->err) {
        struct timespec ts = {w->slow_ms / 1000, (long)(w->slow_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
    }
}

static void w_put(writer *w, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n > 0 && !w->err) {
        size_t k = WBUF - w->used < n ? WBUF - w->used : n;
        memcpy(w->buf + w->used, p, k);
        w->used += k;
        p += k;
        n -= k;
        if (w->used == WBUF) w_flush(w);
    }
}

/* Remove path.tmp.<pid>[.<random>] files left by processes that no longer exist (killed
 * mid-save), and leftovers under this process's own pid: they can only come from an earlier
 * process that had the same pid, since a failed save here unlinks its temp file. */
static void remove_stale_temps(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(base);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, bl) != 0 || strncmp(n + bl, ".tmp.", 5) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(n + bl + 5, &end, 10);
        if ((*end && *end != '.') || end == n + bl + 5 || errno || pid <= 0) continue;
        if (pid == (long)getpid() || (kill((pid_t)pid, 0) < 0 && errno == ESRCH)) unlinkat(dirfd(d), n, 0);
    }
    closedir(d);
}

static int write_all(const nnc_ckpt *c, writer *w)
{
    unsigned char hdr[NNC_CKPT_NAME_MAX + 64], *q;
    size_t alen = strlen(c->arch);
    memcpy(hdr, MAGIC, 8);
    q = put_u32(hdr + 8, NNC_CKPT_VERSION);
    q = put_u32(q, (uint32_t)c->nsec);
    q = put_u32(q, (uint32_t)alen);
    uint32_t crc = nnc_crc32(nnc_crc32(0, hdr, (size_t)(q - hdr)), c->arch, alen);
    w_put(w, hdr, (size_t)(q - hdr));
    w_put(w, c->arch, alen);
    put_u32(hdr, crc);
    w_put(w, hdr, 4);
    for (int i = 0; i < c->nsec && !w->err; i++) {
        const section *s = &c->sec[i];
        size_t nl = strlen(s->name);
        q = put_u32(hdr, (uint32_t)nl);
        memcpy(q, s->name, nl);
        q = put_u32(q + nl, s->kind);
        q = put_u32(q, (uint32_t)s->ndim);
        for (int k = 0; k < s->ndim; k++) q = put_u32(q, (uint32_t)s->shape[k]);
        q = put_u64(q, s->nbytes);
        crc = nnc_crc32(nnc_crc32(0, hdr, (size_t)(q - hdr)), s->data, (size_t)s->nbytes);
        q = put_u32(q, crc);
        w_put(w, hdr, (size_t)(q - hdr));
        w_put(w, s->data, (size_t)s->nbytes);
    }
    w_put(w, TRAILER, 8);
    if (!w->err && w->used) w_flush(w);
    return w->err;
}

int nnc_ckpt_save(const nnc_ckpt *c, const char *path)
{
    size_t pl = strlen(path);
    char *tmp = nnc__alloc(pl + 48), *dir = nnc__alloc(pl + 2);
    writer *w = nnc__calloc(1, sizeof *w);
    if (!tmp || !dir || !w) {
        nnc__free(tmp);
        nnc__free(dir);
        nnc__free(w);
        return nnc__fail(NNC_ENOMEM, "saving checkpoint '%s': out of memory", path);
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!slash)
        strcpy(dir, ".");
    else if (slash == path)
        strcpy(dir, "/");
    else
        snprintf(dir, pl + 2, "%.*s", (int)(slash - path), path);
    remove_stale_temps(dir, base);

    char arg[32];
    if (nnc__fault_arg("ckpt_slow_write", arg, sizeof arg)) w->slow_ms = atoi(arg);
    int s = NNC_OK;
    w->path = tmp;
    /* A fresh unpredictable name, created exclusively: a file or symlink planted under a temp
     * name is never followed or overwritten. */
    w->fd = nnc__create_temp(path, tmp, pl + 48);
    if (w->fd < 0) {
        s = nnc__fail_prefix(w->fd, "saving checkpoint '%s'", path);
        goto out;
    }
    s = write_all(c, w);
    if (!s && fsync(w->fd) < 0) s = nnc__fail(NNC_EIO, "fsync '%s': %s", tmp, strerror(errno));
    if (close(w->fd) < 0 && !s) s = nnc__fail(NNC_EIO, "closing '%s': %s", tmp, strerror(errno));
    if (!s && rename(tmp, path) < 0)
        s = nnc__fail(NNC_EIO, "renaming '%s' to '%s': %s", tmp, path, strerror(errno));
    if (s) {
        unlink(tmp);
        nnc__fail_prefix(s, "saving checkpoint '%s'", path);
        goto out;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0)
        s = nnc__fail(NNC_EIO, "saving checkpoint '%s': fsync of folder '%s': %s", path, dir, strerror(errno));
    if (dfd >= 0) close(dfd);
out:
    nnc__free(tmp);
    nnc__free(dir);
    nnc__free(w);
    return s;
}

/* ---------------------------------------------------------------- load */

typedef struct reader {
    const unsigned char *p;
    size_t n, off;
    const char *label;
} reader;

/* Fail unless k bytes remain at the cursor; `what` names the field for the message. */
static int need(reader *r, uint64_t k, const char *what, const char *sec)
{
    size_t left = r->n - r->off;
    if (k <= left) return NNC_OK;
    if (sec)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': truncated at offset %zu: %s of section '%s' needs %llu bytes, %zu left",
                         r->label, r->off, what, sec, (unsigned long long)k, left);
    return nnc__fail(NNC_EFORMAT, "checkpoint '%s': truncated at offset %zu: %s needs %llu bytes, %zu left", r->label,
                     r->off, what, (unsigned long long)k, left);
}

static uint32_t get_u32(reader *r)
{
    const unsigned char *b = r->p + r->off;
    r->off += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get_u64(reader *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}

static void printable(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) out[i] = (b[i] >= 32 && b[i] < 127) ? (char)b[i] : '?';
    out[n] = 0;
}

static int read_header(nnc_ckpt *c, reader *r, uint32_t *nsec)
{
    int s;
    if ((s = need(r, 8, "magic", NULL))) return s;
    if (memcmp(r->p, MAGIC, 8) != 0) {
        char found[9];
        printable(r->p, 8, found);
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': bad magic: expected %s, found %s", r->label, MAGIC, found);
    }
    r->off = 8;
    if ((s = need(r, 12, "header", NULL))) return s;
    uint32_t version = get_u32(r);
    if (version != NNC_CKPT_VERSION)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': version %u not supported (expected %d)", r->label, version,
                         NNC_CKPT_VERSION);
    *nsec = get_u32(r);
    uint32_t alen = get_u32(r);
    if (alen > ARCH_MAX)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': arch string length %u at offset 16 exceeds %d", r->label, alen,
                         ARCH_MAX);
    if ((s = need(r, alen, "arch string", NULL))) return s;
    const unsigned char *arch = r->p + r->off;
    r->off += alen;
    if ((s = need(r, 4, "header CRC", NULL))) return s;
    uint32_t want = nnc_crc32(0, r->p, r->off), got = get_u32(r);
    if (want != got)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': CRC mismatch in header (stored %08x, computed %08x)", r->label,
                         got, want);
    if (memchr(arch, 0, alen))
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': arch string at offset 20 contains a NUL byte", r->label);
    if (!(c->arch = dup_str((const char *)arch, alen))) return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
    /* Each section takes at least SECTION_MIN bytes: this bounds the table allocation by the file size. */
    if (*nsec > (r->n - r->off) / SECTION_MIN)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': truncated at offset %zu: %u sections need at least %llu bytes, %zu left",
                         r->label, r->off, *nsec, (unsigned long long)*nsec * SECTION_MIN, r->n - r->off);
    return NNC_OK;
}

static int read_section(reader *r, section *s, char **pool)
{
    int st;
    size_t start = r->off;
    s->offset = start;
    if ((st = need(r, 4, "section name length", NULL))) return st;
    uint32_t nl = get_u32(r);
    if (nl == 0 || nl >= NNC_CKPT_NAME_MAX)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section name length %u at offset %zu not in 1..%d", r->label,
                         nl, start, NNC_CKPT_NAME_MAX - 1);
    if ((st = need(r, nl, "section name", NULL))) return st;
    if (memchr(r->p + r->off, 0, nl))
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section name at offset %zu contains a NUL byte", r->label,
                         r->off);
    s->name = *pool;
    memcpy(s->name, r->p + r->off, nl);
    s->name[nl] = 0;
    *pool += nl + 1;
    r->off += nl;
    const char *name = s->name;
    if ((st = need(r, 8, "kind and ndim", name))) return st;
    s->kind = get_u32(r);
    uint32_t ndim = get_u32(r);
    if (s->kind != KIND_FLOATS && s->kind != KIND_BYTES)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' at offset %zu: kind %u (expected 0 or 1)", r->label,
                         name, start, s->kind);
    uint32_t lo = s->kind == KIND_FLOATS ? 1 : 0, hi = s->kind == KIND_FLOATS ? NNC_MAX_DIMS : 0;
    if (ndim < lo || ndim > hi)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' at offset %zu: ndim %u not in %u..%u", r->label,
                         name, start, ndim, lo, hi);
    s->ndim = (int)ndim;
    if ((st = need(r, 4 * (uint64_t)ndim + 8, "shape and size", name))) return st;
    uint64_t numel = 1;
    for (uint32_t k = 0; k < ndim; k++) {
        uint32_t d = get_u32(r);
        if (d == 0 || d > INT32_MAX)
            return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s': dimension %u is %d", r->label, name, k,
                             (int32_t)d);
        s->shape[k] = (int)d;
        numel = numel > UINT64_MAX / d ? UINT64_MAX : numel * d; /* saturating: compared below */
    }
    s->nbytes = get_u64(r);
    if (s->kind == KIND_FLOATS && (numel > UINT64_MAX / 4 || s->nbytes != numel * 4)) {
        char sh[96];
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s': shape %s needs %llu bytes, header says %llu",
                         r->label, name, shape_str(s->ndim, s->shape, sh, sizeof sh),
                         numel > UINT64_MAX / 4 ? 0ull : (unsigned long long)(numel * 4),
                         (unsigned long long)s->nbytes);
    }
    if ((st = need(r, 4, "CRC", name))) return st;
    size_t hdr_len = r->off - start;
    uint32_t stored = get_u32(r);
    if ((st = need(r, s->nbytes, "data", name))) return st;
    s->data = r->p + r->off;
    uint32_t crc = nnc_crc32(nnc_crc32(0, r->p + start, hdr_len), s->data, (size_t)s->nbytes);
    if (crc != stored)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': CRC mismatch in section '%s' at offset %zu (stored %08x, computed %08x)",
                         r->label, name, start, stored, crc);
    r->off += (size_t)s->nbytes;
    return NNC_OK;
}

static _Thread_local const section *sort_sec;

static int by_name(const void *a, const void *b)
{
    return strcmp(sort_sec[*(const int *)a].name, sort_sec[*(const int *)b].name);
}

/* Parse and validate buf (n bytes, taken over by the checkpoint even on failure). */
static int parse(unsigned char *buf, size_t n, const char *label, nnc_ckpt **out)
{
    *out = NULL;
    nnc_ckpt *c = nnc__calloc(1, sizeof *c);
    if (!c) {
        nnc__free(buf);
        return nnc__fail(NNC_ENOMEM, "checkpoint '%s': out of memory", label);
    }
    c->loaded = 1;
    c->buf = buf;
    reader r = {buf, n, 0, label};
    uint32_t nsec = 0;
    int s;
    if (!(c->label = dup_str(label, strlen(label)))) goto oom;
    if ((s = read_header(c, &r, &nsec))) goto fail;
    /* Bounded by the file size: nsec <= n / SECTION_MIN and names total at most n bytes. */
    c->sec = nnc__calloc(nsec ? nsec : 1, sizeof *c->sec);
    c->order = nnc__calloc(nsec ? nsec : 1, sizeof *c->order);
    c->names = nnc__alloc(n - r.off + nsec + 1);
    if (!c->sec || !c->order || !c->names) goto oom;
    char *pool = c->names;
    for (uint32_t i = 0; i < nsec; i++) {
        if ((s = read_section(&r, &c->sec[i], &pool))) goto fail;
        c->nsec = (int)i + 1;
        c->order[i] = (int)i;
    }
    sort_sec = c->sec;
    qsort(c->order, nsec, sizeof *c->order, by_name);
    for (uint32_t i = 1; i < nsec; i++) {
        const section *a = &c->sec[c->order[i - 1]], *b = &c->sec[c->order[i]];
        if (strcmp(a->name, b->name) == 0) {
            s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': duplicate section '%s' at offsets %zu and %zu", label, a->name,
                          a->offset < b->offset ? a->offset : b->offset, a->offset < b->offset ? b->offset : a->offset);
            goto fail;
        }
    }
    if ((s = need(&r, 8, "trailer", NULL))) goto fail;
    if (memcmp(buf + r.off, TRAILER, 8) != 0) {
        char found[9];
        printable(buf + r.off, 8, found);
        s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': bad trailer at offset %zu: expected NNCEND, found %s", label, r.off,
                      found);
        goto fail;
    }
    r.off += 8;
    if (r.off != n) {
        s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': %zu unexpected bytes after the trailer at offset %zu", label,
                      n - r.off, r.off);
        goto fail;
    }
    *out = c;
    return NNC_OK;
oom:
    s = nnc__fail(NNC_ENOMEM, "checkpoint '%s': out of memory", label);
fail:
    nnc_ckpt_free(c);
    return s;
}

int nnc_ckpt_load_mem(const void *data, size_t n, const char *label, nnc_ckpt **out)
{
    *out = NULL;
    unsigned char *buf = nnc__alloc(n);
    if (!buf) return nnc__fail(NNC_ENOMEM, "checkpoint '%s': cannot allocate %zu bytes", label, n);
    if (n) memcpy(buf, data, n);
    return parse(buf, n, label, out);
}

int nnc_ckpt_load(const char *path, nnc_ckpt **out)
{
    *out = NULL;
    int fd = nnc__open_regular(path, "checkpoint"); /* a FIFO or device is refused, not waited on */
    if (fd < 0) return fd;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return nnc__fail(NNC_EIO, "checkpoint '%s': cannot stat: %s", path, strerror(e));
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = nnc__alloc(n);
    if (!buf) {
        close(fd);
        return nnc__fail(NNC_ENOMEM, "checkpoint '%s': cannot allocate %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = errno;
            close(fd);
            nnc__free(buf);
            return nnc__fail(NNC_EIO, "checkpoint '%s': read failed at offset %zu of %zu: %s", path, got, n,
                             k < 0 ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)k;
    }
    close(fd);
    return parse(buf, n, path, out);
}

/* ---------------------------------------------------------------- lookups */

int nnc_ckpt_has(const nnc_ckpt *c, const char *name) { return find(c, name) >= 0; }

int nnc_ckpt_get_bytes(const nnc_ckpt *c, const char *name, const void **data, size_t *nbytes)
{
    int i = find(c, name);
    if (i < 0) return nnc__fail(NNC_EFORMAT, "checkpoint '%s': missing section '%s'", c->label, name);
    if (c->sec[i].kind != KIND_BYTES)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' is a float tensor, not bytes", c->label, name);
    *data = c->sec[i].data;
    *nbytes = (size_t)c->sec[i].nbytes;
    return NNC_OK;
}

/* Check that section `name` is a float tensor of shape (ndim, shape); returns its index. */
static int check_floats(const nnc_ckpt *c, const char *name, int ndim, const int *shape)
{
    char a[96], b[96];
    int i = find(c, name);
    if (i < 0)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': missing tensor '%s' (expected shape %s)", c->label, name,
                         shape_str(ndim, shape, a, sizeof a));
    const section *s = &c->sec[i];
    if (s->kind != KIND_FLOATS)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' holds bytes, not a float tensor", c->label, name);
    if (s->ndim != ndim || memcmp(s->shape, shape, sizeof *shape * (size_t)ndim) != 0)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': shape mismatch for tensor '%s': expected %s found %s", c->label,
                         name, shape_str(ndim, shape, a, sizeof a), shape_str(s->ndim, s->shape, b, sizeof b));
    return i;
}

int nnc_ckpt_get_floats(const nnc_ckpt *c, const char *name, int ndim, const int *shape, float *dst)
{
    int i = check_floats(c, name, ndim, shape);
    if (i < 0) return i;
    memcpy(dst, c->sec[i].data, (size_t)c->sec[i].nbytes);
    return NNC_OK;
}

/* Fail on a section under prefix+mid (mid may be "") that names no entry of p of the wanted kind. */
static int check_extra(const nnc_ckpt *c, const char *prefix, const char *mid, const nnc_params *p, int trained_only)
{
    char want[NNC_CKPT_NAME_MAX];
    int wl = snprintf(want, sizeof want, "%s%s", prefix, mid);
    if (wl <= 0 || wl >= (int)sizeof want) return NNC_OK;
    int buffer = strcmp(mid, "buf/") == 0;
    for (int i = 0; i < c->nsec; i++) {
        const char *n = c->sec[i].name;
        if (strncmp(n, want, (size_t)wl) != 0) continue;
        int k = nnc_params_find(p, n + wl);
        int ok = k >= 0 && (trained_only ? !(p->entries[k].flags & NNC_PARAM_BUFFER)
                                         : (buffer == ((p->entries[k].flags & NNC_PARAM_BUFFER) != 0)));
        if (!ok)
            return nnc__fail(NNC_EFORMAT, "checkpoint '%s': unexpected tensor '%s' (the model has no such %s)",
                             c->label, n, trained_only || !buffer ? "parameter" : "buffer");
    }
    return NNC_OK;
}

int nnc_ckpt_get_params(const nnc_ckpt *c, const char *prefix, nnc_params *p)
{
    NNC_ASSERT(p->finalized, "loading into unfinalized params");
    char name[NNC_CKPT_NAME_MAX];
    int s;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < p->count; i++) {
            const nnc_param_entry *e = &p->entries[i];
            int buffer = (e->flags & NNC_PARAM_BUFFER) != 0;
            if ((s = prefixed(name, prefix, buffer ? "buf/" : "param/", e->name))) return s;
            int k = check_floats(c, name, e->ndim, e->shape);
            if (k < 0) return k;
            if (pass == 1)
                memcpy((buffer ? p->buf : p->data) + e->offset, c->sec[k].data, (size_t)c->sec[k].nbytes);
        }
        if (pass == 0 && ((s = check_extra(c, prefix, "param/", p, 0)) || (s = check_extra(c, prefix, "buf/", p, 0))))
            return s;
    }
    return NNC_OK;
}

int nnc_ckpt_get_params_like(const nnc_ckpt *c, const char *prefix, const nnc_params *p, float *dst)
{
    NNC_ASSERT(p->finalized, "loading into unfinalized params");
    char name[NNC_CKPT_NAME_MAX];
    int s;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < p->count; i++) {
            const nnc_param_entry *e = &p->entries[i];
            if (e->flags & NNC_PARAM_BUFFER) continue;
            if ((s = prefixed(name, prefix, "", e->name))) return s;
            int k = check_floats(c, name, e->ndim, e->shape);
            if (k < 0) return k;
            if (pass == 1) memcpy(dst + e->offset, c->sec[k].data, (size_t)c->sec[k].nbytes);
        }
        if (pass == 0 && prefix[0] && (s = check_extra(c, prefix, "", p, 1))) return s;
    }
    return NNC_OK;
}

/* ---------------------------------------------------------------- value checks */

static int first_nonfinite(const float *x, size_t n, size_t *at)
{
    for (size_t j = 0; j < n; j++)
        if (!isfinite(x[j])) {
            *at = j;
            return 1;
        }
    return 0;
}

static int nonfinite_fail(const nnc_ckpt *c, const char *a, const char *b, const char *d, size_t at, float v)
{
    return nnc__fail(NNC_EFORMAT, "checkpoint '%s': tensor '%s%s%s' element %zu is %s (expected finite values)",
                     c->label, a, b, d, at, isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
}

int nnc_ckpt_check_finite(const nnc_ckpt *c, const char *prefix, const nnc_params *p)
{
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        int buffer = (e->flags & NNC_PARAM_BUFFER) != 0;
        const float *x = (buffer ? p->buf : p->data) + e->offset;
        size_t at;
        if (first_nonfinite(x, e->numel, &at))
            return nonfinite_fail(c, prefix, buffer ? "buf/" : "param/", e->name, at, x[at]);
    }
    return NNC_OK;
}

int nnc_ckpt_check_finite_like(const nnc_ckpt *c, const char *prefix, const nnc_params *p, const float *data)
{
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) continue;
        size_t at;
        if (first_nonfinite(data + e->offset, e->numel, &at))
            return nonfinite_fail(c, prefix, "", e->name, at, data[e->offset + at]);
    }
    return NNC_OK;
}

int nnc_ckpt_check_finite_floats(const nnc_ckpt *c, const char *name, const float *data, size_t n)
{
    size_t at;
    return first_nonfinite(data, n, &at) ? nonfinite_fail(c, name, "", "", at, data[at]) : NNC_OK;
}
