/* tests/models/test_infer.c - nnc_model_forward_infer (models/infer.c), the inference path of
 * eval, predict and bench: batch norm folded into the convolutions.
 *
 * Every model gets random BN parameters and running statistics (and random conv biases where it
 * has them), so the fold is not the identity it is on a fresh model.
 *
 * Error bound (derivation). Write the network as layers y' = relu(W y + b) (conv + BN folded, or
 * linear), residual adds y = y1 + y2, average/max pools and option-A shortcuts. Take the
 * "absolute network" a' = |W| a + |b| on a_0 = |x|, without ReLU (|relu(t)| <= |t|), adding
 * residuals as a1 + a2: then |y| <= a at every layer. If each layer's computed value differs
 * from its exact value on the computed input by at most d (|W||y~| + |b|) (d the relative error
 * of one dot product), induction over layers gives
 *     |y~_l - y_l| <= ((1 + d)^l - 1) a_l
 * (|W| e + d |W| (a + e) + d |b| <= ((1 + d)^(l+1) - 1)(|W| a + |b|) when e <= ((1 + d)^l - 1) a;
 * residual adds and pools keep it, ReLU and max are 1-Lipschitz), l the number of conv and
 * linear layers on the path (we take all of them, L). FP32 dot products of m terms plus the
 * fold's rounding of W * s and b', the unfolded path's epilogue multiply-add and a residual add
 * are sums of at most m + 6 roundings: d32 = g(m + 6) + v, g(n) = n v / (1 - n v), v = 2^-24.
 * BF16 operands (u = 2^-8 each, products exact in FP32, accumulation FP32) add 2u + u^2:
 * d16 = 2u + u^2 + g(m + 6)(1 + 2u + u^2) (as tests/nn/test_bf16.c derives per layer). The
 * folded and the unfolded FP32 forwards are two computations of the same exact network, so
 *     |folded - unfolded| <= 2 ((1 + d32)^L - 1) a_L,
 * and BF16 inference against the unfolded FP32 forward is within
 *     ((1 + d16)^L - 1 + (1 + d32)^L - 1) a_L,
 * m the largest reduction (C*R*S or features) of the model. a_L is computed by the inference
 * forward itself on a copy of the model holding |W'| (with BN scale exactly 1) and |b'| as BN
 * shift, in FP32 (its own rounding is far below the slack: the bound is scaled by 1 + 2^-10).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/layers.h"
#include "nn/nnc.h"

typedef struct net {
    nnc_model *m;
    int size, batch, L, mmax;
    float *x;
} net;

/* The model with random BN parameters/statistics and conv biases; L and the largest reduction. */
static net make_net(const char *name, int size, int batch)
{
    net n = {NULL, size, batch, 0, 0, NULL};
    nnc_model_config cfg = nnc_model_config_default();
    cfg.image_size = size;
    cr_assert_eq(nnc_model_new(name, &cfg, 5, &n.m), NNC_OK);
    nnc_params *p = nnc_model_params(n.m);
    nnc_rng r;
    nnc_rng_seed(&r, 9, 0);
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        float *d = nnc_params_ptr(p, i);
        const char *dot = strrchr(e->name, '.');
        const char *leaf = dot ? dot + 1 : e->name;
        for (size_t j = 0; j < e->numel; j++) {
            float z = nnc_rng_uniform(&r);
            if (!strcmp(leaf, "running_var")) d[j] = 0.25f + 1.5f * z;
            else if (!strcmp(leaf, "running_mean")) d[j] = 0.4f * (2 * z - 1);
            else if (e->ndim == 1 && !strcmp(leaf, "weight")) d[j] = 0.5f + z; /* gamma */
            else if (!strcmp(leaf, "bias")) d[j] = 0.2f * (2 * z - 1);
            if (e->ndim >= 2) { /* conv / linear weight: count layers and reductions */
                int m = (int)(e->numel / (size_t)e->shape[0]);
                if (j == 0) n.L++, n.mmax = m > n.mmax ? m : n.mmax;
            }
        }
    }
    size_t nx = (size_t)batch * 3 * size * size;
    n.x = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) n.x[i] = nnc_rng_normal(&r);
    return n;
}

