/* nn/conv_fast.h - the fast conv2d kernels behind nnc_conv2d (internal to nn/).
 *
 * Method ("shifted GEMM" direct convolution, NCHW at both ends):
 *   Each image is copied into a zero-padded, stride-phase-split buffer Xt: for every channel
 *   c and phase (a,b) in [0,stride)^2 a plane Xt[c][a*st+b][i][j] = xpad[c][i*st+a][j*st+b]
 *   of Rh x Wh values, Rh = ceil(Hp/st), Wh = ceil(Wp/st) (Hp, Wp the padded input size).
 *   An output row p, column q then reads, for tap (r,s), the plane of phase (r%st, s%st) at
 *   flat index (p*Wh + q) + (r/st)*Wh + s/st: a pure shift of the flat output index
 *   j = p*Wh + q. So every conv (any stride, pad, kernel) is
 *       Y[k][j] = sum_{c, taps t} W[k][c][t] * Xt[c][plane_t][j + off_t]
 *   computed on "wide" rows of Wh columns (the Wh - Q extra columns are discarded; with stride 1
 *   and Q a multiple of the lanes the forward instead runs each output row's Q columns alone and
 *   writes them straight into y, "row mode"), with the
 *   pixel index j vectorised (16 lanes with AVX-512) and register tiles over output channels.
 *   The input gradient is the same kernel run on the zero-padded output gradient, once per
 *   phase with that phase's taps (a transposed conv), over the plane rows that hold input rows
 *   only; the weight gradient is a dot product
 *   along j per (k, c, t), with per-chunk partial sums reduced in chunk order.
 * Images are laid side by side in groups (large weights: one kernel call per group, so the
 * weights are streamed once per group). Layers with more than 16 output channels (and at
 * least 8 input channels) take the channel-vectorised path instead (nn/conv_small.c,
 * nnc__conv_use_small: output channels in the lanes, only in-image taps), and a few remaining
 * tiny-image shapes a batched im2col + OpenBLAS path (nn/conv_gemm.c). Work is split over
 * image groups by nn/threads.h; partial sums are per chunk of groups, the chunking depends
 * only on the shape, and chunks are reduced in order: results are bitwise identical for any
 * thread count.
 *
 * Thread-safety: like the ops. Scratch is the calling thread's nnc__thread_scratch.
 */
#ifndef NNC_CONV_FAST_H
#define NNC_CONV_FAST_H

#include <stddef.h>

#include "nn/ops_fuse.h"
#include "nn/tensor.h"
#include "nn/vec.h"

typedef struct nnc__conv_shape {
    int n, c, h, w;   /* input */
    int k, r, s;      /* filters */
    int stride, pad;
    int p, q;         /* output spatial size */
} nnc__conv_shape;

/* What the forward applies to each output value v of channel k, image n, position i:
 *   y = v * scale[k] + shift[k] (+ res[n][k][i]), then max(y, 0) when relu.
 * scale NULL means 1, shift NULL means 0 (a plain conv: shift = bias). */
typedef struct nnc__conv_epilogue {
    const float *scale, *shift, *res;
    int relu;
} nnc__conv_epilogue;

/* Fusions around the conv (all fields NULL: a plain conv):
 *   pro_scale/pro_shift (C): the conv's input is z = max(x * pro_scale[c] + pro_shift[c], 0)
 *     (a batch norm + ReLU, nnc__bnrelu in nn/ops_fuse.h), applied while x is copied into the padded layout;
 *     z is never stored. The padding is zeros of z. Backward then gives dx = dL/dz.
 *   stats (2K doubles, forward only): per output channel k, stats[2k] = mean and stats[2k+1] =
 *     biased variance over (N,P,Q) of the written y, from per-plane sums and centred sums of
 *     squares taken in the output pass, combined per channel in image order in double.
 *   dsums (N*C*2 doubles, backward with the prologue and a fresh dx only): dx is written already
 *     through the prologue's ReLU mask, dx = mask ? dL/dz : 0, and dsums[(n*C + c)*2 + 0, 1] =
 *     sum over plane (n,c) of dx and of dx * (x - pro_mean[c]): the sums of a batch-norm
 *     backward, taken in the copy-out. */
