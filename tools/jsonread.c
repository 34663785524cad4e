/* tools/jsonread.c - reading back the flat JSON files the CLI itself writes (summary.json,
 * dataset.json, checkpoint metadata), architecture strings, and the load-error exit code.
 * Not a general JSON parser: keys are found by their quoted name followed by ':'. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/fileio.h"
#include "nn/status.h"
#include "tools/cli.h"

char *cli_read_file(const char *path, size_t *len)
{
    /* Only regular files (a FIFO or /dev/zero is refused at once, errno EINVAL), at most
     * CLI_READ_MAX bytes (larger: EFBIG): these are the small files a run folder holds. */
    int status = 0;
    FILE *f = nnc__fopen_regular(path, "file", &status);
    if (!f) {
        if (!errno || status != NNC_EIO) errno = EIO;
        struct stat st;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) errno = EINVAL;
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= CLI_READ_MAX) {
                free(buf);
                fclose(f);
                errno = EFBIG;
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    if (err) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* Pointer just after `"key"` and the following ':' (whitespace skipped), or NULL. */
static const char *find_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = text; (p = strchr(p, '"')); p++) {
        if (strncmp(p + 1, key, kl) != 0 || p[kl + 1] != '"') continue;
        const char *q = p + kl + 2;
        while (isspace((unsigned char)*q)) q++;
        if (*q != ':') continue;
        q++;
        while (isspace((unsigned char)*q)) q++;
        return q;
    }
    return NULL;
}

int jr_num(const char *text, const char *key, double *out)
{
    const char *v = find_value(text, key);
    if (!v) return -1;
    char *end;
    double x = strtod(v, &end);
    if (end == v) return -1;
    *out = x;
    return 0;
}

int jr_nums(const char *text, const char *key, double *out, int cap)
{
    const char *v = find_value(text, key);
    if (!v || *v != '[') return -1;
    v++;
    int n = 0;
    for (;;) {
        while (isspace((unsigned char)*v) || *v == ',') v++;
        if (*v == ']') return n;
        char *end;
        double x = strtod(v, &end);
        if (end == v) return -1;
        if (n < cap) out[n] = x;
        n++;
        v = end;
    }
}

/* Parse a JSON string starting at the opening quote into buf; returns the end or NULL. */
static const char *parse_str(const char *v, char *buf, size_t n)
{
    if (*v != '"') return NULL;
    size_t o = 0;
    for (v++; *v && *v != '"'; v++) {
        char c = *v;
        if (c == '\\' && v[1]) {
            v++;
            c = *v == 'n' ? '\n' : *v == 't' ? '\t' : *v;
        }
        if (o + 1 < n) buf[o++] = c;
    }
    if (n) buf[o] = 0;
    return *v == '"' ? v + 1 : NULL;
}

int jr_str(const char *text, const char *key, char *buf, size_t n)
{
    const char *v = find_value(text, key);
    return v && parse_str(v, buf, n) ? 0 : -1;
}

int jr_strs(const char *text, const char *key, char **out, int cap)
{
    const char *v = find_value(text, key);
    if (!v || *v != '[') return -1;
    v++;
    int n = 0;
    char tmp[256];
    for (;;) {
        while (isspace((unsigned char)*v) || *v == ',') v++;
        if (*v == ']') return n;
        const char *e = parse_str(v, tmp, sizeof tmp);
        if (!e) {
            for (int i = 0; i < n && i < cap; i++) free(out[i]);
            return -1;
        }
        if (n < cap && !(out[n] = strdup(tmp))) {
            for (int i = 0; i < n && i < cap; i++) free(out[i]);
            errno = ENOMEM;
            return -1;
        }
        n++;
        v = e;
    }
}

int cli_load_exit_code(int status)
{
    if (status == NNC_OK) return EXIT_OK;
    if (status == NNC_ENOMEM || status == NNC_ENET || status == NNC_ETHREAD) return EXIT_RUNTIME;
    return EXIT_USAGE;
}

int cli_parse_arch(const char *arch, char *name, size_t n, int *in_channels, int *image_size,
                   int *num_classes)
{
    const char *slash = strchr(arch, '/');
    if (!slash || (size_t)(slash - arch) >= n || slash == arch) return -1;
    memcpy(name, arch, (size_t)(slash - arch));
    name[slash - arch] = 0;
    int got = 0;
    for (const char *p = slash; p && *p == '/';) {
        p++;
        char tag = *p;
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v <= 0 || v > 1000000 || (*end && *end != '/')) return -1;
        if (tag == 'c') *in_channels = (int)v, got |= 1;
        else if (tag == 's' || tag == 'h') *image_size = (int)v, got |= 2;
        else if (tag == 'k') *num_classes = (int)v, got |= 4;
        else return -1;
        p = end;
    }
    return got == 7 ? 0 : -1;
}
