/* tests/nn/test_ops_conv.c - conv2d and linear: finite-difference gradient checks,
 * im2col+GEMM kernel vs the naive reference on random shapes, linear vs a naive loop, gradient
 * accumulation, grad mode off, and shape misuse.
 *
 * Tolerances: conv2d and linear are linear in each input, so a central difference is exact up
 * to float32 rounding of the forward pass; the checks use atol 1e-3 / rtol 1e-3, tighter than
 * the general float32 gradcheck bound (rel 1e-2). Kernel vs reference uses a normwise bound: |fast - ref| <=
 * 1e-4 * (max|ref| + |ref|), since float32 sums that cancel to near zero have no meaningful
 * element-wise relative error.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/nnc.h"
#include "tests/common/gradcheck.h"

typedef struct conv_case {
    int n, c, h, w, k, r, s, stride, pad, bias;
} conv_case;

static nnc_tensor *conv_fn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const conv_case *cc = ud;
    return nnc_conv2d(g, in[0], in[1], cc->bias ? in[2] : NULL, cc->stride, cc->pad);
}

static gc_opts linear_opts(void)
{
    gc_opts o = gc_defaults();
    o.atol = 1e-3f;
    o.rtol = 1e-3f;
    return o;
}

static int conv_p(const conv_case *cc) { return (cc->h + 2 * cc->pad - cc->r) / cc->stride + 1; }
static int conv_q(const conv_case *cc) { return (cc->w + 2 * cc->pad - cc->s) / cc->stride + 1; }

Test(nn_ops_conv, gradcheck_conv2d)
{
    /* n c h w  k r s stride pad bias */
    static const conv_case cases[] = {
        {1, 2, 5, 7, 3, 3, 3, 1, 1, 1}, /* odd non-square input, batch 1 */
        {2, 3, 6, 5, 2, 3, 3, 2, 1, 0}, /* stride 2, no bias */
        {2, 2, 7, 7, 2, 5, 5, 1, 2, 1}, /* kernel 5, pad 2 */
        {1, 3, 4, 6, 4, 1, 1, 1, 0, 1}, /* 1x1 pointwise (no im2col) */
        {2, 2, 5, 5, 3, 1, 1, 2, 0, 0}, /* 1x1 stride 2 (projection shortcut) */
        {1, 2, 6, 9, 2, 3, 5, 2, 2, 1}, /* non-square kernel */
        {2, 1, 3, 3, 2, 3, 3, 1, 0, 1}, /* 1x1 output */
        {1, 2, 8, 8, 3, 5, 5, 2, 0, 1}, /* kernel 5, stride 2, no pad */
        {1, 1, 2, 3, 2, 3, 3, 3, 1, 1}, /* stride larger than the image */
    };
    nnc_rng rng;
    nnc_rng_seed(&rng, 7, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conv_case cc = cases[i];
        int sx[4] = {cc.n, cc.c, cc.h, cc.w}, sw[4] = {cc.k, cc.c, cc.r, cc.s}, sb[1] = {cc.k};
        nnc_tensor *in[3] = {gc_leaf(4, sx, &rng, -1, 1, 1), gc_leaf(4, sw, &rng, -1, 1, 1),
                             gc_leaf(1, sb, &rng, -1, 1, 1)};
        char label[64];
        snprintf(label, sizeof label, "conv2d case %zu", i);
        cr_expect_eq(gradcheck(label, conv_fn, cc.bias ? 3 : 2, in, &cc, linear_opts()), 0,
                     "%s failed", label);
        for (int j = 0; j < 3; j++) gc_leaf_free(in[j]);
    }
}

/* Random conv shape: odd sizes, batch 1, strides 1-3, pads 0-2, kernels 1-5 (some non-square). */
static conv_case random_case(nnc_rng *rng, int i)
{
    static const int ks[] = {1, 2, 3, 5};
    for (;;) {
        conv_case cc = {1 + (int)nnc_rng_below(rng, 3), 1 + (int)nnc_rng_below(rng, 6),
                        1 + (int)nnc_rng_below(rng, 11), 1 + (int)nnc_rng_below(rng, 11),
                        1 + (int)nnc_rng_below(rng, 6), ks[nnc_rng_below(rng, 4)], 0,
                        1 + (int)nnc_rng_below(rng, 3), (int)nnc_rng_below(rng, 3),
                        (int)nnc_rng_below(rng, 2)};
        cc.s = nnc_rng_below(rng, 3) ? cc.r : ks[nnc_rng_below(rng, 4)];
        if (i % 5 == 0) { /* pointwise fast path */
            cc.r = cc.s = 1;
            cc.stride = 1;
            cc.pad = 0;
        }
        if (i == 1) { /* batch 1, odd 5x7 */
            cc.n = 1;
            cc.h = 5;
            cc.w = 7;
        }
        if (i == 2) { /* a wider layer so GEMM blocking is exercised */
            cc.c = 16;
            cc.k = 12;
            cc.h = cc.w = 13;
        }
        if (cc.h + 2 * cc.pad >= cc.r && cc.w + 2 * cc.pad >= cc.s) return cc;
    }
}

