/* tests/dist/test_flatness.c - Hessian eigenvalues (docs/algorithms.md, "Flatness"): the
 * tridiagonal eigensolver on a matrix with known spectrum, and Lanczos lambda_max against an
 * independent power iteration on the same loss, with the model left unchanged. */
#include "dist/grawa.h"
#include "tests/dist/dist_fixture.h"

Test(dist_flatness, tridiagonal_known_spectrum)
{
    /* T = tridiag(-1, 2, -1) of order n: eigenvalues 2 - 2 cos(k pi / (n + 1)). */
    enum { N = 9 };
    double d[N], e[N];
    for (int i = 0; i < N; i++) d[i] = 2.0, e[i] = -1.0;
    cr_assert_eq(nnc__tridiag_eigenvalues(d, e, N), 0);
    int seen[N] = {0};
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (int k = 1; k <= N; k++) {
            double want = 2.0 - 2.0 * cos(k * M_PI / (N + 1));
            if (!seen[k - 1] && fabs(d[i] - want) < 1e-12) {
                seen[k - 1] = found = 1;
                break;
            }
        }
        cr_assert(found, "eigenvalue %g not in the spectrum", d[i]);
    }
    double one[1] = {3.5}, none[1] = {0};
    cr_assert_eq(nnc__tridiag_eigenvalues(one, none, 1), 0);
    cr_assert_eq(one[0], 3.5);
}

/* Mean cross-entropy gradient over the first S images (train mode, chunks of 64), flat. */
static void grad_at(nnc_model *m, const float *x, const int *y, int S, float *out)
{
    nnc_params *p = nnc_model_params(m);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_params_zero_grad(p);
    for (int at = 0; at < S; at += 64) {
        int n = S - at < 64 ? S - at : 64;
        nnc_graph_reset(g);
        int shape[4] = {n, 1, 8, 8};
        nnc_rng r;
        nnc_rng_seed(&r, 0, 0);
        nnc_tensor *lo = nnc_model_forward(m, g, nnc_tensor_wrap(g, (float *)x + (size_t)at * 64, 4, shape), 1, &r);
        cr_assert_eq(nnc_backward(g, nnc_softmax_cross_entropy(g, lo, y + at, NNC_REDUCE_SUM, 0.0f)), NNC_OK);
    }
    for (size_t j = 0; j < p->n_data; j++) out[j] = p->grad[j] / S;
    nnc_graph_free(g);
}

Test(dist_flatness, lanczos_matches_power_iteration, .timeout = 120)
{
    enum { S = 128 };
    nnc_dataset *d = fx_dataset(S, 3);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 4, &m), NNC_OK);
    nnc_params *p = nnc_model_params(m);
    nnc_params *before;
    cr_assert_eq(nnc_params_clone(p, &before), NNC_OK);
    nnc_hessian_config hc = nnc_hessian_config_default();
    hc.iterations = 30;
    hc.starts = 2;
    hc.samples = S;
    hc.top = 5;
    double lmax, trace;
    cr_assert_eq(nnc_hessian_top(m, d, &hc, &lmax, &trace), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(memcmp(before->data, p->data, p->n_data * sizeof(float)), 0, "parameters restored");
    cr_assert_eq(memcmp(before->buf, p->buf, p->n_buf * sizeof(float)), 0, "BN statistics restored");
    cr_assert_gt(lmax, 0.0);
    cr_assert_geq(trace, lmax, "the top-5 sum includes lambda_max and positive curvature");
    /* Independent power iteration with its own central differences. */
    size_t n = p->n_data;
    float *x = nnc__calloc((size_t)S * 64, sizeof(float)), *w0 = nnc__calloc(n, sizeof(float));
    float *v = nnc__calloc(n, sizeof(float)), *g1 = nnc__calloc(n, sizeof(float)), *g2 = nnc__calloc(n, sizeof(float));
    int y[S];
    uint32_t idx[S];
    for (int i = 0; i < S; i++) idx[i] = (uint32_t)i;
    nnc_dataset_gather(d, idx, S, x, y);
    memcpy(w0, p->data, n * sizeof(float));
    nnc_rng r;
    nnc_rng_seed(&r, 42, 0);
    for (int t = 0; t < p->count; t++)
        if (!(p->entries[t].flags & NNC_PARAM_BUFFER))
            for (size_t j = 0; j < p->entries[t].numel; j++) v[p->entries[t].offset + j] = nnc_rng_normal(&r);
    double lambda = 0.0, eps = 1e-3;
    for (int it = 0; it < 150; it++) {
        double nv = 0.0;
        for (size_t j = 0; j < n; j++) nv += (double)v[j] * v[j];
        nv = sqrt(nv);
        for (size_t j = 0; j < n; j++) v[j] = (float)(v[j] / nv);
        for (size_t j = 0; j < n; j++) p->data[j] = (float)(w0[j] + eps * v[j]);
        grad_at(m, x, y, S, g1);
        for (size_t j = 0; j < n; j++) p->data[j] = (float)(w0[j] - eps * v[j]);
        grad_at(m, x, y, S, g2);
        lambda = 0.0;
        for (size_t j = 0; j < n; j++) {
            float hv = (float)(((double)g1[j] - g2[j]) / (2 * eps));
            lambda += (double)hv * v[j];
            v[j] = hv;
        }
    }
    cr_assert_float_eq(lmax, lambda, 0.03 * lmax, "Lanczos %g vs power iteration %g", lmax, lambda);
    cr_log_info("lambda_max: Lanczos %g, power iteration %g; top-5 sum %g", lmax, lambda, trace);
    nnc__free(x);
    nnc__free(w0);
    nnc__free(v);
    nnc__free(g1);
    nnc__free(g2);
    nnc_params_free(before);
    nnc_model_free(m);
    fx_dataset_free(d);
}

Test(dist_flatness, bad_config)
{
    nnc_dataset *d = fx_dataset(16, 3);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 4, &m), NNC_OK);
    nnc_hessian_config hc = nnc_hessian_config_default();
    hc.eps = 0.0;
    double a, b;
    cr_assert_eq(nnc_hessian_top(m, d, &hc, &a, &b), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "eps 0 > 0"), "%s", nnc_error_message());
    nnc_model_free(m);
    fx_dataset_free(d);
}
