/* nn/conv/gemm.c - the GEMM kernel set of the convolution (nn/conv/conv.h): batched im2col + GEMM (OpenBLAS, single-threaded calls), for
 * layers with small images and many channels (VGG's 8x8..2x2 stages), where the direct
 * shifted-GEMM kernel (nn/conv/direct.c) wastes most lanes on padding columns and streams the
 * whole weight tensor per image.
 *
 * A group of G images is unfolded into col (C*R*S, G*P*Q) (row (c,r,s), column (g,p,q)), so
 *   forward:  Yg (K, G*P*Q) = W (K, C*R*S) * col,      then scattered to y (N,K,P,Q) + bias
 *   dW:       dW_chunk (K, C*R*S) += dYg (K, G*P*Q) * col^T
 *   dX:       dcol (C*R*S, G*P*Q) = W^T * dYg,          then folded back (col2im) into dx.
 * Groups are tasks of nn/threads.h; dW partial sums live per chunk of groups and are added in
 * chunk order, so results do not depend on the thread count. */
#include <string.h>

#include "nn/blas.h"
#include "nn/conv/kernels.h"
#include "nn/threads.h"

#define COL_FLOATS (2u << 20)        /* target size of one group's column matrix */
#define PART_FLOATS (8u << 20)       /* cap on chunks * |W| for the dW partial sums */
#define MAX_CHUNKS 16

