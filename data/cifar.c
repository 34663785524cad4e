/* data/cifar.c - CIFAR-10 / CIFAR-100 binary loaders.
 *
 * cifar10: data_batch_{1..5}.bin (train) and test_batch.bin, each 10000 records of
 *   1 label byte + 3072 pixel bytes (R plane, G plane, B plane; 32x32 row-major) = 30730000 B.
 * cifar100: train.bin (50000 records) and test.bin (10000), 1 coarse + 1 fine label byte +
 *   3072 pixel bytes; the fine label (100 classes) is used.
 * `dir` may be the extracted folder (cifar-10-batches-bin, cifar-100-binary) or its parent.
 * Every file size is checked before reading (messages name the file, expected vs actual size,
 * the first incomplete record and the byte offset where the file ends, or a hint when the
 * record size fits the other CIFAR format); every label is range-checked.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

static long test_scale; /* NNC_TESTING: records per 10000 official records; 0 = official */

#ifdef NNC_TESTING
void nnc__cifar_test_scale(long records_per_10000) { test_scale = records_per_10000; }
#endif

long nnc__cifar_records(int cifar100, int train)
{
    long per = test_scale > 0 ? test_scale : 10000;
    return cifar100 && train ? 5 * per : per;
}

static const char *const cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
static const char *const cifar100_names[100] = {
    "apple",      "aquarium_fish", "baby",     "bear",       "beaver",      "bed",
    "bee",        "beetle",        "bicycle",  "bottle",     "bowl",        "boy",
    "bridge",     "bus",           "butterfly", "camel",     "can",         "castle",
    "caterpillar", "cattle",       "chair",    "chimpanzee", "clock",       "cloud",
    "cockroach",  "couch",         "crab",     "crocodile",  "cup",         "dinosaur",
    "dolphin",    "elephant",      "flatfish", "forest",     "fox",         "girl",
    "hamster",    "house",         "kangaroo", "keyboard",   "lamp",        "lawn_mower",
    "leopard",    "lion",          "lizard",   "lobster",    "man",         "maple_tree",
    "motorcycle", "mountain",      "mouse",    "mushroom",   "oak_tree",    "orange",
    "orchid",     "otter",         "palm_tree", "pear",      "pickup_truck", "pine_tree",
    "plain",      "plate",         "poppy",    "porcupine",  "possum",      "rabbit",
    "raccoon",    "ray",           "road",     "rocket",     "rose",        "sea",
    "seal",       "shark",         "shrew",    "skunk",      "skyscraper",  "snail",
    "snake",      "spider",        "squirrel", "streetcar",  "sunflower",   "sweet_pepper",
    "table",      "tank",          "telephone", "television", "tiger",      "tractor",
    "train",      "trout",         "tulip",    "turtle",     "wardrobe",    "whale",
    "willow_tree", "wolf",         "woman",    "worm"};

int nnc__cifar_check_size(const char *file, uint64_t size, int cifar100, long records)
{
    const uint64_t rec = cifar100 ? 3074 : 3073, other = cifar100 ? 3073 : 3074;
    const uint64_t want = rec * (uint64_t)records;
    if (size == want) return NNC_OK;
    if (size % other == 0 && size % rec != 0 && size > 0) {
        return nnc__fail(NNC_EFORMAT,
                         "%s: %llu bytes, expected %llu (%ld records of %llu bytes); record size "
                         "%llu suggests %s (%llu records) - use dataset %s",
                         file, (unsigned long long)size, (unsigned long long)want, records,
                         (unsigned long long)rec, (unsigned long long)other,
                         cifar100 ? "CIFAR-10" : "CIFAR-100",
                         (unsigned long long)(size / other), cifar100 ? "cifar10" : "cifar100");
    }
    if (size < want) {
        return nnc__fail(NNC_EFORMAT,
                         "%s: truncated: expected %llu bytes (%ld records of %llu), actual size "
                         "%llu: record %llu is incomplete, file ends at byte offset %llu (%llu "
                         "bytes into the record)",
                         file, (unsigned long long)want, records, (unsigned long long)rec,
                         (unsigned long long)size, (unsigned long long)(size / rec),
                         (unsigned long long)size, (unsigned long long)(size % rec));
    }
    return nnc__fail(NNC_EFORMAT,
                     "%s: expected %llu bytes (%ld records of %llu), actual size %llu: %llu "
                     "unexpected bytes after record %ld starting at byte offset %llu",
                     file, (unsigned long long)want, records, (unsigned long long)rec,
                     (unsigned long long)size, (unsigned long long)(size - want), records - 1,
                     (unsigned long long)want);
}

int nnc__cifar_parse_mem(const char *file, const uint8_t *buf, size_t len, int cifar100,
                         long first, uint8_t *images, int *labels)
{
    const size_t rec = cifar100 ? 3074 : 3073;
    const int classes = cifar100 ? 100 : 10;
    NNC_ASSERT(len % rec == 0, "CIFAR chunk of %zu bytes is not a whole number of records", len);
    for (size_t i = 0; i < len / rec; i++) {
        const uint8_t *r = buf + i * rec;
        long index = first + (long)i;
        unsigned long long off = (unsigned long long)index * rec;
        if (cifar100 && r[0] >= 20)
            return nnc__fail(NNC_EFORMAT,
                             "%s: record %ld (byte offset %llu): coarse label byte %u out of "
                             "range [0, 20)",
                             file, index, off, r[0]);
        uint8_t label = r[cifar100 ? 1 : 0];
        if (label >= classes)
            return nnc__fail(NNC_EFORMAT,
                             "%s: record %ld (byte offset %llu): label byte %u out of range "
                             "[0, %d)",
                             file, index, off + (cifar100 ? 1 : 0), label, classes);
        labels[i] = label;
        memcpy(images + i * NNC_CIFAR_PIXELS, r + rec - NNC_CIFAR_PIXELS, NNC_CIFAR_PIXELS);
    }
    return NNC_OK;
}

