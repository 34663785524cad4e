/* nn/ops_norm.c - 2-D batch normalisation (training and eval) with its backward.
 *
 * x (N,C,H,W) or (N,C) (treated as H = W = 1), gamma/beta (C) or NULL (1 and 0),
 * running_mean/var (C). M = N*H*W values per channel.
 * Training: mean_c, var_c = biased batch statistics (accumulated in double),
 *   y = gamma (x - mean) / sqrt(var + eps) + beta; running stats updated as PyTorch does.
 * Eval: the same affine map with the running statistics.
 * Saved for backward: per channel mean and inv_std = 1/sqrt(var + eps) (2C floats).
 * Training statistics come from the producing conv's output pass when x is the output of a
 * recorded conv op (nn/ops_fuse.h), else from two passes over x. nnc__bn_fold and
 * nnc__bn_relu_backward_x are the BN halves of nnc_bn_relu_conv2d (nn/ops_conv.c). */
#include <math.h>
#include <string.h>

#include "nn/ops.h"
#include "nn/ops_fuse.h"
#include "nn/threads.h"
#include "nn/vec.h"

/* Sum over i < n of p[i] (and, with q, of (p[i] - mu) * q[i], or (p[i] - mu)^2 when q == p),
 * as 4-lane float partial sums finished in double. */
static double plane_sum(const float *p, size_t n)
{
    nnc__v4 a = nnc__v4_set1(0.0f), b = a;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a += nnc__v4_load(p + i);
        b += nnc__v4_load(p + i + 4);
    }
    double s = nnc__v4_hsum(a) + nnc__v4_hsum(b);
    for (; i < n; i++) s += p[i];
    return s;
}

static double plane_dot_centered(const float *p, float mu, const float *q, size_t n)
{
    nnc__v4 a = nnc__v4_set1(0.0f), b = a, m = nnc__v4_set1(mu);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a += (nnc__v4_load(p + i) - m) * nnc__v4_load(q + i);
        b += (nnc__v4_load(p + i + 4) - m) * nnc__v4_load(q + i + 4);
    }
    double s = nnc__v4_hsum(a) + nnc__v4_hsum(b);
    for (; i < n; i++) s += (double)(p[i] - mu) * q[i];
    return s;
}

static double plane_sq_centered(const float *p, float mu, size_t n)
{
    nnc__v4 a = nnc__v4_set1(0.0f), b = a, m = nnc__v4_set1(mu);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        nnc__v4 u = nnc__v4_load(p + i) - m, v = nnc__v4_load(p + i + 4) - m;
        a += u * u;
        b += v * v;
    }
    double s = nnc__v4_hsum(a) + nnc__v4_hsum(b);
    for (; i < n; i++) s += (double)(p[i] - mu) * (p[i] - mu);
    return s;
}

/* The same sums with dy replaced by dz = (y > 0 ? dy : 0) (the gradient through a ReLU); with
 * dr (the residual's gradient, in the same pass) also dr = dz (fresh) or dr += dz. */
static void plane_sums_masked(const float *x, float mu, const float *dy, const float *y, float *dr, int fresh,
                              size_t n, double *sdy, double *sdyx)
{
    nnc__v4 a = nnc__v4_set1(0.0f), b = a, m = nnc__v4_set1(mu), zero = a;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        nnc__v4 dz = nnc__v4_keep(nnc__v4_load(dy + i), nnc__v4_load(y + i) > zero);
        a += dz;
        b += (nnc__v4_load(x + i) - m) * dz;
        if (dr) nnc__v4_store(dr + i, fresh ? dz : nnc__v4_load(dr + i) + dz);
    }
    double s = nnc__v4_hsum(a), t = nnc__v4_hsum(b);
    for (; i < n; i++) {
        float dz = y[i] > 0.0f ? dy[i] : 0.0f;
        if (dr) dr[i] = fresh ? dz : dr[i] + dz;
        if (y[i] > 0.0f) {
            s += dy[i];
            t += (double)(x[i] - mu) * dy[i];
        }
    }
    *sdy += s;
    *sdyx += t;
}

/* The same sums with dz = (x * sc + sh > 0 ? dy : 0): the ReLU mask of the fused prologue
 * (nnc__bnrelu_mask), recomputed from x. */
