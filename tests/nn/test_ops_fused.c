/* tests/nn/test_ops_fused.c - batchnorm2d_relu (fused batch norm + residual add + ReLU):
 * gradchecks (TESTS.md A1), equality with the unfused op chain (values, running statistics and
 * every gradient, within 1e-5 relative), and bitwise thread-count invariance (TESTS.md A3) of
 * batchnorm2d, batchnorm2d_relu, relu and add, forward and backward, 1 vs 2 vs 4 threads.
 * conv2d_bn_relu: the inference fold (eval, nothing recorded) equals conv2d -> batchnorm2d ->
 * add -> relu within 1e-5; with gradients it records the same values and gradients. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"
#include "nn/threads.h"
#include "tests/common/gradcheck.h"

typedef struct fused_args {
    int training, residual;
} fused_args;

/* in: x, gamma, beta, residual */
static nnc_tensor *fn_fused(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const fused_args *a = ud;
    return nnc_batchnorm2d_relu(g, in[0], in[1], in[2], NULL, NULL, 0.1f, 1e-5f, 1, a->residual ? in[3] : NULL);
}

static nnc_tensor *fn_fused_eval(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const fused_args *a = ud;
    return nnc_batchnorm2d_relu(g, in[0], in[1], in[2], in[4], in[5], 0.1f, 1e-5f, 0, a->residual ? in[3] : NULL);
}

