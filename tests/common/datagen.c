/* tests/common/datagen.c - see datagen.h. */
#include "tests/common/datagen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

int dg_write_cifar(const char *path, int cifar100, long records)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint8_t rec[3074];
    size_t lab = cifar100 ? 2 : 1;
    for (long i = 0; i < records; i++) {
        if (cifar100) rec[0] = (uint8_t)(i % 20), rec[1] = (uint8_t)(i % 100);
        else rec[0] = (uint8_t)(i % 10);
        for (long j = 0; j < 3072; j++) rec[lab + j] = dg_pixel(i, j);
        if (fwrite(rec, 1, lab + 3072, f) != lab + 3072) {
            fclose(f);
            return -1;
        }
    }
    return fclose(f);
}

int dg_write_cifar_dataset(const char *dir, int cifar100, long records)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin");
    mkdir(dir, 0755);
    if (mkdir(p, 0755) != 0) return -1;
    int r = 0;
    if (cifar100) {
        snprintf(p, sizeof p, "%s/cifar-100-binary/train.bin", dir);
        r |= dg_write_cifar(p, 1, 5 * records);
        snprintf(p, sizeof p, "%s/cifar-100-binary/test.bin", dir);
        r |= dg_write_cifar(p, 1, records);
    } else {
        for (int k = 1; k <= 5; k++) {
            snprintf(p, sizeof p, "%s/cifar-10-batches-bin/data_batch_%d.bin", dir, k);
            r |= dg_write_cifar(p, 0, records);
        }
        snprintf(p, sizeof p, "%s/cifar-10-batches-bin/test_batch.bin", dir);
        r |= dg_write_cifar(p, 0, records);
    }
    return r;
}

void dg_append(dg_buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

void dg_tar_add(dg_buf *b, const char *name, char type, const void *data, size_t len)
{
    uint8_t h[512] = {0};
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)len);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar\0" "00", 8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    dg_append(b, h, 512);
    dg_append(b, data, len);
    static const uint8_t zero[512];
    if (len % 512) dg_append(b, zero, 512 - len % 512);
}

void dg_tar_end(dg_buf *b)
{
    static const uint8_t zero[1024];
    dg_append(b, zero, 1024);
}

uint8_t *dg_gzip(const uint8_t *p, size_t n, size_t *out_len)
{
    z_stream z = {0};
    deflateInit2(&z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&z, n) + 64;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)p, z.avail_in = (uInt)n;
    z.next_out = out, z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

static void add_cifar_file(dg_buf *b, const char *name, int cifar100, long records)
{
    size_t rs = cifar100 ? 3074 : 3073, lab = cifar100 ? 2 : 1;
    uint8_t *d = malloc(rs * records);
    for (long i = 0; i < records; i++) {
        uint8_t *r = d + i * rs;
        if (cifar100) r[0] = (uint8_t)(i % 20), r[1] = (uint8_t)(i % 100);
        else r[0] = (uint8_t)(i % 10);
        for (long j = 0; j < 3072; j++) r[lab + j] = dg_pixel(i, j);
    }
    dg_tar_add(b, name, '0', d, rs * records);
    free(d);
}

uint8_t *dg_cifar_tgz(int cifar100, long records, size_t *len)
{
    dg_buf b = {0};
    char name[128];
    if (cifar100) {
        dg_tar_add(&b, "cifar-100-binary/", '5', NULL, 0);
        add_cifar_file(&b, "cifar-100-binary/train.bin", 1, 5 * records);
        add_cifar_file(&b, "cifar-100-binary/test.bin", 1, records);
    } else {
        dg_tar_add(&b, "cifar-10-batches-bin/", '5', NULL, 0);
        const char *meta = "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
        dg_tar_add(&b, "cifar-10-batches-bin/batches.meta.txt", '0', meta, strlen(meta));
        for (int k = 1; k <= 5; k++) {
            snprintf(name, sizeof name, "cifar-10-batches-bin/data_batch_%d.bin", k);
            add_cifar_file(&b, name, 0, records);
        }
        add_cifar_file(&b, "cifar-10-batches-bin/test_batch.bin", 0, records);
    }
    dg_tar_end(&b);
    uint8_t *gz = dg_gzip(b.p, b.n, len);
    free(b.p);
    return gz;
}

int dg_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return (fclose(f) != 0 || w != n) ? -1 : 0;
}

void dg_tmpdir(char *buf, const char *tag)
{
    snprintf(buf, 64, "/tmp/nnc_%s_XXXXXX", tag);
    if (!mkdtemp(buf)) abort();
}