static float *rand_buf(nnc_rng *rng, size_t n)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = nnc_rng_uniform(rng) * 2.0f - 1.0f;
    return p;
}

static void fill(float *a, float *b, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) a[i] = b[i] = v;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

/* Element-wise within 1e-4 relative, with an absolute floor of 1e-4 * max|ref| (see top). */
static void expect_close(const char *what, int i, const float *fast, const float *ref, size_t n)
{
    double scale = max_abs(ref, n);
    double err = gc_max_err(fast, ref, n, 1e-4 * scale + 1e-30, 1e-4);
    cr_expect_leq(err, 1.0, "case %d: %s differs from the reference (err %.3g)", i, what, err);
}

Test(nn_ops_conv, kernel_matches_reference_on_random_shapes)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 2024, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    for (int i = 0; i < 30; i++) {
        conv_case cc = random_case(&rng, i);
        int P = conv_p(&cc), Q = conv_q(&cc);
        int sx[4] = {cc.n, cc.c, cc.h, cc.w}, sw[4] = {cc.k, cc.c, cc.r, cc.s}, sb[1] = {cc.k};
        nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 1), *w = gc_leaf(4, sw, &rng, -1, 1, 1);
        nnc_tensor *b = gc_leaf(1, sb, &rng, -1, 1, 1);
        size_t ny = (size_t)cc.n * cc.k * P * Q;
        float *dy = rand_buf(&rng, ny), *y = malloc(ny * sizeof(float));
        float *dx = malloc(x->numel * sizeof(float)), *dw = malloc(w->numel * sizeof(float));
        float *db = malloc(cc.k * sizeof(float));
        /* Non-zero starting gradients: backward must accumulate (+=), like the reference. */
        fill(x->grad, dx, x->numel, 0.25f);
        fill(w->grad, dw, w->numel, -0.5f);
        fill(b->grad, db, b->numel, 0.75f);

        nnc_graph_reset(g);
        nnc_tensor *out = nnc_conv2d(g, x, w, cc.bias ? b : NULL, cc.stride, cc.pad);
        cr_assert_eq(out->ndim, 4);
        cr_assert(out->shape[0] == cc.n && out->shape[1] == cc.k && out->shape[2] == P &&
                  out->shape[3] == Q, "case %d: output shape", i);
        cr_assert_eq(nnc_backward_seed(g, out, dy), NNC_OK);

        nnc_ref_conv2d_forward(x->data, w->data, cc.bias ? b->data : NULL, y, cc.n, cc.c, cc.h, cc.w,
                               cc.k, cc.r, cc.s, cc.stride, cc.pad);
        nnc_ref_conv2d_backward(x->data, w->data, dy, dx, dw, db, cc.n, cc.c, cc.h, cc.w, cc.k, cc.r,
                                cc.s, cc.stride, cc.pad);
        expect_close("forward", i, out->data, y, ny);
        expect_close("dx", i, x->grad, dx, x->numel);
        expect_close("dw", i, w->grad, dw, w->numel);
        if (cc.bias) expect_close("db", i, b->grad, db, (size_t)cc.k);
        free(dy);
        free(y);
        free(dx);
        free(dw);
        free(db);
        gc_leaf_free(x);
        gc_leaf_free(w);
        gc_leaf_free(b);
    }
    nnc_graph_free(g);
}

/* The reference itself, on a case small enough to work by hand. x (1,1,2,2) = [1 2; 3 4],
 * w (1,1,2,2) = [1 0; 0 -1], pad 1, stride 1 -> y (1,1,3,3). */
