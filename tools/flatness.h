/* tools/flatness.h - `nnc flatness` (tools/cmd_flatness.c): Hessian eigenvalues and trace of a
 * checkpoint's training loss; shared with `nnc compare --flatness`. */
#ifndef NNC_TOOLS_FLATNESS_H
#define NNC_TOOLS_FLATNESS_H

#include <stdio.h>

#define FLATNESS_MAX_STARTS 32

typedef struct flatness_opts {
    int images;   /* the first N training images (--images) */
    int iters;    /* Lanczos iterations per start (--iters) */
    int k;        /* Ritz values summed (--k) */
    int starts;   /* random Lanczos starts (--starts, <= FLATNESS_MAX_STARTS) */
    int probes;   /* Hutchinson probes (--probes; 0 = no trace estimate) */
    int batch;    /* images per forward/backward, BN statistics per batch (--batch) */
    long seed;    /* start and probe vectors (--seed) */
    double eps;   /* central-difference step (--eps) */
} flatness_opts;

typedef struct flatness_result {
    char ckpt[1100];      /* the file read (a run folder's best.ckpt, else last.ckpt) */
    char arch[128], dataset[64], trained_on[64];
    int images, starts, probes;
    double lambda_max[FLATNESS_MAX_STARTS], top_sum[FLATNESS_MAX_STARTS]; /* per start */
    double lambda_mean, lambda_sd, lambda_min, lambda_max_over_starts;
    double top_mean, top_sd, top_min, top_max;
    double trace, trace_se;  /* Hutchinson; NAN without probes (trace_se NAN for 1 probe) */
    double seconds;
} flatness_result;

/* The defaults of `nnc flatness`. */
void flatness_opts_init(flatness_opts *o);
/* Check o's values: 0, or EXIT_USAGE after printing the flag, expected and found value. */
int flatness_opts_check(const flatness_opts *o);
/* Load the model of ckpt (file or run folder), the first o->images training images of dataset
 * (NULL: the dataset the checkpoint names in its meta/json) from data_dir (NULL: the run
 * folder's config.json "data" when ckpt is in a run folder, else the dataset's default), and
 * measure. Prints problems (cli_error); returns an exit code (0 ok, 2 bad file/data/flags,
 * 1 runtime failure). */
int flatness_measure(const char *ckpt, const char *dataset, const char *data_dir, const flatness_opts *o,
                     flatness_result *r);
/* The human-readable report / the --json object. */
void flatness_print(FILE *f, const flatness_opts *o, const flatness_result *r);
void flatness_print_json(FILE *f, const flatness_opts *o, const flatness_result *r);

#endif
