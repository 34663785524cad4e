/* nn/ops_elem.c - elementwise and shape ops: relu, scale, add (with broadcasts), the ResNet
 * option-A shortcut, reshape/flatten views and dropout. Forward/backward pairs side by side. */
#include <string.h>

#include "nn/ops.h"
#include "nn/threads.h"
#include "nn/vec.h"

/* ---- vectorised, thread-split elementwise passes over n floats ---- */
enum { EW_RELU, EW_RELU_BWD, EW_ADD, EW_ACC };
#define EW_CHUNK 16384

typedef struct ew_ctx {
    int kind;
    size_t n;
    const float *a, *b;
    float *y;
} ew_ctx;

/* RELU: y = a > 0 ? a : 0. RELU_BWD: y += a > 0 ? b : 0. ADD: y = a + b. ACC: y += a. */
static void ew_task(void *vctx, int task, int thread)
{
    (void)thread;
    const ew_ctx *c = vctx;
    size_t lo = (size_t)task * EW_CHUNK, hi = lo + EW_CHUNK < c->n ? lo + EW_CHUNK : c->n, i = lo;
    const float *a = c->a, *b = c->b;
    float *y = c->y;
    const nnc__v4 zero = nnc__v4_set1(0.0f);
    switch (c->kind) {
    case EW_RELU:
        for (; i + 4 <= hi; i += 4) {
            nnc__v4 v = nnc__v4_load(a + i);
            nnc__v4_store(y + i, nnc__v4_keep(v, v > zero));
        }
        for (; i < hi; i++) y[i] = a[i] > 0.0f ? a[i] : 0.0f;
        break;
    case EW_RELU_BWD:
        for (; i + 4 <= hi; i += 4)
            nnc__v4_store(y + i, nnc__v4_load(y + i) + nnc__v4_keep(nnc__v4_load(b + i), nnc__v4_load(a + i) > zero));
        for (; i < hi; i++)
            if (a[i] > 0.0f) y[i] += b[i];
        break;
    case EW_ADD:
        for (; i + 4 <= hi; i += 4) nnc__v4_store(y + i, nnc__v4_load(a + i) + nnc__v4_load(b + i));
        for (; i < hi; i++) y[i] = a[i] + b[i];
        break;
    default:
        for (; i + 4 <= hi; i += 4) nnc__v4_store(y + i, nnc__v4_load(y + i) + nnc__v4_load(a + i));
        for (; i < hi; i++) y[i] += a[i];
        break;
    }
}

static void ew_run(int kind, size_t n, const float *a, const float *b, float *y)
{
    ew_ctx c = {kind, n, a, b, y};
    nnc__parallel_for((int)((n + EW_CHUNK - 1) / EW_CHUNK), ew_task, &c);
}

/* ---- relu: x (any shape) -> y = max(x, 0) ---- */

static void relu_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0];
    const float *y = n->out->data, *dy = n->out->grad;
    ew_run(EW_RELU_BWD, x->numel, y, dy, nnc__grad(g, x));
}

nnc_tensor *nnc_relu(nnc_graph *g, nnc_tensor *x)
{
    NNC_ASSERT(g && x, "relu: NULL argument");
    nnc_tensor *y = nnc_tensor_new(g, x->ndim, x->shape);
    ew_run(EW_RELU, x->numel, x->data, NULL, y->data);
    nnc__record(g, "relu", relu_backward, y, 1, &x);
    return y;
}

/* ---- scale: x (any shape) -> y = s * x ---- */

static void scale_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0];
    const float *dy = n->out->grad;
    float s = n->fargs[0];
    float *dx = nnc__grad(g, x);
    for (size_t i = 0; i < x->numel; i++) dx[i] += s * dy[i];
}

nnc_tensor *nnc_scale(nnc_graph *g, nnc_tensor *x, float s)
{
    NNC_ASSERT(g && x, "scale: NULL argument");
    nnc_tensor *y = nnc_tensor_new(g, x->ndim, x->shape);
    for (size_t i = 0; i < x->numel; i++) y->data[i] = s * x->data[i];
    nnc_node *n = nnc__record(g, "scale", scale_backward, y, 1, &x);
    if (n) n->fargs[0] = s;
    return y;
}

/* ---- add: a (N,C,...) + b -> y (shape of a) ----
 * mode SAME: b has a's shape. CHANNEL: b (C), y[n,c,i] = a[n,c,i] + b[c], inner = prod(dims 2..).
 * ROW: b (1, dims 1..) of a, y[n,j] = a[n,j] + b[j]. */
enum { ADD_SAME, ADD_CHANNEL, ADD_ROW };

