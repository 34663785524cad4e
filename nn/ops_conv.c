/* nn/ops_conv.c - conv2d and linear: the graph plumbing (shape checks, tape nodes, backward). The
 * convolution itself (its kernel sets, their dispatcher, the fusion hooks and the naive reference)
 * lives in nn/conv/ (nn/conv/conv.h).
 *
 * Layout of this file:
 *   1. the conv2d ops: asserts, output allocation, tape node, backward; conv2d_bn_relu (BN + ReLU
 *      after the conv) and bn_relu_conv2d (BN + ReLU folded into the conv's input staging).
 *   2. the linear op.
 * A recorded conv op also computes its output's per-channel batch statistics in the output
 * pass and keeps them in its node's cptr for a following batch norm (nn/ops_fuse.h).
 */
#include <math.h>
#include <string.h>

#include "nn/blas.h"
#include "nn/conv/conv.h"
#include "nn/ops.h"
#include "nn/ops_fuse.h"

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

/* ---------------------------------------------------------------------------------------------
 * 1. conv2d op
 * ------------------------------------------------------------------------------------------ */

static nnc__conv_shape conv_shape_of(const nnc_tensor *x, const nnc_tensor *w, int stride, int pad)
{
    nnc__conv_shape cs = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                     w->shape[3], stride, pad, 0, 0, (int)nnc_get_precision()};
    cs.p = out_size(cs.h, cs.r, stride, pad);
    cs.q = out_size(cs.w, cs.s, stride, pad);
    return cs;
}

static void conv2d_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->nin > 2 ? nd->in[2] : NULL;
    nnc__conv_shape cs = conv_shape_of(x, w, nd->iargs[0], nd->iargs[1]);
    int dx_fresh = 0;
    float *dx = x->requires_grad ? nnc__grad_fresh(g, x, &dx_fresh) : NULL;
    nnc__conv_backward(g, &cs, x->data, w->data, NULL, nd->out->grad, dx, dx_fresh,
                       w->requires_grad ? nnc__grad(g, w) : NULL, b && b->requires_grad ? nnc__grad(g, b) : NULL);
}

/* The argument checks of the conv ops (op: the name in messages). */
static void check_conv(const char *op, nnc_graph *g, const nnc_tensor *x, const nnc_tensor *w, const nnc_tensor *b,
                       int stride, int pad)
{
    char sx[64], sw[64], sb[64];
    NNC_ASSERT(g && x && w, "%s: NULL graph or tensor", op);
    NNC_ASSERT(x->ndim == 4, "%s: input must be (N,C,H,W), got %s", op, nnc_tensor_shape_str(x, sx, sizeof sx));
    NNC_ASSERT(w->ndim == 4, "%s: weight must be (K,C,R,S), got %s", op, nnc_tensor_shape_str(w, sw, sizeof sw));
    NNC_ASSERT(x->shape[1] == w->shape[1], "%s: channel mismatch: input %s has %d channels, weight %s expects %d",
               op, nnc_tensor_shape_str(x, sx, sizeof sx), x->shape[1], nnc_tensor_shape_str(w, sw, sizeof sw),
               w->shape[1]);
    NNC_ASSERT(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]), "%s: bias %s does not match weight %s (want (%d))",
               op, b ? nnc_tensor_shape_str(b, sb, sizeof sb) : "", nnc_tensor_shape_str(w, sw, sizeof sw),
               w->shape[0]);
    NNC_ASSERT(stride >= 1 && pad >= 0, "%s: stride %d must be >= 1 and pad %d >= 0", op, stride, pad);
    NNC_ASSERT(x->shape[2] + 2 * pad >= w->shape[2] && x->shape[3] + 2 * pad >= w->shape[3],
               "%s: kernel %s larger than padded input %s (pad %d)", op, nnc_tensor_shape_str(w, sw, sizeof sw),
               nnc_tensor_shape_str(x, sx, sizeof sx), pad);
}

/* Output statistics of a recorded conv node (2K doubles in the arena) or NULL. */
static double *record_stats(nnc_graph *g, nnc_node *nd, int k)
{
    if (!nd) return NULL;
    double *st = nnc_graph_scratch(g, 2 * (size_t)k * sizeof(double));
    nd->cptr = st;
    return st;
}

