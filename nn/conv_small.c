/* nn/conv_small.c - conv2d for small images with output channels in the vector lanes (the
 * channel-vectorised kernels of nn/conv_kern.inc), for layers where the shifted-GEMM kernel's
 * padded wide rows leave most lanes idle (VGG's 8x8..2x2 stages, ResNet's 8x8 stage).
 *
 * Layouts, for a group of G images (x zero-padded, channel-major, images side by side):
 *   Xp  [c][g][Hp*Wp]          in_cs = G*plane, plane = Hp*Wp, Hp = H + 2*pad, Wp = W + 2*pad
 *   pixel i = (g, p, q) of the group's G*P*Q outputs reads Xp at poff[i] = g*plane + p*st*Wp + q*st
 *   and tap t = (r, s) adds toff[t] = r*Wp + s.
 *   forward:  O[i][k] = sum_{c,t} Xp[c][poff[i] + toff[t]] * Wk[c][t][k]   (Wk: w repacked, kp
 *             = K rounded to 16), then O is transposed into y (N,K,P,Q) through the epilogue.
 *   dX:       the same kernel on dy zero-padded by ep = ceil(R/st)-1 rows and eq columns in
 *             front, with the K channels as the reduction and C as the lanes, once per stride
 *             phase (a,b): pixel (h,w) with ((h+pad)%st, (w+pad)%st) = (a,b) reads dyp at
 *             ((h+pad-a)/st)*Pw + (w+pad-b)/st, tap (a+st*m, b+st*n) adds (ep-m)*Pw + (eq-n);
 *             the pixels, grouped by phase, are exactly dx's H*W.
 *   dW:       Dw[c*T + t][k] += sum_i Xp[c*in_cs + toff[t] + poff[i]] * dyT[i][k], dyT = dy
 *             transposed to pixel-major; summed per chunk of groups, chunks added in order.
 * Forward: groups are tasks of nn/threads.h. Backward: chunks of images (sized by the shape
 * only) are tasks, each a sequence of groups of about GROUP_PIXELS pixels, with its own dW
 * partial sums, added in chunk order. Results do not depend on the thread count.
 *
 * Thread-safety: like the ops; scratch is the calling thread's nnc__thread_scratch. */
#include <string.h>

#include "nn/conv_fast.h"
#include "nn/threads.h"

#define GROUP_FLOATS (128u << 10)  /* target size of a group's padded input */
#define CB 32                      /* reduction channels per kernel call (weight panel in L1/L2) */
#define PART_FLOATS (16u << 20)    /* cap on chunks * |dW| */
#define MAX_CHUNKS 16
#define WIDE_DW_FLOATS (1u << 20)  /* above: the weight gradient over the whole batch at once */
#define WIDE_MAX_FLOATS (8u << 20) /* ... when its padded inputs and dy fit in this */
#define WIDE_KB 64                 /* output channels per task of that pass */
#define MIN_TASKS 8                /* tasks to share out over the threads (2 for huge dW) */
#define CHUNK_PIXELS 4096          /* backward: output pixels per chunk (task) */
#define GROUP_PIXELS 2048          /* backward: output pixels per group (one dW kernel call) */

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

int nnc__conv_small_ok(const nnc__conv_shape *cs, int backward)
{
    (void)backward;
    return cs->n >= 1 && cs->c >= 1 && cs->k >= 1;
}

typedef struct sgeo {
    nnc__conv_shape cs;
    int G, ngroups, hp, wp, ph, pw, ep, eq, T, kp, cp, np, nph;
    size_t plane, plane2, xsz, dysz, npixp, npixp2, ncolp;
} sgeo;

