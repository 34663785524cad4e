/* tests/nn/test_ops_pool.c - max/avg/global-average pooling: finite-difference gradient checks
 * (tolerances below), naive loops over the padded window on random shapes (incl. padding and
 * overlapping windows), hand-worked cases, NaN propagation, grad mode off and misuse.
 *
 * Tolerances: avg and global-avg pooling are linear (atol/rtol 1e-3). Max pooling is piecewise
 * linear: the harness skips points within eps of a tie (a kink), the rest are exact, so the
 * same tolerance applies.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/nnc.h"
#include "nn/threads.h"
#include "tests/common/gradcheck.h"

typedef struct pool_case {
    int n, c, h, w, k, stride, pad;
} pool_case;

enum { POOL_MAX, POOL_AVG };

static nnc_tensor *max_fn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const pool_case *pc = ud;
    return nnc_max_pool2d(g, in[0], pc->k, pc->stride, pc->pad);
}

static nnc_tensor *avg_fn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    const pool_case *pc = ud;
    return nnc_avg_pool2d(g, in[0], pc->k, pc->stride, pc->pad);
}

static nnc_tensor *gap_fn(nnc_graph *g, nnc_tensor **in, void *ud)
{
    (void)ud;
    return nnc_global_avg_pool(g, in[0]);
}

static gc_opts opts(void)
{
    gc_opts o = gc_defaults();
    o.atol = 1e-3f;
    o.rtol = 1e-3f;
    return o;
}

/* n c h w  k stride pad */
static const pool_case grad_cases[] = {
    {2, 2, 4, 4, 2, 2, 0}, /* the classic 2x2/2 */
    {1, 3, 5, 7, 3, 2, 1}, /* odd non-square, overlapping windows, padding, batch 1 */
    {2, 1, 6, 5, 3, 1, 1}, /* stride 1: heavy overlap */
    {1, 2, 7, 7, 5, 2, 2}, /* kernel 5, pad 2 */
    {1, 2, 3, 5, 3, 3, 0}, /* stride = kernel, ragged edge dropped */
    {2, 2, 1, 1, 1, 1, 0}, /* 1x1 identity */
};

static void run_gradchecks(const char *name, gc_fn fn)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 21, 0);
    for (size_t i = 0; i < sizeof grad_cases / sizeof grad_cases[0]; i++) {
        pool_case pc = grad_cases[i];
        int sx[4] = {pc.n, pc.c, pc.h, pc.w};
        nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 1);
        char label[64];
        snprintf(label, sizeof label, "%s case %zu", name, i);
        cr_expect_eq(gradcheck(label, fn, 1, &x, &pc, opts()), 0, "%s failed", label);
        gc_leaf_free(x);
    }
}

Test(nn_ops_pool, gradcheck_max_pool2d) { run_gradchecks("max_pool2d", max_fn); }
Test(nn_ops_pool, gradcheck_avg_pool2d) { run_gradchecks("avg_pool2d", avg_fn); }

Test(nn_ops_pool, gradcheck_global_avg_pool)
{
    static const int shapes[][4] = {{2, 3, 4, 4}, {1, 2, 5, 7}, {3, 1, 1, 1}};
    nnc_rng rng;
    nnc_rng_seed(&rng, 22, 0);
    for (int i = 0; i < 3; i++) {
        nnc_tensor *x = gc_leaf(4, shapes[i], &rng, -1, 1, 1);
        cr_expect_eq(gradcheck("global_avg_pool", gap_fn, 1, &x, NULL, opts()), 0, "case %d", i);
        gc_leaf_free(x);
    }
}

/* Naive pooling over the padded window: taps outside the image are -inf (max) or 0 (avg);
 * max gradient goes to the first maximum in row-major window order. dx is accumulated. */
