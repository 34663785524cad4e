/* tests/dist/test_rounds.c - the algorithms inside real lockstep rounds, observed through the
 * test-only worker hook (dist/run.h, nnc__dist_observe): EASGD center and elastic pull, the
 * LSGD leader and pull, MGRAWA weights from the bias-corrected EMA of the probe norms over
 * several rounds (and its center and pull), and the per-step proximity after the SGD update.
 * Each check recomputes the expected state from the observed pre-round state. */
#include <pthread.h>

#include "dist/run.h"
#include "tests/dist/dist_fixture.h"

enum { MAXN = 4096, MAXW = 4, MAXR = 32 };

/* What the observer saw (worker w writes only slot w; worker 0 writes the shared fields). */
typedef struct obs {
    long target;                    /* the round whose before/after states are kept */
    size_t n;
    float pre[MAXW][MAXN], post[MAXW][MAXN];
    float old_center[MAXN], new_center[MAXN];
    int got_pre[MAXW], got_post[MAXW];
    /* raw model-level probe norms reported at each round's arrival (GRAWA) */
    double raw[MAXR][MAXW];
    /* LSGD: the last 4 step losses of each worker, and their mean at the target's arrival */
    double hist[MAXW][4];
    int hist_n[MAXW];
    double mean_at[MAXW];
    /* proximity: worker 0's local step number `prox_step` (1-based) */
    long prox_step;
    int prox_phase;
    float x_pre[MAXN], x_sgd[MAXN], g[MAXN], x_done[MAXN], pub[MAXN];
    float center_r1[MAXN];
    /* on_round records (coordinator thread) */
    int rounds;
    double weight[MAXR][MAXW], norm[MAXR][MAXW];
} obs;

static obs O;

static void observer(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud)
{
    (void)ud;
    const nnc_params *p = R->rep[w]->p;
    size_t n = p->n_data;
    cr_assert_leq(n, (size_t)MAXN);
    switch (ev) {
    case NNC__OBS_ARRIVE:
        if (R->round + 1 < MAXR) {
            double s = 0.0;
            for (int l = 0; l < R->ly.L; l++) s += R->norms[(size_t)w * R->ly.L + l];
            O.raw[R->round + 1][w] = s;
        }
        if (R->round + 1 == O.target) {
            memcpy(O.pre[w], p->data, n * sizeof(float));
            O.got_pre[w] = 1;
            double m = 0.0;
            for (int k = 0; k < O.hist_n[w]; k++) m += O.hist[w][k];
            O.mean_at[w] = O.hist_n[w] ? m / O.hist_n[w] : INFINITY;
            if (w == 0) memcpy(O.old_center, R->center, n * sizeof(float));
        }
        break;
    case NNC__OBS_APPLIED:
        if (R->round == O.target) {
            memcpy(O.post[w], p->data, n * sizeof(float));
            O.got_post[w] = 1;
            if (w == 0) memcpy(O.new_center, R->center, n * sizeof(float));
        }
        if (R->round == 1 && w == 0) memcpy(O.center_r1, R->center, n * sizeof(float));
        break;
    case NNC__OBS_STEP_PRE:
        if (w == 0 && R->rep[0]->steps + 1 == O.prox_step) {
            memcpy(O.x_pre, p->data, n * sizeof(float));
            O.prox_phase = 1;
        }
        break;
    case NNC__OBS_STEP_SGD:
        if (O.hist_n[w] == 4) memmove(O.hist[w], O.hist[w] + 1, 3 * sizeof(double));
        else O.hist_n[w]++;
        O.hist[w][O.hist_n[w] - 1] = loss;
        if (w == 0 && O.prox_phase == 1) {
            memcpy(O.x_sgd, p->data, n * sizeof(float));
            memcpy(O.g, p->grad, n * sizeof(float));
            O.prox_phase = 2;
        }
        break;
    case NNC__OBS_STEP_DONE:
        if (w == 0 && O.prox_phase == 2) {
            memcpy(O.x_done, p->data, n * sizeof(float));
            memcpy(O.pub, R->pub, n * sizeof(float));
            O.prox_phase = 3;
        }
        break;
    }
    if (w == 0) O.n = n;
}

