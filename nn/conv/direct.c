/* nn/conv/direct.c - the direct ("shifted GEMM") kernel set of the convolution (nn/conv/conv.h):
 * geometry, copies into and out of the padded phase-split layout, weight packing, and the split
 * over images.
 *
 * Method ("shifted GEMM" direct convolution, NCHW at both ends):
 *   Each image is copied into a zero-padded, stride-phase-split buffer Xt: for every channel
 *   c and phase (a,b) in [0,stride)^2 a plane Xt[c][a*st+b][i][j] = xpad[c][i*st+a][j*st+b]
 *   of Rh x Wh values, Rh = ceil(Hp/st), Wh = ceil(Wp/st) (Hp, Wp the padded input size).
 *   An output row p, column q then reads, for tap (r,s), the plane of phase (r%st, s%st) at
 *   flat index (p*Wh + q) + (r/st)*Wh + s/st: a pure shift of the flat output index
 *   j = p*Wh + q. So every conv (any stride, pad, kernel) is
 *       Y[k][j] = sum_{c, taps t} W[k][c][t] * Xt[c][plane_t][j + off_t]
 *   computed on "wide" rows of Wh columns (the Wh - Q extra columns are discarded; with stride 1
 *   and Q a multiple of the lanes the forward instead runs each output row's Q columns alone and
 *   writes them straight into y, "row mode"), with the
 *   pixel index j vectorised (16 lanes with AVX-512) and register tiles over output channels.
 *   The input gradient is the same kernel run on the zero-padded output gradient, once per
 *   phase with that phase's taps (a transposed conv), over the plane rows that hold input rows
 *   only; the weight gradient is a dot product
 *   along j per (k, c, t), with per-chunk partial sums reduced in chunk order.
 * Images are laid side by side in groups (large weights: one kernel call per group, so the
 * weights are streamed once per group). Work is split over image groups by nn/threads.h; partial
 * sums are per chunk of groups, the chunking depends only on the shape, and chunks are reduced in
 * order: results are bitwise identical for any thread count. Which layers come here is the
 * dispatcher's choice (nn/conv/dispatch.c).
 *
 * Buffers hold a group of grp images side by side (floats; pl = per-image slot, at least
 * Rh*Wh and at least round16(P*Wh) + maxoff so that one image's zero tail separates it from
 * the next;
 * phs = phase region = round48(grp*pl) + 48, room for every kernel's rounded vector count):
 *   Xt   [c][phase][image][pl], channel stride xcs = nph*phs, plus slack            (xsz)
 *   Yw   forward output rows: kp rows of ywr = phs, image g at g*pl + p*Wh + q       (ysz)
 *   Dyw  output gradient: kp rows of dks = lead + phs + 16, image g at lead + g*pl +
 *        p*Wh + q, zeros elsewhere (garbage columns, lead, gaps, tail)             (dsz)
 *   dXt  input gradient in the Xt layout, cp channels
 * The kernels run per image (grp offsets) or, when the weights are large, over the whole group
 * at once so the weights are streamed once per group instead of once per image.
 * Scratch comes from nnc__thread_scratch of the calling thread, sliced per pool thread. */
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/threads.h"
#include "nn/vec.h"

#define ROUND48(x) (((x) + 47) / 48 * 48)
#define ROUND16(x) (((x) + 15) / 16 * 16)
#define WGRAD_CHUNKS 16                 /* max partial-sum chunks of the weight gradient */
#define WGRAD_PART_FLOATS (4u << 20)    /* cap on chunks * |W| */

#define BIG_WEIGHTS_FLOATS (128u << 10) /* above: run the kernels over whole groups */
#define GROUP_XT_FLOATS (256u << 10)    /* target Xt size of a forward group */

typedef struct geo {
    nnc__conv_shape cs;
    int st, nph, rh, wh, nw, ntaps, maxoff, lead, grp;
    size_t pl, phs, xcs, xsz, ywr, ysz, dks, dsz;
    int kp, cp;                         /* K and C rounded up to 16 (covers every tile size) */
} geo;

static geo make_geo(const nnc__conv_shape *cs, int grp)
{
    geo G;
    memset(&G, 0, sizeof G);
    G.cs = *cs;
    G.st = cs->stride;
    G.nph = G.st * G.st;
    int hp = cs->h + 2 * cs->pad, wp = cs->w + 2 * cs->pad;
    G.rh = (hp + G.st - 1) / G.st;
    G.wh = (wp + G.st - 1) / G.st;
    G.nw = cs->p * G.wh;
    G.ntaps = cs->r * cs->s;
    G.maxoff = ((cs->r - 1) / G.st) * G.wh + (cs->s - 1) / G.st;
    G.lead = ROUND16(G.maxoff);
    G.grp = grp;
    G.pl = (size_t)G.rh * G.wh;
    /* zeros after an image's data: 16-lane rounding of the weight-gradient dot products plus
     * the reach of the input-gradient taps into the previous image */
    if (G.pl < ROUND16((size_t)G.nw) + (size_t)G.maxoff) G.pl = ROUND16((size_t)G.nw) + (size_t)G.maxoff;
    G.phs = ROUND48((size_t)grp * G.pl) + 48;
    G.xcs = (size_t)G.nph * G.phs;
    G.kp = ROUND16(cs->k);
    G.cp = ROUND16(cs->c);
    G.xsz = (size_t)cs->c * G.xcs + (size_t)G.maxoff + 64;
    G.ywr = G.phs;
    G.ysz = (size_t)G.kp * G.ywr;
    G.dks = (size_t)G.lead + G.phs + 16;
    G.dsz = (size_t)G.kp * G.dks;
    return G;
}

