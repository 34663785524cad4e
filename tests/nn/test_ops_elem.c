/* tests/nn/test_ops_elem.c - relu, scale, add (broadcasts), shortcut_a, reshape/flatten,
 * dropout: gradchecks, exact values, anomaly mode (naming the first op that made a NaN) and misuse asserts. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fault.h"
#include "nn/nnc.h"
#include "tests/common/gradcheck.h"

static void quiet_hook(const char *m) { (void)m; }

static nnc_tensor *leaf4(nnc_rng *r, int n, int c, int h, int w, int rg)
{
    int shape[4] = {n, c, h, w};
    return gc_leaf(4, shape, r, -1.0f, 1.0f, rg);
}

static nnc_graph *graph(void)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    return g;
}

/* ---- gradchecks ---- */

static nnc_tensor *fn_relu(nnc_graph *g, nnc_tensor **in, void *ud) { return nnc_relu(g, in[0]); }
static nnc_tensor *fn_scale(nnc_graph *g, nnc_tensor **in, void *ud) { return nnc_scale(g, in[0], -2.5f); }
static nnc_tensor *fn_add(nnc_graph *g, nnc_tensor **in, void *ud) { return nnc_add(g, in[0], in[1]); }
static nnc_tensor *fn_add_self(nnc_graph *g, nnc_tensor **in, void *ud) { return nnc_add(g, in[0], in[0]); }

Test(nn_ops_elem, gradcheck_relu_and_scale)
{
    nnc_rng r;
    nnc_rng_seed(&r, 1, 0);
    int shapes[3][4] = {{2, 3, 4, 5}, {1, 3, 3, 3}, {1, 1, 1, 7}};
    for (int i = 0; i < 3; i++) {
        nnc_tensor *x = gc_leaf(4, shapes[i], &r, -1.0f, 1.0f, 1);
        cr_assert_eq(gradcheck("relu", fn_relu, 1, &x, NULL, gc_defaults()), 0, "relu shape %d", i);
        cr_assert_eq(gradcheck("scale", fn_scale, 1, &x, NULL, gc_defaults()), 0, "scale shape %d", i);
        gc_leaf_free(x);
    }
}

