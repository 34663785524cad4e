/* nn/conv/kvec.c - the kvec kernel set of the convolution (nn/conv/conv.h): output channels in the
 * vector lanes (the channel-vectorised kernels of nn/conv/kern.inc), for layers with more than 16 output channels: no lane is spent
 * on padding columns (the shifted-GEMM kernel's wide rows), and each output pixel runs only the
 * taps that land inside the image (a 2x2 image with pad 1 sees 4 of 9 taps per pixel).
 *
 * Layouts, for a group of G images (x zero-padded, channel-major, images side by side):
 *   Xp  [c][g][Hp*Wp]          in_cs = G*plane, plane = Hp*Wp, Hp = H + 2*pad, Wp = W + 2*pad
 *   output pixel (g, p, q) reads Xp at g*plane + p*st*Wp + q*st, tap t = (r, s) adds r*Wp + s.
 *   Tap classes: the pixels of an image are grouped by the set of taps that are inside the image
 *   (for 3x3 pad 1: corners, edges, interior); a class's rows are its pixels image by image,
 *   padded to the kernel's pixel tile, and the kernel runs that class's taps only.
 *   forward:  O[row][k] = sum_{c, valid t} Xp[c][poff[row] + toff[t]] * Wk[c][t][k] (Wk: w
 *             transposed, kp = K rounded to 16); rows are put back in image order and
 *             transposed into y (N,K,P,Q) through the epilogue.
 *   dX:       the same kernel on dy zero-padded by ep = ceil(R/st)-1 rows and eq columns in
 *             front, K channels as the reduction and C as the lanes: pixel (h,w) reads dyp at
 *             ((h+pad-a)/st)*Pw + (w+pad-b)/st with (a,b) = ((h+pad)%st, (w+pad)%st), tap (r,s)
 *             of that stride phase (r%st = a, s%st = b, dy index in range) adds
 *             (ep - r/st)*Pw + (eq - s/st); pixels without taps get zero.
 *   dW:       Dw[c*T + t][k] += sum_i Xp[c*in_cs + toff[t] + poff[i]] * dyT[i][k], dyT = dy
 *             transposed to pixel-major (image order, padding taps read zeros); summed per chunk
 *             of groups, chunks added in order; large dW over the whole batch (wide_wgrad).
 * Precision bf16: the same staging in FP32, then rounded (RNE) into words of two BF16 values for
 * the micro-kernels of nn/conv/kvec_bf16.c: forward and dX pair adjacent reduction channels (of x,
 * of dy, and of the packed weights), dW pairs the same pixel of images 2i and 2i+1 of a group (its
 * tap classes are built for ceil(G/2) image pairs; in wide_wgrad, ceil(N/2)). The partition is the
 * FP32 one.
 * Forward: groups are tasks of nn/threads.h. Backward: chunks of images (sized by the shape
 * only) are tasks, each a sequence of groups of about GROUP_PIXELS pixels, with its own dW
 * partial sums, added in chunk order. Results do not depend on the thread count.
 *
 * Thread-safety: like the ops; scratch is the calling thread's nnc__thread_scratch. */
#include <stdint.h>
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/ops_fuse.h"
#include "nn/threads.h"

#define GROUP_FLOATS (128u << 10)  /* target size of a group's padded input */
#define CB 32                      /* reduction channels per kernel call (weight panel in L1/L2) */
#define PART_FLOATS (16u << 20)    /* cap on chunks * |dW| */
#define MAX_CHUNKS 16
#define WIDE_DW_FLOATS (256u << 10) /* above: the weight gradient over the whole batch at once */
#define WIDE_MAX_FLOATS (8u << 20) /* ... when its padded inputs and dy fit in this */
#define WIDE_KB 64                 /* output channels per task of that pass */
#define SMALL_MAX_PIXELS 4096      /* images up to 64x64 (input and output) */
#define MIN_PIXELS 256             /* forward: output pixels per group at least (if the batch has them) */
#define MERGE_ROWS 12              /* tap classes with fewer rows per group run the full tap set */
#define MIN_TASKS 8                /* tasks to share out over the threads (2 for huge dW) */
#define CHUNK_PIXELS 4096          /* backward: output pixels per chunk (task) */
#define GROUP_PIXELS 2048          /* backward: output pixels per group (one dW kernel call) */

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

int nnc__conv_kvec_ok(const nnc__conv_shape *cs, int backward)
{
    (void)backward;
    /* tap sets are 64-bit masks; per-image pixel-major buffers stay small */
    return cs->r * cs->s <= 64 && cs->p * cs->q <= SMALL_MAX_PIXELS && cs->h * cs->w <= SMALL_MAX_PIXELS;
}

