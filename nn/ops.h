/* nn/ops.h - differentiable ops on step tensors.
 *
 * Every op allocates its output in the graph's arena, computes the forward pass, and (grad mode
 * on, some input requiring grad) records a tape node whose backward accumulates into the
 * inputs' ->grad. Shapes are NCHW. Shape mismatches between tensors the caller built are
 * programmer errors and abort through NNC_ASSERT.
 *
 * Each op has a naive reference kernel next to its fast one (nnc_ref_* below) so tests can
 * compare them; callers never need the references.
 *
 * Thread-safety: ops touch only their graph, inputs and outputs; different graphs may run
 * concurrently on different threads.
 */
#ifndef NNC_OPS_H
#define NNC_OPS_H

#include "nn/rng.h"
#include "nn/tensor.h"

/* conv2d: x (N,C,H,W), w (K,C,R,S), b (K) or NULL -> (N,K,P,Q),
 * P = (H + 2*pad - R)/stride + 1, Q likewise. Cross-correlation, as in PyTorch. When recorded
 * it also computes its output's per-channel batch statistics in its output pass, which a
 * training-mode batch norm of that output then uses instead of passes of its own. */
nnc_tensor *nnc_conv2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b, int stride, int pad);

/* linear: x (N, D...) flattened to (N,D), w (O,D), b (O) or NULL -> (N,O). */
nnc_tensor *nnc_linear(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b);

/* batchnorm2d: x (N,C,H,W), gamma/beta (C), running_mean/var (C) buffers.
 * training: normalise with batch statistics (biased variance), then update running stats
 *   r = (1-momentum) r + momentum * batch_stat (unbiased variance for running_var, as PyTorch).
 * eval: normalise with the running statistics. running_* may be NULL in training.
 * Also accepts x (N,C) (H = W = 1); gamma/beta NULL mean 1 and 0. Training asserts
 * N*H*W > 1. The running-stat update happens in the forward, whether or not grad is on. In
 * training, when x is the output of a recorded conv op, the batch statistics are the ones that
 * conv took in its output pass (equal up to float rounding; no statistics pass over x). */
nnc_tensor *nnc_batchnorm2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                            nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                            float eps, int training);

/* Fused batchnorm2d + residual add + ReLU in one pass over memory, with one output tensor:
 * y = relu(batchnorm2d(x) + residual), residual of x's shape or NULL (then y = relu(bn(x))).
 * Arguments, statistics and running-stat update as nnc_batchnorm2d; the values and gradients
 * equal those of the separate ops up to float rounding. */
nnc_tensor *nnc_batchnorm2d_relu(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                                 nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                                 float eps, int training, nnc_tensor *residual);

/* Inference convolution (never recorded, whatever the graph's grad mode): y = conv(x, w) + b
 * (+ residual), then max(y, 0) when relu; b and residual may be NULL, residual has the output's
 * shape. The bias, residual and ReLU are applied in the conv's output pass while the output is
 * cache-hot. packed: NULL, or w packed once by nnc_conv2d_infer_pack for this precision (the
 * same values, without packing w again in every call). Used by nnc_model_forward_infer with
 * batch-norm-folded weights. */
nnc_tensor *nnc_conv2d_infer(nnc_graph *g, nnc_tensor *x, const nnc_tensor *w, const nnc_tensor *b, int stride,
                             int pad, const nnc_tensor *residual, int relu, const float *packed);
/* w (K,C,R,S) packed in g's arena for nnc_conv2d_infer on inputs of h x wd images at this
 * stride and pad and the current precision, or NULL when the layer's kernel set packs its
 * weights per call anyway. */
const float *nnc_conv2d_infer_pack(nnc_graph *g, const nnc_tensor *w, int h, int wd, int stride, int pad);

/* conv2d followed by batchnorm2d_relu (same arguments as the two ops; b may be NULL):
 * y = relu(bn(conv(x)) + residual). In eval mode with nothing to record (grad off or no input
 * requiring grad) the BN affine map, residual and ReLU are applied in the conv's output pass
 * (no intermediate tensor); otherwise it records the two ops. */
nnc_tensor *nnc_conv2d_bn_relu(nnc_graph *g, nnc_tensor *x, nnc_tensor *w, nnc_tensor *b, int stride, int pad,
                               nnc_tensor *gamma, nnc_tensor *beta, nnc_tensor *running_mean,
                               nnc_tensor *running_var, float momentum, float eps, int training,
                               nnc_tensor *residual);