/* Geometry for groups of G images (G <= 0: the forward's choice, a group's Xp near GROUP_FLOATS). */
static sgeo make_sgeo(const nnc__conv_shape *cs, const conv_kernels *kn, int G)
{
    sgeo S;
    memset(&S, 0, sizeof S);
    S.cs = *cs;
    S.hp = cs->h + 2 * cs->pad;
    S.wp = cs->w + 2 * cs->pad;
    S.plane = (size_t)S.hp * S.wp;
    const int st = cs->stride, rp = (cs->h - 1 + cs->pad) / st + 1, cq = (cs->w - 1 + cs->pad) / st + 1;
    S.ep = (cs->r + st - 1) / st - 1;
    S.eq = (cs->s + st - 1) / st - 1;
    S.ph = (rp > cs->p ? rp : cs->p) + S.ep;
    S.pw = (cq > cs->q ? cq : cs->q) + S.eq;
    S.plane2 = (size_t)S.ph * S.pw;
    S.nph = st * st;
    S.T = cs->r * cs->s;
    S.kp = (int)round_up((size_t)cs->k, 16);
    S.cp = (int)round_up((size_t)cs->c, 16);
    S.np = kn->np;
    size_t per = (size_t)cs->c * S.plane;
    if (G <= 0) { /* forward: Xp near GROUP_FLOATS, and at least MIN_TASKS groups to share out */
        G = (int)(GROUP_FLOATS / (per ? per : 1));
        if (G > (cs->n + MIN_TASKS - 1) / MIN_TASKS) G = (cs->n + MIN_TASKS - 1) / MIN_TASKS;
    }
    S.G = G < 1 ? 1 : G > cs->n ? cs->n : G;
    S.ngroups = (cs->n + S.G - 1) / S.G;
    S.xsz = (size_t)cs->c * S.G * S.plane + 16;
    S.dysz = (size_t)cs->k * S.G * S.plane2 + 16;
    S.npixp = round_up((size_t)S.G * cs->p * cs->q, (size_t)S.np);
    S.npixp2 = round_up((size_t)S.G * cs->h * cs->w, (size_t)S.np) + (size_t)S.nph * S.np; /* per-phase rounding */
    S.ncolp = round_up((size_t)cs->c * S.T, (size_t)S.np);
    return S;
}

/* x (C,H,W) of image g -> its zero-padded planes in Xp. */
static void fill_xp(const sgeo *S, const float *x, float *xp, int g)
{
    const nnc__conv_shape *cs = &S->cs;
    const size_t in_cs = (size_t)S->G * S->plane;
    for (int c = 0; c < cs->c; c++) {
        float *pl = xp + (size_t)c * in_cs + (size_t)g * S->plane;
        memset(pl, 0, sizeof(float) * S->plane);
        for (int h = 0; h < cs->h; h++)
            memcpy(pl + (size_t)(h + cs->pad) * S->wp + cs->pad, x + ((size_t)c * cs->h + h) * cs->w,
                   sizeof(float) * (size_t)cs->w);
    }
}

/* ---------------------------------------------------------------------------------------------
 * forward
 * ------------------------------------------------------------------------------------------ */

typedef struct sctx {
    const sgeo *S;
    const conv_kernels *kn;
    const float *x, *dy, *wk, *wd;
    const nnc__conv_epilogue *ep;
    const int *poff, *toff, *poff2, *toff2;
    const int *ph_nt, *ph_row, *ph_np, *ph_cnt, *ph_wofs, *pix_dst; /* dX phases (nnc__conv_small_backward) */
    const size_t *col;
    float *y, *dx, *part, *scratch;
    double *bpart;
    int dx_fresh, nchunk;
    size_t per_thread;
} sctx;

static void fwd_group(void *vctx, int grp, int thread)
{
    const sctx *f = vctx;
    const sgeo *S = f->S;
    const nnc__conv_shape *cs = &S->cs;
    const int PQ = cs->p * cs->q, K = cs->k;
    float *xp = f->scratch + (size_t)thread * f->per_thread, *o = xp + S->xsz, *row = o + S->npixp * S->kp;
    int n0 = grp * S->G, gn = n0 + S->G <= cs->n ? S->G : cs->n - n0;
    for (int g = 0; g < gn; g++) fill_xp(S, f->x + (size_t)(n0 + g) * cs->c * cs->h * cs->w, xp, g);
    const size_t in_cs = (size_t)S->G * S->plane, npix = round_up((size_t)gn * PQ, (size_t)S->np);
    for (int c0 = 0; c0 < cs->c; c0 += CB)
        f->kn->kvec(xp + (size_t)c0 * in_cs, in_cs, cs->c - c0 < CB ? cs->c - c0 : CB, f->toff, S->T, f->poff,
                    (int)npix, f->wk + (size_t)c0 * S->T * S->kp, S->kp, o, (size_t)S->kp, c0 > 0);
    for (int g = 0; g < gn; g++) {
        size_t yoff = (size_t)(n0 + g) * K * PQ;
        f->kn->transpose(o + (size_t)g * PQ * S->kp, (size_t)S->kp, PQ, K, row, (size_t)PQ);
        for (int k = 0; k < K; k++)
            nnc__epilogue_row(f->y + yoff + (size_t)k * PQ, row + (size_t)k * PQ, PQ, f->ep, k,
                              f->ep->res ? f->ep->res + yoff + (size_t)k * PQ : NULL);
    }
}

