/* tests/dist/test_grawa.c - GRAWA math: weights, EMA, centers (model and per layer), pulls,
 * invariants (weights inversely proportional to gradient norms, identical workers and pull 0 or 1
 * as fixed points, equal norms give the plain mean, a zero gradient norm gives a finite weight),
 * EASGD/LSGD/SAM helpers, the in-process transport. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "dist/grawa.h"
#include "dist/transport.h"
#include "nn/nnc.h"

/* Two layers: "a" (3 floats) and "b" (2 floats) plus a buffer (not trained). */
static nnc_params *two_layers(void)
{
    nnc_params *p;
    cr_assert_eq(nnc_params_new(&p), NNC_OK);
    int sa[1] = {3}, sb[1] = {2}, sc[1] = {4};
    cr_assert_geq(nnc_params_add(p, "a", 1, sa, 0), 0);
    cr_assert_geq(nnc_params_add(p, "bn.mean", 1, sc, NNC_PARAM_BUFFER), 0);
    cr_assert_geq(nnc_params_add(p, "b", 1, sb, 0), 0);
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    return p;
}

static void fill(nnc_params *p, const float *a, const float *b)
{
    memcpy(nnc_params_ptr(p, 0), a, 3 * sizeof(float));
    memcpy(nnc_params_ptr(p, 2), b, 2 * sizeof(float));
}

Test(dist_grawa, weights_from_norms)
{
    double n[3] = {1, 2, 4}, w[3];
    cr_assert_eq(nnc__grawa_weights(n, NULL, 3, w), 3);
    cr_assert_float_eq(w[0], 4.0 / 7, 1e-12);
    cr_assert_float_eq(w[1], 2.0 / 7, 1e-12);
    cr_assert_float_eq(w[2], 1.0 / 7, 1e-12);
}

Test(dist_grawa, center_model_level)
{
    nnc_params *p[3];
    float a[3][3] = {{1, 2, 3}, {-1, 0.5f, 8}, {10, -4, 0.25f}};
    float b[3][2] = {{7, -7}, {0.125f, 3}, {-2, 1}};
    const float *x[3];
    for (int i = 0; i < 3; i++) {
        p[i] = two_layers();
        fill(p[i], a[i], b[i]);
        x[i] = p[i]->data;
    }
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(p[0], &ly), NNC_OK);
    cr_assert_eq(ly.L, 2);
    double n[3] = {1, 2, 4}, u[3], acc[64], usum[2];
    cr_assert_leq(ly.n, 64);
    nnc__grawa_inv_weights(n, NULL, 3, u);
    nnc_transport *t;
    cr_assert_eq(nnc__transport_local_new(&t), NNC_OK);
    float *c = nnc__calloc(ly.n, sizeof(float));
    cr_assert_eq(nnc__transport_center(t, &ly, x, u, 3, 0, acc, usum, c), NNC_OK);
    double w[3] = {4.0 / 7, 2.0 / 7, 1.0 / 7};
    const float *ca = c + ly.off[0], *cb = c + ly.off[1];
    for (int j = 0; j < 3; j++)
        cr_assert_float_eq(ca[j], w[0] * a[0][j] + w[1] * a[1][j] + w[2] * a[2][j], 1e-6);
    for (int j = 0; j < 2; j++)
        cr_assert_float_eq(cb[j], w[0] * b[0][j] + w[1] * b[1][j] + w[2] * b[2][j], 1e-6);
    nnc__free(c);
    nnc__transport_free(t);
    nnc__grawa_layers_free(&ly);
    for (int i = 0; i < 3; i++) nnc_params_free(p[i]);
}

Test(dist_grawa, center_per_layer)
{
    nnc_params *p[3];
    float a[3][3] = {{1, 2, 3}, {-1, 0.5f, 8}, {10, -4, 0.25f}};
    float b[3][2] = {{7, -7}, {0.125f, 3}, {-2, 1}};
    const float *x[3];
    for (int i = 0; i < 3; i++) {
        p[i] = two_layers();
        fill(p[i], a[i], b[i]);
        x[i] = p[i]->data;
    }
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(p[0], &ly), NNC_OK);
    /* layer a norms [1,2,4], layer b norms [4,1,1]. */
    double na[3] = {1, 2, 4}, nb[3] = {4, 1, 1}, ua[3], ub[3], u[6], acc[64], usum[2];
    nnc__grawa_inv_weights(na, NULL, 3, ua);
    nnc__grawa_inv_weights(nb, NULL, 3, ub);
    for (int i = 0; i < 3; i++) {
        u[i * 2 + 0] = ua[i];
        u[i * 2 + 1] = ub[i];
    }
    nnc_transport *t;
    cr_assert_eq(nnc__transport_local_new(&t), NNC_OK);
    float c[64];
    cr_assert_eq(nnc__transport_center(t, &ly, x, u, 3, 1, acc, usum, c), NNC_OK);
    double wa[3] = {4.0 / 7, 2.0 / 7, 1.0 / 7}, wb[3] = {1.0 / 9, 4.0 / 9, 4.0 / 9};
    for (int j = 0; j < 3; j++)
        cr_assert_float_eq(c[ly.off[0] + j], wa[0] * a[0][j] + wa[1] * a[1][j] + wa[2] * a[2][j], 1e-6);
    for (int j = 0; j < 2; j++)
        cr_assert_float_eq(c[ly.off[1] + j], wb[0] * b[0][j] + wb[1] * b[1][j] + wb[2] * b[2][j], 1e-6);
    nnc__transport_free(t);
    nnc__grawa_layers_free(&ly);
    for (int i = 0; i < 3; i++) nnc_params_free(p[i]);
}

