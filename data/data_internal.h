/* data/data_internal.h - helpers shared by the data/ sources and their tests (not public API).
 *
 * The parsers are callable on memory buffers so the fuzz harnesses (tests/fuzz/) and the tests
 * reach exactly the code that reads files. Thread-safety: all functions are reentrant except
 * the NNC_TESTING record-count override, which tests set before loading.
 */
#ifndef NNC_DATA_INTERNAL_H
#define NNC_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "data/data.h"

/* Allocate an empty dataset with n images of (c, h, w) and the dataset's normalisation. */
int nnc__dataset_new(const char *name, int n, int c, int h, int w, int num_classes,
                     nnc_dataset **out);
/* Copy `count` names into d->class_names (count == d->num_classes). */
int nnc__dataset_set_class_names(nnc_dataset *d, const char *const *names, int count);
/* Standard per-channel mean/std of a dataset name (unknown names: 0.5 / 0.25). */
void nnc__dataset_norm(const char *name, int c, float mean[3], float std[3]);
/* Format an errno-style failure on `path`: "<what> <path>: <strerror>" with NNC_EIO. */
int nnc__fail_errno(const char *what, const char *path, int err);
/* Read a small text file (<= max bytes) into a NUL-terminated nnc__alloc'd buffer. */
int nnc__read_text(const char *path, size_t max, char **out);

/* ---- opening data files (data/input.c) ---- */
struct stat;
/* Open a data file read-only: "cannot open PATH: <strerror>" (NNC_EIO) when it is missing or a
 * folder; anything else that is not a regular file (FIFO, device, socket) is refused without
 * blocking (nnc__open_regular, `what` names its role). Returns a blocking descriptor >= 0 (its
 * fstat in *st when st is not NULL) or a negative nnc_status. */
int nnc__data_open(const char *path, const char *what, struct stat *st);
/* Read a whole data file of at most max bytes (larger: NNC_EFORMAT naming the cap) into an
 * nnc__alloc'd buffer with a NUL after the *len bytes. */
int nnc__data_read_small(const char *path, const char *what, size_t max, uint8_t **out,
                         size_t *len);

/* ---- CIFAR ---- */
#define NNC_CIFAR_PIXELS 3072
/* Records per file: cifar10 10000 per batch file; cifar100 train 50000, test 10000. */
long nnc__cifar_records(int cifar100, int train);
/* Validate a CIFAR file size S against `records` records; message names the file, the first
 * incomplete record and the byte offset where the file ends, or the other-format hint. */
int nnc__cifar_check_size(const char *file, uint64_t size, int cifar100, long records);
/* Parse `len` bytes (a whole number of records; the first is record `first` of the file, for
 * messages): pixels into images[i*3072], labels into labels[i]. Labels are validated. */
int nnc__cifar_parse_mem(const char *file, const uint8_t *buf, size_t len, int cifar100,
                         long first, uint8_t *images, int *labels);
#ifdef NNC_TESTING
/* Tests only: records per 10000 official records (0 = official sizes), so generated CIFAR
 * files can be small; fetch/present/load all use the same geometry. */
void nnc__cifar_test_scale(long records_per_10000);
#endif

/* ---- IDX ---- */
typedef struct nnc__reader {
    /* Read up to n bytes into dst; returns bytes read (< n only at end of data) or -1. */
    long (*read)(void *ctx, void *dst, size_t n);
    const char *(*error)(void *ctx); /* text for the last -1 (may be NULL) */
    void *ctx;
} nnc__reader;
/* Parse an IDX images stream (magic 0x00000803) and a labels stream (0x00000801) into a
 * dataset; the byte buffers grow as data arrives, so a lying header never allocates more
 * than about twice the data actually present. */
int nnc__idx_parse(const char *img_name, nnc__reader *img, const char *lbl_name,
                   nnc__reader *lbl, const char *dsname, nnc_dataset **out);
/* Memory reader over buf[0..len). */
typedef struct nnc__mem_src {
    const uint8_t *buf;
    size_t len, pos;
} nnc__mem_src;
long nnc__mem_read(void *ctx, void *dst, size_t n);

/* ---- image folder ---- */
/* Load DIR/train or DIR/test with the default config; both splits must list the same class
 * folders (checked when the other split exists). */
int nnc__imagefolder_load_split(const char *dir, int train, nnc_dataset **out);
/* Decode an in-memory image file (named `path` in messages) into (channels, size, size) CHW;
 * the dimension cap is checked before decoding. *skip_kind >= 0 marks data problems the
 * image-folder loader skips (0 empty, 1 not an image, 2 undecodable), -1 otherwise. */
int nnc__image_decode_mem(const char *path, const uint8_t *buf, size_t len, int channels,
                          int size, int max_dim, uint8_t *out, int *skip_kind);
/* 1 when buf starts with the JPEG magic bytes FF D8 FF. */
int nnc__jpeg_is(const uint8_t *buf, size_t len);
/* Decode a JPEG with libjpeg-turbo into an nnc__alloc'd HWC buffer (*w x *h x channels, 1 or 3);
 * dimensions above max_dim are refused before decoding; *skip_kind as above. */
int nnc__jpeg_decode(const char *path, const uint8_t *buf, size_t len, int channels, int max_dim,
                     uint8_t **px, int *w, int *h, int *skip_kind);

/* ---- tar ---- */
/* Extract a .tar.gz file into folder dest (which must exist). Rejects absolute names, "..",
 * links and special files; checks every header checksum and size. */
int nnc__untar_gz(const char *tgz_path, const char *dest);
/* The tar reader behind it, over any byte stream (named `name` in messages); dest NULL
 * validates the whole archive without writing anything (fuzzing). */
int nnc__untar(const char *name, nnc__reader *r, const char *dest);
/* Recursively remove a folder this library created (temp folders). Best effort. */
void nnc__rmtree(const char *path);

/* ---- md5 ---- */
typedef struct nnc__md5 {
    uint32_t state[4];
    uint64_t bytes;
    uint8_t buf[64];
} nnc__md5;
void nnc__md5_init(nnc__md5 *m);
void nnc__md5_update(nnc__md5 *m, const void *data, size_t n);
/* Finish and write 32 lowercase hex digits + NUL into hex[33]. */
void nnc__md5_final(nnc__md5 *m, char hex[33]);

#endif