Test(nn_ops_conv, reference_by_hand)
{
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 0, 0, -1}, b[1] = {0.5f};
    float y[9];
    nnc_ref_conv2d_forward(x, w, b, y, 1, 1, 2, 2, 1, 2, 2, 1, 1);
    /* y[p][q] = x[p-1][q-1] - x[p][q] + 0.5 (missing taps are 0) */
    const float want[9] = {-0.5f, -1.5f, 0.5f, -2.5f, -2.5f, 2.5f, 0.5f, 3.5f, 4.5f};
    for (int i = 0; i < 9; i++) cr_expect_float_eq(y[i], want[i], 1e-6, "y[%d] = %g", i, y[i]);
    float dy[9], dx[4] = {0}, dw[4] = {0}, db[1] = {0};
    for (int i = 0; i < 9; i++) dy[i] = 1;
    nnc_ref_conv2d_backward(x, w, dy, dx, dw, db, 1, 1, 2, 2, 1, 2, 2, 1, 1);
    cr_expect_float_eq(db[0], 9.0f, 1e-6);
    for (int i = 0; i < 4; i++) {
        cr_expect_float_eq(dx[i], 0.0f, 1e-6, "dx[%d]", i); /* every x meets w once each: 1 - 1 */
        cr_expect_float_eq(dw[i], 10.0f, 1e-6, "dw[%d]", i); /* every tap sees all of x */
    }
}

Test(nn_ops_conv, gradients_accumulate_and_data_input_gets_none)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 3, 0);
    int sx[4] = {2, 3, 5, 5}, sw[4] = {4, 3, 3, 3}, sb[1] = {4};
    nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 0); /* a data batch: no gradient wanted */
    nnc_tensor *w = gc_leaf(4, sw, &rng, -1, 1, 1), *b = gc_leaf(1, sb, &rng, -1, 1, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    float *once_w = NULL, *once_b = NULL;
    for (int step = 0; step < 2; step++) {
        nnc_graph_reset(g);
        nnc_tensor *y = nnc_conv2d(g, x, w, b, 2, 1);
        float *seed = malloc(y->numel * sizeof(float));
        for (size_t i = 0; i < y->numel; i++) seed[i] = (float)(i % 7) - 3.0f;
        cr_assert_eq(nnc_backward_seed(g, y, seed), NNC_OK);
        free(seed);
        if (step == 0) {
            once_w = malloc(w->numel * sizeof(float));
            once_b = malloc(b->numel * sizeof(float));
            memcpy(once_w, w->grad, w->numel * sizeof(float));
            memcpy(once_b, b->grad, b->numel * sizeof(float));
        }
    }
    for (size_t i = 0; i < w->numel; i++)
        cr_expect_float_eq(w->grad[i], 2 * once_w[i], 1e-5 * (1 + fabsf(once_w[i])), "dw[%zu]", i);
    for (size_t i = 0; i < b->numel; i++)
        cr_expect_float_eq(b->grad[i], 2 * once_b[i], 1e-5 * (1 + fabsf(once_b[i])), "db[%zu]", i);
    for (size_t i = 0; i < x->numel; i++) cr_expect_eq(x->grad[i], 0.0f, "dx[%zu] written", i);
    free(once_w);
    free(once_b);
    nnc_graph_free(g);
    gc_leaf_free(x);
    gc_leaf_free(w);
    gc_leaf_free(b);
}

Test(nn_ops_conv, grad_mode_off_records_nothing)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 4, 0);
    int sx[4] = {1, 2, 4, 4}, sw[4] = {3, 2, 3, 3}, sd[2] = {1, 48}, sl[2] = {5, 48};
    nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 1), *w = gc_leaf(4, sw, &rng, -1, 1, 1);
    nnc_tensor *lw = gc_leaf(2, sl, &rng, -1, 1, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_graph_set_grad(g, 0);
    nnc_tensor *y = nnc_conv2d(g, x, w, NULL, 1, 1);
    nnc_tensor *z = nnc_linear(g, nnc_tensor_wrap(g, y->data, 2, sd), lw, NULL);
    cr_expect_eq(nnc_graph_num_nodes(g), 0);
    cr_expect_eq(y->node, -1);
    cr_expect_eq(y->requires_grad, 0);
    cr_expect_eq(z->node, -1);
    float ref[48];
    nnc_ref_conv2d_forward(x->data, w->data, NULL, ref, 1, 2, 4, 4, 3, 3, 3, 1, 1);
    cr_expect_leq(gc_max_err(y->data, ref, 48, 1e-5, 1e-4), 1.0);
    nnc_graph_set_grad(g, 1);
    nnc_conv2d(g, x, w, NULL, 1, 1);
    cr_expect_eq(nnc_graph_num_nodes(g), 1);
    cr_expect_str_eq(nnc_graph_node(g, 0)->op, "conv2d");
    nnc_graph_free(g);
    gc_leaf_free(x);
    gc_leaf_free(w);
    gc_leaf_free(lw);
}