Test(dist_grawa, layer_norms_sum_and_global)
{
    nnc_params *p = two_layers();
    float ga[3] = {3, 4, 0}, gb[2] = {0, -2};
    memcpy(p->grad + p->entries[0].offset, ga, sizeof ga);
    memcpy(p->grad + p->entries[2].offset, gb, sizeof gb);
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(p, &ly), NNC_OK);
    double n[2];
    nnc__grawa_layer_norms(&ly, p->grad, n);
    cr_assert_float_eq(n[0], 5.0, 1e-12);
    cr_assert_float_eq(n[1], 2.0, 1e-12);
    cr_assert_float_eq(nnc__grawa_model_norm(n, 2, NNC_NORM_SUM_LAYERS), 7.0, 1e-12);
    cr_assert_float_eq(nnc__grawa_model_norm(n, 2, NNC_NORM_GLOBAL_L2), sqrt(29.0), 1e-12);
    nnc__grawa_layers_free(&ly);
    nnc_params_free(p);
}

Test(dist_grawa, ema_bias_correction)
{
    double b = pow(0.9, 8), m = 0;
    cr_assert_float_eq(NNC_GRAWA_BETA, b, 1e-15);
    /* First update: m = (1-b) n, corrected = n exactly. */
    double e1 = nnc__grawa_ema(&m, 3.0, 1);
    cr_assert_float_eq(e1, 3.0, 1e-12);
    cr_assert_float_eq(m, (1 - b) * 3.0, 1e-12);
    /* Second: m = b(1-b)3 + (1-b)5, corrected by 1 - b^2. */
    double want = (b * (1 - b) * 3.0 + (1 - b) * 5.0) / (1 - b * b);
    double e2 = nnc__grawa_ema(&m, 5.0, 2);
    cr_assert_float_eq(e2, want, 1e-12);
    /* A constant input stays constant after correction. */
    double m2 = 0;
    for (long k = 1; k <= 10; k++) {
        double e = nnc__grawa_ema(&m2, 2.5, k);
        cr_assert_float_eq(e, 2.5, 1e-12);
    }
}

Test(dist_grawa, zero_norm_and_nonfinite)
{
    double n[4] = {0.0, 1.0, NAN, INFINITY}, w[4];
    cr_assert_eq(nnc__grawa_weights(n, NULL, 4, w), 2);
    for (int i = 0; i < 4; i++) cr_assert(isfinite(w[i]));
    cr_assert_eq(w[2], 0.0);
    cr_assert_eq(w[3], 0.0);
    cr_assert_gt(w[0], 0.999999);
    cr_assert_float_eq(w[0] + w[1], 1.0, 1e-12);
    int ok[2] = {1, 0};
    double n2[2] = {2, 2}, w2[2];
    cr_assert_eq(nnc__grawa_weights(n2, ok, 2, w2), 1);
    cr_assert_eq(w2[0], 1.0);
    cr_assert_eq(w2[1], 0.0);
    double n3[2] = {NAN, NAN}, w3[2];
    cr_assert_eq(nnc__grawa_weights(n3, NULL, 2, w3), 0);
    cr_assert_eq(w3[0], 0.0);
}