nnc_tensor *nnc_conv2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b, int stride, int pad)
{
    check_conv("conv2d", g, x, w, b, stride, pad);
    nnc__conv_shape cs = conv_shape_of(x, w, stride, pad);
    nnc_tensor *y = nnc_tensor_new4(g, cs.n, cs.k, cs.p, cs.q);
    nnc_tensor *ins[3] = {x, w, b};
    nnc_node *nd = nnc__record(g, "conv2d", conv2d_backward, y, b ? 3 : 2, ins);
    if (nd) {
        nd->iargs[0] = stride;
        nd->iargs[1] = pad;
    }
    nnc__conv_epilogue ep = {NULL, b ? b->data : NULL, NULL, 0};
    nnc__conv_fuse fu = {NULL, NULL, record_stats(g, nd, cs.k), NULL, NULL};
    nnc__conv_forward(g, &cs, x->data, w->data, &ep, &fu, y->data);
    return y;
}

/* saved (4C floats: mean, inv_std, scale, shift of the BN, nnc__bn_fold); iargs: stride, pad,
 * training. dz = dL/d relu(bn(x)) goes into x's own gradient buffer when that is new (the BN
 * backward then turns it into dx in place), else into a buffer taken like nnc__grad_fresh. */
static void bn_relu_conv2d_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2], *w = nd->in[3], *b = nd->in[4];
    const int C = x->shape[1];
    const float *saved = nd->saved;
    nnc__conv_shape cs = conv_shape_of(x, w, nd->iargs[0], nd->iargs[1]);
    nnc__conv_fuse fu = {saved + 2 * C, saved + 3 * C, NULL, saved, NULL};
    float *dgamma = gamma && gamma->requires_grad ? nnc__grad(g, gamma) : NULL;
    float *dbeta = beta && beta->requires_grad ? nnc__grad(g, beta) : NULL;
    float *dz = NULL;
    int in_place = 0, fresh;
    if (x->requires_grad && !x->grad) {
        dz = nnc__grad_fresh(g, x, &fresh);
        in_place = 1;
    } else if (x->requires_grad || dgamma || dbeta) {
        dz = nnc__grad_fresh(g, nnc_tensor_wrap(g, NULL, 4, x->shape), &fresh);
    }
    /* the conv's copy-out masks dz and takes the BN backward's per-plane sums */
    if (dz) fu.dsums = nnc_graph_scratch(g, 2 * (size_t)x->shape[0] * C * sizeof(double));
    int summed = nnc__conv_backward(g, &cs, x->data, w->data, &fu, nd->out->grad, dz, 1,
                                            w->requires_grad ? nnc__grad(g, w) : NULL,
                                            b && b->requires_grad ? nnc__grad(g, b) : NULL);
    if (dz)
        nnc__bn_relu_backward_x(x, gamma, saved, nd->iargs[2], dz, summed ? fu.dsums : NULL,
                                x->requires_grad ? x->grad : NULL, in_place, dgamma, dbeta);
}

nnc_tensor *nnc_bn_relu_conv2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                               nnc_tensor *running_mean, nnc_tensor *running_var, float momentum, float eps,
                               int training, nnc_tensor *w, nnc_tensor *b, int stride, int pad)
{
    check_conv("bn_relu_conv2d", g, x, w, b, stride, pad);
    const int C = x->shape[1];
    float *saved = nnc_graph_scratch(g, 4 * (size_t)C * sizeof(float));
    nnc__bn_fold(g, "bn_relu_conv2d", x, gamma, beta, running_mean, running_var, momentum, eps, training, saved);
    nnc__conv_shape cs = conv_shape_of(x, w, stride, pad);
    nnc_tensor *y = nnc_tensor_new4(g, cs.n, cs.k, cs.p, cs.q);
    nnc_tensor *ins[5] = {x, gamma, beta, w, b};
    nnc_node *nd = nnc__record(g, "bn_relu_conv2d", bn_relu_conv2d_backward, y, 5, ins);
    if (nd) {
        nd->iargs[0] = stride;
        nd->iargs[1] = pad;
        nd->iargs[2] = training;
        nd->saved = saved;
    }
    nnc__conv_epilogue ep = {NULL, b ? b->data : NULL, NULL, 0};
    nnc__conv_fuse fu = {saved + 2 * C, saved + 3 * C, record_stats(g, nd, cs.k), NULL, NULL};
    nnc__conv_forward(g, &cs, x->data, w->data, &ep, &fu, y->data);
    return y;
}

const double *nnc__conv_output_stats(nnc_graph *g, const nnc_tensor *y)
{
    if (!g || !y || y->node < 0 || y->node >= nnc_graph_num_nodes(g)) return NULL;
    const nnc_node *nd = nnc_graph_node(g, y->node);
    if (nd->out != y || (nd->backward != conv2d_backward && nd->backward != bn_relu_conv2d_backward)) return NULL;
    return nd->cptr;
}

