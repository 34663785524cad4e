/* nn/conv/bf16.c - the BF16 pieces of the convolution (nn/precision.h): FP32 -> BF16 rounding
 * (portable reference and AVX512_BF16), channel-pair packing, and the BF16 shifted-GEMM
 * and weight-gradient micro-kernels of the direct set (nn/conv/direct.c runs them in place of the
 * FP32 ones). The weight gradient reduces over positions, so there the pairs are two adjacent
 * positions of one channel's BF16 row (plain BF16 rows, no interleaving).
 *
 * Operand layout ("pairs"): the dot products of vdpbf16ps reduce over two adjacent BF16 values
 * per 32-bit lane, so the reduction (input channels) is split into pairs: a 32-bit word holds
 * channel 2i in its low half and 2i+1 in its high half (an odd channel count pads a zero
 * channel). An FP32 buffer of P positions per channel becomes a word buffer of P positions per
 * channel pair; positions, offsets and shifts are the same numbers as in the FP32 layout.
 *
 * Only the functions marked for avx512bf16 use the extension; the dispatcher calls them only when
 * nnc__isa_bf16() says the CPU has it. The rest of the build stays baseline x86-64.
 */
#include <string.h>

#include "nn/conv/kernels.h"

uint16_t nnc__bf16_rne(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* zero, denormal: signed zero (DAZ) */
    u += 0x7fffu + ((u >> 16) & 1u); /* to nearest, ties to even; overflow rounds to Inf */
    return (uint16_t)(u >> 16);
}

float nnc__bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void nnc__bf16_pack2_ref(const float *a, const float *b, uint32_t *dst, int n)
{
    for (int i = 0; i < n; i++) dst[i] = (uint32_t)nnc__bf16_rne(a[i]) | (uint32_t)(b ? nnc__bf16_rne(b[i]) : 0) << 16;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define BF16_TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

BF16_TGT void nnc__bf16_round_avx512(const float *src, uint16_t *dst, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)h);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)h);
    }
}

BF16_TGT void nnc__bf16_pack2_avx512(const float *a, const float *b, uint32_t *dst, int n)
{
    /* cvtne2ps gives [a0..a15 | b0..b15] as 16-bit lanes; the permutation interleaves them */
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vb = b ? _mm512_loadu_ps(b + i) : _mm512_setzero_ps();
        __m512i h = (__m512i)_mm512_cvtne2ps_pbh(vb, _mm512_loadu_ps(a + i));
        _mm512_storeu_si512(dst + i, _mm512_permutexvar_epi16(idx, h));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 vb = b ? _mm512_maskz_loadu_ps(m, b + i) : _mm512_setzero_ps();
        __m512i h = (__m512i)_mm512_cvtne2ps_pbh(vb, _mm512_maskz_loadu_ps(m, a + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_permutexvar_epi16(idx, h));
    }
}

#define KB 8
#define JV 3
#define L 16

/* Shapes: out[kk*out_ks + j0 + v*16 + i] for kk < 8, v < jv, i < 16
 *   (= or, accumulate, +=) sum_{c2 < cin2, t < ntaps} dot2(wp[(c2*ntaps + t)*8 + kk], in[c2*in_cs + toff[t] + j0 + v*16 + i])
 * (dot2 of two words of pairs: lo*lo + hi*hi, the products exact in FP32, the sums FP32) */
static inline __attribute__((always_inline)) BF16_TGT void ftile_bf16(const uint32_t *in, size_t in_cs, int cin2,
                                                                     const int *toff, int ntaps, const uint32_t *wp,
                                                                     float *out, size_t out_ks, size_t j0,
                                                                     int accumulate, const int jv)
{
    __m512 acc[KB][JV];
#pragma GCC unroll 8
    for (int kk = 0; kk < KB; kk++)
#pragma GCC unroll 3
        for (int v = 0; v < jv; v++) acc[kk][v] = _mm512_setzero_ps();
    for (int c = 0; c < cin2; c++) {
        const uint32_t *ic = in + (size_t)c * in_cs + j0;
        for (int t = 0; t < ntaps; t++, wp += KB) {
            const uint32_t *ip = ic + toff[t];
            __m512bh x[JV];
#pragma GCC unroll 3
            for (int v = 0; v < jv; v++) x[v] = (__m512bh)_mm512_loadu_si512(ip + v * L);
#pragma GCC unroll 8
            for (int kk = 0; kk < KB; kk++) {
                __m512bh b = (__m512bh)_mm512_set1_epi32((int)wp[kk]);
#pragma GCC unroll 3
                for (int v = 0; v < jv; v++) acc[kk][v] = _mm512_dpbf16_ps(acc[kk][v], x[v], b);
            }
        }
    }
#pragma GCC unroll 8
    for (int kk = 0; kk < KB; kk++)
#pragma GCC unroll 3
        for (int v = 0; v < jv; v++) {
            float *o = out + kk * out_ks + j0 + v * L;
            __m512 r = acc[kk][v];
            if (accumulate) r = _mm512_add_ps(_mm512_loadu_ps(o), r);
            _mm512_storeu_ps(o, r);
        }
}

/* The shifted GEMM of conv_kernels (nn/conv/kernels.h) on pairs: cin2 channel pairs, wp packed
 * as wp[((kb*cin2 + c2)*ntaps + t)*8 + kk] = pair (w[kb*8+kk][2*c2][t], w[kb*8+kk][2*c2+1][t]). */
