/* data/fetch.c - download CIFAR-10/100, MNIST and Fashion-MNIST with libcurl, verify MD5s,
 * extract (CIFAR), rename into place.
 *
 * MNIST / Fashion-MNIST: the four .gz IDX files are downloaded into a fresh temp folder
 * DIR/.nnc-fetch-XXXXXX, each checked against its published MD5 (the ones torchvision's
 * datasets/mnist.py lists), then parsed as IDX (images + labels agree), and only then renamed
 * one by one into DIR: every file under its final name is complete and verified. MNIST tries
 * its mirrors in order (a network failure moves on to the next).
 *
 * Sequence: DIR/.nnc-fetch-XXXXXX (a fresh temp folder next to the destination; stale ones
 * from crashed runs are removed first) receives archive.tar.gz while its MD5 is computed on the
 * fly; a mismatch deletes the temp folder and returns NNC_ECHECKSUM. The archive is extracted
 * into the temp folder (every file fsync'ed), checked for completeness (all files, exact
 * sizes), and its dataset folder is renamed to DIR/<folder> in one rename(2): a crash at any
 * point leaves either nothing or a complete dataset under the final name.
 * Thread-safety: curl is initialised once (pthread_once); concurrent fetches into the same
 * DIR are not supported.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "nn/status.h"

typedef struct ds_info {
    const char *name, *folder, *url, *md5;
    int cifar100;
} ds_info;

/* Published on https://www.cs.toronto.edu/~kriz/cifar.html (binary versions). */
static const ds_info infos[] = {
    {"cifar10", "cifar-10-batches-bin", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
     "c32a1d4ab5d03f1284b67883e8d87530", 0},
    {"cifar100", "cifar-100-binary", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
     "03b5dce01913d631647c71ecec9e9cb8", 1},
};

/* The IDX sets: files in the order train images, train labels, test images, test labels. */
static const char *const idx_files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

typedef struct idx_info {
    const char *name;
    const char *mirrors[2];
    const char *md5[4];
} idx_info;

/* Mirrors and MD5s as in torchvision/datasets/mnist.py (MNIST.mirrors/resources,
 * FashionMNIST.mirrors/resources). */
static const idx_info idx_infos[] = {
    {"mnist",
     {"https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"},
     {"f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
      "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"}},
    {"fashion-mnist",
     {"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", NULL},
     {"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"}},
};

static const idx_info *find_idx_info(const char *name)
{
    for (size_t i = 0; name && i < sizeof idx_infos / sizeof idx_infos[0]; i++)
        if (strcmp(idx_infos[i].name, name) == 0) return &idx_infos[i];
    return NULL;
}

static const ds_info *find_info(const char *name)
{
    for (size_t i = 0; name && i < sizeof infos / sizeof infos[0]; i++)
        if (strcmp(infos[i].name, name) == 0) return &infos[i];
    return NULL;
}

/* Check that folder holds every file of the dataset with its exact size; on failure a
 * message naming the first missing/wrong file is recorded (status returned). */
static int check_folder(const ds_info *di, const char *folder)
{
    char p[4200];
    struct stat st;
    const char *files[6];
    long long sizes[6];
    int n = 0;
    if (di->cifar100) {
        files[n] = "train.bin", sizes[n++] = 3074LL * nnc__cifar_records(1, 1);
        files[n] = "test.bin", sizes[n++] = 3074LL * nnc__cifar_records(1, 0);
    } else {
        static const char *names[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                       "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
        for (; n < 6; n++) files[n] = names[n], sizes[n] = 3073LL * nnc__cifar_records(0, 0);
    }
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", folder, files[i]);
        if (stat(p, &st) != 0) return nnc__fail_errno("missing", p, errno);
        if (!S_ISREG(st.st_mode) || (long long)st.st_size != sizes[i])
            return nnc__fail(NNC_EFORMAT, "%s: expected %lld bytes, found %lld", p, sizes[i],
                             (long long)st.st_size);
    }
    return NNC_OK;
}

/* mnist / fashion-mnist: the four IDX files, gzipped or not (sizes are checked on load). */
static int idx_present(const char *dir)
{
    static const char *base[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char p[4200];
    struct stat st;
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s.gz", dir, base[i]);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) continue;
        snprintf(p, sizeof p, "%s/%s", dir, base[i]);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    }
    return 1;
}