/* Short-row helpers (rows are 8..64 floats here: inline loops beat libc calls). */
static inline void row_copy(float *d, const float *s, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(d + i, nnc__v4_load(s + i));
    for (; i < n; i++) d[i] = s[i];
}

static inline void row_zero(float *d, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(d + i, nnc__v4_set1(0.0f));
    for (; i < n; i++) d[i] = 0.0f;
}

/* d[i] += s[i] */
static inline void row_add(float *d, const float *s, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(d + i, nnc__v4_load(d + i) + nnc__v4_load(s + i));
    for (; i < n; i++) d[i] += s[i];
}

/* d[i] = max(s[i] * sc + sh, 0) (the fused BN + ReLU prologue, nnc__bnrelu) */
static inline void row_bnrelu(float *d, const float *s, float sc, float sh, int n)
{
    nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh);
    int i = 0;
    for (; i + 4 <= n; i += 4) nnc__v4_store(d + i, nnc__bnrelu_v4(nnc__v4_load(s + i), vs, vh));
    for (; i < n; i++) d[i] = nnc__bnrelu(s[i], sc, sh);
}

/* Offset of tap t = r*S + s inside one channel of Xt. */
static int tap_offset(const geo *G, int t)
{
    int r = t / G->cs.s, s = t % G->cs.s, st = G->st;
    return (int)(((r % st) * st + s % st) * G->phs) + (r / st) * G->wh + s / st;
}

/* Channel c of x (C,H,W) -> its nph phase slots dst + ph*ps (layout above); with psc (the fused
 * prologue) the values stored are z = nnc__bnrelu(x, psc[c], psh[c]), the padding stays 0. */
static inline void fill_chan(const geo *G, const float *x, int c, float *dst, size_t ps, const float *psc,
                             const float *psh)
{
    const nnc__conv_shape *cs = &G->cs;
    const int st = G->st, pad = cs->pad, wh = G->wh;
    for (int a = 0; a < st; a++)
        for (int b = 0; b < st; b++) {
            float *pln = dst + (size_t)(a * st + b) * ps;
            /* zero the (L1-sized) slot in one call, then copy the valid parts of the rows in
             * (zeroing the 1-3 padding floats of each row separately costs a libc call each) */
            memset(pln, 0, sizeof(float) * G->pl);
            /* columns j < wh whose source column wc = j*st + b - pad lies in [0, W) */
            int j0 = pad > b ? (pad - b + st - 1) / st : 0, last = cs->w - 1 + pad - b;
            int j1 = last < 0 ? 0 : last / st + 1;
            if (j1 > wh) j1 = wh;
            for (int i = 0; i < G->rh; i++) {
                int hr = i * st + a - pad;
                if (hr < 0 || hr >= cs->h) continue;
                const float *src = x + ((size_t)c * cs->h + hr) * cs->w;
                float *row = pln + (size_t)i * wh;
                if (st == 1 && psc) {
                    row_bnrelu(row + pad, src, psc[c], psh[c], cs->w);
                } else if (st == 1) {
                    row_copy(row + pad, src, cs->w);
                } else if (psc) {
                    const float sc = psc[c], sh = psh[c];
                    for (int j = j0; j < j1; j++) row[j] = nnc__bnrelu(src[j * st + b - pad], sc, sh);
                } else {
                    for (int j = j0; j < j1; j++) row[j] = src[j * st + b - pad];
                }
            }
        }
}

/* x (C,H,W) of image g of the group -> its slots of Xt. */
static void fill_xt(const geo *G, const float *x, float *xt, int g, const float *psc, const float *psh)
{
    for (int c = 0; c < G->cs.c; c++) fill_chan(G, x, c, xt + (size_t)c * G->xcs + (size_t)g * G->pl, G->phs, psc, psh);
}

/* BF16: the same values rounded into the pairs layout (nn/conv/bf16.c) of Xt: (C+1)/2 channel
 * pairs with the FP32 channel stride xcs; tmp holds 2*nph*pl floats (two channels' slots). */
static void fill_xt_bf16(const geo *G, const float *x, uint32_t *xt, int g, const float *psc, const float *psh,
                         float *tmp)
{
    const int C = G->cs.c, nph = G->nph;
    if (G->st == 1 && !psc) {
        /* stride 1 without a prologue: each row rounded and paired straight from x's two
         * channels (the same pairs as below, without the FP32 slots) */
        const int H = G->cs.h, W = G->cs.w, pad = G->cs.pad, wh = G->wh;
        const size_t hw = (size_t)H * W, top = (size_t)pad * wh, used = (size_t)(pad + H) * wh;
        for (int c2 = 0; 2 * c2 < C; c2++) {
            uint32_t *pln = xt + (size_t)c2 * G->xcs + (size_t)g * G->pl;
            const float *lo = x + (size_t)2 * c2 * hw, *hi = 2 * c2 + 1 < C ? lo + hw : NULL;
            memset(pln, 0, sizeof(uint32_t) * top);
            for (int h = 0; h < H; h++) {
                uint32_t *row = pln + (size_t)(h + pad) * wh;
                for (int j = 0; j < pad; j++) row[j] = 0;
                nnc__bf16_pack2_avx512(lo + (size_t)h * W, hi ? hi + (size_t)h * W : NULL, row + pad, W);
                for (int j = pad + W; j < wh; j++) row[j] = 0;
            }
            memset(pln + used, 0, sizeof(uint32_t) * (G->pl - used));
        }
        return;
    }
    float *hi = tmp + (size_t)nph * G->pl;
    for (int c2 = 0; 2 * c2 < C; c2++) {
        const int has_hi = 2 * c2 + 1 < C;
        fill_chan(G, x, 2 * c2, tmp, G->pl, psc, psh);
        if (has_hi) fill_chan(G, x, 2 * c2 + 1, hi, G->pl, psc, psh);
        for (int ph = 0; ph < nph; ph++)
            nnc__bf16_pack2_avx512(tmp + (size_t)ph * G->pl, has_hi ? hi + (size_t)ph * G->pl : NULL,
                                   xt + (size_t)c2 * G->xcs + (size_t)ph * G->phs + (size_t)g * G->pl, (int)G->pl);
    }
}

