/* data/data.h - datasets, download + checksum, augmentation and sharded batch loaders.
 *
 * A dataset is held in memory as uint8 images (N, C, H, W) plus int labels; the loader turns
 * batches into normalised float32 NCHW tensors. Formats:
 *   cifar10 / cifar100  the official binary versions (data_batch_{1..5}.bin + test_batch.bin;
 *                       train.bin + test.bin with coarse+fine labels, fine used), every size,
 *                       record count and label validated (exact messages: see data/cifar.c);
 *                       dir may be the extracted folder or its parent
 *   mnist / fashion-mnist  IDX files, gzipped or not; fashion-mnist defaults to Debian's
 *                       /usr/share/datasets/fashion-mnist when installed (else data-cache/)
 *   imagefolder         DIR/<class>/<image> PNG/BMP/PPM/PGM via stb_image, JPEG via
 *                       libjpeg-turbo (see data/image.c), resized to a fixed
 *                       size; dimensions capped before any allocation
 * Image folders: classes are the sub-folders sorted by name; an empty class folder is an
 * error, zero-byte and non-image files are skipped and counted in one log warning, images above
 * max_dim are an error (checked from the header, before decoding); bilinear resize.
 * Normalisation: published per-dataset mean/std (CIFAR-10 (0.4914,0.4822,0.4465) /
 * (0.2470,0.2435,0.2616), CIFAR-100 (0.5071,0.4865,0.4409) / (0.2673,0.2564,0.2762),
 * Fashion-MNIST 0.2860/0.3530, MNIST 0.1307/0.3081, image folders ImageNet's).
 * Download (cifar10/cifar100/mnist/fashion-mnist): official URL, progress callback, MD5 check
 * against the published checksums, a temp folder renamed into place only when complete
 * (data/fetch.c).
 *
 * Errors: NNC_EIO (path + strerror), NNC_EFORMAT (file, record index, byte offset, expected vs
 * found), NNC_ECHECKSUM, NNC_ENET.
 * Thread-safety: a dataset is immutable after loading and may be shared by many loaders; each
 * loader belongs to one thread (its prefetch thread is internal).
 */
#ifndef NNC_DATA_H
#define NNC_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "nn/rng.h"

#define NNC_DATA_MAX_CLASSES 1000

typedef struct nnc_dataset {
    char name[32];          /* "cifar10", "fashion-mnist", ... */
    int n, c, h, w;         /* images (N, C, H, W) */
    int num_classes;
    uint8_t *images;        /* n*c*h*w bytes, CHW per image */
    int *labels;            /* n entries in [0, num_classes) */
    float mean[3], std[3];  /* per-channel normalisation (on [0,1] pixel values); c <= 3 */
    char **class_names;     /* num_classes strings, or NULL */
} nnc_dataset;

void nnc_dataset_free(nnc_dataset *d);

/* Load by dataset name ("cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder"),
 * dir = data folder (NULL = the dataset's default: data-cache/<name>, or Debian's folder for
 * fashion-mnist). train selects the training or test split (imagefolder: DIR/train, DIR/test,
 * which must list the same classes). limit > 0 keeps only the first `limit` images.
 * mnist/fashion-mnist read {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. */
int nnc_dataset_load(const char *name, const char *dir, int train, int limit, nnc_dataset **out);
/* Default data folder for a dataset name (never NULL for known names, NULL otherwise):
 * data-cache/<name>; fashion-mnist: Debian's /usr/share/datasets/fashion-mnist when that folder
 * exists, else data-cache/fashion-mnist. */
const char *nnc_dataset_default_dir(const char *name);
/* 1 when name is a dataset nnc knows (cifar10 cifar100 fashion-mnist mnist imagefolder). */
int nnc_dataset_exists(const char *name);
/* The known dataset name closest to an unknown one (a likely typo), or NULL. */
const char *nnc_dataset_suggest(const char *name);
/* "cifar10, cifar100, fashion-mnist, mnist, imagefolder" (for messages). */
const char *nnc_dataset_list(void);
/* 1 for the datasets nnc_dataset_fetch can download (cifar10 cifar100 mnist fashion-mnist). */
int nnc_dataset_downloadable(const char *name);

/* Format loaders behind nnc_dataset_load. */
int nnc_cifar_load(const char *dir, int cifar100, int train, nnc_dataset **out);
int nnc_idx_load(const char *images_path, const char *labels_path, nnc_dataset **out);
typedef struct nnc_imagefolder_config {
    int size;              /* output H = W (images are resized), default 32 */
    int channels;          /* 1 or 3, default 3 */
    int max_dim;           /* larger images are rejected before decoding, default 4096 */
} nnc_imagefolder_config;
int nnc_imagefolder_load(const char *dir, const nnc_imagefolder_config *cfg, nnc_dataset **out);
/* Decode one image file (PNG/JPEG/BMP/PPM/PGM, recognised by content) into
 * (channels, size, size) uint8 CHW, bilinear-resized (predict uses this). */
