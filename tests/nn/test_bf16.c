/* tests/nn/test_bf16.c - BF16 mixed precision (nn/precision.h, nn/conv/bf16.c).
 *
 * - the portable round-to-nearest-even FP32 -> BF16 conversion against VCVTNEPS2BF16 (and the
 *   channel-pair packing against VCVTNE2PS2BF16 + the interleave) on random bit patterns, ties,
 *   NaN, Inf, denormals, zeros and values that round to Inf.
 * - the BF16 convolution (forward with bias, input, weight and bias gradients) against the FP32
 *   naive reference with an error bound derived from BF16 rounding (see bf16_bound below), on
 *   the ResNet shapes and odd ones (odd channel counts, strides 2, 1x1, 5x5, big weights).
 * - bitwise identical results for 1, 2 and 4 kernel threads.
 * - the same two for the BF16 kvec kernels (nn/conv/kvec_bf16.c) forced on odd shapes, and the
 *   dispatcher's choice between the two BF16 sets.
 * - nnc_set_precision refuses bf16 where the kernels cannot run (NNC_ISA below avx512 here); the
 *   commands' --precision flag (bad names exit 2, bf16 runs or is refused naming AVX512_BF16).
 * Tests that need AVX512_BF16 skip on a CPU without it.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv/conv.h"
#include "nn/conv/kernels.h"
#include "nn/cpu.h"
#include "nn/nnc.h"
#include "nn/precision.h"
#include "nn/threads.h"
#include "tests/common/cli_run.h"

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define NEED_BF16()                                                                                     \
    do {                                                                                                \
        if (!nnc_precision_bf16_available()) cr_skip_test("this CPU (or NNC_ISA) has no AVX512_BF16"); \
    } while (0)

Test(nn_bf16, rne_known_values)
{
    /* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even (1); 1 + 3*2^-8 halfway between
     * 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6 */
    cr_expect_eq(nnc__bf16_rne(1.0f + 0x1p-8f), 0x3f80);
    cr_expect_eq(nnc__bf16_rne(1.0f + 3 * 0x1p-8f), 0x3f82);
    cr_expect_eq(nnc__bf16_rne(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie: up */
    cr_expect_eq(nnc__bf16_rne(-2.0f), 0xc000);
    cr_expect_eq(nnc__bf16_rne(f_of(0x7f7fffffu)), 0x7f80, "FLT_MAX rounds to +Inf");
    cr_expect_eq(nnc__bf16_rne(INFINITY), 0x7f80);
    cr_expect_eq(nnc__bf16_rne(-INFINITY), 0xff80);
    cr_expect_eq(nnc__bf16_rne(f_of(0x7f800001u)), 0x7fc0, "signalling NaN comes out quiet");
    cr_expect_eq(nnc__bf16_rne(f_of(0x00000001u)), 0x0000, "denormals are zero");
    cr_expect_eq(nnc__bf16_rne(f_of(0x80400000u)), 0x8000, "negative denormal: -0");
    cr_expect_eq(nnc__bf16_to_f32(0x3f80), 1.0f);
}

/* The portable conversion against the instruction on n values v. */
static void check_against_intrinsic(const float *v, int n)
{
    uint16_t *hw = malloc(sizeof(uint16_t) * (size_t)n);
    nnc__bf16_round_avx512(v, hw, n);
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        cr_assert_eq(nnc__bf16_rne(v[i]), hw[i], "value %d bits 0x%08x: portable 0x%04x, VCVTNEPS2BF16 0x%04x", i, u,
                     nnc__bf16_rne(v[i]), hw[i]);
    }
    free(hw);
}

