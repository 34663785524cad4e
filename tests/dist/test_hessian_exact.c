/* tests/dist/test_hessian_exact.c - Lanczos lambda_max / top-k sums and Hutchinson's trace
 * (dist/flatness.c) against a Hessian known in closed form.
 *
 * The model is tiny-linear (softmax regression, logits z = W x + b) on 1x4x4 images, 4 classes:
 * 4 x 16 + 4 = 68 parameters. Its mean cross-entropy over N images has the Hessian
 *   H = (1/N) sum_n (diag(p_n) - p_n p_n^T) (x) [x_n; 1][x_n; 1]^T     (Kronecker product),
 * computed here in double from the model's own parameters. Its eigenvalues come from a cyclic
 * Jacobi eigenvalue routine, so the reference shares no code with the library's estimators. */
#include <float.h>

#include "tests/dist/dist_fixture.h"

enum { K = 4, S = 4, D = S * S, P = K * (D + 1), N = 40 };

/* N images 1x4x4 of K classes: noise plus a brighter pixel pair per class. */
static nnc_dataset *small_dataset(uint64_t seed)
{
    nnc_dataset *d = nnc__calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = N, d->c = 1, d->h = S, d->w = S, d->num_classes = K;
    d->images = nnc__calloc((size_t)N * D, 1);
    d->labels = nnc__calloc((size_t)N, sizeof(int));
    d->mean[0] = 0.4f;
    d->std[0] = 0.3f;
    nnc_rng r;
    nnc_rng_seed(&r, seed, 7);
    for (int i = 0; i < N; i++) {
        d->labels[i] = (int)nnc_rng_below(&r, K);
        for (int j = 0; j < D; j++)
            d->images[(size_t)i * D + j] = (uint8_t)(nnc_rng_below(&r, 150) + (j / 4 == d->labels[i] ? 100 : 0));
    }
    return d;
}

/* Eigenvalues of the symmetric n x n matrix a (destroyed) into ev, by cyclic Jacobi rotations. */
static void jacobi_eigenvalues(double *a, int n, double *ev)
{
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                if (i == j)
                    diag += a[i * n + j] * a[i * n + j];
                else
                    off += a[i * n + j] * a[i * n + j];
            }
        if (off <= 1e-26 * diag) break;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++) ev[i] = a[i * n + i];
    for (int i = 1; i < n; i++) /* descending */
        for (int j = i; j > 0 && ev[j] > ev[j - 1]; j--) {
            double t = ev[j];
            ev[j] = ev[j - 1];
            ev[j - 1] = t;
        }
}

typedef struct exact {
    double H[P * P];   /* index k*(D+1)+d for W[k][d] (d < D), k*(D+1)+D for b[k] */
    double ev[P], trace, frob2, diag2;
} exact;

/* The closed-form Hessian at m's parameters; also checks the model computes z = W x + b with the
 * layout assumed here (weight [K][D] row-major, bias [K]). */