/* Output positions o in [0, n_out) whose input index o*stride + off lies in [0, n_in). */
static void valid_range(int n_in, int n_out, int stride, int off, int *lo, int *hi)
{
    int a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int last = n_in - 1 - off;
    int b = last < 0 ? 0 : last / stride + 1;
    if (a > n_out) a = n_out;
    if (b > n_out) b = n_out;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* x (C,H,W) of one image -> columns [g*PQ, (g+1)*PQ) of col (CRS rows of length ld). */
static void im2col(const float *x, float *col, size_t ld, const nnc__conv_shape *cs)
{
    const int P = cs->p, Q = cs->q, st = cs->stride;
    for (int c = 0; c < cs->c; c++)
        for (int r = 0; r < cs->r; r++) {
            int p0, p1;
            valid_range(cs->h, P, st, r - cs->pad, &p0, &p1);
            for (int s = 0; s < cs->s; s++) {
                float *dst = col + ((size_t)(c * cs->r + r) * cs->s + s) * ld;
                int q0, q1;
                valid_range(cs->w, Q, st, s - cs->pad, &q0, &q1);
                for (int p = 0; p < P; p++) {
                    float *d = dst + (size_t)p * Q;
                    if (p < p0 || p >= p1) {
                        memset(d, 0, sizeof(float) * (size_t)Q);
                        continue;
                    }
                    const float *src = x + ((size_t)c * cs->h + (p * st - cs->pad + r)) * cs->w;
                    for (int q = 0; q < q0; q++) d[q] = 0.0f;
                    for (int q = q0; q < q1; q++) d[q] = src[q * st - cs->pad + s];
                    for (int q = q1; q < Q; q++) d[q] = 0.0f;
                }
            }
        }
}

/* col (CRS rows of length ld, columns of one image) -> dx (C,H,W) +=; padding taps dropped. */
static void col2im_add(const float *col, size_t ld, float *dx, const nnc__conv_shape *cs)
{
    const int P = cs->p, Q = cs->q, st = cs->stride;
    for (int c = 0; c < cs->c; c++)
        for (int r = 0; r < cs->r; r++) {
            int p0, p1;
            valid_range(cs->h, P, st, r - cs->pad, &p0, &p1);
            for (int s = 0; s < cs->s; s++) {
                const float *src = col + ((size_t)(c * cs->r + r) * cs->s + s) * ld;
                int q0, q1;
                valid_range(cs->w, Q, st, s - cs->pad, &q0, &q1);
                for (int p = p0; p < p1; p++) {
                    float *d = dx + ((size_t)c * cs->h + (p * st - cs->pad + r)) * cs->w;
                    const float *sp = src + (size_t)p * Q;
                    for (int q = q0; q < q1; q++) d[q * st - cs->pad + s] += sp[q];
                }
            }
        }
}

typedef struct gemm_ctx {
    const nnc__conv_shape *cs;
    const float *x, *w, *dy;
    const nnc__conv_epilogue *ep;
    float *y, *dx, *part;
    double *bpart;
    int dx_fresh;
    int G, ngroups, nchunk;
    float *scratch;
    size_t per_thread;
} gemm_ctx;

static void fwd_group(void *vctx, int grp, int thread)
{
    const gemm_ctx *c = vctx;
    const nnc__conv_shape *cs = c->cs;
    const int CRS = cs->c * cs->r * cs->s, PQ = cs->p * cs->q, K = cs->k;
    int n0 = grp * c->G, gn = n0 + c->G <= cs->n ? c->G : cs->n - n0;
    size_t ld = (size_t)gn * PQ;
    float *col = c->scratch + (size_t)thread * c->per_thread, *yg = col + (size_t)CRS * c->G * PQ;
    for (int g = 0; g < gn; g++)
        im2col(c->x + (size_t)(n0 + g) * cs->c * cs->h * cs->w, col + (size_t)g * PQ, ld, cs);
    nnc__sgemm(0, 0, K, (int)ld, CRS, 1.0f, c->w, CRS, col, (int)ld, 0.0f, yg, (int)ld);
    for (int g = 0; g < gn; g++)
        for (int k = 0; k < K; k++) {
            size_t off = ((size_t)(n0 + g) * K + k) * PQ;
            nnc__epilogue_row(c->y + off, yg + (size_t)k * ld + (size_t)g * PQ, PQ, c->ep, k,
                              c->ep->res ? c->ep->res + off : NULL);
        }
}

void nnc__conv_gemm_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                            float *y)
{
    const size_t CRS = (size_t)cs->c * cs->r * cs->s, PQ = (size_t)cs->p * cs->q;
    int G = (int)(COL_FLOATS / (CRS * PQ));
    if (G < 1) G = 1;
    if (G > cs->n) G = cs->n;
    int ngroups = (cs->n + G - 1) / G, width = nnc__parallel_width(ngroups);
    size_t per_thread = (CRS + (size_t)cs->k) * G * PQ;
    float *scratch = nnc__thread_scratch(sizeof(float) * per_thread * (size_t)width);
    NNC_ASSERT(scratch != NULL, "conv2d: out of memory for the column buffers");
    gemm_ctx c = {cs, x, w, NULL, ep, y, NULL, NULL, NULL, 0, G, ngroups, 0, scratch, per_thread};
    nnc__parallel_for(ngroups, fwd_group, &c);
}

/* A chunk of consecutive groups: dW/db partial sums for the chunk, dx for its images. */
static void bwd_chunk(void *vctx, int chunk, int thread)
{
    const gemm_ctx *c = vctx;
    const nnc__conv_shape *cs = c->cs;
    const int CRS = cs->c * cs->r * cs->s, PQ = cs->p * cs->q, K = cs->k;
    float *col = c->scratch + (size_t)thread * c->per_thread, *dyg = col + (size_t)CRS * c->G * PQ;
    float *part = c->part ? c->part + (size_t)chunk * K * CRS : NULL;
    double *bpart = c->bpart ? c->bpart + (size_t)chunk * K : NULL;
    if (part) memset(part, 0, sizeof(float) * (size_t)K * CRS);
    if (bpart) memset(bpart, 0, sizeof(double) * (size_t)K);
    int g0 = (int)((long long)chunk * c->ngroups / c->nchunk), g1 = (int)((long long)(chunk + 1) * c->ngroups / c->nchunk);
    for (int grp = g0; grp < g1; grp++) {
        int n0 = grp * c->G, gn = n0 + c->G <= cs->n ? c->G : cs->n - n0;
        size_t ld = (size_t)gn * PQ;
        for (int g = 0; g < gn; g++)
            for (int k = 0; k < K; k++) {
                const float *src = c->dy + ((size_t)(n0 + g) * K + k) * PQ;
                memcpy(dyg + (size_t)k * ld + (size_t)g * PQ, src, sizeof(float) * (size_t)PQ);
                if (bpart) {
                    double s = 0;
                    for (int i = 0; i < PQ; i++) s += src[i];
                    bpart[k] += s;
                }
            }
        if (part) {
            for (int g = 0; g < gn; g++)
                im2col(c->x + (size_t)(n0 + g) * cs->c * cs->h * cs->w, col + (size_t)g * PQ, ld, cs);
            nnc__sgemm(0, 1, K, CRS, (int)ld, 1.0f, dyg, (int)ld, col, (int)ld, 1.0f, part, CRS);
        }
        if (c->dx) {
            nnc__sgemm(1, 0, CRS, (int)ld, K, 1.0f, c->w, CRS, dyg, (int)ld, 0.0f, col, (int)ld);
            for (int g = 0; g < gn; g++) {
                float *dxn = c->dx + (size_t)(n0 + g) * cs->c * cs->h * cs->w;
                if (c->dx_fresh) memset(dxn, 0, sizeof(float) * (size_t)cs->c * cs->h * cs->w);
                col2im_add(col + (size_t)g * PQ, ld, dxn, cs);
            }
        }
    }
}

