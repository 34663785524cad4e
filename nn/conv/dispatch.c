/* nn/conv/dispatch.c - the one place that picks a convolution kernel set per layer (nn/conv/conv.h)
 * and hands each set the fusion hooks it can take (nn/conv/fuse.h), doing the others around it. */
#include <string.h>

#include "nn/conv/kernels.h"
#include "nn/cpu.h"

static int path_override; /* 0 auto, else a nnc__conv_path (tests, bench --layers) */

int nnc_precision_bf16_available(void) { return nnc__isa_bf16(); }

int nnc__precision_check(nnc_precision p)
{
    if (p != NNC_PRECISION_FP32 && p != NNC_PRECISION_BF16)
        return nnc__fail(NNC_EINVAL, "precision %d: expected fp32 or bf16", (int)p);
    if (p == NNC_PRECISION_BF16 && !nnc__isa_bf16())
        return nnc__fail(NNC_EUNSUPPORTED,
                         "precision bf16 needs a CPU with AVX512_BF16 (and NNC_ISA at avx512); this one runs %s%s: "
                         "use fp32",
                         nnc__isa_name(nnc__isa()), nnc__isa() == NNC_ISA_AVX512 ? " without AVX512_BF16" : "");
    return NNC_OK;
}

const char *nnc_precision_name(nnc_precision p) { return p == NNC_PRECISION_BF16 ? "bf16" : "fp32"; }

int nnc_precision_parse(const char *s, nnc_precision *p)
{
    if (!s) return -1;
    if (!strcmp(s, "fp32")) *p = NNC_PRECISION_FP32;
    else if (!strcmp(s, "bf16")) *p = NNC_PRECISION_BF16;
    else return -1;
    return 0;
}

void nnc__conv_set_path(int path) { path_override = path; }

nnc__conv_path nnc__conv_pick(const nnc__conv_shape *cs, int backward)
{
    const int kvec_ok = nnc__conv_kvec_ok(cs, backward);
    /* BF16: the kvec set with its BF16 micro-kernels (nn/conv/kvec_bf16.c) where FP32 runs kvec,
     * else the direct set's geometry with the BF16 micro-kernels (the bf16 set); the override
     * picks between the two (no BF16 GEMM) */
    if (cs->prec == NNC_PRECISION_BF16) {
        if (path_override) return path_override == NNC__CONV_KVEC && kvec_ok ? NNC__CONV_KVEC : NNC__CONV_BF16;
        return cs->k > 16 && cs->c >= 8 && kvec_ok ? NNC__CONV_KVEC : NNC__CONV_BF16;
    }
    if (path_override == NNC__CONV_KVEC) return kvec_ok ? NNC__CONV_KVEC : NNC__CONV_DIRECT;
    if (path_override == NNC__CONV_GEMM) return NNC__CONV_GEMM;
    if (path_override) return NNC__CONV_DIRECT;
    /* kvec: output channels fill at least two vectors and the reduction is more than a few
     * channels (measured with nnc bench --layers: from 2x2 to 32x32 images these layers run at
     * 75-100% of peak this way, against 35-80% on the direct set) */
    if (cs->k > 16 && cs->c >= 8 && kvec_ok) return NNC__CONV_KVEC;
    /* gemm: small images with deep reductions, where the padded wide rows of the direct kernel are
     * mostly padding (measured: 512 channels at 2x2 ~2x faster as GEMM both ways; at 4x4 the GEMM
     * wins only in the backward, 99 vs 69 GFLOP/s) */
    const int crs = cs->c * cs->r * cs->s, pq = cs->p * cs->q;
    if (backward ? pq <= 16 && crs >= 2304 : pq <= 4 && crs >= 256) return NNC__CONV_GEMM;
    return NNC__CONV_DIRECT;
}