int nnc_image_load(const char *path, int channels, int size, int max_dim, uint8_t *out);

/* ---- download ---- */
typedef void (*nnc_progress_fn)(double done_bytes, double total_bytes, void *ud);
typedef struct nnc_fetch_config {
    const char *url;        /* NULL = official URL of the dataset */
    const char *md5;        /* NULL = published checksum */
    nnc_progress_fn progress;
    void *ud;
} nnc_fetch_config;
/* Make sure dataset `name` (cifar10|cifar100|mnist|fashion-mnist) is present in dir (NULL =
 * default), downloading it if not. Returns NNC_OK when already present (no network access).
 * cifar10/cifar100: one archive from cfg->url (NULL = the official URL), MD5 cfg->md5, extracted.
 * mnist/fashion-mnist: the four .gz IDX files from the base URL cfg->url (NULL = the official
 * mirrors; the file names are appended), each checked against its published MD5, or against
 * cfg->md5 = four comma-separated MD5s (train images, train labels, test images, test labels).
 * Errors: NNC_ENET (URL + curl's message: HTTP error, interrupted transfer), NNC_ECHECKSUM
 * (URL, expected vs found MD5; nothing is left behind), NNC_EFORMAT (bad archive / IDX files),
 * NNC_EINVAL (malformed cfg->md5), NNC_EUNSUPPORTED (other datasets, unless already present).
 * Not for concurrent use on the same dir. */
int nnc_dataset_fetch(const char *name, const char *dir, const nnc_fetch_config *cfg);
/* 1 if dir (NULL = default) holds the dataset: CIFAR: every file with its exact size, in dir or
 * dir/<official folder>; mnist/fashion-mnist: the four IDX files (.gz or raw). */
int nnc_dataset_present(const char *name, const char *dir);

/* ---- loader ---- */
typedef struct nnc_loader_config {
    int batch;              /* 128 */
    int shuffle;            /* 1: a permutation per (seed, epoch) */
    int augment;            /* 1: random crop (pad 4) + horizontal flip; 0 at test time */
    int crop_pad;           /* 4 */
    int flip;               /* 1 */
    int drop_last;          /* 1 for training */
    int shard, num_shards;  /* this loader takes slice `shard` of every epoch's permutation */
    uint64_t seed;
    int prefetch;           /* 1: fill the next batch on a background thread */
} nnc_loader_config;

nnc_loader_config nnc_loader_config_default(void);

/* Order: epoch e visits a permutation drawn from (seed, e); shard k of n takes the contiguous
 * slice [k*N/n, (k+1)*N/n) of it (disjoint, union = all, sizes differ by at most one), or with
 * drop_last the equal slice [k*(N/n), (k+1)*(N/n)) (same batches per epoch on every shard).
 * Augmentation draws depend only on (seed, epoch, shard, batch), so prefetch on/off and seek()
 * give bit-identical batches. Crop padding is pixel value 0 (black), then normalised, as
 * torchvision's RandomCrop(padding=4) + Normalize. */
typedef struct nnc_loader nnc_loader;

int nnc_loader_new(const nnc_dataset *d, const nnc_loader_config *cfg, nnc_loader **out);
void nnc_loader_free(nnc_loader *l);
/* Number of batches per epoch for this shard. */
long nnc_loader_batches_per_epoch(const nnc_loader *l);
/* Next batch of the current epoch into x (batch*C*H*W floats, normalised) and y (batch ints).
 * Returns the number of images (< batch only for the last batch without drop_last), or 0 at
 * the end of the epoch, after which the next call starts epoch+1. No allocation. */
int nnc_loader_next(nnc_loader *l, float *x, int *y);
/* Resume support: the position is (epoch, batch index within epoch), epoch >= 0 and
 * 0 <= batch <= batches_per_epoch. Returns NNC_OK, or NNC_EINVAL naming the position and the
 * range (the loader is then unchanged). */
int nnc_loader_seek(nnc_loader *l, long epoch, long batch);
long nnc_loader_epoch(const nnc_loader *l);
long nnc_loader_batch_index(const nnc_loader *l);

/* Normalised, un-augmented images idx[0..n) into x (eval, GRAWA probe batches). */
void nnc_dataset_gather(const nnc_dataset *d, const uint32_t *idx, int n, float *x, int *y);
/* Augment one CHW uint8 image into a normalised float image (used by the loader; exposed for
 * tests): crop offsets (dy, dx) in [0, 2*pad], flip 0/1. */
void nnc_augment_image(const nnc_dataset *d, const uint8_t *src, int pad, int dy, int dx, int flip,
                       float *dst);

#endif
