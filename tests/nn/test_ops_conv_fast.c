/* tests/nn/test_ops_conv_fast.c - the fast kernels against the naive references, across ISA
 * levels and thread counts (bitwise equal at 1, 2 and 4 threads), and the fused batchnorm2d_relu op.
 *
 * - conv2d forward, input, weight and bias gradients vs nnc_ref_conv2d_* at every ISA level the
 *   CPU has (generic, avx2, avx512) on the ResNet/VGG layer shapes and random shapes (odd sizes,
 *   stride 2, pad 0/1, 1x1, batch 1, channel counts not multiple of 16); normwise bound
 *   |fast - ref| <= 1e-4 (max|ref| + |ref|) as in test_ops_conv.c.
 * - the levels against each other (the same bound).
 * - the direct path (forced for every shape) vs the references at every level, including stride
 *   phases whose plane rows are all padding (its input gradient runs only rows with input rows).
 * - the batched im2col + GEMM path (forced for every shape) vs the references, and its thread
 *   invariance.
 * - the small-image path (channel-vectorised kernels, forced where it runs) vs the references at
 *   every ISA level, on shapes that reach each tile remainder (K = 16/32/48/64 + odd, channel
 *   chunks with accumulation, strides 2 and 3 with their input-gradient phases), and its thread
 *   invariance.
 * - 1 vs 2 vs 4 kernel threads: conv2d, batchnorm2d, batchnorm2d_relu, relu/add forward and
 *   backward bitwise equal.
 * - batchnorm2d_relu vs batchnorm2d + add + relu (values and every gradient), and gradchecks.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/cpu.h"
#include "nn/nnc.h"
#include "nn/threads.h"
#include "tests/common/gradcheck.h"

typedef struct ccase {
    int n, c, h, w, k, r, s, stride, pad, bias;
} ccase;

typedef struct conv_out {
    float *y, *dx, *dw, *db;
    size_t ny, nx, nw;
} conv_out;

static int out_dim(int in, int k, int st, int pad) { return (in + 2 * pad - k) / st + 1; }

static float *rnd(nnc_rng *rng, size_t n)
{
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = nnc_rng_uniform(rng) * 2.0f - 1.0f;
    return p;
}

static float *copy_of(const float *p, size_t n)
{
    float *q = malloc(n * sizeof(float));
    memcpy(q, p, n * sizeof(float));
    return q;
}

/* Inputs of one case: x, w, b, dy drawn from seed. */
typedef struct conv_in {
    float *x, *w, *b, *dy;
} conv_in;

static conv_in make_in(const ccase *c, uint64_t seed)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, seed, 3);
    int P = out_dim(c->h, c->r, c->stride, c->pad), Q = out_dim(c->w, c->s, c->stride, c->pad);
    conv_in in = {rnd(&rng, (size_t)c->n * c->c * c->h * c->w), rnd(&rng, (size_t)c->k * c->c * c->r * c->s),
                  rnd(&rng, (size_t)c->k), rnd(&rng, (size_t)c->n * c->k * P * Q)};
    return in;
}

static void free_in(conv_in *in)
{
    free(in->x);
    free(in->w);
    free(in->b);
    free(in->dy);
}

static int via_op; /* feed the conv through scale(1): its input gradient is then a fresh buffer */

/* Run the conv2d op (forward + backward seeded with dy); gradients start at 0.5 to check +=. */
static conv_out run_op(const ccase *c, const conv_in *in)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int sx[4] = {c->n, c->c, c->h, c->w}, sw[4] = {c->k, c->c, c->r, c->s}, sb[1] = {c->k};
    conv_out o;
    o.nx = (size_t)c->n * c->c * c->h * c->w;
    o.nw = (size_t)c->k * c->c * c->r * c->s;
    o.dx = malloc(o.nx * sizeof(float));
    o.dw = malloc(o.nw * sizeof(float));
    o.db = malloc((size_t)c->k * sizeof(float));
    for (size_t i = 0; i < o.nx; i++) o.dx[i] = 0.5f;
    for (size_t i = 0; i < o.nw; i++) o.dw[i] = 0.5f;
    for (int i = 0; i < c->k; i++) o.db[i] = 0.5f;
    nnc_tensor *x = nnc_tensor_wrap(g, in->x, 4, sx), *w = nnc_tensor_wrap(g, in->w, 4, sw);
    nnc_tensor *b = nnc_tensor_wrap(g, in->b, 1, sb);
    x->grad = o.dx;
    w->grad = o.dw;
    b->grad = o.db;
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    nnc_tensor *y = nnc_conv2d(g, via_op ? nnc_scale(g, x, 1.0f) : x, w, c->bias ? b : NULL, c->stride, c->pad);
    o.ny = y->numel;
    o.y = copy_of(y->data, y->numel);
    cr_assert_eq(nnc_backward_seed(g, y, in->dy), NNC_OK);
    nnc_graph_free(g);
    return o;
}