/* Zero what the gn filled images leave of every phase region of nch channels (or pairs), and
 * the slack (4-byte elements either way). */
static void fill_xt_tail(const geo *G, void *xtv, int gn, int nch)
{
    float *xt = xtv;
    size_t used = (size_t)gn * G->pl;
    for (int c = 0; c < nch; c++)
        for (int ph = 0; ph < G->nph; ph++)
            memset(xt + (size_t)c * G->xcs + (size_t)ph * G->phs + used, 0, sizeof(float) * (G->phs - used));
    size_t all = (size_t)nch * G->xcs;
    memset(xt + all, 0, sizeof(float) * (G->xsz - all));
}

/* dy (K,P,Q) of image g of the group -> its slot of Dyw (zeros around the data). */
static void fill_dyw(const geo *G, const float *dy, float *d, int g)
{
    const nnc__conv_shape *cs = &G->cs;
    const int P = cs->p, Q = cs->q, wh = G->wh;
    for (int k = 0; k < cs->k; k++) {
        float *row = d + (size_t)k * G->dks;
        if (g == 0) row_zero(row, G->lead);
        float *o = row + G->lead + (size_t)g * G->pl;
        const float *src = dy + (size_t)k * P * Q;
        memset(o, 0, sizeof(float) * G->pl); /* one call instead of one per row's gap */
        for (int p = 0; p < P; p++) row_copy(o + (size_t)p * wh, src + (size_t)p * Q, Q);
    }
}

/* Zero the tail after gn images and the padding rows K..kp-1. */
static void fill_dyw_tail(const geo *G, float *d, int gn)
{
    size_t used = (size_t)G->lead + (size_t)gn * G->pl;
    for (int k = 0; k < G->kp; k++) {
        float *row = d + (size_t)k * G->dks;
        if (k >= G->cs.k) memset(row, 0, sizeof(float) * G->dks);
        else memset(row + used, 0, sizeof(float) * (G->dks - used));
    }
}


/* The level's shifted GEMM, or with bf the BF16 one (nn/conv/bf16.c): in and wp then hold pairs
 * and the cin channels are (cin + 1) / 2 pairs. */
static inline void sgemm(const conv_kernels *kn, int bf, const float *in, size_t in_cs, int cin, const int *toff,
                         int ntaps, const float *wp, float *out, size_t out_ks, int kblocks, int nvec, int accumulate)
{
    if (bf)
        nnc__conv_bf16_shifted_gemm((const uint32_t *)(const void *)in, in_cs, (cin + 1) / 2, toff, ntaps,
                                    (const uint32_t *)(const void *)wp, out, out_ks, kblocks, nvec, accumulate);
    else
        kn->shifted_gemm(in, in_cs, cin, toff, ntaps, wp, out, out_ks, kblocks, nvec, accumulate);
}

/* ---------------------------------------------------------------------------------------------
 * forward
 * ------------------------------------------------------------------------------------------ */

typedef struct fwd_ctx {
    const geo *G;
    const conv_kernels *kn;
    const float *x, *wp;
    const nnc__conv_epilogue *ep;
    const int *toff;
    float *y, *scratch;
    size_t per_thread;
    int stacked;       /* one kernel call over the whole group */
    int rows;          /* row mode: the kernel writes each output row straight into y (fwd_rows_ok) */
    const float *psc, *psh;  /* fused prologue or NULL */
    double *pstat;     /* per-plane (sum, M2) of y, (N,K,2), or NULL */
    int bf;            /* BF16: Xt and wp hold pairs; tmp rows after Yw */
} fwd_ctx;