/* conv2d -> batchnorm2d_relu. Inference (eval mode, nothing recorded) folds the running
 * statistics into the conv's output pass: one pass, one tensor. Otherwise the two ops. */
nnc_tensor *nnc_conv2d_bn_relu(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b, int stride, int pad,
                               nnc_tensor *gamma, nnc_tensor *beta, nnc_tensor *running_mean,
                               nnc_tensor *running_var, float momentum, float eps, int training,
                               nnc_tensor *residual)
{
    const nnc_tensor *all[6] = {x, w, b, gamma, beta, residual};
    int record = 0;
    for (int i = 0; i < 6; i++)
        if (all[i] && all[i]->requires_grad) record = nnc_graph_grad_enabled(g);
    if (training || record)
        return nnc_batchnorm2d_relu(g, nnc_conv2d(g, x, w, b, stride, pad), gamma, beta, running_mean, running_var,
                                    momentum, eps, training, residual);
    char s1[64], s2[64];
    NNC_ASSERT(x && w && x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1],
               "conv2d_bn_relu: x %s and w %s must be (N,C,H,W) and (K,C,R,S)",
               x ? nnc_tensor_shape_str(x, s1, sizeof s1) : "NULL", w ? nnc_tensor_shape_str(w, s2, sizeof s2) : "NULL");
    NNC_ASSERT(stride >= 1 && pad >= 0 && x->shape[2] + 2 * pad >= w->shape[2] && x->shape[3] + 2 * pad >= w->shape[3],
               "conv2d_bn_relu: stride %d / pad %d do not fit kernel %s on input %s", stride, pad,
               nnc_tensor_shape_str(w, s2, sizeof s2), nnc_tensor_shape_str(x, s1, sizeof s1));
    const int K = w->shape[0];
    const nnc_tensor *per_k[5] = {b, gamma, beta, running_mean, running_var};
    for (int i = 0; i < 5; i++)
        NNC_ASSERT(!per_k[i] || per_k[i]->numel == (size_t)K, "conv2d_bn_relu: per-channel tensor %d has %zu values, "
                   "the conv has %d filters", i, per_k[i]->numel, K);
    NNC_ASSERT(running_mean && running_var, "conv2d_bn_relu: eval mode needs running statistics");
    NNC_ASSERT(eps > 0.0f, "conv2d_bn_relu: eps %g", (double)eps);
    nnc__conv_shape cs = conv_shape_of(x, w, stride, pad);
    NNC_ASSERT(!residual || (residual->ndim == 4 && residual->shape[0] == cs.n && residual->shape[1] == K &&
                             residual->shape[2] == cs.p && residual->shape[3] == cs.q),
               "conv2d_bn_relu: residual %s must have the output shape (%d,%d,%d,%d)",
               residual ? nnc_tensor_shape_str(residual, s1, sizeof s1) : "", cs.n, K, cs.p, cs.q);
    float *sc = nnc_graph_scratch(g, 2 * (size_t)K * sizeof(float)), *sh = sc + K;
    for (int k = 0; k < K; k++) {
        float is = (float)(1.0 / sqrt((double)running_var->data[k] + (double)eps));
        sc[k] = (gamma ? gamma->data[k] : 1.0f) * is;
        sh[k] = (beta ? beta->data[k] : 0.0f) - running_mean->data[k] * sc[k] + (b ? b->data[k] * sc[k] : 0.0f);
    }
    nnc_tensor *y = nnc_tensor_new4(g, cs.n, cs.k, cs.p, cs.q);
    nnc__conv_epilogue ep = {sc, sh, residual ? residual->data : NULL, 1};
    nnc__conv_forward(g, &cs, x->data, w->data, &ep, NULL, y->data);
    return y;
}

const float *nnc_conv2d_infer_pack(nnc_graph *g, const nnc_tensor *w, int h, int wd, int stride, int pad)
{
    NNC_ASSERT(g && w && w->ndim == 4, "conv2d_infer_pack: weight must be (K,C,R,S)");
    nnc__conv_shape cs = {1, w->shape[1], h, wd, w->shape[0], w->shape[2], w->shape[3], stride, pad, 0, 0,
                          (int)nnc_get_precision()};
    cs.p = out_size(h, cs.r, stride, pad);
    cs.q = out_size(wd, cs.s, stride, pad);
    size_t n = nnc__conv_forward_pack_floats(&cs);
    if (!n) return NULL;
    float *wp = nnc_graph_scratch(g, n * sizeof(float));
    nnc__conv_forward_pack(&cs, w->data, wp);
    return wp;
}