/* ---- linear ---- */

typedef struct linear_case {
    int ndim, shape[4], o, bias;
} linear_case;

static nnc_tensor *linear_fn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const linear_case *lc = ud;
    return nnc_linear(g, in[0], in[1], lc->bias ? in[2] : NULL);
}

static size_t linear_d(const linear_case *lc)
{
    size_t d = 1;
    for (int i = 1; i < lc->ndim; i++) d *= (size_t)lc->shape[i];
    return d;
}

Test(nn_ops_conv, gradcheck_linear)
{
    static const linear_case cases[] = {
        {2, {3, 5}, 4, 1},
        {2, {1, 7}, 3, 0},       /* batch 1, no bias */
        {4, {2, 3, 2, 3}, 5, 1}, /* (N,C,H,W) flattened to (N,18) */
        {2, {4, 1}, 1, 1},
    };
    nnc_rng rng;
    nnc_rng_seed(&rng, 11, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        linear_case lc = cases[i];
        int sw[2] = {lc.o, (int)linear_d(&lc)}, sb[1] = {lc.o};
        nnc_tensor *in[3] = {gc_leaf(lc.ndim, lc.shape, &rng, -1, 1, 1),
                             gc_leaf(2, sw, &rng, -1, 1, 1), gc_leaf(1, sb, &rng, -1, 1, 1)};
        char label[64];
        snprintf(label, sizeof label, "linear case %zu", i);
        cr_expect_eq(gradcheck(label, linear_fn, lc.bias ? 3 : 2, in, &lc, linear_opts()), 0,
                     "%s failed", label);
        for (int j = 0; j < 3; j++) gc_leaf_free(in[j]);
    }
}

Test(nn_ops_conv, linear_matches_naive_loop)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 12, 0);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    for (int i = 0; i < 20; i++) {
        int n = i == 0 ? 1 : 1 + (int)nnc_rng_below(&rng, 9), d = 1 + (int)nnc_rng_below(&rng, 40);
        int o = 1 + (int)nnc_rng_below(&rng, 17), bias = i % 2;
        int sx[2] = {n, d}, sw[2] = {o, d}, sb[1] = {o};
        nnc_tensor *x = gc_leaf(2, sx, &rng, -1, 1, 1), *w = gc_leaf(2, sw, &rng, -1, 1, 1);
        nnc_tensor *b = gc_leaf(1, sb, &rng, -1, 1, 1);
        float *dy = rand_buf(&rng, (size_t)n * o);
        float *y = malloc(sizeof(float) * n * o), *dx = malloc(sizeof(float) * n * d);
        float *dw = malloc(sizeof(float) * o * d), *db = malloc(sizeof(float) * o);
        /* Non-zero starting gradients: backward must accumulate (+=). */
        for (size_t j = 0; j < x->numel; j++) x->grad[j] = 0.5f;
        for (size_t j = 0; j < w->numel; j++) w->grad[j] = 0.5f;
        for (size_t j = 0; j < b->numel; j++) b->grad[j] = 0.5f;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < o; c++) {
                double acc = bias ? b->data[c] : 0.0;
                for (int k = 0; k < d; k++) acc += (double)x->data[r * d + k] * w->data[c * d + k];
                y[r * o + c] = (float)acc;
            }
        for (int r = 0; r < n; r++)
            for (int k = 0; k < d; k++) {
                double acc = 0;
                for (int c = 0; c < o; c++) acc += (double)dy[r * o + c] * w->data[c * d + k];
                dx[r * d + k] = 0.5f + (float)acc;
            }
        for (int c = 0; c < o; c++) {
            double accb = 0;
            for (int r = 0; r < n; r++) accb += dy[r * o + c];
            db[c] = 0.5f + (float)accb;
            for (int k = 0; k < d; k++) {
                double acc = 0;
                for (int r = 0; r < n; r++) acc += (double)dy[r * o + c] * x->data[r * d + k];
                dw[c * d + k] = 0.5f + (float)acc;
            }
        }
        nnc_graph_reset(g);
        nnc_tensor *out = nnc_linear(g, x, w, bias ? b : NULL);
        cr_assert(out->ndim == 2 && out->shape[0] == n && out->shape[1] == o, "case %d shape", i);
        cr_assert_eq(nnc_backward_seed(g, out, dy), NNC_OK);
        expect_close("linear forward", i, out->data, y, (size_t)n * o);
        expect_close("linear dx", i, x->grad, dx, (size_t)n * d);
        expect_close("linear dw", i, w->grad, dw, (size_t)o * d);
        if (bias) expect_close("linear db", i, b->grad, db, (size_t)o);
        else
            for (int c = 0; c < o; c++) cr_expect_eq(b->grad[c], 0.5f);
        free(dy);
        free(y);
        free(dx);
        free(dw);
        free(db);
        gc_leaf_free(x);
        gc_leaf_free(w);
        gc_leaf_free(b);
    }
    nnc_graph_free(g);
}

