/* nn/conv/kvec_bf16.c - the BF16 micro-kernels of the kvec kernel set (nn/conv/kvec.c runs them
 * in place of the FP32 channel-vectorised kernels when the layer's precision is bf16,
 * nn/precision.h): output channels in the 16 lanes, one 32-bit word of the staged input
 * broadcast per pixel and reduction pair, and vdpbf16ps adding two products per lane into FP32
 * accumulators. Tiles: 6 pixels (or weight-gradient columns) x 4 vectors of 16 output channels.
 *
 * Operands are words of two BF16 values (low half first, as nnc__bf16_pack2_avx512 writes them);
 * what the two halves are is the caller's choice of reduction pair:
 *   forward / input gradient: two adjacent reduction channels (input channels; output channels
 *     for the input gradient), both in the staged input and in the packed weights;
 *   weight gradient: the same pixel of two images of a group (the staged input and dy are
 *     packed over image pairs), so the reduction over pixels takes two images per word.
 * The products of two BF16 values are exact in FP32; the sums are FP32, in an order fixed by
 * the arguments (no dependence on the thread that runs them).
 *
 * Only these functions use AVX512_BF16; callers check nnc__isa_bf16() first.
 * Thread-safety: pure functions of their arguments. */
#include "nn/conv/kernels.h"

#define NP 6
#define KV 4
#define L 16

#if defined(__x86_64__)
#include <immintrin.h>

#define BF16_TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define KB_INLINE static inline __attribute__((always_inline)) BF16_TGT

/* out[orow[i]*out_ps + v*16 + l] (= or, accumulate, +=) sum_{c < cin2, t < ntaps}
 *   dot2(in[c*in_cs + poff[i] + toff[t]], w[(c*wct + widx[t])*kp + v*16 + l])   i < 6, v < kv */
KB_INLINE void ktile_bf16(const uint32_t *in, size_t in_cs, int cin2, const int *toff, const int *widx, int ntaps,
                          int wct, const int *poff, const int *orow, const uint32_t *w, int kp, float *out,
                          size_t out_ps, int accumulate, const int kv)
{
    __m512 acc[NP][KV];
    const uint32_t *pp[NP];
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++) pp[i] = in + poff[i];
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 4
        for (int v = 0; v < kv; v++) acc[i][v] = _mm512_setzero_ps();
    for (int c = 0; c < cin2; c++, w += (size_t)wct * kp) {
        const size_t cb = (size_t)c * in_cs;
        for (int t = 0; t < ntaps; t++) {
            const size_t o = cb + (size_t)toff[t];
            const uint32_t *wt = w + (size_t)widx[t] * kp;
            __m512bh b[KV];
#pragma GCC unroll 4
            for (int v = 0; v < kv; v++) b[v] = (__m512bh)_mm512_loadu_si512(wt + v * L);
#pragma GCC unroll 6
            for (int i = 0; i < NP; i++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)pp[i][o]);
#pragma GCC unroll 4
                for (int v = 0; v < kv; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
            }
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 4
        for (int v = 0; v < kv; v++) {
            float *o = out + (size_t)orow[i] * out_ps + v * L;
            __m512 r = acc[i][v];
            if (accumulate) r = _mm512_add_ps(r, _mm512_loadu_ps(o));
            _mm512_storeu_ps(o, r);
        }
}

BF16_TGT void nnc__conv_kvec_bf16(const uint32_t *in, size_t in_cs, int cin2, const int *toff, const int *widx,
                                  int ntaps, int wct, const int *poff, const int *orow, int npix, const uint32_t *w,
                                  int kp, float *out, size_t out_ps, int accumulate)
{
    for (int k0 = 0; k0 < kp; k0 += KV * L) {
        const int kv = kp - k0 >= KV * L ? KV : (kp - k0) / L;
        for (int i0 = 0; i0 + NP <= npix; i0 += NP) {
            float *o = out + k0;
            const int *po = poff + i0, *orw = orow + i0;
            if (ntaps >= 1 && ntaps <= 2 && kv <= 2) { /* stride-2 input-gradient phases: unrolled tap loop */
                if (kv == 1 && ntaps == 1)
                    ktile_bf16(in, in_cs, cin2, toff, widx, 1, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 1);
                else if (kv == 1)
                    ktile_bf16(in, in_cs, cin2, toff, widx, 2, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 1);
                else if (ntaps == 1)
                    ktile_bf16(in, in_cs, cin2, toff, widx, 1, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 2);
                else
                    ktile_bf16(in, in_cs, cin2, toff, widx, 2, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 2);
                continue;
            }
            switch (kv) {
            case 3: ktile_bf16(in, in_cs, cin2, toff, widx, ntaps, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 3); break;
            case 2: ktile_bf16(in, in_cs, cin2, toff, widx, ntaps, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 2); break;
            case 1: ktile_bf16(in, in_cs, cin2, toff, widx, ntaps, wct, po, orw, w + k0, kp, o, out_ps, accumulate, 1); break;
            default: ktile_bf16(in, in_cs, cin2, toff, widx, ntaps, wct, po, orw, w + k0, kp, o, out_ps, accumulate, KV);
            }
        }
    }
}