static void naive_pool(int kind, const pool_case *pc, const float *x, const float *dy, float *y,
                       float *dx)
{
    int P = (pc->h + 2 * pc->pad - pc->k) / pc->stride + 1;
    int Q = (pc->w + 2 * pc->pad - pc->k) / pc->stride + 1;
    for (int pl = 0; pl < pc->n * pc->c; pl++)
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                double best = -INFINITY, sum = 0;
                int arg = -1;
                for (int i = 0; i < pc->k; i++)
                    for (int j = 0; j < pc->k; j++) {
                        int ih = p * pc->stride - pc->pad + i, iw = q * pc->stride - pc->pad + j;
                        int inside = ih >= 0 && ih < pc->h && iw >= 0 && iw < pc->w;
                        double v = inside ? x[(pl * pc->h + ih) * pc->w + iw] : -INFINITY;
                        if (v > best) {
                            best = v;
                            arg = (pl * pc->h + ih) * pc->w + iw;
                        }
                        if (inside) sum += v;
                    }
                int o = (pl * P + p) * Q + q;
                if (kind == POOL_MAX) {
                    y[o] = (float)best;
                    dx[arg] += dy[o];
                } else {
                    y[o] = (float)(sum / (pc->k * pc->k));
                    for (int i = 0; i < pc->k; i++)
                        for (int j = 0; j < pc->k; j++) {
                            int ih = p * pc->stride - pc->pad + i, iw = q * pc->stride - pc->pad + j;
                            if (ih >= 0 && ih < pc->h && iw >= 0 && iw < pc->w)
                                dx[(pl * pc->h + ih) * pc->w + iw] += dy[o] / (pc->k * pc->k);
                        }
                }
            }
}

static void compare_random(int kind)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 23, (uint64_t)kind);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    for (int i = 0; i < 25; i++) {
        pool_case pc;
        do {
            pc = (pool_case){1 + (int)nnc_rng_below(&rng, 3), 1 + (int)nnc_rng_below(&rng, 4),
                             1 + (int)nnc_rng_below(&rng, 10), 1 + (int)nnc_rng_below(&rng, 10),
                             1 + (int)nnc_rng_below(&rng, 5), 1 + (int)nnc_rng_below(&rng, 3),
                             (int)nnc_rng_below(&rng, 3)};
            if (i == 0) pc = (pool_case){1, 1, 5, 7, 3, 2, 1};
            if (i == 1) pc = (pool_case){2, 3, 7, 9, 2, 2, 0}; /* the 2x2 stride-2 case, odd sizes */
        } while (2 * pc.pad > pc.k || pc.h + 2 * pc.pad < pc.k || pc.w + 2 * pc.pad < pc.k);
        int sx[4] = {pc.n, pc.c, pc.h, pc.w};
        nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 1);
        nnc_graph_reset(g);
        nnc_tensor *y = kind == POOL_MAX ? nnc_max_pool2d(g, x, pc.k, pc.stride, pc.pad)
                                         : nnc_avg_pool2d(g, x, pc.k, pc.stride, pc.pad);
        float *dy = malloc(y->numel * sizeof(float)), *ry = malloc(y->numel * sizeof(float));
        float *rdx = malloc(x->numel * sizeof(float));
        for (size_t j = 0; j < y->numel; j++) dy[j] = nnc_rng_uniform(&rng) * 2 - 1;
        for (size_t j = 0; j < x->numel; j++) x->grad[j] = rdx[j] = 0.5f; /* accumulate */
        cr_assert_eq(nnc_backward_seed(g, y, dy), NNC_OK);
        naive_pool(kind, &pc, x->data, dy, ry, rdx);
        int P = (pc.h + 2 * pc.pad - pc.k) / pc.stride + 1, Q = (pc.w + 2 * pc.pad - pc.k) / pc.stride + 1;
        cr_assert(y->shape[0] == pc.n && y->shape[1] == pc.c && y->shape[2] == P && y->shape[3] == Q,
                  "case %d: output shape", i);
        cr_expect_leq(gc_max_err(y->data, ry, y->numel, 1e-6, 1e-5), 1.0, "case %d forward", i);
        cr_expect_leq(gc_max_err(x->grad, rdx, x->numel, 1e-6, 1e-5), 1.0, "case %d dx", i);
        free(dy);
        free(ry);
        free(rdx);
        gc_leaf_free(x);
    }
    nnc_graph_free(g);
}

Test(nn_ops_pool, max_pool_matches_naive_loops) { compare_random(POOL_MAX); }
Test(nn_ops_pool, avg_pool_matches_naive_loops) { compare_random(POOL_AVG); }

/* x (1,1,3,3) = 1..9, k 3, stride 1, pad 1: every output window is a 3x3 neighbourhood. */
static nnc_tensor *hand_input(nnc_graph *g)
{
    nnc_tensor *x = nnc_tensor_new4(g, 1, 1, 3, 3);
    for (int i = 0; i < 9; i++) x->data[i] = (float)(i + 1);
    x->requires_grad = 1;
    return x;
}