static conv_out run_ref(const ccase *c, const conv_in *in)
{
    conv_out o;
    int P = out_dim(c->h, c->r, c->stride, c->pad), Q = out_dim(c->w, c->s, c->stride, c->pad);
    o.ny = (size_t)c->n * c->k * P * Q;
    o.nx = (size_t)c->n * c->c * c->h * c->w;
    o.nw = (size_t)c->k * c->c * c->r * c->s;
    o.y = malloc(o.ny * sizeof(float));
    o.dx = malloc(o.nx * sizeof(float));
    o.dw = malloc(o.nw * sizeof(float));
    o.db = malloc((size_t)c->k * sizeof(float));
    for (size_t i = 0; i < o.nx; i++) o.dx[i] = 0.5f;
    for (size_t i = 0; i < o.nw; i++) o.dw[i] = 0.5f;
    for (int i = 0; i < c->k; i++) o.db[i] = 0.5f;
    nnc_ref_conv2d_forward(in->x, in->w, c->bias ? in->b : NULL, o.y, c->n, c->c, c->h, c->w, c->k, c->r, c->s,
                           c->stride, c->pad);
    nnc_ref_conv2d_backward(in->x, in->w, in->dy, o.dx, o.dw, c->bias ? o.db : NULL, c->n, c->c, c->h, c->w, c->k,
                            c->r, c->s, c->stride, c->pad);
    return o;
}

