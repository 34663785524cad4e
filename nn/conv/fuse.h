/* nn/conv/fuse.h - the fusion contract of the convolution: what every kernel set behind the
 * dispatcher (nn/conv/conv.h) applies before (prologue), after (epilogue) and beside (statistics,
 * batch-norm backward sums) the convolution proper, and the batch-norm plumbing of nn/ops_conv.c
 * and nn/ops_norm.c that feeds it (internal to nn/).
 *
 * Hooks (all optional; every kernel set honours every hook, bit for bit the same float
 * expressions, so the choice of kernel set never changes which values are fused):
 *   prologue (nnc__conv_fuse.pro_scale / pro_shift, C floats): the conv's input is
 *     z = max(x * pro_scale[c] + pro_shift[c], 0) (a batch norm + ReLU, nnc__bnrelu below),
 *     applied while x is staged into the kernel's layout; z is never stored (the GEMM set, which
 *     reads its input as it is, gets z materialised in the graph's arena by the dispatcher). The
 *     padding is zeros of z. Backward: dx = dL/dz, and the weight gradient is taken against z.
 *   epilogue (nnc__conv_epilogue): each output value v of channel k, image n, position i becomes
 *     y = v * scale[k] + shift[k] (+ res[n][k][i]), then max(y, 0) when relu (a plain conv:
 *     scale NULL = 1, shift = bias or NULL = 0, no res, no relu).
 *   stats (nnc__conv_fuse.stats, 2K doubles, forward only): per output channel k, stats[2k] =
 *     mean and stats[2k+1] = biased variance over (N,P,Q) of the written y, from per-plane
 *     (sum, centred M2) pairs (nnc__conv_plane_stats) taken while each plane is cache-hot,
 *     combined per channel in image order in double (nnc__conv_combine_stats).
 *   dsums (nnc__conv_fuse.dsums, N*C*2 doubles, backward with the prologue and a fresh dx only,
 *     needs pro_mean): dx is written already through the prologue's ReLU mask, dx = mask ?
 *     dL/dz : 0, and dsums[(n*C + c)*2 + 0, 1] = sum over plane (n,c) of dx and of
 *     dx * (x - pro_mean[c]) (the sums of a batch-norm backward, nnc__conv_mask_sums). The
 *     backward returns 1 when it did so, 0 when it did not (the caller then masks and sums).
 *
 * Side channel to the batch norm: a conv op recorded on the tape (nnc_conv2d,
 * nnc_bn_relu_conv2d) keeps the stats of its output on its tape node; a training-mode batch norm
 * whose input is that very tensor takes them instead of making its own two passes over it
 * (nnc__conv_output_stats). nnc_bn_relu_conv2d never stores relu(bn(x)); the conv's prologue
 * applies it and its backward recomputes the ReLU mask from x with the same float expression.
 *
 * Precision: the hooks always run in FP32 on FP32 values, whatever the precision of the conv's
 * operands (nn/conv/conv.h); statistics and sums are taken in double.
 *
 * Ownership: the statistics and the BN parameters live in the graph's arena (step lifetime).
 * Thread-safety: like the ops; the inline helpers are pure.
 */
#ifndef NNC_CONV_FUSE_H
#define NNC_CONV_FUSE_H

#include <stddef.h>

#include "nn/tensor.h"
#include "nn/vec.h"

/* The epilogue (see the top). */
typedef struct nnc__conv_epilogue {
    const float *scale, *shift, *res;
    int relu;
} nnc__conv_epilogue;

/* The prologue, the statistics and the backward sums (see the top; all NULL: a plain conv). */
typedef struct nnc__conv_fuse {
    const float *pro_scale, *pro_shift;
    double *stats;
    const float *pro_mean;
    double *dsums;
} nnc__conv_fuse;

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

