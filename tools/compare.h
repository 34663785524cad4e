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
} compare_run;

/* Write out_dir/compare.csv (one row per run), compare.md (per algorithm: mean +- std over
 * seeds) and compare.svg (test accuracy vs training seconds, mean over seeds per algorithm).
 * Returns 0 or -1 with errno set (the failing path printed). */
int compare_write(const char *out_dir, const compare_run *runs, int n);

#endif
