/* tests/common/datagen.h - generated dataset files for tests: CIFAR-format binaries, tar
 * archives, gzip, a temp-folder helper. Pixel j of record i is dg_pixel(i, j); record i has
 * fine label i % classes (coarse i % 20). */
#ifndef NNC_TEST_DATAGEN_H
#define NNC_TEST_DATAGEN_H

#include <stddef.h>
#include <stdint.h>

static inline uint8_t dg_pixel(long i, long j) { return (uint8_t)((i * 5 + j * 3) & 255); }

/* Write `records` CIFAR records (3073 or 3074 bytes) to path. Returns 0 on success. */
int dg_write_cifar(const char *path, int cifar100, long records);
/* Write a complete dataset folder (dir/<official folder>/...) with `records` per 10000. */
int dg_write_cifar_dataset(const char *dir, int cifar100, long records);

typedef struct dg_buf {
    uint8_t *p;
    size_t n, cap;
} dg_buf;
void dg_append(dg_buf *b, const void *p, size_t n);
/* Append a ustar entry (type '0' file, '5' folder, '2' symlink ...) and its padded data. */
void dg_tar_add(dg_buf *b, const char *name, char type, const void *data, size_t len);
/* Append the two zero blocks that end an archive. */
void dg_tar_end(dg_buf *b);
/* gzip (level 1) of p[0..n) into a malloc'd buffer. */
uint8_t *dg_gzip(const uint8_t *p, size_t n, size_t *out_len);
/* The official-layout CIFAR .tar.gz with `records` records per 10000 (malloc'd). */
uint8_t *dg_cifar_tgz(int cifar100, long records, size_t *len);
/* Write bytes to a file. Returns 0 on success. */
int dg_write_file(const char *path, const void *p, size_t n);
/* mkdtemp under /tmp into buf (at least 64 bytes); aborts the test on failure. */
void dg_tmpdir(char *buf, const char *tag);

#endif