int nnc_dataset_present(const char *name, const char *dir)
{
    const ds_info *di = find_info(name);
    if (!dir) dir = nnc_dataset_default_dir(name);
    if (!di)
        return dir && name && (strcmp(name, "mnist") == 0 || strcmp(name, "fashion-mnist") == 0) &&
               idx_present(dir);
    char folder[4096];
    snprintf(folder, sizeof folder, "%s/%s", dir, di->folder);
    if (check_folder(di, folder) == NNC_OK || check_folder(di, dir) == NNC_OK) {
        nnc__clear_error();
        return 1;
    }
    nnc__clear_error();
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_status;
static void curl_init(void) { curl_init_status = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct sink {
    FILE *f;
    nnc__md5 md5;
    const nnc_fetch_config *cfg;
    int write_errno;
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    sink *s = ud;
    size_t bytes = sz * n;
    if (fwrite(p, 1, bytes, s->f) != bytes) {
        s->write_errno = errno ? errno : EIO;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    nnc__md5_update(&s->md5, p, bytes);
    return bytes;
}

static int on_progress(void *ud, curl_off_t total, curl_off_t now, curl_off_t ut, curl_off_t un)
{
    (void)ut, (void)un;
    sink *s = ud;
    if (s->cfg && s->cfg->progress) s->cfg->progress((double)now, (double)total, s->cfg->ud);
    return 0;
}

/* Download url into path, computing its MD5 into hex. */
static int download(const char *url, const char *path, const nnc_fetch_config *cfg, char hex[33])
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_status != CURLE_OK)
        return nnc__fail(NNC_ENET, "curl_global_init failed: %s",
                         curl_easy_strerror(curl_init_status));
    sink s = {.cfg = cfg};
    s.f = fopen(path, "wb");
    if (!s.f) return nnc__fail_errno("cannot create", path, errno);
    nnc__md5_init(&s.md5);
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(s.f);
        return nnc__fail(NNC_ENET, "downloading %s: curl_easy_init failed", url);
    }
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* abort a transfer stalled for 60 s */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "nnc");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
    CURLcode rc = curl_easy_perform(c);
    long http = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
    curl_easy_cleanup(c);
    int close_err = fclose(s.f) != 0 ? errno : 0;
    if (rc == CURLE_WRITE_ERROR && s.write_errno)
        return nnc__fail_errno("cannot write", path, s.write_errno);
    if (rc != CURLE_OK)
        return nnc__fail(NNC_ENET, "downloading %s: %s (curl error %d, HTTP status %ld)", url,
                         err[0] ? err : curl_easy_strerror(rc), (int)rc, http);
    if (close_err) return nnc__fail_errno("cannot write", path, close_err);
    nnc__md5_final(&s.md5, hex);
    return NNC_OK;
}

static int mkdir_p(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == 0) {
            char keep = *c;
            *c = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return nnc__fail_errno("cannot create", p, errno);
            *c = keep;
            if (!keep) break;
        }
    }
    return NNC_OK;
}

static void remove_stale(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(dp)))
        if (strncmp(e->d_name, ".nnc-fetch-", 11) == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            nnc__rmtree(p);
        }
    closedir(dp);
}

int nnc_dataset_downloadable(const char *name) { return find_info(name) || find_idx_info(name); }