nnc_tensor *nnc_conv2d_infer(nnc_graph *g, nnc_tensor *x, const nnc_tensor *w, const nnc_tensor *b, int stride,
                             int pad, const nnc_tensor *residual, int relu, const float *packed)
{
    char s1[64];
    check_conv("conv2d_infer", g, x, w, b, stride, pad);
    nnc__conv_shape cs = conv_shape_of(x, w, stride, pad);
    NNC_ASSERT(!residual || (residual->ndim == 4 && residual->shape[0] == cs.n && residual->shape[1] == cs.k &&
                             residual->shape[2] == cs.p && residual->shape[3] == cs.q),
               "conv2d_infer: residual %s must have the output shape (%d,%d,%d,%d)",
               residual ? nnc_tensor_shape_str(residual, s1, sizeof s1) : "", cs.n, cs.k, cs.p, cs.q);
    nnc_tensor *y = nnc_tensor_new4(g, cs.n, cs.k, cs.p, cs.q);
    nnc__conv_epilogue ep = {NULL, b ? b->data : NULL, residual ? residual->data : NULL, relu};
    nnc__conv_forward_packed(g, &cs, x->data, w->data, packed, &ep, y->data);
    return y;
}

/* ---------------------------------------------------------------------------------------------
 * 2. linear: x (N,D) (any trailing dims flattened), w (O,D), b (O) -> y (N,O) = x w^T + b.
 * ------------------------------------------------------------------------------------------ */

static void linear_backward(nnc_graph *g, nnc_node *nd)
{
    nnc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->nin > 2 ? nd->in[2] : NULL;
    const int N = nd->iargs[0], D = nd->iargs[1], O = nd->iargs[2];
    const float *dy = nd->out->grad;
    if (x->requires_grad) /* dx (N,D) += dy (N,O) * w (O,D) */
        nnc__sgemm(0, 0, N, D, O, 1.0f, dy, O, w->data, D, 1.0f, nnc__grad(g, x), D);
    if (w->requires_grad) /* dw (O,D) += dy^T (O,N) * x (N,D) */
        nnc__sgemm(1, 0, O, D, N, 1.0f, dy, O, x->data, D, 1.0f, nnc__grad(g, w), D);
    if (b && b->requires_grad) {
        float *db = nnc__grad(g, b);
        for (int o = 0; o < O; o++) {
            double acc = 0;
            for (int i = 0; i < N; i++) acc += dy[(size_t)i * O + o];
            db[o] += (float)acc;
        }
    }
}

nnc_tensor *nnc_linear(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b)
{
    char sx[64], sw[64], sb[64];
    NNC_ASSERT(g && x && w, "linear: NULL graph or tensor");
    NNC_ASSERT(x->ndim >= 2, "linear: input must be (N,D...), got %s",
               nnc_tensor_shape_str(x, sx, sizeof sx));
    NNC_ASSERT(w->ndim == 2, "linear: weight must be (O,D), got %s",
               nnc_tensor_shape_str(w, sw, sizeof sw));
    const int N = x->shape[0], O = w->shape[0];
    const size_t D = x->numel / (size_t)N;
    NNC_ASSERT(D == (size_t)w->shape[1],
               "linear: feature mismatch: input %s has %zu features per row, weight %s expects %d",
               nnc_tensor_shape_str(x, sx, sizeof sx), D, nnc_tensor_shape_str(w, sw, sizeof sw),
               w->shape[1]);
    NNC_ASSERT(!b || (b->ndim == 1 && b->shape[0] == O),
               "linear: bias %s does not match weight %s (want (%d))",
               nnc_tensor_shape_str(b, sb, sizeof sb), nnc_tensor_shape_str(w, sw, sizeof sw), O);

    int shape[2] = {N, O};
    nnc_tensor *y = nnc_tensor_new(g, 2, shape);
    if (b)
        for (int i = 0; i < N; i++) memcpy(y->data + (size_t)i * O, b->data, sizeof(float) * (size_t)O);
    nnc__sgemm(0, 1, N, O, (int)D, 1.0f, x->data, (int)D, w->data, (int)D, b ? 1.0f : 0.0f, y->data, O);

    nnc_tensor *ins[3] = {x, w, b};
    nnc_node *nd = nnc__record(g, "linear", linear_backward, y, b ? 3 : 2, ins);
    if (nd) {
        nd->iargs[0] = N;
        nd->iargs[1] = (int)D;
        nd->iargs[2] = O;
    }
    return y;
}