/* batchnorm2d followed by ReLU followed by conv2d: y = conv2d(relu(batchnorm2d(x)), w, b, stride,
 * pad), BN arguments and running-stat update as nnc_batchnorm2d, conv arguments as nnc_conv2d.
 * relu(bn(x)) is never stored: the conv applies it while staging its input (forward, and again
 * for the weight gradient), and the backward recomputes the ReLU mask from x. Values and
 * gradients equal those of the three separate ops up to float rounding. */
nnc_tensor *nnc_bn_relu_conv2d(nnc_graph *g, nnc_tensor *x, nnc_tensor *gamma, nnc_tensor *beta,
                               nnc_tensor *running_mean, nnc_tensor *running_var, float momentum, float eps,
                               int training, nnc_tensor *w, nnc_tensor *b, int stride, int pad);

nnc_tensor *nnc_relu(nnc_graph *g, nnc_tensor *x);
/* scale: y = s * x (any shape). */
nnc_tensor *nnc_scale(nnc_graph *g, nnc_tensor *x, float s);

/* max_pool2d / avg_pool2d: (N,C,H,W) -> (N,C,P,Q), P = (H + 2*pad - k)/stride + 1.
 * max: padding is -inf, gradient goes to the first maximum. avg: divides by k*k (padding
 * counts, PyTorch's count_include_pad=True). */
nnc_tensor *nnc_max_pool2d(nnc_graph *g, nnc_tensor *x, int k, int stride, int pad);
nnc_tensor *nnc_avg_pool2d(nnc_graph *g, nnc_tensor *x, int k, int stride, int pad);
/* global average pool: (N,C,H,W) -> (N,C). */
nnc_tensor *nnc_global_avg_pool(nnc_graph *g, nnc_tensor *x);

/* add: a + b. Same shape, or b broadcast as (C) over a (N,C,...) or b (1,...) rows. */
nnc_tensor *nnc_add(nnc_graph *g, nnc_tensor *a, nnc_tensor *b);

/* ResNet option-A shortcut: x (N,C,H,W) -> (N,out_c,ceil(H/stride),ceil(W/stride)):
 * spatial subsample x[:, :, ::stride, ::stride], then zero channels padded equally on both
 * sides ((out_c - C)/2 each; out_c - C must be even). */
nnc_tensor *nnc_shortcut_a(nnc_graph *g, nnc_tensor *x, int out_c, int stride);

/* reshape: same numel, new shape (a view of the data; gradient flows back). The output aliases
 * x->data but has its own gradient buffer, accumulated into x's by backward. */
nnc_tensor *nnc_reshape(nnc_graph *g, nnc_tensor *x, int ndim, const int *shape);
/* flatten: (N, ...) -> (N, rest). */
nnc_tensor *nnc_flatten(nnc_graph *g, nnc_tensor *x);

/* dropout: training zeroes each element with probability p and scales the rest by 1/(1-p)
 * (mask drawn from rng, one uniform per element in order; p == 1 zeroes everything); eval (or
 * p == 0) is the identity and returns x itself, recording nothing. */
nnc_tensor *nnc_dropout(nnc_graph *g, nnc_tensor *x, float p, int training, nnc_rng *rng);

typedef enum nnc_reduction { NNC_REDUCE_MEAN = 0, NNC_REDUCE_SUM = 1 } nnc_reduction;

/* softmax cross-entropy: logits (N,K), labels[N] in [0,K) -> scalar loss (shape (1)).
 * smoothing s: target = (1-s) one-hot + s/K. Mean divides by N. Labels are copied (the caller's
 * array need not outlive the call); a label out of range is a programmer error (assert). */
nnc_tensor *nnc_softmax_cross_entropy(nnc_graph *g, nnc_tensor *logits, const int *labels,
                                      nnc_reduction reduction, float smoothing);
/* argmax per row: t (N, ...) viewed as (N, numel/N) -> out[n] = index of the first maximum of
 * row n (predicted class). Not differentiable; records nothing. */
void nnc_argmax_rows(const nnc_tensor *t, int *out);

/* --- naive reference kernels (forward and backward), for tests --- */
void nnc_ref_conv2d_forward(const float *x, const float *w, const float *b, float *y, int n, int c,
                            int h, int wd, int k, int r, int s, int stride, int pad);
/* dx, dw, db may be NULL; they are accumulated into (+=). */
void nnc_ref_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                             float *db, int n, int c, int h, int wd, int k, int r, int s, int stride,
                             int pad);

#endif
