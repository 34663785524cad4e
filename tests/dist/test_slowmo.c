/* tests/dist/test_slowmo.c - SlowMo and the slow momentum of center-based algorithms: the update
 * rule by hand, one real round recomputed from the observed pre-round state, beta = 0 and
 * alpha = 1 bitwise local SGD, slow momentum refused where an algorithm has no center, and the
 * registry (names, aliases, did-you-mean). */
#include "dist/run.h"
#include "tests/dist/dist_fixture.h"

Test(dist_slowmo, update_by_hand)
{
    /* x0 = [1, 2], avg = [0.5, 2.5], u = [0.2, -0.1], beta 0.5, alpha 0.8, gamma 0.1:
     * u = 0.5 * 0.2 + 0.5 / 0.1 = 5.1 and 0.5 * -0.1 - 0.5 / 0.1 = -5.05;
     * x0 = 1 - 0.8 * 0.1 * 5.1 = 0.592 and 2 + 0.8 * 0.1 * 5.05 = 2.404. */
    float x0[2] = {1.0f, 2.0f}, avg[2] = {0.5f, 2.5f}, u[2] = {0.2f, -0.1f};
    nnc__slowmo_update(x0, u, avg, 0.5, 0.8, 0.1, 2);
    cr_assert_float_eq(u[0], 5.1f, 1e-5);
    cr_assert_float_eq(u[1], -5.05f, 1e-5);
    cr_assert_float_eq(x0[0], 0.592f, 1e-6);
    cr_assert_float_eq(x0[1], 2.404f, 1e-6);
    /* beta 0, alpha 1: x0 becomes the average exactly, whatever u was. */
    float y0[3] = {0.1f, -3.0f, 1e-3f}, yavg[3] = {0.30000001f, 7.25f, -2e-7f}, yu[3] = {9.0f, -1.0f, 0.5f};
    nnc__slowmo_update(y0, yu, yavg, 0.0, 1.0, 0.05, 3);
    cr_assert_eq(memcmp(y0, yavg, sizeof y0), 0, "beta 0, alpha 1 must give the average bit for bit");
}

enum { MAXN = 4096, MAXW = 3 };

typedef struct sobs {
    long target;
    size_t n;
    float pre[MAXW][MAXN], x0[MAXN], u[MAXN], post_center[MAXN], post[MAXW][MAXN];
    int got_pre[MAXW], got_post[MAXW];
    double gamma, beta, alpha;
} sobs;

static sobs S;

static void observer(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud)
{
    (void)ud;
    (void)loss;
    const nnc_params *p = R->rep[w]->p;
    size_t n = p->n_data;
    cr_assert_leq(n, (size_t)MAXN);
    if (ev == NNC__OBS_ARRIVE && R->round + 1 == S.target) {
        memcpy(S.pre[w], p->data, n * sizeof(float));
        S.got_pre[w] = 1;
        if (w == 0) {
            S.n = n;
            memcpy(S.x0, R->slow_x0, n * sizeof(float));
            memcpy(S.u, R->slow_u, n * sizeof(float));
            S.beta = R->slow_beta;
            S.alpha = R->slow_alpha;
            S.gamma = R->c.lr; /* constant schedule */
        }
    } else if (ev == NNC__OBS_APPLIED && R->round == S.target) {
        memcpy(S.post[w], p->data, n * sizeof(float));
        S.got_post[w] = 1;
        if (w == 0) memcpy(S.post_center, R->center, n * sizeof(float));
    }
}