typedef struct nnc__conv_fuse {
    const float *pro_scale, *pro_shift;
    double *stats;
    const float *pro_mean;
    double *dsums;
} nnc__conv_fuse;

/* y (N,K,P,Q) = epilogue(conv(x (N,C,H,W), w (K,C,R,S))); overwrites y. */
void nnc__conv_fast_forward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                            const nnc__conv_epilogue *ep, float *y);
/* dx (N,C,H,W), dw (K,C,R,S), db (K) += gradients for upstream dy (N,K,P,Q); any of dx, dw,
 * db may be NULL. dx_fresh: dx is uninitialised and is written (=) instead. */
void nnc__conv_fast_backward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                             const float *dy, float *dx, int dx_fresh, float *dw, float *db);
/* The same with the fusions of fu (NULL: none). Shapes the GEMM path takes materialise z in
 * g's arena (g must then be non-NULL). The backward returns 1 when it filled fu->dsums (and
 * masked dx), 0 when it did not (no dsums asked, dx accumulated, or the GEMM path). */
void nnc__conv_fast_forward_ex(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                               const nnc__conv_epilogue *ep, const nnc__conv_fuse *fu, float *y);
int nnc__conv_fast_backward_ex(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                               const nnc__conv_fuse *fu, const float *dy, float *dx, int dx_fresh, float *dw,
                               float *db);

/* Batched im2col + GEMM path (nn/conv_gemm.c), same contracts as the two functions above;
 * nnc__conv_use_gemm says which path a shape's forward or backward takes (small images, deep
 * reductions); the two paths compute the same values up to float rounding. */
void nnc__conv_gemm_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                            float *y);
void nnc__conv_gemm_backward(const nnc__conv_shape *cs, const float *x, const float *w, const float *dy, float *dx,
                             int dx_fresh, float *dw, float *db);
int nnc__conv_use_gemm(const nnc__conv_shape *cs, int backward);
/* Small-image path with channel-vectorised kernels (nn/conv_small.c), same contracts again;
 * the GEMM entry points above hand a shape to it when it is faster (nnc__conv_use_small).
 * nnc__conv_small_ok: whether it can run the shape (backward: stride 1, pad < kernel). psc/psh
 * (C floats, or NULL): the fused BN + ReLU prologue of nnc__conv_fuse, applied while x is staged
 * (forward, and backward for the weight gradient; dx is dL/dz, unmasked unless dsums). The
 * forward's stats (2K doubles, or NULL) are those of nnc__conv_fuse, taken while each output
 * plane is cache-hot; the backward's pmean/dsums too (used with psc and a fresh dx only; it
 * returns 1 when it filled dsums and masked dx). */
void nnc__conv_small_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                             const float *psc, const float *psh, float *y, double *stats);
int nnc__conv_small_backward(const nnc__conv_shape *cs, const float *x, const float *psc, const float *psh,
                             const float *w, const float *dy, float *dx, int dx_fresh, float *dw, float *db,
                             const float *pmean, double *dsums);
int nnc__conv_small_ok(const nnc__conv_shape *cs, int backward);
int nnc__conv_use_small(const nnc__conv_shape *cs, int backward);
/* Output statistics (nn/conv_fast.c): out[0], out[1] = the sum of p[0..n) and its centred sum of
 * squares; stats[2k], stats[2k+1] = mean and biased variance of channel k from the per-plane pairs
 * ps[(n*K + k)*2 ..], combined in image order (the stats of nnc__conv_fuse). */