static int add_mode(const nnc_tensor *a, const nnc_tensor *b)
{
    if (nnc_tensor_same_shape(a, b)) return ADD_SAME;
    if (b->ndim == 1 && a->ndim >= 2 && b->shape[0] == a->shape[1]) return ADD_CHANNEL;
    if (b->ndim == a->ndim && b->shape[0] == 1) {
        for (int i = 1; i < a->ndim; i++)
            if (a->shape[i] != b->shape[i]) return -1;
        return ADD_ROW;
    }
    return -1;
}

static void add_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *a = n->in[0], *b = n->in[1];
    const float *dy = n->out->grad;
    if (a->requires_grad) {
        ew_run(EW_ACC, a->numel, dy, NULL, nnc__grad(g, a));
    }
    if (!b->requires_grad) return;
    float *db = nnc__grad(g, b);
    int mode = n->iargs[0];
    if (mode == ADD_SAME) {
        ew_run(EW_ACC, b->numel, dy, NULL, db);
    } else if (mode == ADD_CHANNEL) {
        size_t rows = (size_t)a->shape[0], c = (size_t)a->shape[1], inner = a->numel / (rows * c);
        for (size_t ch = 0; ch < c; ch++) {
            double s = 0;
            for (size_t r = 0; r < rows; r++) {
                const float *p = dy + (r * c + ch) * inner;
                for (size_t i = 0; i < inner; i++) s += p[i];
            }
            db[ch] += (float)s;
        }
    } else {
        size_t rows = (size_t)a->shape[0], inner = b->numel;
        for (size_t j = 0; j < inner; j++) {
            double s = 0;
            for (size_t r = 0; r < rows; r++) s += dy[r * inner + j];
            db[j] += (float)s;
        }
    }
}

nnc_tensor *nnc_add(nnc_graph *g, nnc_tensor *a, nnc_tensor *b)
{
    NNC_ASSERT(g && a && b, "add: NULL argument");
    int mode = add_mode(a, b);
    char sa[64], sb[64];
    NNC_ASSERT(mode >= 0, "add: cannot add %s and %s (same shape, (C) over channels or (1,...) over rows)",
               nnc_tensor_shape_str(a, sa, sizeof sa), nnc_tensor_shape_str(b, sb, sizeof sb));
    nnc_tensor *y = nnc_tensor_new(g, a->ndim, a->shape);
    if (mode == ADD_SAME) {
        ew_run(EW_ADD, a->numel, a->data, b->data, y->data);
    } else if (mode == ADD_CHANNEL) {
        size_t rows = (size_t)a->shape[0], c = (size_t)a->shape[1], inner = a->numel / (rows * c);
        for (size_t r = 0; r < rows; r++)
            for (size_t ch = 0; ch < c; ch++) {
                size_t off = (r * c + ch) * inner;
                float bv = b->data[ch];
                for (size_t i = 0; i < inner; i++) y->data[off + i] = a->data[off + i] + bv;
            }
    } else {
        size_t rows = (size_t)a->shape[0], inner = b->numel;
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < inner; j++)
                y->data[r * inner + j] = a->data[r * inner + j] + b->data[j];
    }
    nnc_tensor *in[2] = {a, b};
    nnc_node *n = nnc__record(g, "add", add_backward, y, 2, in);
    if (n) n->iargs[0] = mode;
    return y;
}

/* ---- shortcut_a: x (N,C,H,W) -> y (N,K,P,Q), P = ceil(H/s), Q = ceil(W/s), pad = (K-C)/2:
 * y[n,pad+c,i,j] = x[n,c,i*s,j*s]; the pad channels on either side are zero. ---- */

typedef struct sc_ctx {
    const float *src;
    float *dst;
    int C, H, W, K, P, Q, s, pad, backward;
} sc_ctx;

/* Image b: forward y[b] = subsampled, channel-padded x[b]; backward dx[b] += scattered dy[b]. */
static void shortcut_task(void *vctx, int b, int thread)
{
    (void)thread;
    const sc_ctx *t = vctx;
    const int C = t->C, H = t->H, W = t->W, K = t->K, P = t->P, Q = t->Q, s = t->s;
    if (!t->backward) memset(t->dst + (size_t)b * K * P * Q, 0, sizeof(float) * (size_t)K * P * Q);
    for (int c = 0; c < C; c++) {
        const float *x = t->backward ? NULL : t->src + (((size_t)b * C + c) * H) * W;
        float *y = t->backward ? NULL : t->dst + (((size_t)b * K + t->pad + c) * P) * Q;
        const float *dy = t->backward ? t->src + (((size_t)b * K + t->pad + c) * P) * Q : NULL;
        float *dx = t->backward ? t->dst + (((size_t)b * C + c) * H) * W : NULL;
        for (int i = 0; i < P; i++)
            for (int j = 0; j < Q; j++) {
                size_t xi = (size_t)i * s * W + (size_t)j * s;
                if (t->backward) dx[xi] += dy[i * Q + j];
                else y[i * Q + j] = x[xi];
            }
    }
}