typedef struct sgeo {
    nnc__conv_shape cs;
    const float *psc, *psh; /* fused BN + ReLU prologue applied while staging x (nn/ops_fuse.h), or NULL */
    int G, ngroups, hp, wp, ph, pw, ep, eq, T, kp, cp, np;
    int bf; /* precision bf16: the BF16 micro-kernels (nn/conv/kvec_bf16.c) on words of two BF16 values */
    size_t plane, plane2, xsz, dysz, npixp, prow, rows1, rows2; /* rows: bound on tap-class rows */
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
    S.T = cs->r * cs->s;
    S.kp = (int)round_up((size_t)cs->k, 16);
    S.cp = (int)round_up((size_t)cs->c, 16);
    S.np = kn->np;
    S.bf = cs->prec == NNC_PRECISION_BF16;
    NNC_ASSERT(!S.bf || S.np == nnc__conv_kvec_bf16_np, "conv2d: the BF16 kvec kernels run with the AVX-512 tiles");
    size_t per = (size_t)cs->c * S.plane;
    if (G <= 0) { /* forward: Xp near GROUP_FLOATS; MIN_TASKS groups to share out unless that
                   * leaves fewer than MIN_PIXELS pixels per group (tap classes get too thin) */
        const int pq = cs->p * cs->q, gmem = (int)(GROUP_FLOATS / (per ? per : 1));
        int gt = (cs->n + MIN_TASKS - 1) / MIN_TASKS, gp = (MIN_PIXELS + pq - 1) / pq;
        G = gt > gp ? gt : gp;
        if (G > gmem) G = gmem;
    }
    S.G = G < 1 ? 1 : G > cs->n ? cs->n : G;
    S.ngroups = (cs->n + S.G - 1) / S.G;
    S.xsz = (size_t)cs->c * S.G * S.plane + 16;
    S.dysz = (size_t)cs->k * S.G * S.plane2 + 16;
    /* rows of the tap classes: every pixel once plus each class's padding; per axis the forward's
     * in-image taps are an interval with monotone ends (<= 2R+2 of them), the input gradient's
     * one per stride phase (<= 2R+2*st) */
    int nb1 = (2 * cs->r + 2) * (2 * cs->s + 2), nb2 = (2 * cs->r + 2 * st) * (2 * cs->s + 2 * st);
    nb1 = nb1 < cs->p * cs->q ? nb1 : cs->p * cs->q;
    nb2 = nb2 < cs->h * cs->w ? nb2 : cs->h * cs->w;
    S.rows1 = (size_t)S.G * cs->p * cs->q + (size_t)nb1 * S.np;
    S.rows2 = (size_t)S.G * cs->h * cs->w + (size_t)nb2 * S.np;
    S.prow = (size_t)cs->c * S.T + 1; /* dW rows (c, t) and a dummy row for padding columns */
    return S;
}

/* x (C,H,W) of image g -> its zero-padded planes in Xp (through the prologue when S has one:
 * z = max(x * psc[c] + psh[c], 0), the padding stays zeros of z). */
static void fill_xp(const sgeo *S, const float *x, float *xp, int g)
{
    const nnc__conv_shape *cs = &S->cs;
    const size_t in_cs = (size_t)S->G * S->plane;
    for (int c = 0; c < cs->c; c++) {
        float *pl = xp + (size_t)c * in_cs + (size_t)g * S->plane;
        memset(pl, 0, sizeof(float) * S->plane);
        for (int h = 0; h < cs->h; h++) {
            float *d = pl + (size_t)(h + cs->pad) * S->wp + cs->pad;
            const float *src = x + ((size_t)c * cs->h + h) * cs->w;
            if (!S->psc) {
                memcpy(d, src, sizeof(float) * (size_t)cs->w);
                continue;
            }
            const float sc = S->psc[c], sh = S->psh[c];
            const nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh);
            int i = 0;
            for (; i + 4 <= cs->w; i += 4) nnc__v4_store(d + i, nnc__bnrelu_v4(nnc__v4_load(src + i), vs, vh));
            for (; i < cs->w; i++) d[i] = nnc__bnrelu(src[i], sc, sh);
        }
    }
}

/* Tap classes (see the top): class cl has nt[cl] taps (toff/widx[cl*T + i]) and rows
 * [row[cl], row[cl] + np[cl]); row i reads at poff[i] and is pixel pix[i] = g*n + j of the group
 * (G*n: padding row, written to a spare row of the output). */
typedef struct tcls {
    int ncls, nrows;
    int *row, *np, *nt, *toff, *widx, *poff, *pix;
} tcls;

/* ints a tcls needs (first) plus the build's scratch (mask / base per pixel) for n pixels per
 * image, rows (a bound like S.rows1) and T taps */
static size_t tcls_ints(int n, size_t rows, int T) { return 5 * (size_t)n + 2 * (size_t)n * T + 2 * rows + 2; }

/* Class of each of the n pixels by mask m[] (first[cl]: a pixel of class cl); returns the count. */
static int classify(int n, const uint64_t *m, int *first, int *cls_of)
{
    int ncls = 0;
    for (int j = 0; j < n; j++) {
        int cl = 0;
        while (cl < ncls && m[first[cl]] != m[j]) cl++;
        if (cl == ncls) first[ncls++] = j;
        cls_of[j] = cl;
    }
    return ncls;
}

/* Lays out a tcls in ints (tcls_ints) and builds it from pixel j's valid-tap mask m[j] and base
 * offset b[j] (G images at plane apart); tap t adds toff_of[t] and uses weight row t. A class
 * with fewer than MERGE_ROWS rows takes the mask wide[j] instead (a superset whose extra taps
 * read zero padding), so that thin classes join a larger one. */