static void exact_hessian(nnc_model *m, const nnc_dataset *d, exact *e)
{
    nnc_params *p = nnc_model_params(m);
    const float *W = NULL, *b = NULL;
    for (int t = 0; t < p->count; t++) {
        if (!strcmp(p->entries[t].name, "fc.weight")) {
            cr_assert(p->entries[t].numel == (size_t)K * D && p->entries[t].shape[0] == K);
            W = p->data + p->entries[t].offset;
        }
        if (!strcmp(p->entries[t].name, "fc.bias")) b = p->data + p->entries[t].offset;
    }
    cr_assert(W && b, "tiny-linear has fc.weight and fc.bias");
    cr_assert_eq(nnc_params_num_scalars(p), (size_t)P);
    static float x[N * D];
    int y[N];
    uint32_t idx[N];
    for (int i = 0; i < N; i++) idx[i] = (uint32_t)i;
    nnc_dataset_gather(d, idx, N, x, y);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int shape[4] = {N, 1, S, S};
    nnc_rng dr;
    nnc_rng_seed(&dr, 0, 0);
    nnc_tensor *lo = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 1, &dr);
    memset(e, 0, sizeof *e);
    for (int n = 0; n < N; n++) {
        double z[K], pr[K], zmax = -INFINITY, sum = 0.0, xt[D + 1];
        for (int j = 0; j < D; j++) xt[j] = x[n * D + j];
        xt[D] = 1.0;
        for (int k = 0; k < K; k++) {
            z[k] = b[k];
            for (int j = 0; j < D; j++) z[k] += (double)W[k * D + j] * xt[j];
            cr_assert_float_eq(z[k], lo->data[n * K + k], 1e-4, "logit %d of image %d: %g vs model %g", k, n, z[k],
                               lo->data[n * K + k]);
            if (z[k] > zmax) zmax = z[k];
        }
        for (int k = 0; k < K; k++) sum += pr[k] = exp(z[k] - zmax);
        for (int k = 0; k < K; k++) pr[k] /= sum;
        for (int k = 0; k < K; k++)
            for (int l = 0; l < K; l++) {
                double a = (k == l ? pr[k] : 0.0) - pr[k] * pr[l];
                for (int i = 0; i <= D; i++)
                    for (int j = 0; j <= D; j++) e->H[(k * (D + 1) + i) * P + l * (D + 1) + j] += a * xt[i] * xt[j] / N;
            }
    }
    nnc_graph_free(g);
    for (int i = 0; i < P; i++) {
        e->trace += e->H[i * P + i];
        e->diag2 += e->H[i * P + i] * e->H[i * P + i];
        for (int j = 0; j < P; j++) e->frob2 += e->H[i * P + j] * e->H[i * P + j];
    }
    static double a[P * P];
    memcpy(a, e->H, sizeof a);
    jacobi_eigenvalues(a, P, e->ev);
}

/* A model away from the symmetric start (uneven class probabilities). */
static nnc_model *linear_model(void)
{
    nnc_model_config mc = {.in_channels = 1, .image_size = S, .num_classes = K};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny-linear", &mc, 3, &m), NNC_OK, "%s", nnc_error_message());
    nnc_params *p = nnc_model_params(m);
    nnc_rng r;
    nnc_rng_seed(&r, 11, 0);
    for (size_t j = 0; j < p->n_data; j++) p->data[j] = 0.4f * nnc_rng_normal(&r);
    return m;
}

/* Tolerance of a Hessian-vector product. Hv is a central difference of float gradients,
 * (g(w + eps v) - g(w - eps v)) / (2 eps). A gradient component is a mean over images of
 * (p_k - y_k) x_d with |p_k - y_k| <= 1 and |x_d| <= (1 - 0.4) / 0.3 = 2 (normalised pixels), so
 * it is at most G = 2 and rounded to about u * G (u = FLT_EPSILON); each component of Hv is then
 * off by about u * G / eps, the vector by at most sqrt(P) times that, and so is a Rayleigh
 * quotient v^T H v (Cauchy-Schwarz, ||v|| = 1) and every Ritz value (Weyl). The truncation error
 * eps^2 / 6 * |third derivative| is far below (eps = 1e-3: about 1e-7). Slack factor 2. */
static double hvp_tol(double eps) { return 2.0 * sqrt((double)P) * FLT_EPSILON * 2.0 / eps; }