static void on_round(const nnc_round_info *r, void *ud)
{
    (void)ud;
    if (r->round < MAXR)
        for (int i = 0; i < r->workers; i++) {
            O.weight[r->round][i] = r->weight[i];
            O.norm[r->round][i] = r->norm[i];
        }
    O.rounds++;
}

static void run_observed(nnc_train_config *c, long target, long prox_step)
{
    memset(&O, 0, sizeof O);
    O.target = target;
    O.prox_step = prox_step;
    c->on_round = on_round;
    nnc_dataset *tr = fx_dataset(192, 1);
    nnc__dist_observe(observer, NULL);
    nnc_train_result r;
    int s = nnc_train(c, tr, NULL, &r);
    nnc__dist_observe(NULL, NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    cr_assert_geq(O.rounds, target);
    for (int i = 0; i < c->workers && target > 0; i++)
        cr_assert(O.got_pre[i] && O.got_post[i], "worker %d observed at round %ld", i, target);
    fx_dataset_free(tr);
}

/* |got - want| within rel of the larger magnitude (plus a float rounding floor). */
static void assert_close(const float *got, const double *want, size_t n, double rel, const char *what)
{
    for (size_t j = 0; j < n; j++) {
        double tol = rel * fmax(fabs(want[j]), fabs((double)got[j])) + 1e-7;
        cr_assert_leq(fabs((double)got[j] - want[j]), tol, "%s entry %zu: %.9g vs expected %.9g", what, j,
                      got[j], want[j]);
    }
}

Test(dist_rounds, easgd_center_and_elastic_pull, .timeout = 60)
{
    enum { M = 3 };
    nnc_train_config c = fx_config(NNC_ALGO_EASGD, M);
    c.tau = 2;
    c.epochs = 1;
    c.easgd_beta = 0.3f;
    run_observed(&c, 2, 0);
    size_t n = O.n;
    double beta = c.easgd_beta, alpha = beta / M;
    static double want[MAXN];
    for (size_t j = 0; j < n; j++) {
        double mean = 0.0;
        for (int i = 0; i < M; i++) mean += O.pre[i][j];
        want[j] = (1.0 - beta) * O.old_center[j] + beta * mean / M;
    }
    assert_close(O.new_center, want, n, 1e-6, "center = (1-beta) old + beta mean");
    cr_assert_neq(memcmp(O.new_center, O.old_center, n * sizeof(float)), 0);
    for (int i = 0; i < M; i++) {
        for (size_t j = 0; j < n; j++) want[j] = O.pre[i][j] + alpha * ((double)O.old_center[j] - O.pre[i][j]);
        assert_close(O.post[i], want, n, 1e-6, "worker pulled by beta/M toward the old center");
    }
}

Test(dist_rounds, lsgd_leader_unchanged_others_pulled, .timeout = 60)
{
    enum { M = 3 };
    nnc_train_config c = fx_config(NNC_ALGO_LSGD, M);
    c.tau = 3;   /* the 4-loss window spans the previous round */
    c.epochs = 2;
    c.pull = 0.3f;
    c.prox = 0.0f;
    run_observed(&c, 2, 0);
    size_t n = O.n;
    int lead = 0;
    for (int i = 1; i < M; i++)
        if (O.mean_at[i] < O.mean_at[lead]) lead = i;
    for (int i = 0; i < M; i++) {
        cr_assert_float_eq(O.norm[2][i], O.mean_at[i], 1e-12 * fabs(O.mean_at[i]), "worker %d running mean", i);
        cr_assert_eq(O.weight[2][i], i == lead ? 1.0 : 0.0, "leader %d marked in on_round", lead);
    }
    cr_assert_eq(memcmp(O.post[lead], O.pre[lead], n * sizeof(float)), 0, "leader %d unchanged", lead);
    static double want[MAXN];
    int moved = 0;
    for (int i = 0; i < M; i++) {
        if (i == lead) continue;
        for (size_t j = 0; j < n; j++) want[j] = (1.0 - c.pull) * O.pre[i][j] + c.pull * (double)O.pre[lead][j];
        assert_close(O.post[i], want, n, 1e-6, "x <- (1-c) x + c x_L");
        moved += memcmp(O.post[i], O.pre[i], n * sizeof(float)) != 0;
    }
    cr_assert_eq(moved, M - 1);
}

Test(dist_rounds, mgrawa_weights_from_bias_corrected_ema, .timeout = 60)
{
    enum { M = 3, K = 4 };
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, M);
    c.tau = 2;
    c.epochs = 2;
    c.pull = 0.6f;
    run_observed(&c, 3, 0);
    cr_assert_geq(O.rounds, K);
    double m[M] = {0}, nhat[M];
    for (int k = 1; k <= K; k++) {
        double usum = 0.0;
        for (int i = 0; i < M; i++) {
            cr_assert(isfinite(O.raw[k][i]) && O.raw[k][i] > 0.0, "round %d worker %d raw norm", k, i);
            m[i] = NNC_GRAWA_BETA * m[i] + (1.0 - NNC_GRAWA_BETA) * O.raw[k][i];
            nhat[i] = m[i] / (1.0 - pow(NNC_GRAWA_BETA, k));
            usum += 1.0 / nhat[i];
            cr_assert_float_eq(O.norm[k][i], nhat[i], 1e-12 * nhat[i], "round %d worker %d smoothed norm", k, i);
        }
        double wsum = 0.0;
        for (int i = 0; i < M; i++) {
            cr_assert_float_eq(O.weight[k][i], (1.0 / nhat[i]) / usum, 1e-12, "round %d worker %d weight", k, i);
            wsum += O.weight[k][i];
        }
        cr_assert_float_eq(wsum, 1.0, 1e-12);
        if (k == 1)
            for (int i = 1; i < M; i++) cr_assert_neq(O.weight[1][i], O.weight[1][0], "unequal norms, unequal weights");
    }
    /* Round 3: center = sum_i w_i x_i (pre-pull), then x_i <- (1 - c) x_i + c x_C. */
    size_t n = O.n;
    static double want[MAXN];
    for (size_t j = 0; j < n; j++) {
        want[j] = 0.0;
        for (int i = 0; i < M; i++) want[j] += O.weight[3][i] * O.pre[i][j];
    }
    assert_close(O.new_center, want, n, 1e-6, "MGRAWA center");
    for (int i = 0; i < M; i++) {
        for (size_t j = 0; j < n; j++) want[j] = (1.0 - c.pull) * O.pre[i][j] + c.pull * (double)O.new_center[j];
        assert_close(O.post[i], want, n, 1e-6, "pull toward the center");
    }
}