/* toff[t] = r*Wp + s and poff[i] for the group's pixels (padding entries 0). */
static void offsets(const sgeo *S, int *toff, int *poff)
{
    const nnc__conv_shape *cs = &S->cs;
    for (int t = 0; t < S->T; t++) toff[t] = (t / cs->s) * S->wp + t % cs->s;
    size_t npix = (size_t)S->G * cs->p * cs->q;
    for (size_t i = 0; i < S->npixp; i++) {
        if (i >= npix) {
            poff[i] = 0;
            continue;
        }
        int g = (int)(i / ((size_t)cs->p * cs->q)), pq = (int)(i % ((size_t)cs->p * cs->q));
        poff[i] = (int)((size_t)g * S->plane) + (pq / cs->q) * cs->stride * S->wp + (pq % cs->q) * cs->stride;
    }
}

void nnc__conv_small_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                             float *y)
{
    const conv_kernels *kn = nnc__conv_kernels();
    sgeo S = make_sgeo(cs, kn, 0);
    const int C = cs->c, K = cs->k, T = S.T;
    int width = nnc__parallel_width(S.ngroups);
    size_t per_thread = S.xsz + S.npixp * S.kp + (size_t)K * cs->p * cs->q + 16;
    size_t sz[4] = {sizeof(float) * (size_t)C * T * S.kp, sizeof(int) * (size_t)T, sizeof(int) * S.npixp,
                    sizeof(float) * per_thread * (size_t)width};
    size_t bytes = 0;
    for (int i = 0; i < 4; i++) bytes += round_up(sz[i], 64);
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    float *wk = (float *)base;
    int *toff = (int *)(base + round_up(sz[0], 64)), *poff = (int *)((char *)toff + round_up(sz[1], 64));
    float *scratch = (float *)((char *)poff + round_up(sz[2], 64));
    /* wk[(c*T + t)*kp + k] = w[k][c][t] (0 past K): w as a K x C*T matrix, transposed */
    kn->transpose(w, (size_t)C * T, K, C * T, wk, (size_t)S.kp);
    if (S.kp > K)
        for (size_t j = 0; j < (size_t)C * T; j++) memset(wk + j * S.kp + K, 0, sizeof(float) * (size_t)(S.kp - K));
    offsets(&S, toff, poff);
    sctx f = {&S,   kn,   x,    NULL, wk,   NULL, ep,   poff,    toff, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, y,    NULL, NULL, scratch, NULL, 0,    0,    per_thread};
    nnc__parallel_for(S.ngroups, fwd_group, &f);
}

/* ---------------------------------------------------------------------------------------------
 * backward: tasks are chunks of consecutive groups; each owns partial dW / db sums
 * ------------------------------------------------------------------------------------------ */

