/* tests/common/cli_run.c - child-process runner and fixtures for the CLI tests (see cli_run.h). */
#include "tests/common/cli_run.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 96

static const char *bin(void)
{
    const char *b = getenv("NNC_BIN");
    return b && *b ? b : "build/test/nnc";
}

char *tcli_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int tcli_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

char *tcli_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t got;
    while ((got = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) b = realloc(b, cap *= 2);
    }
    fclose(f);
    b[n] = 0;
    return b;
}

pid_t tcli_spawn(const char *dir, const char *const *args)
{
    char *out = tcli_path(dir, "out.txt"), *err = tcli_path(dir, "err.txt");
    const char *argv[MAX_ARGS + 2];
    int n = 0;
    argv[n++] = bin();
    for (; args[n - 1] && n < MAX_ARGS; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || nul < 0) _exit(127);
        dup2(nul, 0), dup2(o, 1), dup2(e, 2);
        /* as from a terminal: a runner started under nohup (or ignoring these) must not pass that
         * on, or nnc keeps an inherited SIG_IGN for SIGHUP by design and the signal tests see nothing */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(out);
    free(err);
    return pid;
}

int tcli_wait(pid_t pid, double timeout_s)
{
    struct timespec t0, now, nap = {0, 5000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR) return -2;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

tcli_result tcli_runv(double timeout_s, const char *const *args)
{
    tcli_result r = {0};
    char *dir = tcli_tmpdir();
    pid_t pid = tcli_spawn(dir, args);
    int code = tcli_wait(pid, timeout_s);
    r.timed_out = code == -1;
    r.code = code;
    char *o = tcli_path(dir, "out.txt"), *e = tcli_path(dir, "err.txt");
    r.out = tcli_slurp(o);
    r.err = tcli_slurp(e);
    if (!r.out) r.out = calloc(1, 1);
    if (!r.err) r.err = calloc(1, 1);
    free(o), free(e);
    tcli_rmrf(dir);
    free(dir);
    return r;
}

tcli_result tcli_run(double timeout_s, const char *arg, ...)
{
    const char *args[MAX_ARGS + 1];
    int n = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < MAX_ARGS; a = va_arg(ap, const char *)) args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return tcli_runv(timeout_s, args);
}

void tcli_free(tcli_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

char *tcli_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/nnc-cli-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void tcli_rmrf(const char *path)
{
    if (path) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#define REC 3073
#define PER_FILE 10000

static int write_file(const char *dir, const char *name, int real, uint32_t seed)
{
    char *p = tcli_path(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    free(p);
    if (fd < 0) return -1;
    unsigned char rec[REC];
    uint32_t s = seed * 2654435761u + 1;
    for (int i = 0; i < real && i < PER_FILE; i++) {
        int label = i % 10;
        rec[0] = (unsigned char)label;
        for (int c = 0; c < 3; c++)
            for (int px = 0; px < 1024; px++) {
                s = s * 1664525u + 1013904223u;
                int noise = (int)(s >> 27) - 16; /* -16..15 */
                /* class pattern: brightness by label, channel c tilted by label, a bright
                 * row band at y = 3*label */
                int y = px / 32;
                int v = 40 + 18 * label + (c == label % 3 ? 30 : 0) + (y / 3 == label ? 60 : 0) + noise;
                rec[1 + c * 1024 + px] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        if (write(fd, rec, REC) != REC) {
            close(fd);
            return -1;
        }
    }
    int r = ftruncate(fd, (off_t)REC * PER_FILE);
    close(fd);
    return r;
}

int tcli_write_cifar10(const char *dir, int real)
{
    char name[64];
    for (int b = 1; b <= 5; b++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", b);
        if (write_file(dir, name, real, (uint32_t)b)) return -1;
    }
    if (write_file(dir, "test_batch.bin", real, 99)) return -1;
    char *p = tcli_path(dir, "batches.meta.txt");
    FILE *f = fopen(p, "w");
    free(p);
    if (!f) return -1;
    fputs("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n", f);
    return fclose(f);
}