BF16_TGT void nnc__conv_bf16_shifted_gemm(const uint32_t *in, size_t in_cs, int cin2, const int *toff, int ntaps,
                                          const uint32_t *wp, float *out, size_t out_ks, int kblocks, int nvec,
                                          int accumulate)
{
    for (int kb = 0; kb < kblocks; kb++) {
        const uint32_t *w = wp + (size_t)kb * cin2 * ntaps * KB;
        float *o = out + (size_t)kb * KB * out_ks;
        int v = 0;
        for (; v + JV <= nvec; v += JV) ftile_bf16(in, in_cs, cin2, toff, ntaps, w, o, out_ks, (size_t)v * L, accumulate, JV);
        if (nvec - v >= 2) {
            ftile_bf16(in, in_cs, cin2, toff, ntaps, w, o, out_ks, (size_t)v * L, accumulate, 2);
            v += 2;
        }
        if (nvec - v >= 1) ftile_bf16(in, in_cs, cin2, toff, ntaps, w, o, out_ks, (size_t)v * L, accumulate, 1);
    }
}
#define WK 4
#define WT 6

/* Shapes: res[i*6 + jj] = sum_{g < nimg, j < n} dy[g*dy_is + i*dy_ks + j] * x[g*x_is + col[jj] + j]
 * for i < 4, jj < 6, over BF16 rows (pairs of adjacent positions per lane; values at j >= n are
 * masked off, so whatever follows a row is never read into the sum) */
static inline __attribute__((always_inline)) BF16_TGT void wtile_bf16(const uint16_t *dy, size_t dy_ks, size_t dy_is,
                                                                     const uint16_t *x, size_t x_is, const size_t *col,
                                                                     int nimg, int n, float *res)
{
    __m512 acc[WK][WT];
#pragma GCC unroll 4
    for (int i = 0; i < WK; i++)
#pragma GCC unroll 6
        for (int jj = 0; jj < WT; jj++) acc[i][jj] = _mm512_setzero_ps();
    const int nfull = n / 32, rest = n % 32;
    const __mmask32 m = rest ? (__mmask32)((1u << rest) - 1) : 0;
    for (int g = 0; g < nimg; g++) {
        const uint16_t *d = dy + (size_t)g * dy_is, *xg = x + (size_t)g * x_is;
        for (int j = 0; j <= nfull; j++) {
            if (j == nfull && !rest) break;
            const __mmask32 mj = j < nfull ? (__mmask32)0xffffffffu : m;
            __m512bh a[WK];
#pragma GCC unroll 4
            for (int i = 0; i < WK; i++) a[i] = (__m512bh)_mm512_maskz_loadu_epi16(mj, d + i * dy_ks + (size_t)j * 32);
#pragma GCC unroll 6
            for (int jj = 0; jj < WT; jj++) {
                __m512bh b = (__m512bh)_mm512_maskz_loadu_epi16(mj, xg + col[jj] + (size_t)j * 32);
#pragma GCC unroll 4
                for (int i = 0; i < WK; i++) acc[i][jj] = _mm512_dpbf16_ps(acc[i][jj], a[i], b);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < WK; i++)
#pragma GCC unroll 6
        for (int jj = 0; jj < WT; jj++) res[i * WT + jj] = _mm512_reduce_add_ps(acc[i][jj]);
}

/* The weight gradient of conv_kernels (wgrad) on BF16 rows of n positions (not vectors): dw[k*ld + c]
 * += sum over images and positions j < n of dy row k times x column c, for k < nrow, c < ncol; dy
 * has rows up to a multiple of 4 (extra rows zero), col[] entries up to a multiple of 6. */
BF16_TGT void nnc__conv_bf16_wgrad(const uint16_t *dy, size_t dy_ks, size_t dy_is, const uint16_t *x, size_t x_is,
                                   const size_t *col, int ncol, int nrow, int nimg, int n, float *dw, size_t ld)
{
    for (int k0 = 0; k0 < nrow; k0 += WK)
        for (int c0 = 0; c0 < ncol; c0 += WT) {
            float r[WK * WT];
            wtile_bf16(dy + (size_t)k0 * dy_ks, dy_ks, dy_is, x, x_is, col + c0, nimg, n, r);
            for (int i = 0; i < WK && k0 + i < nrow; i++)
                for (int jj = 0; jj < WT && c0 + jj < ncol; jj++) dw[(size_t)(k0 + i) * ld + c0 + jj] += r[i * WT + jj];
        }
}
#else
void nnc__bf16_round_avx512(const float *src, uint16_t *dst, int n)
{
    for (int i = 0; i < n; i++) dst[i] = nnc__bf16_rne(src[i]);
}
void nnc__bf16_pack2_avx512(const float *a, const float *b, uint32_t *dst, int n) { nnc__bf16_pack2_ref(a, b, dst, n); }
void nnc__conv_bf16_shifted_gemm(const uint32_t *in, size_t in_cs, int cin2, const int *toff, int ntaps,
                                 const uint32_t *wp, float *out, size_t out_ks, int kblocks, int nvec, int accumulate)
{
    NNC_ASSERT(0, "conv2d: BF16 kernels need x86-64 with AVX512_BF16");
}
void nnc__conv_bf16_wgrad(const uint16_t *dy, size_t dy_ks, size_t dy_is, const uint16_t *x, size_t x_is,
                          const size_t *col, int ncol, int nrow, int nimg, int n, float *dw, size_t ld)
{
    NNC_ASSERT(0, "conv2d: BF16 kernels need x86-64 with AVX512_BF16");
}
#endif