Test(nn_ops_pool, max_pool_by_hand_overlapping_windows)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = hand_input(g);
    nnc_tensor *y = nnc_max_pool2d(g, x, 3, 1, 1);
    const float want[9] = {5, 6, 6, 8, 9, 9, 8, 9, 9};
    for (int i = 0; i < 9; i++) cr_expect_eq(y->data[i], want[i], "y[%d] = %g", i, y->data[i]);
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    cr_assert_eq(nnc_backward_seed(g, y, ones), NNC_OK);
    const float dx[9] = {0, 0, 0, 0, 1, 2, 0, 2, 4}; /* how many windows each value wins */
    for (int i = 0; i < 9; i++) cr_expect_eq(x->grad[i], dx[i], "dx[%d] = %g", i, x->grad[i]);
    nnc_graph_free(g);
}

Test(nn_ops_pool, max_pool_ties_go_to_first)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = nnc_tensor_new4(g, 1, 1, 4, 4);
    for (int i = 0; i < 16; i++) x->data[i] = 1.0f;
    x->requires_grad = 1;
    nnc_tensor *y = nnc_max_pool2d(g, x, 2, 2, 0);
    const float seed[4] = {1, 2, 3, 4};
    cr_assert_eq(nnc_backward_seed(g, y, seed), NNC_OK);
    for (int i = 0; i < 16; i++) {
        int r = i / 4, c = i % 4;
        float want = (r % 2 == 0 && c % 2 == 0) ? seed[(r / 2) * 2 + c / 2] : 0.0f;
        cr_expect_eq(x->grad[i], want, "dx[%d] = %g", i, x->grad[i]);
    }
    nnc_graph_free(g);
}

Test(nn_ops_pool, max_pool_propagates_nan)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = nnc_tensor_new4(g, 1, 1, 2, 4);
    const float v[8] = {1, 2, 3, 4, 5, NAN, -1, 0};
    memcpy(x->data, v, sizeof v);
    nnc_tensor *y = nnc_max_pool2d(g, x, 2, 2, 0);
    cr_expect(isnan(y->data[0]), "NaN in the window must not be hidden by max");
    cr_expect_eq(y->data[1], 4.0f);
    nnc_graph_free(g);
}

Test(nn_ops_pool, avg_pool_by_hand_counts_padding)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = hand_input(g);
    nnc_tensor *y = nnc_avg_pool2d(g, x, 3, 1, 1);
    /* corners see 4 values but divide by 9 (count_include_pad) */
    cr_expect_float_eq(y->data[0], (1 + 2 + 4 + 5) / 9.0f, 1e-6);
    cr_expect_float_eq(y->data[4], 45 / 9.0f, 1e-6);
    cr_expect_float_eq(y->data[5], (2 + 3 + 5 + 6 + 8 + 9) / 9.0f, 1e-6);
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    cr_assert_eq(nnc_backward_seed(g, y, ones), NNC_OK);
    /* each input is in (number of windows covering it) windows, each contributing 1/9 */
    const float cover[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
    for (int i = 0; i < 9; i++) cr_expect_float_eq(x->grad[i], cover[i] / 9.0f, 1e-6, "dx[%d]", i);
    nnc_graph_free(g);
}

Test(nn_ops_pool, global_avg_pool_values)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = nnc_tensor_new4(g, 2, 3, 2, 2);
    for (int i = 0; i < 24; i++) x->data[i] = (float)i;
    x->requires_grad = 1;
    nnc_tensor *y = nnc_global_avg_pool(g, x);
    cr_assert(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 3);
    for (int i = 0; i < 6; i++) cr_expect_float_eq(y->data[i], 4 * i + 1.5f, 1e-6, "y[%d]", i);
    const float seed[6] = {4, 8, 0, -4, 2, 1};
    cr_assert_eq(nnc_backward_seed(g, y, seed), NNC_OK);
    for (int i = 0; i < 24; i++) cr_expect_float_eq(x->grad[i], seed[i / 4] / 4, 1e-6, "dx[%d]", i);
    nnc_graph_free(g);
}

