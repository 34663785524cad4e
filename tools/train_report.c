/* tools/train_report.c - what a training run reports while it runs: nnc_train's step, round,
 * evaluation and log callbacks, drawing the progress line, the round line and evaluations to
 * the terminal (fitted to its width), and writing metrics.csv rows and RUN/train.log.
 * train_execute (tools/cmd_train.c) hands them a run_ctx. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/train.h"
static void clear_bar(run_ctx *c) { progress_clear(&c->prog); }

/* RUN/train.log, appended: every progress step row, every round with each worker's values, the
 * evaluations and warnings. Rank 0 only (it alone has metrics.csv open); NULL when unavailable. */
static FILE *run_log(run_ctx *c)
{
    progress *p = &c->prog;
    if (p->log || !c->ml.f || !c->run_dir || p->log_step < 0) return p->log;
    char path[1100];
    snprintf(path, sizeof path, "%s/train.log", c->run_dir);
    p->log = fopen(path, "ae");
    if (!p->log) {
        p->log_step = -1; /* do not retry on every callback */
        return NULL;
    }
    time_t now = time(NULL);
    struct tm tm;
    char stamp[40];
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(p->log, "== %s: nnc train %s --model %s --workers %d --algo %s\n", stamp, c->o->dataset, c->o->model,
            c->o->workers, c->o->algo);
    return p->log;
}

void train_on_step(const nnc_step_info *s, void *ud)
{
    run_ctx *c = ud;
    c->step = s->step;
    c->seconds = s->seconds;
    c->epoch = s->epoch;
    int every = c->o->log_every > 0 ? c->o->log_every : 50;
    int last = s->total_steps > 0 && s->step >= s->total_steps;
    if (s->step - c->last_row >= every || last || !c->last_row) {
        c->last_row = s->step;
        metrics_row(&c->ml, "train", s->step, s->epoch, s->seconds, s->loss, s->acc, s->lr, s->images_per_sec, NULL);
    }
    double eta = -1;
    if (s->total_steps > 0 && s->step > 0 && s->seconds > 0)
        eta = (double)(s->total_steps - s->step) * s->seconds / (double)s->step;
    if (c->o->time_budget > 0) {
        double left = c->o->time_budget - s->seconds;
        if (left < 0) left = 0;
        if (eta < 0 || left < eta) eta = left;
    }
    FILE *log = run_log(c);
    if (log && (s->step - c->prog.log_step >= every || last || !c->prog.log_step)) {
        c->prog.log_step = s->step;
        fprintf(log, "step %ld", s->step);
        if (s->total_steps > 0) fprintf(log, "/%ld", s->total_steps);
        fprintf(log, " epoch %.3f t %.1fs loss %.4f", s->epoch, s->seconds, s->loss);
        if (s->acc >= 0) fprintf(log, " acc %.2f%%", 100 * s->acc);
        fprintf(log, " lr %.4g %.0f img/s\n", (double)s->lr, s->images_per_sec);
        fflush(log);
    }
    if (!c->prog.tty && !(s->step - c->last_line >= every || last || !c->last_line)) return;
    c->last_line = s->step;
    char label[48];
    snprintf(label, sizeof label, "epoch %.2f", s->epoch);
    progress_update(&c->prog, label, s->step, s->total_steps, s->loss, s->acc, s->images_per_sec, eta);
}

static void join_list(char *buf, size_t n, const double *v, int count, const char *fmt)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < count && o + 1 < n; i++) {
        if (i) buf[o++] = ';', buf[o] = 0;
        o += (size_t)snprintf(buf + o, n - o, fmt, v[i]);
    }
}

