/* tests/common/gradcheck.h - finite-difference gradient check for ops.
 *
 * The op under test is a function building an output from leaf inputs. The check seeds the
 * output gradient with fixed random weights w (loss L = sum w*out, accumulated in double),
 * runs backward, and compares each analytic input gradient element with the central difference
 * (L(x+eps) - L(x-eps)) / 2eps. Points where the one-sided slopes disagree (a kink of ReLU or
 * max within eps) are skipped and counted, the ggml approach.
 */
#ifndef NNC_TEST_GRADCHECK_H
#define NNC_TEST_GRADCHECK_H

#include "nn/nnc.h"

typedef nnc_tensor *(*gc_fn)(nnc_graph *g, nnc_tensor **in, void *ud);

typedef struct gc_opts {
    float eps;   /* perturbation (default 1e-2) */
    float atol;  /* default 5e-3 */
    float rtol;  /* default 1e-2 */
    int max_skip_pct; /* fail if more than this % of points are kinks (default 30) */
} gc_opts;

gc_opts gc_defaults(void);

/* A leaf with heap data and grad, uniform in [lo, hi). requires_grad as given. */
nnc_tensor *gc_leaf(int ndim, const int *shape, nnc_rng *rng, float lo, float hi, int requires_grad);
void gc_leaf_free(nnc_tensor *t);

/* Run the check on every input with requires_grad. Returns the number of failing elements (0 =
 * pass) and prints the first few failures with their index, analytic and numeric values. */
int gradcheck(const char *label, gc_fn fn, int nin, nnc_tensor **in, void *ud, gc_opts o);

/* Max |a-b| / (atol + rtol*|b|) over n elements (<= 1 means within tolerance). */
double gc_max_err(const float *a, const float *b, size_t n, double atol, double rtol);

#endif