static void bwd_chunk(void *vctx, int chunk, int thread)
{
    const sctx *b = vctx;
    const sgeo *S = b->S;
    const nnc__conv_shape *cs = &S->cs;
    const conv_kernels *kn = b->kn;
    const int C = cs->c, K = cs->k, PQ = cs->p * cs->q, HW = cs->h * cs->w, T = S->T;
    float *xp = b->scratch + (size_t)thread * b->per_thread, *dyt = xp + S->xsz, *dyp = dyt + S->npixp * S->kp;
    float *dxt = dyp + S->dysz, *tmp = dxt + S->npixp2 * S->cp;
    float *part = b->part ? b->part + (size_t)chunk * S->ncolp * S->kp : NULL;
    double *bpart = b->bpart ? b->bpart + (size_t)chunk * K : NULL;
    if (part) memset(part, 0, sizeof(float) * S->ncolp * S->kp);
    if (bpart) memset(bpart, 0, sizeof(double) * (size_t)K);
    const size_t dy_cs = (size_t)S->G * S->plane2;
    int c0 = (int)((long long)chunk * cs->n / b->nchunk), c1 = (int)((long long)(chunk + 1) * cs->n / b->nchunk);
    for (int n0 = c0; n0 < c1; n0 += S->G) {
        int gn = n0 + S->G <= c1 ? S->G : c1 - n0;
        for (int g = 0; g < gn; g++) {
            const float *dyn = b->dy + (size_t)(n0 + g) * K * PQ;
            if (bpart)
                for (int k = 0; k < K; k++) {
                    double s = 0;
                    for (int j = 0; j < PQ; j++) s += dyn[(size_t)k * PQ + j];
                    bpart[k] += s;
                }
            if (part) {
                fill_xp(S, b->x + (size_t)(n0 + g) * C * HW, xp, g);
                float *d = dyt + (size_t)g * PQ * S->kp;
                kn->transpose(dyn, (size_t)PQ, K, PQ, d, (size_t)S->kp);
                if (S->kp > K)
                    for (int j = 0; j < PQ; j++) memset(d + (size_t)j * S->kp + K, 0, sizeof(float) * (size_t)(S->kp - K));
            }
            if (b->dx)
                for (int k = 0; k < K; k++) {
                    float *pl = dyp + (size_t)k * dy_cs + (size_t)g * S->plane2;
                    memset(pl, 0, sizeof(float) * S->plane2);
                    for (int p = 0; p < cs->p; p++)
                        memcpy(pl + (size_t)(p + S->ep) * S->pw + S->eq, dyn + ((size_t)k * cs->p + p) * cs->q,
                               sizeof(float) * (size_t)cs->q);
                }
        }
        if (part)
            kn->kvec_wgrad(xp, b->col, (int)S->ncolp, b->poff, gn * PQ, dyt, (size_t)S->kp, S->kp, part);
        if (b->dx) {
            for (int ph = 0; ph < S->nph; ph++) {
                const int nt = b->ph_nt[ph];
                float *o = dxt + (size_t)b->ph_row[ph] * S->cp;
                if (!nt) {
                    memset(o, 0, sizeof(float) * (size_t)b->ph_np[ph] * S->cp);
                    continue;
                }
                const float *wd = b->wd + b->ph_wofs[ph];
                for (int k0 = 0; k0 < K; k0 += CB)
                    kn->kvec(dyp + (size_t)k0 * dy_cs, dy_cs, K - k0 < CB ? K - k0 : CB, b->toff2 + ph * T, nt,
                             b->poff2 + b->ph_row[ph], b->ph_np[ph], wd + (size_t)k0 * nt * S->cp, S->cp, o,
                             (size_t)S->cp, k0 > 0);
            }
            /* dxt rows of image g in phase ph: ph_row[ph] + g*ph_cnt[ph] + j. One phase (stride 1):
             * they are the image's pixels in order, a transpose; else a scatter, channel-outer so
             * that the writes stay in one plane */
            for (int g = 0; g < gn; g++) {
                float *dxn = b->dx + (size_t)(n0 + g) * C * HW;
                if (S->nph == 1) {
                    const float *src = dxt + (size_t)(b->ph_row[0] + g * HW) * S->cp;
                    kn->transpose(src, (size_t)S->cp, HW, C, b->dx_fresh ? dxn : tmp, (size_t)HW);
                    if (!b->dx_fresh)
                        for (size_t j = 0; j < (size_t)C * HW; j++) dxn[j] += tmp[j];
                    continue;
                }
                for (int c = 0; c < C; c++) {
                    float *d = dxn + (size_t)c * HW;
                    for (int ph = 0; ph < S->nph; ph++) {
                        const int r0 = b->ph_row[ph] + g * b->ph_cnt[ph], cnt = b->ph_cnt[ph];
                        const float *src = dxt + (size_t)r0 * S->cp + c;
                        const int *dst = b->pix_dst + r0;
                        if (b->dx_fresh)
                            for (int j = 0; j < cnt; j++) d[dst[j] - g * HW] = src[(size_t)j * S->cp];
                        else
                            for (int j = 0; j < cnt; j++) d[dst[j] - g * HW] += src[(size_t)j * S->cp];
                    }
                }
            }
        }
    }
}