/* Load one file's `records` records into the dataset starting at record `first`. */
static int load_file(const char *path, int cifar100, long records, long first, nnc_dataset *d)
{
    struct stat st;
    int fd = nnc__data_open(path, "CIFAR file", &st);
    if (fd < 0) return fd;
    int s = nnc__cifar_check_size(path, (uint64_t)st.st_size, cifar100, records);
    if (s) {
        close(fd);
        return s;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return nnc__fail_errno("cannot open", path, e);
    }
    const size_t rec = cifar100 ? 3074 : 3073, chunk = 1024;
    uint8_t *buf = nnc__alloc(rec * chunk);
    if (!buf) {
        fclose(f);
        return nnc__fail(NNC_ENOMEM, "%s: out of memory", path);
    }
    for (long r = 0; r < records && !s; r += (long)chunk) {
        size_t k = (size_t)(records - r) < chunk ? (size_t)(records - r) : chunk;
        size_t got = fread(buf, rec, k, f);
        if (got != k) {
            s = ferror(f) ? nnc__fail_errno("cannot read", path, errno)
                          : nnc__fail(NNC_EFORMAT,
                                      "%s: file shrank while reading: ends in record %ld",
                                      path, r + (long)got);
            break;
        }
        s = nnc__cifar_parse_mem(path, buf, rec * k, cifar100, r,
                                 d->images + (size_t)(first + r) * NNC_CIFAR_PIXELS,
                                 d->labels + first + r);
    }
    nnc__free(buf);
    fclose(f);
    return s;
}

/* The folder holding the files: dir/<sub> when that folder exists, else dir itself. */
static void resolve(char *dst, size_t n, const char *dir, const char *sub)
{
    struct stat st;
    snprintf(dst, n, "%s/%s", dir, sub);
    if (stat(dst, &st) == 0 && S_ISDIR(st.st_mode)) return;
    snprintf(dst, n, "%s", dir);
}

/* Class names from the dataset's text file (one per line; a file that is missing, not a
 * regular file, over 64 KiB or with the wrong number of names gives the built-in names). */
static int load_names(nnc_dataset *d, const char *folder, int cifar100)
{
    char p[4200], *text = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/%s", folder, cifar100 ? "fine_label_names.txt" : "batches.meta.txt");
    const char *names[100];
    int count = 0;
    if (nnc__data_read_small(p, "class-name list", 1 << 16, (uint8_t **)&text, &len) == NNC_OK) {
        char *save = NULL;
        for (char *t = strtok_r(text, "\r\n", &save); t; t = strtok_r(NULL, "\r\n", &save)) {
            size_t n = strlen(t);
            while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) t[--n] = 0;
            if (n == 0) continue;
            if (count == d->num_classes) {
                count++;
                break;
            }
            names[count++] = t;
        }
    }
    nnc__clear_error();
    int s;
    if (count != d->num_classes)
        s = nnc__dataset_set_class_names(d, cifar100 ? cifar100_names : cifar10_names,
                                         d->num_classes);
    else
        s = nnc__dataset_set_class_names(d, names, count);
    nnc__free(text);
    return s;
}

int nnc_cifar_load(const char *dir, int cifar100, int train, nnc_dataset **out)
{
    *out = NULL;
    char folder[4096], path[4200];
    const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    if (strlen(dir) + strlen(sub) + 2 > sizeof folder)
        return nnc__fail(NNC_EINVAL, "CIFAR folder path of %zu bytes is too long (at most %zu)",
                         strlen(dir), sizeof folder - strlen(sub) - 2);
    resolve(folder, sizeof folder, dir, sub);
    long per = nnc__cifar_records(cifar100, train);
    int files = !cifar100 && train ? 5 : 1;
    nnc_dataset *d;
    int s = nnc__dataset_new(cifar100 ? "cifar100" : "cifar10", (int)(per * files), 3, 32, 32,
                             cifar100 ? 100 : 10, &d);
    if (s) return s;
    for (int i = 0; i < files && !s; i++) {
        if (cifar100)
            snprintf(path, sizeof path, "%s/%s", folder, train ? "train.bin" : "test.bin");
        else if (train)
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", folder, i + 1);
        else
            snprintf(path, sizeof path, "%s/test_batch.bin", folder);
        s = load_file(path, cifar100, per, (long)i * per, d);
    }
    if (s) {
        struct stat st;
        char other[4200];
        snprintf(other, sizeof other, "%s/%s", folder, cifar100 ? "test_batch.bin" : "test.bin");
        if (stat(path, &st) != 0 && stat(other, &st) == 0)
            nnc__fail_prefix(s, "%s looks like %s (found %s)", folder,
                             cifar100 ? "CIFAR-10" : "CIFAR-100", other);
        else if (stat(path, &st) != 0)
            nnc__fail_prefix(s, "%s (looked in %s and %s/%s)", cifar100 ? "CIFAR-100" : "CIFAR-10",
                             dir, dir, sub);
        nnc_dataset_free(d);
        return s;
    }
    s = load_names(d, folder, cifar100);
    if (s) {
        nnc_dataset_free(d);
        return s;
    }
    *out = d;
    return NNC_OK;
}
