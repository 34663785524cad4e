/* nn/conv/fuse.c - the fusion hooks' shared pieces (contract in nn/conv/fuse.h): per-plane output
 * statistics and their combination, the masked batch-norm backward sums, and the two adaptors the
 * dispatcher puts around a kernel set that cannot fuse a hook (the prologue materialised, the
 * statistics taken in a pass of their own). */
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/threads.h"
#include "nn/vec.h"

/* d[i] = max(s[i] * sc + sh, 0) (the fused BN + ReLU prologue, nnc__bnrelu) */
static inline void row_bnrelu(float *d, const float *s, float sc, float sh, int n)
{
    nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh);
    int i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(d + i, nnc__bnrelu_v4(nnc__v4_load(s + i), vs, vh));
    for (; i < n; i++) d[i] = nnc__bnrelu(s[i], sc, sh);
}

/* Sum of the 8 accumulators of plane_stats in a fixed order, in double. */
static inline double hsum8(nnc__v4 a0, nnc__v4 a1, nnc__v4 a2, nnc__v4 a3, nnc__v4 a4, nnc__v4 a5, nnc__v4 a6,
                           nnc__v4 a7)
{
    return ((nnc__v4_hsum(a0) + nnc__v4_hsum(a1)) + (nnc__v4_hsum(a2) + nnc__v4_hsum(a3))) +
           ((nnc__v4_hsum(a4) + nnc__v4_hsum(a5)) + (nnc__v4_hsum(a6) + nnc__v4_hsum(a7)));
}

/* out[0] = sum of p[0..n), out[1] = its centred sum of squares M2 (around the plane's own mean
 * rounded to float, corrected for that rounding). Eight independent 4-lane float chains per pass
 * (the add latency would bound a single chain over a cached plane), finished in double. */
void nnc__conv_plane_stats(const float *p, int n, double *out)
{
    nnc__v4 a0 = nnc__v4_set1(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 += nnc__v4_load(p + i);
        a1 += nnc__v4_load(p + i + 4);
        a2 += nnc__v4_load(p + i + 8);
        a3 += nnc__v4_load(p + i + 12);
        a4 += nnc__v4_load(p + i + 16);
        a5 += nnc__v4_load(p + i + 20);
        a6 += nnc__v4_load(p + i + 24);
        a7 += nnc__v4_load(p + i + 28);
    }
    double s = hsum8(a0, a1, a2, a3, a4, a5, a6, a7);
    for (; i < n; i++) s += p[i];
    double mu = s / n;
    float mf = (float)mu;
    nnc__v4 m = nnc__v4_set1(mf), u;
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = nnc__v4_set1(0.0f);
#define SQ(acc, o) (u = nnc__v4_load(p + i + (o)) - m, acc += u * u)
    for (i = 0; i + 32 <= n; i += 32) {
        SQ(a0, 0);
        SQ(a1, 4);
        SQ(a2, 8);
        SQ(a3, 12);
        SQ(a4, 16);
        SQ(a5, 20);
        SQ(a6, 24);
        SQ(a7, 28);
    }
#undef SQ
    double ss = hsum8(a0, a1, a2, a3, a4, a5, a6, a7);
    for (; i < n; i++) ss += (double)(p[i] - mf) * (p[i] - mf);
    double dm = mu - (double)mf, m2 = ss - (double)n * dm * dm;
    out[0] = s;
    out[1] = m2 > 0 ? m2 : 0;
}

/* stats[2k], stats[2k+1] = mean and biased variance of channel k from the per-plane (sum, M2)
 * pairs ps[(n*K + k)*2 ..], combined in image order in double (the parallel-variance formula of
 * Chan et al. for groups of equal size PQ): mean = sum_n s_n / M,
 * M2 = sum_n (M2_n + PQ (s_n / PQ - mean)^2), M = N*PQ. */