/* dst[i] = epilogue(src[i]) for one row of n values of channel k (res: that row of res or NULL). */
static inline void nnc__epilogue_row(float *dst, const float *src, int n, const nnc__conv_epilogue *ep, int k,
                                     const float *res)
{
    /* flags read once, one loop per case (the stores to dst may alias *ep for the compiler,
     * which would otherwise reload ep->relu and test res on every vector) */
    const float sc = ep->scale ? ep->scale[k] : 1.0f, sh = ep->shift ? ep->shift[k] : 0.0f;
    const int relu = ep->relu;
    nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh), zero = nnc__v4_set1(0.0f);
    int i = 0;
    if (res && relu) {
        for (; i + 4 <= n; i += 4) {
            nnc__v4 v = nnc__v4_load(src + i) * vs + vh + nnc__v4_load(res + i);
            nnc__v4_store(dst + i, nnc__v4_keep(v, v > zero));
        }
    } else if (relu) {
        for (; i + 4 <= n; i += 4) {
            nnc__v4 v = nnc__v4_load(src + i) * vs + vh;
            nnc__v4_store(dst + i, nnc__v4_keep(v, v > zero));
        }
    } else if (res) {
        for (; i + 4 <= n; i += 4) nnc__v4_store(dst + i, nnc__v4_load(src + i) * vs + vh + nnc__v4_load(res + i));
    } else {
        for (; i + 4 <= n; i += 4) nnc__v4_store(dst + i, nnc__v4_load(src + i) * vs + vh);
    }
    for (; i < n; i++) {
        float v = src[i] * sc + sh + (res ? res[i] : 0.0f);
        dst[i] = relu && !(v > 0.0f) ? 0.0f : v;
    }
}

/* Statistics (nn/conv/fuse.c): out[0], out[1] = the sum of p[0..n) and its centred sum of
 * squares; stats[2k], stats[2k+1] = mean and biased variance of channel k from the per-plane pairs
 * ps[(n*K + k)*2 ..], combined in image order. */
void nnc__conv_plane_stats(const float *p, int n, double *out);
void nnc__conv_combine_stats(const double *ps, int N, int K, int PQ, double *stats);
/* dx (C planes of hw) = mask ? dx : 0 with the prologue's ReLU mask recomputed from x (C planes),
 * and sums[2c], sums[2c+1] = sum over plane c of dx and of dx * (x - pmean[c]) (the dsums hook
 * for one image). */
void nnc__conv_mask_sums(const float *x, float *dx, int C, size_t hw, const float *psc, const float *psh,
                         const float *pmean, double *sums);

/* Per-channel (mean, biased variance) pairs (2 doubles per channel) of y when y is the output of
 * a recorded conv op of g that computed them; NULL otherwise (nn/ops_conv.c). */
const double *nnc__conv_output_stats(nnc_graph *g, const nnc_tensor *y);

/* Batch-norm parameters of x (N,C,H,W) for a fused consumer, arguments as nnc_batchnorm2d
 * (asserted the same way; op names the caller in messages). Training: batch statistics (from
 * the producing conv when available, else two passes over x), running statistics updated as
 * nnc_batchnorm2d does; eval: the running statistics. Writes saved (4C floats): mean, inv_std =
 * 1/sqrt(var + eps), scale = gamma * inv_std, shift = beta - mean * scale (nn/ops_norm.c). */
void nnc__bn_fold(nnc_graph *g, const char *op, const nnc_tensor *x, const nnc_tensor *gamma,
                  const nnc_tensor *beta, nnc_tensor *running_mean, nnc_tensor *running_var, float momentum,
                  float eps, int training, float *saved);

/* Backward of relu(bn(x)) for dz = dL/d(relu output) (N,C,H,W), with the ReLU mask
 * nnc__bnrelu_mask(x, scale, shift) and saved from nnc__bn_fold: dgamma, dbeta += (each may be
 * NULL); dx (may be NULL, may be dz itself) written when dx_fresh, else accumulated. psums
 * non-NULL: dz is already masked and psums holds its per-plane sums (N,C,2) as the conv
 * backward's dsums hook takes them, so only the dx pass is left (nn/ops_norm.c). */
void nnc__bn_relu_backward_x(const nnc_tensor *x, const nnc_tensor *gamma, const float *saved, int training,
                             const float *dz, const double *psums, float *dx, int dx_fresh, float *dgamma,
                             float *dbeta);

#endif
