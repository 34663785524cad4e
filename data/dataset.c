/* data/dataset.c - dataset objects, normalisation constants, name dispatch, eval gathering. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

typedef struct norm_entry {
    const char *name;
    float mean[3], std[3];
} norm_entry;

/* Published per-channel statistics of each training set on [0, 1] pixels. imagefolder uses
 * the ImageNet values (grey images: their channel mean). */
static const norm_entry norms[] = {
    {"cifar10", {0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}},
    {"cifar100", {0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}},
    {"fashion-mnist", {0.2860f, 0.2860f, 0.2860f}, {0.3530f, 0.3530f, 0.3530f}},
    {"mnist", {0.1307f, 0.1307f, 0.1307f}, {0.3081f, 0.3081f, 0.3081f}},
    {"imagefolder", {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}},
};

void nnc__dataset_norm(const char *name, int c, float mean[3], float std[3])
{
    for (int i = 0; i < 3; i++) mean[i] = 0.5f, std[i] = 0.25f;
    for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) {
        if (strcmp(norms[k].name, name) != 0) continue;
        for (int i = 0; i < 3; i++) mean[i] = norms[k].mean[i], std[i] = norms[k].std[i];
        if (c == 1 && strcmp(name, "imagefolder") == 0) mean[0] = 0.449f, std[0] = 0.226f;
    }
}

int nnc__dataset_new(const char *name, int n, int c, int h, int w, int num_classes,
                     nnc_dataset **out)
{
    *out = NULL;
    NNC_ASSERT(n >= 0 && c >= 1 && c <= 3 && h > 0 && w > 0, "bad dataset shape");
    size_t pix;
    if (nnc__mul_size((size_t)n, (size_t)c * h * w, &pix))
        return nnc__fail(NNC_ENOMEM, "dataset %s: %d images of %dx%dx%d overflow size_t", name,
                         n, c, h, w);
    nnc_dataset *d = nnc__calloc(1, sizeof *d);
    if (!d) return nnc__fail(NNC_ENOMEM, "dataset %s: out of memory", name);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = n, d->c = c, d->h = h, d->w = w, d->num_classes = num_classes;
    d->images = nnc__alloc(pix);
    d->labels = nnc__alloc((size_t)n * sizeof(int));
    if (!d->images || !d->labels) {
        nnc_dataset_free(d);
        return nnc__fail(NNC_ENOMEM, "dataset %s: cannot allocate %zu bytes of images", name,
                         pix);
    }
    nnc__dataset_norm(name, c, d->mean, d->std);
    *out = d;
    return NNC_OK;
}

int nnc__dataset_set_class_names(nnc_dataset *d, const char *const *names, int count)
{
    NNC_ASSERT(count == d->num_classes, "class name count %d != classes %d", count,
               d->num_classes);
    d->class_names = nnc__calloc((size_t)count, sizeof(char *));
    if (!d->class_names) return nnc__fail(NNC_ENOMEM, "class names: out of memory");
    for (int i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        d->class_names[i] = nnc__alloc(len + 1);
        if (!d->class_names[i]) return nnc__fail(NNC_ENOMEM, "class names: out of memory");
        memcpy(d->class_names[i], names[i], len + 1);
    }
    return NNC_OK;
}

void nnc_dataset_free(nnc_dataset *d)
{
    if (!d) return;
    if (d->class_names) {
        for (int i = 0; i < d->num_classes; i++) nnc__free(d->class_names[i]);
        nnc__free(d->class_names);
    }
    nnc__free(d->images);
    nnc__free(d->labels);
    nnc__free(d);
}

int nnc__fail_errno(const char *what, const char *path, int err)
{
    return nnc__fail(NNC_EIO, "%s %s: %s", what, path, strerror(err));
}

int nnc__read_text(const char *path, size_t max, char **out)
{
    /* a FIFO or device is refused at once (nnc__data_open), never waited on */
    *out = NULL;
    int fd = nnc__data_open(path, "text file", NULL);
    if (fd < 0) return fd;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return nnc__fail_errno("cannot open", path, e);
    }
    char *buf = nnc__alloc(max + 1);
    if (!buf) {
        fclose(f);
        return nnc__fail(NNC_ENOMEM, "reading %s: out of memory", path);
    }
    size_t n = fread(buf, 1, max, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) {
        nnc__free(buf);
        return nnc__fail_errno("cannot read", path, err);
    }
    buf[n] = 0;
    *out = buf;
    return NNC_OK;
}

static const char *const dataset_names[] = {"cifar10", "cifar100", "fashion-mnist", "mnist", "imagefolder"};
#define NUM_DATASETS ((int)(sizeof dataset_names / sizeof dataset_names[0]))

int nnc_dataset_exists(const char *name)
{
    for (int i = 0; name && i < NUM_DATASETS; i++)
        if (strcmp(name, dataset_names[i]) == 0) return 1;
    return 0;
}

