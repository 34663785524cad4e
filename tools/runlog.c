/* tools/runlog.c - progress output, exit-code mapping, run-folder files (metrics.csv,
 * summary.json, atomic text writes). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nn/fileio.h"
#include "nn/status.h"
#include "tools/cli.h"

int cli_exit_code(int s)
{
    switch (s) {
    case NNC_OK: return EXIT_OK;
    case NNC_EINVAL:
    case NNC_EFORMAT:
    case NNC_ECHECKSUM:
    case NNC_EUNSUPPORTED: return EXIT_USAGE;
    case NNC_EDIVERGED: return EXIT_DIVERGED;
    default: return EXIT_RUNTIME;
    }
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_init(progress *p, long every)
{
    /* Under mpirun a rank's stdout is the launcher's pty forwarding whatever mpirun's own output
     * is (a log file, a pipe): plain lines there. */
    p->tty = isatty(STDOUT_FILENO) && !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE");
    p->start = cli_now();
    p->last_print = 0;
    p->drawn = 0;
    p->every = every > 0 ? every : 50;
    p->cols = nnc_term_width(STDOUT_FILENO);
    p->log = NULL;
    p->log_step = 0;
    if (p->tty) nnc_watch_winch();
}

static void fmt_time(char *buf, size_t n, double s) { nnc_fmt_time(buf, n, s); }

void progress_update(progress *p, const char *label, long step, long total, double loss, double acc,
                     double ips, double eta)
{
    double now = cli_now();
    char line[1100];
    if (p->tty) {
        if (now - p->last_print < 0.1 && step != total) return;
        p->last_print = now;
        if (nnc_winch_pending()) p->cols = nnc_term_width(STDOUT_FILENO);
        nnc_format_progress(line, sizeof line, p->cols, 1, label, step, total, loss, acc, ips, eta);
        printf("\r\033[K%s", line);
        p->drawn = 1;
        fflush(stdout);
    } else {
        if (step % p->every != 0 && step != total) return;
        nnc_format_progress(line, sizeof line, p->cols, 0, label, step, total, loss, acc, ips, eta);
        printf("%s\n", line);
        fflush(stdout);
    }
}

void progress_clear(progress *p)
{
    if (p->tty && p->drawn) {
        fputs("\r\033[K", stdout);
        p->drawn = 0;
    }
}

void progress_done(progress *p)
{
    if (p->tty && p->drawn) {
        printf("\n");
        p->drawn = 0;
        fflush(stdout);
    }
    if (p->log) fclose(p->log);
    p->log = NULL;
}

void cli_fetch_progress(double done, double total, void *ud)
{
    progress *p = ud;
    double now = cli_now(), el = now - p->start, rate = el > 0 ? done / el : 0;
    double eta_s = total > 0 && rate > 0 ? (total - done) / rate : -1;
    int finished = total > 0 && done >= total;
    if (done <= 0 && !finished) return;
    /* tty: redraw at most 10 times a second; plain: one line every 5 s and at the end */
    if (!finished && now - p->last_print < (p->tty ? 0.1 : 5)) return;
    p->last_print = now;
    char etas[32], tot[32] = "", mb[64], mbs[32], eta[48], bar[32] = "";
    fmt_time(etas, sizeof etas, eta_s);
    if (total > 0) snprintf(tot, sizeof tot, "/%.1f", total / 1e6);
    snprintf(mb, sizeof mb, "%.1f%s MB", done / 1e6, tot);
    snprintf(mbs, sizeof mbs, "%.1f MB/s", rate / 1e6);
    snprintf(eta, sizeof eta, "ETA %s", etas);
    if (p->tty && total > 0) {
        int cells = 24, fill = (int)(cells * done / total);
        bar[0] = '[';
        for (int i = 0; i < cells; i++) bar[1 + i] = i < fill ? '#' : '.';
        bar[cells + 1] = ']';
        bar[cells + 2] = 0;
    }
    /* the line fits the terminal: the bar goes first, then the rate, then the ETA */
    nnc_field f[] = {{"download", NULL, 9}, {bar[0] ? bar : NULL, NULL, 1}, {mb, NULL, 8}, {mbs, NULL, 3}, {eta, NULL, 5}};
    char line[256];
    nnc_fit_fields(line, sizeof line, p->tty ? nnc_term_width(STDOUT_FILENO) : 80, f, 5);
    if (p->tty) {
        printf("\r\033[K%s", line);
        p->drawn = 1;
    } else {
        printf("%s\n", line);
    }
    fflush(stdout);
}

int cli_mkdirs(const char *path)
{
    char buf[1024];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) {
        cli_error("cannot create directory %.60s...: path longer than %zu characters", path, sizeof buf - 1);
        return EXIT_USAGE;
    }
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) {
            cli_error("cannot create directory %s: %s", buf, strerror(errno));
            return EXIT_USAGE;
        }
        *s = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) {
        cli_error("cannot create directory %s: %s", buf, strerror(errno));
        return EXIT_USAGE;
    }
    struct stat st;
    if (stat(buf, &st) || !S_ISDIR(st.st_mode)) {
        cli_error("%s: not a directory", buf);
        return EXIT_USAGE;
    }
    return 0;
}