Test(dist_hessian_exact, lanczos_matches_closed_form_spectrum, .timeout = 60)
{
    nnc_dataset *d = small_dataset(5);
    nnc_model *m = linear_model();
    static exact e;
    exact_hessian(m, d, &e);
    cr_assert_gt(e.ev[0], 0.1, "a non-trivial Hessian (lambda_max %g)", e.ev[0]);
    cr_assert_float_eq(e.ev[P - 1], 0.0, 1e-9, "softmax regression has a null space (shift of all logits)");
    nnc_hessian_config hc = nnc_hessian_config_default();
    hc.samples = N;
    hc.chunk = 16; /* three chunks, the last one short */
    hc.starts = 2;
    hc.iterations = P; /* a full Krylov basis: every Ritz value is an eigenvalue */
    hc.top = 3;
    double lm[2], top[2];
    cr_assert_eq(nnc_hessian_top_starts(m, d, &hc, lm, top), NNC_OK, "%s", nnc_error_message());
    double tol = hvp_tol(hc.eps), top3 = e.ev[0] + e.ev[1] + e.ev[2];
    cr_log_info("exact lambda_max %.9g top-3 %.9g trace %.9g; tolerance %.3g", e.ev[0], top3, e.trace, tol);
    for (int s = 0; s < 2; s++) {
        cr_log_info("start %d: lambda_max %.9g (error %.3g), top-3 %.9g (error %.3g)", s, lm[s], lm[s] - e.ev[0], top[s],
                    top[s] - top3);
        cr_assert_float_eq(lm[s], e.ev[0], tol, "start %d: lambda_max %.9g vs exact %.9g", s, lm[s], e.ev[0]);
        cr_assert_float_eq(top[s], top3, 3 * tol, "start %d: top-3 sum %.9g vs exact %.9g", s, top[s], top3);
    }
    /* top = P: the sum of all Ritz values of a full basis is the trace of the Hessian. */
    hc.top = P;
    hc.starts = 1;
    double l1, all;
    cr_assert_eq(nnc_hessian_top(m, d, &hc, &l1, &all), NNC_OK, "%s", nnc_error_message());
    cr_log_info("sum of all Ritz values %.9g (error %.3g)", all, all - e.trace);
    cr_assert_float_eq(all, e.trace, P * tol, "sum of all Ritz values %.9g vs trace %.9g", all, e.trace);
    /* Fewer iterations than parameters: the extreme eigenvalue converges first. */
    hc.iterations = 20;
    hc.top = 1;
    cr_assert_eq(nnc_hessian_top(m, d, &hc, &l1, &all), NNC_OK, "%s", nnc_error_message());
    cr_assert_float_eq(l1, e.ev[0], 1e-3 * e.ev[0] + tol, "20 iterations: %.9g vs exact %.9g", l1, e.ev[0]);
    nnc_model_free(m);
    fx_dataset_free(d);
}

Test(dist_hessian_exact, hutchinson_trace_within_its_standard_error, .timeout = 60)
{
    nnc_dataset *d = small_dataset(6);
    nnc_model *m = linear_model();
    static exact e;
    exact_hessian(m, d, &e);
    nnc_params *p = nnc_model_params(m);
    nnc_params *before;
    cr_assert_eq(nnc_params_clone(p, &before), NNC_OK);
    nnc_hessian_config hc = nnc_hessian_config_default();
    hc.samples = N;
    hc.chunk = 64;
    enum { PROBES = 400 };
    double tr, se;
    cr_assert_eq(nnc_hessian_trace(m, d, &hc, PROBES, &tr, &se), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(memcmp(before->data, p->data, p->n_data * sizeof(float)), 0, "parameters restored");
    /* For Rademacher z, Var(z^T H z) = 2 (||H||_F^2 - sum_i H_ii^2) exactly. */
    double sd_true = sqrt(2.0 * (e.frob2 - e.diag2) / PROBES);
    cr_log_info("Hutchinson %.6g +- %.3g (exact standard error %.3g), exact trace %.6g", tr, se, sd_true, e.trace);
    /* z^T H z = P u^T H u: the product's rounding error, scaled by P. */
    double fd = P * hvp_tol(hc.eps);
    cr_assert_float_eq(tr, e.trace, 4.0 * sd_true + fd, "trace %.6g vs exact %.6g (4 standard errors %.3g)", tr, e.trace,
                       4.0 * sd_true);
    /* The reported standard error estimates the true one: with 400 probes its relative error is
     * about sqrt((kurtosis - 1) / (4 * 400)), a few percent; 30% is a generous bound. */
    cr_assert(se > 0.7 * sd_true && se < 1.3 * sd_true, "standard error %.3g vs exact %.3g", se, sd_true);
    /* The same seed gives the same estimate; another seed another one. */
    double tr2, se2;
    cr_assert_eq(nnc_hessian_trace(m, d, &hc, PROBES, &tr2, &se2), NNC_OK);
    cr_assert(tr2 == tr && se2 == se, "deterministic for one seed");
    hc.seed = 2;
    cr_assert_eq(nnc_hessian_trace(m, d, &hc, 1, &tr2, &se2), NNC_OK);
    cr_assert(isnan(se2), "one probe has no standard error");
    cr_assert_eq(nnc_hessian_trace(m, d, &hc, 0, &tr2, &se2), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "probes 0 must be >= 1"), "%s", nnc_error_message());
    nnc_params_free(before);
    nnc_model_free(m);
    fx_dataset_free(d);
}