/* Levenshtein distance of two short names (99 when either is longer than 63). */
static int name_distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

const char *nnc_dataset_suggest(const char *name)
{
    if (!name || !*name || nnc_dataset_exists(name)) return NULL;
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < NUM_DATASETS; i++) {
        int d = name_distance(name, dataset_names[i]);
        if (d < bd && d < (int)strlen(dataset_names[i])) bd = d, best = dataset_names[i];
    }
    return best;
}

const char *nnc_dataset_list(void) { return "cifar10, cifar100, fashion-mnist, mnist, imagefolder"; }

static int unknown_dataset(const char *name)
{
    const char *best = nnc_dataset_suggest(name);
    if (best)
        return nnc__fail(NNC_EINVAL, "unknown dataset '%s' (did you mean '%s'?); datasets: %s", name, best,
                         nnc_dataset_list());
    return nnc__fail(NNC_EINVAL, "unknown dataset '%s'; datasets: %s", name ? name : "(null)",
                     nnc_dataset_list());
}

/* Debian's dataset-fashion-mnist package, used when it is installed. */
#define DEBIAN_FASHION_MNIST "/usr/share/datasets/fashion-mnist"

const char *nnc_dataset_default_dir(const char *name)
{
    if (!name) return NULL;
    if (strcmp(name, "fashion-mnist") == 0) {
        struct stat st;
        if (stat(DEBIAN_FASHION_MNIST, &st) == 0 && S_ISDIR(st.st_mode)) return DEBIAN_FASHION_MNIST;
        return "data-cache/fashion-mnist";
    }
    if (strcmp(name, "cifar10") == 0) return "data-cache/cifar10";
    if (strcmp(name, "cifar100") == 0) return "data-cache/cifar100";
    if (strcmp(name, "mnist") == 0) return "data-cache/mnist";
    if (strcmp(name, "imagefolder") == 0) return "data-cache/imagefolder";
    return NULL;
}

static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                              "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                              "Bag",         "Ankle boot"};
static const char *const digit_names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

/* First existing file among dir/base.gz and dir/base (the .gz name when neither exists). */
static void idx_path(char *dst, size_t n, const char *dir, const char *base)
{
    struct stat st;
    snprintf(dst, n, "%s/%s.gz", dir, base);
    if (stat(dst, &st) == 0) return;
    snprintf(dst, n, "%s/%s", dir, base);
    if (stat(dst, &st) == 0) return;
    snprintf(dst, n, "%s/%s.gz", dir, base);
}

static int load_idx_named(const char *name, const char *dir, int train, nnc_dataset **out)
{
    char ip[4096], lp[4096];
    idx_path(ip, sizeof ip, dir, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte");
    idx_path(lp, sizeof lp, dir, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte");
    int s = nnc_idx_load(ip, lp, out);
    if (s) return s;
    nnc_dataset *d = *out;
    snprintf(d->name, sizeof d->name, "%s", name);
    nnc__dataset_norm(name, d->c, d->mean, d->std);
    if (d->num_classes == 10) {
        s = nnc__dataset_set_class_names(
            d, strcmp(name, "fashion-mnist") == 0 ? fashion_names : digit_names, 10);
        if (s) {
            nnc_dataset_free(d);
            *out = NULL;
        }
    }
    return s;
}

int nnc_dataset_load(const char *name, const char *dir, int train, int limit, nnc_dataset **out)
{
    *out = NULL;
    const char *def = nnc_dataset_default_dir(name);
    if (!def) return unknown_dataset(name);
    if (!dir) dir = def;
    int s;
    if (strcmp(name, "cifar10") == 0 || strcmp(name, "cifar100") == 0) {
        s = nnc_cifar_load(dir, strcmp(name, "cifar100") == 0, train, out);
    } else if (strcmp(name, "imagefolder") == 0) {
        s = nnc__imagefolder_load_split(dir, train, out);
    } else {
        s = load_idx_named(name, dir, train, out);
        if (s == NNC_EIO && !nnc_dataset_present(name, dir))
            s = nnc__fail_prefix(s, "%s is not in %s (nnc data fetch %s%s%s downloads it)", name, dir, name,
                                 dir == def ? "" : " --data ", dir == def ? "" : dir);
    }
    if (s) return s;
    if (limit > 0 && limit < (*out)->n) (*out)->n = limit;
    return NNC_OK;
}

void nnc_dataset_gather(const nnc_dataset *d, const uint32_t *idx, int n, float *x, int *y)
{
    size_t img = (size_t)d->c * d->h * d->w;
    for (int i = 0; i < n; i++) {
        NNC_ASSERT(idx[i] < (uint32_t)d->n, "gather index %u >= n %d", idx[i], d->n);
        nnc_augment_image(d, d->images + (size_t)idx[i] * img, 0, 0, 0, 0, x + (size_t)i * img);
        if (y) y[i] = d->labels[idx[i]];
    }
}