Test(nn_bf16, rne_matches_the_instruction)
{
    NEED_BF16();
    enum { N = 1 << 18 };
    float *v = malloc(sizeof(float) * N);
    nnc_rng rng;
    nnc_rng_seed(&rng, 5, 1);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)nnc_rng_u64(&rng);
        switch (i % 8) {
        case 0: u = (u & 0xffff0000u) | 0x8000u; break;                /* exact ties, odd and even */
        case 1: u = (u & 0x807fffffu) | 0x7f800000u; break;            /* Inf and NaNs (both kinds) */
        case 2: u &= 0x807fffffu; break;                               /* denormals and zeros */
        case 3: u = (u & 0x8000ffffu) | 0x7f7f0000u; break;            /* near FLT_MAX: some round to Inf */
        case 4: u = (u & 0xffff0000u) | (0x8000u + (u & 1) - 1 + 2 * (u & 2)); break; /* next to the ties */
        default: break;                                                /* any pattern */
        }
        v[i] = f_of(u);
    }
    v[0] = f_of(0x7f800000u);
    v[1] = f_of(0xff800000u);
    v[2] = f_of(0x7fc00000u);
    v[3] = f_of(0xffbfffffu);
    v[4] = 0.0f;
    v[5] = -0.0f;
    check_against_intrinsic(v, N);
    check_against_intrinsic(v + 3, 13); /* the masked tail */
    /* pairs: the interleaving packer against two portable conversions, odd lengths too */
    uint32_t *p = malloc(sizeof(uint32_t) * N), *q = malloc(sizeof(uint32_t) * N);
    for (int n = 1; n <= 40; n += 13) {
        nnc__bf16_pack2_avx512(v + 7, v + 1000, p, n);
        nnc__bf16_pack2_ref(v + 7, v + 1000, q, n);
        cr_assert_eq(memcmp(p, q, sizeof(uint32_t) * (size_t)n), 0, "pack2 of %d", n);
        nnc__bf16_pack2_avx512(v + 9, NULL, p, n);
        nnc__bf16_pack2_ref(v + 9, NULL, q, n);
        cr_assert_eq(memcmp(p, q, sizeof(uint32_t) * (size_t)n), 0, "pack2 of %d without a high channel", n);
    }
    nnc__bf16_pack2_avx512(v, v + N / 2, p, N / 2);
    nnc__bf16_pack2_ref(v, v + N / 2, q, N / 2);
    cr_assert_eq(memcmp(p, q, sizeof(uint32_t) * (size_t)(N / 2)), 0);
    free(p);
    free(q);
    free(v);
}

/* ---- the convolution ----
 *
 * Error bound (derivation). Each output is a dot product y = sum_{i<m} a_i b_i (+ bias), m =
 * C*R*S for the forward (a = input, b = weight) and K*R*S for the input gradient (a = output
 * gradient, b = weight). The kernel rounds each operand to BF16 with RNE: a'_i = a_i (1 + d_i),
 * |d_i| <= u = 2^-8 (8 significant bits), and a denormal operand becomes 0 (the instruction's
 * DAZ), an absolute error below 2^-126 per operand. The product a'_i b'_i of two BF16 values
 * (8-bit significands) is exact in FP32, and
 *     |a'_i b'_i - a_i b_i| <= |a_i||b_i| ((1 + u)^2 - 1) = |a_i||b_i| (2u + u^2).
 * vdpbf16ps adds the products into FP32 accumulators, one rounding (relative 2^-24 = v) per
 * addition; with the bias, the accumulate of a previous partial sum and the epilogue's add, every
 * output's value is a sum of at most m + 3 terms, so by the standard bound on recursive summation
 *     |fl(sum t_i) - sum t_i| <= g sum |t_i|,  g = (m+3) v / (1 - (m+3) v),
 * where the |t_i| are the |a'_i b'_i| <= (1 + 2u + u^2) |a_i||b_i| (and |bias|). The reference is
 * the double sum rounded to FP32: one more v |y|. With S = sum |a_i||b_i| + |bias|:
 *     |y_bf16 - y_ref| <= S (2u + u^2) + g (1 + 2u + u^2) S + v |y_ref| + m 2^-125.
 * S is the reference run on |a|, |b| (a double sum rounded to FP32, so S (1 + v) bounds it; the
 * test scales S by 1 + 2^-20). The weight gradient is the same kind of dot product over m =
 * N*P*Q positions (a = output gradient, b = input), its partial sums added in FP32 over at most
 * 16 chunks: m = N*P*Q + 17. The bias gradient stays FP32: g alone, same m.
 */
