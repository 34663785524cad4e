/* dist/algo_local_sgd.c - local SGD (docs/algorithms.md, "Local SGD"): every tau steps every
 * worker is replaced by the uniform average of the workers (the GRAWA round with equal weights
 * and c = 1, no probe, no proximity). The reported model is that average. */
#include "dist/algo.h"

const nnc_algo_def nnc__algo_local_sgd = {
    .id = NNC_ALGO_LOCAL_SGD, .name = "local-sgd",
    .summary = "every worker replaced by the workers' average every tau steps",
    .tau = 32, .pull = 1.0f, .prox = 0.0f,
    .flags = NNC_ALGO_F_REPORT_AVERAGE | NNC_ALGO_F_SLOW_MOMENTUM,
    .weights = nnc__algo_uniform_weights, .center = nnc__algo_weighted_center,
    .pull_coef = nnc__algo_config_pull, .state = nnc__slowmo_state,
};