static void fwd_task(void *vctx, int grp, int thread)
{
    const fwd_ctx *f = vctx;
    const geo *G = f->G;
    const nnc__conv_shape *cs = &G->cs;
    const conv_kernels *kn = f->kn;
    float *xt = f->scratch + (size_t)thread * f->per_thread, *yw = xt + G->xsz;
    int n0 = grp * G->grp, gn = n0 + G->grp <= cs->n ? G->grp : cs->n - n0;
    for (int g = 0; g < gn; g++) {
        const float *xn = f->x + (size_t)(n0 + g) * cs->c * cs->h * cs->w;
        if (f->bf) fill_xt_bf16(G, xn, (uint32_t *)(void *)xt, g, f->psc, f->psh, yw + G->ysz);
        else fill_xt(G, xn, xt, g, f->psc, f->psh);
    }
    fill_xt_tail(G, xt, gn, f->bf ? (cs->c + 1) / 2 : cs->c);
    int kblocks = (cs->k + kn->kb - 1) / kn->kb;
    const nnc__conv_epilogue *ep = f->ep;
    const int plain = !ep->scale && !ep->res && !ep->relu, PQ = cs->p * cs->q;
    if (f->rows) {
        /* output row p of image g: Q/L vectors read from plane row p of Xt, written to y's row p
         * (row stride PQ per output channel); the epilogue then runs in place */
        for (int g = 0; g < gn; g++) {
            const size_t yoff = (size_t)(n0 + g) * cs->k * PQ;
            for (int p = 0; p < cs->p; p++)
                sgemm(kn, f->bf, xt + (size_t)g * G->pl + (size_t)p * G->wh, G->xcs, cs->c, f->toff, G->ntaps, f->wp,
                                 f->y + yoff + (size_t)p * cs->q, (size_t)PQ, kblocks, cs->q / kn->L, 0);
            for (int k = 0; k < cs->k; k++) {
                float *dst = f->y + yoff + (size_t)k * PQ;
                if (!plain || ep->shift)
                    nnc__epilogue_plane(dst, (size_t)PQ, dst, (size_t)PQ, ep->res ? ep->res + yoff + (size_t)k * PQ : NULL,
                                        (size_t)PQ, 1, PQ, ep, k);
                if (f->pstat && k > 0) nnc__conv_plane_stats(dst - PQ, PQ, f->pstat + ((size_t)(n0 + g) * cs->k + k - 1) * 2);
            }
            if (f->pstat)
                nnc__conv_plane_stats(f->y + yoff + (size_t)(cs->k - 1) * PQ, PQ, f->pstat + ((size_t)(n0 + g) * cs->k + cs->k - 1) * 2);
        }
        return;
    }
    if (f->stacked) {
        int nvec = (int)(((size_t)(gn - 1) * G->pl + (size_t)G->nw + kn->L - 1) / kn->L);
        sgemm(kn, f->bf, xt, G->xcs, cs->c, f->toff, G->ntaps, f->wp, yw, G->ywr, kblocks, nvec, 0);
    } else {
        for (int g = 0; g < gn; g++)
            sgemm(kn, f->bf, xt + (size_t)g * G->pl, G->xcs, cs->c, f->toff, G->ntaps, f->wp, yw + (size_t)g * G->pl,
                             G->ywr, kblocks, (G->nw + kn->L - 1) / kn->L, 0);
    }
    for (int g = 0; g < gn; g++) {
        size_t yoff = (size_t)(n0 + g) * cs->k * PQ;
        for (int k = 0; k < cs->k; k++) {
            const float *src = yw + (size_t)k * G->ywr + (size_t)g * G->pl;
            float *dst = f->y + yoff + (size_t)k * PQ;
            const float *res = ep->res ? ep->res + yoff + (size_t)k * PQ : NULL;
            nnc__epilogue_plane(dst, (size_t)cs->q, src, (size_t)G->wh, res, (size_t)cs->q, cs->p, cs->q, ep, k);
            /* statistics for a following batch norm, one plane behind: that plane's stores
             * have left the store buffer by now, and it is still L1-hot */
            if (f->pstat && k > 0) nnc__conv_plane_stats(dst - PQ, PQ, f->pstat + ((size_t)(n0 + g) * cs->k + k - 1) * 2);
        }
        if (f->pstat)
            nnc__conv_plane_stats(f->y + yoff + (size_t)(cs->k - 1) * PQ, PQ, f->pstat + ((size_t)(n0 + g) * cs->k + cs->k - 1) * 2);
    }
}

/* Row mode of the forward: stride 1, whole vectors per output row (Q a multiple of L) in tiles
 * without remainder (Q/L a multiple of JV, or 2 where the kernel has a 2-vector tile), and whole
 * blocks of KB output channels (the kernel writes every row of a block). No wide-row columns are
 * computed and no output buffer is copied; each value's sum runs as in the wide layout. */
static int fwd_rows_ok(const nnc__conv_shape *cs, const conv_kernels *kn)
{
    if (cs->stride != 1 || cs->q % kn->L || cs->k % kn->kb) return 0;
    const int nv = cs->q / kn->L;
    return nv % kn->jv == 0 || (nv == 2 && kn->jv > 2);
}

/* Packed weights of the forward: wp[((kb*C + c)*T + t)*KB + kk] = w[kb*KB + kk][c][t] (0 past K);
 * BF16: the pairs (w[k][2c2][t], w[k][2c2+1][t]) at ((kb*C2 + c2)*T + t)*KB + kk. Their layout
 * depends on K, C, R, S, the precision and the ISA level only (not on N or the image size). */
size_t nnc__conv_direct_packed_floats(const nnc__conv_shape *cs)
{
    const conv_kernels *kn = nnc__conv_kernels();
    return (size_t)((cs->k + kn->kb - 1) / kn->kb) * cs->c * cs->r * cs->s * kn->kb;
}

void nnc__conv_direct_pack(const nnc__conv_shape *cs, const float *w, float *wp)
{
    const conv_kernels *kn = nnc__conv_kernels();
    const int KB = kn->kb, C = cs->c, T = cs->r * cs->s, kblocks = (cs->k + KB - 1) / KB;
    if (cs->prec == NNC_PRECISION_BF16) {
        const int C2 = (C + 1) / 2;
        uint32_t *wp2 = (uint32_t *)(void *)wp;
        for (int kb = 0; kb < kblocks; kb++)
            for (int c2 = 0; c2 < C2; c2++)
                for (int t = 0; t < T; t++)
                    for (int kk = 0; kk < KB; kk++) {
                        int k = kb * KB + kk, c = 2 * c2;
                        float lo = k < cs->k ? w[((size_t)k * C + c) * T + t] : 0.0f;
                        float hi = k < cs->k && c + 1 < C ? w[((size_t)k * C + c + 1) * T + t] : 0.0f;
                        wp2[(((size_t)kb * C2 + c2) * T + t) * KB + kk] = nnc__bf16_pair(lo, hi);
                    }
    } else {
        for (int kb = 0; kb < kblocks; kb++)
            for (int c = 0; c < C; c++)
                for (int t = 0; t < T; t++)
                    for (int kk = 0; kk < KB; kk++) {
                        int k = kb * KB + kk;
                        wp[(((size_t)kb * C + c) * T + t) * KB + kk] = k < cs->k ? w[((size_t)k * C + c) * T + t] : 0.0f;
                    }
    }
}