Test(nn_ops_pool, grad_mode_off_records_nothing)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = hand_input(g);
    nnc_graph_set_grad(g, 0);
    nnc_tensor *a = nnc_max_pool2d(g, x, 3, 1, 1);
    nnc_tensor *b = nnc_avg_pool2d(g, x, 3, 1, 1);
    nnc_tensor *c = nnc_global_avg_pool(g, x);
    cr_expect_eq(nnc_graph_num_nodes(g), 0);
    cr_expect(a->node == -1 && b->node == -1 && c->node == -1);
    cr_expect(!a->requires_grad && !b->requires_grad && !c->requires_grad);
    cr_expect_eq(a->data[4], 9.0f);
    nnc_graph_set_grad(g, 1);
    nnc_max_pool2d(g, x, 3, 1, 1);
    nnc_avg_pool2d(g, x, 3, 1, 1);
    nnc_global_avg_pool(g, x);
    cr_expect_eq(nnc_graph_num_nodes(g), 3);
    cr_expect_str_eq(nnc_graph_node(g, 0)->op, "max_pool2d");
    cr_expect_str_eq(nnc_graph_node(g, 1)->op, "avg_pool2d");
    cr_expect_str_eq(nnc_graph_node(g, 2)->op, "global_avg_pool");
    nnc_graph_free(g);
}

static const char *want_msg;

static void check_msg_hook(const char *m)
{
    if (!strstr(m, want_msg)) _exit(3); /* wrong message: no SIGABRT, the test fails */
}

Test(nn_ops_pool, pad_over_half_kernel_aborts, .signal = SIGABRT)
{
    want_msg = "max_pool2d: pad 2 must be at most half the kernel size 3";
    nnc_set_assert_hook(check_msg_hook);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_max_pool2d(g, nnc_tensor_new4(g, 1, 1, 4, 4), 3, 1, 2);
}

Test(nn_ops_pool, non_4d_input_aborts, .signal = SIGABRT)
{
    want_msg = "avg_pool2d: input must be (N,C,H,W), got (2,8)";
    nnc_set_assert_hook(check_msg_hook);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int shape[2] = {2, 8};
    nnc_avg_pool2d(g, nnc_tensor_new(g, 2, shape), 2, 2, 0);
}

/* The 2x2 stride-2 max pool (VGG's) behind another op, so its input gradient is a fresh buffer:
 * values and gradients equal the naive loops at 1 and 3 kernel threads. */
Test(nn_ops_pool, max_pool_2x2_fresh_gradient_any_threads)
{
    const pool_case pc = {5, 3, 8, 11, 2, 2, 0};
    for (int threads = 1; threads <= 3; threads += 2) {
        cr_assert_eq(nnc_set_threads(threads), NNC_OK);
        nnc_rng rng;
        nnc_rng_seed(&rng, 24, 0);
        int sx[4] = {pc.n, pc.c, pc.h, pc.w};
        nnc_tensor *x = gc_leaf(4, sx, &rng, -1, 1, 1);
        memset(x->grad, 0, x->numel * sizeof(float));
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        /* a first pass leaves the arena dirty: the fresh gradient must not rely on zero pages */
        nnc_tensor *y = nnc_max_pool2d(g, nnc_scale(g, x, 3.0f), pc.k, pc.stride, pc.pad);
        float *dy = malloc(y->numel * sizeof(float)), *ry = malloc(y->numel * sizeof(float));
        float *rdx = calloc(x->numel, sizeof(float));
        for (size_t j = 0; j < y->numel; j++) dy[j] = 7.0f;
        cr_assert_eq(nnc_backward_seed(g, y, dy), NNC_OK);
        memset(x->grad, 0, x->numel * sizeof(float));
        nnc_graph_reset(g);
        y = nnc_max_pool2d(g, nnc_scale(g, x, 1.0f), pc.k, pc.stride, pc.pad);
        for (size_t j = 0; j < y->numel; j++) dy[j] = nnc_rng_uniform(&rng) * 2 - 1;
        cr_assert_eq(nnc_backward_seed(g, y, dy), NNC_OK);
        naive_pool(POOL_MAX, &pc, x->data, dy, ry, rdx);
        cr_expect_leq(gc_max_err(y->data, ry, y->numel, 1e-6, 1e-6), 1.0, "%d threads: forward", threads);
        cr_expect_leq(gc_max_err(x->grad, rdx, x->numel, 1e-6, 1e-6), 1.0, "%d threads: dx", threads);
        free(dy);
        free(ry);
        free(rdx);
        nnc_graph_free(g);
        gc_leaf_free(x);
    }
    nnc_set_threads(1);
}
