/* tests/tools/test_cli_messages.c - what the CLI says when a value is wrong: bad values show the
 * value given, integer flags refuse overflow and out-of-range counts, "did you mean" for commands,
 * datasets and models, nnc --version, --config files (list values, real line numbers, JSON
 * positions, FIFOs refused), shortest floats in config.json, eval on another dataset than the
 * checkpoint's, and nnc data fetch mnist from a local HTTP server with MD5 checks.
 * Runs $NNC_BIN as a child process on a small generated MNIST-format set. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "tests/common/cli_run.h"
#include "tests/common/datagen.h"

TestSuite(tools_cli_messages, .timeout = 120);

static const char *const IDX_FILES[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

/* The four gzipped IDX files of a 28x28, 10-class set with n train and n/2 test images into dir;
 * their MD5s (comma separated, in IDX_FILES order) into md5s when not NULL. */
static void write_idx_set(const char *dir, int n, char *md5s)
{
    int counts[2] = {n, n / 2};
    if (md5s) md5s[0] = 0;
    for (int split = 0; split < 2; split++) {
        int m = counts[split];
        size_t ilen = 16 + (size_t)m * 784, llen = 8 + (size_t)m;
        uint8_t *img = calloc(ilen, 1), *lbl = calloc(llen, 1);
        uint8_t ih[16] = {0, 0, 8, 3, (uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8), (uint8_t)m,
                          0, 0, 0, 28, 0, 0, 0, 28};
        uint8_t lh[8] = {0, 0, 8, 1, (uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8), (uint8_t)m};
        memcpy(img, ih, 16);
        memcpy(lbl, lh, 8);
        for (int i = 0; i < m; i++) {
            int label = i % 10;
            lbl[8 + i] = (uint8_t)label;
            for (int p = 0; p < 784; p++) img[16 + (size_t)i * 784 + p] = (uint8_t)(p / 78 == label ? 230 : (i * 7 + p) % 40);
        }
        const uint8_t *raw[2] = {img, lbl};
        size_t rawn[2] = {ilen, llen};
        for (int f = 0; f < 2; f++) {
            size_t gl;
            uint8_t *gz = dg_gzip(raw[f], rawn[f], &gl);
            char *path = tcli_path(dir, IDX_FILES[2 * split + f]);
            cr_assert_eq(dg_write_file(path, gz, gl), 0);
            if (md5s) {
                nnc__md5 h;
                char hex[33];
                nnc__md5_init(&h), nnc__md5_update(&h, gz, gl), nnc__md5_final(&h, hex);
                if (md5s[0]) strcat(md5s, ",");
                strcat(md5s, hex);
            }
            free(path);
            free(gz);
        }
        free(img);
        free(lbl);
    }
}

static char *fresh_set(int n)
{
    char *dir = tcli_tmpdir();
    write_idx_set(dir, n, NULL);
    return dir;
}

