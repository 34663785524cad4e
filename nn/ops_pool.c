/* nn/ops_pool.c - max/average pooling over k x k windows and global average pooling.
 *
 * The window loops are already the naive definition (clipped to the image), so these ops are
 * their own reference; tests compare them with independently written loops.
 */
#include <math.h>
#include <string.h>

#include "nn/ops.h"
#include "nn/threads.h"

typedef struct pool_shape {
    int n, c, h, w;
    int k, stride, pad;
    int p, q;
} pool_shape;

static pool_shape pool_check(const char *op, const nnc_tensor *x, int k, int stride, int pad)
{
    char sx[64];
    NNC_ASSERT(x != NULL, "%s: NULL input", op);
    NNC_ASSERT(x->ndim == 4, "%s: input must be (N,C,H,W), got %s", op,
               nnc_tensor_shape_str(x, sx, sizeof sx));
    NNC_ASSERT(k >= 1 && stride >= 1 && pad >= 0, "%s: kernel %d and stride %d must be >= 1, pad %d >= 0",
               op, k, stride, pad);
    NNC_ASSERT(2 * pad <= k, "%s: pad %d must be at most half the kernel size %d", op, pad, k);
    NNC_ASSERT(x->shape[2] + 2 * pad >= k && x->shape[3] + 2 * pad >= k,
               "%s: kernel %d larger than padded input %s (pad %d)", op, k,
               nnc_tensor_shape_str(x, sx, sizeof sx), pad);
    pool_shape ps = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], k, stride, pad, 0, 0};
    ps.p = (ps.h + 2 * pad - k) / stride + 1;
    ps.q = (ps.w + 2 * pad - k) / stride + 1;
    return ps;
}

/* The window of output row/column o clipped to the image: [*lo, *hi). Never empty, since
 * 2*pad <= k (pool_check). */
static void window(int o, int stride, int pad, int k, int n_in, int *lo, int *hi)
{
    int a = o * stride - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > n_in ? n_in : b;
}

/* ---- max pool: x (N,C,H,W) -> y (N,C,P,Q); idx (N,C,P,Q) = argmax offset within the plane. */

/* Max of the window [h0,h1) x [w0,w1) of plane xp in row-major order: strict > keeps the first
 * maximum; a NaN wins and stays (propagates). Returns the value, *best its offset. */
static inline float window_max(const float *xp, int w, int h0, int h1, int w0, int w1, int *best)
{
    int bi = h0 * w + w0;
    float m = xp[bi];
    for (int ih = h0; ih < h1; ih++)
        for (int iw = w0; iw < w1; iw++) {
            float v = xp[ih * w + iw];
            if (!isnan(m) && (v > m || isnan(v))) {
                m = v;
                bi = ih * w + iw;
            }
        }
    *best = bi;
    return m;
}

typedef struct pool_ctx {
    const pool_shape *ps;
    const float *x, *dy;
    float *y, *dx;
    int *idx;
    const int *cidx;
    int dx_fresh;
} pool_ctx;

/* Image n: its C planes. */
static void max_fwd_task(void *vctx, int n, int thread)
{
    (void)thread;
    const pool_ctx *c = vctx;
    const pool_shape *ps = c->ps;
    const size_t hw = (size_t)ps->h * ps->w, pq = (size_t)ps->p * ps->q;
    for (size_t pl = (size_t)n * ps->c; pl < (size_t)(n + 1) * ps->c; pl++) {
        const float *xp = c->x + pl * hw;
        float *y = c->y + pl * pq;
        int *idx = c->idx ? c->idx + pl * pq : NULL;
        for (int p = 0; p < ps->p; p++) {
            int h0, h1;
            window(p, ps->stride, ps->pad, ps->k, ps->h, &h0, &h1);
            for (int q = 0; q < ps->q; q++) {
                int best, w0, w1;
                window(q, ps->stride, ps->pad, ps->k, ps->w, &w0, &w1);
                float m = window_max(xp, ps->w, h0, h1, w0, w1, &best);
                y[(size_t)p * ps->q + q] = m;
                if (idx) idx[(size_t)p * ps->q + q] = best;
            }
        }
    }
}

/* Image n: dx of its planes (+)= dy scattered to the argmax positions. */
static void max_bwd_task(void *vctx, int n, int thread)
{
    (void)thread;
    const pool_ctx *c = vctx;
    const pool_shape *ps = c->ps;
    const size_t hw = (size_t)ps->h * ps->w, pq = (size_t)ps->p * ps->q;
    for (size_t pl = (size_t)n * ps->c; pl < (size_t)(n + 1) * ps->c; pl++) {
        float *dx = c->dx + pl * hw;
        if (c->dx_fresh) memset(dx, 0, sizeof(float) * hw);
        for (size_t o = 0; o < pq; o++) dx[c->cidx[pl * pq + o]] += c->dy[pl * pq + o];
    }
}

static void max_pool_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0];
    pool_shape ps = pool_check("max_pool2d", x, nd->iargs[0], nd->iargs[1], nd->iargs[2]);
    pool_ctx c = {&ps, NULL, nd->out->grad, NULL, NULL, NULL, nd->saved, 0};
    c.dx = nnc__grad_fresh(g, x, &c.dx_fresh);
    nnc__parallel_for(ps.n, max_bwd_task, &c);
}