typedef struct red_ctx {
    float *dw;
    const float *part;
    const sgeo *S;
    int nchunk;
} red_ctx;

/* dw[k][j] += sum over chunks in order of part[chunk][j*kp + k], for this task's slice of k. */
static void reduce_task(void *vctx, int task, int thread)
{
    (void)thread;
    const red_ctx *r = vctx;
    const int K = r->S->cs.k, ncol = r->S->cs.c * r->S->T;
    const size_t psz = r->S->ncolp * r->S->kp;
    int k0 = K * task / 16, k1 = K * (task + 1) / 16;
    for (int k = k0; k < k1; k++)
        for (int j = 0; j < ncol; j++) {
            const float *p = r->part + (size_t)j * r->S->kp + k;
            float s = p[0];
            for (int c = 1; c < r->nchunk; c++) s += p[(size_t)c * psz];
            r->dw[(size_t)k * ncol + j] += s;
        }
}

/* ---------------------------------------------------------------------------------------------
 * weight gradient of large weight tensors (|dW| > WIDE_DW_FLOATS) over the whole batch at once:
 * Xp and dyT of every image are filled first, then each task owns WIDE_KB output channels and
 * runs their dW tiles over all N*P*Q pixels, so no partial sums of |dW| are written, re-read
 * or reduced (each value is one task's, in a fixed order: thread-count independent)
 * ------------------------------------------------------------------------------------------ */

typedef struct wide_ctx {
    const sgeo *S;
    const conv_kernels *kn;
    const float *x, *dy;
    float *xp, *dyt, *blk, *dw;
    const int *poff;
    const size_t *col;
} wide_ctx;

static void wide_fill(void *vctx, int n, int thread)
{
    (void)thread;
    const wide_ctx *c = vctx;
    const sgeo *S = c->S;
    const nnc__conv_shape *cs = &S->cs;
    const int PQ = cs->p * cs->q;
    fill_xp(S, c->x + (size_t)n * cs->c * cs->h * cs->w, c->xp, n);
    float *d = c->dyt + (size_t)n * PQ * S->kp;
    c->kn->transpose(c->dy + (size_t)n * cs->k * PQ, (size_t)PQ, cs->k, PQ, d, (size_t)S->kp);
    if (S->kp > cs->k)
        for (int j = 0; j < PQ; j++) memset(d + (size_t)j * S->kp + cs->k, 0, sizeof(float) * (size_t)(S->kp - cs->k));
}

static void wide_task(void *vctx, int task, int thread)
{
    const wide_ctx *c = vctx;
    const sgeo *S = c->S;
    const nnc__conv_shape *cs = &S->cs;
    const int ncol = cs->c * S->T, k0 = task * WIDE_KB;
    float *blk = c->blk + (size_t)thread * S->ncolp * WIDE_KB;
    memset(blk, 0, sizeof(float) * S->ncolp * WIDE_KB);
    c->kn->kvec_wgrad(c->xp, c->col, (int)S->ncolp, c->poff, cs->n * cs->p * cs->q, c->dyt + k0, (size_t)S->kp,
                      WIDE_KB, blk);
    for (int kk = 0; kk < WIDE_KB && k0 + kk < cs->k; kk++) {
        float *d = c->dw + (size_t)(k0 + kk) * ncol;
        for (int j = 0; j < ncol; j++) d[j] += blk[(size_t)j * WIDE_KB + kk];
    }
}