static void free_out(conv_out *o)
{
    free(o->y);
    free(o->dx);
    free(o->dw);
    free(o->db);
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static void expect_close(const char *what, const char *tag, const float *got, const float *want, size_t n)
{
    double err = gc_max_err(got, want, n, 1e-4 * max_abs(want, n) + 1e-30, 1e-4);
    cr_expect_leq(err, 1.0, "%s: %s differs (err %.3g)", tag, what, err);
}

static void expect_out_close(const char *tag, const ccase *c, const conv_out *got, const conv_out *want)
{
    expect_close("forward", tag, got->y, want->y, got->ny);
    expect_close("dx", tag, got->dx, want->dx, got->nx);
    expect_close("dw", tag, got->dw, want->dw, got->nw);
    if (c->bias) expect_close("db", tag, got->db, want->db, (size_t)c->k);
}

static void expect_out_equal(const char *tag, const ccase *c, const conv_out *a, const conv_out *b)
{
    cr_expect(memcmp(a->y, b->y, a->ny * sizeof(float)) == 0, "%s: forward not bitwise equal", tag);
    cr_expect(memcmp(a->dx, b->dx, a->nx * sizeof(float)) == 0, "%s: dx not bitwise equal", tag);
    cr_expect(memcmp(a->dw, b->dw, a->nw * sizeof(float)) == 0, "%s: dw not bitwise equal", tag);
    cr_expect(memcmp(a->db, b->db, (size_t)c->k * sizeof(float)) == 0, "%s: db not bitwise equal", tag);
}

/* n c h w k r s stride pad bias */
static const ccase fixed_cases[] = {
    {2, 3, 32, 32, 16, 3, 3, 1, 1, 0},  /* ResNet stem */
    {3, 16, 16, 16, 16, 3, 3, 1, 1, 0}, /* 3x3 same */
    {2, 16, 16, 16, 32, 3, 3, 2, 1, 0}, /* stage transition, stride 2 */
    {2, 64, 8, 8, 64, 3, 3, 1, 1, 1},   /* 8x8, 64 channels, bias */
    {1, 17, 9, 11, 33, 3, 3, 1, 1, 1},  /* batch 1, odd sizes, channels not multiple of 16 */
    {2, 5, 7, 7, 10, 1, 1, 1, 0, 1},    /* 1x1 */
    {3, 6, 9, 9, 7, 1, 1, 2, 0, 0},     /* 1x1 stride 2 (projection shortcut) */
    {2, 4, 9, 10, 3, 3, 3, 2, 0, 1},    /* stride 2, pad 0, odd */
    {1, 3, 2, 2, 130, 3, 3, 1, 1, 1},   /* VGG tail: 2x2 image, many filters */
    {2, 2, 7, 5, 3, 5, 3, 3, 2, 1},     /* stride 3, non-square 5x3 kernel */
    {2, 2, 3, 1, 3, 3, 3, 3, 1, 1},     /* stride 3 on 1 column: a used phase without source columns */
    {1, 2, 5, 2, 3, 3, 3, 3, 1, 1},     /* stride 3, pad 1, 2 columns */
    {3, 72, 5, 6, 210, 3, 3, 1, 1, 1},  /* large weights: kernels run over stacked images */
    {5, 80, 7, 7, 200, 3, 3, 2, 1, 0},  /* large weights, stride 2 */
};

static ccase random_case(nnc_rng *rng)
{
    static const int ks[] = {1, 2, 3, 5};
    for (;;) {
        ccase c = {1 + (int)nnc_rng_below(rng, 4), 1 + (int)nnc_rng_below(rng, 20), 1 + (int)nnc_rng_below(rng, 14),
                   1 + (int)nnc_rng_below(rng, 14), 1 + (int)nnc_rng_below(rng, 20), ks[nnc_rng_below(rng, 4)], 0,
                   1 + (int)nnc_rng_below(rng, 2), (int)nnc_rng_below(rng, 3), (int)nnc_rng_below(rng, 2)};
        c.s = nnc_rng_below(rng, 3) ? c.r : ks[nnc_rng_below(rng, 4)];
        if (c.h + 2 * c.pad >= c.r && c.w + 2 * c.pad >= c.s) return c;
    }
}

static ccase case_at(int i, nnc_rng *rng)
{
    int nf = (int)(sizeof fixed_cases / sizeof fixed_cases[0]);
    return i < nf ? fixed_cases[i] : random_case(rng);
}

#define NCASES 36

static void check_level(nnc__isa_level lvl)
{
    if (nnc__isa_best() < lvl) return; /* the CPU lacks it: covered by the lower levels */
    cr_assert_eq(nnc__set_isa(lvl), lvl);
    nnc_rng rng;
    nnc_rng_seed(&rng, 99, 0);
    for (int i = 0; i < NCASES; i++) {
        ccase c = case_at(i, &rng);
        conv_in in = make_in(&c, (uint64_t)i);
        conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
        char tag[160];
        snprintf(tag, sizeof tag, "%s case %d (n%d c%d %dx%d k%d %dx%d s%d p%d)", nnc__isa_name(lvl), i, c.n, c.c,
                 c.h, c.w, c.k, c.r, c.s, c.stride, c.pad);
        expect_out_close(tag, &c, &got, &want);
        free_out(&got);
        free_out(&want);
        free_in(&in);
    }
}

Test(nn_ops_conv_fast, generic_matches_reference) { check_level(NNC_ISA_GENERIC); }
Test(nn_ops_conv_fast, avx2_matches_reference) { check_level(NNC_ISA_AVX2); }
Test(nn_ops_conv_fast, avx512_matches_reference) { check_level(NNC_ISA_AVX512); }

Test(nn_ops_conv_fast, isa_levels_agree)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 5, 0);
    for (int i = 0; i < 16; i++) {
        ccase c = case_at(i, &rng);
        conv_in in = make_in(&c, (uint64_t)i + 100);
        nnc__set_isa(NNC_ISA_GENERIC);
        conv_out base = run_op(&c, &in);
        for (int l = NNC_ISA_AVX2; l <= (int)nnc__isa_best(); l++) {
            nnc__set_isa((nnc__isa_level)l);
            conv_out o = run_op(&c, &in);
            char tag[64];
            snprintf(tag, sizeof tag, "%s vs generic, case %d", nnc__isa_name((nnc__isa_level)l), i);
            expect_out_close(tag, &c, &o, &base);
            free_out(&o);
        }
        free_out(&base);
        free_in(&in);
    }
}