static void tcls_build(tcls *tc, int *ints, int n, uint64_t *m, const uint64_t *wide, const int *b, int G,
                       size_t plane, int np, int T, const int *toff_of, size_t rows)
{
    tc->row = ints;
    tc->np = tc->row + n;
    tc->nt = tc->np + n;
    tc->toff = tc->nt + n;
    tc->widx = tc->toff + (size_t)n * T;
    tc->poff = tc->widx + (size_t)n * T;
    tc->pix = tc->poff + rows;
    int *first = tc->pix + rows, *cls_of = first + n, *cnt = tc->nt, row = 0;
    int ncls = classify(n, m, first, cls_of);
    for (int cl = 0; cl < ncls; cl++) cnt[cl] = 0;
    for (int j = 0; j < n; j++) cnt[cls_of[j]]++;
    int widened = 0;
    for (int j = 0; j < n; j++)
        if (cnt[cls_of[j]] * G < MERGE_ROWS && m[j] != wide[j]) {
            m[j] = wide[j];
            widened = 1;
        }
    if (widened) ncls = classify(n, m, first, cls_of);
    for (int cl = 0; cl < ncls; cl++) {
        const uint64_t mk = m[first[cl]];
        int nt = 0, k = 0;
        for (int t = 0; t < T; t++)
            if (mk >> t & 1) {
                tc->toff[cl * T + nt] = toff_of[t];
                tc->widx[cl * T + nt] = t;
                nt++;
            }
        tc->nt[cl] = nt;
        tc->row[cl] = row;
        for (int g = 0; g < G; g++)
            for (int j = 0; j < n; j++)
                if (cls_of[j] == cl) {
                    tc->poff[row + k] = (int)((size_t)g * plane) + b[j];
                    tc->pix[row + k] = g * n + j;
                    k++;
                }
        for (; k % np; k++) {
            tc->poff[row + k] = 0;
            tc->pix[row + k] = G * n;
        }
        tc->np[cl] = k;
        row += k;
        NNC_ASSERT((size_t)row <= rows, "conv2d: tap-class rows %d past the bound %zu", row, rows);
    }
    tc->ncls = ncls;
    tc->nrows = row;
}

/* Forward classes: output pixel (p,q) of an image, taps inside the unpadded input. */
static void fwd_classes(const sgeo *S, tcls *tc, int *ints, uint64_t *m, int *b, int *toff_of)
{
    const nnc__conv_shape *cs = &S->cs;
    const int st = cs->stride, n = cs->p * cs->q;
    uint64_t *wide = m + n, all = S->T == 64 ? ~(uint64_t)0 : ((uint64_t)1 << S->T) - 1;
    for (int t = 0; t < S->T; t++) toff_of[t] = (t / cs->s) * S->wp + t % cs->s;
    for (int j = 0; j < n; j++) {
        int p = j / cs->q, q = j % cs->q;
        b[j] = p * st * S->wp + q * st;
        m[j] = 0;
        for (int t = 0; t < S->T; t++) {
            int h = p * st + t / cs->s - cs->pad, w = q * st + t % cs->s - cs->pad;
            if (h >= 0 && h < cs->h && w >= 0 && w < cs->w) m[j] |= (uint64_t)1 << t;
        }
        wide[j] = all;
    }
    tcls_build(tc, ints, n, m, wide, b, S->G, S->plane, S->np, S->T, toff_of, S->rows1);
}

/* Input-gradient classes: input pixel (h,w), the taps of its stride phase whose dy index is in range. */
static void dx_classes(const sgeo *S, tcls *tc, int *ints, uint64_t *m, int *b, int *toff_of)
{
    const nnc__conv_shape *cs = &S->cs;
    const int st = cs->stride, n = cs->h * cs->w;
    uint64_t *wide = m + n;
    for (int t = 0; t < S->T; t++) toff_of[t] = (S->ep - t / cs->s / st) * S->pw + (S->eq - t % cs->s / st);
    for (int j = 0; j < n; j++) {
        int hh = j / cs->w + cs->pad, ww = j % cs->w + cs->pad, a = hh % st, bb = ww % st;
        b[j] = ((hh - a) / st) * S->pw + (ww - bb) / st;
        m[j] = wide[j] = 0;
        for (int t = 0; t < S->T; t++) {
            int r = t / cs->s, sc = t % cs->s;
            if (r % st != a || sc % st != bb) continue;
            wide[j] |= (uint64_t)1 << t; /* the phase's taps: dyp's padding covers the rest */
            if (hh < r || ww < sc) continue;
            if ((hh - r) / st < cs->p && (ww - sc) / st < cs->q) m[j] |= (uint64_t)1 << t;
        }
    }
    tcls_build(tc, ints, n, m, wide, b, S->G, S->plane2, S->np, S->T, toff_of, S->rows2);
}

/* kvec over every class of tc, reduction channels in blocks of CB (in: cin channels at in_cs,
 * w: wct = T rows of kp per channel); out (stride kp) gets pixel d at row d, padding at row G*n. */
static void run_classes(const conv_kernels *kn, const tcls *tc, const float *in, size_t in_cs, int cin, int T,
                        const float *w, int kp, float *out)
{
    for (int cl = 0; cl < tc->ncls; cl++)
        for (int c0 = 0; c0 < cin; c0 += CB)
            kn->kvec(in + (size_t)c0 * in_cs, in_cs, cin - c0 < CB ? cin - c0 : CB, tc->toff + cl * T,
                     tc->widx + cl * T, tc->nt[cl], T, tc->poff + tc->row[cl], tc->pix + tc->row[cl], tc->np[cl],
                     w + (size_t)c0 * T * kp, kp, out, (size_t)kp, c0 > 0);
}

/* Weight-gradient columns of the tap classes of tc: class cl's columns [ofs[cl], +n[cl]) are
 * (c, tap i of the class) for c < C, padded to np: col = c*in_cs + toff, drow = c*T + t (the
 * padding: col 0 and the dummy row C*T). */
typedef struct wcols {
    int *ofs, *n, *drow;
    size_t *col;
} wcols;

/* At most this many forward tap classes: per axis the in-image taps form an interval whose two
 * ends each move monotonically with the output position. */
static int ncls_bound(const nnc__conv_shape *cs)
{
    int b = (2 * cs->r + 2) * (2 * cs->s + 2), n = cs->p * cs->q;
    return b < n ? b : n;
}

static size_t wcols_cols(const sgeo *S) { return (size_t)ncls_bound(&S->cs) * ((size_t)S->cs.c * S->T + (size_t)S->np); }