void nnc__conv_combine_stats(const double *ps, int N, int K, int PQ, double *stats)
{
    const double M = (double)N * PQ;
    for (int k = 0; k < K; k++) {
        double s = 0, m2 = 0;
        for (int n = 0; n < N; n++) s += ps[((size_t)n * K + k) * 2];
        double mean = s / M;
        for (int n = 0; n < N; n++) {
            const double *q = ps + ((size_t)n * K + k) * 2;
            double d = q[0] / PQ - mean;
            m2 += q[1] + PQ * d * d;
        }
        stats[2 * k] = mean;
        stats[2 * k + 1] = m2 / M;
    }
}

void nnc__conv_mask_sums(const float *x, float *dx, int C, size_t hw, const float *psc, const float *psh,
                         const float *pmean, double *sums)
{
    for (int c = 0; c < C; c++) {
        const float sc = psc[c], sh = psh[c], mu = pmean[c];
        const nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh), vm = nnc__v4_set1(mu);
        const float *xp = x + (size_t)c * hw;
        float *dp = dx + (size_t)c * hw;
        nnc__v4 a = nnc__v4_set1(0.0f), t = a;
        double s1 = 0, t1 = 0;
        size_t i = 0;
        for (; i + 4 <= hw; i += 4) {
            nnc__v4 xv = nnc__v4_load(xp + i);
            nnc__v4 dz = nnc__v4_keep(nnc__v4_load(dp + i), nnc__bnrelu_mask_v4(xv, vs, vh));
            nnc__v4_store(dp + i, dz);
            a += dz;
            t += (xv - vm) * dz;
        }
        for (; i < hw; i++) {
            float dz = nnc__bnrelu_mask(xp[i], sc, sh) ? dp[i] : 0.0f;
            dp[i] = dz;
            s1 += dz;
            t1 += (double)(xp[i] - mu) * dz;
        }
        sums[2 * c] = nnc__v4_hsum(a) + s1;
        sums[2 * c + 1] = nnc__v4_hsum(t) + t1;
    }
}

typedef struct plane_ctx {
    const float *src;
    float *dst;
    double *ps;
    const float *sc, *sh;
    int planes;       /* per image */
    int hw;
} plane_ctx;

/* Image n: per-plane statistics of src into ps. */
static void plane_stats_task(void *vctx, int n, int thread)
{
    (void)thread;
    const plane_ctx *c = vctx;
    for (int k = 0; k < c->planes; k++) {
        size_t i = (size_t)n * c->planes + k;
        nnc__conv_plane_stats(c->src + i * c->hw, c->hw, c->ps + 2 * i);
    }
}

/* Image n: dst = the prologue applied to src, plane by plane. */
static void prologue_task(void *vctx, int n, int thread)
{
    (void)thread;
    const plane_ctx *c = vctx;
    for (int k = 0; k < c->planes; k++) {
        size_t off = ((size_t)n * c->planes + k) * c->hw;
        row_bnrelu(c->dst + off, c->src + off, c->sc[k], c->sh[k], c->hw);
    }
}

const float *nnc__conv_materialise_z(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const nnc__conv_fuse *fu)
{
    NNC_ASSERT(g != NULL, "conv2d: a fused prologue on the GEMM path needs the graph");
    size_t n = (size_t)cs->n * cs->c * cs->h * cs->w;
    float *z = nnc_graph_scratch(g, n * sizeof(float));
    plane_ctx c = {x, z, NULL, fu->pro_scale, fu->pro_shift, cs->c, cs->h * cs->w};
    nnc__parallel_for(cs->n, prologue_task, &c);
    return z;
}

void nnc__conv_stats_pass(const nnc__conv_shape *cs, const float *y, double *stats)
{
    const size_t psz = sizeof(double) * 2 * (size_t)cs->n * cs->k;
    double *ps = nnc__thread_scratch(psz);
    NNC_ASSERT(ps != NULL, "conv2d: out of memory for %zu bytes of statistics", psz);
    plane_ctx c = {y, NULL, ps, NULL, NULL, cs->k, cs->p * cs->q};
    nnc__parallel_for(cs->n, plane_stats_task, &c);
    nnc__conv_combine_stats(ps, cs->n, cs->k, cs->p * cs->q, stats);
}
