/* tests/nn/test_conv_epilogue.c - the inference convolution's pieces: weights packed once per
 * batch (nnc_conv2d_infer_pack, every kernel set that takes them, the channel-vectorised set
 * included) and the 16-lane plane epilogue (nn/conv/epilogue.c).
 *
 * - nnc_conv2d_infer on packed weights vs the same call packing per call (packed NULL): bitwise
 *   equal (same kernels, same layout), on shapes of each kernel set (kvec at stride 1 and 2 and
 *   on 8x8 images, direct in row mode and on 8-, 4- and 6-wide rows, gemm), each with the bias
 *   and every combination of residual and ReLU, in FP32 and (where the CPU has it) BF16;
 * - both against the naive reference conv plus a scalar epilogue in the test: FP32 within
 *   1e-5 of the sum of |terms| (float rounding of sums of at most C*R*S + 3 terms), BF16 within
 *   2^-6 of it (operands rounded to 8 bits, products exact, FP32 sums);
 * - BF16 staging of stride-1 inputs straight into pairs vs the staging through FP32 slots that a
 *   fused batch-norm prologue takes (an identity BN): bitwise equal;
 * - nnc__epilogue_plane vs nnc__epilogue_row row by row: bitwise equal at every ISA level, for
 *   row widths 1..40, strided and contiguous rows, with and without scale, residual and ReLU.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/cpu.h"
#include "nn/nnc.h"

typedef struct icase {
    int n, c, h, w, k, stride, pad;
    const char *what;
} icase;

static const icase CASES[] = {
    {3, 32, 16, 16, 32, 1, 1, "kvec 16x16"},   {3, 16, 16, 16, 32, 2, 1, "kvec stride 2"},
    {2, 64, 8, 8, 64, 1, 1, "kvec 8x8"},       {2, 16, 32, 32, 16, 1, 1, "direct rows of 32 (row mode)"},
    {3, 16, 8, 8, 16, 1, 1, "direct rows of 8"}, {3, 8, 4, 4, 8, 1, 1, "direct rows of 4"},
    {2, 4, 6, 6, 16, 1, 1, "direct rows of 6"}, {3, 16, 16, 16, 16, 2, 1, "direct stride 2"},
    {2, 64, 2, 2, 16, 1, 1, "gemm 2x2"},
};

static float *rnd(nnc_rng *r, size_t n)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = nnc_rng_uniform(r) * 2.0f - 1.0f;
    return p;
}

static float *fabs_of(const float *p, size_t n)
{
    float *q = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) q[i] = fabsf(p[i]);
    return q;
}

/* y of nnc_conv2d_infer (copied out), weights packed once (pack 1) or per call (pack 0). */
static float *infer(const icase *c, const float *x, const float *w, const float *b, const float *res, int relu,
                    int pack, size_t *ny)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int xs[4] = {c->n, c->c, c->h, c->w}, ws[4] = {c->k, c->c, 3, 3}, bs[1] = {c->k};
    const int p = (c->h + 2 * c->pad - 3) / c->stride + 1, q = (c->w + 2 * c->pad - 3) / c->stride + 1;
    int ys[4] = {c->n, c->k, p, q};
    nnc_tensor *tx = nnc_tensor_wrap(g, (float *)x, 4, xs), *tw = nnc_tensor_wrap(g, (float *)w, 4, ws);
    nnc_tensor *tb = nnc_tensor_wrap(g, (float *)b, 1, bs), *tr = res ? nnc_tensor_wrap(g, (float *)res, 4, ys) : NULL;
    const float *wp = pack ? nnc_conv2d_infer_pack(g, tw, c->h, c->w, c->stride, c->pad) : NULL;
    nnc_tensor *y = nnc_conv2d_infer(g, tx, tw, tb, c->stride, c->pad, tr, relu, wp);
    cr_assert_eq(nnc_graph_num_nodes(g), 0);
    *ny = y->numel;
    float *out = malloc(y->numel * sizeof(float));
    memcpy(out, y->data, y->numel * sizeof(float));
    nnc_graph_free(g);
    return out;
}