void nnc__conv_forward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                       const nnc__conv_epilogue *ep, const nnc__conv_fuse *fu, float *y)
{
    const float *psc = fu ? fu->pro_scale : NULL, *psh = fu ? fu->pro_shift : NULL;
    double *stats = fu ? fu->stats : NULL;
    switch (nnc__conv_pick(cs, 0)) {
    case NNC__CONV_BF16:
        NNC_ASSERT(nnc__isa_bf16(), "conv2d: precision bf16 needs AVX512_BF16 (and NNC_ISA at avx512)");
        break;
    case NNC__CONV_KVEC: /* stages through the prologue itself, takes the stats itself */
        NNC_ASSERT(cs->prec != NNC_PRECISION_BF16 || nnc__isa_bf16(), "conv2d: precision bf16 needs AVX512_BF16 (and NNC_ISA at avx512)");
        nnc__conv_kvec_forward(cs, x, w, ep, psc, psh, y, stats);
        return;
    case NNC__CONV_GEMM:
        nnc__conv_gemm_forward(cs, psc ? nnc__conv_materialise_z(g, cs, x, fu) : x, w, ep, y);
        if (stats) nnc__conv_stats_pass(cs, y, stats);
        return;
    case NNC__CONV_DIRECT: break;
    }
    nnc__conv_direct_forward(cs, x, w, ep, fu, y);
}

size_t nnc__conv_forward_pack_floats(const nnc__conv_shape *cs)
{
    const nnc__conv_path p = nnc__conv_pick(cs, 0);
    if (p == NNC__CONV_KVEC) return nnc__conv_kvec_packed_floats(cs);
    return p == NNC__CONV_DIRECT || p == NNC__CONV_BF16 ? nnc__conv_direct_packed_floats(cs) : 0;
}

void nnc__conv_forward_pack(const nnc__conv_shape *cs, const float *w, float *wp)
{
    NNC_ASSERT(nnc__conv_forward_pack_floats(cs) > 0, "conv2d: this layer's kernel set packs its weights per call");
    if (nnc__conv_pick(cs, 0) == NNC__CONV_KVEC) nnc__conv_kvec_pack(cs, w, wp);
    else nnc__conv_direct_pack(cs, w, wp);
}

void nnc__conv_forward_packed(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w, const float *wp,
                              const nnc__conv_epilogue *ep, float *y)
{
    if (!wp) {
        nnc__conv_forward(g, cs, x, w, ep, NULL, y);
        return;
    }
    const nnc__conv_path p = nnc__conv_pick(cs, 0);
    if (p == NNC__CONV_KVEC) {
        nnc__conv_kvec_forward_packed(cs, x, wp, ep, y);
        return;
    }
    NNC_ASSERT(p == NNC__CONV_DIRECT || p == NNC__CONV_BF16, "conv2d: packed weights for a set that packs per call");
    NNC_ASSERT(p != NNC__CONV_BF16 || nnc__isa_bf16(), "conv2d: precision bf16 needs AVX512_BF16 (and NNC_ISA at avx512)");
    nnc__conv_direct_forward_packed(cs, x, wp, ep, y);
}

int nnc__conv_backward(nnc_graph *g, const nnc__conv_shape *cs, const float *x, const float *w,
                       const nnc__conv_fuse *fu, const float *dy, float *dx, int dx_fresh, float *dw, float *db)
{
    if (!dx && !dw && !db) return 0;
    const float *psc = fu ? fu->pro_scale : NULL, *psh = fu ? fu->pro_shift : NULL;
    switch (nnc__conv_pick(cs, 1)) {
    case NNC__CONV_BF16:
        NNC_ASSERT(nnc__isa_bf16(), "conv2d: precision bf16 needs AVX512_BF16 (and NNC_ISA at avx512)");
        break;
    case NNC__CONV_KVEC:
        NNC_ASSERT(cs->prec != NNC_PRECISION_BF16 || nnc__isa_bf16(), "conv2d: precision bf16 needs AVX512_BF16 (and NNC_ISA at avx512)");
        return nnc__conv_kvec_backward(cs, x, psc, psh, w, dy, dx, dx_fresh, dw, db, fu ? fu->pro_mean : NULL,
                                       fu ? fu->dsums : NULL);
    case NNC__CONV_GEMM: /* dx unmasked, no dsums: the caller does the batch-norm backward alone */
        nnc__conv_gemm_backward(cs, psc && dw ? nnc__conv_materialise_z(g, cs, x, fu) : x, w, dy, dx, dx_fresh, dw, db);
        return 0;
    case NNC__CONV_DIRECT: break;
    }
    return nnc__conv_direct_backward(cs, x, w, fu, dy, dx, dx_fresh, dw, db);
}
