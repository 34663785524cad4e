/* dist/algo_dp.c - data parallel (docs/algorithms.md, "Data parallel", "DP-SAM"): every step the
 * workers' gradients are averaged in worker order and every replica applies the same SGD step,
 * so the replicas stay identical. DP-SAM computes each worker's gradient at the SAM ascent point
 * w + rho g / ||g|| of its local gradient g, then returns to w exactly (a saved copy). */
#include "dist/algo.h"

#include <math.h>
#include <string.h>

#include "dist/run.h"

static int dp_gradient(nnc_run *R, nnc_replica *r, int n, double *loss, long *correct)
{
    (void)R;
    return nnc__replica_grad(r, n, loss, correct);
}

static int dp_sam_gradient(nnc_run *R, nnc_replica *r, int n, double *loss, long *correct)
{
    int s = nnc__replica_grad(r, n, loss, correct);
    if ((s && s != NNC_EDIVERGED) || !isfinite(*loss) || !nnc__grawa_finite(r->p->grad, r->p->n_data)) return s;
    /* Ascent from the local gradient, second gradient at w + e, back to w. */
    double l2;
    nnc__sam_perturb(r->p->data, r->p->grad, r->sam_saved, R->c.sam_rho, r->p->n_data);
    s = nnc__replica_grad(r, n, &l2, NULL);
    memcpy(r->p->data, r->sam_saved, r->p->n_data * sizeof(float));
    return s;
}

/* The averaged gradient is the round's target (R->pub); every replica steps with it. */
static int dp_center(nnc_run *R, const float *const *x, nnc_round_info *ri)
{
    (void)ri;
    return nnc__run_center(R, x, R->u, 0, R->pub);
}

const nnc_algo_def nnc__algo_dp = {
    .id = NNC_ALGO_DP, .name = "dp", .summary = "data parallel: gradients averaged every step",
    .tau = 1, .pull = 0.5f, .prox = 0.0f, .flags = NNC_ALGO_F_GRADIENTS,
    .weights = nnc__algo_uniform_weights, .center = dp_center, .gradient = dp_gradient,
};

const nnc_algo_def nnc__algo_dp_sam = {
    .id = NNC_ALGO_DP_SAM, .name = "dp-sam", .summary = "data parallel with sharpness-aware minimisation",
    .tau = 1, .pull = 0.5f, .prox = 0.0f, .flags = NNC_ALGO_F_GRADIENTS,
    .weights = nnc__algo_uniform_weights, .center = dp_center, .gradient = dp_sam_gradient,
};