Test(nn_ops_conv_fast, conv_bitwise_equal_for_1_2_4_threads, .timeout = 60)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, 11, 0);
    for (int i = 0; i < 15; i++) {
        ccase c = case_at(i, &rng);
        if (i < 4) c.n = 9; /* several images per thread and per chunk */
        if (i == 14) c = (ccase){9, 16, 6, 32, 16, 3, 3, 1, 1, 0}; /* the direct path's row modes */
        conv_in in = make_in(&c, (uint64_t)i + 200);
        cr_assert_eq(nnc_set_threads(1), NNC_OK);
        conv_out one = run_op(&c, &in);
        for (int t = 2; t <= 4; t += 2) {
            cr_assert_eq(nnc_set_threads(t), NNC_OK);
            cr_assert_eq(nnc_threads(), t);
            conv_out o = run_op(&c, &in);
            char tag[64];
            snprintf(tag, sizeof tag, "case %d, %d threads vs 1", i, t);
            expect_out_equal(tag, &c, &o, &one);
            free_out(&o);
        }
        free_out(&one);
        free_in(&in);
    }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
}

Test(nn_ops_conv_fast, set_threads_rejects_bad_counts)
{
    cr_expect_eq(nnc_set_threads(0), NNC_EINVAL);
    cr_expect_eq(nnc_set_threads(NNC_TEAM_MAX_THREADS + 1), NNC_EINVAL);
    cr_expect_eq(nnc_threads(), 1);
}

/* Shapes for the forced direct path: the input gradient runs only the phase-plane rows that hold
 * input rows, so these include stride phases whose rows are all padding (1-row images with
 * stride 2 or 3, pad 1 or 2) and odd heights where the phases hold different row counts. */
static const ccase direct_cases[] = {
    {2, 3, 1, 5, 4, 3, 3, 2, 1, 0},   /* stride 2, one input row: row phase 0 holds none */
    {2, 2, 2, 3, 3, 3, 3, 3, 2, 1},   /* stride 3, pad 2: two of three row phases hold a row */
    {1, 4, 7, 6, 5, 3, 3, 2, 1, 1},   /* stride 2, odd height: 4 and 3 rows per phase */
    {2, 16, 12, 12, 16, 3, 3, 1, 1, 0}, /* ResNet 16-channel shape, stride 1 */
    {2, 5, 6, 9, 7, 5, 5, 1, 2, 1},   /* 5x5, pad 2 */
    {3, 72, 5, 6, 210, 3, 3, 1, 0, 1}, /* stacked images, pad 0 */
    {2, 4, 5, 32, 16, 3, 3, 1, 1, 1}, /* 32 columns: the forward's row mode at every level (bias) */
    {1, 3, 4, 48, 8, 3, 3, 1, 1, 0},  /* 48 columns: row mode with whole JV tiles */
    {2, 3, 4, 32, 6, 3, 3, 1, 1, 1},  /* 32 columns, K not a multiple of KB: wide rows */
    {2, 5, 3, 16, 8, 1, 1, 1, 0, 1},  /* 1x1, 16 columns */
    {2, 8, 5, 32, 4, 3, 3, 1, 1, 1},  /* 32 columns, 8 input channels: the input gradient's row mode */
    {1, 16, 4, 48, 3, 3, 3, 1, 1, 0}, /* 48 columns, 16 input channels: the same */
};

Test(nn_ops_conv_fast, direct_path_matches_reference_at_every_level)
{
    nnc__conv_set_path(1);
    for (int l = NNC_ISA_GENERIC; l <= (int)nnc__isa_best(); l++) {
        nnc__set_isa((nnc__isa_level)l);
        int nd = (int)(sizeof direct_cases / sizeof direct_cases[0]), nf = (int)(sizeof fixed_cases / sizeof fixed_cases[0]);
        for (int i = 0; i < nd + nf; i++) {
            ccase c = i < nd ? direct_cases[i] : fixed_cases[i - nd];
            for (via_op = 0; via_op <= 1; via_op++) {
                conv_in in = make_in(&c, (uint64_t)i + 900);
                conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
                char tag[96];
                snprintf(tag, sizeof tag, "%s direct path, case %d%s", nnc__isa_name((nnc__isa_level)l), i,
                         via_op ? " (fresh dx)" : "");
                expect_out_close(tag, &c, &got, &want);
                free_out(&got);
                free_out(&want);
                free_in(&in);
            }
        }
    }
    via_op = 0;
    nnc__conv_set_path(0);
    nnc__set_isa(nnc__isa_best());
}