static void plane_sums_xmask(const float *x, float mu, const float *dy, float sc, float sh, size_t n,
                             double *sdy, double *sdyx)
{
    nnc__v4 a = nnc__v4_set1(0.0f), b = a, m = nnc__v4_set1(mu), vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        nnc__v4 xv = nnc__v4_load(x + i);
        nnc__v4 dz = nnc__v4_keep(nnc__v4_load(dy + i), nnc__bnrelu_mask_v4(xv, vs, vh));
        a += dz;
        b += (xv - m) * dz;
    }
    double s = nnc__v4_hsum(a), t = nnc__v4_hsum(b);
    for (; i < n; i++)
        if (nnc__bnrelu_mask(x[i], sc, sh)) {
            s += dy[i];
            t += (double)(x[i] - mu) * dy[i];
        }
    *sdy += s;
    *sdyx += t;
}

/* y[i] = x[i] * sc + sh over one plane */
static void plane_affine(const float *x, float *y, float sc, float sh, size_t n)
{
    nnc__v4 a = nnc__v4_set1(sc), b = nnc__v4_set1(sh);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(y + i, nnc__v4_load(x + i) * a + b);
    for (; i < n; i++) y[i] = x[i] * sc + sh;
}

static void dims(const nnc_tensor *x, int *n, int *c, size_t *hw)
{
    *n = x->shape[0];
    *c = x->shape[1];
    *hw = x->ndim == 4 ? (size_t)x->shape[2] * (size_t)x->shape[3] : 1;
}

typedef struct bn_bwd_ctx {
    const float *x, *dy;
    float *dx, *dgamma, *dbeta;
    const float *y;    /* fused ReLU: the op's output (its mask), else NULL */
    const float *msc, *msh; /* fused prologue: ReLU mask from x (nnc__bnrelu_mask), else NULL */
    float *dres;       /* fused residual: its gradient, else NULL */
    int dx_fresh, dres_fresh; /* write instead of accumulating (buffers not initialised) */
    const float *gamma, *mean, *inv_std;
    int N, C;
    size_t hw;
    int training;
    const double *psums; /* dy already masked, per-plane (sum dy, sum dy (x - mean)) (N,C,2), or NULL */
} bn_bwd_ctx;

