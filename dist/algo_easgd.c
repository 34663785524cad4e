/* dist/algo_easgd.c - EASGD in its synchronous-round form (docs/algorithms.md, "EASGD"): the
 * synchronizer keeps a center x~; every round, with alpha = beta / M, the workers are pulled
 * toward the old center and the center moves toward the workers' mean S:
 *     x_i <- (1 - alpha) x_i + alpha x~;   x~ <- (1 - beta) x~ + beta S. */
#include "dist/algo.h"

#include <string.h>

#include "dist/run.h"

static int easgd_center(nnc_run *R, const float *const *x, nnc_round_info *ri)
{
    (void)ri;
    size_t n = R->ly.n;
    float *mean = nnc_model_params(R->scratch)->data;
    int s = nnc__run_center(R, x, R->u, 0, mean);
    if (s) return s;
    memcpy(R->pub, R->center, n * sizeof(float));   /* pulls go toward the old center */
    nnc__easgd_center(R->center, mean, R->c.easgd_beta, n);
    return NNC_OK;
}

static double easgd_pull(const nnc_run *R, int i)
{
    (void)i;
    return (double)R->c.easgd_beta / R->M;
}

const nnc_algo_def nnc__algo_easgd = {
    .id = NNC_ALGO_EASGD, .name = "easgd", .summary = "elastic averaging: workers and a center pull each other",
    .tau = 4, .pull = 0.5f, .prox = 0.0f, .flags = 0,
    .weights = nnc__algo_uniform_weights, .center = easgd_center, .pull_coef = easgd_pull,
};
