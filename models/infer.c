/* models/infer.c - nnc_model_forward_infer: the inference path of eval, predict and `nnc bench`
 * (models/models.h).
 *
 * Each call first builds a plan in the graph's arena from the model's current parameters and
 * running statistics: every CONV followed by a BN gets folded weights and bias
 *     s[k] = gamma[k] * (float)(1 / sqrt(var[k] + eps))      (the rounding nnc_batchnorm2d uses)
 *     W'[k] = W[k] * s[k],   b'[k] = beta[k] + (b[k] - mean[k]) * s[k]   (b = 0 without a bias)
 * and, where the layer's kernel set takes them (the direct, channel-vectorised and BF16 sets;
 * not the GEMM set), the folded weights packed once for the whole batch instead of once per
 * slice. Then the layers run without a tape:
 * CONV [-> BN] [-> RESIDUAL] [-> RELU] as one nnc_conv2d_infer (bias, residual add and ReLU in
 * the conv's output pass), the batch in slices of NNC__INFER_SLICE images up to
 * nnc__model_infer_split (a slice's activations stay in the L2 cache) and whole after it.
 *
 * The plan is rebuilt on every call (a few hundred thousand multiplies, against millions of
 * MACs per image), so it can never be stale: parameters or statistics changed by training, BN
 * re-estimation or a checkpoint load are seen by the next call.
 *
 * Values: the same as nnc_model_forward in eval mode up to float rounding (the fold rounds
 * W * s once per weight where the unfolded path scales each sum once); bitwise the same for any
 * kernel thread count (the kernels are). Thread-safety: as nnc_model_forward (reads the model).
 */
#include <math.h>
#include <string.h>

#include "models/layers.h"

#define BN_EPS 1e-5f /* nnc_model_forward's batch norms */

typedef struct infer_op {
    nnc_tensor *w, *b;   /* conv weights and bias (folded when bn), or the layer's own */
    const float *packed; /* w packed for its kernel set, or NULL */
    int span;            /* layers this op covers from its CONV */
    int relu, resid;
} infer_op;

/* Conv layer i's weights and bias with the BN layer bn folded in (bn NULL: its own). */
static void fold(nnc_model *m, nnc_graph *g, const nnc__layer *l, const nnc__layer *bn, infer_op *op)
{
    nnc_params *p = m->params;
    nnc_tensor *w = nnc_params_tensor(p, l->p[0]), *b = l->p[1] >= 0 ? nnc_params_tensor(p, l->p[1]) : NULL;
    if (!bn) {
        op->w = w;
        op->b = b;
        return;
    }
    const float *gamma = nnc_params_ptr(p, bn->p[0]), *beta = nnc_params_ptr(p, bn->p[1]);
    const float *mean = nnc_params_ptr(p, bn->p[2]), *var = nnc_params_ptr(p, bn->p[3]);
    const int K = w->shape[0];
    const size_t per = w->numel / (size_t)K;
    op->w = nnc_tensor_new(g, w->ndim, w->shape);
    op->b = nnc_tensor_new(g, 1, &K);
    for (int k = 0; k < K; k++) {
        float s = gamma[k] * (float)(1.0 / sqrt((double)var[k] + (double)BN_EPS));
        const float *src = w->data + (size_t)k * per;
        float *dst = op->w->data + (size_t)k * per;
        for (size_t j = 0; j < per; j++) dst[j] = src[j] * s;
        op->b->data[k] = beta[k] + ((b ? b->data[k] : 0.0f) - mean[k]) * s;
    }
}

/* The plan: one op per CONV layer (index of the layer), NULL entries elsewhere. */
static infer_op *build_plan(nnc_model *m, nnc_graph *g)
{
    infer_op *ops = nnc_graph_scratch(g, sizeof(infer_op) * (size_t)m->nlayers);
    memset(ops, 0, sizeof(infer_op) * (size_t)m->nlayers);
    for (int i = 0; i < m->nlayers; i++) {
        const nnc__layer *l = &m->layers[i];
        if (l->kind != NNC__L_CONV) continue;
        const int n = m->nlayers;
        const nnc__layer *n1 = i + 1 < n ? l + 1 : NULL, *n2 = i + 2 < n ? l + 2 : NULL, *n3 = i + 3 < n ? l + 3 : NULL;
        infer_op *op = &ops[i];
        const int bn = n1 && n1->kind == NNC__L_BN;
        fold(m, g, l, bn ? n1 : NULL, op);
        const nnc__layer *a = bn ? n2 : n1, *c = bn ? n3 : n2; /* after the conv (and its BN) */
        op->span = 1 + bn;
        if (a && a->kind == NNC__L_RELU) {
            op->relu = 1;
            op->span += 1;
        } else if (a && a->kind == NNC__L_RESIDUAL && c && c->kind == NNC__L_RELU) {
            op->resid = op->relu = 1;
            op->span += 2;
        }
        op->packed = nnc_conv2d_infer_pack(g, op->w, l->in_shape[1], l->in_shape[2], l->stride, l->pad);
    }
    return ops;
}