static void wide_wgrad(const nnc__conv_shape *cs, const float *x, const float *dy, float *dw)
{
    const conv_kernels *kn = nnc__conv_kernels();
    sgeo S = make_sgeo(cs, kn, cs->n);
    const int T = S.T, ntask = S.kp / WIDE_KB;
    size_t sz[5] = {sizeof(float) * S.xsz, sizeof(float) * S.npixp * S.kp, sizeof(int) * (S.npixp + (size_t)T),
                    sizeof(size_t) * S.ncolp, sizeof(float) * S.ncolp * WIDE_KB * (size_t)nnc__parallel_width(ntask)};
    size_t bytes = 0;
    for (int i = 0; i < 5; i++) bytes += round_up(sz[i], 64);
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    void *slot[5];
    for (int i = 0; i < 5; i++) {
        slot[i] = base;
        base += round_up(sz[i], 64);
    }
    int *poff = slot[2], *toff = poff + S.npixp;
    size_t *col = slot[3];
    offsets(&S, toff, poff);
    for (size_t j = 0; j < S.ncolp; j++)
        col[j] = j < (size_t)cs->c * T ? (j / T) * S.G * S.plane + (size_t)toff[j % T] : 0;
    wide_ctx c = {&S, kn, x, dy, slot[0], slot[1], slot[4], dw, poff, col};
    nnc__parallel_for(cs->n, wide_fill, &c);
    nnc__parallel_for(ntask, wide_task, &c);
}