/* The forward's epilogue (scale, shift, residual, ReLU) and output statistics on the direct path,
 * in row mode (Q a multiple of the lanes) and wide-row mode, against the reference conv. */
Test(nn_ops_conv_fast, direct_forward_epilogue_and_stats_in_row_mode)
{
    static const ccase cases[] = {{2, 5, 6, 32, 16, 3, 3, 1, 1, 0}, {2, 3, 5, 48, 8, 3, 3, 1, 1, 0},
                                  {2, 4, 5, 30, 8, 3, 3, 1, 1, 0}};
    nnc__conv_set_path(1);
    for (int l = NNC_ISA_GENERIC; l <= (int)nnc__isa_best(); l++) {
        nnc__set_isa((nnc__isa_level)l);
        for (int i = 0; i < 3; i++) {
            const ccase *c = &cases[i];
            const int P = out_dim(c->h, c->r, c->stride, c->pad), Q = out_dim(c->w, c->s, c->stride, c->pad);
            const size_t ny = (size_t)c->n * c->k * P * Q, pq = (size_t)P * Q;
            conv_in in = make_in(c, (uint64_t)i + 950);
            float *ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float)), *sc = malloc(sizeof(float) * c->k);
            double *stats = malloc(sizeof(double) * 2 * c->k);
            nnc_ref_conv2d_forward(in.x, in.w, NULL, ref, c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad);
            for (int k = 0; k < c->k; k++) sc[k] = 0.5f + 0.1f * (float)k;
            for (int relu = 0; relu <= 1; relu++) {
                nnc__conv_shape cs = {c->n, c->c, c->h, c->w, c->k, c->r, c->s, c->stride, c->pad, P, Q, 0};
                nnc__conv_epilogue ep = {sc, in.b, in.dy, relu};
                nnc__conv_fuse fu = {NULL, NULL, stats, NULL, NULL};
                nnc__conv_forward(NULL, &cs, in.x, in.w, &ep, &fu, y);
                double worst = 0, scale = 1e-3;
                for (size_t j = 0; j < ny; j++) scale = fmax(scale, fabs(ref[j]));
                for (size_t j = 0; j < ny; j++) {
                    int k = (int)(j / pq % (size_t)c->k);
                    float v = ref[j] * sc[k] + in.b[k] + in.dy[j];
                    if (relu && !(v > 0.0f)) v = 0.0f;
                    worst = fmax(worst, fabs((double)y[j] - v) / scale);
                }
                cr_expect_leq(worst, 1e-5, "%s case %d relu %d: epilogue differs by %.3g", nnc__isa_name((nnc__isa_level)l), i,
                              relu, worst);
                for (int k = 0; k < c->k; k++) {
                    double s = 0, ss = 0, m = (double)c->n * (double)pq;
                    for (int n = 0; n < c->n; n++)
                        for (size_t j = 0; j < pq; j++) s += y[((size_t)n * c->k + k) * pq + j];
                    for (int n = 0; n < c->n; n++)
                        for (size_t j = 0; j < pq; j++) {
                            double d = y[((size_t)n * c->k + k) * pq + j] - s / m;
                            ss += d * d;
                        }
                    cr_expect_leq(fabs(stats[2 * k] - s / m), 1e-6 * (fabs(s / m) + 1), "case %d channel %d: mean", i, k);
                    cr_expect_leq(fabs(stats[2 * k + 1] - ss / m), 1e-5 * (ss / m) + 1e-9, "case %d channel %d: var", i, k);
                }
            }
            free(ref);
            free(y);
            free(sc);
            free(stats);
            free_in(&in);
        }
    }
    nnc__conv_set_path(0);
    nnc__set_isa(nnc__isa_best());
}