int cli_write_atomic(const char *path, const char *text, size_t len)
{
    /* A fresh, unpredictable temp name created exclusively (never a planted file or symlink). */
    char tmp[1200];
    int fd = nnc__create_temp(path, tmp, sizeof tmp);
    if (fd < 0) {
        errno = fd == NNC_EINVAL ? ENAMETOOLONG : EIO;
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd)) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

static const char *METRICS_HEADER = "kind,step,epoch,seconds,loss,acc,lr,img_per_s,extra\n";

int metrics_open(metrics_log *m, const char *run_dir)
{
    if ((size_t)snprintf(m->path, sizeof m->path, "%s/metrics.csv", run_dir) >= sizeof m->path) {
        cli_error("run folder %.60s...: path longer than %d characters", run_dir, RUN_DIR_MAX);
        return EXIT_USAGE;
    }
    /* O_NOFOLLOW: a symlink planted as metrics.csv is refused, not appended through */
    int fd = open(m->path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    m->f = fd >= 0 ? fdopen(fd, "a") : NULL;
    if (!m->f && fd >= 0) close(fd);
    if (!m->f) {
        cli_error("cannot open %s: %s", m->path, strerror(errno));
        return EXIT_USAGE;
    }
    fseek(m->f, 0, SEEK_END);
    if (ftell(m->f) == 0) fputs(METRICS_HEADER, m->f);
    fflush(m->f);
    return 0;
}

static void put(FILE *f, double v, const char *fmt)
{
    if (isfinite(v)) fprintf(f, fmt, v);
    fputc(',', f);
}

void metrics_row(metrics_log *m, const char *kind, long step, double epoch, double seconds, double loss,
                 double acc, double lr, double ips, const char *extra)
{
    if (!m->f) return;
    fprintf(m->f, "%s,%ld,", kind, step);
    put(m->f, epoch, "%.4f");
    put(m->f, seconds, "%.3f");
    put(m->f, loss, "%.6f");
    put(m->f, acc, "%.6f");
    put(m->f, lr, "%.6g");
    put(m->f, ips, "%.1f");
    fprintf(m->f, "%s\n", extra ? extra : "");
    fflush(m->f);
}

void metrics_close(metrics_log *m)
{
    if (m->f) fclose(m->f);
    m->f = NULL;
}

void json_begin(json_out *j, FILE *f)
{
    j->f = f;
    j->n = 0;
    fputs("{", f);
}

static void json_key(json_out *j, const char *key) { fprintf(j->f, "%s\n  \"%s\": ", j->n++ ? "," : "", key); }

void json_num(json_out *j, const char *key, double v)
{
    json_key(j, key);
    char buf[40];
    if (isfinite(v)) /* the shortest text that reads back as exactly v: files and reports agree */
        fputs(cli_format_double(v, buf, sizeof buf), j->f);
    else
        fputs("null", j->f);
}

void json_int(json_out *j, const char *key, long long v)
{
    json_key(j, key);
    fprintf(j->f, "%lld", v);
}

void json_str(json_out *j, const char *key, const char *v)
{
    json_key(j, key);
    fputc('"', j->f);
    for (; v && *v; v++) {
        if (*v == '"' || *v == '\\') fputc('\\', j->f);
        if ((unsigned char)*v >= 0x20) fputc(*v, j->f);
    }
    fputc('"', j->f);
}

void json_raw(json_out *j, const char *key, const char *raw)
{
    json_key(j, key);
    fputs(raw, j->f);
}

void json_end(json_out *j) { fputs("\n}\n", j->f); }

/* ---- run folders (docs/run-folders.md) ---- */

int run_path(char *buf, size_t n, const char *run_dir, const char *name)
{
    int k = snprintf(buf, n, "%s/%s", run_dir, name);
    if (k < 0 || (size_t)k >= n) {
        cli_error("run folder %.60s...: path longer than %d characters", run_dir, RUN_DIR_MAX);
        return EXIT_USAGE;
    }
    return 0;
}

/* The files nnc writes into a run folder (besides epoch-EEEE.ckpt and .lock). */
static const char *const RUN_FILES[] = {"config.json", "dataset.json", "metrics.csv", "plot.svg",
                                        "summary.json", "last.ckpt",   "best.ckpt",   "flatness.json"};

/* epoch-<digits>.ckpt */
static int is_epoch_ckpt(const char *name, size_t len)
{
    if (len < 12 || strncmp(name, "epoch-", 6) || strncmp(name + len - 5, ".ckpt", 5)) return 0;
    for (size_t i = 6; i < len - 5; i++)
        if (name[i] < '0' || name[i] > '9') return 0;
    return 1;
}

/* One of RUN_FILES / epoch checkpoints, or a temp file of one ("<name>.tmp", "<name>.tmp.*"). */
static int is_own_file(const char *name)
{
    const char *t = strstr(name, ".tmp");
    size_t len = strlen(name);
    if (t && (t[4] == 0 || t[4] == '.')) len = (size_t)(t - name);
    else t = NULL;
    for (size_t i = 0; i < sizeof RUN_FILES / sizeof *RUN_FILES; i++)
        if (strlen(RUN_FILES[i]) == len && !strncmp(name, RUN_FILES[i], len)) return 1;
    return is_epoch_ckpt(name, len);
}

int run_dir_used(const char *run_dir, char *what, size_t n)
{
    DIR *d = opendir(run_dir);
    if (!d) return 0; /* absent (created later) or not a folder (cli_mkdirs says so) */
    int used = 0;
    struct dirent *e;
    while (!used && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!strcmp(e->d_name, "config.json") || !strcmp(e->d_name, "metrics.csv") ||
            (len > 5 && !strcmp(e->d_name + len - 5, ".ckpt"))) {
            used = 1;
            snprintf(what, n, "%s", e->d_name);
        }
    }
    closedir(d);
    return used;
}

