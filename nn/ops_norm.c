/* nn/ops_norm.c - 2-D batch normalisation (training and eval) with its backward.
 *
 * x (N,C,H,W) or (N,C) (treated as H = W = 1), gamma/beta (C) or NULL (1 and 0),
 * running_mean/var (C). M = N*H*W values per channel.
 * Training: mean_c, var_c = biased batch statistics (accumulated in double),
 *   y = gamma (x - mean) / sqrt(var + eps) + beta; running stats updated as PyTorch does.
 * Eval: the same affine map with the running statistics.
 * Saved for backward: per channel mean and inv_std = 1/sqrt(var + eps) (2C floats). */
#include <math.h>

#include "nn/ops.h"

static void dims(const nnc_tensor *x, int *n, int *c, size_t *hw)
{
    *n = x->shape[0];
    *c = x->shape[1];
    *hw = x->ndim == 4 ? (size_t)x->shape[2] * (size_t)x->shape[3] : 1;
}

/* dbeta_c = sum dy, dgamma_c = sum dy * xhat; training:
 *   dx = gamma inv_std (dy - dbeta_c / M - xhat dgamma_c / M)
 * eval (statistics are constants): dx = gamma inv_std dy. */
static void batchnorm_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0], *gamma = n->in[1], *beta = n->in[2];
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    int training = n->iargs[0];
    const float *mean = n->saved, *inv_std = mean + C;
    const float *dy = n->out->grad;
    float *dx = x->requires_grad ? nnc__grad(g, x) : NULL;
    float *dgamma = gamma && gamma->requires_grad ? nnc__grad(g, gamma) : NULL;
    float *dbeta = beta && beta->requires_grad ? nnc__grad(g, beta) : NULL;
    double m = (double)N * (double)hw;
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        float mu = mean[c], is = inv_std[c];
        for (int b = 0; b < N; b++) {
            size_t off = ((size_t)b * C + c) * hw;
            for (size_t i = 0; i < hw; i++) {
                sdy += dy[off + i];
                sdyx += (double)dy[off + i] * (double)((x->data[off + i] - mu) * is);
            }
        }
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        float gs = (gamma ? gamma->data[c] : 1.0f) * is;
        if (training) {
            float mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
            for (int b = 0; b < N; b++) {
                size_t off = ((size_t)b * C + c) * hw;
                for (size_t i = 0; i < hw; i++) {
                    float xh = (x->data[off + i] - mu) * is;
                    dx[off + i] += gs * (dy[off + i] - mdy - xh * mdyx);
                }
            }
        } else {
            for (int b = 0; b < N; b++) {
                size_t off = ((size_t)b * C + c) * hw;
                for (size_t i = 0; i < hw; i++) dx[off + i] += gs * dy[off + i];
            }
        }
    }
}

nnc_tensor *nnc_batchnorm2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                            nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                            float eps, int training)
{
    NNC_ASSERT(g && x, "batchnorm2d: NULL argument");
    NNC_ASSERT(x->ndim == 4 || x->ndim == 2, "batchnorm2d: x must be (N,C,H,W) or (N,C), got %d dims",
               x->ndim);
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    static const char *const names[4] = {"gamma", "beta", "running_mean", "running_var"};
    const nnc_tensor *per_c[4] = {gamma, beta, running_mean, running_var};
    for (int i = 0; i < 4; i++)
        NNC_ASSERT(!per_c[i] || per_c[i]->numel == (size_t)C,
                   "batchnorm2d: %s has %zu elements, x has %d channels", names[i], per_c[i]->numel, C);
    NNC_ASSERT(!running_mean == !running_var, "batchnorm2d: pass both running stats or neither");
    NNC_ASSERT(eps > 0.0f, "batchnorm2d: eps %g", (double)eps);
    size_t m = (size_t)N * hw;
    if (training)
        NNC_ASSERT(m > 1, "batchnorm2d: expected more than 1 value per channel when training, got %zu", m);
    else
        NNC_ASSERT(running_mean != NULL, "batchnorm2d: eval mode needs running statistics");

    float *stats = nnc_graph_scratch(g, 2 * (size_t)C * sizeof(float));
    float *mean = stats, *inv_std = stats + C;
    for (int c = 0; c < C; c++) {
        if (!training) {
            mean[c] = running_mean->data[c];
            inv_std[c] = (float)(1.0 / sqrt((double)running_var->data[c] + (double)eps));
            continue;
        }
        double s = 0;
        for (int b = 0; b < N; b++) {
            const float *p = x->data + ((size_t)b * C + c) * hw;
            for (size_t i = 0; i < hw; i++) s += p[i];
        }
        double mu = s / (double)m, ss = 0;
        for (int b = 0; b < N; b++) {
            const float *p = x->data + ((size_t)b * C + c) * hw;
            for (size_t i = 0; i < hw; i++) ss += ((double)p[i] - mu) * ((double)p[i] - mu);
        }
        double var = ss / (double)m;
        mean[c] = (float)mu;
        inv_std[c] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean) {
            float mo = momentum;
            running_mean->data[c] = (1.0f - mo) * running_mean->data[c] + mo * (float)mu;
            running_var->data[c] =
                (1.0f - mo) * running_var->data[c] + mo * (float)(var * (double)m / (double)(m - 1));
        }
    }

    nnc_tensor *y = nnc_tensor_new(g, x->ndim, x->shape);
    for (int b = 0; b < N; b++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)b * C + c) * hw;
            float gm = gamma ? gamma->data[c] : 1.0f, bt = beta ? beta->data[c] : 0.0f;
            float sc = gm * inv_std[c], mu = mean[c];
            for (size_t i = 0; i < hw; i++) y->data[off + i] = (x->data[off + i] - mu) * sc + bt;
        }
    nnc_tensor *in[3] = {x, gamma, beta};
    nnc_node *n = nnc__record(g, "batchnorm2d", batchnorm_backward, y, 3, in);
    if (n) {
        n->iargs[0] = training;
        n->saved = stats;
    }
    return y;
}
