/* dist/algo_slowmo.c - SlowMo (Wang, Tantia, Ballas, Rabbat, "SlowMo: Improving
 * Communication-Efficient Distributed SGD with Slow Momentum", ICLR 2020), and the slow
 * momentum every center-based algorithm can use (`--slow-momentum`).
 *
 * Every tau local steps (docs/algorithms.md, "SlowMo"):
 *     avg = the round's center (SlowMo: mean_i x_i)
 *     u  <- beta u + (x0 - avg) / gamma        (gamma: the current local learning rate)
 *     x0 <- x0 - alpha gamma u                 (x0: the previous synchronised model)
 * and every worker is set to x0 (SlowMo's pull is 1; GRAWA's c pulls toward x0). The local
 * momentum buffers are kept untouched, as local SGD and GRAWA keep them: the slow momentum
 * already carries the across-round direction, and keeping them makes beta = 0, alpha = 1
 * bitwise local SGD. State: u and x0 (checkpoint sections run/slow_u and run/slow_x0). */
#include "dist/algo.h"

#include <string.h>

#include "dist/run.h"

void nnc__slowmo_update(float *x0, float *u, const float *avg, double beta, double alpha, double gamma,
                        size_t n)
{
    for (size_t j = 0; j < n; j++) {
        double d = (double)x0[j] - (double)avg[j];
        double u_old = (double)u[j];
        u[j] = (float)(beta * u_old + d / gamma);
        x0[j] = (float)((double)x0[j] - alpha * (beta * gamma * u_old + d));
    }
}

int nnc__slowmo_round(nnc_run *R)
{
    size_t n = R->ly.n;
    /* gamma: the learning rate of worker 0's last local step (every rank knows its count). */
    long step = R->rep[0]->steps > 0 ? R->rep[0]->steps - 1 : 0;
    double gamma = nnc__run_lr(R, step, R->pub_seconds);
    if (!(gamma > 0.0)) gamma = R->c.lr;
    nnc__slowmo_update(R->slow_x0, R->slow_u, R->center, R->slow_beta, R->slow_alpha, gamma, n);
    memcpy(R->center, R->slow_x0, n * sizeof(float));
    memcpy(R->pub, R->slow_x0, n * sizeof(float));
    return NNC_OK;
}

int nnc__slowmo_state(const nnc_run *R, nnc_algo_vec *v)
{
    if (!R->slow) return 0;
    v[0] = (nnc_algo_vec){"run/slow_u", R->slow_u, R->ly.n};
    v[1] = (nnc_algo_vec){"run/slow_x0", R->slow_x0, R->ly.n};
    return 2;
}

static double slowmo_pull(const nnc_run *R, int i)
{
    (void)R;
    (void)i;
    return 1.0;
}

const nnc_algo_def nnc__algo_slowmo = {
    .id = NNC_ALGO_SLOWMO, .name = "slowmo",
    .summary = "local SGD whose average moves the synchronised model with slow momentum",
    .tau = 32, .pull = 1.0f, .prox = 0.0f,
    .flags = NNC_ALGO_F_SLOW_MOMENTUM | NNC_ALGO_F_SLOWMO,
    .weights = nnc__algo_uniform_weights, .center = nnc__algo_weighted_center, .pull_coef = slowmo_pull,
    .state = nnc__slowmo_state,
};