static void free_net(net *n)
{
    nnc_model_free(n->m);
    free(n->x);
}

/* Logits of x (copied out) by the inference forward (infer 1) or the eval-mode nnc_model_forward
 * with grad on (infer 0: unsliced, BN applied as scale and shift, no fold). */
static float *logits(nnc_model *m, const float *x, int batch, int size, int infer, size_t *numel)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int shape[4] = {batch, 3, size, size};
    nnc_tensor *in = nnc_tensor_wrap(g, (float *)x, 4, shape);
    nnc_tensor *y = infer ? nnc_model_forward_infer(m, g, in) : nnc_model_forward(m, g, in, 0, NULL);
    cr_assert(nnc_graph_num_nodes(g) == 0 || !infer, "the inference forward recorded %d nodes", nnc_graph_num_nodes(g));
    float *out = malloc(y->numel * sizeof(float));
    memcpy(out, y->data, y->numel * sizeof(float));
    *numel = y->numel;
    nnc_graph_free(g);
    return out;
}

/* a_L (see the top): a copy of the model with every conv's folded |W'| and |b'| (as a BN of
 * scale exactly 1: gamma 1, mean 0, var 1 - eps; conv bias 0), linear |W|, |b|, on |x|. */
static float *abs_logits(const net *n, size_t *numel)
{
    nnc_model *a;
    cr_assert_eq(nnc_model_clone(n->m, &a), NNC_OK);
    nnc_params *p = n->m->params, *q = a->params;
    for (int i = 0; i < n->m->nlayers; i++) {
        const nnc__layer *l = &n->m->layers[i];
        if (l->kind != NNC__L_CONV && l->kind != NNC__L_LINEAR) continue;
        const nnc_param_entry *we = &p->entries[l->p[0]];
        const int K = we->shape[0];
        const size_t per = we->numel / (size_t)K;
        const float *w = nnc_params_ptr(p, l->p[0]), *b = l->p[1] >= 0 ? nnc_params_ptr(p, l->p[1]) : NULL;
        float *wa = nnc_params_ptr(q, l->p[0]), *ba = l->p[1] >= 0 ? nnc_params_ptr(q, l->p[1]) : NULL;
        const nnc__layer *bn = l->kind == NNC__L_CONV && i + 1 < n->m->nlayers && l[1].kind == NNC__L_BN ? l + 1 : NULL;
        for (int k = 0; k < K; k++) {
            float s = 1.0f, sh = b ? b[k] : 0.0f;
            if (bn) { /* the fold of models/infer.c */
                const float *gm = nnc_params_ptr(p, bn->p[0]), *bt = nnc_params_ptr(p, bn->p[1]);
                const float *mu = nnc_params_ptr(p, bn->p[2]), *var = nnc_params_ptr(p, bn->p[3]);
                s = gm[k] * (float)(1.0 / sqrt((double)var[k] + (double)1e-5f));
                sh = bt[k] + ((b ? b[k] : 0.0f) - mu[k]) * s;
                nnc_params_ptr(q, bn->p[0])[k] = 1.0f;
                nnc_params_ptr(q, bn->p[1])[k] = fabsf(sh);
                nnc_params_ptr(q, bn->p[2])[k] = 0.0f;
                nnc_params_ptr(q, bn->p[3])[k] = (float)(1.0 - 1e-5);
                cr_assert_eq((float)(1.0 / sqrt((double)(float)(1.0 - 1e-5) + (double)1e-5f)), 1.0f);
                if (ba) ba[k] = 0.0f;
            } else if (ba) {
                ba[k] = fabsf(sh);
            }
            for (size_t j = 0; j < per; j++) wa[(size_t)k * per + j] = fabsf(w[(size_t)k * per + j] * s);
        }
    }
    size_t nx = (size_t)n->batch * 3 * n->size * n->size;
    float *ax = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) ax[i] = fabsf(n->x[i]);
    float *out = logits(a, ax, n->batch, n->size, 1, numel);
    free(ax);
    nnc_model_free(a);
    return out;
}

