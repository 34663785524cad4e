/* dist/flatness.c - top Hessian eigenvalues by Lanczos (docs/algorithms.md, "Flatness"; see
 * dist/dist.h).
 *
 * Vectors live in the layout of the params data arena; only the trained segments are used (the
 * alignment gaps stay 0). Dot products accumulate in double; the Lanczos basis is kept for the
 * full re-orthogonalisation ((iterations + 1) x n floats).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/grawa.h"

#define HESSIAN_STREAM 0x68657373ULL /* "hess" */

nnc_hessian_config nnc_hessian_config_default(void)
{
    nnc_hessian_config c = {.iterations = 100, .starts = 3, .samples = 320, .chunk = 64, .top = 100,
                            .eps = 1e-3, .seed = 1};
    return c;
}

/* Eigenvalues of the symmetric tridiagonal matrix with diagonal d[0..n) and off-diagonal
 * e[i] = T(i, i+1), e[n-1] = 0 (implicit QL with Wilkinson shifts). Eigenvalues into d; e is
 * destroyed. Returns 0, or -1 if an eigenvalue did not converge in 60 sweeps. */
int nnc__tridiag_eigenvalues(double *d, double *e, int n)
{
    for (int l = 0; l < n; l++) {
        int iter = 0, m;
        do {
            for (m = l; m < n - 1; m++) {
                double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= DBL_EPSILON * dd) break;
            }
            if (m == l) break;
            if (iter++ == 60) return -1;
            double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            double r = hypot(g, 1.0);
            g = d[m] - d[l] + e[l] / (g + (g >= 0.0 ? r : -r));
            double s = 1.0, c = 1.0, p = 0.0;
            int i;
            for (i = m - 1; i >= l; i--) {
                double f = s * e[i], b = c * e[i];
                r = hypot(f, g);
                e[i + 1] = r;
                if (r == 0.0) {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if (r == 0.0 && i >= l) continue;
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        } while (m != l);
    }
    return 0;
}

typedef struct hess_ctx {
    nnc_model *m;
    nnc_params *p;
    nnc_graph *g;
    const nnc_dataset *d;
    const nnc_grawa_layers *ly;
    int samples, chunk;
    float *x;          /* samples images, normalised */
    int *y;
    float *w0;         /* parameters at the point of interest */
    float *g1;         /* gradient scratch */
} hess_ctx;

static double dot(const nnc_grawa_layers *ly, const float *a, const float *b)
{
    double s = 0.0;
    for (int l = 0; l < ly->L; l++)
        for (size_t j = ly->off[l]; j < ly->off[l] + ly->len[l]; j++) s += (double)a[j] * (double)b[j];
    return s;
}

static int full_grad_run(hess_ctx *h);

/* Gradient of the mean cross-entropy over the subset at the current parameters into p->grad
 * (BN running statistics are updated by the train-mode forwards; the caller restores them).
 * A step arena that cannot hold a chunk's activations is NNC_ENOMEM. */
static int full_grad(hess_ctx *h)
{
    jmp_buf jb;
    jmp_buf *prev = nnc__oom_catch(&jb);
    int s;
    if (setjmp(jb)) {
        nnc_graph_reset(h->g);
        s = nnc__fail(NNC_ENOMEM, "out of memory allocating %zu bytes for the step arena (Hessian, chunk of %d "
                      "images)", nnc__oom_bytes(), h->chunk);
    } else {
        s = full_grad_run(h);
    }
    nnc__oom_release(prev);
    return s;
}

static int full_grad_run(hess_ctx *h)
{
    nnc_params_zero_grad(h->p);
    size_t img = (size_t)h->d->c * h->d->h * h->d->w;
    nnc_rng drop;  /* the same dropout masks for every gradient: differences stay smooth */
    nnc_rng_seed(&drop, 0, HESSIAN_STREAM);
    for (int at = 0; at < h->samples; at += h->chunk) {
        int n = h->samples - at < h->chunk ? h->samples - at : h->chunk;
        nnc_graph_reset(h->g);
        int shape[4] = {n, h->d->c, h->d->h, h->d->w};
        nnc_tensor *in = nnc_tensor_wrap(h->g, h->x + (size_t)at * img, 4, shape);
        nnc_tensor *logits = nnc_model_forward(h->m, h->g, in, 1, &drop);
        nnc_tensor *loss = nnc_softmax_cross_entropy(h->g, logits, h->y + at, NNC_REDUCE_SUM, 0.0f);
        int s = nnc_backward(h->g, loss);
        if (s) return s;
    }
    float inv = 1.0f / (float)h->samples;
    for (size_t j = 0; j < h->p->n_data; j++) h->p->grad[j] *= inv;
    return NNC_OK;
}

/* out = H v (central differences around w0, step eps along the unit vector v). */
static int hvp(hess_ctx *h, const float *v, double eps, float *out)
{
    size_t n = h->p->n_data;
    for (size_t j = 0; j < n; j++) h->p->data[j] = (float)((double)h->w0[j] + eps * v[j]);
    int s = full_grad(h);
    if (s) return s;
    memcpy(h->g1, h->p->grad, n * sizeof(float));
    for (size_t j = 0; j < n; j++) h->p->data[j] = (float)((double)h->w0[j] - eps * v[j]);
    if ((s = full_grad(h))) return s;
    for (size_t j = 0; j < n; j++)
        out[j] = (float)(((double)h->g1[j] - (double)h->p->grad[j]) / (2.0 * eps));
    memcpy(h->p->data, h->w0, n * sizeof(float));
    return NNC_OK;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* One Lanczos run from a random start: Ritz values (descending) into ritz, count into *k. */
static int lanczos(hess_ctx *h, int iters, double eps, nnc_rng *rng, float *V, float *w, double *alpha,
                   double *beta, double *ritz, int *k)
{
    const nnc_grawa_layers *ly = h->ly;
    size_t n = h->p->n_data;
    float *v0 = V;
    memset(v0, 0, n * sizeof(float));
    for (int l = 0; l < ly->L; l++)
        for (size_t j = ly->off[l]; j < ly->off[l] + ly->len[l]; j++) v0[j] = nnc_rng_normal(rng);
    double nv = sqrt(dot(ly, v0, v0));
    for (size_t j = 0; j < n; j++) v0[j] = (float)(v0[j] / nv);
    int m = 0;
    for (int j = 0; j < iters; j++) {
        float *vj = V + (size_t)j * n;
        int s = hvp(h, vj, eps, w);
        if (s) return s;
        alpha[j] = dot(ly, w, vj);
        for (size_t t = 0; t < n; t++) {
            double r = (double)w[t] - alpha[j] * vj[t];
            if (j > 0) r -= beta[j - 1] * V[(size_t)(j - 1) * n + t];
            w[t] = (float)r;
        }
        for (int pass = 0; pass < 2; pass++)   /* full re-orthogonalisation, twice is enough */
            for (int i = 0; i <= j; i++) {
                float *vi = V + (size_t)i * n;
                double c = dot(ly, w, vi);
                for (size_t t = 0; t < n; t++) w[t] = (float)((double)w[t] - c * vi[t]);
            }
        m = j + 1;
        beta[j] = sqrt(dot(ly, w, w));
        if (!(beta[j] > 1e-10) || j + 1 == iters) break;
        float *next = V + (size_t)(j + 1) * n;
        for (size_t t = 0; t < n; t++) next[t] = (float)(w[t] / beta[j]);
    }
    for (int i = 0; i < m; i++) ritz[i] = alpha[i];
    double *e = beta;  /* off-diagonal beta[0..m-2]; the last one is dropped */
    e[m - 1] = 0.0;
    if (nnc__tridiag_eigenvalues(ritz, e, m))
        return nnc__fail(NNC_EDIVERGED, "hessian: tridiagonal eigenvalues did not converge (%d Ritz values)", m);
    qsort(ritz, (size_t)m, sizeof(double), cmp_desc);
    *k = m;
    return NNC_OK;
}

int nnc_hessian_top(nnc_model *m, const nnc_dataset *d, const nnc_hessian_config *cfg,
                    double *lambda_max, double *trace_top)
{
    nnc_hessian_config c = cfg ? *cfg : nnc_hessian_config_default();
    if (c.iterations < 1 || c.starts < 1 || c.samples < 1 || c.chunk < 1 || c.top < 1 || !(c.eps > 0.0))
        return nnc__fail(NNC_EINVAL,
                         "hessian: iterations %d, starts %d, samples %d, chunk %d, top %d must be >= 1 and "
                         "eps %g > 0", c.iterations, c.starts, c.samples, c.chunk, c.top, c.eps);
    if (c.samples > d->n) c.samples = d->n;
    nnc_params *p = nnc_model_params(m);
    nnc_grawa_layers ly = {0};
    hess_ctx h = {.m = m, .p = p, .d = d, .ly = &ly, .samples = c.samples, .chunk = c.chunk};
    size_t n = p->n_data, img = (size_t)d->c * d->h * d->w;
    int iters = c.iterations;
    if ((size_t)iters > nnc_params_num_scalars(p)) iters = (int)nnc_params_num_scalars(p);
    float *V = NULL, *w = NULL, *buf = NULL;
    double *alpha = NULL, *beta = NULL, *ritz = NULL;
    uint32_t *idx = NULL;
    int s = nnc__grawa_layers_new(p, &ly);
    if (!s) s = nnc_graph_new(0, &h.g);
    if (s) goto done;
    h.x = nnc__calloc((size_t)c.samples * img, sizeof(float));
    h.y = nnc__calloc((size_t)c.samples, sizeof(int));
    h.w0 = nnc__calloc(n + 1, sizeof(float));
    h.g1 = nnc__calloc(n + 1, sizeof(float));
    V = nnc__calloc(((size_t)iters + 1) * n + 1, sizeof(float));
    w = nnc__calloc(n + 1, sizeof(float));
    buf = nnc__calloc(p->n_buf + 1, sizeof(float));
    alpha = nnc__calloc((size_t)iters + 1, sizeof(double));
    beta = nnc__calloc((size_t)iters + 1, sizeof(double));
    ritz = nnc__calloc((size_t)iters + 1, sizeof(double));
    idx = nnc__calloc((size_t)c.samples, sizeof(uint32_t));
    if (!h.x || !h.y || !h.w0 || !h.g1 || !V || !w || !buf || !alpha || !beta || !ritz || !idx) {
        s = nnc__fail(NNC_ENOMEM, "hessian: cannot allocate the Lanczos basis (%d x %zu floats)", iters + 1, n);
        goto done;
    }
    for (int i = 0; i < c.samples; i++) idx[i] = (uint32_t)i;
    nnc_dataset_gather(d, idx, c.samples, h.x, h.y);
    memcpy(h.w0, p->data, n * sizeof(float));
    memcpy(buf, p->buf, p->n_buf * sizeof(float));
    double lmax = 0.0, tr = 0.0;
    for (int st = 0; !s && st < c.starts; st++) {
        nnc_rng rng;
        nnc_rng_seed(&rng, c.seed, HESSIAN_STREAM + (uint64_t)st);
        int k = 0;
        s = lanczos(&h, iters, c.eps, &rng, V, w, alpha, beta, ritz, &k);
        if (s) break;
        lmax += ritz[0];
        double t = 0.0;
        for (int i = 0; i < k && i < c.top; i++) t += ritz[i];
        tr += t;
    }
    memcpy(p->data, h.w0, n * sizeof(float));
    memcpy(p->buf, buf, p->n_buf * sizeof(float));
    nnc_params_zero_grad(p);
    if (!s) {
        *lambda_max = lmax / c.starts;
        *trace_top = tr / c.starts;
    }
done:
    nnc_graph_free(h.g);
    nnc__grawa_layers_free(&ly);
    nnc__free(h.x);
    nnc__free(h.y);
    nnc__free(h.w0);
    nnc__free(h.g1);
    nnc__free(V);
    nnc__free(w);
    nnc__free(buf);
    nnc__free(alpha);
    nnc__free(beta);
    nnc__free(ritz);
    nnc__free(idx);
    return s;
}