Test(tools_cli_messages, bad_values_show_the_value_given)
{
    char *dir = fresh_set(100);
    struct {
        const char *flag, *value, *want;
    } cases[] = {
        {"--lr", "-0.1", "--lr: expected a number > 0, found '-0.1'"},
        {"--batch", "0", "found '0'"},
        {"--time-budget", "-3", "found '-3'"},
        {"--warmup-epochs", "-1.5", "found '-1.5'"},
        {"--limit-train", "-5", "--limit-train: expected a count"},
        {"--keep", "-2", "found '-2'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tcli_result r = tcli_run(60, "train", "mnist", "--data", dir, "--model", "tiny", "--epochs", "1", "--batch",
                                 "10", cases[i].flag, cases[i].value, "--run-dir", dir, NULL);
        cr_assert_eq(r.code, 2, "%s %s: exit %d, %s", cases[i].flag, cases[i].value, r.code, r.err);
        cr_assert(strstr(r.err, cases[i].want), "%s %s: %s", cases[i].flag, cases[i].value, r.err);
        cr_assert(!strstr(r.err, "'<= 0'") && !strstr(r.err, "'negative'"), "%s", r.err);
        if (!strcmp(cases[i].flag, "--limit-train")) cr_assert(strstr(r.err, "'-5'"), "%s", r.err);
        tcli_free(&r);
    }
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, integer_flags_refuse_overflow)
{
    char *dir = fresh_set(100);
    const char *cases[][2] = {{"--epochs", "4294967297"}, {"--batch", "4294967306"}, {"--limit-test", "4294967297"},
                              {"--workers", "-4294967295"}, {"--seed", "99999999999999999999"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tcli_result r = tcli_run(60, "train", "mnist", "--data", dir, "--model", "tiny", "--epochs", "1", "--batch",
                                 "10", cases[i][0], cases[i][1], "--run-dir", dir, NULL);
        cr_assert_eq(r.code, 2, "%s %s: exit %d (%s)", cases[i][0], cases[i][1], r.code, r.err);
        cr_assert(strstr(r.err, cases[i][0]) && strstr(r.err, cases[i][1]), "%s", r.err);
        tcli_free(&r);
    }
    tcli_result r = tcli_run(60, "train", "mnist", "--data", dir, "--model", "tiny", "--epochs", "1", "--sched",
                             "multistep", "--milestones", "4294967297", "--run-dir", dir, NULL);
    cr_assert_eq(r.code, 2, "milestone 2^32+1 must not wrap to 1: %d %s", r.code, r.err);
    cr_assert(strstr(r.err, "--milestones") && strstr(r.err, "4294967297"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(20, "eval", "mnist", "--ckpt", "x.ckpt", "--limit", "-3", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--limit") && strstr(r.err, "'-3'"), "%s", r.err);
    tcli_free(&r);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, did_you_mean_commands_datasets_models)
{
    tcli_result r = tcli_run(10, "trian", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "did you mean 'train'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(30, "train", "fashion-mnst", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "unknown dataset 'fashion-mnst' (did you mean 'fashion-mnist'?)"), "%s", r.err);
    cr_assert(strstr(r.err, "cifar100"), "lists the datasets: %s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "eval", "cifar1O", "--ckpt", "x.ckpt", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "did you mean 'cifar10'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "data", "fetch", "mnst", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "did you mean 'mnist'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "info", "--model", "resnet2O", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "did you mean 'resnet20'"), "%s", r.err);
    tcli_free(&r);
    char *dir = fresh_set(100);
    r = tcli_run(60, "train", "mnist", "--data", dir, "--model", "vgg1", "--epochs", "1", "--run-dir", dir, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--model") && strstr(r.err, "'vgg1'") && strstr(r.err, "did you mean 'vgg11'"), "%s", r.err);
    tcli_free(&r);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, version)
{
    const char *forms[] = {"--version", "version"};
    for (int i = 0; i < 2; i++) {
        tcli_result r = tcli_run(10, forms[i], NULL);
        cr_assert_eq(r.code, 0, "nnc %s: %d %s", forms[i], r.code, r.err);
        cr_assert(!strncmp(r.out, "nnc 0.", 6), "%s", r.out);
        cr_assert(strstr(r.out, "compiler") && strstr(r.out, "mpi build") && strstr(r.out, "cpu"), "%s", r.out);
        tcli_free(&r);
    }
}

static char *write_text(const char *dir, const char *name, const char *text)
{
    char *p = tcli_path(dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return p;
}

Test(tools_cli_messages, config_key_value_lists_and_line_numbers)
{
    char *dir = fresh_set(100);
    char *run = tcli_path(dir, "run");
    char *cfg = write_text(dir, "ok.cfg",
                           "# a run\nmodel = tiny\nepochs = 1\nbatch = 10\nsched = multistep\n"
                           "milestones = 80,120   # two drops\nlr = 0.1\n");
    tcli_result r = tcli_run(90, "train", "mnist", "--data", dir, "--config", cfg, "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "milestones = 80,120 is a list value: %s", r.err);
    tcli_free(&r);
    char *cj = tcli_path(run, "config.json");
    char *json = tcli_slurp(cj);
    cr_assert(json);
    cr_assert(strstr(json, "\"milestones\": \"80,120\""), "%s", json);
    cr_assert(strstr(json, "\"lr\": 0.1,") && strstr(json, "\"momentum\": 0.9,") && strstr(json, "\"wd\": 0.0005,"),
              "shortest round-trip floats: %s", json);
    cr_assert(!strstr(json, "000000"), "%s", json);
    /* config.json reloads as a config */
    char *run2 = tcli_path(dir, "run2");
    r = tcli_run(90, "train", "mnist", "--config", cj, "--data", dir, "--run-dir", run2, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    free(json);
    char *bad = write_text(dir, "bad.cfg", "model = tiny\n\n# comment\nepochs = 1\nlrr = 0.1\n");
    r = tcli_run(30, "train", "mnist", "--data", dir, "--config", bad, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, bad) && strstr(r.err, "line 5") && strstr(r.err, "unknown key 'lrr'") &&
                  strstr(r.err, "did you mean 'lr'"),
              "%s", r.err);
    tcli_free(&r);
    char *badv = write_text(dir, "badv.cfg", "model = tiny\nepochs = many\n");
    r = tcli_run(30, "train", "mnist", "--data", dir, "--config", badv, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "line 2") && strstr(r.err, "--epochs") && strstr(r.err, "'many'"), "%s", r.err);
    tcli_free(&r);
    free(cfg), free(bad), free(badv), free(cj), free(run), free(run2);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, config_json_errors_have_a_position)
{
    char *dir = tcli_tmpdir();
    char *cfg = write_text(dir, "c.json", "{\n  \"epochs\": 3,\n  \"lr\": 0.1\n  \"batch\": 4\n}\n");
    tcli_result r = tcli_run(10, "train", "mnist", "--config", cfg, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, cfg) && strstr(r.err, "line 4") && strstr(r.err, "column"), "%s", r.err);
    tcli_free(&r);
    char *list = write_text(dir, "l.json", "{\"milestones\": [80, 120], \"epochs\": 1,\n \"lr\": \"x\"}");
    r = tcli_run(10, "train", "mnist", "--config", list, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "line 2") && strstr(r.err, "--lr") && strstr(r.err, "'x'"), "%s", r.err);
    tcli_free(&r);
    free(cfg), free(list);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, config_fifo_is_refused_not_blocking)
{
    char *dir = tcli_tmpdir();
    char *fifo = tcli_path(dir, "cfg.fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    tcli_result r = tcli_run(10, "train", "mnist", "--config", fifo, NULL);
    cr_assert(!r.timed_out, "blocked on the FIFO");
    cr_assert_eq(r.code, 2, "%d %s", r.code, r.err);
    cr_assert(strstr(r.err, fifo) && strstr(r.err, "FIFO"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "train", "mnist", "--config", "/dev/zero", NULL);
    cr_assert(!r.timed_out);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/dev/zero"), "%s", r.err);
    tcli_free(&r);
    free(fifo);
    tcli_rmrf(dir);
    free(dir);
}

Test(tools_cli_messages, eval_warns_when_the_dataset_differs)
{
    char *dir = fresh_set(100);
    char *run = tcli_path(dir, "run");
    tcli_result r = tcli_run(90, "train", "mnist", "--data", dir, "--model", "tiny", "--epochs", "1", "--batch", "10",
                             "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *ck = tcli_path(run, "last.ckpt");
    r = tcli_run(30, "eval", "fashion-mnist", "--data", dir, "--ckpt", ck, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.err, "warning") && strstr(r.err, "trained on mnist") && strstr(r.err, "fashion-mnist"), "%s",
              r.err);
    tcli_free(&r);
    r = tcli_run(30, "eval", "mnist", "--data", dir, "--ckpt", ck, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(!strstr(r.err, "warning"), "same dataset: no warning: %s", r.err);
    tcli_free(&r);
    free(ck), free(run);
    tcli_rmrf(dir);
    free(dir);
}

/* ---- a small HTTP server with several files (GET /<name> from a folder; 404 otherwise) ---- */
typedef struct files_httpd {
    int fd, port;
    const char *dir;
    atomic_int stop, requests;
    pthread_t th;
} files_httpd;

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w, n -= (size_t)w;
    }
}

static void *files_loop(void *arg)
{
    files_httpd *h = arg;
    while (!atomic_load(&h->stop)) {
        struct pollfd p = {h->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) continue;
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t n = recv(c, req + got, sizeof req - 1 - got, 0);
            if (n <= 0) break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        req[got] = 0;
        char path[512] = "/";
        sscanf(req, "GET %511s", path);
        char *full = tcli_path(h->dir, path + 1);
        FILE *f = strchr(path + 1, '/') ? NULL : fopen(full, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            char *body = malloc((size_t)n + 1);
            size_t rd = fread(body, 1, (size_t)n, f);
            fclose(f);
            char hdr[200];
            snprintf(hdr, sizeof hdr, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", rd);
            send_all(c, hdr, strlen(hdr));
            send_all(c, body, rd);
            free(body);
        } else {
            const char *m = "HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
            send_all(c, m, strlen(m));
        }
        free(full);
        atomic_fetch_add(&h->requests, 1);
        close(c);
    }
    return NULL;
}

static files_httpd *files_httpd_start(const char *dir)
{
    files_httpd *h = calloc(1, sizeof *h);
    h->dir = dir;
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    cr_assert(h->fd >= 0 && bind(h->fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(h->fd, 8) == 0 &&
              getsockname(h->fd, (struct sockaddr *)&a, &al) == 0);
    h->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&h->th, NULL, files_loop, h), 0);
    return h;
}

static void files_httpd_stop(files_httpd *h)
{
    atomic_store(&h->stop, 1);
    pthread_join(h->th, NULL);
    close(h->fd);
    free(h);
}

Test(tools_cli_messages, data_fetch_mnist_from_a_mirror_with_md5s)
{
    char *src = tcli_tmpdir();
    char md5s[200];
    write_idx_set(src, 60, md5s);
    files_httpd *h = files_httpd_start(src);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", h->port);
    char *dst = tcli_tmpdir();
    char *into = tcli_path(dst, "mnist");
    /* a wrong checksum: refused, nothing left behind */
    char wrong[200];
    snprintf(wrong, sizeof wrong, "%s", md5s);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
    tcli_result r = tcli_run(30, "data", "fetch", "mnist", "--data", into, "--url", url, "--md5", wrong, NULL);
    cr_assert_eq(r.code, 2, "%d %s", r.code, r.err);
    cr_assert(strstr(r.err, "MD5 mismatch") && strstr(r.err, "t10k-labels-idx1-ubyte.gz"), "%s", r.err);
    cr_assert(!tcli_exists(into), "nothing left behind");
    tcli_free(&r);
    r = tcli_run(30, "data", "fetch", "mnist", "--data", into, "--url", url, "--md5", "abc", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "4 comma-separated MD5") && strstr(r.err, "'abc'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(30, "data", "fetch", "mnist", "--data", into, "--url", url, "--md5", md5s, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    for (int i = 0; i < 4; i++) {
        char *p = tcli_path(into, IDX_FILES[i]);
        cr_assert(tcli_exists(p), "%s", p);
        free(p);
    }
    int before = atomic_load(&h->requests);
    r = tcli_run(30, "data", "fetch", "mnist", "--data", into, "--url", url, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "already present"), "%s", r.out);
    cr_assert_eq(atomic_load(&h->requests), before, "present: no network");
    tcli_free(&r);
    r = tcli_run(30, "data", "info", "mnist", "--data", into, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "train: 60 images"), "%s", r.out);
    tcli_free(&r);
    files_httpd_stop(h);
    free(into);
    tcli_rmrf(dst), tcli_rmrf(src);
    free(dst), free(src);
}

Test(tools_cli_messages, mnist_missing_says_how_to_fetch)
{
    char *dir = tcli_tmpdir();
    tcli_result r = tcli_run(30, "data", "info", "mnist", "--data", dir, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "nnc data fetch mnist"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(10, "data", "fetch", "--help", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "mnist") && strstr(r.out, "fashion-mnist"), "%s", r.out);
    tcli_free(&r);
    tcli_rmrf(dir);
    free(dir);
}
