/* tests/nn/test_ops_loss.c - softmax cross-entropy: finite-difference gradchecks, a hand-computed
 * example for mean/sum/smoothing, numerical stability, argmax_rows, misuse. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>

#include "nn/nnc.h"
#include "tests/common/gradcheck.h"

static void quiet_hook(const char *m) { (void)m; }

typedef struct ce_args {
    const int *labels;
    nnc_reduction red;
    float smoothing;
} ce_args;

static nnc_tensor *fn_ce(nnc_graph *g, nnc_tensor **in, void *ud)
{
    ce_args *a = ud;
    return nnc_softmax_cross_entropy(g, in[0], a->labels, a->red, a->smoothing);
}

Test(nn_ops_loss, gradcheck_cross_entropy)
{
    nnc_rng r;
    nnc_rng_seed(&r, 31, 0);
    int shapes[][2] = {{4, 5}, {1, 3}, {3, 10}, {7, 2}};
    nnc_reduction reds[2] = {NNC_REDUCE_MEAN, NNC_REDUCE_SUM};
    float smooth[3] = {0.0f, 0.1f, 0.4f};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int labels[16];
        for (int n = 0; n < shapes[i][0]; n++) labels[n] = (int)nnc_rng_below(&r, (uint32_t)shapes[i][1]);
        nnc_tensor *z = gc_leaf(2, shapes[i], &r, -3.0f, 3.0f, 1);
        for (int ri = 0; ri < 2; ri++)
            for (int si = 0; si < 3; si++) {
                ce_args a = {labels, reds[ri], smooth[si]};
                cr_assert_eq(gradcheck("ce", fn_ce, 1, &z, &a, gc_defaults()), 0,
                             "shape %zu reduction %d smoothing %g", i, ri, smooth[si]);
            }
        gc_leaf_free(z);
    }
}

/* logits [[1,2,3],[0.5,-1,2]], labels [2,1]. softmax rows:
 *   [0.0900305731703804, 0.2447284710547976, 0.6652409557748217]
 *   [0.1752903921400367, 0.0391125732706875, 0.7855970345892758]
 * sum of -log p[label] = 3.6489172611015377; smoothing 0.1 (K = 3): 3.598917261101538. */
Test(nn_ops_loss, hand_computed_2x3)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    float z[6] = {1, 2, 3, 0.5f, -1, 2};
    int shape[2] = {2, 3}, labels[2] = {2, 1};
    nnc_tensor *t = nnc_tensor_wrap(g, z, 2, shape);
    struct {
        nnc_reduction red;
        float s;
        double want;
    } cases[] = {
        {NNC_REDUCE_MEAN, 0.0f, 1.8244586305507688},
        {NNC_REDUCE_SUM, 0.0f, 3.6489172611015377},
        {NNC_REDUCE_MEAN, 0.1f, 1.799458630550769},
        {NNC_REDUCE_SUM, 0.1f, 3.598917261101538},
    };
    for (int i = 0; i < 4; i++) {
        nnc_tensor *l = nnc_softmax_cross_entropy(g, t, labels, cases[i].red, cases[i].s);
        cr_assert_eq(l->ndim, 1);
        cr_assert_eq(l->shape[0], 1);
        cr_assert(fabs(l->data[0] - cases[i].want) <= 1e-6, "case %d: %.9g want %.9g", i, l->data[0],
                  cases[i].want);
    }

    /* gradient (mean, smoothing 0.1): (p - t) / N, t = 0.9 onehot + 0.1/3 */
    double p[6] = {0.0900305731703804, 0.2447284710547976, 0.6652409557748217,
                   0.1752903921400367, 0.0391125732706875, 0.7855970345892758};
    nnc_rng r;
    nnc_rng_seed(&r, 32, 0);
    nnc_tensor *leaf = gc_leaf(2, shape, &r, 0, 1, 1);
    for (int i = 0; i < 6; i++) leaf->data[i] = z[i];
    nnc_graph_reset(g);
    nnc_tensor *l = nnc_softmax_cross_entropy(g, leaf, labels, NNC_REDUCE_MEAN, 0.1f);
    cr_assert_eq(nnc_backward(g, l), NNC_OK);
    for (int i = 0; i < 6; i++) {
        double tk = 0.1 / 3 + ((i % 3) == labels[i / 3] ? 0.9 : 0.0);
        double want = (p[i] - tk) / 2;
        cr_assert(fabs(leaf->grad[i] - want) <= 1e-6, "grad[%d] %.9g want %.9g", i, leaf->grad[i], want);
    }
    gc_leaf_free(leaf);
    nnc_graph_free(g);
}

Test(nn_ops_loss, large_logits_are_stable)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    float z[6] = {1001, 1002, 1003, -999.5f, -1001, -998};
    int shape[2] = {2, 3}, labels[2] = {2, 1};
    nnc_tensor *l = nnc_softmax_cross_entropy(g, nnc_tensor_wrap(g, z, 2, shape), labels, NNC_REDUCE_SUM, 0);
    cr_assert(isfinite(l->data[0]));
    cr_assert(fabs(l->data[0] - 3.6489172611015377) <= 1e-5, "shift invariance: %.9g", l->data[0]);
    nnc_graph_free(g);
}

Test(nn_ops_loss, argmax_rows_first_maximum)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    float z[12] = {0, 5, 1, 5, -1, -2, -3, -0.5f, 7, 7, 7, 7};
    int shape[2] = {3, 4}, out[3];
    nnc_argmax_rows(nnc_tensor_wrap(g, z, 2, shape), out);
    cr_assert_eq(out[0], 1);
    cr_assert_eq(out[1], 3);
    cr_assert_eq(out[2], 0);
    nnc_graph_free(g);
}

Test(nn_ops_loss, label_out_of_range_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    int shape[2] = {2, 3}, labels[2] = {0, 3};
    nnc_softmax_cross_entropy(g, nnc_tensor_new(g, 2, shape), labels, NNC_REDUCE_MEAN, 0);
}

Test(nn_ops_loss, negative_label_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    int shape[2] = {2, 3}, labels[2] = {-1, 0};
    nnc_softmax_cross_entropy(g, nnc_tensor_new(g, 2, shape), labels, NNC_REDUCE_MEAN, 0);
}
