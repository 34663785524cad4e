/* tests/common/gradcheck.c - central-difference gradient checks (see gradcheck.h). */
#include "tests/common/gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gc_opts gc_defaults(void) { return (gc_opts){1e-2f, 5e-3f, 1e-2f, 30}; }

nnc_tensor *gc_leaf(int ndim, const int *shape, nnc_rng *rng, float lo, float hi, int requires_grad)
{
    nnc_tensor *t = calloc(1, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = nnc_shape_numel(ndim, shape);
    t->data = malloc(t->numel * sizeof(float));
    t->grad = calloc(t->numel, sizeof(float));
    for (size_t i = 0; i < t->numel; i++) t->data[i] = lo + (hi - lo) * nnc_rng_uniform(rng);
    t->node = -1;
    t->requires_grad = requires_grad;
    return t;
}

void gc_leaf_free(nnc_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t->grad);
    free(t);
}

static double eval_loss(nnc_graph *g, gc_fn fn, nnc_tensor **in, void *ud, const float *w)
{
    nnc_graph_reset(g);
    nnc_graph_set_grad(g, 0);
    nnc_tensor *out = fn(g, in, ud);
    double l = 0;
    for (size_t i = 0; i < out->numel; i++) l += (double)w[i] * (double)out->data[i];
    nnc_graph_set_grad(g, 1);
    return l;
}

double gc_max_err(const float *a, const float *b, size_t n, double atol, double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= worst)) worst = e; /* NaN propagates as worst */
    }
    return worst;
}

int gradcheck(const char *label, gc_fn fn, int nin, nnc_tensor **in, void *ud, gc_opts o)
{
    nnc_graph *g;
    if (nnc_graph_new(0, &g)) return -1;
    nnc_rng rng;
    nnc_rng_seed(&rng, 1234, 99);

    for (int k = 0; k < nin; k++)
        if (in[k] && in[k]->grad) memset(in[k]->grad, 0, in[k]->numel * sizeof(float));
    nnc_tensor *out = fn(g, in, ud);
    size_t nout = out->numel;
    float *w = malloc(nout * sizeof(float));
    for (size_t i = 0; i < nout; i++) w[i] = nnc_rng_uniform(&rng) * 2.0f - 1.0f;
    int fails = 0;
    if (out->node < 0) {
        printf("%s: output not recorded on the tape\n", label);
        fails = 1;
        goto done;
    }
    if (nnc_backward_seed(g, out, w)) {
        printf("%s: backward failed: %s\n", label, nnc_error_message());
        fails = 1;
        goto done;
    }
    for (int k = 0; k < nin; k++) {
        nnc_tensor *x = in[k];
        if (!x || !x->requires_grad) continue;
        float *analytic = malloc(x->numel * sizeof(float));
        memcpy(analytic, x->grad, x->numel * sizeof(float));
        size_t skipped = 0;
        for (size_t j = 0; j < x->numel; j++) {
            float orig = x->data[j];
            double l0 = eval_loss(g, fn, in, ud, w);
            x->data[j] = orig + o.eps;
            double lp = eval_loss(g, fn, in, ud, w);
            x->data[j] = orig - o.eps;
            double lm = eval_loss(g, fn, in, ud, w);
            x->data[j] = orig;
            double dp = (lp - l0) / o.eps, dm = (l0 - lm) / o.eps;
            if (fabs(dp - dm) > 0.1 * (fabs(dp) + fabs(dm)) + 1e-3) { /* kink inside [x-eps, x+eps] */
                skipped++;
                continue;
            }
            double num = (lp - lm) / (2.0 * o.eps);
            double a = analytic[j];
            if (!(fabs(a - num) <= o.atol + o.rtol * fabs(num))) {
                if (fails < 5)
                    printf("%s: input %d element %zu: analytic %.6g numeric %.6g\n", label, k, j, a, num);
                fails++;
            }
        }
        if (skipped * 100 > (size_t)o.max_skip_pct * x->numel) {
            printf("%s: input %d: %zu of %zu points skipped as kinks\n", label, k, skipped, x->numel);
            fails++;
        }
        free(analytic);
    }
done:
    free(w);
    nnc_graph_free(g);
    return fails;
}