/* dw[drow[j]*kp + v*16 + l] += sum_{i < npix} dot2(in[col[j] + poff[i]], dyt[prow[i]*dy_ps + v*16 + l])
 * j < 6, v < kv (drow NULL: row j) */
KB_INLINE void kwtile_bf16(const uint32_t *in, const size_t *col, const int *drow, const int *poff, const int *prow,
                           int npix, const uint32_t *dyt, size_t dy_ps, float *dw, int kp, const int kv)
{
    __m512 acc[NP][KV];
    const uint32_t *pp[NP];
#pragma GCC unroll 6
    for (int j = 0; j < NP; j++) pp[j] = in + col[j];
#pragma GCC unroll 6
    for (int j = 0; j < NP; j++)
#pragma GCC unroll 4
        for (int v = 0; v < kv; v++) acc[j][v] = _mm512_setzero_ps();
    for (int i = 0; i < npix; i++) {
        const size_t o = (size_t)poff[i];
        const uint32_t *d = dyt + (size_t)prow[i] * dy_ps;
        __m512bh b[KV];
#pragma GCC unroll 4
        for (int v = 0; v < kv; v++) b[v] = (__m512bh)_mm512_loadu_si512(d + v * L);
#pragma GCC unroll 6
        for (int j = 0; j < NP; j++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)pp[j][o]);
#pragma GCC unroll 4
            for (int v = 0; v < kv; v++) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], a, b[v]);
        }
    }
#pragma GCC unroll 6
    for (int j = 0; j < NP; j++)
#pragma GCC unroll 4
        for (int v = 0; v < kv; v++) {
            float *o = dw + (size_t)(drow ? drow[j] : j) * kp + v * L;
            _mm512_storeu_ps(o, _mm512_add_ps(acc[j][v], _mm512_loadu_ps(o)));
        }
}

BF16_TGT void nnc__conv_kvec_wgrad_bf16(const uint32_t *in, const size_t *col, const int *drow, int ncol,
                                        const int *poff, const int *prow, int npix, const uint32_t *dyt, size_t dy_ps,
                                        int kp, float *dw)
{
    for (int k0 = 0; k0 < kp; k0 += KV * L) {
        const int kv = kp - k0 >= KV * L ? KV : (kp - k0) / L;
        for (int j0 = 0; j0 + NP <= ncol; j0 += NP) {
            const int *dr = drow ? drow + j0 : NULL;
            float *o = dw + (drow ? 0 : (size_t)j0 * kp) + k0;
            switch (kv) {
            case 3: kwtile_bf16(in, col + j0, dr, poff, prow, npix, dyt + k0, dy_ps, o, kp, 3); break;
            case 2: kwtile_bf16(in, col + j0, dr, poff, prow, npix, dyt + k0, dy_ps, o, kp, 2); break;
            case 1: kwtile_bf16(in, col + j0, dr, poff, prow, npix, dyt + k0, dy_ps, o, kp, 1); break;
            default: kwtile_bf16(in, col + j0, dr, poff, prow, npix, dyt + k0, dy_ps, o, kp, KV);
            }
        }
    }
}
#else
void nnc__conv_kvec_bf16(const uint32_t *in, size_t in_cs, int cin2, const int *toff, const int *widx, int ntaps,
                         int wct, const int *poff, const int *orow, int npix, const uint32_t *w, int kp, float *out,
                         size_t out_ps, int accumulate)
{
    NNC_ASSERT(0, "conv2d: BF16 kernels need x86-64 with AVX512_BF16");
}
void nnc__conv_kvec_wgrad_bf16(const uint32_t *in, const size_t *col, const int *drow, int ncol, const int *poff,
                               const int *prow, int npix, const uint32_t *dyt, size_t dy_ps, int kp, float *dw)
{
    NNC_ASSERT(0, "conv2d: BF16 kernels need x86-64 with AVX512_BF16");
}
#endif
