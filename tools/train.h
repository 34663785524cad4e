/* tools/train.h - the training run behind `nnc train`, shared with `nnc compare`.
 *
 * train_opts holds every train flag; train_flags() describes them as a flag table; train_execute()
 * loads (fetching if needed) the data, runs nnc_train() with progress output, signal handling and
 * the run folder (config.json, dataset.json, metrics.csv, plot.svg, summary.json, checkpoints),
 * and returns an exit code. Single-threaded (nnc_train's callbacks run on the calling thread).
 */
#ifndef NNC_TOOLS_TRAIN_H
#define NNC_TOOLS_TRAIN_H

#include "dist/dist.h"
#include "tools/cli.h"

typedef struct train_opts {
    const char *dataset, *data, *model, *sched, *milestones, *algo, *sync, *norm, *run_dir, *nan_policy;
    const char *precision; /* --precision fp32|bf16 */
    int keep, epochs, batch, nesterov, decay_bn_bias, threads, resume, augment, download, workers, tau, bn_batches;
    int anomaly, log_every, eval_every, overwrite;
    double time_budget, drop_time, sync_timeout;
    float lr, momentum, wd, warmup_epochs, gamma, pull, prox, slow_momentum, slow_lr;
    long seed, limit_train, limit_test, step_epochs;
    double eval_seconds;   /* --eval-seconds: training-time evaluation grid (0 = none) */
    const char *link;      /* --link LATENCY,BANDWIDTH: modelled interconnect (NULL or "" = none) */
    int threads_per_worker;
    const char *placement;
} train_opts;

#define TRAIN_MAX_FLAGS 48

/* Defaults (from nnc_train_config_default where they exist there). */
void train_opts_init(train_opts *o);
/* Fill out[] (TRAIN_MAX_FLAGS entries) with the flags bound to o; returns the count. */
int train_flags(train_opts *o, flag_spec *out);

/* One evaluation reported by nnc_train (for compare's accuracy-vs-time plot). */
typedef struct train_eval_point {
    double seconds, epoch, loss, acc;
    long step;
    int which; /* 0 model/center, 1 average */
} train_eval_point;

typedef struct train_outcome {
    nnc_train_result res;
    int status;                 /* nnc_train's status */
    char run_dir[1024];
    train_eval_point *evals;    /* malloc'd, free with train_outcome_free */
    int nevals, cap;
} train_outcome;

void train_outcome_free(train_outcome *o);

/* What train_execute hands nnc_train's callbacks (tools/train_report.c): the progress line,
 * metrics.csv, train.log, and the evaluations collected for compare. */
typedef struct run_ctx {
    const train_opts *o;
    progress prog;
    metrics_log ml;
    long last_row, last_line, step; /* latest step seen in a callback */
    long round_steps, round_printed;  /* local steps summed over rounds; at the last round line */
    double seconds, epoch;
    train_outcome *out;
    const char *run_dir;
} run_ctx;
/* nnc_train callbacks (ud = run_ctx*): progress and round lines, evaluations, warnings. */
void train_on_step(const nnc_step_info *s, void *ud);
void train_on_round(const nnc_round_info *r, void *ud);
void train_on_eval(const nnc_eval_info *e, void *ud);
void train_on_log(const char *line, void *ud);

/* Check o before anything is read or written: DATASET given, --model registered, every flag
 * value (build_config against a dataset of any size). Returns 0 or EXIT_USAGE (printed). */
int train_validate(const train_opts *o);

/* Run one training as configured (o's flags become config.json). Returns an exit code (EXIT_*).
 * out may be NULL. */
int train_execute(const train_opts *o, train_outcome *out);

#endif