Test(nn_ops_conv_fast, gemm_path_matches_reference)
{
    nnc__conv_set_path(2);
    nnc_rng rng;
    nnc_rng_seed(&rng, 123, 0);
    for (int i = 0; i < 25; i++) {
        ccase c = case_at(i, &rng);
        if (i == 24) c = (ccase){60, 512, 4, 4, 8, 3, 3, 1, 1, 1}; /* 3 groups: multi-chunk dW */
        conv_in in = make_in(&c, (uint64_t)i + 300);
        conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
        char tag[64];
        snprintf(tag, sizeof tag, "gemm path, case %d", i);
        expect_out_close(tag, &c, &got, &want);
        free_out(&got);
        free_out(&want);
        free_in(&in);
    }
    nnc__conv_set_path(0);
}

Test(nn_ops_conv_fast, gemm_path_bitwise_equal_for_1_2_4_threads, .timeout = 60)
{
    nnc__conv_set_path(2);
    ccase c = {60, 512, 4, 4, 8, 3, 3, 1, 1, 1}; /* 28 images per group: 3 groups and chunks */
    conv_in in = make_in(&c, 9);
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    conv_out one = run_op(&c, &in);
    for (int t = 2; t <= 4; t += 2) {
        cr_assert_eq(nnc_set_threads(t), NNC_OK);
        conv_out o = run_op(&c, &in);
        expect_out_equal(t == 2 ? "gemm path, 2 threads" : "gemm path, 4 threads", &c, &o, &one);
        free_out(&o);
    }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    free_out(&one);
    free_in(&in);
    nnc__conv_set_path(0);
}

Test(nn_ops_conv_fast, fresh_input_gradient_is_written_on_both_paths)
{
    via_op = 1;
    for (int path = 1; path <= 2; path++) {
        nnc__conv_set_path(path);
        nnc_rng rng;
        nnc_rng_seed(&rng, 55, 0);
        for (int i = 0; i < 16; i++) {
            ccase c = case_at(i, &rng);
            conv_in in = make_in(&c, (uint64_t)i + 400);
            conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
            char tag[64];
            snprintf(tag, sizeof tag, "%s path, input through an op, case %d", path == 1 ? "direct" : "gemm", i);
            expect_out_close(tag, &c, &got, &want);
            free_out(&got);
            free_out(&want);
            free_in(&in);
        }
    }
    nnc__conv_set_path(0);
    via_op = 0;
}

/* Shapes for the small-image path: every remainder of the channel block (K mod 64 = 16, 32, 48,
 * 0 and odd K), reductions longer than one 32-channel chunk, pixel counts that are not a
 * multiple of the pixel tile, batch 1, strides 2 and 3 (input-gradient phases, some empty),
 * tap classes both kept and widened into the full tap set (thin classes). */
static const ccase small_cases[] = {
    {3, 8, 8, 8, 64, 3, 3, 1, 1, 1},   /* ResNet stage 3 shape, one full 64-channel block */
    {2, 72, 4, 4, 48, 3, 3, 1, 1, 0},  /* three reduction chunks (32+32+8), kv remainder 3 */
    {1, 5, 3, 5, 16, 3, 3, 1, 1, 1},   /* batch 1, odd image, kv remainder 1 */
    {5, 33, 2, 2, 130, 3, 3, 1, 1, 1}, /* 2x2 images, K past two blocks with a remainder of 2 */
    {4, 7, 7, 6, 33, 1, 1, 1, 0, 1},   /* 1x1, odd K */
    {3, 6, 8, 8, 20, 3, 3, 2, 1, 0},   /* stride 2: four input-gradient phases of 4, 2, 2, 1 taps */
    {2, 16, 9, 7, 32, 3, 3, 2, 0, 1},  /* stride 2, pad 0, odd image */
    {3, 8, 7, 9, 24, 1, 1, 2, 0, 0},   /* 1x1 stride 2: phases without taps get zero gradient */
    {2, 5, 10, 8, 18, 3, 2, 3, 2, 1},  /* stride 3, non-square kernel, pad past the kernel */
    {2, 40, 5, 5, 96, 3, 3, 1, 0, 1},  /* pad 0 */
    {2, 9, 6, 6, 17, 5, 5, 1, 2, 0},   /* 5x5 taps */
    {9, 12, 4, 4, 64, 3, 3, 1, 1, 1},  /* several groups and dW chunks */
    {2, 16, 24, 20, 32, 3, 3, 1, 1, 0}, /* larger image: several groups per dW chunk */
    {3, 128, 2, 3, 1024, 3, 3, 1, 1, 1}, /* large dW: whole-batch pass, one task per 64 channels */
    {16, 8, 4, 4, 32, 3, 3, 1, 1, 1},   /* forward tap classes down to the corners (16 rows each) */
    {16, 8, 8, 8, 32, 3, 3, 1, 1, 0},   /* input-gradient edge classes kept, corners widened */
};

