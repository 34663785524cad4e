/* nn/conv/epilogue.c - the convolution epilogue (nn/conv/fuse.h) over a whole plane of rows:
 * y = v * scale[k] + shift[k] (+ res), then max(y, 0) when relu, 16 lanes at a time with AVX-512
 * (masked loads and stores for the row ends; rows narrower than 16 that divide 16 are packed
 * several to a vector when the output and residual rows are contiguous), else row by row through
 * nnc__epilogue_row.
 *
 * Values: the same float expressions as the vector part of nnc__epilogue_row (multiply, add, add,
 * compare; no contraction; no residual: no add of a zero), so the result does not depend on the
 * lane width, the row packing or the thread count.
 * Thread-safety: pure (reads ep, src and res, writes dst).
 */
#include "nn/conv/kernels.h"
#include "nn/cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define EPI_TGT __attribute__((target("avx512f")))

/* The epilogue of 16 values v (r: their residual when has_res; no add of a zero otherwise, which
 * would turn -0 into +0). */
static inline EPI_TGT __m512 epi16(__m512 v, __m512 vs, __m512 vh, __m512 r, int has_res, int relu)
{
    v = _mm512_add_ps(_mm512_mul_ps(v, vs), vh);
    if (has_res) v = _mm512_add_ps(v, r);
    if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), v);
    return v;
}

static EPI_TGT void plane_avx512(float *dst, size_t dld, const float *src, size_t sld, const float *res, size_t rld,
                                 int rows, int n, const nnc__conv_epilogue *ep, int k)
{
    const float sc = ep->scale ? ep->scale[k] : 1.0f, sh = ep->shift ? ep->shift[k] : 0.0f;
    const int relu = ep->relu;
    const __m512 vs = _mm512_set1_ps(sc), vh = _mm512_set1_ps(sh), z = _mm512_setzero_ps();
    /* contiguous rows everywhere: one row of rows * n values */
    if (sld == (size_t)n && dld == (size_t)n && (!res || rld == (size_t)n)) {
        n *= rows;
        rows = 1;
    }
    /* narrow rows (n divides 16): 16 / n source rows per vector, output and residual contiguous */
    if (rows > 1 && n < 16 && 16 % n == 0 && dld == (size_t)n && (!res || rld == (size_t)n)) {
        const int per = 16 / n;
        const __mmask16 m1 = (__mmask16)((1u << n) - 1);
        int i = 0;
        for (; i + per <= rows; i += per) {
            __m512 v = _mm512_maskz_loadu_ps(m1, src + (size_t)i * sld);
            for (int j = 1; j < per; j++) /* lanes [j*n, j*n + n) from row i + j */
                v = _mm512_mask_loadu_ps(v, (__mmask16)(m1 << (j * n)), src + (size_t)(i + j) * sld - (size_t)j * n);
            __m512 r = res ? _mm512_loadu_ps(res + (size_t)i * n) : z;
            _mm512_storeu_ps(dst + (size_t)i * n, epi16(v, vs, vh, r, res != NULL, relu));
        }
        if (i == rows) return;
        dst += (size_t)i * dld;
        src += (size_t)i * sld;
        if (res) res += (size_t)i * rld;
        rows -= i;
    }
    for (int i = 0; i < rows; i++) {
        const float *s = src + (size_t)i * sld, *rr = res ? res + (size_t)i * rld : NULL;
        float *d = dst + (size_t)i * dld;
        int j = 0;
        if (rr)
            for (; j + 16 <= n; j += 16)
                _mm512_storeu_ps(d + j, epi16(_mm512_loadu_ps(s + j), vs, vh, _mm512_loadu_ps(rr + j), 1, relu));
        else
            for (; j + 16 <= n; j += 16) _mm512_storeu_ps(d + j, epi16(_mm512_loadu_ps(s + j), vs, vh, z, 0, relu));
        if (j < n) {
            const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
            __m512 r = rr ? _mm512_maskz_loadu_ps(m, rr + j) : z;
            _mm512_mask_storeu_ps(d + j, m, epi16(_mm512_maskz_loadu_ps(m, s + j), vs, vh, r, rr != NULL, relu));
        }
    }
}
#endif

void nnc__epilogue_plane(float *dst, size_t dld, const float *src, size_t sld, const float *res, size_t rld, int rows,
                         int n, const nnc__conv_epilogue *ep, int k)
{
#if defined(__x86_64__)
    if (nnc__isa() == NNC_ISA_AVX512) {
        plane_avx512(dst, dld, src, sld, res, rld, rows, n, ep, k);
        return;
    }
#endif
    for (int i = 0; i < rows; i++)
        nnc__epilogue_row(dst + (size_t)i * dld, src + (size_t)i * sld, n, ep, k, res ? res + (size_t)i * rld : NULL);
}