Test(dist_slowmo, one_round_by_hand, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    memset(&S, 0, sizeof S);
    S.target = 3; /* u is non-zero from round 2 on */
    nnc_train_config c = fx_config(NNC_ALGO_SLOWMO, MAXW);
    c.tau = 2;
    c.epochs = 1;
    c.slow_momentum = 0.5f;
    c.slow_lr = 0.9f;
    nnc__dist_observe(observer, NULL);
    nnc_train_result r;
    int s = nnc_train(&c, tr, NULL, &r);
    nnc__dist_observe(NULL, NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    for (int w = 0; w < MAXW; w++) cr_assert(S.got_pre[w] && S.got_post[w], "worker %d not observed", w);
    cr_assert_eq(S.beta, 0.5);
    cr_assert_float_eq(S.alpha, 0.9, 1e-7);
    double maxu = 0.0;
    for (size_t j = 0; j < S.n; j++) {
        double avg = 0.0;
        for (int w = 0; w < MAXW; w++) avg += S.pre[w][j];
        avg /= MAXW;
        double u = S.beta * S.u[j] + ((double)S.x0[j] - avg) / S.gamma;
        double x0 = S.x0[j] - S.alpha * S.gamma * u;
        cr_assert_float_eq(S.post_center[j], x0, 1e-5 + 1e-5 * fabs(x0), "element %zu: %g vs %g", j,
                           (double)S.post_center[j], x0);
        for (int w = 0; w < MAXW; w++)
            cr_assert_eq(S.post[w][j], S.post_center[j], "worker %d not set to x0 at element %zu", w, j);
        if (fabs(S.u[j]) > maxu) maxu = fabs(S.u[j]);
    }
    cr_assert_gt(maxu, 0.0, "the slow momentum was zero before the checked round");
    fx_dataset_free(tr);
}

static void run_dir(nnc_train_config *c, const nnc_dataset *tr, char *dir, size_t n, fx_trace *t)
{
    c->ckpt_dir = fx_tmpdir(dir, n);
    fx_hook(c, t);
    nnc_train_result r;
    cr_assert_eq(nnc_train(c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
}

Test(dist_slowmo, beta0_alpha1_is_local_sgd_bitwise, .timeout = 120)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char d1[64], d2[64];
    fx_trace t1, t2;
    nnc_train_config a = fx_config(NNC_ALGO_LOCAL_SGD, 3);
    a.tau = 2;
    a.epochs = 2;
    a.sgd.momentum = 0.9f;
    run_dir(&a, tr, d1, sizeof d1, &t1);
    nnc_train_config b = a;
    b.algo = NNC_ALGO_SLOWMO;
    b.slow_momentum = 0.0f;
    b.slow_lr = 1.0f;
    run_dir(&b, tr, d2, sizeof d2, &t2);
    cr_assert_gt(t1.rounds, 3);
    cr_assert_eq(t1.rounds, t2.rounds);
    cr_assert_eq(t1.hash, t2.hash, "round traces (weights, distances, losses) differ");
    const char *pre[] = {"w0/", "w1/", "w2/"};
    for (int k = 0; k < 3; k++) {
        nnc_model *ma = fx_load_model(d1, "last.ckpt", pre[k]), *mb = fx_load_model(d2, "last.ckpt", pre[k]);
        cr_assert(fx_same_params(ma, mb), "worker %s differs between local-sgd and slowmo beta 0 alpha 1", pre[k]);
        nnc_model_free(ma);
        nnc_model_free(mb);
    }
    fx_rmdir(d1);
    fx_rmdir(d2);
    fx_dataset_free(tr);
}

Test(dist_slowmo, slow_momentum_refused_without_center)
{
    nnc_dataset *tr = fx_dataset(64, 1);
    nnc_algo no[] = {NNC_ALGO_EASGD, NNC_ALGO_LSGD, NNC_ALGO_DP, NNC_ALGO_DP_SAM};
    for (int k = 0; k < 4; k++) {
        nnc_train_config c = fx_config(no[k], 2);
        c.slow_momentum = 0.5f;
        nnc_train_result r;
        cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
        cr_assert(strstr(nnc_error_message(), "slow momentum"), "%s", nnc_error_message());
    }
    nnc_train_config c = fx_config(NNC_ALGO_SLOWMO, 2);
    c.slow_momentum = 1.0f;
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    fx_dataset_free(tr);
}

Test(dist_slowmo, registry)
{
    nnc_algo a;
    cr_assert_eq(nnc_algo_parse("slowmo", &a), NNC_OK);
    cr_assert_eq(a, NNC_ALGO_SLOWMO);
    cr_assert_eq(nnc_algo_parse("grawa", &a), NNC_OK);
    cr_assert_eq(a, NNC_ALGO_MGRAWA);
    cr_assert_str_eq(nnc_algo_name(NNC_ALGO_SLOWMO), "slowmo");
    cr_assert_neq(nnc_algo_parse("slomo", &a), NNC_OK);
    cr_assert(strstr(nnc_error_message(), "did you mean 'slowmo'"), "%s", nnc_error_message());
    for (int i = 0; i < nnc_algo_count(); i++) {
        const nnc_algo_def *d = nnc_algo_at(i);
        cr_assert_eq(nnc_algo_find(d->name), d);
        cr_assert_eq(nnc_algo_get(d->id), d);
        cr_assert(d->flags & NNC_ALGO_F_SINGLE || (d->weights && d->center), "%s lacks round hooks", d->name);
        cr_assert(!(d->flags & NNC_ALGO_F_GRADIENTS) || d->gradient, "%s lacks a gradient hook", d->name);
        cr_assert(!(d->flags & NNC_ALGO_F_SLOW_MOMENTUM) || d->state, "%s cannot save its slow momentum", d->name);
    }
    const nnc_algo_def *s = nnc_algo_find("slowmo");
    cr_assert_eq(s->tau, 32);
}