static void check_small(nnc__isa_level lvl)
{
    if (nnc__isa_best() < lvl) return;
    cr_assert_eq(nnc__set_isa(lvl), lvl);
    nnc__conv_set_path(3);
    for (int i = 0; i < (int)(sizeof small_cases / sizeof small_cases[0]); i++) {
        ccase c = small_cases[i];
        nnc__conv_shape cs = {c.n, c.c, c.h, c.w, c.k, c.r, c.s, c.stride, c.pad,
                              out_dim(c.h, c.r, c.stride, c.pad), out_dim(c.w, c.s, c.stride, c.pad), 0};
        cr_assert(nnc__conv_pick(&cs, 0) == NNC__CONV_KVEC, "case %d: the forced small path must take the forward", i);
        cr_assert(nnc__conv_pick(&cs, 1) == NNC__CONV_KVEC, "case %d: the forced small path must take the backward", i);
        for (via_op = 0; via_op <= 1; via_op++) {
            conv_in in = make_in(&c, (uint64_t)i + 500);
            conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
            char tag[96];
            snprintf(tag, sizeof tag, "%s small path, case %d%s", nnc__isa_name(lvl), i, via_op ? " (fresh dx)" : "");
            expect_out_close(tag, &c, &got, &want);
            free_out(&got);
            free_out(&want);
            free_in(&in);
        }
    }
    via_op = 0;
    nnc_rng rng; /* and the random shapes of check_level (every kernel size, stride, pad) */
    nnc_rng_seed(&rng, 77, 0);
    for (int i = 0; i < 24; i++) {
        ccase c = random_case(&rng);
        conv_in in = make_in(&c, (uint64_t)i + 600);
        conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
        char tag[160];
        snprintf(tag, sizeof tag, "%s small path, random case %d (n%d c%d %dx%d k%d %dx%d s%d p%d)", nnc__isa_name(lvl),
                 i, c.n, c.c, c.h, c.w, c.k, c.r, c.s, c.stride, c.pad);
        expect_out_close(tag, &c, &got, &want);
        free_out(&got);
        free_out(&want);
        free_in(&in);
    }
    nnc__conv_set_path(0);
    nnc__set_isa(nnc__isa_best());
}

/* Kernel scratch is reused across ops: whatever an earlier op left there (here NaN everywhere)
 * must not reach the results. The small path's last group of a dW chunk has absent images whose
 * dy rows are zero; their input slots must be zeroed too (0 * NaN is NaN). */
Test(nn_ops_conv_fast, small_path_ignores_stale_scratch)
{
    const ccase c = {9, 12, 4, 4, 64, 3, 3, 1, 1, 1}; /* several groups and dW chunks, a partial group */
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    nnc__conv_set_path(3);
    const size_t bytes = (size_t)16 << 20;
    float *scr = nnc__thread_scratch(bytes);
    cr_assert(scr != NULL);
    for (size_t i = 0; i < bytes / sizeof(float); i++) scr[i] = NAN;
    conv_in in = make_in(&c, 1234);
    conv_out got = run_op(&c, &in), want = run_ref(&c, &in);
    expect_out_close("small path after NaN scratch", &c, &got, &want);
    free_out(&got);
    free_out(&want);
    free_in(&in);
    nnc__conv_set_path(0);
}

Test(nn_ops_conv_fast, small_path_matches_reference_generic) { check_small(NNC_ISA_GENERIC); }
Test(nn_ops_conv_fast, small_path_matches_reference_avx2) { check_small(NNC_ISA_AVX2); }
Test(nn_ops_conv_fast, small_path_matches_reference_avx512) { check_small(NNC_ISA_AVX512); }