Test(dist_grawa, invariants)
{
    nnc_params *p[3];
    float a[3] = {0.1f, -3.7f, 1e-3f}, b[2] = {123.456f, -0.0078125f};
    const float *x[3];
    for (int i = 0; i < 3; i++) {
        p[i] = two_layers();
        fill(p[i], a, b);
        x[i] = p[i]->data;
    }
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(p[0], &ly), NNC_OK);
    double n[3] = {0.3, 7, 1.1}, u[3], acc[64], usum[1];
    nnc__grawa_inv_weights(n, NULL, 3, u);
    nnc_transport *t;
    cr_assert_eq(nnc__transport_local_new(&t), NNC_OK);
    float c[64];
    cr_assert_eq(nnc__transport_center(t, &ly, x, u, 3, 0, acc, usum, c), NNC_OK);
    cr_assert_eq(memcmp(c, p[0]->data, ly.n * sizeof(float)), 0, "identical workers -> center = workers");
    float before[64];
    memcpy(before, p[1]->data, ly.n * sizeof(float));
    nnc__grawa_pull(p[1]->data, c, 0.5, ly.n);
    cr_assert_eq(memcmp(before, p[1]->data, ly.n * sizeof(float)), 0, "pull toward itself is a no-op");
    /* Different center: c = 0 unchanged, c = 1 equals the center. */
    for (size_t j = 0; j < ly.n; j++) c[j] = c[j] * 3.0f + 1.0f;
    nnc__grawa_pull(p[1]->data, c, 0.0, ly.n);
    cr_assert_eq(memcmp(before, p[1]->data, ly.n * sizeof(float)), 0);
    nnc__grawa_pull(p[1]->data, c, 1.0, ly.n);
    cr_assert_eq(memcmp(c, p[1]->data, ly.n * sizeof(float)), 0);
    /* In between: the convex combination. */
    float y[2] = {1, 3}, cc[2] = {3, -1};
    nnc__grawa_pull(y, cc, 0.25, 2);
    cr_assert_float_eq(y[0], 1.5f, 1e-7);
    cr_assert_float_eq(y[1], 2.0f, 1e-7);
    nnc__transport_free(t);
    nnc__grawa_layers_free(&ly);
    for (int i = 0; i < 3; i++) nnc_params_free(p[i]);
}

Test(dist_grawa, equal_norms_give_plain_mean)
{
    enum { M = 5 };
    nnc_params *p[M];
    const float *x[M];
    nnc_rng r;
    nnc_rng_seed(&r, 7, 0);
    for (int i = 0; i < M; i++) {
        p[i] = two_layers();
        for (size_t j = 0; j < p[i]->n_data; j++) p[i]->data[j] = nnc_rng_normal(&r);
        x[i] = p[i]->data;
    }
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(p[0], &ly), NNC_OK);
    double n[M], u[M], acc[64], usum[1];
    for (int i = 0; i < M; i++) n[i] = 0.75;
    nnc__grawa_inv_weights(n, NULL, M, u);
    nnc_transport *t;
    cr_assert_eq(nnc__transport_local_new(&t), NNC_OK);
    float c[64];
    cr_assert_eq(nnc__transport_center(t, &ly, x, u, M, 0, acc, usum, c), NNC_OK);
    for (int l = 0; l < ly.L; l++)
        for (size_t j = ly.off[l]; j < ly.off[l] + ly.len[l]; j++) {
            float mean = 0;
            for (int i = 0; i < M; i++) mean += x[i][j];
            mean /= M;
            float tol = M * nextafterf(fabsf(mean), INFINITY) - M * fabsf(mean);
            cr_assert_float_eq(c[j], mean, tol + 1e-30f, "element %zu", j);
        }
    nnc__transport_free(t);
    nnc__grawa_layers_free(&ly);
    for (int i = 0; i < M; i++) nnc_params_free(p[i]);
}

Test(dist_grawa, easgd_lsgd_sam)
{
    float c[2] = {1, 2}, mean[2] = {3, 4};
    nnc__easgd_center(c, mean, 0.1, 2);
    cr_assert_float_eq(c[0], 1.2f, 1e-6);
    cr_assert_float_eq(c[1], 2.2f, 1e-6);

    nnc_lsgd_hist h[3];
    memset(h, 0, sizeof h);
    double l0[5] = {9, 1, 1, 1, 1}, l1[5] = {1, 2, 2, 2, 2}, l2[2] = {5, NAN};
    for (int k = 0; k < 5; k++) {
        nnc__lsgd_push(&h[0], l0[k]);
        nnc__lsgd_push(&h[1], l1[k]);
    }
    for (int k = 0; k < 2; k++) nnc__lsgd_push(&h[2], l2[k]);
    cr_assert_float_eq(nnc__lsgd_mean(&h[0]), 1.0, 1e-12, "only the last 4 losses count");
    cr_assert_float_eq(nnc__lsgd_mean(&h[1]), 2.0, 1e-12);
    cr_assert(isinf(nnc__lsgd_mean(&h[2])));
    cr_assert_eq(nnc__lsgd_leader(h, NULL, 3), 0);
    int ok[3] = {0, 1, 1};
    cr_assert_eq(nnc__lsgd_leader(h, ok, 3), 1);

    float w[2] = {1, 1}, g[2] = {3, 4}, saved[2];
    double gn = nnc__sam_perturb(w, g, saved, 0.05, 2);
    cr_assert_float_eq(gn, 5.0, 1e-12);
    cr_assert_float_eq(w[0], 1.0f + 0.05f * 0.6f, 1e-7);
    cr_assert_float_eq(w[1], 1.0f + 0.05f * 0.8f, 1e-7);
    cr_assert_eq(saved[0], 1.0f);
    float z[2] = {0, 0};
    double zn = nnc__sam_perturb(w, z, saved, 0.05, 2);
    cr_assert_eq(zn, 0.0);
    cr_assert_eq(memcmp(w, saved, sizeof w), 0, "zero gradient: no perturbation");
    cr_assert_float_eq(nnc__grawa_distance(g, z, 2), 5.0, 1e-12);
}
