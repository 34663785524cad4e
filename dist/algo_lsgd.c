/* dist/algo_lsgd.c - leader SGD (docs/algorithms.md, "LSGD"): the leader is the worker with the
 * lowest running mean of its last NNC_LSGD_HISTORY losses; every other worker is pulled toward
 * it, and its parameters are the proximity target until the next round. The reported model is
 * the uniform average of the workers. */
#include "dist/algo.h"

#include <string.h>

#include "dist/run.h"

static int lsgd_center(nnc_run *R, const float *const *x, nnc_round_info *ri)
{
    (void)x;
    size_t n = R->ly.n;
    nnc_lsgd_hist h[NNC_MAX_WORKERS];
    for (int i = 0; i < R->M; i++) h[i] = R->W[i].hist;
    int lead = nnc__lsgd_leader(h, R->ok, R->M);
    R->leader = lead;
    if (lead >= R->lo && lead < R->hi) memcpy(R->center, R->rep[lead]->p->data, n * sizeof(float));
    if (R->tp->size > 1) {
        int s = R->tp->ops->broadcast(R->tp, R->center, n * sizeof(float), nnc__run_owner(R, lead));
        if (s) return s;
    }
    memcpy(R->pub, R->center, n * sizeof(float));
    for (int i = 0; i < R->M; i++) {
        ri->norm[i] = nnc__lsgd_mean(&R->W[i].hist);
        ri->weight[i] = i == lead;
    }
    return NNC_OK;
}

static double lsgd_pull(const nnc_run *R, int i)
{
    return i == R->leader ? 0.0 : R->c.pull;
}

const nnc_algo_def nnc__algo_lsgd = {
    .id = NNC_ALGO_LSGD, .name = "lsgd", .summary = "leader SGD: workers pulled toward the lowest-loss worker",
    .tau = 4, .pull = 0.1f, .prox = 0.1f, .flags = NNC_ALGO_F_REPORT_AVERAGE | NNC_ALGO_F_LOSS_HISTORY,
    .weights = nnc__algo_uniform_weights, .center = lsgd_center, .pull_coef = lsgd_pull,
};