static int is_md5(const char *p, size_t n)
{
    if (n != 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdefABCDEF", p[i])) return 0;
    return 1;
}

static int fetch_idx(const idx_info *ii, const char *dir, const nnc_fetch_config *cfg)
{
    char md5[4][33];
    if (cfg && cfg->md5) {
        const char *p = cfg->md5;
        for (int i = 0; i < 4; i++) {
            size_t n = strcspn(p, ",");
            if (!is_md5(p, n) || (i < 3 && p[n] != ',') || (i == 3 && p[n]))
                return nnc__fail(NNC_EINVAL,
                                 "%s: expected 4 comma-separated MD5 sums (train images, train labels, "
                                 "test images, test labels), found '%s'",
                                 ii->name, cfg->md5);
            memcpy(md5[i], p, 32);
            md5[i][32] = 0;
            p += n + 1;
        }
    } else {
        for (int i = 0; i < 4; i++) snprintf(md5[i], sizeof md5[i], "%s", ii->md5[i]);
    }
    const char *bases[2] = {ii->mirrors[0], ii->mirrors[1]};
    if (cfg && cfg->url) bases[0] = cfg->url, bases[1] = NULL;
    struct stat st;
    int existed = stat(dir, &st) == 0;
    int s = mkdir_p(dir);
    if (s) return s;
    remove_stale(dir);
    char tmp[4200], path[4][4300], url[4400];
    snprintf(tmp, sizeof tmp, "%s/.nnc-fetch-XXXXXX", dir);
    if (!mkdtemp(tmp)) return nnc__fail_errno("cannot create a temp folder in", dir, errno);
    for (int i = 0; i < 4 && !s; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", tmp, idx_files[i]);
        for (int m = 0; m < 2 && bases[m]; m++) {
            size_t bl = strlen(bases[m]);
            snprintf(url, sizeof url, "%s%s%s", bases[m], bl && bases[m][bl - 1] == '/' ? "" : "/", idx_files[i]);
            char hex[33];
            s = download(url, path[i], cfg, hex);
            if (s == NNC_ENET && m + 1 < 2 && bases[m + 1]) continue; /* next mirror */
            if (!s && strcasecmp(hex, md5[i]) != 0) {
                stat(path[i], &st);
                s = nnc__fail(NNC_ECHECKSUM, "%s: MD5 mismatch: expected %s, found %s (%lld bytes downloaded)",
                              url, md5[i], hex, (long long)st.st_size);
            }
            break;
        }
    }
    for (int split = 0; split < 2 && !s; split++) {
        nnc_dataset *d = NULL;
        s = nnc_idx_load(path[2 * split], path[2 * split + 1], &d);
        nnc_dataset_free(d);
        if (s) s = nnc__fail_prefix(NNC_EFORMAT, "downloaded %s files are not valid IDX", ii->name);
    }
    for (int i = 0; i < 4 && !s; i++) {
        char final[4300];
        snprintf(final, sizeof final, "%s/%s", dir, idx_files[i]);
        if (rename(path[i], final) != 0) s = nnc__fail_errno("cannot rename into place:", final, errno);
    }
    nnc__rmtree(tmp);
    if (s && !existed) rmdir(dir); /* only if still empty */
    return s;
}

int nnc_dataset_fetch(const char *name, const char *dir, const nnc_fetch_config *cfg)
{
    const ds_info *di = find_info(name);
    const idx_info *ii = find_idx_info(name);
    if (!di && nnc_dataset_present(name, dir)) return NNC_OK;
    if (ii) return fetch_idx(ii, dir ? dir : nnc_dataset_default_dir(name), cfg);
    if (!di)
        return nnc__fail(NNC_EUNSUPPORTED,
                         "cannot download dataset '%s' (nnc downloads cifar10, cifar100, mnist and "
                         "fashion-mnist)",
                         name ? name : "(null)");
    if (!dir) dir = nnc_dataset_default_dir(name);
    if (nnc_dataset_present(name, dir)) return NNC_OK;
    char final[4200], tmp[4200], path[4300];
    struct stat st;
    snprintf(final, sizeof final, "%s/%s", dir, di->folder);
    if (stat(final, &st) == 0) {
        int s = check_folder(di, final);
        return nnc__fail_prefix(s ? s : NNC_EIO,
                                "%s exists but is incomplete; remove it and fetch again", final);
    }
    int existed = stat(dir, &st) == 0;
    int s = mkdir_p(dir);
    if (s) return s;
    remove_stale(dir);
    snprintf(tmp, sizeof tmp, "%s/.nnc-fetch-XXXXXX", dir);
    if (!mkdtemp(tmp)) return nnc__fail_errno("cannot create a temp folder in", dir, errno);
    const char *url = cfg && cfg->url ? cfg->url : di->url;
    const char *md5 = cfg && cfg->md5 ? cfg->md5 : di->md5;
    char hex[33];
    snprintf(path, sizeof path, "%s/archive.tar.gz", tmp);
    s = download(url, path, cfg, hex);
    if (!s && strcasecmp(hex, md5) != 0) {
        stat(path, &st);
        s = nnc__fail(NNC_ECHECKSUM,
                      "%s: MD5 mismatch: expected %s, found %s (%lld bytes downloaded)", url, md5,
                      hex, (long long)st.st_size);
    }
    if (!s) s = nnc__untar_gz(path, tmp);
    if (!s) {
        unlink(path);
        snprintf(path, sizeof path, "%s/%s", tmp, di->folder);
        s = check_folder(di, path);
        if (s)
            s = nnc__fail_prefix(NNC_EFORMAT, "archive from %s is not a complete %s", url,
                                 di->name);
    }
    if (!s && rename(path, final) != 0)
        s = nnc__fail_errno("cannot rename into place:", final, errno);
    nnc__rmtree(tmp);
    if (s && !existed) rmdir(dir); /* only if still empty */
    return s;
}