/* One channel c of the backward below. */
static void bn_bwd_task(void *vctx, int c, int thread)
{
    (void)thread;
    const bn_bwd_ctx *b = vctx;
    const int N = b->N, C = b->C;
    const size_t hw = b->hw;
    double sdy = 0, sdyx = 0, m = (double)N * (double)hw;
    float mu = b->mean[c], is = b->inv_std[c];
    /* pass 1: the sums (and the residual's gradient, masked, in the same pass) */
    for (int n = 0; n < N; n++) {
        size_t off = ((size_t)n * C + c) * hw;
        if (b->psums) {
            sdy += b->psums[((size_t)n * C + c) * 2];
            sdyx += b->psums[((size_t)n * C + c) * 2 + 1];
            continue;
        }
        if (b->y) {
            plane_sums_masked(b->x + off, mu, b->dy + off, b->y + off, b->dres ? b->dres + off : NULL, b->dres_fresh,
                              hw, &sdy, &sdyx);
            continue;
        }
        if (b->msc) {
            plane_sums_xmask(b->x + off, mu, b->dy + off, b->msc[c], b->msh[c], hw, &sdy, &sdyx);
            continue;
        }
        sdy += plane_sum(b->dy + off, hw);
        sdyx += plane_dot_centered(b->x + off, mu, b->dy + off, hw);
        if (b->dres) {
            float *dr = b->dres + off;
            const float *dy = b->dy + off;
            if (b->dres_fresh) {
                memcpy(dr, dy, sizeof(float) * hw);
            } else {
                size_t i = 0;
                for (; i + 4 <= hw; i += 4) nnc__v4_store(dr + i, nnc__v4_load(dr + i) + nnc__v4_load(dy + i));
                for (; i < hw; i++) dr[i] += dy[i];
            }
        }
    }
    sdyx *= is;
    if (b->dgamma) b->dgamma[c] += (float)sdyx;
    if (b->dbeta) b->dbeta[c] += (float)sdy;
    if (!b->dx) return;
    float gs = (b->gamma ? b->gamma[c] : 1.0f) * is;
    /* training: dx += gs*dy - gs*mdy - gs*is*mdyx*(x - mu) = gs*dy + A*x + B */
    float mdy = b->training ? (float)(sdy / m) : 0.0f, mdyx = b->training ? (float)(sdyx / m) : 0.0f;
    float A = -gs * is * mdyx, B = -gs * mdy + gs * is * mdyx * mu;
    nnc__v4 vg = nnc__v4_set1(gs), va = nnc__v4_set1(A), vb = nnc__v4_set1(B);
    /* pass 2: dx. A residual gradient written fresh in pass 1 is exactly the masked dy: read it
     * instead of dy and y. */
    const int dz_from_dres = b->y && b->dres && b->dres_fresh && b->dres != b->dx;
    for (int n = 0; n < N; n++) {
        size_t off = ((size_t)n * C + c) * hw, i = 0;
        const float *x = b->x + off, *dy = (dz_from_dres ? b->dres : b->dy) + off;
        const float *y = b->y && !dz_from_dres ? b->y + off : NULL;
        float *dx = b->dx + off;
        if (b->msc) { /* elementwise, so dx may be dy itself */
            const float sc = b->msc[c], sh = b->msh[c];
            const int fresh = b->dx_fresh;
            nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh);
            for (; i + 4 <= hw; i += 4) {
                nnc__v4 xv = nnc__v4_load(x + i);
                nnc__v4 v = vg * nnc__v4_keep(nnc__v4_load(dy + i), nnc__bnrelu_mask_v4(xv, vs, vh)) + va * xv + vb;
                nnc__v4_store(dx + i, fresh ? v : nnc__v4_load(dx + i) + v);
            }
            for (; i < hw; i++) {
                float v = gs * (nnc__bnrelu_mask(x[i], sc, sh) ? dy[i] : 0.0f) + A * x[i] + B;
                dx[i] = fresh ? v : dx[i] + v;
            }
            continue;
        }
        if (y && b->dx_fresh) {
            nnc__v4 zero = nnc__v4_set1(0.0f);
            for (; i + 4 <= hw; i += 4) {
                nnc__v4 dz = nnc__v4_keep(nnc__v4_load(dy + i), nnc__v4_load(y + i) > zero);
                nnc__v4_store(dx + i, vg * dz + va * nnc__v4_load(x + i) + vb);
            }
            for (; i < hw; i++) dx[i] = gs * (y[i] > 0.0f ? dy[i] : 0.0f) + A * x[i] + B;
            continue;
        }
        if (y) {
            nnc__v4 zero = nnc__v4_set1(0.0f);
            for (; i + 4 <= hw; i += 4) {
                nnc__v4 dz = nnc__v4_keep(nnc__v4_load(dy + i), nnc__v4_load(y + i) > zero);
                nnc__v4_store(dx + i, nnc__v4_load(dx + i) + vg * dz + va * nnc__v4_load(x + i) + vb);
            }
            for (; i < hw; i++) dx[i] += gs * (y[i] > 0.0f ? dy[i] : 0.0f) + A * x[i] + B;
            continue;
        }
        if (b->dx_fresh) {
            for (; i + 4 <= hw; i += 4)
                nnc__v4_store(dx + i, vg * nnc__v4_load(dy + i) + va * nnc__v4_load(x + i) + vb);
            for (; i < hw; i++) dx[i] = gs * dy[i] + A * x[i] + B;
            continue;
        }
        for (; i + 4 <= hw; i += 4)
            nnc__v4_store(dx + i, nnc__v4_load(dx + i) + vg * nnc__v4_load(dy + i) + va * nnc__v4_load(x + i) + vb);
        for (; i < hw; i++) dx[i] += gs * dy[i] + A * x[i] + B;
    }
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
    int dx_fresh = 0, dres_fresh = 0;
    float *dx = x->requires_grad ? nnc__grad_fresh(g, x, &dx_fresh) : NULL;
    float *dgamma = gamma && gamma->requires_grad ? nnc__grad(g, gamma) : NULL;
    float *dbeta = beta && beta->requires_grad ? nnc__grad(g, beta) : NULL;
    int relu = n->iargs[1];
    nnc_tensor *res = n->nin > 3 ? n->in[3] : NULL;
    float *dres = res && res->requires_grad ? nnc__grad_fresh(g, res, &dres_fresh) : NULL;
    bn_bwd_ctx b = {x->data, dy, dx, dgamma, dbeta, relu ? n->out->data : NULL, NULL, NULL, dres, dx_fresh, dres_fresh,
                    gamma ? gamma->data : NULL, mean, inv_std, N, C, hw, training, NULL};
    nnc__parallel_for(C, bn_bwd_task, &b);
}

