/* tests/nn/test_ops_norm.c - batchnorm2d: gradchecks in training and eval mode,
 * running-statistics update vs the PyTorch formula, eval uses running statistics, misuse. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <string.h>

#include "nn/nnc.h"
#include "tests/common/gradcheck.h"

static void quiet_hook(const char *m) { (void)m; }

typedef struct bn_args {
    int training;
    nnc_tensor *rm, *rv;          /* working running stats (NULL = none) */
    const float *rm0, *rv0;       /* reset before every forward when set (fresh copies) */
} bn_args;

/* in: x, gamma, beta (gamma/beta may be NULL) */
static nnc_tensor *fn_bn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    bn_args *a = ud;
    if (a->rm0) {
        memcpy(a->rm->data, a->rm0, a->rm->numel * sizeof(float));
        memcpy(a->rv->data, a->rv0, a->rv->numel * sizeof(float));
    }
    return nnc_batchnorm2d(g, in[0], in[1], in[2], a->rm, a->rv, 0.1f, 1e-5f, a->training);
}

static void check_bn(nnc_rng *r, int ndim, const int *xs, bn_args *a, const char *label)
{
    int c[1] = {xs[1]};
    nnc_tensor *in[3] = {gc_leaf(ndim, xs, r, -2.0f, 2.0f, 1), gc_leaf(1, c, r, 0.5f, 1.5f, 1),
                         gc_leaf(1, c, r, -0.5f, 0.5f, 1)};
    cr_assert_eq(gradcheck(label, fn_bn, 3, in, a, gc_defaults()), 0, "%s", label);
    /* only gamma/beta (x a constant input, e.g. the first layer's image batch) */
    in[0]->requires_grad = 0;
    cr_assert_eq(gradcheck(label, fn_bn, 3, in, a, gc_defaults()), 0, "%s, x constant", label);
    /* only x, and no affine parameters */
    in[0]->requires_grad = 1;
    nnc_tensor *plain[3] = {in[0], NULL, NULL};
    cr_assert_eq(gradcheck(label, fn_bn, 3, plain, a, gc_defaults()), 0, "%s, no affine", label);
    for (int i = 0; i < 3; i++) gc_leaf_free(in[i]);
}

Test(nn_ops_norm, gradcheck_training_batch_stats)
{
    nnc_rng r;
    nnc_rng_seed(&r, 21, 0);
    int shapes[][4] = {{2, 3, 2, 3}, {1, 2, 3, 2}, {3, 4, 1, 1}, {2, 3, 1, 1}, {1, 1, 1, 5}, {2, 2, 3, 3}};
    bn_args a = {.training = 1};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_bn(&r, 4, shapes[i], &a, "bn train");
    int s2[2] = {5, 3};
    check_bn(&r, 2, s2, &a, "bn train (N,C)");
}

Test(nn_ops_norm, gradcheck_training_with_running_stats_fresh_copies)
{
    nnc_rng r;
    nnc_rng_seed(&r, 22, 0);
    int c[1] = {3}, xs[4] = {2, 3, 3, 2};
    nnc_tensor *rm = gc_leaf(1, c, &r, -0.5f, 0.5f, 0), *rv = gc_leaf(1, c, &r, 0.5f, 1.5f, 0);
    float rm0[3], rv0[3];
    memcpy(rm0, rm->data, sizeof rm0);
    memcpy(rv0, rv->data, sizeof rv0);
    bn_args a = {.training = 1, .rm = rm, .rv = rv, .rm0 = rm0, .rv0 = rv0};
    check_bn(&r, 4, xs, &a, "bn train + running");
    gc_leaf_free(rm);
    gc_leaf_free(rv);
}