static double gfac(double k) { return k * 0x1p-24 / (1 - k * 0x1p-24); }

/* Relative factors of the bound (see the top) for L layers and largest reduction m. */
static double fp32_factor(int L, int m) { return pow(1 + gfac(m + 6) + 0x1p-24, L) - 1; }
static double bf16_factor(int L, int m)
{
    const double u = 0x1p-8;
    return pow(1 + 2 * u + u * u + gfac(m + 6) * (1 + 2 * u + u * u), L) - 1;
}

/* Values of got outside ref +- f * a; returns their count, worst |got - ref| / (f a) in *worst. */
static size_t outside(const float *got, const float *ref, const float *a, size_t n, double f, double *worst)
{
    size_t bad = 0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double bnd = f * a[i] * (1 + 0x1p-10) + 1e-30, e = fabs((double)got[i] - ref[i]);
        if (e / bnd > *worst) *worst = e / bnd;
        bad += !(e <= bnd);
    }
    return bad;
}

/* Folded FP32 inference against the unfolded eval forward: within the bound, same argmax where
 * the reference's top two are further apart than twice the bound. */
static void check_fold(const char *name, int size, int batch)
{
    net n = make_net(name, size, batch);
    size_t nr, nf, na;
    float *ref = logits(n.m, n.x, batch, size, 0, &nr);
    float *got = logits(n.m, n.x, batch, size, 1, &nf);
    float *a = abs_logits(&n, &na);
    cr_assert(nr == nf && nr == na);
    const double f = 2 * fp32_factor(n.L, n.mmax);
    double worst;
    size_t bad = outside(got, ref, a, nr, f, &worst);
    cr_expect_eq(bad, 0, "%s: %zu of %zu folded logits outside the bound (worst %.3g of it)", name, bad, nr, worst);
    /* predictions on this fixed batch: the same on every image (the rounding differences, about
     * 1e-6 of the logits, are far below the gaps between a random model's top two logits) */
    const int K = (int)(nr / (size_t)batch);
    for (int i = 0; i < batch; i++) {
        const float *r = ref + (size_t)i * K, *o = got + (size_t)i * K;
        int ar = 0, ao = 0;
        for (int k = 1; k < K; k++) {
            if (r[k] > r[ar]) ar = k;
            if (o[k] > o[ao]) ao = k;
        }
        cr_expect_eq(ao, ar, "%s image %d: folded argmax %d, unfolded %d", name, i, ao, ar);
    }
    cr_log_info("%s: folded vs unfolded worst error %.3g of the bound", name, worst);
    /* the derived bound grows with the absolute network and is loose for deep models, so also an
     * empirical one: float rounding only, within 1e-4 of the logits' scale (measured: about 1e-6) */
    double e = 0, sc = 0;
    for (size_t i = 0; i < nr; i++) e = fmax(e, fabs((double)got[i] - ref[i])), sc = fmax(sc, fabs((double)ref[i]));
    cr_expect_leq(e, 1e-4 * sc, "%s: folded logits %.3g from the unfolded ones (scale %.3g)", name, e, sc);
    free(ref);
    free(got);
    free(a);
    free_net(&n);
}

Test(models_infer_fold, fp32_fold_matches_unfolded_eval_within_bound, .timeout = 120)
{
    check_fold("resnet20", 32, 12);  /* sliced (12 > 8), residual epilogues, option-A shortcuts */
    check_fold("vgg11", 32, 4);      /* conv biases folded, max pools, linear classifier */
    check_fold("tiny", 32, 9);
}