static void wcols_build(wcols *wc, const tcls *tc, const sgeo *S, size_t in_cs)
{
    const int C = S->cs.c, T = S->T;
    NNC_ASSERT(tc->ncls <= ncls_bound(&S->cs), "conv2d: %d tap classes, bound %d", tc->ncls, ncls_bound(&S->cs));
    int j = 0;
    for (int cl = 0; cl < tc->ncls; cl++) {
        const int nt = tc->nt[cl], j0 = j;
        wc->ofs[cl] = j0;
        for (int c = 0; c < C && nt; c++)
            for (int i = 0; i < nt; i++, j++) {
                wc->col[j] = (size_t)c * in_cs + (size_t)tc->toff[cl * T + i];
                wc->drow[j] = c * T + tc->widx[cl * T + i];
            }
        for (; (j - j0) % S->np; j++) {
            wc->col[j] = 0;
            wc->drow[j] = C * T;
        }
        wc->n[cl] = j - j0;
    }
}

/* dyt rows (pixel d at row d) of the images past the gn filled ones of a group of G, and the
 * spare row G*n that padding rows read: zero (the weight gradient sums over every row). */
static void zero_absent_rows(float *dyt, int gn, int G, int n, int kp)
{
    memset(dyt + (size_t)gn * n * kp, 0, sizeof(float) * ((size_t)(G - gn) * n + 1) * (size_t)kp);
}

/* dw[drow][k] += the class-by-class weight gradient: Xp (xp) against dyt (pixel-order rows of
 * stride dy_ps, zero from the absent images on), kw output channels. */
static void wgrad_classes(const conv_kernels *kn, const tcls *tc, const wcols *wc, const float *xp, const float *dyt,
                          size_t dy_ps, int kw, float *dw)
{
    for (int cl = 0; cl < tc->ncls; cl++)
        if (wc->n[cl])
            kn->kvec_wgrad(xp, wc->col + wc->ofs[cl], wc->drow + wc->ofs[cl], wc->n[cl], tc->poff + tc->row[cl],
                           tc->pix + tc->row[cl], tc->np[cl], dyt, dy_ps, kw, dw);
}

typedef struct pack_ctx {
    const conv_kernels *kn;
    const float *w;
    float *out;
    int K, C, T, ld, dx;
} pack_ctx;

#define PACK_TASKS 16

static void pack_task(void *vctx, int task, int thread)
{
    (void)thread;
    const pack_ctx *p = vctx;
    if (!p->dx) { /* columns [j0, j1) of w as a K x C*T matrix -> rows of out */
        const int n = p->C * p->T, j0 = (int)((long long)n * task / PACK_TASKS), j1 = (int)((long long)n * (task + 1) / PACK_TASKS);
        p->kn->transpose(p->w + j0, (size_t)n, p->K, j1 - j0, p->out + (size_t)j0 * p->ld, (size_t)p->ld);
        if (p->ld > p->K)
            for (int j = j0; j < j1; j++) memset(p->out + (size_t)j * p->ld + p->K, 0, sizeof(float) * (size_t)(p->ld - p->K));
        return;
    }
    const int k0 = (int)((long long)p->K * task / PACK_TASKS), k1 = (int)((long long)p->K * (task + 1) / PACK_TASKS);
    for (int k = k0; k < k1; k++) { /* w[k] as a C x T matrix -> T rows of out */
        float *d = p->out + (size_t)k * p->T * p->ld;
        p->kn->transpose(p->w + (size_t)k * p->C * p->T, (size_t)p->T, p->C, p->T, d, (size_t)p->ld);
        if (p->ld > p->C)
            for (int t = 0; t < p->T; t++) memset(d + (size_t)t * p->ld + p->C, 0, sizeof(float) * (size_t)(p->ld - p->C));
    }
}

/* Weights w (K,C,T) repacked over the thread pool: forward (dx 0) out[(c*T + t)*ld + k] =
 * w[k][c][t] (0 for K <= k < ld); input gradient (dx 1) out[(k*T + t)*ld + c] = w[k][c][t]. */
static void pack_weights(const conv_kernels *kn, const float *w, int K, int C, int T, int ld, int dx, float *out)
{
    pack_ctx p = {kn, w, out, K, C, T, ld, dx};
    nnc__parallel_for(PACK_TASKS, pack_task, &p);
}

/* ---- BF16 (precision bf16): the FP32 staging above, then rounded into words of two BF16 values
 * for nn/conv/kvec_bf16.c. Forward and input gradient pair adjacent reduction channels (a word
 * of channels 2i, 2i+1; an odd count pads a zero channel); the weight gradient pairs the same
 * pixel of images 2i and 2i+1 of a group (an odd group pads a zero image), so its tap classes
 * are those of a group of ceil(G/2) image pairs. ---- */

/* nch channels of n values at stride cs -> (nch+1)/2 word channels at the same stride */
static void pack_pairs(const float *src, size_t cs, int nch, size_t n, uint32_t *dst)
{
    for (int i = 0; 2 * i < nch; i++)
        nnc__bf16_pack2_avx512(src + (size_t)2 * i * cs, 2 * i + 1 < nch ? src + (size_t)(2 * i + 1) * cs : NULL,
                               dst + (size_t)i * cs, (int)n);
}

/* Weights packed by pack_weights (nch reduction channels of T rows of ld) -> channel pairs. */
static void pack_weight_pairs(const float *wf, int nch, int T, int ld, uint32_t *dst)
{
    for (int t = 0; t < T; t++) pack_pairs(wf + (size_t)t * ld, (size_t)T * ld, nch, (size_t)ld, dst + (size_t)t * ld);
}

/* run_classes on words: cin2 channel pairs, weights in pairs (CB pairs per call: the same bytes
 * as CB FP32 channels). */
