/* tools/progress.c - lines that fit the terminal: the terminal width (re-read after SIGWINCH),
 * fitting prioritised fields into a width, the progress line and the round lines (a compact one
 * for the terminal, the full per-worker one for RUN/train.log).
 *
 * Everything here is pure formatting except nnc_term_width and the SIGWINCH flag; output is
 * ASCII, so bytes and columns are the same. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "dist/dist.h"
#include "tools/cli.h"

#define NNC_MAX_COLS 1024

static volatile sig_atomic_t g_winch;

static void on_winch(int sig)
{
    (void)sig;
    g_winch = 1;
}

void nnc_watch_winch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_winch;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGWINCH, &sa, NULL);
}

int nnc_winch_pending(void)
{
    if (!g_winch) return 0;
    g_winch = 0;
    return 1;
}

int nnc_term_width(int fd)
{
    struct winsize ws;
    int w = 0;
    if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) w = ws.ws_col;
    const char *env = getenv("COLUMNS");
    if (!w && env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v > 0) w = v > NNC_MAX_COLS ? NNC_MAX_COLS : (int)v;
    }
    if (!w) w = 80;
    return w > NNC_MAX_COLS ? NNC_MAX_COLS : w;
}

void nnc_fmt_time(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

/* Length of field i in its current form (0 = full, 1 = brief, 2 = dropped). */
static size_t field_len(const nnc_field *f, int state)
{
    if (state == 2 || !f->text) return 0;
    return strlen(state == 1 && f->brief ? f->brief : f->text);
}

static size_t joined_len(const nnc_field *f, const int *state, int nf)
{
    size_t len = 0;
    int k = 0;
    for (int i = 0; i < nf; i++) {
        if (state[i] == 2 || !f[i].text) continue;
        len += field_len(&f[i], state[i]) + (k++ ? 1 : 0);
    }
    return len;
}

/* The kept field of lowest priority (the later one on ties) whose state is below `below`. */
static int lowest(const nnc_field *f, const int *state, int nf, int below)
{
    int best = -1;
    for (int i = 0; i < nf; i++) {
        if (!f[i].text || state[i] >= below) continue;
        if (below == 1 && !(f[i].brief && strlen(f[i].brief) < strlen(f[i].text))) continue;
        if (best < 0 || f[i].prio <= f[best].prio) best = i;
    }
    return best;
}

size_t nnc_fit_fields(char *out, size_t n, int width, const nnc_field *f, int nf)
{
    if (!n) return 0;
    out[0] = 0;
    if (width < 2 || nf <= 0) return 0;
    size_t room = (size_t)width - 1;
    if (room > n - 1) room = n - 1;
    int state[64];
    if (nf > 64) nf = 64;
    for (int i = 0; i < nf; i++) state[i] = f[i].text ? 0 : 2;
    /* abbreviate, least important first, then drop (never the last field standing) */
    while (joined_len(f, state, nf) > room) {
        int i = lowest(f, state, nf, 1);
        if (i < 0) break;
        state[i] = 1;
    }
    while (joined_len(f, state, nf) > room) {
        int kept = 0;
        for (int i = 0; i < nf; i++) kept += state[i] != 2;
        if (kept <= 1) break;
        int i = lowest(f, state, nf, 2);
        if (i < 0) break;
        state[i] = 2;
    }
    size_t o = 0;
    for (int i = 0; i < nf && o < room; i++) {
        if (state[i] == 2) continue;
        const char *t = state[i] == 1 && f[i].brief ? f[i].brief : f[i].text;
        if (o) out[o++] = ' ';
        for (; *t && o < room; t++) out[o++] = (*t >= 0x20 && *t < 0x7f) ? *t : '?';
    }
    out[o] = 0;
    return o;
}

size_t nnc_format_progress(char *out, size_t n, int width, int bar, const char *label, long step, long total,
                           double loss, double acc, double ips, double eta)
{
    char steps[48], stepsb[48], ls[32] = "", lb[32] = "", as[32] = "", ab[32] = "", is[32] = "", ib[32] = "";
    char t[32], es[40], eb[40];
    if (total > 0)
        snprintf(stepsb, sizeof stepsb, "%ld/%ld", step, total);
    else
        snprintf(stepsb, sizeof stepsb, "%ld", step);
    snprintf(steps, sizeof steps, "step %s", stepsb);
    if (isfinite(loss)) {
        snprintf(ls, sizeof ls, "loss %.4f", loss);
        snprintf(lb, sizeof lb, "loss %.3g", loss);
    }
    if (acc >= 0) {
        snprintf(as, sizeof as, "acc %.1f%%", 100 * acc);
        snprintf(ab, sizeof ab, "%.0f%%", 100 * acc);
    }
    if (ips >= 0 && isfinite(ips)) {
        snprintf(is, sizeof is, "%.0f img/s", ips);
        if (ips >= 1e4)
            snprintf(ib, sizeof ib, "%.0fk/s", ips / 1e3);
        else
            snprintf(ib, sizeof ib, "%.0f/s", ips);
    }
    nnc_fmt_time(t, sizeof t, eta);
    snprintf(es, sizeof es, "ETA %s", t);
    snprintf(eb, sizeof eb, "%s", t);
    nnc_field f[8];
    int nf = 0;
    int lead = nf;
    f[nf++] = (nnc_field){label && *label ? label : NULL, NULL, 5};
    f[nf++] = (nnc_field){steps, stepsb, 9};
    f[nf++] = (nnc_field){*ls ? ls : NULL, lb, 7};
    f[nf++] = (nnc_field){*as ? as : NULL, ab, 4};
    f[nf++] = (nnc_field){*is ? is : NULL, ib, 3};
    f[nf++] = (nnc_field){es, eb, 8};
    if (bar && total > 0 && width > 0) {
        /* the bar takes what the full fields leave, 10..30 cells; no room: no bar */
        char probe[NNC_MAX_COLS + 1];
        size_t rest = nnc_fit_fields(probe, sizeof probe, NNC_MAX_COLS, f, nf);
        int cells = width - 1 - (int)rest - 3;
        if (cells > 30) cells = 30;
        if (cells >= 10) {
            double frac = (double)step / (double)total;
            int fill = frac >= 1 ? cells : frac > 0 ? (int)(cells * frac) : 0;
            char b[40];
            b[0] = '[';
            for (int i = 0; i < cells; i++) b[1 + i] = i < fill ? '#' : '.';
            b[cells + 1] = ']';
            b[cells + 2] = 0;
            nnc_field g[9];
            int k = 0;
            for (int i = 0; i < nf; i++) {
                g[k++] = f[i];
                if (i == lead) g[k++] = (nnc_field){b, NULL, 1};
            }
            return nnc_fit_fields(out, n, width, g, k);
        }
    }
    return nnc_fit_fields(out, n, width, f, nf);
}