static void check_case(const icase *c, int bf16)
{
    nnc_rng r;
    nnc_rng_seed(&r, 77, (uint64_t)c->k * 131 + (uint64_t)c->h);
    const int p = (c->h + 2 * c->pad - 3) / c->stride + 1, q = (c->w + 2 * c->pad - 3) / c->stride + 1;
    const size_t nx = (size_t)c->n * c->c * c->h * c->w, nw = (size_t)c->k * c->c * 9, ny = (size_t)c->n * c->k * p * q;
    float *x = rnd(&r, nx), *w = rnd(&r, nw), *b = rnd(&r, (size_t)c->k), *res = rnd(&r, ny);
    float *ax = fabs_of(x, nx), *aw = fabs_of(w, nw), *ab = fabs_of(b, (size_t)c->k), *ares = fabs_of(res, ny);
    float *ref = malloc(ny * sizeof(float)), *mag = malloc(ny * sizeof(float));
    nnc_ref_conv2d_forward(x, w, b, ref, c->n, c->c, c->h, c->w, c->k, 3, 3, c->stride, c->pad);
    nnc_ref_conv2d_forward(ax, aw, ab, mag, c->n, c->c, c->h, c->w, c->k, 3, 3, c->stride, c->pad);
    const double tol = bf16 ? 0x1p-6 : 1e-5;
    for (int with_res = 0; with_res < 2; with_res++)
        for (int relu = 0; relu < 2; relu++) {
            size_t n1, n0;
            float *y1 = infer(c, x, w, b, with_res ? res : NULL, relu, 1, &n1);
            float *y0 = infer(c, x, w, b, with_res ? res : NULL, relu, 0, &n0);
            cr_assert_eq(n1, ny);
            cr_assert_eq(n0, ny);
            cr_expect(memcmp(y1, y0, ny * sizeof(float)) == 0, "%s %s res %d relu %d: packed once != packed per call",
                      c->what, bf16 ? "bf16" : "fp32", with_res, relu);
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < ny; i++) {
                double v = (double)ref[i] + (with_res ? res[i] : 0.0f), m = mag[i] + (with_res ? ares[i] : 0.0f);
                if (relu && !(v > 0)) v = 0;
                if (!(fabs(y1[i] - v) <= tol * m + 1e-30)) {
                    if (!bad) first = i;
                    bad++;
                }
            }
            cr_expect_eq(bad, 0, "%s %s res %d relu %d: %zu of %zu values off the reference (first %zu: %g vs %g)",
                         c->what, bf16 ? "bf16" : "fp32", with_res, relu, bad, ny, first, (double)y1[first],
                         (double)ref[first]);
            free(y1);
            free(y0);
        }
    free(x), free(w), free(b), free(res), free(ax), free(aw), free(ab), free(ares), free(ref), free(mag);
}

Test(nn_conv_epilogue, packed_once_equals_per_call_and_reference_fp32, .timeout = 60)
{
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) check_case(&CASES[i], 0);
}

Test(nn_conv_epilogue, packed_once_equals_per_call_and_reference_bf16, .timeout = 60)
{
    if (!nnc_precision_bf16_available()) cr_skip_test("no AVX512_BF16 on this CPU");
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) check_case(&CASES[i], 1);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

/* BF16 staging of a stride-1 input without a prologue (rounded and paired straight from x) gives
 * the same pairs as the staging through FP32 slots that a prologue takes: conv2d_infer against
 * bn_relu_conv2d with an identity batch norm (scale exactly 1, shift 0) on positive inputs,
 * bitwise, with and without padding and for an odd channel count. */