static void run_classes_bf16(const tcls *tc, const uint32_t *in, size_t in_cs, int cin2, int T, const uint32_t *w,
                             int kp, float *out)
{
    for (int cl = 0; cl < tc->ncls; cl++)
        for (int c0 = 0; c0 < cin2; c0 += CB)
            nnc__conv_kvec_bf16(in + (size_t)c0 * in_cs, in_cs, cin2 - c0 < CB ? cin2 - c0 : CB, tc->toff + cl * T,
                                tc->widx + cl * T, tc->nt[cl], T, tc->poff + tc->row[cl], tc->pix + tc->row[cl],
                                tc->np[cl], w + (size_t)c0 * T * kp, kp, out, (size_t)kp, c0 > 0);
}

/* The weight gradient on image pairs: Xp of G images (all G slots finite) and dyt (G*n rows of
 * kp, zero past the filled images) -> xw (C channels of G2 = ceil(G/2) slots) and dw2 (G2*n + 1
 * rows, the last one zero: the padding rows of the classes read it), then the classes of the
 * G2-pair geometry. */
static void wgrad_pack_pairs(const sgeo *S, const float *xp, const float *dyt, uint32_t *xw, uint32_t *dw2)
{
    const int G = S->G, G2 = (G + 1) / 2, C = S->cs.c, n = S->cs.p * S->cs.q, kp = S->kp;
    const size_t in_cs = (size_t)G * S->plane, in_cs2 = (size_t)G2 * S->plane, rows = (size_t)n * kp;
    for (int c = 0; c < C; c++)
        for (int g2 = 0; g2 < G2; g2++) {
            const float *a = xp + (size_t)c * in_cs + (size_t)2 * g2 * S->plane;
            nnc__bf16_pack2_avx512(a, 2 * g2 + 1 < G ? a + S->plane : NULL, xw + (size_t)c * in_cs2 + (size_t)g2 * S->plane,
                                   (int)S->plane);
        }
    for (int g2 = 0; g2 < G2; g2++) {
        const float *a = dyt + (size_t)2 * g2 * rows;
        nnc__bf16_pack2_avx512(a, 2 * g2 + 1 < G ? a + rows : NULL, dw2 + (size_t)g2 * rows, (int)rows);
    }
    memset(dw2 + (size_t)G2 * rows, 0, sizeof(uint32_t) * (size_t)kp);
}

/* dw[drow][k] += the class-by-class weight gradient on the pairs (xw, dw2: rows of stride dy_ps),
 * kw output channels. */
static void wgrad_run_bf16(const tcls *tc, const wcols *wc, const uint32_t *xw, const uint32_t *dw2, size_t dy_ps, int kw,
                           float *dw)
{
    for (int cl = 0; cl < tc->ncls; cl++)
        if (wc->n[cl])
            nnc__conv_kvec_wgrad_bf16(xw, wc->col + wc->ofs[cl], wc->drow + wc->ofs[cl], wc->n[cl], tc->poff + tc->row[cl],
                                      tc->pix + tc->row[cl], tc->np[cl], dw2, dy_ps, kw, dw);
}

static void wgrad_classes_bf16(const sgeo *S, const tcls *tc, const wcols *wc, const float *xp, const float *dyt,
                               uint32_t *xw, uint32_t *dw2, float *dw)
{
    wgrad_pack_pairs(S, xp, dyt, xw, dw2);
    wgrad_run_bf16(tc, wc, xw, dw2, (size_t)S->kp, S->kp, dw);
}

/* ---------------------------------------------------------------------------------------------
 * forward
 * ------------------------------------------------------------------------------------------ */

typedef struct sctx {
    const sgeo *S;
    const conv_kernels *kn;
    const float *x, *dy, *wk, *wd;
    const nnc__conv_epilogue *ep;
    const tcls *tc;            /* forward, or the input gradient's */
    const tcls *wtc;           /* weight gradient: forward-style classes */
    const wcols *wc;
    float *y, *dx, *part, *scratch;
    double *bpart;
    int dx_fresh, nchunk;
    size_t per_thread;
    double *pstat;             /* forward: per-plane (sum, M2) of y, (N,K,2), or NULL */
    const float *pmean;        /* backward with dsums: the centre of x per channel */
    double *dsums;             /* backward: mask dx and take its per-plane sums (nnc__conv_fuse), or NULL */
    size_t xw_words, dw2_words; /* backward, bf16: per-thread words of the weight gradient's image pairs */
} sctx;

static void fwd_group(void *vctx, int grp, int thread)
{
    const sctx *f = vctx;
    const sgeo *S = f->S;
    const nnc__conv_shape *cs = &S->cs;
    const int PQ = cs->p * cs->q, K = cs->k;
    float *xp = f->scratch + (size_t)thread * f->per_thread, *o = xp + S->xsz;
    float *row = o + ((size_t)S->G * PQ + 1) * S->kp;
    int n0 = grp * S->G, gn = n0 + S->G <= cs->n ? S->G : cs->n - n0;
    for (int g = 0; g < gn; g++) fill_xp(S, f->x + (size_t)(n0 + g) * cs->c * cs->h * cs->w, xp, g);
    if (S->bf) { /* the pairs after row (the absent images' slots are not packed: their rows are dropped) */
        uint32_t *x2 = (uint32_t *)(void *)(row + (size_t)K * PQ + 16);
        const size_t in_cs = (size_t)S->G * S->plane;
        pack_pairs(xp, in_cs, cs->c, (size_t)gn * S->plane, x2);
        run_classes_bf16(f->tc, x2, in_cs, (cs->c + 1) / 2, S->T, (const uint32_t *)(const void *)f->wk, S->kp, o);
    } else {
        run_classes(f->kn, f->tc, xp, (size_t)S->G * S->plane, cs->c, S->T, f->wk, S->kp, o);
    }
    for (int g = 0; g < gn; g++) {
        size_t yoff = (size_t)(n0 + g) * K * PQ;
        f->kn->transpose(o + (size_t)g * PQ * S->kp, (size_t)S->kp, PQ, K, row, (size_t)PQ);
        for (int k = 0; k < K; k++) {
            nnc__epilogue_plane(f->y + yoff + (size_t)k * PQ, (size_t)PQ, row + (size_t)k * PQ, (size_t)PQ,
                                f->ep->res ? f->ep->res + yoff + (size_t)k * PQ : NULL, (size_t)PQ, 1, PQ, f->ep, k);
            /* statistics for a following batch norm while the plane is cache-hot */
            if (f->pstat) nnc__conv_plane_stats(f->y + yoff + (size_t)k * PQ, PQ, f->pstat + ((size_t)(n0 + g) * K + k) * 2);
        }
    }
}