/* The forward with weights w, or (w NULL) weights wpre packed by nnc__conv_direct_pack. */
static void direct_forward(const nnc__conv_shape *cs, const float *x, const float *w, const float *wpre,
                           const nnc__conv_epilogue *ep, const nnc__conv_fuse *fu, float *y)
{
    const float *psc = fu ? fu->pro_scale : NULL, *psh = fu ? fu->pro_shift : NULL;
    double *stats = fu ? fu->stats : NULL;
    const size_t psz = stats ? sizeof(double) * 2 * (size_t)cs->n * cs->k : 0;
    const conv_kernels *kn = nnc__conv_kernels();
    int stacked = (size_t)cs->k * cs->c * cs->r * cs->s > BIG_WEIGHTS_FLOATS, grp = 1;
    if (stacked) {
        geo G1 = make_geo(cs, 1);
        grp = (int)(GROUP_XT_FLOATS / (G1.xsz > 0 ? G1.xsz : 1));
        grp = grp < 1 ? 1 : grp > 32 ? 32 : grp > cs->n ? cs->n : grp;
    }
    geo G = make_geo(cs, grp);
    const int KB = kn->kb, T = G.ntaps, ngroups = (cs->n + grp - 1) / grp;
    int width = nnc__parallel_width(ngroups);
    const int bf = cs->prec == NNC_PRECISION_BF16;
    NNC_ASSERT(!bf || (KB == 8 && kn->L == 16), "conv2d: the BF16 kernels run with the AVX-512 tiles");
    size_t wpn = wpre ? 0 : nnc__conv_direct_packed_floats(cs);
    size_t per_thread = G.xsz + G.ysz + (bf ? 2 * (size_t)G.nph * G.pl : 0);
    size_t wpb = (sizeof(float) * wpn + 63) / 64 * 64, scb = (sizeof(float) * (size_t)width * per_thread + 63) / 64 * 64;
    size_t bytes = wpb + scb + psz + sizeof(int) * (size_t)T;
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    float *wp = (float *)base, *scratch = (float *)(base + wpb);
    double *pstat = stats ? (double *)(base + wpb + scb) : NULL;
    int *toff = (int *)(base + wpb + scb + psz);
    for (int t = 0; t < T; t++) toff[t] = tap_offset(&G, t);
    if (wpre) wp = (float *)wpre;
    else nnc__conv_direct_pack(cs, w, wp);
    fwd_ctx f = {&G, kn, x, wp, ep, toff, y, scratch, per_thread, stacked, !stacked && fwd_rows_ok(cs, kn), psc, psh, pstat,
                 bf};
    nnc__parallel_for(ngroups, fwd_task, &f);
    if (stats) nnc__conv_combine_stats(pstat, cs->n, cs->k, cs->p * cs->q, stats);
}

void nnc__conv_direct_forward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_epilogue *ep,
                              const nnc__conv_fuse *fu, float *y)
{
    direct_forward(cs, x, w, NULL, ep, fu, y);
}

void nnc__conv_direct_forward_packed(const nnc__conv_shape *cs, const float *x, const float *wp,
                                     const nnc__conv_epilogue *ep, float *y)
{
    direct_forward(cs, x, NULL, wp, ep, NULL, y);
}

/* ---------------------------------------------------------------------------------------------
 * backward: images are grouped into subgroups of g0 (enough positions for the weight-gradient
 * dot products), subgroups into at most WGRAD_CHUNKS chunks; a task is a chunk. Each chunk owns
 * a partial dW/db, summed in chunk order at the end.
 * ------------------------------------------------------------------------------------------ */

typedef struct bwd_ctx {
    const geo *G;
    const conv_kernels *kn;
    const float *x, *dy;
    float *dx;
    int dx_fresh;
    int need_w, need_b;
    size_t xstride;    /* floats of Xt in the scratch (0 without dW) */
    int g0, nsub, nchunk, stacked;
    /* dX: per phase, taps (shifts into Dyw) and packed transposed weights */
    const int *ph_nt, *ph_shift, *ph_wofs;
    const float *wt;
    const size_t *col;
    float *part;       /* nchunk x |W| */
    double *bpart;     /* nchunk x K */
    float *scratch;
    size_t per_thread;
    const float *psc, *psh;  /* fused prologue or NULL */
    const float *pmean;      /* with dsums: the centre of x per channel */
    double *dsums;           /* masked dx and its per-plane sums (nnc__conv_fuse), or NULL */
    int rows;                /* row mode: the kernel writes or accumulates dx rows directly */
    int bf;                  /* BF16 input gradient: wt holds pairs over k, Dyw is packed to pairs */
    size_t dyw2_off;         /* with bf: floats before the pairs copy of Dyw in the scratch */
    int bfw;                 /* BF16 weight gradient: Xt and Dyw rounded to BF16 rows */
    size_t w16_off;          /* with bfw: floats before those BF16 copies in the scratch */
} bwd_ctx;

/* Copy-out of image g of the group (image n of the batch) from dXt with the prologue's ReLU
 * mask (recomputed from x) applied, and the per-plane sums of the batch-norm backward. dxt NULL
 * (row mode, stride 1): dx already holds the values; the mask and the sums are applied in place. */