/* bf16: 0 the FP32 bound, else the BF16 one (1: and it must be approached, BF16 rounding seen). */
static double bf16_bound(double S, double y, int m, int bf16)
{
    const double u = 0x1p-8, v = 0x1p-24, g = (m + 3) * v / (1 - (m + 3) * v);
    S *= 1 + 0x1p-20;
    if (!bf16) return g * S + v * fabs(y) + m * 0x1p-125;
    return S * (2 * u + u * u) + g * (1 + 2 * u + u * u) * S + v * fabs(y) + m * 0x1p-125;
}

typedef struct bcase {
    int n, c, h, w, k, r, s, stride, pad;
} bcase;

static const bcase cases[] = {
    {2, 3, 32, 32, 16, 3, 3, 1, 1},  {2, 16, 32, 32, 16, 3, 3, 1, 1}, {2, 16, 32, 32, 32, 3, 3, 2, 1},
    {2, 16, 32, 32, 32, 1, 1, 2, 0}, {2, 32, 16, 16, 32, 3, 3, 1, 1}, {2, 64, 8, 8, 64, 3, 3, 1, 1},
    {3, 5, 7, 9, 11, 3, 3, 1, 1},    {2, 7, 9, 9, 9, 3, 3, 2, 1},     {1, 8, 5, 5, 24, 5, 5, 1, 2},
    {2, 17, 6, 6, 13, 1, 1, 1, 0},   {2, 4, 11, 10, 8, 3, 3, 3, 1},   {2, 128, 8, 8, 144, 3, 3, 1, 1},
};

static int odim(int in, int k, int st, int pad) { return (in + 2 * pad - k) / st + 1; }

typedef struct bout {
    float *y, *dx, *dw, *db;
} bout;

static float *rnd(nnc_rng *rng, size_t n)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = nnc_rng_uniform(rng) * 2.0f - 1.0f;
    return p;
}

static float *abs_of(const float *p, size_t n)
{
    float *q = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) q[i] = fabsf(p[i]);
    return q;
}

/* nnc_conv2d with bias at the precision in effect, backward seeded with dy; gradients fresh. */
static bout run_op(const bcase *c, float *x, float *w, float *b, const float *dy)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int sx[4] = {c->n, c->c, c->h, c->w}, sw[4] = {c->k, c->c, c->r, c->s}, sb[1] = {c->k};
    size_t nx = (size_t)c->n * c->c * c->h * c->w, nw = (size_t)c->k * c->c * c->r * c->s;
    bout o = {NULL, calloc(nx, sizeof(float)), calloc(nw, sizeof(float)), calloc((size_t)c->k, sizeof(float))};
    nnc_tensor *tx = nnc_tensor_wrap(g, x, 4, sx), *tw = nnc_tensor_wrap(g, w, 4, sw), *tb = nnc_tensor_wrap(g, b, 1, sb);
    tx->grad = o.dx;
    tw->grad = o.dw;
    tb->grad = o.db;
    tx->requires_grad = tw->requires_grad = tb->requires_grad = 1;
    nnc_tensor *y = nnc_conv2d(g, tx, tw, tb, c->stride, c->pad);
    o.y = malloc(y->numel * sizeof(float));
    memcpy(o.y, y->data, y->numel * sizeof(float));
    cr_assert_eq(nnc_backward_seed(g, y, dy), NNC_OK);
    nnc_graph_free(g);
    return o;
}

static void free_out(bout *o)
{
    free(o->y);
    free(o->dx);
    free(o->dw);
    free(o->db);
}