/* Packed once: the FP32 packing, and for BF16 its channel pairs after it (as kvec_forward packs). */
size_t nnc__conv_kvec_packed_floats(const nnc__conv_shape *cs)
{
    return (size_t)(cs->prec == NNC_PRECISION_BF16 ? 2 : 1) * cs->c * cs->r * cs->s * round_up((size_t)cs->k, 16);
}

void nnc__conv_kvec_pack(const nnc__conv_shape *cs, const float *w, float *wk)
{
    const int T = cs->r * cs->s, kp = (int)round_up((size_t)cs->k, 16);
    pack_weights(nnc__conv_kernels(), w, cs->k, cs->c, T, kp, 0, wk);
    if (cs->prec == NNC_PRECISION_BF16)
        pack_weight_pairs(wk, cs->c, T, kp, (uint32_t *)(void *)(wk + (size_t)cs->c * T * kp));
}

/* The forward with weights w, or (w NULL) weights wpre packed by nnc__conv_kvec_pack. */
static void kvec_forward(const nnc__conv_shape *cs, const float *x, const float *w, const float *wpre,
                         const nnc__conv_epilogue *ep, const float *psc, const float *psh, float *y, double *stats)
{
    const conv_kernels *kn = nnc__conv_kernels();
    sgeo S = make_sgeo(cs, kn, 0);
    S.psc = psc;
    S.psh = psh;
    const int C = cs->c, K = cs->k, T = S.T, PQ = cs->p * cs->q;
    int width = nnc__parallel_width(S.ngroups);
    size_t per_thread = S.xsz + ((size_t)S.G * PQ + 1) * S.kp + (size_t)K * PQ + 16;
    if (S.bf) per_thread += (size_t)(C + 1) / 2 * S.G * S.plane + 16; /* the input's channel pairs */
    size_t sz[5] = {wpre ? 0 : sizeof(float) * (size_t)(S.bf ? 2 : 1) * C * T * S.kp, sizeof(uint64_t) * 2 * (size_t)PQ,
                    sizeof(int) * (tcls_ints(PQ, S.rows1, T) + (size_t)PQ + (size_t)T),
                    sizeof(float) * per_thread * (size_t)width, stats ? sizeof(double) * 2 * (size_t)cs->n * K : 0};
    size_t bytes = 0;
    for (int i = 0; i < 5; i++) bytes += round_up(sz[i], 64);
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    void *slot[5];
    for (int i = 0; i < 5; i++) {
        slot[i] = base;
        base += round_up(sz[i], 64);
    }
    const float *wk = wpre;
    int *ints = slot[2], *b = ints + tcls_ints(PQ, S.rows1, T), *toff_of = b + PQ;
    if (!wpre) { /* pack here (FP32, then BF16 channel pairs after it), else packed once */
        pack_weights(kn, w, K, C, T, S.kp, 0, slot[0]);
        if (S.bf) pack_weight_pairs(slot[0], C, T, S.kp, (uint32_t *)(void *)((float *)slot[0] + (size_t)C * T * S.kp));
        wk = slot[0];
    }
    if (S.bf) wk += (size_t)C * T * S.kp; /* the kernels read the pairs */
    tcls tc;
    fwd_classes(&S, &tc, ints, slot[1], b, toff_of);
    sctx f = {&S, kn, x, NULL, wk, NULL, ep, &tc, NULL, NULL, y, NULL, NULL, slot[3], NULL, 0, 0, per_thread,
              stats ? slot[4] : NULL, NULL, NULL, 0, 0};
    nnc__parallel_for(S.ngroups, fwd_group, &f);
    if (stats) nnc__conv_combine_stats(slot[4], cs->n, K, PQ, stats);
}

void nnc__conv_kvec_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                            const float *psc, const float *psh, float *y, double *stats)
{
    kvec_forward(cs, x, w, NULL, ep, psc, psh, y, stats);
}