Test(nn_ops_norm, gradcheck_eval_running_stats)
{
    nnc_rng r;
    nnc_rng_seed(&r, 23, 0);
    int shapes[][4] = {{2, 3, 2, 3}, {1, 4, 1, 1}, {1, 2, 3, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int c[1] = {shapes[i][1]};
        nnc_tensor *rm = gc_leaf(1, c, &r, -0.5f, 0.5f, 0), *rv = gc_leaf(1, c, &r, 0.5f, 1.5f, 0);
        bn_args a = {.training = 0, .rm = rm, .rv = rv};
        check_bn(&r, 4, shapes[i], &a, "bn eval");
        gc_leaf_free(rm);
        gc_leaf_free(rv);
    }
}

/* Double-precision reference of one training step, PyTorch semantics. */
Test(nn_ops_norm, running_stats_update_and_output_match_formula)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_rng r;
    nnc_rng_seed(&r, 24, 0);
    int N = 3, C = 2, H = 2, W = 3, M = N * H * W, xs[4] = {N, C, H, W}, cs[1] = {C};
    nnc_tensor *x = gc_leaf(4, xs, &r, -1.0f, 3.0f, 0);
    nnc_tensor *gm = gc_leaf(1, cs, &r, 0.5f, 1.5f, 1), *bt = gc_leaf(1, cs, &r, -0.5f, 0.5f, 1);
    float rm[2] = {0.25f, -0.5f}, rv[2] = {1.0f, 2.0f};
    nnc_tensor *trm = nnc_tensor_wrap(g, rm, 1, cs), *trv = nnc_tensor_wrap(g, rv, 1, cs);
    float mom = 0.1f, eps = 1e-5f;
    nnc_tensor *y = nnc_batchnorm2d(g, x, gm, bt, trm, trv, mom, eps, 1);
    float rm_old[2] = {0.25f, -0.5f}, rv_old[2] = {1.0f, 2.0f};
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) s += x->data[(n * C + c) * H * W + i];
        double mean = s / M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                double d = x->data[(n * C + c) * H * W + i] - mean;
                ss += d * d;
            }
        double var = ss / M, var_unbiased = ss / (M - 1);
        double want_rm = (1 - mom) * rm_old[c] + mom * mean;
        double want_rv = (1 - mom) * rv_old[c] + mom * var_unbiased;
        cr_assert(fabs(rm[c] - want_rm) <= 1e-6, "running_mean[%d] %.9g want %.9g", c, rm[c], want_rm);
        cr_assert(fabs(rv[c] - want_rv) <= 1e-6, "running_var[%d] %.9g want %.9g", c, rv[c], want_rv);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                int k = (n * C + c) * H * W + i;
                double want = gm->data[c] * (x->data[k] - mean) / sqrt(var + eps) + bt->data[c];
                cr_assert(fabs(y->data[k] - want) <= 1e-5, "y[%d] %.9g want %.9g", k, y->data[k], want);
            }
    }

    /* eval: uses the running stats (now updated) and leaves them unchanged */
    float rm1[2] = {rm[0], rm[1]}, rv1[2] = {rv[0], rv[1]};
    y = nnc_batchnorm2d(g, x, gm, bt, trm, trv, mom, eps, 0);
    for (int c = 0; c < C; c++) {
        cr_assert_eq(rm[c], rm1[c]);
        cr_assert_eq(rv[c], rv1[c]);
        for (int k = c * H * W; k < M * C; k += C * H * W)
            for (int i = 0; i < H * W; i++) {
                double want = gm->data[c] * (x->data[k + i] - rm[c]) / sqrt(rv[c] + eps) + bt->data[c];
                cr_assert(fabs(y->data[k + i] - want) <= 1e-5, "eval y[%d]", k + i);
            }
    }

    /* NULL running stats in training: nothing to update, output unchanged */
    nnc_tensor *y2 = nnc_batchnorm2d(g, x, gm, bt, NULL, NULL, mom, eps, 1);
    nnc_tensor *y3 = nnc_batchnorm2d(g, x, gm, bt, trm, trv, mom, eps, 1);
    cr_assert_eq(memcmp(y2->data, y3->data, y2->numel * sizeof(float)), 0);
    gc_leaf_free(x);
    gc_leaf_free(gm);
    gc_leaf_free(bt);
    nnc_graph_free(g);
}

Test(nn_ops_norm, param_grads_accumulate)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_rng r;
    nnc_rng_seed(&r, 25, 0);
    int xs[4] = {2, 2, 2, 2}, cs[1] = {2};
    nnc_tensor *x = gc_leaf(4, xs, &r, -1.0f, 1.0f, 0);
    nnc_tensor *gm = gc_leaf(1, cs, &r, 0.5f, 1.5f, 1), *bt = gc_leaf(1, cs, &r, -0.5f, 0.5f, 1);
    float ones[16];
    for (int i = 0; i < 16; i++) ones[i] = 1.0f;
    gm->grad[0] = gm->grad[1] = bt->grad[0] = bt->grad[1] = 5.0f;
    nnc_tensor *y = nnc_batchnorm2d(g, x, gm, bt, NULL, NULL, 0.1f, 1e-5f, 1);
    cr_assert_eq(nnc_backward_seed(g, y, ones), NNC_OK);
    /* dbeta = sum dy = 8 per channel; dgamma = sum xhat = 0 */
    cr_assert_float_eq(bt->grad[0], 13.0f, 1e-5);
    cr_assert_float_eq(bt->grad[1], 13.0f, 1e-5);
    cr_assert_float_eq(gm->grad[0], 5.0f, 1e-4);
    cr_assert_float_eq(gm->grad[1], 5.0f, 1e-4);
    gc_leaf_free(x);
    gc_leaf_free(gm);
    gc_leaf_free(bt);
    nnc_graph_free(g);
}

Test(nn_ops_norm, training_with_one_value_per_channel_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    nnc_batchnorm2d(g, nnc_tensor_new4(g, 1, 3, 1, 1), NULL, NULL, NULL, NULL, 0.1f, 1e-5f, 1);
}

Test(nn_ops_norm, eval_without_running_stats_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    nnc_batchnorm2d(g, nnc_tensor_new4(g, 2, 3, 2, 2), NULL, NULL, NULL, NULL, 0.1f, 1e-5f, 0);
}

Test(nn_ops_norm, gamma_channel_mismatch_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    int c[1] = {4};
    nnc_batchnorm2d(g, nnc_tensor_new4(g, 2, 3, 2, 2), nnc_tensor_new(g, 1, c), NULL, NULL, NULL, 0.1f,
                    1e-5f, 1);
}