typedef struct sum_ctx {
    float *dst;
    const float *part;
    size_t n;
    int nchunk;
} sum_ctx;

static void sum_task(void *vctx, int task, int thread)
{
    (void)thread;
    const sum_ctx *r = vctx;
    size_t lo = r->n * (size_t)task / 64, hi = r->n * (size_t)(task + 1) / 64;
    for (size_t i = lo; i < hi; i++) {
        float s = r->part[i];
        for (int k = 1; k < r->nchunk; k++) s += r->part[(size_t)k * r->n + i];
        r->dst[i] += s;
    }
}

void nnc__conv_gemm_backward(const nnc__conv_shape *cs, const float *x, const float *w, const float *dy, float *dx,
                             int dx_fresh, float *dw, float *db)
{
    if (!dx && !dw && !db) return;
    const size_t CRS = (size_t)cs->c * cs->r * cs->s, PQ = (size_t)cs->p * cs->q, nwt = (size_t)cs->k * CRS;
    int G = (int)(COL_FLOATS / (CRS * PQ));
    if (G < 1) G = 1;
    if (G > cs->n) G = cs->n;
    int ngroups = (cs->n + G - 1) / G;
    int nchunk = ngroups < MAX_CHUNKS ? ngroups : MAX_CHUNKS;
    if (dw && (size_t)nchunk * nwt > PART_FLOATS) nchunk = (int)(PART_FLOATS / nwt) > 0 ? (int)(PART_FLOATS / nwt) : 1;
    int width = nnc__parallel_width(nchunk);
    size_t per_thread = (CRS + (size_t)cs->k) * G * PQ;
    size_t partb = dw ? sizeof(float) * nwt * (size_t)nchunk : 0, bb = db ? sizeof(double) * (size_t)cs->k * nchunk : 0;
    partb = (partb + 63) / 64 * 64;
    bb = (bb + 63) / 64 * 64;
    char *base = nnc__thread_scratch(partb + bb + sizeof(float) * per_thread * (size_t)width);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for the column buffers");
    gemm_ctx c = {cs, x, w, dy, NULL, NULL, dx, dw ? (float *)base : NULL, db ? (double *)(base + partb) : NULL, dx_fresh,
                  G, ngroups, nchunk, (float *)(base + partb + bb), per_thread};
    nnc__parallel_for(nchunk, bwd_chunk, &c);
    if (dw) {
        sum_ctx r = {dw, c.part, nwt, nchunk};
        nnc__parallel_for(64, sum_task, &r);
    }
    if (db)
        for (int k = 0; k < cs->k; k++) {
            double s = 0;
            for (int i = 0; i < nchunk; i++) s += c.bpart[(size_t)i * cs->k + k];
            db[k] += (float)s;
        }
}
