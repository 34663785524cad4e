/* models/layers.c - appending layer descriptors and their parameters (see models/layers.h).
 * Each nnc__b_* call checks the incoming activation shape, adds the layer's parameter entries
 * (PyTorch names and order), and records output shape, parameter count and MACs per image. */
#include <stdio.h>
#include <string.h>

#include "models/layers.h"

static nnc__layer *append(nnc__builder *b, nnc__layer_kind kind, const char *name)
{
    if (b->status) return NULL;
    nnc_model *m = b->m;
    if (m->nlayers == m->cap) {
        int cap = m->cap ? m->cap * 2 : 64;
        nnc__layer *l = nnc__alloc(sizeof *l * (size_t)cap);
        if (!l) {
            b->status = nnc__fail(NNC_ENOMEM, "model %s: out of memory for layers", m->name);
            return NULL;
        }
        if (m->nlayers) memcpy(l, m->layers, sizeof *l * (size_t)m->nlayers);
        nnc__free(m->layers);
        m->layers = l;
        m->cap = cap;
    }
    nnc__layer *l = &m->layers[m->nlayers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->init = b->init;
    snprintf(l->name, sizeof l->name, "%s", name);
    for (int i = 0; i < 4; i++) l->p[i] = -1;
    l->in_shape[0] = l->out_shape[0] = b->c;
    l->in_shape[1] = l->out_shape[1] = b->h;
    l->in_shape[2] = l->out_shape[2] = b->w;
    return l;
}

static void set_out(nnc__builder *b, nnc__layer *l, int c, int h, int w)
{
    b->c = l->out_shape[0] = c;
    b->h = l->out_shape[1] = h;
    b->w = l->out_shape[2] = w;
}

static int add_param(nnc__builder *b, nnc__layer *l, const char *suffix, int ndim, const int *shape,
                     unsigned flags)
{
    char pname[NNC_PARAM_NAME_MAX];
    snprintf(pname, sizeof pname, "%s.%s", l->name, suffix);
    int idx = nnc_params_add(b->m->params, pname, ndim, shape, flags);
    if (idx < 0) {
        b->status = idx;
        return -1;
    }
    if (!(flags & NNC_PARAM_BUFFER)) l->params += (long)nnc_shape_numel(ndim, shape);
    return idx;
}

static int too_small(nnc__builder *b, const char *name, int h, int w)
{
    if (h > 0 && w > 0) return 0;
    b->status = nnc__fail(NNC_EINVAL, "model %s: image_size %d too small: layer %s would output %dx%d",
                          b->m->name, b->m->cfg.image_size, name, h, w);
    return 1;
}

void nnc__b_conv(nnc__builder *b, const char *name, int out_c, int k, int stride, int pad, int bias)
{
    nnc__layer *l = append(b, NNC__L_CONV, name);
    if (!l) return;
    int oh = (b->h + 2 * pad - k) / stride + 1, ow = (b->w + 2 * pad - k) / stride + 1;
    if (b->h + 2 * pad < k || b->w + 2 * pad < k) oh = ow = 0;
    if (too_small(b, name, oh, ow)) return;
    l->k = k;
    l->stride = stride;
    l->pad = pad;
    int ws[4] = {out_c, b->c, k, k};
    l->p[0] = add_param(b, l, "weight", 4, ws, 0);
    if (bias) l->p[1] = add_param(b, l, "bias", 1, &out_c, NNC_PARAM_NO_DECAY);
    l->macs = (long long)out_c * oh * ow * b->c * k * k;
    set_out(b, l, out_c, oh, ow);
}

void nnc__b_bn(nnc__builder *b, const char *name)
{
    nnc__layer *l = append(b, NNC__L_BN, name);
    if (!l) return;
    int c = b->c;
    l->p[0] = add_param(b, l, "weight", 1, &c, NNC_PARAM_BN | NNC_PARAM_NO_DECAY);
    l->p[1] = add_param(b, l, "bias", 1, &c, NNC_PARAM_BN | NNC_PARAM_NO_DECAY);
    l->p[2] = add_param(b, l, "running_mean", 1, &c, NNC_PARAM_BUFFER);
    l->p[3] = add_param(b, l, "running_var", 1, &c, NNC_PARAM_BUFFER);
}

void nnc__b_relu(nnc__builder *b, const char *name) { append(b, NNC__L_RELU, name); }

void nnc__b_maxpool(nnc__builder *b, const char *name, int k, int stride)
{
    nnc__layer *l = append(b, NNC__L_MAXPOOL, name);
    if (!l) return;
    int oh = b->h < k ? 0 : (b->h - k) / stride + 1, ow = b->w < k ? 0 : (b->w - k) / stride + 1;
    if (too_small(b, name, oh, ow)) return;
    l->k = k;
    l->stride = stride;
    set_out(b, l, b->c, oh, ow);
}

void nnc__b_gap(nnc__builder *b, const char *name)
{
    nnc__layer *l = append(b, NNC__L_GAP, name);
    if (l) set_out(b, l, b->c, 1, 1);
}

void nnc__b_linear(nnc__builder *b, const char *name, int out, int bias)
{
    nnc__layer *l = append(b, NNC__L_LINEAR, name);
    if (!l) return;
    int in = b->c * b->h * b->w;
    int ws[2] = {out, in};
    l->p[0] = add_param(b, l, "weight", 2, ws, 0);
    if (bias) l->p[1] = add_param(b, l, "bias", 1, &out, NNC_PARAM_NO_DECAY);
    l->macs = (long long)in * out;
    set_out(b, l, out, 1, 1);
}

void nnc__b_dropout(nnc__builder *b, const char *name, float p)
{
    nnc__layer *l = append(b, NNC__L_DROPOUT, name);
    if (l) l->pdrop = p;
}

void nnc__b_save(nnc__builder *b, const char *name)
{
    if (!append(b, NNC__L_SAVE, name)) return;
    b->sc = b->c;
    b->sh = b->h;
    b->sw = b->w;
}

void nnc__b_residual(nnc__builder *b, const char *name, int stride)
{
    nnc__layer *l = append(b, NNC__L_RESIDUAL, name);
    if (!l) return;
    l->stride = stride;
    l->out_c = b->c;
    l->in_shape[0] = b->sc; /* the shortcut's input: the block input saved at SAVE */
    l->in_shape[1] = b->sh;
    l->in_shape[2] = b->sw;
    NNC_ASSERT((b->sh + stride - 1) / stride == b->h && (b->sw + stride - 1) / stride == b->w &&
                   b->c >= b->sc && (b->c - b->sc) % 2 == 0,
               "model %s layer %s: residual from (%d,%d,%d) to (%d,%d,%d) at stride %d", b->m->name, name,
               b->sc, b->sh, b->sw, b->c, b->h, b->w, stride);
}