Test(nn_conv_epilogue, bf16_direct_staging_equals_the_prologue_staging)
{
    if (!nnc_precision_bf16_available()) cr_skip_test("no AVX512_BF16 on this CPU");
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    const int shapes[][4] = {{16, 32, 1, 16}, {7, 8, 1, 8}, {16, 16, 0, 32}, {32, 16, 1, 64}}; /* C, H=W, pad, K */
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int C = shapes[si][0], S = shapes[si][1], pad = shapes[si][2], K = shapes[si][3], N = 3;
        nnc_rng r;
        nnc_rng_seed(&r, 11, si);
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        nnc_graph_set_grad(g, 0);
        int xs[4] = {N, C, S, S}, ws[4] = {K, C, 3, 3}, cs1[1] = {C}, ks[1] = {K};
        nnc_tensor *x = nnc_tensor_new(g, 4, xs), *w = nnc_tensor_new(g, 4, ws), *b = nnc_tensor_new(g, 1, ks);
        nnc_tensor *gm = nnc_tensor_new(g, 1, cs1), *bt = nnc_tensor_new(g, 1, cs1), *mu = nnc_tensor_new(g, 1, cs1),
                   *var = nnc_tensor_new(g, 1, cs1);
        for (size_t i = 0; i < x->numel; i++) x->data[i] = 0.01f + nnc_rng_uniform(&r);
        for (size_t i = 0; i < w->numel; i++) w->data[i] = nnc_rng_uniform(&r) * 2.0f - 1.0f;
        for (int k = 0; k < K; k++) b->data[k] = nnc_rng_uniform(&r) - 0.5f;
        for (int c = 0; c < C; c++) gm->data[c] = 1.0f, bt->data[c] = 0.0f, mu->data[c] = 0.0f, var->data[c] = (float)(1.0 - 1e-5);
        nnc_tensor *y1 = nnc_conv2d_infer(g, x, w, b, 1, pad, NULL, 0, NULL);
        nnc_tensor *y2 = nnc_bn_relu_conv2d(g, x, gm, bt, mu, var, 0.1f, 1e-5f, 0, w, b, 1, pad);
        cr_assert_eq(y1->numel, y2->numel);
        cr_expect(memcmp(y1->data, y2->data, y1->numel * sizeof(float)) == 0, "C %d, %dx%d, pad %d: stagings differ", C,
                  S, S, pad);
        nnc_graph_free(g);
    }
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

/* The kvec set takes packed weights in inference: a packed copy is made for its layers. */
Test(nn_conv_epilogue, kvec_layers_get_packed_weights)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int ws[4] = {32, 32, 3, 3};
    nnc_tensor *w = nnc_tensor_new(g, 4, ws);
    cr_expect_not_null(nnc_conv2d_infer_pack(g, w, 16, 16, 1, 1), "no packed weights for a kvec layer");
    nnc_graph_free(g);
}

Test(nn_conv_epilogue, plane_equals_rows_at_every_level)
{
    nnc_rng r;
    nnc_rng_seed(&r, 5, 1);
    const nnc__isa_level best = nnc__isa_best();
    float sc[3] = {0.75f, -1.25f, 2.0f}, sh[3] = {0.1f, -0.3f, 0.02f};
    for (int lvl = 0; lvl <= (int)best; lvl++) {
        nnc__set_isa((nnc__isa_level)lvl);
        for (int n = 1; n <= 40; n++)
            for (int strided = 0; strided < 2; strided++)
                for (int mode = 0; mode < 8; mode++) {
                    const int rows = 7, sld = strided ? n + 3 : n, use_scale = mode & 1, use_res = mode & 2, relu = mode & 4;
                    float *src = rnd(&r, (size_t)rows * sld), *res = rnd(&r, (size_t)rows * n);
                    float *got = malloc(sizeof(float) * (size_t)rows * n), *want = malloc(sizeof(float) * (size_t)rows * n);
                    nnc__conv_epilogue ep = {use_scale ? sc : NULL, sh, use_res ? res : NULL, relu};
                    nnc__epilogue_plane(got, (size_t)n, src, (size_t)sld, use_res ? res : NULL, (size_t)n, rows, n, &ep, 1);
                    for (int i = 0; i < rows; i++)
                        nnc__epilogue_row(want + (size_t)i * n, src + (size_t)i * sld, n, &ep, 1,
                                          use_res ? res + (size_t)i * n : NULL);
                    cr_expect(memcmp(got, want, sizeof(float) * (size_t)rows * n) == 0,
                              "level %d, rows of %d (source stride %d), scale %d res %d relu %d: plane != rows", lvl, n,
                              sld, use_scale, use_res != 0, relu != 0);
                    /* in place (dst = src, contiguous) */
                    memcpy(got, src, sizeof(float) * (size_t)rows * (strided ? n : sld));
                    if (!strided) {
                        nnc__epilogue_plane(got, (size_t)n, got, (size_t)n, use_res ? res : NULL, (size_t)n, rows, n, &ep, 1);
                        cr_expect(memcmp(got, want, sizeof(float) * (size_t)rows * n) == 0, "level %d n %d: in place", lvl, n);
                    }
                    free(src), free(res), free(got), free(want);
                }
    }
    nnc__set_isa(best);
}
