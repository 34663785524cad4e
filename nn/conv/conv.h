/* nn/conv/conv.h - the convolution behind nnc_conv2d and its fused variants: ONE dispatcher that
 * picks a kernel set per layer from its shape, the ISA level (nn/cpu.h) and the operand precision,
 * and the naive reference beside it (internal to nn/).
 *
 * Kernel sets (nn/conv/kernels.h has their entry points, each file its method):
 *   direct  nn/conv/direct.c  "shifted GEMM" direct convolution on a zero-padded, stride-phase-
 *                             split copy of the input, pixels in the vector lanes, register tiles
 *                             over output channels (16-channel layers, large images).
 *   kvec    nn/conv/kvec.c    output channels in the lanes, only the in-image taps per pixel
 *                             (layers with more than 16 output channels and 8+ input channels),
 *                             in both precisions: with bf16 its staged operands are rounded to
 *                             words of two BF16 values and the micro-kernels are those of
 *                             nn/conv/kvec_bf16.c (AVX512_BF16, FP32 accumulation).
 *   gemm    nn/conv/gemm.c    batched im2col + OpenBLAS (tiny images with deep reductions).
 *   bf16    nn/conv/bf16.c    precision bf16 (nn/precision.h), the shapes kvec does not take:
 *                             the direct set's layout with operands rounded to BF16 in channel
 *                             pairs and AVX512_BF16 dot products (FP32 accumulation) for the
 *                             forward, the input and the weight gradient (the bias gradient is
 *                             FP32).
 * The micro-kernels of direct and kvec are instantiated per ISA level in nn/conv/kern.c from
 * nn/conv/kern.inc. Every set honours the fusion hooks of nn/conv/fuse.h. The naive reference
 * (nnc_ref_conv2d_*, nn/ops.h) is nn/conv/ref.c.
 *
 * Determinism: each set splits work by a partition that depends on the shape only and reduces
 * partial sums in a fixed order: results are bitwise identical for any thread count. Two sets
 * compute the same values up to float rounding.
 *
 * Thread-safety: like the ops. Scratch is the calling thread's nnc__thread_scratch.
 */
#ifndef NNC_CONV_CONV_H
#define NNC_CONV_CONV_H

#include "nn/conv/fuse.h"
#include "nn/precision.h"
#include "nn/tensor.h"

typedef struct nnc__conv_shape {
    int n, c, h, w;   /* input */
    int k, r, s;      /* filters */
    int stride, pad;
    int p, q;         /* output spatial size */
    int prec;         /* operand precision, nnc_precision (0: FP32) */
} nnc__conv_shape;

/* The kernel sets (values as nnc__conv_set_path takes them). */
typedef enum nnc__conv_path {
    NNC__CONV_DIRECT = 1,
    NNC__CONV_GEMM = 2,
    NNC__CONV_KVEC = 3,
    NNC__CONV_BF16 = 4 /* precision bf16: direct's geometry, BF16 micro-kernels (nn/conv/bf16.c) */
} nnc__conv_path;

/* The set that runs shape cs's forward (backward 0) or backward (backward 1): from cs->prec, the
 * shape and (inside the sets) the ISA level. */
nnc__conv_path nnc__conv_pick(const nnc__conv_shape *cs, int backward);
/* Tests and bench --layers: force a set for every shape (0 automatic, 1 direct, 2 GEMM, 3 kvec
 * where it can run the shape, else direct; in precision bf16: 3 kvec where it can run the shape,
 * anything else the bf16 set). */
void nnc__conv_set_path(int path);

/* y (N,K,P,Q) = epilogue(conv(prologue(x) (N,C,H,W), w (K,C,R,S))), overwritten; the hooks of
 * fu (NULL: none, see nn/conv/fuse.h). g (may be NULL) is needed only when a prologue meets the
 * GEMM set (z is materialised in g's arena). */
void nnc__conv_forward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                       const nnc__conv_epilogue *ep, const nnc__conv_fuse *fu, float *y);
/* Weights packed once, for a forward run many times (inference, nn/ops_conv.c's
 * nnc__conv2d_infer): nnc__conv_forward_pack_floats is the size of the packed copy for the set
 * that runs cs's forward, 0 when that set packs per call (gemm); it depends on K, C, R, S,
 * cs->prec and the ISA level only, so one copy serves any batch (the set itself is picked from
 * the image size too: pack with the image size the forward will see).
 * nnc__conv_forward_pack writes it (64-byte aligned wp); nnc__conv_forward_packed is
 * nnc__conv_forward with the epilogue only, on wp when not NULL, else on w. Same values as
 * nnc__conv_forward on w. */
size_t nnc__conv_forward_pack_floats(const nnc__conv_shape *cs);
void nnc__conv_forward_pack(const nnc__conv_shape *cs, const float *w, float *wp);
void nnc__conv_forward_packed(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w, const float *wp,
                              const nnc__conv_epilogue *ep, float *y);
/* dx (N,C,H,W), dw (K,C,R,S), db (K) += gradients for upstream dy (N,K,P,Q); any of dx, dw, db
 * may be NULL. dx_fresh: dx is uninitialised and is written (=) instead. fu: the hooks of the
 * forward (NULL: none); returns 1 when it filled fu->dsums (and masked dx), else 0. */
int nnc__conv_backward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                       const nnc__conv_fuse *fu, const float *dy, float *dx, int dx_fresh, float *dw, float *db);

#endif