void train_on_round(const nnc_round_info *r, void *ud)
{
    run_ctx *c = ud;
    int m = r->workers < NNC_MAX_WORKERS ? r->workers : NNC_MAX_WORKERS;
    double steps[NNC_MAX_WORKERS] = {0};
    for (int i = 0; i < m; i++) steps[i] = (double)r->local_steps[i];
    char norms[1024], weights[1024], dists[1024], locals[512], extra[4200];
    join_list(norms, sizeof norms, r->norm, m, "%.4g");
    join_list(weights, sizeof weights, r->weight, m, "%.4f");
    join_list(dists, sizeof dists, r->distance, m, "%.4g");
    join_list(locals, sizeof locals, steps, m, "%.0f");
    snprintf(extra, sizeof extra, "round=%ld norm=%s weight=%s dist=%s local=%s sync_s=%.4f comm_s=%.4f", r->round,
             norms, weights, dists, locals, r->sync_seconds, r->comm_seconds);
    if (r->step > c->step) c->step = r->step;
    metrics_row(&c->ml, "round", r->step, NAN, r->seconds, r->loss, NAN, NAN, NAN, extra);
    const char *algo = c->o->algo;
    const char *norm_label = !strcmp(algo, "lsgd") ? "loss" : strstr(algo, "grawa") ? "norm" : NULL;
    /* train.log gets every round with each worker's values; the terminal a line that fits, no
     * more often than --log-every local steps (EASGD/LSGD/DP rounds are short). */
    FILE *log = run_log(c);
    if (log) {
        nnc_format_round_full(log, r, norm_label);
        fflush(log);
    }
    for (int i = 0; i < m; i++) c->round_steps += r->local_steps[i];
    if (r->round > 1 && c->round_steps - c->round_printed < c->o->log_every) return;
    c->round_printed = c->round_steps;
    if (c->prog.tty && nnc_winch_pending()) c->prog.cols = nnc_term_width(STDOUT_FILENO);
    char line[1100];
    nnc_format_round(line, sizeof line, c->prog.cols, r, norm_label);
    clear_bar(c);
    printf("%s\n", line);
    fflush(stdout);
}

void train_on_eval(const nnc_eval_info *e, void *ud)
{
    run_ctx *c = ud;
    int avg = e->which && !strcmp(e->which, "average");
    if (e->step >= c->step) c->step = e->step, c->epoch = e->epoch;
    metrics_row(&c->ml, avg ? "val_average" : "val", e->step, e->epoch, e->seconds, e->loss, e->acc, NAN, NAN,
                e->which);
    char ep[32], st[32], which[40], loss[40], lossb[32], acc[32], line[256];
    snprintf(ep, sizeof ep, "epoch %.2f", e->epoch);
    snprintf(st, sizeof st, "step %ld", e->step);
    snprintf(which, sizeof which, "(%s):", e->which ? e->which : "model");
    snprintf(loss, sizeof loss, "test loss %.4f", e->loss);
    snprintf(lossb, sizeof lossb, "loss %.3g", e->loss);
    snprintf(acc, sizeof acc, "acc %.2f%%", 100 * e->acc);
    nnc_field f[7] = {{"eval", NULL, 10}, {ep, NULL, 6},  {st, NULL, 3},          {which, NULL, 8},
                      {loss, lossb, 5},   {acc, NULL, 9}, {e->is_best ? "(best)" : NULL, NULL, 4}};
    FILE *log = run_log(c);
    if (log) {
        nnc_fit_fields(line, sizeof line, (int)sizeof line, f, 7);
        fprintf(log, "%s t %.1fs\n", line, e->seconds);
        fflush(log);
    }
    if (c->prog.tty && nnc_winch_pending()) c->prog.cols = nnc_term_width(STDOUT_FILENO);
    nnc_fit_fields(line, sizeof line, c->prog.cols, f, 7);
    clear_bar(c);
    printf("%s\n", line);
    fflush(stdout);
    plot_metrics_svg(c->run_dir);
    train_outcome *o = c->out;
    if (o && o->nevals == o->cap) {
        int cap = o->cap ? o->cap * 2 : 16;
        train_eval_point *p = realloc(o->evals, sizeof *p * (size_t)cap);
        if (!p) return;
        o->evals = p;
        o->cap = cap;
    }
    if (o) o->evals[o->nevals++] = (train_eval_point){e->seconds, e->epoch, e->loss, e->acc, e->step, avg};
}

void train_on_log(const char *line, void *ud)
{
    run_ctx *c = ud;
    FILE *log = run_log(c);
    if (log) {
        fprintf(log, "nnc: %s\n", line);
        fflush(log);
    }
    clear_bar(c);
    fflush(stdout);
    fprintf(stderr, "nnc: %s\n", line);
}