static void shortcut_a_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0], *y = n->out;
    sc_ctx t = {y->grad, nnc__grad(g, x), x->shape[1], x->shape[2], x->shape[3], y->shape[1], y->shape[2],
                y->shape[3], n->iargs[0], (y->shape[1] - x->shape[1]) / 2, 1};
    nnc__parallel_for(x->shape[0], shortcut_task, &t);
}

nnc_tensor *nnc_shortcut_a(nnc_graph *g, nnc_tensor *x, int out_c, int stride)
{
    NNC_ASSERT(g && x, "shortcut_a: NULL argument");
    NNC_ASSERT(x->ndim == 4, "shortcut_a: x must be (N,C,H,W), got %d dims", x->ndim);
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    NNC_ASSERT(stride >= 1, "shortcut_a: stride %d", stride);
    NNC_ASSERT(out_c >= C && (out_c - C) % 2 == 0,
               "shortcut_a: out_c %d - in channels %d must be even and >= 0", out_c, C);
    int P = (H + stride - 1) / stride, Q = (W + stride - 1) / stride, pad = (out_c - C) / 2;
    nnc_tensor *y = nnc_tensor_new4(g, N, out_c, P, Q);
    sc_ctx t = {x->data, y->data, C, H, W, out_c, P, Q, stride, pad, 0};
    nnc__parallel_for(N, shortcut_task, &t);
    nnc_node *n = nnc__record(g, "shortcut_a", shortcut_a_backward, y, 1, &x);
    if (n) n->iargs[0] = stride;
    return y;
}

/* ---- reshape / flatten: a view sharing x's data; y has its own gradient buffer ---- */

static void reshape_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0];
    const float *dy = n->out->grad;
    ew_run(EW_ACC, x->numel, dy, NULL, nnc__grad(g, x));
}

nnc_tensor *nnc_reshape(nnc_graph *g, nnc_tensor *x, int ndim, const int *shape)
{
    NNC_ASSERT(g && x && shape, "reshape: NULL argument");
    NNC_ASSERT(ndim >= 1 && ndim <= NNC_MAX_DIMS, "reshape: ndim %d", ndim);
    for (int i = 0; i < ndim; i++) NNC_ASSERT(shape[i] > 0, "reshape: dimension %d is %d", i, shape[i]);
    char sx[64];
    NNC_ASSERT(nnc_shape_numel(ndim, shape) == x->numel, "reshape: %s has %zu elements, new shape %zu",
               nnc_tensor_shape_str(x, sx, sizeof sx), x->numel, nnc_shape_numel(ndim, shape));
    nnc_tensor *y = nnc_tensor_wrap(g, x->data, ndim, shape);
    nnc__record(g, "reshape", reshape_backward, y, 1, &x);
    return y;
}

nnc_tensor *nnc_flatten(nnc_graph *g, nnc_tensor *x)
{
    NNC_ASSERT(x != NULL, "flatten: NULL argument");
    int shape[2] = {x->shape[0], (int)(x->numel / (size_t)x->shape[0])};
    return nnc_reshape(g, x, 2, shape);
}

/* ---- dropout: x (any shape) -> y = x * keep / (1-p), keep ~ Bernoulli(1-p) per element ----
 * The 0/1 keep mask (one byte per element) is saved for backward. */

static void dropout_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *x = n->in[0];
    const unsigned char *keep = n->saved;
    const float *dy = n->out->grad;
    float scale = n->fargs[0];
    float *dx = nnc__grad(g, x);
    for (size_t i = 0; i < x->numel; i++)
        if (keep[i]) dx[i] += dy[i] * scale;
}

nnc_tensor *nnc_dropout(nnc_graph *g, nnc_tensor *x, float p, int training, nnc_rng *rng)
{
    NNC_ASSERT(g && x, "dropout: NULL argument");
    NNC_ASSERT(p >= 0.0f && p <= 1.0f, "dropout: p = %g outside [0, 1]", (double)p);
    if (!training || p == 0.0f) return x;
    NNC_ASSERT(rng != NULL, "dropout: training needs an rng");
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    nnc_tensor *y = nnc_tensor_new(g, x->ndim, x->shape);
    unsigned char *keep = nnc_graph_scratch(g, x->numel);
    for (size_t i = 0; i < x->numel; i++) {
        keep[i] = nnc_rng_uniform(rng) >= p;
        y->data[i] = keep[i] ? x->data[i] * scale : 0.0f;
    }
    nnc_node *n = nnc__record(g, "dropout", dropout_backward, y, 1, &x);
    if (n) {
        n->saved = keep;
        n->fargs[0] = scale;
    }
    return y;
}