Test(dist_rounds, proximity_after_each_local_step, .timeout = 60)
{
    enum { M = 2, TAU = 4 };
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, M);
    c.tau = TAU;
    c.epochs = 1;
    c.prox = 0.4f;
    c.sgd.momentum = 0.0f;
    c.sgd.weight_decay = 0.0f;
    run_observed(&c, 0, TAU + 2);   /* worker 0's second local step after round 1 */
    cr_assert_eq(O.prox_phase, 3, "step observed");
    size_t n = O.n;
    cr_assert_eq(memcmp(O.pub, O.center_r1, n * sizeof(float)), 0, "proximity target = the last center");
    static double want[MAXN];
    double s = (double)c.prox / TAU;
    for (size_t j = 0; j < n; j++) want[j] = O.x_pre[j] - (double)c.lr * O.g[j];
    assert_close(O.x_sgd, want, n, 1e-6, "plain SGD step");
    for (size_t j = 0; j < n; j++) want[j] = (1.0 - s) * O.x_sgd[j] + s * (double)O.center_r1[j];
    assert_close(O.x_done, want, n, 1e-6, "x <- (1 - p/tau) x + (p/tau) x_C");
    cr_assert_neq(memcmp(O.x_done, O.x_sgd, n * sizeof(float)), 0, "the proximity moved the worker");
}
