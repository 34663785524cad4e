/* nn/conv/kern.c - instantiates nn/conv/kern.inc for AVX-512, AVX2+FMA and portable C, and
 * picks one at run time (nn/cpu.h). Only this file is compiled with per-function targets. */
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/cpu.h"

/* ---- portable C: GCC/clang vector extensions, 4 lanes (SSE2 on x86-64) ---- */
typedef float v4f __attribute__((vector_size(16)));
static inline v4f g_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void g_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }
static inline float g_hsum(v4f v) { return (v[0] + v[1]) + (v[2] + v[3]); }

/* dst[j*dld + i] = src[i*ld + j] for i < rows, j < cols (8x8 blocks) */
static void transpose_generic(const float *src, size_t ld, int rows, int cols, float *dst, size_t dld)
{
    for (int i0 = 0; i0 < rows; i0 += 8)
        for (int j0 = 0; j0 < cols; j0 += 8) {
            int i1 = i0 + 8 < rows ? i0 + 8 : rows, j1 = j0 + 8 < cols ? j0 + 8 : cols;
            for (int j = j0; j < j1; j++)
                for (int i = i0; i < i1; i++) dst[(size_t)j * dld + i] = src[(size_t)i * ld + j];
        }
}

#define SFX generic
#define TGT
#define TRANSPOSE transpose_generic
#define V v4f
#define L 4
#define KB 4
#define JV 2
#define WK 2
#define WT 4
#define KV 4
#define NP 2
#define VLOAD(p) g_load(p)
#define VSTORE(p, v) g_store((p), (v))
#define VZERO() ((v4f){0, 0, 0, 0})
#define VSET1(x) ((v4f){(x), (x), (x), (x)})
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VHSUM(v) g_hsum(v)
#include "nn/conv/kern.inc" /* undefines its parameters */

#if defined(__x86_64__)
#include <immintrin.h>

/* ---- AVX2 + FMA: 8 lanes, 16 ymm registers ---- */
__attribute__((target("avx2,fma"))) static inline float a2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* One 8x8 block: d[j*dld + i] = s[i*ld + j] (unpack, shuffle, lane permute). */
__attribute__((target("avx2,fma"))) static inline void tr8x8(const float *s, size_t ld, float *d, size_t dld)
{
    __m256 r[8], t[8], u[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(s + (size_t)k * ld);
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(d + (size_t)k * dld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(d + (size_t)(k + 4) * dld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

/* transpose_generic with 8x8 AVX blocks, two blocks per strip of 16 rows so that each
 * destination row gets 16 consecutive floats (a whole cache line when aligned) at a time */
__attribute__((target("avx2,fma"))) static void transpose_avx(const float *src, size_t ld, int rows, int cols,
                                                               float *dst, size_t dld)
{
    int i0 = 0;
    for (; i0 + 16 <= rows; i0 += 16) {
        int j0 = 0;
        for (; j0 + 8 <= cols; j0 += 8) {
            tr8x8(src + (size_t)i0 * ld + j0, ld, dst + (size_t)j0 * dld + i0, dld);
            tr8x8(src + (size_t)(i0 + 8) * ld + j0, ld, dst + (size_t)j0 * dld + i0 + 8, dld);
        }
        for (; j0 < cols; j0++)
            for (int i = i0; i < i0 + 16; i++) dst[(size_t)j0 * dld + i] = src[(size_t)i * ld + j0];
    }
    for (; i0 + 8 <= rows; i0 += 8) {
        int j0 = 0;
        for (; j0 + 8 <= cols; j0 += 8) tr8x8(src + (size_t)i0 * ld + j0, ld, dst + (size_t)j0 * dld + i0, dld);
        for (; j0 < cols; j0++)
            for (int i = i0; i < i0 + 8; i++) dst[(size_t)j0 * dld + i] = src[(size_t)i * ld + j0];
    }
    for (; i0 < rows; i0++)
        for (int j = 0; j < cols; j++) dst[(size_t)j * dld + i0] = src[(size_t)i0 * ld + j];
}
#define SFX avx2
#define TGT __attribute__((target("avx2,fma")))
#define TRANSPOSE transpose_avx
#define V __m256
#define L 8
#define KB 4
#define JV 3
#define WK 2
#define WT 6
#define KV 2
#define NP 6
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VHSUM(v) a2_hsum(v)
#include "nn/conv/kern.inc" /* undefines its parameters */

/* One 16x16 block with AVX-512: d[j*dld + i] = s[i*ld + j] (32-bit and 64-bit unpacks, then two
 * rounds of 128-bit lane shuffles). */
__attribute__((target("avx512f"))) static inline void tr16x16(const float *s, size_t ld, float *d, size_t dld)
{
    __m512 r[16], t[16];
    for (int k = 0; k < 16; k++) r[k] = _mm512_loadu_ps(s + (size_t)k * ld);
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) {
        r[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
        r[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
        r[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
        r[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
    }
    for (int k = 0; k < 4; k++) {
        t[k] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0x88);
        t[k + 4] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0xdd);
        t[k + 8] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0x88);
        t[k + 12] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0xdd);
    }
    for (int k = 0; k < 8; k++) {
        _mm512_storeu_ps(d + (size_t)k * dld, _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88));
        _mm512_storeu_ps(d + (size_t)(k + 8) * dld, _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd));
    }
}

/* transpose_generic in 16x16 AVX-512 blocks; the edges go through transpose_avx */
__attribute__((target("avx512f"))) static void transpose_avx512(const float *src, size_t ld, int rows, int cols,
                                                                 float *dst, size_t dld)
{
    int i0 = 0;
    for (; i0 + 16 <= rows; i0 += 16) {
        int j0 = 0;
        for (; j0 + 16 <= cols; j0 += 16) tr16x16(src + (size_t)i0 * ld + j0, ld, dst + (size_t)j0 * dld + i0, dld);
        if (j0 < cols) transpose_avx(src + (size_t)i0 * ld + j0, ld, 16, cols - j0, dst + (size_t)j0 * dld + i0, dld);
    }
    if (i0 < rows) transpose_avx(src + (size_t)i0 * ld, ld, rows - i0, cols, dst + i0, dld);
}

/* ---- AVX-512F: 16 lanes, 32 zmm registers ---- */
#define SFX avx512
#define TGT __attribute__((target("avx512f")))
#define TRANSPOSE transpose_avx512
#define V __m512
#define L 16
#define KB 8
#define JV 3
#define WK 4
#define WT 6
#define KV 4
#define NP 6
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VHSUM(v) _mm512_reduce_add_ps(v)
#include "nn/conv/kern.inc" /* undefines its parameters */
#endif

const conv_kernels *nnc__conv_kernels(void)
{
#if defined(__x86_64__)
    switch (nnc__isa()) {
    case NNC_ISA_AVX512: return &conv_kernels_avx512;
    case NNC_ISA_AVX2: return &conv_kernels_avx2;
    default: break;
    }
#endif
    return &conv_kernels_generic;
}