/* ---- misuse: each dies through NNC_ASSERT with a message naming both shapes. The hook exits
 * with status 3 (test fails: no SIGABRT) when the message lacks the expected pieces. */

static const char *want_msg[3];

static void check_msg_hook(const char *m)
{
    for (int i = 0; i < 3; i++)
        if (want_msg[i] && !strstr(m, want_msg[i])) _exit(3);
}

static void misuse_graph(nnc_graph **g, nnc_rng *rng)
{
    nnc_set_assert_hook(check_msg_hook);
    nnc_rng_seed(rng, 5, 0);
    cr_assert_eq(nnc_graph_new(0, g), NNC_OK);
}

Test(nn_ops_conv, channel_mismatch_aborts, .signal = SIGABRT)
{
    want_msg[0] = "channel mismatch";
    want_msg[1] = "(2,3,5,5)";
    want_msg[2] = "(4,2,3,3)";
    nnc_graph *g;
    nnc_rng rng;
    misuse_graph(&g, &rng);
    int sx[4] = {2, 3, 5, 5}, sw[4] = {4, 2, 3, 3};
    nnc_conv2d(g, gc_leaf(4, sx, &rng, -1, 1, 1), gc_leaf(4, sw, &rng, -1, 1, 1), NULL, 1, 1);
}

Test(nn_ops_conv, bias_mismatch_aborts, .signal = SIGABRT)
{
    want_msg[0] = "bias (3)";
    want_msg[1] = "(4,3,3,3)";
    want_msg[2] = NULL;
    nnc_graph *g;
    nnc_rng rng;
    misuse_graph(&g, &rng);
    int sx[4] = {1, 3, 5, 5}, sw[4] = {4, 3, 3, 3}, sb[1] = {3};
    nnc_conv2d(g, gc_leaf(4, sx, &rng, -1, 1, 1), gc_leaf(4, sw, &rng, -1, 1, 1),
               gc_leaf(1, sb, &rng, -1, 1, 1), 1, 1);
}

Test(nn_ops_conv, kernel_larger_than_input_aborts, .signal = SIGABRT)
{
    want_msg[0] = "larger than padded input (1,1,2,2)";
    want_msg[1] = NULL;
    want_msg[2] = NULL;
    nnc_graph *g;
    nnc_rng rng;
    misuse_graph(&g, &rng);
    int sx[4] = {1, 1, 2, 2}, sw[4] = {1, 1, 5, 5};
    nnc_conv2d(g, gc_leaf(4, sx, &rng, -1, 1, 1), gc_leaf(4, sw, &rng, -1, 1, 1), NULL, 1, 1);
}

Test(nn_ops_conv, linear_feature_mismatch_aborts, .signal = SIGABRT)
{
    want_msg[0] = "feature mismatch";
    want_msg[1] = "(2,3,2,2)";
    want_msg[2] = "(5,10)";
    nnc_graph *g;
    nnc_rng rng;
    misuse_graph(&g, &rng);
    int sx[4] = {2, 3, 2, 2}, sw[2] = {5, 10};
    nnc_linear(g, gc_leaf(4, sx, &rng, -1, 1, 1), gc_leaf(2, sw, &rng, -1, 1, 1), NULL);
}