void nnc__conv_kvec_forward_packed(const nnc__conv_shape *cs, const float *x, const float *wk,
                                   const nnc__conv_epilogue *ep, float *y)
{
    kvec_forward(cs, x, NULL, wk, ep, NULL, NULL, y, NULL);
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
    float *xp = b->scratch + (size_t)thread * b->per_thread, *dyt = xp + S->xsz;
    float *dyp = dyt + ((size_t)S->G * PQ + 1) * S->kp, *dxt = dyp + S->dysz, *tmp = dxt + ((size_t)S->G * HW + 1) * S->cp;
    float *part = b->part ? b->part + (size_t)chunk * S->prow * S->kp : NULL;
    double *bpart = b->bpart ? b->bpart + (size_t)chunk * K : NULL;
    if (part) memset(part, 0, sizeof(float) * S->prow * S->kp);
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
        if (part) {
            zero_absent_rows(dyt, gn, S->G, PQ, S->kp);
            /* and the absent images' input slots: their zero dy rows must meet finite values
             * (stale scratch could hold Inf or NaN, and 0 * NaN would reach dW) */
            if (gn < S->G)
                for (int c = 0; c < C; c++)
                    memset(xp + (size_t)c * S->G * S->plane + (size_t)gn * S->plane, 0,
                           sizeof(float) * (size_t)(S->G - gn) * S->plane);
            if (S->bf) {
                uint32_t *xw = (uint32_t *)(void *)(tmp + (size_t)C * HW), *dw2 = xw + b->xw_words;
                wgrad_classes_bf16(S, b->wtc, b->wc, xp, dyt, xw, dw2, part);
            } else {
                wgrad_classes(kn, b->wtc, b->wc, xp, dyt, (size_t)S->kp, S->kp, part);
            }
        }
        if (b->dx && S->bf) { /* dy's channel pairs (the absent images' slots are not packed) */
            uint32_t *dy2 = (uint32_t *)(void *)(tmp + (size_t)C * HW) + b->xw_words + b->dw2_words;
            pack_pairs(dyp, dy_cs, K, (size_t)gn * S->plane2, dy2);
            run_classes_bf16(b->tc, dy2, dy_cs, (K + 1) / 2, T, (const uint32_t *)(const void *)b->wd, S->cp, dxt);
        } else if (b->dx) {
            run_classes(kn, b->tc, dyp, dy_cs, K, T, b->wd, S->cp, dxt);
        }
        if (b->dx) {
            for (int g = 0; g < gn; g++) {
                float *dxn = b->dx + (size_t)(n0 + g) * C * HW;
                kn->transpose(dxt + (size_t)g * HW * S->cp, (size_t)S->cp, HW, C, b->dx_fresh ? dxn : tmp, (size_t)HW);
                if (b->dsums) /* fresh: the prologue's mask and the BN sums while the image is cache-hot */
                    nnc__conv_mask_sums(b->x + (size_t)(n0 + g) * C * HW, dxn, C, (size_t)HW, S->psc, S->psh, b->pmean,
                                        b->dsums + (size_t)(n0 + g) * C * 2);
                if (!b->dx_fresh)
                    for (size_t j = 0; j < (size_t)C * HW; j++) dxn[j] += tmp[j];
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
    const size_t psz = r->S->prow * r->S->kp;
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
 * or reduced (each value is one task's, in a fixed order: thread-count independent); bf16 packs
 * both into image pairs first (wgrad_pack_pairs)
 * ------------------------------------------------------------------------------------------ */

typedef struct wide_ctx {
    const sgeo *S;
    const conv_kernels *kn;
    const float *x, *dy;
    float *xp, *dyt, *blk, *dw;
    const tcls *wtc;
    const wcols *wc;
    const uint32_t *xw, *dw2; /* bf16: the image pairs of xp and dyt (wgrad_pack_pairs) */
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
    float *blk = c->blk + (size_t)thread * S->prow * WIDE_KB;
    memset(blk, 0, sizeof(float) * S->prow * WIDE_KB);
    if (S->bf) wgrad_run_bf16(c->wtc, c->wc, c->xw, c->dw2 + k0, (size_t)S->kp, WIDE_KB, blk);
    else wgrad_classes(c->kn, c->wtc, c->wc, c->xp, c->dyt + k0, (size_t)S->kp, WIDE_KB, blk);
    for (int kk = 0; kk < WIDE_KB && k0 + kk < cs->k; kk++) {
        float *d = c->dw + (size_t)(k0 + kk) * ncol;
        for (int j = 0; j < ncol; j++) d[j] += blk[(size_t)j * WIDE_KB + kk];
    }
}

/* The weight-gradient classes of geometry S and their columns, laid out in ints (64-byte
 * aligned, wclass_ints of them: the pixel masks first) and cols (wcols_cols). */
static size_t wclass_ints(const sgeo *S)
{
    const int PQ = S->cs.p * S->cs.q;
    return 4 * (size_t)PQ + tcls_ints(PQ, S->rows1, S->T) + (size_t)PQ + (size_t)S->T +
           2 * (size_t)ncls_bound(&S->cs) + wcols_cols(S);
}

static void wclass_build(const sgeo *S, tcls *wtc, wcols *wc, int *ints, size_t *cols)
{
    const int PQ = S->cs.p * S->cs.q;
    uint64_t *m = (uint64_t *)(void *)ints;
    int *t = ints + 4 * (size_t)PQ, *b = t + tcls_ints(PQ, S->rows1, S->T), *toff_of = b + PQ;
    fwd_classes(S, wtc, t, m, b, toff_of);
    wc->ofs = toff_of + S->T;
    wc->n = wc->ofs + ncls_bound(&S->cs);
    wc->drow = wc->n + ncls_bound(&S->cs);
    wc->col = cols;
    wcols_build(wc, wtc, S, (size_t)S->G * S->plane);
}

static void wide_wgrad(const nnc__conv_shape *cs, const float *x, const float *psc, const float *psh, const float *dy,
                       float *dw)
{
    const conv_kernels *kn = nnc__conv_kernels();
    sgeo S = make_sgeo(cs, kn, cs->n);
    S.psc = psc;
    S.psh = psh;
    const int ntask = S.kp / WIDE_KB, PQ = cs->p * cs->q;
    /* bf16: the classes are those of ceil(N/2) image pairs (S2), on the pairs xw and dw2 */
    const sgeo S2 = S.bf ? make_sgeo(cs, kn, (cs->n + 1) / 2) : S;
    size_t sz[6] = {sizeof(float) * S.xsz, sizeof(float) * ((size_t)S.G * PQ + 1) * S.kp,
                    S.bf ? sizeof(uint32_t) * ((size_t)cs->c * S2.G * S.plane + ((size_t)S2.G * PQ + 1) * S.kp + 32) : 0,
                    sizeof(int) * wclass_ints(&S2), sizeof(size_t) * wcols_cols(&S2),
                    sizeof(float) * S.prow * WIDE_KB * (size_t)nnc__parallel_width(ntask)};
    size_t bytes = 0;
    for (int i = 0; i < 6; i++) bytes += round_up(sz[i], 64);
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    void *slot[6];
    for (int i = 0; i < 6; i++) {
        slot[i] = base;
        base += round_up(sz[i], 64);
    }
    tcls wtc;
    wcols wc;
    wclass_build(&S2, &wtc, &wc, slot[3], slot[4]);
    uint32_t *xw = slot[2], *dw2 = S.bf ? xw + (size_t)cs->c * S2.G * S.plane + 16 : NULL;
    wide_ctx c = {&S, kn, x, dy, slot[0], slot[1], slot[5], dw, &wtc, &wc, xw, dw2};
    nnc__parallel_for(cs->n, wide_fill, &c);
    zero_absent_rows(c.dyt, cs->n, cs->n, PQ, S.kp);
    if (S.bf) wgrad_pack_pairs(&S, c.xp, c.dyt, xw, dw2);
    nnc__parallel_for(ntask, wide_task, &c);
}

int nnc__conv_kvec_backward(const nnc__conv_shape *cs, const float *x, const float *psc, const float *psh,
                             const float *w, const float *dy, float *dx, int dx_fresh, float *dw, float *db,
                             const float *pmean, double *dsums)
{
    if (!dx && !dw && !db) return 0;
    if (!(psc && dx && dx_fresh && pmean)) dsums = NULL;
    const conv_kernels *kn = nnc__conv_kernels();
    if (dw && (size_t)cs->c * cs->r * cs->s * cs->k > WIDE_DW_FLOATS && cs->k % WIDE_KB == 0 &&
        (size_t)cs->n * cs->c * (cs->h + 2 * cs->pad) * (cs->w + 2 * cs->pad) +
                (size_t)cs->n * cs->p * cs->q * cs->k <= WIDE_MAX_FLOATS) {
        int r = nnc__conv_kvec_backward(cs, x, psc, psh, w, dy, dx, dx_fresh, NULL, db, pmean, dsums);
        wide_wgrad(cs, x, psc, psh, dy, dw);
        return r;
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
    S.psc = psc;
    S.psh = psh;
    const int C = cs->c, K = cs->k, T = S.T;
    const size_t psz = S.prow * S.kp;
    const int HW = cs->h * cs->w;
    int width = nnc__parallel_width(nchunk);
    size_t per_thread = S.xsz + ((size_t)S.G * PQ + 1) * S.kp + S.dysz + ((size_t)S.G * HW + 1) * S.cp + (size_t)C * HW;
    /* bf16: the weight gradient's tap classes are those of a group of G2 image pairs (S2) */
    const sgeo S2 = S.bf && dw ? make_sgeo(cs, kn, (S.G + 1) / 2) : S;
    const size_t xw_words = S.bf && dw ? (size_t)C * S2.G * S.plane + 16 : 0,
                 dw2_words = S.bf && dw ? ((size_t)S2.G * PQ + 1) * S.kp + 16 : 0,
                 dy2_words = S.bf && dx ? (size_t)(K + 1) / 2 * S.G * S.plane2 + 16 : 0;
    per_thread += xw_words + dw2_words + dy2_words;
    size_t sz[8] = {sizeof(double) * (db ? (size_t)nchunk * K : 0),
                    sizeof(float) * (dw ? (size_t)nchunk * psz : 0),
                    sizeof(float) * (dx ? (size_t)(S.bf ? 2 : 1) * K * T * S.cp : 0),
                    sizeof(size_t) * (dw ? wcols_cols(&S2) : 0),
                    sizeof(int) * (dw ? wclass_ints(&S2) : 0),
                    sizeof(uint64_t) * 2 * (size_t)HW,
                    sizeof(int) * (tcls_ints(HW, S.rows2, T) + (size_t)HW + (size_t)T),
                    sizeof(float) * per_thread * (size_t)width};
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
    float *part = dw ? slot[1] : NULL, *wd = slot[2];
    tcls wtc;
    wcols wc;
    memset(&wtc, 0, sizeof wtc);
    memset(&wc, 0, sizeof wc);
    if (dw) wclass_build(&S2, &wtc, &wc, slot[4], slot[3]);
    tcls tc;
    memset(&tc, 0, sizeof tc);
    if (dx) {
        pack_weights(kn, w, K, C, T, S.cp, 1, wd);
        if (S.bf) { /* pairs of output channels, after the FP32 packing */
            uint32_t *w2 = (uint32_t *)(void *)(wd + (size_t)K * T * S.cp);
            pack_weight_pairs(wd, K, T, S.cp, w2);
            wd = (float *)(void *)w2;
        }
        int *ints = slot[6], *bb = ints + tcls_ints(HW, S.rows2, T);
        dx_classes(&S, &tc, ints, slot[5], bb, bb + HW);
    }
    sctx b = {&S, kn, x, dy, NULL, wd, NULL, &tc, &wtc, &wc, NULL, dx, part, slot[7], bpart, dx_fresh, nchunk, per_thread,
              NULL, pmean, dsums, xw_words, dw2_words};
    nnc__parallel_for(nchunk, bwd_chunk, &b);
    if (dw) {
        red_ctx r = {dw, part, &S, nchunk};
        nnc__parallel_for(16, reduce_task, &r);
    }
    if (db) nnc__conv_add_bias_parts(db, bpart, nchunk, K);
    return dsums != NULL;
}