Test(nn_ops_elem, gradcheck_add_same_shape_and_broadcasts)
{
    nnc_rng r;
    nnc_rng_seed(&r, 2, 0);
    struct {
        int na, nb;
        int a[4], b[4];
    } cases[] = {
        {4, 4, {2, 3, 4, 5}, {2, 3, 4, 5}}, /* same shape */
        {4, 1, {2, 3, 4, 5}, {3}},          /* (C) over channels */
        {4, 1, {1, 5, 3, 1}, {5}},          /* channels, batch 1 */
        {2, 1, {3, 7}, {7}},                /* (C) over (N,C) */
        {2, 2, {5, 3}, {1, 3}},             /* (1,D) over rows */
        {4, 4, {3, 2, 3, 3}, {1, 2, 3, 3}}, /* (1,C,H,W) over the batch */
        {1, 1, {9}, {9}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nnc_tensor *in[2] = {gc_leaf(cases[i].na, cases[i].a, &r, -1.0f, 1.0f, 1),
                             gc_leaf(cases[i].nb, cases[i].b, &r, -1.0f, 1.0f, 1)};
        cr_assert_eq(gradcheck("add", fn_add, 2, in, NULL, gc_defaults()), 0, "add case %zu", i);
        in[0]->requires_grad = 0; /* only b */
        cr_assert_eq(gradcheck("add b", fn_add, 2, in, NULL, gc_defaults()), 0, "add b case %zu", i);
        in[0]->requires_grad = 1;
        in[1]->requires_grad = 0; /* only a */
        cr_assert_eq(gradcheck("add a", fn_add, 2, in, NULL, gc_defaults()), 0, "add a case %zu", i);
        gc_leaf_free(in[0]);
        gc_leaf_free(in[1]);
    }
    int s[2] = {3, 4};
    nnc_tensor *x = gc_leaf(2, s, &r, -1.0f, 1.0f, 1);
    cr_assert_eq(gradcheck("x+x", fn_add_self, 1, &x, NULL, gc_defaults()), 0);
    gc_leaf_free(x);
}

typedef struct sc_args {
    int out_c, stride;
} sc_args;

static nnc_tensor *fn_shortcut(nnc_graph *g, nnc_tensor **in, void *ud)
{
    sc_args *a = ud;
    return nnc_shortcut_a(g, in[0], a->out_c, a->stride);
}

Test(nn_ops_elem, gradcheck_shortcut_a)
{
    nnc_rng r;
    nnc_rng_seed(&r, 3, 0);
    struct {
        int n, c, h, w;
        sc_args a;
    } cases[] = {
        {2, 4, 6, 6, {8, 2}}, {1, 3, 5, 7, {7, 2}}, {2, 2, 5, 4, {4, 3}}, {1, 3, 3, 3, {3, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nnc_tensor *x = leaf4(&r, cases[i].n, cases[i].c, cases[i].h, cases[i].w, 1);
        cr_assert_eq(gradcheck("shortcut_a", fn_shortcut, 1, &x, &cases[i].a, gc_defaults()), 0,
                     "case %zu", i);
        gc_leaf_free(x);
    }
}

static nnc_tensor *fn_reshape_chain(nnc_graph *g, nnc_tensor **in, void *ud)
{
    /* (2,3,2,2) -> scale -> reshape (6,4) -> + (1,4) -> flatten -> (6,4) -> relu */
    int shape[2] = {6, 4};
    nnc_tensor *y = nnc_reshape(g, nnc_scale(g, in[0], 1.5f), 2, shape);
    y = nnc_add(g, y, in[1]);
    int shape3[3] = {3, 2, 4};
    return nnc_flatten(g, nnc_reshape(g, y, 3, shape3));
}

static nnc_tensor *fn_flatten(nnc_graph *g, nnc_tensor **in, void *ud) { return nnc_flatten(g, in[0]); }

Test(nn_ops_elem, gradcheck_reshape_and_flatten)
{
    nnc_rng r;
    nnc_rng_seed(&r, 4, 0);
    int b[2] = {1, 4};
    nnc_tensor *in[2] = {leaf4(&r, 2, 3, 2, 2, 1), gc_leaf(2, b, &r, -1.0f, 1.0f, 1)};
    cr_assert_eq(gradcheck("reshape chain", fn_reshape_chain, 2, in, NULL, gc_defaults()), 0);
    cr_assert_eq(gradcheck("flatten", fn_flatten, 1, in, NULL, gc_defaults()), 0);
    gc_leaf_free(in[0]);
    gc_leaf_free(in[1]);
}

typedef struct drop_args {
    float p;
    nnc_rng rng;
} drop_args;

static nnc_tensor *fn_dropout(nnc_graph *g, nnc_tensor **in, void *ud)
{
    drop_args *a = ud;
    nnc_rng_seed(&a->rng, 77, 5); /* same mask on every evaluation */
    return nnc_dropout(g, in[0], a->p, 1, &a->rng);
}

Test(nn_ops_elem, gradcheck_dropout_fixed_mask)
{
    nnc_rng r;
    nnc_rng_seed(&r, 5, 0);
    float ps[3] = {0.5f, 0.2f, 0.9f};
    for (int i = 0; i < 3; i++) {
        nnc_tensor *x = leaf4(&r, 2, 3, 3, 3, 1);
        drop_args a = {.p = ps[i]};
        cr_assert_eq(gradcheck("dropout", fn_dropout, 1, &x, &a, gc_defaults()), 0, "p %g", ps[i]);
        gc_leaf_free(x);
    }
}

/* ---- exact values ---- */

Test(nn_ops_elem, relu_scale_add_values)
{
    nnc_graph *g = graph();
    float a[6] = {-1, 0, 2, -3.5f, 4, 0.25f}, b[3] = {10, 20, 30};
    int sa[2] = {2, 3}, sb[1] = {3}, sr[2] = {1, 3};
    nnc_tensor *ta = nnc_tensor_wrap(g, a, 2, sa), *tb = nnc_tensor_wrap(g, b, 1, sb);
    nnc_tensor *y = nnc_relu(g, ta);
    float er[6] = {0, 0, 2, 0, 4, 0.25f};
    for (int i = 0; i < 6; i++) cr_assert_eq(y->data[i], er[i]);
    y = nnc_scale(g, ta, 2.0f);
    for (int i = 0; i < 6; i++) cr_assert_eq(y->data[i], 2.0f * a[i]);
    y = nnc_add(g, ta, tb); /* (C) over (N,C) */
    for (int i = 0; i < 6; i++) cr_assert_eq(y->data[i], a[i] + b[i % 3]);
    y = nnc_add(g, ta, nnc_tensor_wrap(g, b, 2, sr)); /* (1,D) over rows */
    for (int i = 0; i < 6; i++) cr_assert_eq(y->data[i], a[i] + b[i % 3]);
    float x4[2 * 3 * 2] = {0}, c3[3] = {1, 2, 3};
    int s4[4] = {2, 3, 1, 2};
    y = nnc_add(g, nnc_tensor_wrap(g, x4, 4, s4), nnc_tensor_wrap(g, c3, 1, sb));
    for (int i = 0; i < 12; i++) cr_assert_eq(y->data[i], c3[(i / 2) % 3], "element %d", i);
    cr_assert_eq(nnc_graph_num_nodes(g), 0, "nothing requires grad: nothing recorded");
    nnc_graph_free(g);
}

Test(nn_ops_elem, shortcut_a_places_subsampled_input)
{
    nnc_graph *g = graph();
    nnc_rng r;
    nnc_rng_seed(&r, 6, 0);
    /* PyTorch: F.pad(x[:, :, ::2, ::2], (0,0,0,0,planes//4,planes//4)), planes = 2C */
    int N = 2, C = 4, H = 6, W = 5, K = 8, pad = 2;
    nnc_tensor *x = leaf4(&r, N, C, H, W, 0);
    nnc_tensor *y = nnc_shortcut_a(g, x, K, 2);
    cr_assert_eq(y->ndim, 4);
    cr_assert(y->shape[0] == N && y->shape[1] == K && y->shape[2] == 3 && y->shape[3] == 3);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    float got = y->data[((n * K + k) * 3 + i) * 3 + j];
                    int c = k - pad;
                    float want = c >= 0 && c < C ? x->data[((n * C + c) * H + 2 * i) * W + 2 * j] : 0.0f;
                    cr_assert_eq(got, want, "out[%d,%d,%d,%d]", n, k, i, j);
                }
    gc_leaf_free(x);
    nnc_graph_free(g);
}

Test(nn_ops_elem, reshape_is_a_view_and_backward_accumulates)
{
    nnc_graph *g = graph();
    nnc_rng r;
    nnc_rng_seed(&r, 7, 0);
    nnc_tensor *x = leaf4(&r, 2, 3, 2, 2, 1);
    for (size_t i = 0; i < x->numel; i++) x->grad[i] = 1.0f; /* like a params grad: accumulate */
    int shape[2] = {4, 6};
    nnc_tensor *v = nnc_reshape(g, x, 2, shape);
    cr_assert_eq(v->data, x->data, "reshape must alias the input data");
    cr_assert_eq(v->ndim, 2);
    cr_assert(v->shape[0] == 4 && v->shape[1] == 6);
    nnc_tensor *f = nnc_flatten(g, x);
    cr_assert(f->shape[0] == 2 && f->shape[1] == 12 && f->data == x->data);
    nnc_tensor *y = nnc_scale(g, v, 3.0f);
    float seed[24];
    for (int i = 0; i < 24; i++) seed[i] = (float)i;
    cr_assert_eq(nnc_backward_seed(g, y, seed), NNC_OK);
    cr_assert_neq(v->grad, x->grad, "the view has its own grad buffer");
    for (int i = 0; i < 24; i++) cr_assert_eq(x->grad[i], 1.0f + 3.0f * (float)i, "grad %d", i);
    gc_leaf_free(x);
    nnc_graph_free(g);
}

Test(nn_ops_elem, dropout_mask_statistics_seed_and_eval)
{
    nnc_graph *g = graph();
    int n = 100000, shape[1] = {n};
    float *xs = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) xs[i] = 1.0f + (float)(i % 7);
    nnc_tensor *x = nnc_tensor_wrap(g, xs, 1, shape);
    nnc_rng r1, r2, r3;
    nnc_rng_seed(&r1, 11, 3);
    nnc_rng_seed(&r2, 11, 3);
    nnc_rng_seed(&r3, 12, 3);
    float p = 0.3f;
    nnc_tensor *y1 = nnc_dropout(g, x, p, 1, &r1), *y2 = nnc_dropout(g, x, p, 1, &r2);
    nnc_tensor *y3 = nnc_dropout(g, x, p, 1, &r3);
    int kept = 0, same = 1, diff = 0;
    for (int i = 0; i < n; i++) {
        if (y1->data[i] != 0.0f) {
            kept++;
            cr_assert_eq(y1->data[i], xs[i] * (1.0f / (1.0f - p)), "kept element %d scaled by 1/(1-p)", i);
        }
        same &= y1->data[i] == y2->data[i];
        diff += (y1->data[i] == 0.0f) != (y3->data[i] == 0.0f);
    }
    double frac = (double)kept / n;
    cr_assert(fabs(frac - (1.0 - p)) < 0.01, "kept fraction %g, expected %g", frac, 1.0 - p);
    cr_assert(same, "same seed must give the same mask");
    cr_assert_gt(diff, 1000, "a different seed gives a different mask");
    cr_assert_eq(nnc_dropout(g, x, p, 0, &r1), x, "eval is the identity");
    cr_assert_eq(nnc_dropout(g, x, 0.0f, 1, &r1), x, "p = 0 is the identity");
    cr_assert_eq(nnc_dropout(g, x, 0.5f, 0, NULL), x, "eval needs no rng");
    nnc_tensor *z = nnc_dropout(g, x, 1.0f, 1, &r1);
    for (int i = 0; i < n; i++) cr_assert_eq(z->data[i], 0.0f);
    free(xs);
    nnc_graph_free(g);
}

Test(nn_ops_elem, eval_dropout_records_nothing)
{
    nnc_graph *g = graph();
    nnc_rng r;
    nnc_rng_seed(&r, 8, 0);
    nnc_tensor *x = leaf4(&r, 1, 2, 2, 2, 1);
    cr_assert_eq(nnc_dropout(g, x, 0.5f, 0, &r), x);
    cr_assert_eq(nnc_graph_num_nodes(g), 0);
    nnc_dropout(g, x, 0.5f, 1, &r);
    cr_assert_eq(nnc_graph_num_nodes(g), 1);
    cr_assert_str_eq(nnc_graph_node(g, 0)->op, "dropout");
    gc_leaf_free(x);
    nnc_graph_free(g);
}

/* ---- anomaly mode: backward names the first op that produced a non-finite value ----
 * x -> scale (tape node 0) -> relu (node 1) -> cross-entropy (node 2). The fault hook makes the
 * relu backward write NaN into its input gradient. With anomaly mode backward stops there and
 * names the op and node; without it the NaN propagates silently into x's gradient, which is
 * exactly what anomaly mode exists to catch. */
static int run_faulty_backward(int anomaly, nnc_tensor **xout, nnc_graph **gout)
{
    setenv("NNC_FAULT", "backward_nan:relu", 1);
    nnc__fault_reload();
    nnc_graph *g = graph();
    nnc_graph_set_anomaly(g, anomaly);
    nnc_rng r;
    nnc_rng_seed(&r, 9, 0);
    int shape[2] = {2, 3}, labels[2] = {0, 2};
    nnc_tensor *x = gc_leaf(2, shape, &r, 0.5f, 1.0f, 1);
    nnc_tensor *loss = nnc_softmax_cross_entropy(g, nnc_relu(g, nnc_scale(g, x, 2.0f)), labels,
                                                 NNC_REDUCE_MEAN, 0.0f);
    cr_assert_eq(nnc_graph_num_nodes(g), 3);
    cr_assert_str_eq(nnc_graph_node(g, 1)->op, "relu");
    int s = nnc_backward(g, loss);
    unsetenv("NNC_FAULT");
    nnc__fault_reload();
    *xout = x;
    *gout = g;
    return s;
}

Test(nn_ops_elem, anomaly_mode_names_relu_node)
{
    nnc_tensor *x;
    nnc_graph *g;
    cr_assert_eq(run_faulty_backward(1, &x, &g), NNC_EDIVERGED);
    const char *m = nnc_error_message();
    cr_assert(strstr(m, "op 'relu' (tape node 1)") != NULL, "message: %s", m);
    gc_leaf_free(x);
    nnc_graph_free(g);
}

Test(nn_ops_elem, without_anomaly_mode_nan_propagates)
{
    nnc_tensor *x;
    nnc_graph *g;
    cr_assert_eq(run_faulty_backward(0, &x, &g), NNC_OK);
    int nan = 0;
    for (size_t i = 0; i < x->numel; i++) nan += isnan(x->grad[i]) != 0;
    cr_assert_gt(nan, 0, "the injected NaN reaches the leaf gradient");
    gc_leaf_free(x);
    nnc_graph_free(g);
}

/* ---- misuse ---- */

Test(nn_ops_elem, add_mismatched_shapes_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g = graph();
    nnc_tensor *a = nnc_tensor_new4(g, 2, 3, 4, 4), *b = nnc_tensor_new4(g, 2, 3, 4, 5);
    nnc_add(g, a, b);
}

Test(nn_ops_elem, add_wrong_channel_count_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g = graph();
    int sb[1] = {4};
    nnc_add(g, nnc_tensor_new4(g, 2, 3, 4, 4), nnc_tensor_new(g, 1, sb));
}

Test(nn_ops_elem, shortcut_odd_channel_difference_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g = graph();
    nnc_shortcut_a(g, nnc_tensor_new4(g, 1, 3, 4, 4), 6, 2);
}

Test(nn_ops_elem, reshape_wrong_numel_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g = graph();
    int s[2] = {5, 5};
    nnc_reshape(g, nnc_tensor_new4(g, 1, 3, 4, 4), 2, s);
}