static void expect_within(const char *what, int ci, const float *got, const float *ref, const float *S, size_t n,
                          int m, int bf16)
{
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]), bnd = bf16_bound(S[i], ref[i], m, bf16);
        if (bnd > 0 && e / bnd > worst) worst = e / bnd;
        if (!(e <= bnd) && !bad++) first = i;
    }
    cr_expect_eq(bad, 0, "case %d %s: %zu of %zu values outside the bound, first at %zu: %g vs ref %g (bound %g)", ci,
                 what, bad, n, first, (double)got[first], (double)ref[first], bf16_bound(S[first], ref[first], m, bf16));
    /* the bound is not vacuous: BF16 rounding shows (forward and input gradient) */
    if (bf16 == 1) cr_expect_gt(worst, 1e-4, "case %d %s: errors %g of the bound: BF16 rounding not seen?", ci, what, worst);
}

Test(nn_bf16, conv_matches_reference_within_the_derived_bound, .timeout = 120)
{
    NEED_BF16();
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const bcase *c = &cases[ci];
        nnc_rng rng;
        nnc_rng_seed(&rng, 40 + ci, 0);
        const int P = odim(c->h, c->r, c->stride, c->pad), Q = odim(c->w, c->s, c->stride, c->pad);
        size_t nx = (size_t)c->n * c->c * c->h * c->w, nw = (size_t)c->k * c->c * c->r * c->s;
        size_t ny = (size_t)c->n * c->k * P * Q;
        float *x = rnd(&rng, nx), *w = rnd(&rng, nw), *b = rnd(&rng, (size_t)c->k), *dy = rnd(&rng, ny);
        bout o = run_op(c, x, w, b, dy);
        /* the reference, and S from the absolute values */
        float *ry = malloc(ny * sizeof(float)), *rdx = calloc(nx, sizeof(float)), *rdw = calloc(nw, sizeof(float));
        float *rdb = calloc((size_t)c->k, sizeof(float));
        nnc_ref_conv2d_forward(x, w, b, ry, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        nnc_ref_conv2d_backward(x, w, dy, rdx, rdw, rdb, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        float *ax = abs_of(x, nx), *aw = abs_of(w, nw), *ab = abs_of(b, (size_t)c->k), *ady = abs_of(dy, ny);
        float *sy = malloc(ny * sizeof(float)), *sdx = calloc(nx, sizeof(float)), *sdw = calloc(nw, sizeof(float));
        float *sdb = calloc((size_t)c->k, sizeof(float));
        nnc_ref_conv2d_forward(ax, aw, ab, sy, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        nnc_ref_conv2d_backward(ax, aw, ady, sdx, sdw, sdb, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        expect_within("forward", (int)ci, o.y, ry, sy, ny, c->c * c->r * c->s, 1);
        expect_within("input gradient", (int)ci, o.dx, rdx, sdx, nx, c->k * c->r * c->s, 1);
        expect_within("weight gradient", (int)ci, o.dw, rdw, sdw, nw, c->n * P * Q + 17, 1);
        expect_within("bias gradient (FP32)", (int)ci, o.db, rdb, sdb, (size_t)c->k, c->n * P * Q + 17, 0);
        free_out(&o);
        float *all[] = {x, w, b, dy, ry, rdx, rdw, rdb, ax, aw, ab, ady, sy, sdx, sdw, sdb};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

Test(nn_bf16, conv_bitwise_equal_for_1_2_4_threads, .timeout = 120)
{
    NEED_BF16();
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        bcase c = cases[ci];
        c.n = 9; /* several images per thread and per chunk */
        nnc_rng rng;
        nnc_rng_seed(&rng, 90 + ci, 0);
        const int P = odim(c.h, c.r, c.stride, c.pad), Q = odim(c.w, c.s, c.stride, c.pad);
        size_t nx = (size_t)c.n * c.c * c.h * c.w, nw = (size_t)c.k * c.c * c.r * c.s, ny = (size_t)c.n * c.k * P * Q;
        float *x = rnd(&rng, nx), *w = rnd(&rng, nw), *b = rnd(&rng, (size_t)c.k), *dy = rnd(&rng, ny);
        cr_assert_eq(nnc_set_threads(1), NNC_OK);
        bout one = run_op(&c, x, w, b, dy);
        for (int t = 2; t <= 4; t += 2) {
            cr_assert_eq(nnc_set_threads(t), NNC_OK);
            bout o = run_op(&c, x, w, b, dy);
            cr_expect_eq(memcmp(o.y, one.y, ny * sizeof(float)), 0, "case %zu y, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.dx, one.dx, nx * sizeof(float)), 0, "case %zu dx, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.dw, one.dw, nw * sizeof(float)), 0, "case %zu dw, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.db, one.db, (size_t)c.k * sizeof(float)), 0, "case %zu db, %d threads vs 1", ci, t);
            free_out(&o);
        }
        free_out(&one);
        free(x);
        free(w);
        free(b);
        free(dy);
    }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

/* ---- the BF16 kvec kernels (nn/conv/kvec_bf16.c, driven by nn/conv/kvec.c) ----
 * The kvec set forced (nnc__conv_set_path(NNC__CONV_KVEC)) on odd shapes: channel counts that
 * are and are not multiples of 16 and 32 (odd ones pad a zero channel of a pair; more than 64
 * input channels split the reduction over two kernel calls), strides 1 and 2, padding, 1x1 and
 * 5x5, batches of 1 and 3, and batches of 9 and 17 whose weight-gradient groups hold 2 and 3
 * images (the weight gradient pairs the images of a group, the third one with a zero image).
 * The last three have more than 256K weights and output channels in multiples of 64, so their
 * weight gradient runs over the whole batch at once (kvec.c's wide_wgrad, VGG's deep layers),
 * on ceil(N/2) image pairs: odd and even batches, 2x2 and 4x4 images, stride 2. */
static const bcase kcases[] = {
    {1, 24, 9, 9, 40, 3, 3, 1, 1},  {3, 33, 8, 7, 17, 3, 3, 2, 1}, {3, 64, 8, 8, 64, 3, 3, 1, 1},
    {17, 32, 6, 6, 32, 3, 3, 1, 1}, {9, 16, 11, 10, 48, 3, 3, 2, 1}, {3, 5, 7, 9, 21, 5, 5, 1, 2},
    {1, 70, 5, 5, 96, 1, 1, 1, 0},  {3, 40, 8, 8, 32, 1, 1, 2, 0},  {9, 9, 6, 5, 33, 3, 3, 1, 1},
    {3, 64, 4, 4, 512, 3, 3, 1, 1}, {2, 512, 2, 2, 128, 3, 3, 1, 1}, {5, 96, 6, 6, 320, 3, 3, 2, 1},
};

static nnc__conv_shape kshape(const bcase *c)
{
    nnc__conv_shape cs = {c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad,
                          odim(c->h, c->r, c->stride, c->pad), odim(c->w, c->s, c->stride, c->pad), NNC_PRECISION_BF16};
    return cs;
}

Test(nn_bf16, kvec_matches_reference_within_the_derived_bound, .timeout = 120)
{
    NEED_BF16();
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    nnc__conv_set_path(NNC__CONV_KVEC);
    for (size_t ci = 0; ci < sizeof kcases / sizeof kcases[0]; ci++) {
        const bcase *c = &kcases[ci];
        const nnc__conv_shape cs = kshape(c);
        cr_assert_eq(nnc__conv_pick(&cs, 0), NNC__CONV_KVEC, "case %zu: forward on the kvec set", ci);
        cr_assert_eq(nnc__conv_pick(&cs, 1), NNC__CONV_KVEC, "case %zu: backward on the kvec set", ci);
        nnc_rng rng;
        nnc_rng_seed(&rng, 140 + ci, 0);
        const int P = cs.p, Q = cs.q;
        size_t nx = (size_t)c->n * c->c * c->h * c->w, nw = (size_t)c->k * c->c * c->r * c->s;
        size_t ny = (size_t)c->n * c->k * P * Q;
        float *x = rnd(&rng, nx), *w = rnd(&rng, nw), *b = rnd(&rng, (size_t)c->k), *dy = rnd(&rng, ny);
        bout o = run_op(c, x, w, b, dy);
        float *ry = malloc(ny * sizeof(float)), *rdx = calloc(nx, sizeof(float)), *rdw = calloc(nw, sizeof(float));
        float *rdb = calloc((size_t)c->k, sizeof(float));
        nnc_ref_conv2d_forward(x, w, b, ry, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        nnc_ref_conv2d_backward(x, w, dy, rdx, rdw, rdb, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        float *ax = abs_of(x, nx), *aw = abs_of(w, nw), *ab = abs_of(b, (size_t)c->k), *ady = abs_of(dy, ny);
        float *sy = malloc(ny * sizeof(float)), *sdx = calloc(nx, sizeof(float)), *sdw = calloc(nw, sizeof(float));
        float *sdb = calloc((size_t)c->k, sizeof(float));
        nnc_ref_conv2d_forward(ax, aw, ab, sy, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        nnc_ref_conv2d_backward(ax, aw, ady, sdx, sdw, sdb, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
        expect_within("kvec forward", (int)ci, o.y, ry, sy, ny, c->c * c->r * c->s, 1);
        expect_within("kvec input gradient", (int)ci, o.dx, rdx, sdx, nx, c->k * c->r * c->s, 1);
        expect_within("kvec weight gradient", (int)ci, o.dw, rdw, sdw, nw, c->n * P * Q + 17, 1);
        expect_within("kvec bias gradient (FP32)", (int)ci, o.db, rdb, sdb, (size_t)c->k, c->n * P * Q + 17, 0);
        free_out(&o);
        float *all[] = {x, w, b, dy, ry, rdx, rdw, rdb, ax, aw, ab, ady, sy, sdx, sdw, sdb};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
    nnc__conv_set_path(0);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

Test(nn_bf16, kvec_bitwise_equal_for_1_2_4_threads, .timeout = 120)
{
    NEED_BF16();
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    nnc__conv_set_path(NNC__CONV_KVEC);
    for (size_t ci = 0; ci < sizeof kcases / sizeof kcases[0]; ci++) {
        bcase c = kcases[ci];
        if (c.n < 9) c.n = 11; /* several images per thread, per chunk and per group */
        const nnc__conv_shape cs = kshape(&c);
        cr_assert_eq(nnc__conv_pick(&cs, 1), NNC__CONV_KVEC);
        nnc_rng rng;
        nnc_rng_seed(&rng, 190 + ci, 0);
        size_t nx = (size_t)c.n * c.c * c.h * c.w, nw = (size_t)c.k * c.c * c.r * c.s, ny = (size_t)c.n * c.k * cs.p * cs.q;
        float *x = rnd(&rng, nx), *w = rnd(&rng, nw), *b = rnd(&rng, (size_t)c.k), *dy = rnd(&rng, ny);
        cr_assert_eq(nnc_set_threads(1), NNC_OK);
        bout one = run_op(&c, x, w, b, dy);
        for (int t = 2; t <= 4; t += 2) {
            cr_assert_eq(nnc_set_threads(t), NNC_OK);
            bout o = run_op(&c, x, w, b, dy);
            cr_expect_eq(memcmp(o.y, one.y, ny * sizeof(float)), 0, "case %zu y, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.dx, one.dx, nx * sizeof(float)), 0, "case %zu dx, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.dw, one.dw, nw * sizeof(float)), 0, "case %zu dw, %d threads vs 1", ci, t);
            cr_expect_eq(memcmp(o.db, one.db, (size_t)c.k * sizeof(float)), 0, "case %zu db, %d threads vs 1", ci, t);
            free_out(&o);
        }
        free_out(&one);
        free(x);
        free(w);
        free(b);
        free(dy);
    }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    nnc__conv_set_path(0);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

/* The dispatcher sends the BF16 layers that run kvec in FP32 (more than 16 output channels, 8+
 * input channels, small images) to the kvec set, the others to the bf16 (direct) set. */
Test(nn_bf16, dispatcher_picks_kvec_for_the_wide_layers)
{
    const bcase wide = {128, 32, 16, 16, 32, 3, 3, 1, 1}, narrow = {128, 16, 32, 32, 16, 3, 3, 1, 1};
    nnc__conv_shape a = kshape(&wide), n = kshape(&narrow);
    cr_expect_eq(nnc__conv_pick(&a, 0), NNC__CONV_KVEC);
    cr_expect_eq(nnc__conv_pick(&a, 1), NNC__CONV_KVEC);
    cr_expect_eq(nnc__conv_pick(&n, 0), NNC__CONV_BF16);
    cr_expect_eq(nnc__conv_pick(&n, 1), NNC__CONV_BF16);
    nnc__conv_set_path(1);
    cr_expect_eq(nnc__conv_pick(&a, 1), NNC__CONV_BF16, "override: direct geometry");
    nnc__conv_set_path(0);
}

Test(nn_bf16, set_precision_refuses_bf16_without_the_kernels)
{
    nnc_precision p;
    cr_expect_eq(nnc_precision_parse("fp32", &p), 0);
    cr_expect_eq(p, NNC_PRECISION_FP32);
    cr_expect_eq(nnc_precision_parse("bf16", &p), 0);
    cr_expect_eq(p, NNC_PRECISION_BF16);
    cr_expect_eq(nnc_precision_parse("fp16", &p), -1);
    cr_expect_str_eq(nnc_precision_name(NNC_PRECISION_BF16), "bf16");
    nnc__isa_level was = nnc__isa();
    nnc__set_isa(NNC_ISA_AVX2);
    cr_expect_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_EUNSUPPORTED);
    cr_expect(strstr(nnc_error_message(), "AVX512_BF16") != NULL, "message: %s", nnc_error_message());
    cr_expect_eq(nnc_get_precision(), NNC_PRECISION_FP32, "a refused precision leaves the setting alone");
    nnc__set_isa(was);
    cr_expect_eq(nnc_set_precision((nnc_precision)7), NNC_EINVAL);
    if (nnc_precision_bf16_available()) {
        cr_expect_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
        cr_expect_eq(nnc_get_precision(), NNC_PRECISION_BF16);
        cr_expect_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
    }
}

/* The --precision flag of the commands: names checked, bf16 run or refused with the reason. */
Test(nn_bf16, cli_precision_flag, .timeout = 120)
{
    tcli_result r = tcli_run(60, "bench", "--model", "tiny", "--batch", "2", "--runs", "1", "--warmup", "0",
                             "--precision", "fp16", NULL);
    cr_expect_eq(r.code, 2, "%s", r.err);
    cr_expect(strstr(r.err, "--precision") && strstr(r.err, "'fp16'"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(60, "bench", "--model", "tiny", "--batch", "4", "--runs", "1", "--warmup", "0", "--precision", "bf16",
                 "--json", NULL);
    if (nnc_precision_bf16_available()) {
        cr_expect_eq(r.code, 0, "%s", r.err);
        cr_expect(strstr(r.out, "\"precision\": \"bf16\""), "%s", r.out);
    } else {
        cr_expect_eq(r.code, 2, "%s", r.err);
        cr_expect(strstr(r.err, "AVX512_BF16"), "%s", r.err);
    }
    tcli_free(&r);
    const char *cmds[] = {"train", "eval", "predict", "compare"};
    for (int i = 0; i < 4; i++) {
        r = tcli_run(60, cmds[i], "--help", NULL);
        cr_expect_eq(r.code, 0, "%s --help", cmds[i]);
        cr_expect(strstr(r.out, "--precision"), "%s --help lists --precision: %s", cmds[i], r.out);
        tcli_free(&r);
    }
    r = tcli_run(60, "train", "fashion-mnist", "--precision", "half", NULL);
    cr_expect_eq(r.code, 2, "%s", r.err);
    cr_expect(strstr(r.err, "--precision") && strstr(r.err, "'half'"), "%s", r.err);
    tcli_free(&r);
}