Test(nn_ops_fused, gradcheck_bn_relu_and_bn_add_relu)
{
    nnc_rng r;
    nnc_rng_seed(&r, 31, 0);
    int shapes[][4] = {{2, 3, 2, 3}, {1, 2, 3, 2}, {3, 2, 1, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int res = 0; res < 2; res++)
            for (int train = 0; train < 2; train++) {
                int c[1] = {shapes[i][1]};
                nnc_tensor *in[6] = {gc_leaf(4, shapes[i], &r, -2, 2, 1), gc_leaf(1, c, &r, 0.5f, 1.5f, 1),
                                     gc_leaf(1, c, &r, -0.5f, 0.5f, 1), gc_leaf(4, shapes[i], &r, -1, 1, 1),
                                     gc_leaf(1, c, &r, -0.5f, 0.5f, 0), gc_leaf(1, c, &r, 0.5f, 1.5f, 0)};
                fused_args a = {train, res};
                char label[96];
                snprintf(label, sizeof label, "bn_relu shape %zu residual %d training %d", i, res, train);
                cr_expect_eq(gradcheck(label, train ? fn_fused : fn_fused_eval, res || !train ? 6 : 3, in, &a,
                                       gc_defaults()),
                             0, "%s", label);
                for (int k = 0; k < 6; k++) gc_leaf_free(in[k]);
            }
}

typedef struct run_result {
    float *y, *dx, *dg, *db, *dr, *rm, *rv;
    size_t n;
    int c;
} run_result;

/* Forward + backward of either the fused op or the chain bn -> add -> relu, with running stats;
 * x, residual, gamma, beta from seed, upstream gradient dy from seed. */
static run_result run_bn_ex(int fused, int training, int residual, const int *shape, uint64_t seed, int via_op);

static run_result run_bn(int fused, int training, int residual, const int *shape, uint64_t seed)
{
    return run_bn_ex(fused, training, residual, shape, seed, 0);
}

/* via_op: x and the residual pass through scale(1) first, so the BN backward writes into fresh
 * (uninitialised) gradient buffers instead of accumulating into the leaves' ones. */
static run_result run_bn_ex(int fused, int training, int residual, const int *shape, uint64_t seed, int via_op)
{
    nnc_rng r;
    nnc_rng_seed(&r, seed, 1);
    int c[1] = {shape[1]};
    nnc_tensor *x = gc_leaf(4, shape, &r, -2, 2, 1), *res = gc_leaf(4, shape, &r, -1, 1, 1);
    nnc_tensor *gm = gc_leaf(1, c, &r, 0.5f, 1.5f, 1), *bt = gc_leaf(1, c, &r, -0.5f, 0.5f, 1);
    nnc_tensor *rm = gc_leaf(1, c, &r, -0.5f, 0.5f, 0), *rv = gc_leaf(1, c, &r, 0.5f, 1.5f, 0);
    float *dy = malloc(x->numel * sizeof(float));
    for (size_t i = 0; i < x->numel; i++) dy[i] = nnc_rng_uniform(&r) - 0.5f;
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *y, *xin = via_op ? nnc_scale(g, x, 1.0f) : x, *rin = via_op ? nnc_scale(g, res, 1.0f) : res;
    if (fused) {
        y = nnc_batchnorm2d_relu(g, xin, gm, bt, rm, rv, 0.1f, 1e-5f, training, residual ? rin : NULL);
    } else {
        y = nnc_batchnorm2d(g, xin, gm, bt, rm, rv, 0.1f, 1e-5f, training);
        if (residual) y = nnc_add(g, y, rin);
        y = nnc_relu(g, y);
    }
    cr_assert_eq(nnc_backward_seed(g, y, dy), NNC_OK);
    run_result o = {malloc(x->numel * 4), malloc(x->numel * 4), malloc((size_t)c[0] * 4), malloc((size_t)c[0] * 4),
                    malloc(x->numel * 4), malloc((size_t)c[0] * 4), malloc((size_t)c[0] * 4), x->numel, c[0]};
    memcpy(o.y, y->data, x->numel * 4);
    memcpy(o.dx, x->grad, x->numel * 4);
    memcpy(o.dr, res->grad, x->numel * 4);
    memcpy(o.dg, gm->grad, (size_t)c[0] * 4);
    memcpy(o.db, bt->grad, (size_t)c[0] * 4);
    memcpy(o.rm, rm->data, (size_t)c[0] * 4);
    memcpy(o.rv, rv->data, (size_t)c[0] * 4);
    nnc_graph_free(g);
    free(dy);
    gc_leaf_free(x);
    gc_leaf_free(res);
    gc_leaf_free(gm);
    gc_leaf_free(bt);
    gc_leaf_free(rm);
    gc_leaf_free(rv);
    return o;
}

static void free_result(run_result *o)
{
    free(o->y);
    free(o->dx);
    free(o->dg);
    free(o->db);
    free(o->dr);
    free(o->rm);
    free(o->rv);
}

static void close_or_equal(const char *tag, const char *what, const float *a, const float *b, size_t n, int exact)
{
    if (exact) {
        cr_expect(memcmp(a, b, n * sizeof(float)) == 0, "%s: %s not bitwise equal", tag, what);
        return;
    }
    double err = gc_max_err(a, b, n, 1e-5, 1e-5);
    cr_expect_leq(err, 1.0, "%s: %s differs (err %.3g)", tag, what, err);
}

static void compare(const char *tag, const run_result *a, const run_result *b, int residual, int exact)
{
    close_or_equal(tag, "y", a->y, b->y, a->n, exact);
    close_or_equal(tag, "dx", a->dx, b->dx, a->n, exact);
    if (residual) close_or_equal(tag, "dresidual", a->dr, b->dr, a->n, exact);
    close_or_equal(tag, "dgamma", a->dg, b->dg, (size_t)a->c, exact);
    close_or_equal(tag, "dbeta", a->db, b->db, (size_t)a->c, exact);
    close_or_equal(tag, "running_mean", a->rm, b->rm, (size_t)a->c, exact);
    close_or_equal(tag, "running_var", a->rv, b->rv, (size_t)a->c, exact);
}

Test(nn_ops_fused, fused_equals_bn_add_relu_chain)
{
    int shapes[][4] = {{3, 5, 4, 6}, {2, 16, 8, 8}, {1, 3, 7, 5}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int res = 0; res < 2; res++)
            for (int train = 0; train < 2; train++) {
                run_result f = run_bn(1, train, res, shapes[i], 40 + i);
                run_result u = run_bn(0, train, res, shapes[i], 40 + i);
                char tag[96];
                snprintf(tag, sizeof tag, "shape %zu residual %d training %d", i, res, train);
                compare(tag, &f, &u, res, 0);
                free_result(&f);
                free_result(&u);
            }
}

Test(nn_ops_fused, fresh_gradient_buffers_written_not_accumulated)
{
    int shape[4] = {2, 6, 5, 7};
    for (int fused = 0; fused < 2; fused++)
        for (int train = 0; train < 2; train++) {
            run_result a = run_bn_ex(fused, train, 1, shape, 90, 0), b = run_bn_ex(fused, train, 1, shape, 90, 1);
            char tag[64];
            snprintf(tag, sizeof tag, "fused %d training %d, through an op", fused, train);
            compare(tag, &b, &a, 1, 0);
            free_result(&a);
            free_result(&b);
        }
}

Test(nn_ops_fused, bn_relu_add_bitwise_equal_for_1_2_4_threads, .timeout = 60)
{
    int shape[4] = {6, 8, 20, 20}; /* 19200 values: several elementwise chunks, 8 channel tasks */
    for (int fused = 0; fused < 2; fused++)
        for (int train = 0; train < 2; train++) {
            cr_assert_eq(nnc_set_threads(1), NNC_OK);
            run_result one = run_bn(fused, train, 1, shape, 77);
            for (int t = 2; t <= 4; t += 2) {
                cr_assert_eq(nnc_set_threads(t), NNC_OK);
                run_result o = run_bn(fused, train, 1, shape, 77);
                char tag[96];
                snprintf(tag, sizeof tag, "fused %d training %d, %d threads vs 1", fused, train, t);
                compare(tag, &o, &one, 1, 1);
                free_result(&o);
            }
            free_result(&one);
        }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
}

Test(nn_ops_fused, residual_shape_mismatch_aborts, .signal = SIGABRT)
{
    nnc_rng r;
    nnc_rng_seed(&r, 1, 0);
    int xs[4] = {2, 3, 4, 4}, rs[4] = {2, 3, 2, 2};
    nnc_tensor *x = gc_leaf(4, xs, &r, -1, 1, 1), *res = gc_leaf(4, rs, &r, -1, 1, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_batchnorm2d_relu(g, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f, 1, res);
}

/* conv2d_bn_relu vs the op chain, in eval mode (folded path) on both conv paths. */
static void check_conv_bn(int n, int c, int h, int k, int stride, int bias, int residual, uint64_t seed)
{
    nnc_rng r;
    nnc_rng_seed(&r, seed, 2);
    int sx[4] = {n, c, h, h}, sw[4] = {k, c, 3, 3}, sk[1] = {k};
    int p = (h + 2 - 3) / stride + 1, sy[4] = {n, k, p, p};
    nnc_tensor *x = gc_leaf(4, sx, &r, -1, 1, 0), *w = gc_leaf(4, sw, &r, -0.5f, 0.5f, 0);
    nnc_tensor *b = gc_leaf(1, sk, &r, -0.5f, 0.5f, 0), *gm = gc_leaf(1, sk, &r, 0.5f, 1.5f, 0);
    nnc_tensor *bt = gc_leaf(1, sk, &r, -0.5f, 0.5f, 0), *rm = gc_leaf(1, sk, &r, -0.5f, 0.5f, 0);
    nnc_tensor *rv = gc_leaf(1, sk, &r, 0.5f, 1.5f, 0), *res = gc_leaf(4, sy, &r, -1, 1, 0);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *fused = nnc_conv2d_bn_relu(g, x, w, bias ? b : NULL, stride, 1, gm, bt, rm, rv, 0.1f, 1e-5f, 0,
                                           residual ? res : NULL);
    nnc_tensor *y = nnc_batchnorm2d(g, nnc_conv2d(g, x, w, bias ? b : NULL, stride, 1), gm, bt, rm, rv, 0.1f, 1e-5f, 0);
    if (residual) y = nnc_add(g, y, res);
    y = nnc_relu(g, y);
    cr_assert_eq(nnc_graph_num_nodes(g), 0, "inference must record nothing");
    double err = gc_max_err(fused->data, y->data, y->numel, 1e-5, 1e-5);
    cr_expect_leq(err, 1.0, "conv2d_bn_relu n%d c%d h%d k%d s%d bias %d residual %d: err %.3g", n, c, h, k, stride,
                  bias, residual, err);
    nnc_graph_free(g);
    nnc_tensor *all[8] = {x, w, b, gm, bt, rm, rv, res};
    for (int i = 0; i < 8; i++) gc_leaf_free(all[i]);
}

Test(nn_ops_fused, conv_bn_relu_inference_fold_equals_chain)
{
    for (int bias = 0; bias < 2; bias++)
        for (int res = 0; res < 2; res++) {
            check_conv_bn(3, 5, 9, 7, 1, bias, res, 10 + bias * 2 + res);
            check_conv_bn(2, 16, 8, 32, 2, bias, res, 20 + bias * 2 + res);
            check_conv_bn(2, 40, 2, 9, 1, bias, res, 30 + bias * 2 + res); /* im2col + GEMM path */
        }
}

Test(nn_ops_fused, conv_bn_relu_with_gradients_records_the_chain)
{
    nnc_rng r;
    nnc_rng_seed(&r, 8, 0);
    int sx[4] = {2, 3, 6, 6}, sw[4] = {4, 3, 3, 3}, sk[1] = {4};
    nnc_tensor *x = gc_leaf(4, sx, &r, -1, 1, 1), *w = gc_leaf(4, sw, &r, -0.5f, 0.5f, 1);
    nnc_tensor *gm = gc_leaf(1, sk, &r, 0.5f, 1.5f, 1), *bt = gc_leaf(1, sk, &r, -0.5f, 0.5f, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *y = nnc_conv2d_bn_relu(g, x, w, NULL, 1, 1, gm, bt, NULL, NULL, 0.1f, 1e-5f, 1, NULL);
    cr_expect_eq(nnc_graph_num_nodes(g), 2, "training records conv2d and batchnorm2d_relu");
    cr_expect_str_eq(nnc_graph_node(g, 1)->op, "batchnorm2d_relu");
    cr_expect_eq(y->shape[1], 4);
    nnc_graph_free(g);
    nnc_tensor *all[4] = {x, w, gm, bt};
    for (int i = 0; i < 4; i++) gc_leaf_free(all[i]);
}