/* The residual input of RESIDUAL layer l: the saved activation, or its option-A shortcut. */
static nnc_tensor *shortcut(nnc_graph *g, const nnc__layer *l, nnc_tensor *saved)
{
    if (l->stride != 1 || l->out_c != l->in_shape[0]) return nnc_shortcut_a(g, saved, l->out_c, l->stride);
    return saved;
}

/* Layers [from, to) on x (no op spans the range's end: nnc__model_infer_split). */
static nnc_tensor *run_layers(nnc_model *m, nnc_graph *g, const infer_op *ops, nnc_tensor *x, int from, int to)
{
    nnc_params *p = m->params;
#define T(i) ((i) >= 0 ? nnc_params_tensor(p, (i)) : NULL)
    nnc_tensor *saved = NULL;
    for (int i = from; i < to; i++) {
        const nnc__layer *l = &m->layers[i];
        switch (l->kind) {
        case NNC__L_CONV: {
            const infer_op *op = &ops[i];
            NNC_ASSERT(i + op->span <= to, "model %s: inference op at layer %d crosses a slice boundary", m->arch, i);
            nnc_tensor *res = op->resid ? shortcut(g, &m->layers[i + op->span - 2], saved) : NULL;
            x = nnc_conv2d_infer(g, x, op->w, op->b, l->stride, l->pad, res, op->relu, op->packed);
            i += op->span - 1;
            break;
        }
        case NNC__L_BN: /* not after a conv: the eval-mode batch norm [+ ReLU] */
            if (i + 1 < to && l[1].kind == NNC__L_RELU) {
                x = nnc_batchnorm2d_relu(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, BN_EPS, 0, NULL);
                i += 1;
            } else {
                x = nnc_batchnorm2d(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, BN_EPS, 0);
            }
            break;
        case NNC__L_RELU: x = nnc_relu(g, x); break;
        case NNC__L_MAXPOOL: x = nnc_max_pool2d(g, x, l->k, l->stride, 0); break;
        case NNC__L_GAP: x = nnc_global_avg_pool(g, x); break;
        case NNC__L_LINEAR: x = nnc_linear(g, x, T(l->p[0]), T(l->p[1])); break;
        case NNC__L_DROPOUT: break; /* identity in eval mode */
        case NNC__L_SAVE: saved = x; break;
        case NNC__L_RESIDUAL: x = nnc_add(g, x, shortcut(g, l, saved)); break;
        }
    }
#undef T
    return x;
}

nnc_tensor *nnc_model_forward_infer(nnc_model *m, nnc_graph *g, nnc_tensor *x)
{
    NNC_ASSERT(m && g && x, "model_forward_infer: NULL argument");
    NNC_ASSERT(x->ndim == 4 && x->shape[1] == m->cfg.in_channels && x->shape[2] == m->cfg.image_size &&
                   x->shape[3] == m->cfg.image_size,
               "model %s: input must be (N,%d,%d,%d)", m->arch, m->cfg.in_channels, m->cfg.image_size,
               m->cfg.image_size);
    const int grad = nnc_graph_grad_enabled(g);
    nnc_graph_set_grad(g, 0); /* nothing is recorded; the caller's mode comes back at the end */
    const infer_op *ops = build_plan(m, g);
    const int N = x->shape[0], S = NNC__INFER_SLICE, split = nnc__model_infer_split(m);
    nnc_tensor *out = NULL;
    if (N <= S || split == 0) {
        out = run_layers(m, g, ops, x, 0, m->nlayers);
    } else {
        const size_t per = x->numel / (size_t)N;
        for (int n0 = 0; n0 < N; n0 += S) {
            int shape[4] = {N - n0 < S ? N - n0 : S, x->shape[1], x->shape[2], x->shape[3]};
            nnc_tensor *y = run_layers(m, g, ops, nnc_tensor_wrap(g, x->data + (size_t)n0 * per, 4, shape), 0, split);
            if (!out) {
                int os[NNC_MAX_DIMS] = {N, y->shape[1], y->shape[2], y->shape[3]};
                out = nnc_tensor_new(g, y->ndim, os);
            }
            size_t row = y->numel / (size_t)shape[0];
            memcpy(out->data + (size_t)n0 * row, y->data, y->numel * sizeof(float));
        }
        if (split < m->nlayers) out = run_layers(m, g, ops, out, split, m->nlayers);
    }
    nnc_graph_set_grad(g, grad);
    return out;
}
