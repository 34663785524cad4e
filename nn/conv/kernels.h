/* nn/conv/kernels.h - the kernel sets behind the dispatcher of nn/conv/conv.h and the per-ISA
 * micro-kernels they share (internal to nn/conv/; the rest of nn/ calls nn/conv/conv.h).
 *
 * Every entry point has the contract of nnc__conv_forward / nnc__conv_backward for the hooks it
 * is handed (nn/conv/fuse.h): the dispatcher passes each set exactly the hooks it can fuse and
 * does the rest itself (the GEMM set reads a materialised prologue output and gets its statistics
 * from a separate pass).
 */
#ifndef NNC_CONV_KERNELS_H
#define NNC_CONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/conv/conv.h"
#include "nn/vec.h"

/* direct (nn/conv/direct.c): every hook of fu (NULL: none). */
void nnc__conv_direct_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                              const nnc__conv_fuse *fu, float *y);
/* Weights packed once for the forward (the layout depends on K, C, R, S, cs->prec and the ISA
 * level, not on N or the image size): nnc__conv_direct_packed_floats floats (BF16: as many
 * 32-bit pairs); nnc__conv_direct_forward_packed is the forward on them without the other hooks
 * (inference plans, nnc__conv_forward_packed). */
size_t nnc__conv_direct_packed_floats(const nnc__conv_shape *cs);
void nnc__conv_direct_pack(const nnc__conv_shape *cs, const float *w, float *wp);
void nnc__conv_direct_forward_packed(const nnc__conv_shape *cs, const float *x, const float *wp,
                                     const nnc__conv_epilogue *ep, float *y);
int nnc__conv_direct_backward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_fuse *fu,
                              const float *dy, float *dx, int dx_fresh, float *dw, float *db);
/* kvec (nn/conv/kvec.c): psc/psh (C floats, or NULL) the prologue, applied while x is staged
 * (forward, and backward for the weight gradient; dx is dL/dz, unmasked unless dsums); stats
 * (2K doubles, or NULL) and pmean/dsums as in nnc__conv_fuse (the backward uses them with psc and
 * a fresh dx only and returns 1 when it filled dsums). nnc__conv_kvec_ok: whether it can run the
 * shape at all. */
void nnc__conv_kvec_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                            const float *psc, const float *psh, float *y, double *stats);
int nnc__conv_kvec_backward(const nnc__conv_shape *cs, const float *x, const float *psc, const float *psh,
                            const float *w, const float *dy, float *dx, int dx_fresh, float *dw, float *db,
                            const float *pmean, double *dsums);
int nnc__conv_kvec_ok(const nnc__conv_shape *cs, int backward);
/* Weights packed once for the kvec forward (inference plans, nnc__conv_forward_packed):
 * wk[(c*T + t)*kp + k] = w[k][c][t], kp = K rounded up to 16 (0 past K), C*T*kp floats
 * (nnc__conv_kvec_packed_floats, independent of N, the image size and the ISA level);
 * nnc__conv_kvec_forward_packed is the forward on them with the epilogue only. */
size_t nnc__conv_kvec_packed_floats(const nnc__conv_shape *cs);
void nnc__conv_kvec_pack(const nnc__conv_shape *cs, const float *w, float *wk);
void nnc__conv_kvec_forward_packed(const nnc__conv_shape *cs, const float *x, const float *wk,
                                   const nnc__conv_epilogue *ep, float *y);
/* gemm (nn/conv/gemm.c): no hooks but the epilogue (x is the conv's input as it is). */
void nnc__conv_gemm_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                            float *y);
void nnc__conv_gemm_backward(const nnc__conv_shape *cs, const float *x, const float *w, const float *dy, float *dx,
                             int dx_fresh, float *dw, float *db);
/* BF16 (nn/conv/bf16.c; layout "pairs" there): nnc__bf16_rne rounds to nearest even like
 * VCVTNEPS2BF16 (NaN quietened, denormal inputs to signed zero); the _avx512 functions need
 * nnc__isa_bf16(). pack2: dst[i] = bf16(a[i]) | bf16(b[i]) << 16 (b NULL: zeros). The shifted GEMM
 * is conv_kernels.shifted_gemm of the AVX-512 level on pairs (cin2 channel pairs, weights packed
 * in pairs of input channels); the weight gradient is conv_kernels.wgrad on plain BF16 rows of n
 * positions. */
uint16_t nnc__bf16_rne(float f);
float nnc__bf16_to_f32(uint16_t h);
void nnc__bf16_pack2_ref(const float *a, const float *b, uint32_t *dst, int n);
void nnc__bf16_round_avx512(const float *src, uint16_t *dst, int n);
void nnc__bf16_pack2_avx512(const float *a, const float *b, uint32_t *dst, int n);
void nnc__conv_bf16_shifted_gemm(const uint32_t *in, size_t in_cs, int cin2, const int *toff, int ntaps,
                                 const uint32_t *wp, float *out, size_t out_ks, int kblocks, int nvec, int accumulate);
void nnc__conv_bf16_wgrad(const uint16_t *dy, size_t dy_ks, size_t dy_is, const uint16_t *x, size_t x_is,
                          const size_t *col, int ncol, int nrow, int nimg, int n, float *dw, size_t ld);
/* BF16 kvec micro-kernels (nn/conv/kvec_bf16.c; tiles of nnc__conv_kvec_bf16_np pixels or
 * columns, so npix / ncol are multiples of it): conv_kernels.kvec and .kvec_wgrad on words of
 * two BF16 values (dot2 = lo*lo + hi*hi, FP32 accumulation): cin2 reduction pairs, w and dyt in
 * words, out and dw FP32. */
enum { nnc__conv_kvec_bf16_np = 6 };
void nnc__conv_kvec_bf16(const uint32_t *in, size_t in_cs, int cin2, const int *toff, const int *widx, int ntaps,
                         int wct, const int *poff, const int *orow, int npix, const uint32_t *w, int kp, float *out,
                         size_t out_ps, int accumulate);
void nnc__conv_kvec_wgrad_bf16(const uint32_t *in, const size_t *col, const int *drow, int ncol, const int *poff,
                               const int *prow, int npix, const uint32_t *dyt, size_t dy_ps, int kp, float *dw);
static inline uint32_t nnc__bf16_pair(float lo, float hi)
{
    return (uint32_t)nnc__bf16_rne(lo) | (uint32_t)nnc__bf16_rne(hi) << 16;
}

/* The epilogue (nn/conv/fuse.h) of channel k over rows rows of n values: dst row i (stride dld) =
 * epilogue(src row i (stride sld)) with residual row i of res (stride rld; res NULL: none); 16
 * lanes with AVX-512 (nn/conv/epilogue.c), else nnc__epilogue_row per row. dst may be src when
 * dld == sld. */
void nnc__epilogue_plane(float *dst, size_t dld, const float *src, size_t sld, const float *res, size_t rld, int rows,
                         int n, const nnc__conv_epilogue *ep, int k);

/* Adaptors (nn/conv/fuse.c): z = prologue(x) of fu in g's arena (g must not be NULL), and the
 * stats hook of y (N,K,P,Q) in a pass of its own. */
const float *nnc__conv_materialise_z(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const nnc__conv_fuse *fu);
void nnc__conv_stats_pass(const nnc__conv_shape *cs, const float *y, double *stats);

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

/* --- per-ISA micro-kernels (nn/conv/kern.c, nn/conv/kern.inc) --- */
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
    /* Channel-vectorised (nn/conv/kvec.c), kp a multiple of 16, npix / ncol multiples of np:
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