void nnc__conv_plane_stats(const float *p, int n, double *out);
/* dx (C planes of hw) = mask ? dx : 0 with the prologue's ReLU mask recomputed from x (C planes),
 * and sums[2c], sums[2c+1] = sum over plane c of dx and of dx * (x - pmean[c]) (the dsums of
 * nnc__conv_fuse for one image). */
void nnc__conv_mask_sums(const float *x, float *dx, int C, size_t hw, const float *psc, const float *psh,
                         const float *pmean, double *sums);
void nnc__conv_combine_stats(const double *ps, int N, int K, int PQ, double *stats);
/* Tests: force a path for every shape (0 automatic, 1 direct, 2 GEMM, 3 small-image where it
 * can run the shape, else direct). */
void nnc__conv_set_path(int path);

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

/* db[k] += sum over chunks in chunk order of parts[c*K + k] (the backward passes' per-chunk bias
 * sums, added in an order that depends only on the shape). */
static inline void nnc__conv_add_bias_parts(float *db, const double *parts, int nchunk, int K)
{
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int c = 0; c < nchunk; c++) s += parts[(size_t)c * K + k];
        db[k] += (float)s;
    }
}

/* --- per-ISA micro-kernels (nn/conv_kern.c) --- */
typedef struct conv_kernels {
    int L;      /* lanes per vector */
    int kb, jv; /* shifted-GEMM tile: kb output rows x jv vectors */
    int wk, wt; /* weight-gradient tile: wk rows x wt columns */
    int kv, np; /* channel-vectorised tile: kv vectors of output channels x np pixels */
    /* out[k][j] (k < kblocks*kb, j < nvec*L, row stride out_ks)
     *   (= or, accumulate, +=) sum_{c < cin, t < ntaps} wp[((k/kb)*cin + c)*ntaps + t)*kb + k%kb] * in[c*in_cs + toff[t] + j] */
    void (*shifted_gemm)(const float *in, size_t in_cs, int cin, const int *toff, int ntaps,
                         const float *wp, float *out, size_t out_ks, int kblocks, int nvec, int accumulate);
    /* dw[k*ld + c] += sum_{g < nimg, j < nvec*L} dy[g*dy_is + k*dy_ks + j] * x[g*x_is + col[c] + j] */
    void (*wgrad)(const float *dy, size_t dy_ks, size_t dy_is, const float *x, size_t x_is,
                  const size_t *col, int ncol, int nrow, int nimg, int nvec, float *dw, size_t ld);
    /* Channel-vectorised (nn/conv_small.c), kp a multiple of 16, npix / ncol multiples of np:
     * out[orow[i]*out_ps + k] (= or, accumulate, +=) sum_{c < cin, t < ntaps}
     *     in[c*in_cs + poff[i] + toff[t]] * w[(c*wct + widx[t])*kp + k]     i < npix, k < kp
     * (tap t reads weight row widx[t] of the wct rows of each input channel; pixel i is output
     * row orow[i]) */
    void (*kvec)(const float *in, size_t in_cs, int cin, const int *toff, const int *widx, int ntaps, int wct,
                 const int *poff, const int *orow, int npix, const float *w, int kp, float *out, size_t out_ps,
                 int accumulate);
    /* dw[drow[j]*kp + k] += sum_{i < npix} in[col[j] + poff[i]] * dyt[prow[i]*dy_ps + k]
     * for j < ncol, k < kp (drow NULL: row j) */
    void (*kvec_wgrad)(const float *in, const size_t *col, const int *drow, int ncol, const int *poff,
                       const int *prow, int npix, const float *dyt, size_t dy_ps, int kp, float *dw);
    /* dst[j*dld + i] = src[i*ld + j] for i < rows, j < cols (layout changes around kvec) */
    void (*transpose)(const float *src, size_t ld, int rows, int cols, float *dst, size_t dld);
} conv_kernels;

/* The kernels for the current ISA level (nn/cpu.h). */
const conv_kernels *nnc__conv_kernels(void);

#endif