/* v with about `digits` significant digits, in plain notation between 1e-4 and 1e6. */
static void num_text(char *buf, size_t n, double v, int digits)
{
    double a = fabs(v);
    if (a == 0 || !isfinite(v) || a >= 1e6 || a < 1e-4) {
        snprintf(buf, n, "%.*g", digits, v);
        return;
    }
    int dec = digits - 1 - (int)floor(log10(a));
    snprintf(buf, n, "%.*f", dec < 0 ? 0 : dec, v);
}

/* "name lo..hi" of the finite v[0..m) (one value when both print the same). */
static void range_text(char *buf, size_t n, const char *name, const double *v, int m, int digits)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < m; i++)
        if (isfinite(v[i])) {
            if (v[i] < lo) lo = v[i];
            if (v[i] > hi) hi = v[i];
        }
    buf[0] = 0;
    if (!isfinite(lo)) return;
    char a[32], b[32];
    num_text(a, sizeof a, lo, digits);
    num_text(b, sizeof b, hi, digits);
    if (!strcmp(a, b))
        snprintf(buf, n, "%s%s%s", name, *name ? " " : "", a);
    else
        snprintf(buf, n, "%s%s%s..%s", name, *name ? " " : "", a, b);
}

size_t nnc_format_round(char *out, size_t n, int width, const nnc_round_info *r, const char *norm_label)
{
    int m = r->workers < NNC_MAX_WORKERS ? r->workers : NNC_MAX_WORKERS;
    if (m < 0) m = 0;
    char head[40], loss[32], lossb[32], sync[32], norm[80], normb[80], wt[80], wtb[80], dist[80], distb[80];
    char steps[64], slow[48] = "", slowb[32] = "";
    long smin = 0, smax = 0;
    int slowest = -1;
    for (int i = 0; i < m; i++) {
        if (slowest < 0 || r->local_steps[i] < smin) smin = r->local_steps[i], slowest = i;
        if (i == 0 || r->local_steps[i] > smax) smax = r->local_steps[i];
    }
    snprintf(head, sizeof head, "round %ld", r->round);
    snprintf(loss, sizeof loss, "loss %.4f", r->loss);
    snprintf(lossb, sizeof lossb, "loss %.3g", r->loss);
    snprintf(sync, sizeof sync, "sync %.3fs", r->sync_seconds);
    norm[0] = normb[0] = 0;
    if (norm_label) {
        const char *label = strcmp(norm_label, "loss") ? norm_label : "losses"; /* LSGD: per-worker losses */
        range_text(norm, sizeof norm, label, r->norm, m, 3);
        range_text(normb, sizeof normb, label, r->norm, m, 2);
    }
    range_text(wt, sizeof wt, "weight", r->weight, m, 3);
    range_text(wtb, sizeof wtb, "wt", r->weight, m, 2);
    range_text(dist, sizeof dist, "dist", r->distance, m, 3);
    range_text(distb, sizeof distb, "dist", r->distance, m, 2);
    if (m > 0 && smin < smax)
        snprintf(steps, sizeof steps, "steps %ld..%ld", smin, smax);
    else if (m > 0)
        snprintf(steps, sizeof steps, "steps %ld", smin);
    else
        steps[0] = 0;
    if (m > 1 && smin < smax) {
        snprintf(slow, sizeof slow, "slowest w%d", slowest);
        snprintf(slowb, sizeof slowb, "slow w%d", slowest);
    }
    nnc_field f[8] = {
        {head, NULL, 10},
        {loss, lossb, 9},
        {sync, NULL, 3},
        {*norm ? norm : NULL, normb, 7},
        {*wt ? wt : NULL, wtb, 6},
        {*dist ? dist : NULL, distb, 5},
        {*steps ? steps : NULL, NULL, 4},
        {*slow ? slow : NULL, slowb, 8},
    };
    return nnc_fit_fields(out, n, width, f, 8);
}

void nnc_format_round_full(FILE *f, const nnc_round_info *r, const char *norm_label)
{
    int m = r->workers < NNC_MAX_WORKERS ? r->workers : NNC_MAX_WORKERS;
    fprintf(f, "round %ld t %.3fs loss %.4f sync %.4fs workers %d |", r->round, r->seconds, r->loss, r->sync_seconds,
            m);
    for (int i = 0; i < m; i++) {
        fprintf(f, " w%d", i);
        if (norm_label) fprintf(f, " %s %.4g", norm_label, r->norm[i]);
        fprintf(f, " weight %.4f", r->weight[i]);
        if (isfinite(r->distance[i])) fprintf(f, " dist %.4g", r->distance[i]);
        fprintf(f, " steps %ld |", r->local_steps[i]);
    }
    fputc('\n', f);
}