nnc_tensor *nnc_max_pool2d(nnc_graph *g, nnc_tensor *x, int k, int stride, int pad)
{
    pool_shape ps = pool_check("max_pool2d", x, k, stride, pad);
    nnc_tensor *y = nnc_tensor_new4(g, ps.n, ps.c, ps.p, ps.q);
    int record = nnc_graph_grad_enabled(g) && x->requires_grad;
    int *idx = record ? nnc_graph_scratch(g, y->numel * sizeof(int)) : NULL;
    pool_ctx c = {&ps, x->data, NULL, y->data, NULL, idx, NULL, 0};
    nnc__parallel_for(ps.n, max_fwd_task, &c);
    nnc_node *nd = nnc__record(g, "max_pool2d", max_pool_backward, y, 1, &x);
    if (nd) {
        nd->saved = idx;
        nd->iargs[0] = k;
        nd->iargs[1] = stride;
        nd->iargs[2] = pad;
    }
    return y;
}

/* ---- average pool (count_include_pad): y = sum over the clipped window / (k*k). */

static void avg_pool_forward(const float *x, float *y, const pool_shape *ps)
{
    const size_t planes = (size_t)ps->n * ps->c, hw = (size_t)ps->h * ps->w;
    const size_t pq = (size_t)ps->p * ps->q;
    const float inv = 1.0f / (float)(ps->k * ps->k);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * hw;
        for (int p = 0; p < ps->p; p++) {
            int h0, h1;
            window(p, ps->stride, ps->pad, ps->k, ps->h, &h0, &h1);
            for (int q = 0; q < ps->q; q++) {
                int w0, w1;
                window(q, ps->stride, ps->pad, ps->k, ps->w, &w0, &w1);
                float acc = 0.0f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) acc += xp[ih * ps->w + iw];
                y[pl * pq + (size_t)p * ps->q + q] = acc * inv;
            }
        }
    }
}

static void avg_pool_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0];
    pool_shape ps = pool_check("avg_pool2d", x, nd->iargs[0], nd->iargs[1], nd->iargs[2]);
    const float *dy = nd->out->grad;
    float *dx = nnc__grad(g, x);
    const size_t planes = (size_t)ps.n * ps.c, hw = (size_t)ps.h * ps.w, pq = (size_t)ps.p * ps.q;
    const float inv = 1.0f / (float)(ps.k * ps.k);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * hw;
        for (int p = 0; p < ps.p; p++) {
            int h0, h1;
            window(p, ps.stride, ps.pad, ps.k, ps.h, &h0, &h1);
            for (int q = 0; q < ps.q; q++) {
                int w0, w1;
                window(q, ps.stride, ps.pad, ps.k, ps.w, &w0, &w1);
                float d = dy[pl * pq + (size_t)p * ps.q + q] * inv;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) dxp[ih * ps.w + iw] += d;
            }
        }
    }
}

nnc_tensor *nnc_avg_pool2d(nnc_graph *g, nnc_tensor *x, int k, int stride, int pad)
{
    pool_shape ps = pool_check("avg_pool2d", x, k, stride, pad);
    nnc_tensor *y = nnc_tensor_new4(g, ps.n, ps.c, ps.p, ps.q);
    avg_pool_forward(x->data, y->data, &ps);
    nnc_node *nd = nnc__record(g, "avg_pool2d", avg_pool_backward, y, 1, &x);
    if (nd) {
        nd->iargs[0] = k;
        nd->iargs[1] = stride;
        nd->iargs[2] = pad;
    }
    return y;
}

/* ---- global average pool: x (N,C,H,W) -> y (N,C), the mean of each plane. */

static void global_avg_pool_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0];
    const size_t planes = (size_t)x->shape[0] * x->shape[1];
    const size_t hw = (size_t)x->shape[2] * x->shape[3];
    const float *dy = nd->out->grad;
    float *dx = nnc__grad(g, x);
    const float inv = 1.0f / (float)hw;
    for (size_t pl = 0; pl < planes; pl++) {
        float d = dy[pl] * inv;
        for (size_t i = 0; i < hw; i++) dx[pl * hw + i] += d;
    }
}

nnc_tensor *nnc_global_avg_pool(nnc_graph *g, nnc_tensor *x)
{
    char sx[64];
    NNC_ASSERT(x != NULL, "global_avg_pool: NULL input");
    NNC_ASSERT(x->ndim == 4, "global_avg_pool: input must be (N,C,H,W), got %s",
               nnc_tensor_shape_str(x, sx, sizeof sx));
    int shape[2] = {x->shape[0], x->shape[1]};
    nnc_tensor *y = nnc_tensor_new(g, 2, shape);
    const size_t planes = (size_t)shape[0] * shape[1];
    const size_t hw = (size_t)x->shape[2] * x->shape[3];
    for (size_t pl = 0; pl < planes; pl++) {
        double acc = 0;
        for (size_t i = 0; i < hw; i++) acc += x->data[pl * hw + i];
        y->data[pl] = (float)(acc / (double)hw);
    }
    nnc__record(g, "global_avg_pool", global_avg_pool_backward, y, 1, &x);
    return y;
}
