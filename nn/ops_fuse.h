/* nn/ops_fuse.h - plumbing of the fused batch-norm paths shared by nn/ops_conv.c, nn/ops_norm.c
 * and nn/conv_fast.c (internal to nn/).
 *
 * Batch statistics from the conv: a conv op that is recorded on the tape (nnc_conv2d,
 * nnc_bn_relu_conv2d) computes the per-channel mean and biased variance of its output in its
 * output pass, while each output plane is L1-hot, and keeps them on its tape node. A
 * training-mode batch norm whose input is that very tensor takes them instead of making its own
 * two passes over it (nnc__conv_output_stats).
 * BN + ReLU as a conv prologue: nnc_bn_relu_conv2d never stores relu(bn(x)); the conv applies
 * z = max(x * scale[c] + shift[c], 0) while staging its input and its backward recomputes the
 * ReLU mask from x with the same float expression (nnc__bnrelu_v4 / nnc__bnrelu).
 *
 * Ownership: the statistics and the BN parameters live in the graph's arena (step lifetime).
 * Thread-safety: like the ops; the inline helpers are pure.
 */
#ifndef NNC_OPS_FUSE_H
#define NNC_OPS_FUSE_H

#include "nn/tensor.h"
#include "nn/vec.h"

/* max(x * sc + sh, 0) on 4 lanes; nnc__bnrelu_mask_v4 is its ReLU mask (x * sc + sh > 0). The
 * scalar nnc__bnrelu gives lane for lane the same value (plain float multiply and add, no
 * contraction at the project's flags), so every user agrees bit for bit on z and its mask. */
static inline nnc__v4i nnc__bnrelu_mask_v4(nnc__v4 x, nnc__v4 sc, nnc__v4 sh)
{
    return x * sc + sh > nnc__v4_set1(0.0f);
}
static inline nnc__v4 nnc__bnrelu_v4(nnc__v4 x, nnc__v4 sc, nnc__v4 sh)
{
    nnc__v4 v = x * sc + sh;
    return nnc__v4_keep(v, v > nnc__v4_set1(0.0f));
}
static inline int nnc__bnrelu_mask(float x, float sc, float sh) { return x * sc + sh > 0.0f; }
static inline float nnc__bnrelu(float x, float sc, float sh)
{
    float v = x * sc + sh;
    return v > 0.0f ? v : 0.0f;
}

/* Per-channel (mean, biased variance) pairs (2 doubles per channel) of y when y is the output of
 * a recorded conv op of g that computed them; NULL otherwise. */
const double *nnc__conv_output_stats(nnc_graph *g, const nnc_tensor *y);

/* Batch-norm parameters of x (N,C,H,W) for a fused consumer, arguments as nnc_batchnorm2d
 * (asserted the same way; op names the caller in messages). Training: batch statistics (from
 * the producing conv when available, else two passes over x), running statistics updated as
 * nnc_batchnorm2d does; eval: the running statistics. Writes saved (4C floats): mean, inv_std =
 * 1/sqrt(var + eps), scale = gamma * inv_std, shift = beta - mean * scale. */
void nnc__bn_fold(nnc_graph *g, const char *op, const nnc_tensor *x, const nnc_tensor *gamma,
                  const nnc_tensor *beta, nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                  float eps, int training, float *saved);

/* Backward of relu(bn(x)) for dz = dL/d(relu output) (N,C,H,W), with the ReLU mask
 * nnc__bnrelu_mask(x, scale, shift) and saved from nnc__bn_fold: dgamma, dbeta += (each may be
 * NULL); dx (may be NULL, may be dz itself) written when dx_fresh, else accumulated. psums
 * non-NULL: dz is already masked and psums holds its per-plane sums (N,C,2) as the conv
 * backward's copy-out takes them (nnc__conv_fuse), so only the dx pass is left. */
void nnc__bn_relu_backward_x(const nnc_tensor *x, const nnc_tensor *gamma, const float *saved, int training,
                             const float *dz, const double *psums, float *dx, int dx_fresh, float *dgamma,
                             float *dbeta);

#endif
