/* nn/conv_kern.c - instantiates nn/conv_kern.inc for AVX-512, AVX2+FMA and portable C, and
 * picks one at run time (nn/cpu.h). Only this file is compiled with per-function targets. */
#include <string.h>

#include "nn/conv_fast.h"
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

#define SFX generic
#define TGT
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
#include "nn/conv_kern.inc" /* undefines its parameters */

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
#define SFX avx2
#define TGT __attribute__((target("avx2,fma")))
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
#include "nn/conv_kern.inc" /* undefines its parameters */

/* ---- AVX-512F: 16 lanes, 32 zmm registers ---- */
#define SFX avx512
#define TGT __attribute__((target("avx512f")))
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
#include "nn/conv_kern.inc" /* undefines its parameters */
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