Test(nn_ops_conv_fast, small_path_taken_automatically_where_it_is_faster)
{
    nnc__conv_shape k16 = {8, 16, 32, 32, 16, 3, 3, 1, 1, 32, 32, 0}, s8 = {8, 64, 8, 8, 64, 3, 3, 1, 1, 8, 8, 0};
    nnc__conv_shape c3 = {8, 3, 32, 32, 64, 3, 3, 1, 1, 32, 32, 0}, st2 = {8, 32, 16, 16, 64, 3, 3, 2, 1, 8, 8, 0};
    cr_expect(nnc__conv_pick(&k16, 0) != NNC__CONV_KVEC && nnc__conv_pick(&k16, 1) != NNC__CONV_KVEC,
              "16 output channels fill one vector only");
    cr_expect(nnc__conv_pick(&s8, 0) == NNC__CONV_KVEC && nnc__conv_pick(&s8, 1) == NNC__CONV_KVEC);
    cr_expect(nnc__conv_pick(&c3, 0) != NNC__CONV_KVEC, "3 input channels: too short a reduction");
    cr_expect(nnc__conv_pick(&st2, 0) == NNC__CONV_KVEC && nnc__conv_pick(&st2, 1) == NNC__CONV_KVEC);
}

Test(nn_ops_conv_fast, small_path_bitwise_equal_for_1_2_4_threads, .timeout = 60)
{
    nnc__conv_set_path(3);
    static const ccase cases[] = {
        {40, 12, 4, 4, 64, 3, 3, 1, 1, 1},  /* several groups and dW chunks */
        {9, 16, 9, 9, 32, 3, 3, 2, 1, 0},   /* stride 2: phased input gradient */
        {5, 128, 2, 3, 1024, 3, 3, 1, 1, 1}, /* whole-batch dW over 16 tasks */
    };
    for (int i = 0; i < 3; i++) {
        const ccase c = cases[i];
        conv_in in = make_in(&c, 19 + (uint64_t)i);
        cr_assert_eq(nnc_set_threads(1), NNC_OK);
        conv_out one = run_op(&c, &in);
        for (int t = 2; t <= 4; t += 2) {
            cr_assert_eq(nnc_set_threads(t), NNC_OK);
            conv_out o = run_op(&c, &in);
            char tag[64];
            snprintf(tag, sizeof tag, "small path case %d, %d threads vs 1", i, t);
            expect_out_equal(tag, &c, &o, &one);
            free_out(&o);
        }
        cr_assert_eq(nnc_set_threads(1), NNC_OK);
        free_out(&one);
        free_in(&in);
    }
    nnc__conv_set_path(0);
}

/* The level's transpose (weight packing and layout changes of the small path) on every size
 * class: 16x16 blocks (AVX-512), 16-row strips and 8-row strips (AVX), leftover rows and
 * columns, strided rows. */
Test(nn_ops_conv_fast, transpose_at_every_level)
{
    static const int dims[][2] = {{1, 1}, {3, 5}, {8, 8}, {16, 8}, {17, 9}, {24, 31}, {40, 3}, {33, 64}, {16, 16},
                                  {32, 48}, {35, 37}, {64, 17}};
    for (int l = NNC_ISA_GENERIC; l <= (int)nnc__isa_best(); l++) {
        nnc__set_isa((nnc__isa_level)l);
        const conv_kernels *kn = nnc__conv_kernels();
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            int rows = dims[d][0], cols = dims[d][1];
            size_t ld = (size_t)cols + 3, dld = (size_t)rows + 5;
            float *src = malloc(sizeof(float) * (size_t)rows * ld), *dst = malloc(sizeof(float) * (size_t)cols * dld);
            for (size_t i = 0; i < (size_t)rows * ld; i++) src[i] = (float)i;
            for (size_t i = 0; i < (size_t)cols * dld; i++) dst[i] = -1.0f;
            kn->transpose(src, ld, rows, cols, dst, dld);
            int bad = 0;
            for (int j = 0; j < cols; j++)
                for (size_t i = 0; i < dld; i++) {
                    float want = i < (size_t)rows ? src[i * ld + (size_t)j] : -1.0f; /* padding untouched */
                    bad += dst[(size_t)j * dld + i] != want;
                }
            cr_expect_eq(bad, 0, "%s transpose %dx%d: %d wrong values", nnc__isa_name((nnc__isa_level)l), rows, cols, bad);
            free(src);
            free(dst);
        }
    }
    nnc__set_isa(nnc__isa_best());
}