void nnc__conv_small_backward(const nnc__conv_shape *cs, const float *x, const float *w, const float *dy, float *dx,
                              int dx_fresh, float *dw, float *db)
{
    if (!dx && !dw && !db) return;
    const conv_kernels *kn = nnc__conv_kernels();
    if (dw && (size_t)cs->c * cs->r * cs->s * cs->k > WIDE_DW_FLOATS && cs->k % WIDE_KB == 0 &&
        (size_t)cs->n * cs->c * (cs->h + 2 * cs->pad) * (cs->w + 2 * cs->pad) +
                (size_t)cs->n * cs->p * cs->q * cs->k <= WIDE_MAX_FLOATS) {
        nnc__conv_small_backward(cs, x, w, dy, dx, dx_fresh, NULL, db);
        wide_wgrad(cs, x, dy, dw);
        return;
    }
    /* chunks of about CHUNK_PIXELS output pixels (at least MIN_TASKS, 2 for huge dW), each a sequence of
     * groups of about GROUP_PIXELS: the dW tiles stay in registers over a whole group */
    const int PQ = cs->p * cs->q, N = cs->n;
    const size_t ncol = (size_t)cs->c * cs->r * cs->s, psz0 = round_up(ncol, (size_t)kn->np) * round_up((size_t)cs->k, 16);
    int nchunk = (int)((size_t)N * PQ / CHUNK_PIXELS), lo = psz0 > (1u << 20) ? 2 : MIN_TASKS;
    nchunk = nchunk < lo ? lo : nchunk > MAX_CHUNKS ? MAX_CHUNKS : nchunk;
    if (dw && (size_t)nchunk * psz0 > PART_FLOATS) nchunk = (int)(PART_FLOATS / psz0) > 1 ? (int)(PART_FLOATS / psz0) : 2;
    if (nchunk > N) nchunk = N;
    int per_chunk = (N + nchunk - 1) / nchunk, G = (GROUP_PIXELS + PQ - 1) / PQ;
    G = G > per_chunk ? per_chunk : G;
    sgeo S = make_sgeo(cs, kn, G);
    const int C = cs->c, K = cs->k, T = S.T;
    const size_t psz = S.ncolp * S.kp;
    int width = nnc__parallel_width(nchunk);
    size_t per_thread = S.xsz + S.npixp * S.kp + S.dysz + S.npixp2 * S.cp + (size_t)C * cs->h * cs->w;
    size_t sz[9] = {sizeof(double) * (db ? (size_t)nchunk * K : 0),
                    sizeof(float) * (dw ? (size_t)nchunk * psz : 0),
                    sizeof(float) * (dx ? (size_t)K * T * S.cp : 0),
                    sizeof(size_t) * S.ncolp,
                    sizeof(int) * S.npixp,
                    sizeof(int) * S.npixp2 * 2,
                    sizeof(int) * ((size_t)T * (1 + S.nph) + 5 * (size_t)S.nph),
                    sizeof(float) * per_thread * (size_t)width, 0};
    size_t bytes = 0;
    for (int i = 0; i < 8; i++) bytes += round_up(sz[i], 64);
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    void *slot[8];
    for (int i = 0; i < 8; i++) {
        slot[i] = base;
        base += round_up(sz[i], 64);
    }
    double *bpart = db ? slot[0] : NULL;
    float *part = dw ? slot[1] : NULL, *wd = slot[2], *scratch = slot[7];
    size_t *col = slot[3];
    int *poff = slot[4], *poff2 = slot[5], *pix_dst = poff2 + S.npixp2, *toff = slot[6], *toff2 = toff + T;
    int *ph_nt = toff2 + (size_t)S.nph * T, *ph_row = ph_nt + S.nph, *ph_np = ph_row + S.nph, *ph_wofs = ph_np + S.nph;
    int *ph_cnt = ph_wofs + S.nph;
    offsets(&S, toff, poff);
    for (size_t j = 0; j < S.ncolp; j++)
        col[j] = j < (size_t)C * T ? (j / T) * S.G * S.plane + (size_t)toff[j % T] : 0;
    if (dx) {
        /* phase ph = a*st + b: its taps (a + st*m, b + st*n) in toff2[ph*T..] and packed weights
         * wd[ph_wofs[ph] + (k*nt + i)*cp + c] = w[k][c][tap i]; its pixels are dxt rows
         * [ph_row[ph], +ph_np[ph]) (a multiple of np), pix_dst = image*HW + h*W + w or -1 */
        const int st = cs->stride, HW = cs->h * cs->w;
        int wofs = 0, row = 0;
        for (int ph = 0; ph < S.nph; ph++) {
            const int a = ph / st, bb = ph % st;
            int nt = 0;
            for (int t = 0; t < T; t++) {
                int r = t / cs->s, sc = t % cs->s;
                if (r % st != a || sc % st != bb) continue;
                toff2[ph * T + nt] = (S.ep - r / st) * S.pw + (S.eq - sc / st);
                nt++;
            }
            ph_nt[ph] = nt;
            ph_wofs[ph] = wofs;
            for (int k = 0; k < K; k++) {
                int i = 0;
                for (int t = 0; t < T; t++) {
                    int r = t / cs->s, sc = t % cs->s;
                    if (r % st != a || sc % st != bb) continue;
                    float *d = wd + wofs + ((size_t)k * nt + i) * S.cp;
                    for (int c = 0; c < S.cp; c++) d[c] = c < C ? w[((size_t)k * C + c) * T + t] : 0.0f;
                    i++;
                }
            }
            wofs += K * nt * S.cp;
            ph_row[ph] = row;
            int n = 0;
            for (int g = 0; g < S.G; g++)
                for (int hw = 0; hw < HW; hw++) {
                    int hh = hw / cs->w + cs->pad, ww = hw % cs->w + cs->pad;
                    if (hh % st != a || ww % st != bb) continue;
                    poff2[row + n] = (int)((size_t)g * S.plane2) + ((hh - a) / st) * S.pw + (ww - bb) / st;
                    pix_dst[row + n] = g * HW + hw;
                    n++;
                }
            ph_cnt[ph] = n / S.G;
            for (; n % S.np; n++) {
                poff2[row + n] = 0;
                pix_dst[row + n] = -1;
            }
            ph_np[ph] = n;
            row += n;
        }
    }
    sctx b = {&S,    kn,    x,      dy,      NULL,    wd,  NULL, poff, toff, poff2,   toff2, ph_nt,    ph_row,
              ph_np, ph_cnt, ph_wofs, pix_dst, col, NULL, dx,   part, scratch, bpart, dx_fresh, nchunk, per_thread};
    nnc__parallel_for(nchunk, bwd_chunk, &b);
    if (dw) {
        red_ctx r = {dw, part, &S, nchunk};
        nnc__parallel_for(16, reduce_task, &r);
    }
    if (db)
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int c = 0; c < nchunk; c++) s += bpart[(size_t)c * K + k];
            db[k] += (float)s;
        }
}
