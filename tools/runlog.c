/* tools/runlog.c - progress output, exit-code mapping, run-folder files (metrics.csv,
 * summary.json, atomic text writes). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    double eta = total > 0 && rate > 0 ? (total - done) / rate : -1;
    int finished = total > 0 && done >= total;
    if (done <= 0 && !finished) return;
    /* tty: redraw at most 10 times a second; plain: one line every 5 s and at the end */
    if (!finished && now - p->last_print < (p->tty ? 0.1 : 5)) return;
    p->last_print = now;
    char etas[32], tot[32] = "";
    fmt_time(etas, sizeof etas, eta);
    if (total > 0) snprintf(tot, sizeof tot, "/%.1f", total / 1e6);
    if (p->tty) {
        int width = 24, fill = total > 0 ? (int)(width * done / total) : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        printf("\r\033[Kdownload [%s] %.1f%s MB %.1f MB/s ETA %s", bar, done / 1e6, tot, rate / 1e6, etas);
        p->drawn = 1;
    } else {
        printf("download %.1f%s MB %.1f MB/s ETA %s\n", done / 1e6, tot, rate / 1e6, etas);
    }
    fflush(stdout);
}

int cli_mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
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
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
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
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
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
    snprintf(m->path, sizeof m->path, "%s/metrics.csv", run_dir);
    m->f = fopen(m->path, "a");
    if (!m->f) {
        cli_error("cannot open %s: %s", m->path, strerror(errno));
        return EXIT_USAGE;
    }
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
    if (isfinite(v))
        fprintf(j->f, "%.6g", v);
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