int run_dir_clear(const char *run_dir)
{
    DIR *d = opendir(run_dir);
    if (!d) return 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_own_file(e->d_name)) continue;
        char path[RUN_DIR_MAX + 300];
        if (run_path(path, sizeof path, run_dir, e->d_name)) {
            rc = EXIT_USAGE;
            break;
        }
        if (unlink(path) && errno != ENOENT) {
            cli_error("--overwrite: cannot remove %s: %s", path, strerror(errno));
            rc = EXIT_RUNTIME;
            break;
        }
    }
    closedir(d);
    return rc;
}

static long lock_owner(int fd)
{
    char b[32];
    ssize_t k = pread(fd, b, sizeof b - 1, 0);
    if (k <= 0) return -1;
    b[k] = 0;
    return strtol(b, NULL, 10);
}

static int lock_busy(const char *run_dir, int fd)
{
    long pid = lock_owner(fd);
    if (pid > 0)
        cli_error("run folder %s is in use by process %ld (it holds %s/.lock); wait for it or stop it", run_dir, pid,
                  run_dir);
    else
        cli_error("run folder %s is in use by another process (it holds %s/.lock)", run_dir, run_dir);
    return EXIT_USAGE;
}

int run_lock_probe(const char *run_dir)
{
    char path[RUN_DIR_MAX + 16];
    if (run_path(path, sizeof path, run_dir, ".lock")) return EXIT_USAGE;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 0;
    int rc = 0;
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK) rc = lock_busy(run_dir, fd);
    } else {
        flock(fd, LOCK_UN);
    }
    close(fd);
    return rc;
}

int run_lock_acquire(const char *run_dir, int *fd_out)
{
    char path[RUN_DIR_MAX + 16];
    *fd_out = -1;
    if (run_path(path, sizeof path, run_dir, ".lock")) return EXIT_USAGE;
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
        cli_error("cannot open %s: %s", path, strerror(errno));
        return errno == ELOOP ? EXIT_USAGE : EXIT_RUNTIME;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        cli_error("%s: not a regular file", path);
        return EXIT_USAGE;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int rc = errno == EWOULDBLOCK ? lock_busy(run_dir, fd) : EXIT_RUNTIME;
        if (rc == EXIT_RUNTIME) cli_error("cannot lock %s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    char b[32];
    int k = snprintf(b, sizeof b, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, b, (size_t)k, 0) != k) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        close(fd);
        return EXIT_RUNTIME;
    }
    *fd_out = fd;
    return 0;
}

void run_lock_release(int fd)
{
    if (fd >= 0) close(fd); /* the file stays: removing it would race with a process opening it */
}

long metrics_truncate(const char *run_dir, long max_step)
{
    char path[RUN_DIR_MAX + 16];
    if (run_path(path, sizeof path, run_dir, "metrics.csv")) return -EXIT_USAGE;
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (!text) return errno == ENOENT ? 0 : (cli_error("cannot read %s: %s", path, strerror(errno)), -EXIT_RUNTIME);
    char *out = malloc(len + 1);
    if (!out) {
        free(text);
        cli_error("out of memory");
        return -EXIT_RUNTIME;
    }
    size_t o = 0;
    long dropped = 0;
    const char *p = text, *end = text + len;
    int first = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) { /* a row cut short by a kill */
            dropped++;
            break;
        }
        int keep;
        if (first && !strncmp(p, "kind,", 5)) {
            keep = 1;
        } else {
            const char *c = memchr(p, ',', (size_t)(nl - p));
            char *e = NULL;
            long step = c ? strtol(c + 1, &e, 10) : 0;
            keep = c && e != c + 1 && *e == ',' && step <= max_step;
        }
        first = 0;
        if (keep) {
            memcpy(out + o, p, (size_t)(nl - p + 1));
            o += (size_t)(nl - p + 1);
        } else {
            dropped++;
        }
        p = nl + 1;
    }
    long rc = dropped;
    if (dropped && cli_write_atomic(path, out, o)) {
        cli_error("cannot rewrite %s: %s", path, strerror(errno));
        rc = -EXIT_RUNTIME;
    }
    free(out);
    free(text);
    return rc;
}
