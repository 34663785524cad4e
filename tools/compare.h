/* tools/compare.h - `nnc compare` results and their report files (compare.md, compare.csv,
 * compare.svg). The writers take plain arrays, so they do not depend on the trainer. */
#ifndef NNC_TOOLS_COMPARE_H
#define NNC_TOOLS_COMPARE_H

typedef struct compare_run {
    char algo[32];
    long seed;
    int exit_code;                 /* of the run (0 ok) */
    double test_acc, center_acc, average_acc; /* NAN when not applicable */
    long rounds, local_steps;      /* local_steps: summed over workers */
    double img_per_s, seconds;
    const double *eval_s, *eval_acc; /* the reported model's evaluations (time, accuracy) */
    int nevals;
    double bytes_per_round;        /* summary.json (all workers together); NAN unknown */
    double flat_lambda, flat_topk; /* --flatness: lambda_max and the top-k sum; NAN when not measured */
    double comm_s;                 /* modelled communication seconds (--link; summary.json
                                      comm_model_seconds; 0 without a link) */
} compare_run;

/* What compare.md shows besides accuracy, rounds, steps and throughput. */
typedef struct compare_opts {
    double target_acc; /* > 0: time to reach this test accuracy (a fraction, 0.85 = 85%) */
    int flatness;      /* lambda_max and top-k sum columns */
    int flat_k;        /* the k of the top-k sum (column title) */
} compare_opts;

/* Baselines, against the best of which every algorithm is compared (paired over seeds):
 * sgd, local-sgd, easgd, lsgd, dp, dp-sam. 1 when algo is one. */
int compare_is_baseline(const char *algo);
/* Two-sided 95% quantile of Student's t with df degrees of freedom, t(0.975, df): a table for
 * df <= 30, the Cornish-Fisher expansion above (within 1e-4 of the exact value); NAN for df < 1. */
double compare_t975(int df);
/* Paired differences a[i] - b[i] over the i where both are finite: their mean and the paired t
 * 95% interval mean +- t975(n - 1) * sd / sqrt(n) into lo, hi (NAN when fewer than 2 pairs).
 * Returns the number of pairs n. */
int compare_paired(const double *a, const double *b, int n, double *mean, double *lo, double *hi);
/* Training seconds of the first evaluation of r at or above target accuracy; NAN if none. */
double compare_time_to(const compare_run *r, double target);
/* A finished run folder (summary.json; the `val` rows of metrics.csv) into r for algo and seed:
 * *es and *ea are malloc'd evaluation arrays r points to (free them). Returns 0, or -1 when
 * summary.json is missing or unreadable (r->exit_code is then EXIT_RUNTIME). */
int compare_run_load(const char *run_dir, const char *algo, long seed, compare_run *r, double **es, double **ea);
/* compare_write with the optional columns of o (NULL: none). */
int compare_write_opts(const char *out_dir, const compare_run *runs, int n, const compare_opts *o);

/* Write out_dir/compare.csv (one row per run), compare.md (per algorithm: mean +- std over
 * seeds) and compare.svg (test accuracy vs training seconds, mean over seeds per algorithm).
 * Returns 0 or -1 with errno set (the failing path printed). */
int compare_write(const char *out_dir, const compare_run *runs, int n);

#endif