Test(models_infer_fold, bf16_inference_within_bound_of_fp32, .timeout = 120)
{
    if (!nnc_precision_bf16_available()) cr_skip_test("no AVX512_BF16 on this CPU");
    net n = make_net("resnet20", 32, 9);
    size_t nr, ng, na;
    float *ref = logits(n.m, n.x, 9, 32, 0, &nr);
    float *a = abs_logits(&n, &na);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_BF16), NNC_OK);
    float *got = logits(n.m, n.x, 9, 32, 1, &ng);
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
    cr_assert(nr == ng && nr == na);
    const double f = bf16_factor(n.L, n.mmax) + fp32_factor(n.L, n.mmax);
    double worst;
    size_t bad = outside(got, ref, a, nr, f, &worst);
    cr_expect_eq(bad, 0, "%zu of %zu BF16 logits outside the bound (worst %.3g of it)", bad, nr, worst);
    double e = 0;
    for (size_t i = 0; i < nr; i++) e = fmax(e, fabs((double)got[i] - ref[i]));
    cr_expect_gt(e, 0.0, "BF16 inference equals FP32 bit for bit: BF16 not used?");
    /* empirical, as in the FP32 test (the derived bound is loose for a 20-layer model): BF16's
     * 2^-8 operand rounding moves the logits by a few percent of their scale at most */
    double sc = 0;
    for (size_t i = 0; i < nr; i++) sc = fmax(sc, fabs((double)ref[i]));
    cr_expect_leq(e, 0.05 * sc, "BF16 logits %.3g from FP32 (scale %.3g)", e, sc);
    cr_log_info("bf16: worst %.3g of the derived bound, %.3g of the logits' scale", worst, e / sc);
    free(ref);
    free(got);
    free(a);
    free_net(&n);
}

Test(models_infer_fold, bitwise_equal_for_1_2_4_threads, .timeout = 120)
{
    for (int prec = 0; prec < 2; prec++) {
        if (prec && !nnc_precision_bf16_available()) break;
        cr_assert_eq(nnc_set_precision(prec ? NNC_PRECISION_BF16 : NNC_PRECISION_FP32), NNC_OK);
        const char *names[2] = {"resnet20", "vgg11"};
        for (int mi = 0; mi < 2; mi++) {
            net n = make_net(names[mi], 32, 11);
            float *y1 = NULL;
            size_t n1 = 0;
            int threads[3] = {1, 2, 4};
            for (int t = 0; t < 3; t++) {
                cr_assert_eq(nnc_set_threads(threads[t]), NNC_OK);
                size_t nt;
                float *yt = logits(n.m, n.x, 11, 32, 1, &nt);
                if (!y1) {
                    y1 = yt;
                    n1 = nt;
                    continue;
                }
                cr_expect(nt == n1 && memcmp(yt, y1, nt * sizeof(float)) == 0, "%s %s: logits differ with %d threads",
                          names[mi], prec ? "bf16" : "fp32", threads[t]);
                free(yt);
            }
            cr_assert_eq(nnc_set_threads(1), NNC_OK);
            free(y1);
            free_net(&n);
        }
    }
    cr_assert_eq(nnc_set_precision(NNC_PRECISION_FP32), NNC_OK);
}

/* The fold follows the parameters: after a change, the next call sees it (rebuilt per call). */
Test(models_infer_fold, fold_rebuilt_after_a_parameter_change)
{
    net n = make_net("resnet8", 16, 3);
    size_t n0, n1, nr;
    float *y0 = logits(n.m, n.x, 3, 16, 1, &n0);
    nnc_params *p = n.m->params;
    for (int i = 0; i < n.m->nlayers; i++)
        if (n.m->layers[i].kind == NNC__L_BN) nnc_params_ptr(p, n.m->layers[i].p[2])[0] += 0.5f; /* running mean */
    float *y1 = logits(n.m, n.x, 3, 16, 1, &n1);
    float *ref = logits(n.m, n.x, 3, 16, 0, &nr);
    cr_expect(memcmp(y0, y1, n0 * sizeof(float)) != 0, "new running statistics not seen");
    double e = 0, s = 0;
    for (size_t i = 0; i < nr; i++) e = fmax(e, fabs((double)y1[i] - ref[i])), s = fmax(s, fabs((double)ref[i]));
    cr_expect_leq(e, 1e-4 * s, "after the change: inference %g from the eval forward", e);
    free(y0);
    free(y1);
    free(ref);
    free_net(&n);
}