void nnc__bn_relu_backward_x(const nnc_tensor *x, const nnc_tensor *gamma, const float *saved, int training,
                             const float *dz, const double *psums, float *dx, int dx_fresh, float *dgamma,
                             float *dbeta)
{
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    bn_bwd_ctx b = {x->data, dz, dx, dgamma, dbeta, NULL, psums ? NULL : saved + 2 * C, psums ? NULL : saved + 3 * C,
                    NULL, dx_fresh, 0, gamma ? gamma->data : NULL, saved, saved + C, N, C, hw, training, psums};
    nnc__parallel_for(C, bn_bwd_task, &b);
}

typedef struct bn_fwd_ctx {
    const float *x;
    float *y;          /* NULL: no output pass (nnc__bn_fold) */
    const float *res;  /* fused residual (shape of x) or NULL */
    int relu;          /* fused ReLU */
    const float *gamma, *beta;
    float *rmean, *rvar, *mean, *inv_std;
    int N, C;
    size_t hw;
    int training;
    float momentum, eps;
    const double *pre; /* (mean, biased var) per channel from the producing conv, or NULL */
    float *sc_out, *sh_out; /* the affine map per channel, or NULL */
} bn_fwd_ctx;

/* One channel c: statistics (training) or running statistics (eval), then y. */
static void bn_fwd_task(void *vctx, int c, int thread)
{
    (void)thread;
    const bn_fwd_ctx *f = vctx;
    const int N = f->N, C = f->C;
    const size_t hw = f->hw;
    if (f->training) {
        double m = (double)N * (double)hw, mu, var;
        if (f->pre) {
            mu = f->pre[2 * c];
            var = f->pre[2 * c + 1];
        } else {
            double s = 0, ss = 0;
            for (int n = 0; n < N; n++) s += plane_sum(f->x + ((size_t)n * C + c) * hw, hw);
            mu = s / m;
            for (int n = 0; n < N; n++) ss += plane_sq_centered(f->x + ((size_t)n * C + c) * hw, (float)mu, hw);
            /* the centring used float(mu): correct the sum of squares for the rounding of mu */
            double d = mu - (double)(float)mu;
            var = ss / m - d * d;
        }
        if (var < 0) var = 0;
        f->mean[c] = (float)mu;
        f->inv_std[c] = (float)(1.0 / sqrt(var + (double)f->eps));
        if (f->rmean) {
            float mo = f->momentum;
            f->rmean[c] = (1.0f - mo) * f->rmean[c] + mo * (float)mu;
            f->rvar[c] = (1.0f - mo) * f->rvar[c] + mo * (float)(var * m / (m - 1));
        }
    } else {
        f->mean[c] = f->rmean[c];
        f->inv_std[c] = (float)(1.0 / sqrt((double)f->rvar[c] + (double)f->eps));
    }
    float gm = f->gamma ? f->gamma[c] : 1.0f, bt = f->beta ? f->beta[c] : 0.0f;
    float sc = gm * f->inv_std[c], sh = bt - f->mean[c] * sc;
    if (f->sc_out) {
        f->sc_out[c] = sc;
        f->sh_out[c] = sh;
    }
    if (!f->y) return;
    for (int n = 0; n < N; n++) {
        size_t off = ((size_t)n * C + c) * hw;
        if (!f->res && !f->relu) {
            plane_affine(f->x + off, f->y + off, sc, sh, hw);
            continue;
        }
        const float *x = f->x + off, *r = f->res ? f->res + off : NULL;
        float *y = f->y + off;
        const int relu = f->relu; /* read once: the stores to y may alias *f for the compiler */
        nnc__v4 a = nnc__v4_set1(sc), b = nnc__v4_set1(sh), zero = nnc__v4_set1(0.0f);
        size_t i = 0;
        if (r && relu) {
            for (; i + 4 <= hw; i += 4) {
                nnc__v4 v = nnc__v4_load(x + i) * a + b + nnc__v4_load(r + i);
                nnc__v4_store(y + i, nnc__v4_keep(v, v > zero));
            }
        } else if (relu) {
            for (; i + 4 <= hw; i += 4) {
                nnc__v4 v = nnc__v4_load(x + i) * a + b;
                nnc__v4_store(y + i, nnc__v4_keep(v, v > zero));
            }
        } else {
            for (; i + 4 <= hw; i += 4) nnc__v4_store(y + i, nnc__v4_load(x + i) * a + b + nnc__v4_load(r + i));
        }
        for (; i < hw; i++) {
            float v = x[i] * sc + sh + (r ? r[i] : 0.0f);
            y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
        }
    }
}