static void copy_out_masked(const bwd_ctx *b, const float *dxt, int g, int n)
{
    const geo *G = b->G;
    const nnc__conv_shape *cs = &G->cs;
    const int st = G->st, pad = cs->pad, C = cs->c, W = cs->w;
    const size_t hw = (size_t)cs->h * W;
    for (int c = 0; c < C; c++) {
        const float sc = b->psc[c], sh = b->psh[c], mu = b->pmean[c];
        const nnc__v4 vs = nnc__v4_set1(sc), vh = nnc__v4_set1(sh), vm = nnc__v4_set1(mu);
        nnc__v4 a = nnc__v4_set1(0.0f), t = a;
        double s1 = 0, t1 = 0;
        const float *xp = b->x + ((size_t)n * C + c) * hw;
        float *dp = b->dx + ((size_t)n * C + c) * hw;
        for (int h = 0; h < cs->h; h++) {
            int hh = h + pad;
            const float *xr = xp + (size_t)h * W;
            float *dst = dp + (size_t)h * W;
            /* the value of column w: src[so + w] with stride 1 */
            const float *src = dxt ? dxt + (size_t)c * G->xcs + (size_t)(hh % st) * st * G->phs + (size_t)g * G->pl +
                                         (size_t)(hh / st) * G->wh
                                   : dst;
            const int so = dxt ? pad : 0;
            int w = 0;
            if (st == 1)
                for (; w + 4 <= W; w += 4) {
                    nnc__v4 xv = nnc__v4_load(xr + w);
                    nnc__v4 dz = nnc__v4_keep(nnc__v4_load(src + so + w), nnc__bnrelu_mask_v4(xv, vs, vh));
                    nnc__v4_store(dst + w, dz);
                    a += dz;
                    t += (xv - vm) * dz;
                }
            for (; w < W; w++) {
                int ww = w + pad;
                float v = dxt ? src[(size_t)(ww % st) * G->phs + ww / st] : src[w];
                float dz = nnc__bnrelu_mask(xr[w], sc, sh) ? v : 0.0f;
                dst[w] = dz;
                s1 += dz;
                t1 += (double)(xr[w] - mu) * dz;
            }
        }
        double *o = b->dsums + ((size_t)n * C + c) * 2;
        o[0] = nnc__v4_hsum(a) + s1;
        o[1] = nnc__v4_hsum(t) + t1;
    }
}

/* Rows [*r0, *r1) of the planes of row phase a that hold input rows: h in [0, H) with
 * (h + pad) % st == a sits at row (h + pad) / st (empty range: no such h). */
static void dx_rows(const geo *G, int a, int *r0, int *r1)
{
    const int st = G->st, pad = G->cs.pad, H = G->cs.h;
    int h0 = ((a - pad) % st + st) % st;
    if (h0 >= H) {
        *r0 = *r1 = 0;
        return;
    }
    int h1 = h0 + (H - 1 - h0) / st * st;
    *r0 = (h0 + pad) / st;
    *r1 = (h1 + pad) / st + 1;
}

static void bwd_task(void *vctx, int chunk, int thread)
{
    const bwd_ctx *b = vctx;
    const geo *G = b->G;
    const nnc__conv_shape *cs = &G->cs;
    const conv_kernels *kn = b->kn;
    const int C = cs->c, K = cs->k, T = G->ntaps, PQ = cs->p * cs->q;
    const size_t xs = (size_t)C * cs->h * cs->w, ys = (size_t)K * PQ, nwt = (size_t)K * C * T;
    float *xt = b->scratch + (size_t)thread * b->per_thread;
    float *dyw = xt + b->xstride, *dxt = dyw + G->dsz;
    float *part = b->part ? b->part + (size_t)chunk * nwt : NULL;
    double *bpart = b->bpart ? b->bpart + (size_t)chunk * K : NULL;
    if (part) memset(part, 0, sizeof(float) * nwt);
    if (bpart) memset(bpart, 0, sizeof(double) * (size_t)K);
    int s0 = (int)((long long)chunk * b->nsub / b->nchunk), s1 = (int)((long long)(chunk + 1) * b->nsub / b->nchunk);
    for (int sg = s0; sg < s1; sg++) {
        int n0 = sg * b->g0, n1 = n0 + b->g0 < cs->n ? n0 + b->g0 : cs->n, gn = n1 - n0;
        for (int i = 0; i < gn; i++) {
            const float *dyn = b->dy + (size_t)(n0 + i) * ys;
            fill_dyw(G, dyn, dyw, i);
            if (part) fill_xt(G, b->x + (size_t)(n0 + i) * xs, xt, i, b->psc, b->psh);
            if (bpart)
                for (int k = 0; k < K; k++) {
                    const float *d = dyn + (size_t)k * PQ;
                    nnc__v4 a = nnc__v4_set1(0.0f);
                    int j = 0;
                    for (; j + 4 <= PQ; j += 4) a += nnc__v4_load(d + j);
                    double s = nnc__v4_hsum(a);
                    for (; j < PQ; j++) s += d[j];
                    bpart[k] += s;
                }
        }
        fill_dyw_tail(G, dyw, gn);
        if (part) {
            fill_xt_tail(G, xt, gn, C);
            if (b->bfw) {
                uint16_t *x16 = (uint16_t *)(void *)(xt + b->w16_off), *d16 = x16 + G->xsz;
                nnc__bf16_round_avx512(xt, x16, (int)G->xsz);
                nnc__bf16_round_avx512(dyw, d16, (int)G->dsz);
                nnc__conv_bf16_wgrad(d16 + G->lead, G->dks, G->pl, x16, G->pl, b->col, C * T, K, gn, G->nw, part,
                                     (size_t)C * T);
            } else {
                kn->wgrad(dyw + G->lead, G->dks, G->pl, xt, G->pl, b->col, C * T, K, gn, (G->nw + kn->L - 1) / kn->L,
                          part, (size_t)C * T);
            }
        }
        if (!b->dx) continue;
        int cblocks = (C + kn->kb - 1) / kn->kb;
        const float *dyin = dyw; /* the input-gradient kernel's input: Dyw, or its pairs */
        if (b->bf) {
            uint32_t *d2 = (uint32_t *)(void *)(xt + b->dyw2_off);
            for (int k2 = 0; 2 * k2 < K; k2++)
                nnc__bf16_pack2_avx512(dyw + (size_t)2 * k2 * G->dks,
                                       2 * k2 + 1 < K ? dyw + (size_t)(2 * k2 + 1) * G->dks : NULL,
                                       d2 + (size_t)k2 * G->dks, (int)G->dks);
            dyin = xt + b->dyw2_off;
        }
        if (b->rows) {
            /* input row h of image i: its W columns start at plane row h + pad, column pad */
            const int H = cs->h, W = cs->w, pad = cs->pad;
            for (int i = 0; i < gn; i++) {
                float *dxn = b->dx + (size_t)(n0 + i) * xs;
                for (int h = 0; h < H; h++)
                    sgemm(kn, b->bf, dyin + (size_t)i * G->pl + (size_t)(h + pad) * G->wh + pad, G->dks, K, b->ph_shift,
                                     b->ph_nt[0], b->wt, dxn + (size_t)h * W, (size_t)H * W, cblocks, W / kn->L,
                                     !b->dx_fresh);
                if (b->dsums) copy_out_masked(b, NULL, i, n0 + i);
            }
            continue;
        }
        for (int ph = 0; ph < G->nph; ph++) {
            /* only the rows [r0, r1) of the phase plane that the copy-out reads (the padding
             * rows are never read; a phase row without input rows is skipped) */
            int r0, r1;
            dx_rows(G, ph / G->st, &r0, &r1);
            if (r0 >= r1) continue;
            const size_t j0 = (size_t)r0 * G->wh, span = (size_t)(r1 - r0) * G->wh;
            const int *sh = b->ph_shift + ph * T, nt = b->ph_nt[ph];
            const float *wt = b->wt + b->ph_wofs[ph];
            float *out = dxt + (size_t)ph * G->phs + j0;
            if (b->stacked) {
                int nvec = (int)(((size_t)(gn - 1) * G->pl + span + kn->L - 1) / kn->L);
                sgemm(kn, b->bf, dyin + j0, G->dks, K, sh, nt, wt, out, G->xcs, cblocks, nvec, 0);
            } else {
                for (int i = 0; i < gn; i++)
                    sgemm(kn, b->bf, dyin + j0 + (size_t)i * G->pl, G->dks, K, sh, nt, wt, out + (size_t)i * G->pl, G->xcs,
                                     cblocks, (int)((span + kn->L - 1) / kn->L), 0);
            }
        }
        const int st = G->st, pad = cs->pad;
        for (int i = 0; i < gn; i++) {
            float *dxn = b->dx + (size_t)(n0 + i) * xs;
            if (b->dsums) {
                copy_out_masked(b, dxt, i, n0 + i);
                continue;
            }
            for (int c = 0; c < C; c++)
                for (int h = 0; h < cs->h; h++) {
                    int hh = h + pad;
                    const float *src = dxt + (size_t)c * G->xcs + (size_t)(hh % st) * st * G->phs +
                                       (size_t)i * G->pl + (size_t)(hh / st) * G->wh;
                    float *dst = dxn + ((size_t)c * cs->h + h) * cs->w;
                    if (st == 1 && b->dx_fresh) {
                        row_copy(dst, src + pad, cs->w);
                    } else if (st == 1) {
                        row_add(dst, src + pad, cs->w);
                    } else {
                        for (int w = 0; w < cs->w; w++) {
                            int ww = w + pad;
                            float v = src[(size_t)(ww % st) * G->phs + ww / st];
                            dst[w] = b->dx_fresh ? v : dst[w] + v;
                        }
                    }
                }
        }
    }
}