/* The argument checks of every batch-norm entry point (op: the name in messages). */
static void check_bn(const char *op, nnc_graph *g, const nnc_tensor *x, const nnc_tensor *gamma,
                     const nnc_tensor *beta, const nnc_tensor *running_mean, const nnc_tensor *running_var,
                     float eps, int training)
{
    NNC_ASSERT(g && x, "%s: NULL argument", op);
    NNC_ASSERT(x->ndim == 4 || x->ndim == 2, "%s: x must be (N,C,H,W) or (N,C), got %d dims", op, x->ndim);
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    static const char *const names[4] = {"gamma", "beta", "running_mean", "running_var"};
    const nnc_tensor *per_c[4] = {gamma, beta, running_mean, running_var};
    for (int i = 0; i < 4; i++)
        NNC_ASSERT(!per_c[i] || per_c[i]->numel == (size_t)C, "%s: %s has %zu elements, x has %d channels", op,
                   names[i], per_c[i]->numel, C);
    NNC_ASSERT(!running_mean == !running_var, "%s: pass both running stats or neither", op);
    NNC_ASSERT(eps > 0.0f, "%s: eps %g", op, (double)eps);
    size_t m = (size_t)N * hw;
    if (training)
        NNC_ASSERT(m > 1, "%s: expected more than 1 value per channel when training, got %zu", op, m);
    else
        NNC_ASSERT(running_mean != NULL, "%s: eval mode needs running statistics", op);
}

void nnc__bn_fold(nnc_graph *g, const char *op, const nnc_tensor *x, const nnc_tensor *gamma,
                  const nnc_tensor *beta, nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                  float eps, int training, float *saved)
{
    check_bn(op, g, x, gamma, beta, running_mean, running_var, eps, training);
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    bn_fwd_ctx f = {x->data, NULL, NULL, 0, gamma ? gamma->data : NULL, beta ? beta->data : NULL,
                    running_mean ? running_mean->data : NULL, running_var ? running_var->data : NULL,
                    saved, saved + C, N, C, hw, training, momentum, eps,
                    training ? nnc__conv_output_stats(g, x) : NULL, saved + 2 * C, saved + 3 * C};
    nnc__parallel_for(C, bn_fwd_task, &f);
}

static nnc_tensor *bn_op(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                         nnc_tensor *running_mean, nnc_tensor *running_var, float momentum, float eps,
                         int training, nnc_tensor *residual, int relu)
{
    check_bn("batchnorm2d", g, x, gamma, beta, running_mean, running_var, eps, training);
    int N, C;
    size_t hw;
    dims(x, &N, &C, &hw);
    float *stats = nnc_graph_scratch(g, 2 * (size_t)C * sizeof(float));
    nnc_tensor *y = nnc_tensor_new(g, x->ndim, x->shape);
    bn_fwd_ctx f = {x->data, y->data, residual ? residual->data : NULL, relu, gamma ? gamma->data : NULL, beta ? beta->data : NULL,
                    running_mean ? running_mean->data : NULL, running_var ? running_var->data : NULL,
                    stats, stats + C, N, C, hw, training, momentum, eps,
                    training ? nnc__conv_output_stats(g, x) : NULL, NULL, NULL};
    nnc__parallel_for(C, bn_fwd_task, &f);
    nnc_tensor *in[4] = {x, gamma, beta, residual};
    nnc_node *n = nnc__record(g, relu || residual ? "batchnorm2d_relu" : "batchnorm2d", batchnorm_backward, y,
                              residual ? 4 : 3, in);
    if (n) {
        n->iargs[0] = training;
        n->iargs[1] = relu;
        n->saved = stats;
    }
    return y;
}

nnc_tensor *nnc_batchnorm2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                            nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                            float eps, int training)
{
    return bn_op(g, x, gamma, beta, running_mean, running_var, momentum, eps, training, NULL, 0);
}

nnc_tensor *nnc_batchnorm2d_relu(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                                 nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                                 float eps, int training, nnc_tensor *residual)
{
    char sx[64], sr[64];
    NNC_ASSERT(x != NULL, "batchnorm2d_relu: NULL argument");
    NNC_ASSERT(!residual || nnc_tensor_same_shape(x, residual),
               "batchnorm2d_relu: residual %s must have the shape of x %s",
               residual ? nnc_tensor_shape_str(residual, sr, sizeof sr) : "", nnc_tensor_shape_str(x, sx, sizeof sx));
    return bn_op(g, x, gamma, beta, running_mean, running_var, momentum, eps, training, residual, 1);
}