typedef struct red_ctx {
    float *dst;
    const float *part;
    size_t n;
    int nchunk;
} red_ctx;

/* dst[i] += sum over chunks in order of part[chunk][i], for i in this task's slice. */
static void reduce_task(void *vctx, int task, int thread)
{
    (void)thread;
    const red_ctx *r = vctx;
    size_t lo = r->n * (size_t)task / 64, hi = r->n * (size_t)(task + 1) / 64;
    for (size_t i = lo; i < hi; i++) {
        float s = r->part[i];
        for (int c = 1; c < r->nchunk; c++) s += r->part[(size_t)c * r->n + i];
        r->dst[i] += s;
    }
}

int nnc__conv_direct_backward(const nnc__conv_shape *cs, const float *x, const float *w, const nnc__conv_fuse *fu,
                              const float *dy, float *dx, int dx_fresh, float *dw, float *db)
{
    if (!dx && !dw && !db) return 0;
    const float *psc = fu ? fu->pro_scale : NULL, *psh = fu ? fu->pro_shift : NULL;
    double *dsums = psc && dx && dx_fresh && fu->dsums && fu->pro_mean ? fu->dsums : NULL;
    const conv_kernels *kn = nnc__conv_kernels();
    const int N = cs->n;
    int g0 = (2048 + cs->p * cs->q - 1) / (cs->p * cs->q);
    if (g0 > N) g0 = N;
    if (g0 > 16) g0 = 16;
    geo G = make_geo(cs, g0);
    const int KB = kn->kb, C = cs->c, K = cs->k, T = G.ntaps;
    const size_t nwt = (size_t)K * C * T;
    int stacked = nwt > BIG_WEIGHTS_FLOATS;
    int nsub = (N + g0 - 1) / g0;
    int nchunk = nsub < WGRAD_CHUNKS ? nsub : WGRAD_CHUNKS;
    if (dw && (size_t)nchunk * nwt > WGRAD_PART_FLOATS) nchunk = (int)(WGRAD_PART_FLOATS / nwt) > 0 ? (int)(WGRAD_PART_FLOATS / nwt) : 1;
    int width = nnc__parallel_width(nchunk);

    int cblocks = (C + KB - 1) / KB;
    size_t ncol = (size_t)C * T, ncolp = (ncol + 47) / 48 * 48; /* a multiple of every WT */
    size_t wtn = dx ? (size_t)cblocks * K * T * KB : 0;
    /* row mode (the forward's, with the input as the output; dx written or accumulated by the
     * kernel): stride 1, W a whole number of tiles, whole blocks of KB input channels */
    const int rows = dx && !stacked && cs->stride == 1 && cs->c % KB == 0 && cs->w % kn->L == 0 &&
                     ((cs->w / kn->L) % kn->jv == 0 || (cs->w / kn->L == 2 && kn->jv > 2));
    const int bf = dx && cs->prec == NNC_PRECISION_BF16;
    NNC_ASSERT(!bf || (KB == 8 && kn->L == 16), "conv2d: the BF16 kernels run with the AVX-512 tiles");
    const size_t dyw2_off = (dw ? G.xsz : 0) + G.dsz + (dx && !rows ? (size_t)G.cp * G.xcs + 64 : 0);
    const int bfw = dw && cs->prec == NNC_PRECISION_BF16;
    const size_t w16_off = dyw2_off + (bf ? (size_t)(K + 1) / 2 * G.dks : 0);
    size_t per_thread = w16_off + (bfw ? (G.xsz + G.dsz + 1) / 2 + 32 : 0);
    size_t sz[7] = {sizeof(double) * (db ? (size_t)nchunk * K : 0), sizeof(size_t) * ncolp,
                    sizeof(int) * (size_t)(2 * G.nph + G.nph * T), sizeof(float) * (dw ? (size_t)nchunk * nwt : 0),
                    sizeof(float) * wtn, sizeof(float) * (size_t)width * per_thread, 0};
    size_t bytes = 0;
    for (int i = 0; i < 6; i++) bytes += (sz[i] + 63) / 64 * 64;
    char *base = nnc__thread_scratch(bytes);
    NNC_ASSERT(base != NULL, "conv2d: out of memory for %zu bytes of kernel scratch", bytes);
    void *slot[6];
    for (int i = 0; i < 6; i++) {
        slot[i] = base;
        base += (sz[i] + 63) / 64 * 64;
    }
    double *bpart = db ? slot[0] : NULL;
    size_t *col = slot[1];
    int *ph_nt = slot[2], *ph_wofs = ph_nt + G.nph, *ph_shift = ph_wofs + G.nph;
    float *part = slot[3], *wt = slot[4], *scratch = slot[5];

    /* weight-gradient columns: (c, t) -> offset of tap t of channel c in Xt */
    for (size_t i = 0; i < ncolp; i++) col[i] = i < ncol ? (size_t)(i / T) * G.xcs + (size_t)tap_offset(&G, (int)(i % T)) : 0;
    /* input-gradient phases: phase ph holds the taps t with (r%st, s%st) == ph; its packed
     * weights are wt[ph_wofs[ph] + ((cb*K + k)*nt + i)*KB + cc] = w[k][cb*KB + cc][t_i] */
    if (dx) {
        int wofs = 0;
        for (int ph = 0; ph < G.nph; ph++) {
            int nt = 0;
            int tl[T > 0 ? T : 1];
            for (int t = 0; t < T; t++) {
                int r = t / cs->s, s = t % cs->s;
                if ((r % G.st) * G.st + s % G.st != ph) continue;
                tl[nt] = t;
                ph_shift[ph * T + nt] = G.lead - ((r / G.st) * G.wh + s / G.st);
                nt++;
            }
            ph_nt[ph] = nt;
            ph_wofs[ph] = wofs;
            if (bf) { /* pairs over k: wt[wofs + ((cb*K2 + k2)*nt + i)*KB + cc] = (w[2k2][c][t_i], w[2k2+1][c][t_i]) */
                const int K2 = (K + 1) / 2;
                uint32_t *wt2 = (uint32_t *)(void *)wt;
                for (int cb = 0; cb < cblocks; cb++)
                    for (int k2 = 0; k2 < K2; k2++)
                        for (int i = 0; i < nt; i++)
                            for (int cc = 0; cc < KB; cc++) {
                                int c = cb * KB + cc, k = 2 * k2;
                                float lo = c < C ? w[((size_t)k * C + c) * T + tl[i]] : 0.0f;
                                float hi = c < C && k + 1 < K ? w[((size_t)(k + 1) * C + c) * T + tl[i]] : 0.0f;
                                wt2[wofs + (((size_t)cb * K2 + k2) * nt + i) * KB + cc] = nnc__bf16_pair(lo, hi);
                            }
                wofs += cblocks * K2 * nt * KB;
                continue;
            }
            for (int cb = 0; cb < cblocks; cb++)
                for (int k = 0; k < K; k++)
                    for (int i = 0; i < nt; i++)
                        for (int cc = 0; cc < KB; cc++) {
                            int c = cb * KB + cc;
                            wt[wofs + (((size_t)cb * K + k) * nt + i) * KB + cc] =
                                c < C ? w[((size_t)k * C + c) * T + tl[i]] : 0.0f;
                        }
            wofs += cblocks * K * nt * KB;
        }
    }
    bwd_ctx b = {&G, kn, x, dy, dx, dx_fresh, dw != NULL, db != NULL, dw ? G.xsz : 0, g0, nsub, nchunk, stacked, ph_nt, ph_shift, ph_wofs, wt,
                 col, dw ? part : NULL, bpart, scratch, per_thread, psc, psh, fu ? fu->pro_mean : NULL, dsums, rows,
                 bf, dyw2_off, bfw, w16_off};
    nnc__parallel_for(nchunk, bwd_task, &b);
    if (dw) {
        red_ctx r = {dw, part, nwt, nchunk};
        nnc__parallel_for(64, reduce_task, &r);
    }
    if (db) nnc__conv_add_bias_parts(db, bpart, nchunk, K);
    return dsums != NULL;
}
